#!/usr/bin/env bash
# Initiators side by side on one portshift target, taking turns so that the machine's drift
# (this VM's speed changes from minute to minute) falls on both alike:
#   bench/initiators.sh [SECONDS] [ROUNDS]        (defaults: 4 s per run, 5 rounds)
# Each round runs libiscsi's iscsi-perf and `portshift io` once each, iscsi-perf first in odd
# rounds and second in even ones, for 4 KiB random reads at QD32 and 1 MiB sequential reads
# at QD4, on a page-cached 1 GiB file LUN. The target is pinned to CPU 0 and the client to CPU 1 (taskset), as in profile.sh.
# Prints every run, then per workload the median IOPS and MB/s of each initiator, the median
# of the rounds' ratios (portshift io / iscsi-perf) and how many rounds portshift io won.
# Loopback only; every run is bounded by SECONDS (and a timeout). Output also in
# bench/results/initiators.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-4}"; ROUNDS="${2:-5}"
export PATH="$PATH:/usr/sbin:/sbin"
for t in iscsi-perf taskset; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y libiscsi-bin util-linux)" >&2; exit 1; }
done
# shellcheck source=bench/lib.sh
. bench/lib.sh
BIN="$(portshift_bin)"
INI=iqn.2026-12.org.example:initiators-client
IQN=iqn.2026-12.org.example:initiators-ps
PORT=3301
DIR="$(scratch_dir 2)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
fill_lun "$DIR/lun.img"
taskset -c 0 "$BIN" target --portal 127.0.0.1:$PORT --lun "$IQN=$DIR/lun.img" > "$DIR/ps.log" 2>&1 &
PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null || { echo "portshift target did not start:" >&2; cat "$DIR/ps.log" >&2; exit 1; }
url="iscsi://127.0.0.1:$PORT/$IQN/0"

# run_perf ARGS... -> IOPS of one iscsi-perf run (its last "iops average")
run_perf() {
    local n
    n="$(timeout $((SECS + 30)) taskset -c 1 iscsi-perf -t "$SECS" -i "$INI" "$@" "$url" 2>&1 |
        tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -n1 | grep -o '[0-9]*$' || true)"
    echo "${n:-0}"
}
# io ARGS... -> IOPS of one `portshift io` run
io() {
    local out
    out="$(timeout $((SECS + 30)) taskset -c 1 "$BIN" io --portal 127.0.0.1:$PORT --target "$IQN" \
        --no-send-targets --initiator-name "$INI" "$@" --read-percent 100 \
        --duration "${SECS}s" --json 2>/dev/null || true)"
    local n
    n="$(io_ios <<<"$out")"
    echo $(( ${n:-0} / SECS ))
}

OUT=bench/results/initiators.md
mkdir -p bench/results
{
echo "## Initiators taking turns on portshift's target ($ROUNDS rounds, $SECS s per run; client on CPU 1, target on CPU 0)"
echo
echo "| workload | round | iscsi-perf IOPS | portshift io IOPS | ratio |"
echo "|---|---|---|---|---|"
summary=()
for wl in randread-4k-qd32 seqread-1m-qd4; do
    case $wl in
        randread-4k-qd32) pargs=(-b 8 -m 32 -r); iargs=(--blocks-per-io 8 --queue-depth 32); bs=4096 ;;
        seqread-1m-qd4) pargs=(-b 2048 -m 4); iargs=(--blocks-per-io 2048 --queue-depth 4); bs=1048576 ;;
    esac
    : > "$DIR/$wl.runs"
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then p=$(run_perf "${pargs[@]}"); i=$(io "${iargs[@]}")
        else i=$(io "${iargs[@]}"); p=$(run_perf "${pargs[@]}"); fi
        echo "$p $i" >> "$DIR/$wl.runs"
        awk -v p="$p" -v i="$i" -v w="$wl" -v r="$r" \
            'BEGIN { printf "| %s | %d | %d | %d | %.2f |\n", w, r, p, i, (p > 0 ? i / p : 0) }'
    done
    mp=$(awk '{ print $1 }' "$DIR/$wl.runs" | median)
    mi=$(awk '{ print $2 }' "$DIR/$wl.runs" | median)
    mr=$(awk '{ print ($1 > 0 ? $2 / $1 : 0) }' "$DIR/$wl.runs" | median)
    won=$(awk '$2 >= $1 { n++ } END { print n + 0 }' "$DIR/$wl.runs")
    summary+=("$(awk -v w="$wl" -v p="$mp" -v i="$mi" -v r="$mr" -v bs="$bs" -v won="$won" -v n="$ROUNDS" \
        'BEGIN { printf "| %s | %d | %d | %d | %d | %.2f | %d of %d |", w, p, p * bs / 1e6, i, i * bs / 1e6, r, won, n }')")
done
echo
echo "| workload | iscsi-perf IOPS (median) | MB/s | portshift io IOPS (median) | MB/s | median ratio | rounds portshift io won |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
} | tee "$OUT"
