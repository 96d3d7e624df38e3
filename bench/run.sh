#!/usr/bin/env bash
# Benchmark: Debian's tgtd against portshift's target, in the same run on this machine, both
# serving a 1 GiB file LUN already in the page cache, and a 1 GiB null store (no storage:
# writes are dropped, reads never touch a disk) to measure the protocol path alone (NULL=0 skips it).
#   bench/run.sh [SECONDS]        (default 10 s per measurement)
# Reads: libiscsi's iscsi-perf (it only reads). Writes: qemu-img bench -w over qemu's libiscsi
# driver (iscsi-perf has no write mode and Debian's fio has no libiscsi engine); it runs a fixed
# count, sized from SECONDS, and reports the elapsed time, from which IOPS are computed.
# Each measurement also reads the target process's CPU time (utime + stime, /proc/PID/stat) to
# report the target's CPU cost per I/O, which other load on the machine disturbs less than IOPS.
# Prints a table with the ratio portshift / tgtd per workload and writes it to
# bench/results/latest.md. Talks only to loopback (tgtd on 127.0.0.9, portshift on 127.0.0.1).
# PORTSHIFT_BIN=path runs that binary instead of building target/release/portshift.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
NULL="${NULL:-1}"
export PATH="$PATH:/usr/sbin:/sbin"
for t in tgtd tgtadm iscsi-perf qemu-img; do
    command -v "$t" >/dev/null || {
        echo "missing $t: apt-get install -y tgt libiscsi-bin qemu-utils qemu-block-extra" >&2
        exit 1
    }
done
# shellcheck source=bench/lib.sh
. bench/lib.sh
BIN="$(portshift_bin)"
# The LUN files live on tmpfs when there is room (RAM-backed page cache): writes then measure
# the targets, not the kernel writing dirty pages back to a disk. BENCH_DIR=path overrides.
DIR="$(scratch_dir 3)"
IQN_TGT=iqn.2026-11.org.example:bench-tgt
IQN_PS=iqn.2026-11.org.example:bench-ps
INI=iqn.2026-11.org.example:bench-client
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
echo "LUN files in $DIR ($(df --output=fstype "$DIR" | tail -n1))" >&2
head -c 1073741824 /dev/urandom > "$DIR/tgt.img"
cp "$DIR/tgt.img" "$DIR/ps.img"
cat "$DIR/tgt.img" "$DIR/ps.img" > /dev/null

tgtd -f --iscsi portal=127.0.0.9:$TGT_PORT -C $CTL > "$DIR/tgtd.log" 2>&1 &
TGT_PID=$!
for _ in $(seq 50); do tgtadm -C $CTL --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C $CTL --lld iscsi --op new --mode target --tid 1 -T $IQN_TGT
tgtadm -C $CTL --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$DIR/tgt.img"
PS_LUNS=(--lun "$IQN_PS=$DIR/ps.img")
if [ "$NULL" = 1 ]; then
    # LUN 2 of tgtd and LUN 1 of portshift: 1 GiB null stores.
    tgtadm -C $CTL --lld iscsi --op new --mode logicalunit --tid 1 --lun 2 --bstype null \
        -b "$DIR/null-1073741824"
    PS_LUNS+=(--lun "$IQN_PS=null:1073741824")
fi
tgtadm -C $CTL --lld iscsi --op bind --mode target --tid 1 -I ALL

"$BIN" target --portal 127.0.0.1:$PS_PORT "${PS_LUNS[@]}" --admin 127.0.0.1:$ADMIN_PORT \
    > "$DIR/ps.log" 2>&1 &
PS_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PS_PORT) 2>/dev/null && break; sleep 0.1; done
kill -0 "$PS_PID" 2>/dev/null || { echo "portshift target did not start:" >&2; cat "$DIR/ps.log" >&2; exit 1; }
kill -0 "$TGT_PID" 2>/dev/null || { echo "tgtd did not start:" >&2; cat "$DIR/tgtd.log" >&2; exit 1; }


