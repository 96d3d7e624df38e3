#!/usr/bin/env bash
# The balancer's gain on capped links (issue 12): portals whose links are limited with tc, hosts in
# a network namespace, the balancer off and on, side by side in one run.
#
#   sudo bench/balance.sh [SCENARIO ...]      (default: b; known: a b c d)
#   SECS=60 BALANCE="off sessions:2 bandwidth:80%:50%" sudo bench/balance.sh b
#   KEEP=/tmp/runs sudo bench/balance.sh b      (keeps each run's logs and status documents)
#
# Topology (created here, removed on exit): namespace psb-hosts holds every host; portal i is
# 10.77.i.1 on veth psb-tI (the target's end, in this namespace) paired with psb-hI
# (10.77.i.2, in psb-hosts). A tbf qdisc on psb-tI caps what the target sends (reads) at the
# portal's rate. The iSNS server listens on 10.77.1.1:3205.
#
# Scenarios (rates in Mbit/s):
#   a  three equal streamers on two 400 Mbit/s portals, all starting on portal 1
#   b  two streamers and two light hosts on three 400 Mbit/s portals, all starting on portal 1
#   c  churn on three 400 Mbit/s portals: one streamer throughout, and every 3 s a host joins for
#      6 s (streamer and light host in turn), all through portal 1
#   d  unequal links: portal 1 at 1 Gbit/s, portals 2 and 3 at 100 Mbit/s; three streamers start
#      on portal 1 (counting sessions moves hosts onto links that give them less)
# Hosts: streamers are libiscsi iscsi-perf reading 1 MiB sequentially at QD4 (stock initiator:
# reconnects to the portal it knows and is redirected at login); light hosts are `portshift io`
# reading 4 KiB at random at QD1 (discovers through iSNS, follows moves).
# Ping-pongs (from the target's event log): an initiator asked to move again within the cooldown
# (5 s here), or moved back to the portal it left within twice the cooldown.
# Each run: SECS seconds; the figures are taken over the last third (after convergence):
# streamers' MB/s from iscsi-perf's per-second lines; each link's utilisation from the bytes its
# tbf qdisc sent (`tc -s`), against its rate; light hosts' IOPS and p99 over their whole run
# (`portshift io --json`), so their gain is if anything understated.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
SECS="${SECS:-45}"
COOLDOWN=5
BALANCE="${BALANCE:-off sessions:2 bandwidth:80%:50%}"
SCENARIOS=("${@:-b}")
NS=psb-hosts
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
    for i in $(seq "$LINKS"); do ip link del "psb-t$i" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

# links RATE...: one capped portal link per rate (Mbit/s).
links() {
    ip netns add "$NS"
    ip netns exec "$NS" ip link set lo up
    local i=0
    for rate in "$@"; do
        i=$((i + 1))
        ip link add "psb-t$i" type veth peer name "psb-h$i"
        LINKS=$i
        ip link set "psb-h$i" netns "$NS"
        ip addr add "10.77.$i.1/24" dev "psb-t$i"
        ip link set "psb-t$i" up
        ip netns exec "$NS" ip addr add "10.77.$i.2/24" dev "psb-h$i"
        ip netns exec "$NS" ip link set "psb-h$i" up
        tc qdisc add dev "psb-t$i" root tbf rate "${rate}mbit" burst 256kb latency 50ms
    done
}
unlinks() {
    ip netns del "$NS" 2>/dev/null || true
    for i in $(seq "$LINKS"); do ip link del "psb-t$i" 2>/dev/null || true; done
    LINKS=0
}

# start_system BALANCE RATE...: iSNS server and target on the portals, sets ADMIN.
start_system() {
    local balance="$1"; shift
    local args=() i=0
    for rate in "$@"; do
        i=$((i + 1))
        args+=(--portal "10.77.$i.1:3260,speed=${rate}Mbit")
    done
    [ "$balance" = off ] || args+=(--balance "$balance")
    rm -f "$DIR/isns.redb"
    "$BIN" isns --listen 10.77.1.1:3205 --db "$DIR/isns.redb" > "$DIR/isns.log" 2>&1 &
    PIDS+=($!)
    ADMIN=127.0.0.1:3299
    "$BIN" target "${args[@]}" --lun "$IQN=$DIR/lun.img" --isns 10.77.1.1:3205 \
        --cooldown "$COOLDOWN" --admin "$ADMIN" > "$DIR/target.log" 2>&1 &
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
}

# streamer N [SECONDS]: iscsi-perf through portal 1, output in $DIR/streamer-N.out, exit status in
# $DIR/streamer-N.rc.
streamer() {
    local t="${2:-$SECS}"
    ( rc=0; timeout $((t + 30)) ip netns exec "$NS" iscsi-perf -t "$t" -i "iqn.2026-11.org.example:streamer-$1" \
        -b 2048 -m 4 "iscsi://10.77.1.1:3260/$IQN/0" > "$DIR/streamer-$1.out" 2>&1 || rc=$?
      echo "$rc" > "$DIR/streamer-$1.rc" ) &
}
# light N [SECONDS]: portshift io, 4 KiB random reads at QD1, found through iSNS (portal 1 first).
light() {
    local t="${2:-$SECS}"
    timeout $((t + 30)) ip netns exec "$NS" "$BIN" io --isns 10.77.1.1:3205 --target "$IQN" \
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
        tc -s qdisc show dev "psb-t$i" | awk '/Sent/ { print $2; exit }'
    done
}
# pingpongs EVENTS_JSON: initiators asked to move again within COOLDOWN, or back to the portal
# they left within 2 × COOLDOWN.
pingpongs() {
    python3 - "$1" "$COOLDOWN" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1])); cool = float(sys.argv[2]) * 1000
