#!/usr/bin/env bash
# A/B of the target's CPU time per I/O between two portshift builds, measured as bench/run.sh
# measures it (utime + stime of the target process around an iscsi-perf run), on the same
# page-cached 1 GiB file LUN, the two builds taking turns:
#   bench/cpu_ab.sh BEFORE_BIN AFTER_BIN [SECONDS] [RUNS]     (defaults: 10 s, 3 runs)
# Workloads: randread-4k-qd32 and seqread-1m-qd4. Prints, per workload and build, every run and
# the median IOPS and CPU µs/IO, then the ratio after/before of the medians. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
A="$1"; B="$2"; SECS="${3:-10}"; RUNS="${4:-3}"
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
    "$1" target --portal 127.0.0.1:$PORT --lun "$IQN=$DIR/lun.img" --admin 127.0.0.1:$ADMIN \
        > "$DIR/target.log" 2>&1 &
    PID=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null || { echo "target $1 did not start:" >&2; cat "$DIR/target.log" >&2; exit 1; }
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=""; }

declare -A WL=([randread-4k-qd32]="-b 8 -m 32 -r" [seqread-1m-qd4]="-b 2048 -m 4")
declare -A RES
for run in $(seq "$RUNS"); do
    for build in before after; do
        bin="$A"; [ "$build" = after ] && bin="$B"
        start "$bin"
        for w in randread-4k-qd32 seqread-1m-qd4; do
            # shellcheck disable=SC2086
            read -r iops _ cpu < <(readperf "$PID" ${WL[$w]} "iscsi://127.0.0.1:$PORT/$IQN/0")
            echo "run $run $build $w: ${iops:-?} IOPS, ${cpu:-?} µs CPU/IO" >&2
            RES[$build,$w]+="${iops:-0} ${cpu:-0}"$'\n'
        done
        stop
    done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
echo "| workload | before IOPS (median) | after IOPS (median) | before CPU µs/IO (median) | after CPU µs/IO (median) | CPU after/before |"
echo "|---|---|---|---|---|---|"
for w in randread-4k-qd32 seqread-1m-qd4; do
    bi=$(printf '%s' "${RES[before,$w]}" | awk 'NF { print $1 }' | median)
    ai=$(printf '%s' "${RES[after,$w]}" | awk 'NF { print $1 }' | median)
    bc=$(printf '%s' "${RES[before,$w]}" | awk 'NF { print $2 }' | median)
    ac=$(printf '%s' "${RES[after,$w]}" | awk 'NF { print $2 }' | median)
    r=$(awk -v a="$ac" -v b="$bc" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
    echo "| $w | $bi | $ai | $bc | $ac | $r |"
done
echo
echo "reproduce: bench/cpu_ab.sh BEFORE_BIN AFTER_BIN $SECS $RUNS   ($(nproc) cores, $(date -u +%Y-%m-%d))"
