#!/usr/bin/env bash
# A/B of the target's CPU time per I/O between two portshift builds, measured as bench/run.sh
# measures it (utime + stime of the target process around an iscsi-perf run), on the same
# page-cached 1 GiB file LUN, the two builds taking turns:
#   bench/cpu_ab.sh BEFORE_BIN AFTER_BIN [SECONDS] [RUNS]     (defaults: 10 s, 3 runs)
#   WORKLOADS="randwrite-1m-qd4" bench/cpu_ab.sh ...          (choose the workloads)
# Workloads: randread-4k-qd32 and seqread-1m-qd4 (iscsi-perf, the default), randwrite-4k-qd32
# and randwrite-1m-qd4 (`portshift io --read-percent 0` of AFTER_BIN, the same client for both
# builds: Debian's iscsi-perf only reads). The target runs on CPU 0, the client on CPU 1.
# Prints, per workload and build, every run and the median IOPS and CPU µs/IO, then the ratio
# after/before of the medians. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
A="$1"; B="$2"; SECS="${3:-10}"; RUNS="${4:-3}"
WORKLOADS="${WORKLOADS:-randread-4k-qd32 seqread-1m-qd4}"
CLIENT_CPU=1   # readperf runs iscsi-perf there
export PATH="$PATH:/usr/sbin:/sbin"
command -v iscsi-perf >/dev/null || { echo "missing iscsi-perf: apt-get install -y libiscsi-bin" >&2; exit 1; }
INI=iqn.2026-11.org.example:bench-client
IQN=iqn.2026-11.org.example:bench-ps
PORT=3293; ADMIN=3294
# shellcheck source=bench/lib.sh
. bench/lib.sh
DIR="$(scratch_dir 2)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
fill_lun "$DIR/lun.img"

# start BIN: runs one target on the LUN file, sets PID.
start() {
    taskset -c 0 "$1" target --portal 127.0.0.1:$PORT --lun "$IQN=$DIR/lun.img" --admin 127.0.0.1:$ADMIN \
        > "$DIR/target.log" 2>&1 &
    PID=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null || { echo "target $1 did not start:" >&2; cat "$DIR/target.log" >&2; exit 1; }
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=""; }

declare -A WL=([randread-4k-qd32]="-b 8 -m 32 -r" [seqread-1m-qd4]="-b 2048 -m 4"
    [randwrite-4k-qd32]="8 32" [randwrite-1m-qd4]="2048 4")
for w in $WORKLOADS; do
    [ -n "${WL[$w]:-}" ] || { echo "unknown workload $w (one of: ${!WL[*]})" >&2; exit 1; }
done

# writeio PID BLOCKS-PER-IO QUEUE-DEPTH -> "IOPS MBPS CPU-US-PER-IO" (AFTER_BIN's `portshift io`
# writing for SECS seconds on CPU 1; the CPU is that of target PID, whose user and system
# parts per I/O go to standard error)
writeio() {
    local pid=$1 u0 s0 u1 s1 ios
    read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
    ios="$(timeout $((SECS + 30)) taskset -c 1 "$B" io --portal 127.0.0.1:$PORT --target "$IQN" \
        --lun 0 --no-send-targets --initiator-name "$INI" --blocks-per-io "$2" --queue-depth "$3" \
        --read-percent 0 --duration "${SECS}s" --json 2>/dev/null | io_ios)"
    read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
    [ -n "$ios" ] && [ "$ios" -gt 0 ] || { echo "portshift io: no result" >&2; return; }
    awk -v n="$ios" -v u=$((u1 - u0)) -v y=$((s1 - s0)) -v t="$TICK" \
        'BEGIN { printf "  target user %.1f, system %.1f µs/IO\n", u / t * 1e6 / n, y / t * 1e6 / n }' >&2
    awk -v n="$ios" -v b="$2" -v c=$((u1 - u0 + s1 - s0)) -v s="$SECS" -v t="$TICK" \
        'BEGIN { printf "%d %d %.1f\n", n / s, n * b * 512 / s / 1e6, c / t * 1e6 / n }'
}
declare -A RES
for run in $(seq "$RUNS"); do
    for build in before after; do
        bin="$A"; [ "$build" = after ] && bin="$B"
        start "$bin"
        for w in $WORKLOADS; do
            # shellcheck disable=SC2086
            case $w in
                randwrite-*) read -r iops _ cpu < <(writeio "$PID" ${WL[$w]}) ;;
                *) read -r iops _ cpu < <(readperf "$PID" ${WL[$w]} "iscsi://127.0.0.1:$PORT/$IQN/0") ;;
            esac
            echo "run $run $build $w: ${iops:-?} IOPS, ${cpu:-?} µs CPU/IO" >&2
            RES[$build,$w]+="${iops:-0} ${cpu:-0}"$'\n'
        done
        stop
    done
done
echo "| workload | before IOPS (median) | after IOPS (median) | before CPU µs/IO (median) | after CPU µs/IO (median) | CPU after/before |"
echo "|---|---|---|---|---|---|"
for w in $WORKLOADS; do
    bi=$(printf '%s' "${RES[before,$w]}" | awk 'NF { print $1 }' | median)
    ai=$(printf '%s' "${RES[after,$w]}" | awk 'NF { print $1 }' | median)
    bc=$(printf '%s' "${RES[before,$w]}" | awk 'NF { print $2 }' | median)
    ac=$(printf '%s' "${RES[after,$w]}" | awk 'NF { print $2 }' | median)
    r=$(awk -v a="$ac" -v b="$bc" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
    echo "| $w | $bi | $ai | $bc | $ac | $r |"
done
echo
echo "reproduce: WORKLOADS=\"$WORKLOADS\" bench/cpu_ab.sh BEFORE_BIN AFTER_BIN $SECS $RUNS   ($(nproc) cores, $(date -u +%Y-%m-%d))"
