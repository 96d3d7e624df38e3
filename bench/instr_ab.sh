#!/usr/bin/env bash
# Instructions per I/O of the target, two portshift builds side by side, counted by valgrind's
# callgrind (user space of every target thread): repeatable where wall-clock CPU time on this
# virtual machine moves by ±10% from run to run. Kernel work (syscalls) is not counted; see
# bench/cpu_ab.sh for the CPU time. Each build serves a 256 MiB page-cached file LUN under
# callgrind while iscsi-perf reads for SECONDS; the I/O count comes from iscsi-perf's average.
#   bench/instr_ab.sh BEFORE_BIN AFTER_BIN [SECONDS]       (default 15 s per workload)
set -euo pipefail
cd "$(dirname "$0")/.."
A="$1"; B="$2"; SECS="${3:-15}"
export PATH="$PATH:/usr/sbin:/sbin"
for t in valgrind iscsi-perf; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
INI=iqn.2026-11.org.example:bench-client
IQN=iqn.2026-11.org.example:bench-ps
PORT=3295; ADMIN=3296
DIR="$(mktemp -d -p "${BENCH_DIR:-/dev/shm}")"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
head -c $((256 * 1024 * 1024)) /dev/urandom > "$DIR/lun.img"

# measure BIN WORKLOAD-ARGS... -> prints "IOS INSTRUCTIONS"
measure() {
    local bin=$1 out ios ir
    shift
    valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" "$bin" target \
        --portal 127.0.0.1:$PORT --lun "$IQN=$DIR/lun.img" --admin 127.0.0.1:$ADMIN \
        > "$DIR/target.log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
    out="$(timeout $((SECS + 60)) iscsi-perf -t "$SECS" -i "$INI" "$@" "iscsi://127.0.0.1:$PORT/$IQN/0" 2>&1 | tr '\r' '\n')"
    kill -INT "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    ios=$(echo "$out" | grep -o 'iops average [0-9]*' | tail -n1 | awk -v s="$SECS" '{ print $3 * s }')
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$DIR/cg.out")
    echo "${ios:-0} ${ir:-0}"
}

echo "| workload | before instr/IO | after instr/IO | after/before |"
echo "|---|---|---|---|"
for w in "randread-4k-qd32:-b 8 -m 32 -r" "seqread-1m-qd4:-b 2048 -m 4"; do
    name="${w%%:*}"; args="${w#*:}"
    # shellcheck disable=SC2086
    read -r bi bir < <(measure "$A" $args)
    # shellcheck disable=SC2086
    read -r ai air < <(measure "$B" $args)
    awk -v n="$name" -v bi="$bi" -v bir="$bir" -v ai="$ai" -v air="$air" 'BEGIN {
        b = (bi > 0 ? bir / bi : 0); a = (ai > 0 ? air / ai : 0)
        printf "| %s | %.0f (%d I/Os) | %.0f (%d I/Os) | %s |\n", n, b, bi, a, ai, (b > 0 ? sprintf("%.3f", a / b) : "n/a") }'
done
echo
echo "reproduce: bench/instr_ab.sh BEFORE_BIN AFTER_BIN $SECS   ($(nproc) cores, $(date -u +%Y-%m-%d))"
