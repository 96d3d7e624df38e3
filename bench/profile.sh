#!/usr/bin/env bash
# Where the data path's time goes, for both ends, in one run on this machine:
#   bench/profile.sh [SECONDS]            (default 5 s per measurement)
#   PERF=1 bench/profile.sh               (also a perf cpu-clock profile of portshift's target)
#   ONLY=initiators bench/profile.sh      (only the second table: no tgtd, no target table)
#   CLIENT=io bench/profile.sh            (the targets table driven by `portshift io` instead of
#                                          iscsi-perf; the initiators table is unchanged)
#
# Targets: Debian's tgtd (127.0.0.9) and `portshift target` (127.0.0.1), each with a 1 GiB
# page-cached file LUN (on /dev/shm when it has room). The target is pinned to CPU 0 and the
# client to CPU 1 (taskset), so each has its own core.
#
# Per target and workload (iscsi-perf 4 KiB random reads at QD32, 1 MiB sequential reads at
# QD4; `portshift io` 4 KiB random writes at QD32 and 1 MiB random writes at QD4, since
# Debian's iscsi-perf only reads): IOPS, the target's user and system CPU per I/O (utime and stime of every thread, from
# /proc/PID/stat around the run), and its system calls per I/O (`strace -c -f` attached for a
# second, separate run: strace slows the target, so the I/O count of that run is what the
# syscalls are divided by).
#
# Per initiator against portshift's target (iscsi-perf against `portshift io`, same workloads):
# IOPS or MB/s, and the client's user and system CPU per I/O (GNU time) and syscalls per I/O.
#
# Loopback only; every run is bounded by SECONDS (and a timeout). Output: a Markdown table on
# stdout and in bench/results/profile.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
ONLY="${ONLY:-}"
case "$ONLY" in ""|initiators) ;; *) echo "ONLY must be empty or 'initiators'" >&2; exit 1 ;; esac
CLIENT="${CLIENT:-iscsi-perf}"
case "$CLIENT" in iscsi-perf|io) ;; *) echo "CLIENT must be 'iscsi-perf' or 'io'" >&2; exit 1 ;; esac
export PATH="$PATH:/usr/sbin:/sbin"
for t in tgtd tgtadm iscsi-perf strace taskset cc; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y tgt libiscsi-bin strace util-linux gcc)" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time (apt-get install -y time)" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. bench/lib.sh
BIN="$(portshift_bin)"
INI=iqn.2026-12.org.example:profile-client
IQN_TGT=iqn.2026-12.org.example:profile-tgt
IQN_PS=iqn.2026-12.org.example:profile-ps
TGT_PORT=3296; PS_PORT=3297; ADMIN_PORT=3298; CTL=18
DIR="$(scratch_dir 3)"
cc -O2 -Wall -o "$DIR/stream" bench/stream.c
TGT_PID=""; PS_PID=""
cleanup() {
    [ -n "$TGT_PID" ] && kill -9 "$TGT_PID" 2>/dev/null || true
    [ -n "$PS_PID" ] && kill "$PS_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

head -c 1073741824 /dev/urandom > "$DIR/ps.img"
if [ -z "$ONLY" ]; then
cp "$DIR/ps.img" "$DIR/tgt.img"
cat "$DIR/tgt.img" > /dev/null
taskset -c 0 tgtd -f --iscsi portal=127.0.0.9:$TGT_PORT -C $CTL > "$DIR/tgtd.log" 2>&1 &
TGT_PID=$!
for _ in $(seq 50); do tgtadm -C $CTL --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C $CTL --lld iscsi --op new --mode target --tid 1 -T $IQN_TGT
tgtadm -C $CTL --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$DIR/tgt.img"
tgtadm -C $CTL --lld iscsi --op bind --mode target --tid 1 -I ALL
fi
cat "$DIR/ps.img" > /dev/null
taskset -c 0 "$BIN" target --portal 127.0.0.1:$PS_PORT --lun "$IQN_PS=$DIR/ps.img" \
    --admin 127.0.0.1:$ADMIN_PORT > "$DIR/ps.log" 2>&1 &
PS_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PS_PORT) 2>/dev/null && break; sleep 0.1; done
kill -0 "$PS_PID" 2>/dev/null || { echo "portshift target did not start:" >&2; cat "$DIR/ps.log" >&2; exit 1; }
[ -n "$ONLY" ] || kill -0 "$TGT_PID" 2>/dev/null || { echo "tgtd did not start:" >&2; cat "$DIR/tgtd.log" >&2; exit 1; }
# tgtd forks nothing, but its backing-store threads belong to the same process: /proc/PID/stat
# and strace -f cover them.
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# perf_ios OUTPUT -> the I/O count of an iscsi-perf run (its last "iops average" times SECS)
perf_ios() {
    tr '\r' '\n' <<<"$1" | grep -o 'iops average [0-9]*' | tail -n1 | awk -v s="$SECS" '{ print $3 * s }'
}

