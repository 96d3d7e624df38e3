#!/usr/bin/env bash
# Benchmark: libiscsi's iscsi-perf against Debian's tgtd and against portshift's target, in the
# same run on this machine, both serving a 1 GiB file LUN already in the page cache.
#   bench/run.sh [SECONDS]        (default 10 s per measurement)
# Prints a table with the ratio portshift / tgtd per workload and writes it to
# bench/results/latest.md. Talks only to loopback (tgtd on 127.0.0.9, portshift on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
export PATH="$PATH:/usr/sbin:/sbin"
for t in tgtd tgtadm iscsi-perf; do
    command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y tgt libiscsi-bin" >&2; exit 1; }
done
cargo build --release -p portshift >/dev/null
BIN="$PWD/target/release/portshift"
DIR="$(mktemp -d)"
IQN_TGT=iqn.2026-11.org.example:bench-tgt
IQN_PS=iqn.2026-11.org.example:bench-ps
TGT_PORT=3290; PS_PORT=3291; ADMIN_PORT=3292; CTL=17
TGT_PID=""; PS_PID=""
cleanup() {
    [ -n "$TGT_PID" ] && kill -9 "$TGT_PID" 2>/dev/null || true
    [ -n "$PS_PID" ] && kill "$PS_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# Two 1 GiB files with real (non-zero) content, read once so both are in the page cache.
head -c 1073741824 /dev/urandom > "$DIR/tgt.img"
cp "$DIR/tgt.img" "$DIR/ps.img"
cat "$DIR/tgt.img" "$DIR/ps.img" > /dev/null

tgtd -f --iscsi portal=127.0.0.9:$TGT_PORT -C $CTL > "$DIR/tgtd.log" 2>&1 &
TGT_PID=$!
for _ in $(seq 50); do tgtadm -C $CTL --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C $CTL --lld iscsi --op new --mode target --tid 1 -T $IQN_TGT
tgtadm -C $CTL --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$DIR/tgt.img"
tgtadm -C $CTL --lld iscsi --op bind --mode target --tid 1 -I ALL

"$BIN" target --portal 127.0.0.1:$PS_PORT --lun "$IQN_PS=$DIR/ps.img" --admin 127.0.0.1:$ADMIN_PORT > "$DIR/ps.log" 2>&1 &
PS_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PS_PORT) 2>/dev/null && break; sleep 0.1; done

# perf NAME URL ARGS... -> prints "IOPS MBPS"
perf() {
    local out
    out="$(timeout $((SECS + 30)) iscsi-perf -t "$SECS" "$@" 2>&1 | tr '\r' '\n')"
    echo "$out" | grep -o 'iops average [0-9]* ([0-9]* MB/s)' | tail -n1 | sed -E 's/iops average ([0-9]+) \(([0-9]+) MB\/s\)/\1 \2/'
}

declare -A WL=(
    [randread-4k-qd32]="-b 8 -m 32 -r"
    [seqread-1m-qd4]="-b 2048 -m 4"
)
ORDER=(randread-4k-qd32 seqread-1m-qd4)
mkdir -p bench/results
{
    echo "| workload | tgtd IOPS | tgtd MB/s | portshift IOPS | portshift MB/s | ratio (portshift/tgtd) |"
    echo "|---|---|---|---|---|---|"
    for w in "${ORDER[@]}"; do
        # shellcheck disable=SC2086
        read -r t_iops t_mb < <(perf ${WL[$w]} -i iqn.2026-11.org.example:bench-client iscsi://127.0.0.9:$TGT_PORT/$IQN_TGT/1)
        # shellcheck disable=SC2086
        read -r p_iops p_mb < <(perf ${WL[$w]} -i iqn.2026-11.org.example:bench-client iscsi://127.0.0.1:$PS_PORT/$IQN_PS/0)
        ratio=$(awk -v a="${p_iops:-0}" -v b="${t_iops:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        echo "| $w | ${t_iops:-?} | ${t_mb:-?} | ${p_iops:-?} | ${p_mb:-?} | $ratio |"
    done
} | tee bench/results/latest.md
echo
echo "reproduce: bench/run.sh $SECS   ($(nproc) cores, $(date -u +%Y-%m-%d))"
