#!/usr/bin/env bash
# The balancer's gain on capped links and on capped processors (issue 12): portals whose links
# are limited with tc (a-d) or whose processor threads are given a CPU quota (e), hosts in a
# network namespace, the balancer off and on, side by side in one run.
#
#   sudo bench/balance.sh [SCENARIO ...]      (default: b; known: a b c d e)
#   SECS=60 BALANCE="off sessions:2 bandwidth:80%:50%" sudo bench/balance.sh b
#   KEEP=/tmp/runs sudo bench/balance.sh b      (keeps each run's logs and status documents)
#   RUNS=3 sudo bench/balance.sh c              (each rule three times; the simulator is
#                                             compared with their mean)
#   NS=pse-hosts VETH=pse- NET=10.78 ADMIN=127.0.0.1:3298 sudo bench/balance.sh e
#                                             (a second copy running beside the first)
#
# Topology (created here, removed on exit): namespace $NS (psb-hosts) holds every host; portal i
# is $NET.i.1 (10.77.i.1) on veth ${VETH}tI (psb-tI, the target's end, in this namespace) paired
# with ${VETH}hI (psb-hI, $NET.i.2, in $NS). A tbf qdisc on ${VETH}tI caps what the target sends
# (reads) at the portal's rate (not in e). The iSNS server listens on $NET.1.1:3205, the
# target's admin endpoint on $ADMIN (127.0.0.1:3299).
#
# Scenarios (rates in Mbit/s):
#   a  three equal streamers on two 400 Mbit/s portals, all starting on portal 1
#   b  two streamers and two light hosts on three 400 Mbit/s portals, all starting on portal 1
#   c  churn on three 400 Mbit/s portals: one streamer throughout, and every 3 s a host joins for
#      6 s (streamer and light host in turn), all through portal 1
#   d  unequal links: portal 1 at 1 Gbit/s, portals 2 and 3 at 100 Mbit/s; three streamers start
#      on portal 1 (counting sessions moves hosts onto links that give them less)
#   e  the processors are the limit: three portals, links uncapped (a nominal speed=10Gbit for
#      the target's bandwidth figure), each portal thread (portal-N) in a cgroup v1 `cpu` group
#      of its own, $ECPU/psb-portal-N (${VETH}portal-N), with a quota of QUOTA (default 15) % of
#      one CPU. Hosts: two random readers (iscsi-perf, 4 KiB random reads at QD16) and one light
#      host (QD1), all starting on portal 1. Client and target share two cores, so without a
#      quota the machine, not a portal, would be the limit; at 15 % one portal's processor
#      saturates under the two readers (about 25 k IOPS), and three portals' worth (45 % of one
#      CPU) is what the machine can still feed: once the hosts are spread, the shared cores and
#      the quotas limit about equally (BENCHMARKS.md). Three portals, not two, so that
#      each reader can end on a processor of its own and the light host need not share with
#      either; the same shape as (b), so the rules compare alike.
# Hosts: streamers are libiscsi iscsi-perf reading 1 MiB sequentially at QD4 (stock initiator:
# reconnects to the portal it knows and is redirected at login); light hosts are `portshift io`
# reading 4 KiB at random at QD1 (discovers through iSNS, follows moves).
# Ping-pongs (the target counts them, `ping_pongs` in its status): an initiator asked to move again within the cooldown
# (5 s here), or moved back to the portal it left within twice the cooldown.
# Each run: SECS seconds; the figures are taken over the last third (after convergence):
# streamers' (iscsi-perf hosts') MB/s and IOPS from iscsi-perf's per-second lines; each link's
# utilisation from the bytes its tbf qdisc sent (`tc -s`), against its rate; light hosts' IOPS
# and p99 over their whole run (`portshift io --json`), so their gain is if anything
# understated. Converged: the last logout request, in seconds from the run's start. Pause per
# move: from a logout request to the moved initiator's next login, median over the moves, in ms.
# Per portal at the end: processor demand (busy + waiting for a CPU, of one CPU, the figure the
# cpu rule reads); in e also the share of the last 5 s its cgroup was throttled.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
SECS="${SECS:-45}"
COOLDOWN=5
BALANCE="${BALANCE:-off sessions:2 bandwidth:80%:50%}"
SCENARIOS=("${@:-b}")
NS="${NS:-psb-hosts}"
VETH="${VETH:-psb-}"
NET="${NET:-10.77}"
ADMIN="${ADMIN:-127.0.0.1:3299}"
QUOTA="${QUOTA:-15}"
ECPU=/sys/fs/cgroup/cpu
CGROUPS=()
IQN=iqn.2026-11.org.example:balance
BIN="${PORTSHIFT_BIN:-target/release/portshift}"
[ "$(id -u)" = 0 ] || { echo "bench/balance.sh needs root (network namespaces, tc)" >&2; exit 1; }
command -v iscsi-perf >/dev/null || { echo "missing iscsi-perf: apt-get install -y libiscsi-bin" >&2; exit 1; }
[ -n "${PORTSHIFT_BIN:-}" ] || cargo build --release -q -p portshift