# drive URL ARGS... -> the I/O count of one run of $CLIENT on CPU 1 against URL
# (iscsi://HOST:PORT/IQN/LUN; ARGS are iscsi-perf's, translated for `portshift io`; a first
# argument -w makes it a write workload, always run by `portshift io`)
drive() {
    local url=$1 out rp=100
    shift
    if [ "${1:-}" = -w ]; then rp=0; shift; fi
    if [ "$CLIENT" = iscsi-perf ] && [ $rp = 100 ]; then
        out="$(timeout $((SECS + 30)) taskset -c 1 iscsi-perf -t "$SECS" -i "$INI" "$@" "$url" 2>&1)"
        perf_ios "$out"
        return
    fi
    local rest=${url#iscsi://} bpi=1 qd=1
    local portal=${rest%%/*}; rest=${rest#*/}
    local iqn=${rest%%/*} lun=${rest#*/}
    while [ $# -gt 0 ]; do
        case $1 in -b) bpi=$2; shift ;; -m) qd=$2; shift ;; esac
        shift
    done
    out="$(timeout $((SECS + 30)) taskset -c 1 "$BIN" io --portal "$portal" --target "$iqn" \
        --lun "$lun" --no-send-targets --initiator-name "$INI" --blocks-per-io "$bpi" \
        --queue-depth "$qd" --read-percent "$rp" --duration "${SECS}s" --json 2>&1 || true)"
    io_ios <<<"$out"
}

# target_cpu PID URL ARGS... -> "IOPS USER-US/IO SYS-US/IO"
target_cpu() {
    local pid=$1 url=$2 u0 s0 u1 s1 ios
    shift 2
    read -r u0 s0 < <(ticks "$pid")
    ios=$(drive "$url" "$@")
    read -r u1 s1 < <(ticks "$pid")
    [ -n "$ios" ] && [ "$ios" -gt 0 ] || { echo "$CLIENT: no result" >&2; echo "0 0 0"; return; }
    awk -v n="$ios" -v s="$SECS" -v u=$((u1 - u0)) -v y=$((s1 - s0)) -v t="$TICK" \
        'BEGIN { printf "%d %.2f %.2f\n", n / s, u / t * 1e6 / n, y / t * 1e6 / n }'
}