# writeperf PID COUNT DEPTH BYTES STEP URL -> prints "IOPS MBPS CPU-US-PER-IO"
# (qemu-img bench -w, no flushes: cache=none is writeback with O_DIRECT on the client side).
writeperf() {
    local pid=$1 count=$2 depth=$3 size=$4 step=$5 url=$6 out secs c0 c1
    sync
    c0=$(cputicks "$pid")
    out="$(timeout $((SECS * 6 + 60)) qemu-img bench -f raw -w -t none -c "$count" -d "$depth" \
        -s "$size" -S "$step" "$url" 2>&1)" || { echo "qemu-img bench failed: $out" >&2; return; }
    c1=$(cputicks "$pid")
    secs="$(echo "$out" | sed -nE 's/^Run completed in ([0-9.]+) seconds.*/\1/p')"
    [ -n "$secs" ] || { echo "qemu-img bench: no result: $out" >&2; return; }
    awk -v n="$count" -v s="$secs" -v b="$size" -v c=$((c1 - c0)) -v t="$TICK" \
        'BEGIN { printf "%d %d %.1f\n", n / s, n * b / s / 1000000, c / t * 1e6 / n }'
}

# A fixed count per write workload: about SECS seconds at 50k IOPS (4 KiB) / 1 GB/s (1 MiB).
W4K_COUNT=$((SECS * 50000))
W1M_COUNT=$((SECS * 1000))
# 4 KiB writes scattered over the LUN: qemu-img bench adds STEP to the offset, modulo the
# image size, so a large step that is coprime to the number of 4 KiB slots visits them in a
# pseudo-random order. 1 MiB writes are sequential (step = size).
STEP_4K=$((4096 * 99991))

declare -A WL=(
    [randread-4k-qd32]="read -b 8 -m 32 -r"
    [seqread-1m-qd4]="read -b 2048 -m 4"
    [randwrite-4k-qd32]="write $W4K_COUNT 32 4096 $STEP_4K"
    [seqwrite-1m-qd4]="write $W1M_COUNT 4 1048576 1048576"
)
ORDER=(randread-4k-qd32 seqread-1m-qd4 randwrite-4k-qd32 seqwrite-1m-qd4)

# run WORKLOAD PID TARGET-URL
run() {
    local spec kind
    spec="${WL[$1]}"
    kind="${spec%% *}"
    # shellcheck disable=SC2086
    if [ "$kind" = read ]; then
        readperf "$2" ${spec#read } "$3"
    else
        writeperf "$2" ${spec#write } "$3"
    fi
}

mkdir -p bench/results
{
    echo "| store | workload | tgtd IOPS | tgtd MB/s | portshift IOPS | portshift MB/s | IOPS ratio (portshift/tgtd) | tgtd CPU µs/IO | portshift CPU µs/IO |"
    echo "|---|---|---|---|---|---|---|---|---|"
    stores=(file)
    [ "$NULL" = 1 ] && stores+=(null)
    for store in "${stores[@]}"; do
        if [ "$store" = file ]; then t_lun=1; p_lun=0; else t_lun=2; p_lun=1; fi
        for w in "${ORDER[@]}"; do
            read -r t_iops t_mb t_cpu < <(run "$w" "$TGT_PID" "iscsi://127.0.0.9:$TGT_PORT/$IQN_TGT/$t_lun")
            read -r p_iops p_mb p_cpu < <(run "$w" "$PS_PID" "iscsi://127.0.0.1:$PS_PORT/$IQN_PS/$p_lun")
            ratio=$(awk -v a="${p_iops:-0}" -v b="${t_iops:-0}" \
                'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
            echo "| $store | $w | ${t_iops:-?} | ${t_mb:-?} | ${p_iops:-?} | ${p_mb:-?} | $ratio | ${t_cpu:-?} | ${p_cpu:-?} |"
        done
    done
} | tee bench/results/latest.md
echo
echo "reproduce: bench/run.sh $SECS   ($(nproc) cores, $(date -u +%Y-%m-%d))"