DIR="$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)"
PIDS=()
LINKS=0
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    for i in $(seq "$LINKS"); do ip link del "${VETH}t$i" 2>/dev/null || true; done
    uncgroups
    rm -rf "$DIR"
}
trap cleanup EXIT

# links RATE...: one capped portal link per rate (Mbit/s); with CAP=0, not capped.
links() {
    ip netns add "$NS"
    ip netns exec "$NS" ip link set lo up
    local i=0
    for rate in "$@"; do
        i=$((i + 1))
        ip link add "${VETH}t$i" type veth peer name "${VETH}h$i"
        LINKS=$i
        ip link set "${VETH}h$i" netns "$NS"
        ip addr add "$NET.$i.1/24" dev "${VETH}t$i"
        ip link set "${VETH}t$i" up
        ip netns exec "$NS" ip addr add "$NET.$i.2/24" dev "${VETH}h$i"
        ip netns exec "$NS" ip link set "${VETH}h$i" up
        [ "${CAP:-1}" = 0 ] || tc qdisc add dev "${VETH}t$i" root tbf rate "${rate}mbit" burst 256kb latency 50ms
    done
}
unlinks() {
    ip netns del "$NS" 2>/dev/null || true
    for i in $(seq "$LINKS"); do ip link del "${VETH}t$i" 2>/dev/null || true; done
    LINKS=0
}

# start_system BALANCE RATE...: iSNS server and target on the portals, sets TPID.
start_system() {
    local balance="$1"; shift
    local args=() i=0
    for rate in "$@"; do
        i=$((i + 1))
        args+=(--portal "$NET.$i.1:3260,speed=${rate}Mbit")
    done
    [ "$balance" = off ] || args+=(--balance "$balance")
    rm -f "$DIR/isns.redb"
    "$BIN" isns --listen "$NET.1.1:3205" --db "$DIR/isns.redb" > "$DIR/isns.log" 2>&1 &
    PIDS+=($!)
    "$BIN" target "${args[@]}" --lun "$IQN=$DIR/lun.img" --isns "$NET.1.1:3205" \
        --cooldown "$COOLDOWN" --admin "$ADMIN" > "$DIR/target.log" 2>&1 &
    TPID=$!
    PIDS+=($!)
    for _ in $(seq 100); do
        "$BIN" status --admin "$ADMIN" 2>/dev/null | grep -q "registered" && return 0
        sleep 0.1
    done
    echo "the target did not register:" >&2; cat "$DIR/target.log" >&2; exit 1
}
stop_system() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
    uncgroups
}