# target_syscalls PID URL ARGS... -> "SYSCALLS/IO TOP" (strace -c -f attached during the run)
target_syscalls() {
    local pid=$1 url=$2 ios calls top
    shift 2
    timeout $((SECS + 20)) strace -c -f -q -p "$pid" -o "$DIR/strace.txt" &
    local st=$!
    sleep 0.5
    ios=$(drive "$url" "$@")
    kill -INT "$st" 2>/dev/null || true
    wait "$st" 2>/dev/null || true
    calls=$(awk '$NF == "total" { print $(NF-2) + 0 }' "$DIR/strace.txt")
    top=$(awk 'NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" { print $NF ":" ($(NF-1) ~ /^[0-9]+$/ && NF == 6 ? $(NF-2) : $(NF-1)) }' "$DIR/strace.txt" | head -n 4 | paste -sd' ')
    [ -n "$ios" ] && [ "$ios" -gt 0 ] || { echo "0 -"; return; }
    awk -v c="${calls:-0}" -v n="$ios" -v top="$top" 'BEGIN { printf "%.2f %s\n", c / n, top }'
}

# client_run CMD... -> "USER-S SYS-S" of the client process (GNU time), its output in $DIR/client.out
client_run() {
    /usr/bin/time -f "%U %S" -o "$DIR/time.txt" timeout $((SECS + 30)) taskset -c 1 "$@" \
        > "$DIR/client.out" 2>&1 || true
    cat "$DIR/time.txt" | tail -n1
}

OUT=bench/results/profile.md
mkdir -p bench/results
{
if [ -z "$ONLY" ]; then
echo "## Targets ($CLIENT client on CPU 1, target on CPU 0; $SECS s per run)"
echo
echo "| target | workload | client | IOPS | user µs/IO | system µs/IO | total µs/IO | syscalls/IO | top syscalls by time: calls in the strace run |"
echo "|---|---|---|---|---|---|---|---|---|"
for wl in randread-4k-qd32 seqread-1m-qd4 randwrite-4k-qd32 randwrite-1m-qd4; do
    client=$CLIENT
    case $wl in
        randread-4k-qd32) args=(-b 8 -m 32 -r) ;;
        seqread-1m-qd4) args=(-b 2048 -m 4) ;;
        randwrite-4k-qd32) args=(-w -b 8 -m 32 -r); client=io ;;
        randwrite-1m-qd4) args=(-w -b 2048 -m 4); client=io ;;
    esac
    for t in tgtd portshift; do
        if [ $t = tgtd ]; then pid=$TGT_PID; url="iscsi://127.0.0.9:$TGT_PORT/$IQN_TGT/1"
        else pid=$PS_PID; url="iscsi://127.0.0.1:$PS_PORT/$IQN_PS/0"; fi
        read -r iops us sy < <(target_cpu "$pid" "$url" "${args[@]}")
        read -r sc top < <(target_syscalls "$pid" "$url" "${args[@]}")
        tot=$(awk -v a="$us" -v b="$sy" 'BEGIN { printf "%.2f", a + b }')
        echo "| $t | $wl | $client | $iops | $us | $sy | $tot | $sc | $top |"
        [ $wl = seqread-1m-qd4 ] && last_1m_iops=$iops
    done
done
echo
# The ceiling of a 1 MiB READ stream: one loopback TCP stream with the copies such a READ
# needs at least (send from a buffer, receive into one), pinned as the target and client are.
# The receiver's buffer size changes the figure twofold here (a 64 KiB buffer stays in the
# cache, a 1 MiB one does not), so both are measured and the faster is the ceiling.
s64=$("$DIR/stream" "$SECS" 0 1 65536)
s1m=$("$DIR/stream" "$SECS" 0 1 1048576)
stream=$(awk -v a="$s64" -v b="$s1m" 'BEGIN { print (a > b ? a : b) }')
echo "Loopback TCP stream (bench/stream.c, sender on CPU 0, receiver on CPU 1): $stream GB/s" \
    "(receiving 64 KiB at a time $s64, 1 MiB at a time $s1m);" \
    "portshift's 1 MiB reads: $(awk -v i="${last_1m_iops:-0}" -v s="$stream" \
    'BEGIN { g = i * 1048576 / 1e9; printf "%.2f GB/s = %.0f%% of it", g, (s > 0 ? 100 * g / s : 0) }')"
