#!/usr/bin/env bash
# The kernel's floor for 4 KiB READ responses on loopback TCP, and whether a zero-copy send
# lowers it: bench/sendpath.c (no iSCSI) sends N responses (48-byte header + a random 4 KiB
# page of a mapped, page-cached 1 GiB file) from CPU 0 to a reader on CPU 1, B responses per
# batch, by `writev` (the kernel copies the pages into the socket, as portshift's target does)
# or by `vmsplice` + `splice` (the pages are referenced, not copied).
#   bench/sendpath.sh [N] [ROUNDS]        (defaults: 1000000 responses, 3 rounds)
# Prints the sender's user and system CPU per response (median of the rounds, the two ways
# taking turns) for B = 8, 16, 32, 64 and 128. Needs a C compiler (cc). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"; ROUNDS="${2:-3}"
command -v cc >/dev/null || { echo "missing cc (apt-get install -y gcc)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "missing taskset (apt-get install -y util-linux)" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. bench/lib.sh
DIR="$(scratch_dir 2)"
trap 'rm -rf "$DIR"' EXIT
cc -O2 -Wall -o "$DIR/sendpath" bench/sendpath.c
fill_lun "$DIR/lun.img"
OUT=bench/results/sendpath.md
mkdir -p bench/results
{
echo "## 4 KiB responses on loopback TCP: writev (copy) against vmsplice + splice (no copy); $N responses, median of $ROUNDS rounds"
echo
echo "| responses per batch | writev: responses/s | user µs | system µs | syscalls | splice: responses/s | user µs | system µs | syscalls |"
echo "|---|---|---|---|---|---|---|---|---|"
port=39120
for b in 8 16 32 64 128; do
    : > "$DIR/writev.runs"; : > "$DIR/splice.runs"
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order="writev splice"; else order="splice writev"; fi
        for m in $order; do
            port=$((port + 1))
            timeout 120 "$DIR/sendpath" "$m" "$N" "$b" "$DIR/lun.img" "$port" >> "$DIR/$m.runs"
        done
    done
    row="| $b"
    for m in writev splice; do
        for col in 3 4 5 6; do
            row="$row | $(awk -v c=$col '{ print $c }' "$DIR/$m.runs" | median)"
        done
    done
    echo "$row |"
done
} | tee "$OUT"