# cgroups N: each of the target's portal threads portal-0 .. portal-(N-1) into a cpu cgroup of its
# own, $ECPU/${VETH}portal-I, with a quota of QUOTA % of one CPU.
cgroups() {
    local i tid cg
    for i in $(seq 0 $(($1 - 1))); do
        tid=$(grep -lx "portal-$i" /proc/"$TPID"/task/*/comm | head -n1 | cut -d/ -f5)
        [ -n "$tid" ] || { echo "no thread portal-$i in the target" >&2; exit 1; }
        cg="$ECPU/${VETH}portal-$i"
        mkdir -p "$cg"
        CGROUPS+=("$cg")
        echo 100000 > "$cg/cpu.cfs_period_us"
        echo $((QUOTA * 1000)) > "$cg/cpu.cfs_quota_us"
        echo "$tid" > "$cg/tasks"
    done
}
# uncgroups: moves what is left in them back to the root group and removes them.
uncgroups() {
    local cg t
    for cg in "${CGROUPS[@]}"; do
        if [ -e "$cg/tasks" ]; then
            while read -r t; do echo "$t" > "$ECPU/tasks" 2>/dev/null || true; done < "$cg/tasks"
        fi
        rmdir "$cg" 2>/dev/null || true
    done
    CGROUPS=()
}
# throttled: each portal cgroup's throttled share of the time since the last call ("-" the first
# time), in percent.
throttled() {
    local cg out=() t now
    now=$(date +%s%N)
    for cg in "${CGROUPS[@]}"; do
        t=$(awk '$1 == "throttled_time" { print $2 }' "$cg/cpu.stat")
        if [ -n "${THR_AT:-}" ]; then
            out+=("$(awk -v a="${THR[$cg]:-0}" -v b="$t" -v d=$((now - THR_AT)) 'BEGIN { printf "%.0f%%", 100 * (b - a) / d }')")
        fi
        THR[$cg]=$t
    done
    THR_AT=$now
    echo "${out[*]:-}"
}
declare -A THR

# streamer N [SECONDS [PORTAL]]: iscsi-perf through portal PORTAL (1), output in
# $DIR/streamer-N.out, exit status in $DIR/streamer-N.rc. PERF holds its workload options
# (default: 1 MiB sequential reads at QD4).
streamer() {
    local t="${2:-$SECS}" portal="${3:-1}"
    # shellcheck disable=SC2086 # PERF is a list of options
    ( rc=0; timeout -k 5 $((t + 30)) ip netns exec "$NS" iscsi-perf -t "$t" -i "iqn.2026-11.org.example:streamer-$1" \
        ${PERF:--b 2048 -m 4} "iscsi://$NET.$portal.1:3260/$IQN/0" > "$DIR/streamer-$1.out" 2>&1 || rc=$?
      echo "$rc" > "$DIR/streamer-$1.rc" ) &
}
# light N [SECONDS]: portshift io, 4 KiB random reads at QD1, found through iSNS (portal 1 first).
light() {
    local t="${2:-$SECS}"
    timeout -k 5 $((t + 30)) ip netns exec "$NS" "$BIN" io --isns "$NET.1.1:3205" --target "$IQN" \
        --initiator-name "iqn.2026-11.org.example:light-$1" --queue-depth 1 --blocks-per-io 8 \
        --read-percent 100 --duration "${t}s" --json > "$DIR/light-$1.json" 2> "$DIR/light-$1.err" &
}
# churn: every 3 s for SECS - 6 s a host joins for 6 s, a streamer and a light host in turn
# (run in the background: it waits for the hosts it started).
churn() {
    local n=100 end=$((SECONDS + SECS - 6))
    while [ "$SECONDS" -lt "$end" ]; do
        n=$((n + 1))
        if [ $((n % 2)) = 0 ]; then streamer "$n" 6; else light "$n" 6; fi
        sleep 3
    done
    wait
}
# link_bytes: bytes each portal's link has sent (the tbf qdisc's counter), one line per portal.
link_bytes() {
    for i in $(seq "$LINKS"); do
        tc -s qdisc show dev "${VETH}t$i" | awk '/Sent/ { print $2; exit }'
    done
}
# MB/s (or with `iops`, IOPS) of a streamer over the last third of its run (iscsi-perf prints
# "iops current N (M MB/s)" each second).
streamer_mbps() {
    local field='s/.*\(([0-9]+) MB\/s\)/\1/'
    [ "${2:-}" != iops ] || field='s/iops current ([0-9]+) .*/\1/'
    tr '\r' '\n' < "$1" | grep -o 'iops current [0-9]* ([0-9]* MB/s)' | sed -E "$field" |
        awk -v n="$SECS" '{ v[NR] = $1 } END { from = int(NR * 2 / 3) + 1; s = 0; c = 0
            for (i = from; i <= NR; i++) { s += v[i]; c++ } printf "%.1f", (c ? s / c : 0) }'
}
# timing EVENTS_JSON START_MS: when the last logout was requested, in seconds from START_MS, and
# the median pause per move (logout request to the initiator's next login), in ms ("–" without
# moves).
timing() {
    python3 - "$1" "$2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1])); start = int(sys.argv[2])
ev = sorted(doc.get("events", []), key=lambda e: e["seq"])
asks = [e for e in ev if e["kind"].get("type") == "logout_requested"]
pauses = []
for a in asks:
    who = a["kind"]["initiator"]
    nxt = [e["at_ms"] for e in ev if e["seq"] > a["seq"] and e["kind"].get("type") == "login"
           and e["kind"]["initiator"] == who]
    if nxt:
        pauses.append(nxt[0] - a["at_ms"])
pauses.sort()
conv = "%.1f" % ((asks[-1]["at_ms"] - start) / 1000) if asks else "–"
pause = "%d" % pauses[len(pauses) // 2] if pauses else "–"
print(conv, pause)
PY
}
# sched_sample: each portal thread's schedstat (run and wait ns), as "run wait" pairs.
sched_sample() {
    local i tid out=()
    for i in $(seq 0 $((LINKS - 1))); do
        tid=$(grep -lx "portal-$i" /proc/"$TPID"/task/*/comm 2>/dev/null | head -n1 | cut -d/ -f5)
        out+=("$(awk '{ print $1 " " $2 }' "/proc/$TPID/task/$tid/schedstat" 2>/dev/null || echo "0 0")")
    done
    printf '%s\n' "${out[@]}"
}
json_field() { grep -o "\"$2\": *[0-9.]*" "$1" | head -n1 | sed -E 's/.*: *//'; }

# run SCENARIO BALANCE: one measurement; prints a table row.
run() {
    local scenario="$1" balance="$2" rates streamers lights CAP=1 PERF=""
    case "$scenario" in
        a) rates=(400 400); streamers=3; lights=0 ;;
        b) rates=(400 400 400); streamers=2; lights=2 ;;
        c) rates=(400 400 400); streamers=1; lights=0 ;;
        d) rates=(1000 100 100); streamers=3; lights=0 ;;
        e) rates=(10000 10000 10000); streamers=2; lights=1; CAP=0; PERF="-r -b 8 -m 16" ;;
        *) echo "unknown scenario $scenario" >&2; exit 1 ;;
    esac
    links "${rates[@]}"
    start_system "$balance" "${rates[@]}"
    [ "$scenario" != e ] || cgroups "${#rates[@]}"
    local t0=$SECONDS t0_ms
    t0_ms=$(date +%s%3N)
    for n in $(seq "$streamers"); do streamer "$n"; done
    for n in $(seq "$lights"); do light "$n"; done
    [ "$scenario" != c ] || churn &
    # Each link's utilisation over the last third of the run: what its tbf qdisc sent (the
    # link itself, not the target's smoothed figures), over the time and the rate.
    local from=$((t0 + SECS * 2 / 3)) until=$((t0 + SECS)) b0 b1 ms0 ms1
    [ $((from - SECONDS)) -le 0 ] || sleep $((from - SECONDS))
    b0="$(link_bytes)"; ms0=$(date +%s%3N)
    # Each portal's link utilisation and processor demand near the end (the target's smoothed
    # figures); in e, each portal thread's schedstat and cgroup throttling over the 5 s before.
    local left=$((t0 + SECS - 9 - SECONDS)) s1="" s2="" n1 n2 thr=""
    [ "$left" -le 0 ] || sleep "$left"
    if [ "$scenario" = e ]; then n1=$(date +%s%N); s1=$(sched_sample); throttled > /dev/null; fi
    left=$((t0 + SECS - 4 - SECONDS))
    [ "$left" -le 0 ] || sleep "$left"
    if [ "$scenario" = e ]; then n2=$(date +%s%N); s2=$(sched_sample); thr=$(throttled); fi
    "$BIN" status --admin "$ADMIN" --json > "$DIR/status-end.json" 2>/dev/null || echo '{}' > "$DIR/status-end.json"
    if [ "$scenario" = e ]; then
        # What the cpu rule sees against what the kernel says, per portal (the brief's question:
        # does a thread held back by its quota read as loaded?).
        paste <(echo "$s1") <(echo "$s2") | awk -v s="$scenario" -v b="$balance" -v thr="$thr" -v d=$((n2 - n1)) '
            BEGIN { split(thr, t, " ") }
            { printf "%s %s portal-%d: schedstat run %.0f%% wait %.0f%% of the last %.1f s, cgroup throttled %s\n",
                s, b, NR - 1, 100 * ($3 - $1) / d, 100 * ($4 - $2) / d, d / 1e9, t[NR] }' >> "$DIR/notes"
        python3 - "$DIR/status-end.json" "$scenario" "$balance" >> "$DIR/notes" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for i, p in enumerate(doc.get("table", {}).get("portals", [])):
    l = p.get("load", {})
    print("%s %s portal-%d: status cpu_busy %.0f%% cpu_wait %.0f%% (demand %.0f%%), %d sessions"
          % (sys.argv[2], sys.argv[3], i, 100 * l.get("cpu_busy", 0), 100 * l.get("cpu_wait", 0),
             100 * (l.get("cpu_busy", 0) + l.get("cpu_wait", 0)), len(p.get("sessions", []))))