moves = {}
for e in doc.get("events", []):
    k = e["kind"]
    if k.get("type") == "logout_requested":
        moves.setdefault(k["initiator"], []).append((e["at_ms"], k["from"], k["to"]))
n = 0
for ms in moves.values():
    ms.sort()
    for (t1, f1, _), (t2, _, to2) in zip(ms, ms[1:]):
        if t2 - t1 < cool or (to2 == f1 and t2 - t1 < 2 * cool):
            n += 1
print(n)
PY
}

# MB/s of a streamer over the last third of its run (iscsi-perf prints "iops current N (M MB/s)"
# each second).
streamer_mbps() {
    tr '\r' '\n' < "$1" | grep -o 'iops current [0-9]* ([0-9]* MB/s)' | sed -E 's/.*\(([0-9]+) MB\/s\)/\1/' |
        awk -v n="$SECS" '{ v[NR] = $1 } END { from = int(NR * 2 / 3) + 1; s = 0; c = 0
            for (i = from; i <= NR; i++) { s += v[i]; c++ } printf "%.1f", (c ? s / c : 0) }'
}
json_field() { grep -o "\"$2\": *[0-9.]*" "$1" | head -n1 | sed -E 's/.*: *//'; }

# run SCENARIO BALANCE: one measurement; prints a table row.
run() {
    local scenario="$1" balance="$2" rates streamers lights
    case "$scenario" in
        a) rates=(400 400); streamers=3; lights=0 ;;
        b) rates=(400 400 400); streamers=2; lights=2 ;;
        c) rates=(400 400 400); streamers=1; lights=0 ;;
        d) rates=(1000 100 100); streamers=3; lights=0 ;;
        *) echo "unknown scenario $scenario" >&2; exit 1 ;;
    esac
    links "${rates[@]}"
    start_system "$balance" "${rates[@]}"
    local t0=$SECONDS
    for n in $(seq "$streamers"); do streamer "$n"; done
    for n in $(seq "$lights"); do light "$n"; done
    [ "$scenario" != c ] || churn &
    # Each link's utilisation over the last third of the run: what its tbf qdisc sent (the
    # link itself, not the target's smoothed figures), over the time and the rate.
    local from=$((t0 + SECS * 2 / 3)) until=$((t0 + SECS)) b0 b1 ms0 ms1
    [ $((from - SECONDS)) -le 0 ] || sleep $((from - SECONDS))
    b0="$(link_bytes)"; ms0=$(date +%s%3N)
    [ $((until - SECONDS)) -le 0 ] || sleep $((until - SECONDS))
    b1="$(link_bytes)"; ms1=$(date +%s%3N)
    wait_hosts
    local agg=0 light_iops=0 light_p99=0 moves errors=0 pp util
    for n in $(seq "$streamers"); do
        agg=$(awk -v a="$agg" -v b="$(streamer_mbps "$DIR/streamer-$n.out")" 'BEGIN { printf "%.1f", a + b }')
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
    pp=$(pingpongs "$DIR/status.json")
    util=$(paste <(echo "$b0") <(echo "$b1") <(printf '%s\n' "${rates[@]}") |
        awk -v ms=$((ms1 - ms0)) '{ printf "%s%.0f%%", (NR > 1 ? " " : ""), 100 * ($2 - $1) * 8 / (ms / 1000) / ($3 * 1e6) }')
    stop_system
    unlinks
    if [ -n "${KEEP:-}" ]; then
        # KEEP=PREFIX keeps each run's logs, reports and status documents in PREFIX-SCENARIO-RULE/.
        local keep="$KEEP-$scenario-${balance//[:%]/_}"
        mkdir -p "$keep" && find "$DIR" -maxdepth 1 -type f ! -name lun.img -exec cp {} "$keep/" \;
    fi
    rm -f "$DIR"/streamer-* "$DIR"/light-*
    echo "| $scenario | $balance | $agg | $light_iops | $light_p99 | $moves | $pp | $errors | $util |"
}
wait_hosts() {
    local deadline=$((SECONDS + SECS + 40))
    while [ "$(jobs -rp | grep -cvxF -f <(printf '%s\n' "${PIDS[@]}") || true)" -gt 0 ]; do
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 1
    done
}

head -c 1073741824 /dev/urandom > "$DIR/lun.img"
cat "$DIR/lun.img" > /dev/null
echo "| scenario | balance | streamers MB/s (last third) | light hosts IOPS | light p99 µs (worst) | moves | ping-pongs | I/O errors | link utilisation per portal (last third) |"
echo "|---|---|---|---|---|---|---|---|---|"
for s in "${SCENARIOS[@]}"; do
    for b in $BALANCE; do run "$s" "$b"; done
done
echo
echo "reproduce: SECS=$SECS BALANCE=\"$BALANCE\" bench/balance.sh ${SCENARIOS[*]}   ($(nproc) cores, $(date -u +%Y-%m-%d))"