echo
fi
echo "## Initiators against portshift's target (client on CPU 1, target on CPU 0; $SECS s per run)"
echo
echo "| initiator | workload | IOPS | MB/s | client user µs/IO | client system µs/IO | client syscalls/IO |"
echo "|---|---|---|---|---|---|---|"
url="iscsi://127.0.0.1:$PS_PORT/$IQN_PS/0"
for wl in randread-4k-qd32 seqread-1m-qd4; do
    case $wl in
        randread-4k-qd32) pargs=(-b 8 -m 32 -r); iargs=(--blocks-per-io 8 --queue-depth 32); bs=4096 ;;
        seqread-1m-qd4) pargs=(-b 2048 -m 4); iargs=(--blocks-per-io 2048 --queue-depth 4); bs=1048576 ;;
    esac
    read -r u s < <(client_run iscsi-perf -t "$SECS" -i "$INI" "${pargs[@]}" "$url")
    ios=$(perf_ios "$(cat "$DIR/client.out")")
    strace -c -f -q -o "$DIR/cstrace.txt" timeout $((SECS + 30)) taskset -c 1 \
        iscsi-perf -t "$SECS" -i "$INI" "${pargs[@]}" "$url" > "$DIR/cs.out" 2>&1 || true
    sios=$(perf_ios "$(cat "$DIR/cs.out")")
    scalls=$(awk '$NF == "total" { print $(NF-2) + 0 }' "$DIR/cstrace.txt")
    awk -v n="$ios" -v s="$SECS" -v u="$u" -v y="$s" -v bs="$bs" -v c="${scalls:-0}" -v sn="${sios:-0}" \
        'BEGIN { printf "| iscsi-perf | '"$wl"' | %d | %d | %.2f | %.2f | %.2f |\n", n / s, n * bs / s / 1e6, u * 1e6 / n, y * 1e6 / n, (sn > 0 ? c / sn : 0) }'
    read -r u s < <(client_run "$BIN" io --portal 127.0.0.1:$PS_PORT --target "$IQN_PS" \
        --no-send-targets --initiator-name "$INI" "${iargs[@]}" --read-percent 100 \
        --duration "${SECS}s" --json)
    ios=$(io_ios < "$DIR/client.out")
    strace -c -f -q -o "$DIR/cstrace.txt" timeout $((SECS + 30)) taskset -c 1 "$BIN" io \
        --portal 127.0.0.1:$PS_PORT --target "$IQN_PS" --no-send-targets --initiator-name "$INI" \
        "${iargs[@]}" --read-percent 100 --duration "${SECS}s" --json > "$DIR/cs.out" 2>&1 || true
    sios=$(io_ios < "$DIR/cs.out")
    scalls=$(awk '$NF == "total" { print $(NF-2) + 0 }' "$DIR/cstrace.txt")
    awk -v n="${ios:-0}" -v s="$SECS" -v u="$u" -v y="$s" -v bs="$bs" -v c="${scalls:-0}" -v sn="${sios:-0}" \
        'BEGIN { if (n == 0) n = 1; printf "| portshift io | '"$wl"' | %d | %d | %.2f | %.2f | %.2f |\n", n / s, n * bs / s / 1e6, u * 1e6 / n, y * 1e6 / n, (sn > 0 ? c / sn : 0) }'
done
} | tee "$OUT"

if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
    echo
    echo "## perf (cpu-clock) of portshift's target, randread-4k-qd32 ($CLIENT): top symbols"
    perf record -q -e cpu-clock -F 2000 -g -o "$DIR/perf.data" -p "$PS_PID" -- sleep "$SECS" &
    pr=$!
    drive "iscsi://127.0.0.1:$PS_PORT/$IQN_PS/0" -b 8 -m 32 -r > /dev/null || true
    wait "$pr" || true
    perf report -i "$DIR/perf.data" --stdio --no-children --sort dso,sym 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -n 25
fi | tee -a "$OUT"