PY
    fi
    [ $((until - SECONDS)) -le 0 ] || sleep $((until - SECONDS))
    b1="$(link_bytes)"; ms1=$(date +%s%3N)
    wait_hosts
    local agg=0 iops=0 light_iops=0 light_p99=0 moves errors=0 pp util cpu conv pause
    # A target that is gone before the end (killed from outside, or crashed) spoils the run.
    kill -0 "$TPID" 2>/dev/null || { errors=$((errors + 1)); echo "$scenario $balance: the target exited before the end" >> "$DIR/notes"; }
    for n in $(seq "$streamers"); do
        agg=$(awk -v a="$agg" -v b="$(streamer_mbps "$DIR/streamer-$n.out")" 'BEGIN { printf "%.1f", a + b }')
        iops=$(awk -v a="$iops" -v b="$(streamer_mbps "$DIR/streamer-$n.out" iops)" 'BEGIN { printf "%.0f", a + b }')
    done
    for n in $(seq "$lights"); do
        local f="$DIR/light-$n.json" i p
        i="$(json_field "$f" iops)"; p="$(json_field "$f" p99_us)"
        light_iops=$(awk -v a="$light_iops" -v b="${i:-0}" 'BEGIN { printf "%.0f", a + b }')
        light_p99=$(awk -v a="$light_p99" -v b="${p:-0}" 'BEGIN { print (b > a ? b : a) }')
    done
    for f in "$DIR"/light-*.json; do
        [ -e "$f" ] || continue
        errors=$((errors + $(json_field "$f" errors || echo 0) + $(json_field "$f" mismatches || echo 0)))
        [ -s "$f" ] || errors=$((errors + 1))
    done
    for f in "$DIR"/streamer-*.rc; do
        [ -e "$f" ] || continue
        [ "$(cat "$f")" = 0 ] || errors=$((errors + 1))
    done
    "$BIN" status --admin "$ADMIN" --json > "$DIR/status.json" 2>/dev/null || echo '{}' > "$DIR/status.json"
    moves=$( (grep -oE '"type": *"logout_requested"' "$DIR/status.json" || true) | wc -l)
    # The target counts them (`ping_pongs` in its status: an initiator asked to move again
    # within the cooldown, or back to the portal it left within twice the cooldown).
    pp="$(json_field "$DIR/status.json" ping_pongs)"; pp="${pp:-?}"
    read -r conv pause < <(timing "$DIR/status.json" "$t0_ms")
    util=$(paste <(echo "$b0") <(echo "$b1") <(printf '%s\n' "${rates[@]}") |
        awk -v ms=$((ms1 - ms0)) '{ printf "%s%.0f%%", (NR > 1 ? " " : ""), 100 * ($2 - $1) * 8 / (ms / 1000) / ($3 * 1e6) }')
    [ "$scenario" != e ] || util="- (no cap)"
    cpu=$(python3 - "$DIR/status-end.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
out = []
for p in doc.get("table", {}).get("portals", []):
    l = p.get("load", {})
    out.append("%.0f%%" % (100 * (l.get("cpu_busy", 0) + l.get("cpu_wait", 0))))
print(" ".join(out) or "-")
PY
)
    [ -z "$thr" ] || cpu="$cpu (throttled $thr)"
    stop_system
    unlinks
    if [ -n "${KEEP:-}" ]; then
        # KEEP=PREFIX keeps each run's logs, reports and status documents in PREFIX-SCENARIO-RULE/.
        local keep="$KEEP-$scenario-${balance//[:%]/_}"
        mkdir -p "$keep" && find "$DIR" -maxdepth 1 -type f ! -name lun.img -exec cp {} "$keep/" \;
    fi
    rm -f "$DIR"/streamer-* "$DIR"/light-*
    echo "| $scenario | $balance | $agg | $iops | $light_iops | $light_p99 | $moves | $pp | $conv | $pause | $errors | $util | $cpu |"
    MEASURED["$scenario $balance"]+="$moves|$util;"
}
wait_hosts() {
    local deadline=$((SECONDS + SECS + 40))
    while [ "$(jobs -rp | grep -cvxF -f <(printf '%s\n' "${PIDS[@]}") || true)" -gt 0 ]; do
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 1
    done
}

# light_alone: reads per second of one light host alone on a 400 Mbit/s portal for 10 s, while
# two streamers use two other portals, as in scenario (b) once balanced (the simulator's
# --light-iops: a QD1 reader is limited by the CPU it gets, which depends on the machine and on
# what else runs).
light_alone() {
    links 400 400 400
    start_system off 400 400 400
    streamer 1 10 2
    streamer 2 10 3
    light 1 10
    wait_hosts
    LIGHT_IOPS="$(json_field "$DIR/light-1.json" iops)"
    stop_system
    unlinks
    rm -f "$DIR"/light-* "$DIR"/streamer-*
}

# predict: the simulator's prediction of each balanced rule of scenarios b and c (`portshift
# simulate --preset S` with the same rule, cooldown, length and light hosts' demand) beside what
# the runs measured (the mean over RUNS runs). It holds when the moves agree within 20% (or one
# move) and every portal's last-third link utilisation within 20 points.
predict() {
    echo "| scenario | rule | moves measured / predicted | link utilisation measured / predicted (last third) | holds |"
    echo "|---|---|---|---|---|"
    local key s b json
    for key in "${!MEASURED[@]}"; do
        s="${key%% *}"; b="${key#* }"
        case "$s" in b|c) ;; *) continue ;; esac
        [ "$b" != off ] || continue
        json="$("$BIN" simulate --preset "$s" --duration "${SECS}s" --cooldown "$COOLDOWN" \
            --light-iops "$LIGHT_IOPS" --balance "$b" --json)"
        python3 - "$s" "$b" "${MEASURED[$key]}" "$json" <<'PY'
import json, sys
s, b, measured, doc = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
runs = [r.split("|") for r in measured.split(";") if r]
moves = sum(int(m) for m, _ in runs) / len(runs)
utils = [[float(u.rstrip("%")) for u in util.split()] for _, util in runs]
util = [sum(col) / len(col) for col in zip(*utils)]
run = doc["runs"][0]
pm = run["moves"]
pu = [100 * u for u in run["converged_utilisation"]]
ok = abs(pm - moves) <= max(1, 0.2 * moves) and len(pu) == len(util) and all(abs(a - b) <= 20 for a, b in zip(util, pu))
print("| %s | %s | %.1f / %d | %s / %s | %s |" % (s, b, moves, pm, " ".join("%.0f%%" % u for u in util),
      " ".join("%.0f%%" % u for u in pu), "yes" if ok else "no"))
PY
    done
}

declare -A MEASURED
LIGHT_IOPS=""
head -c 1073741824 /dev/urandom > "$DIR/lun.img"
cat "$DIR/lun.img" > /dev/null
echo "| scenario | balance | streamers MiB/s (last third) | streamers IOPS (last third) | light hosts IOPS | light p99 µs (worst) | moves | ping-pongs | converged s | pause per move ms | I/O errors | link utilisation per portal (last third) | processor demand per portal (end) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for s in "${SCENARIOS[@]}"; do
    for _ in $(seq "${RUNS:-1}"); do
        for b in $BALANCE; do run "$s" "$b"; done
    done
done
echo
[ ! -s "$DIR/notes" ] || { cat "$DIR/notes"; echo; }
if printf '%s\n' "${SCENARIOS[@]}" | grep -qx '[bc]'; then
    light_alone
    echo "The simulator's prediction (a light host alone on a link: ${LIGHT_IOPS%.*} reads/s here; measured: the mean of ${RUNS:-1} run(s)):"
    echo
    predict
    echo
fi
echo "reproduce: SECS=$SECS BALANCE=\"$BALANCE\" bench/balance.sh ${SCENARIOS[*]}   ($(nproc) cores, $(date -u +%Y-%m-%d))"
