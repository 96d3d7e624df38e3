#!/usr/bin/env bash
# Does a PMD-mapped LUN make 4 KiB random READs cheaper for the target? The same build serves
# the same 1 GiB file from a plain tmpfs and from a tmpfs mounted huge=always (2 MiB pages),
# iscsi-perf -b 8 -m 32 -r against each in turns; prints IOPS, the target's CPU per I/O and how
# much of the LUN the target mapped with 2 MiB pages (ShmemPmdMapped).
#   sudo bench/hugepages.sh [SECONDS] [ROUNDS]      (defaults: 5 s, 3 rounds; root for mount)
# Target on CPU 0, client on CPU 1, loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"; RUNS="${2:-3}"
[ "$(id -u)" = 0 ] || { echo "run as root (it mounts a tmpfs)" >&2; exit 1; }
command -v iscsi-perf >/dev/null || { echo "missing iscsi-perf: apt-get install -y libiscsi-bin" >&2; exit 1; }
INI=iqn.2026-12.org.example:hugepages-client
IQN=iqn.2026-12.org.example:hugepages
PORT=3299; ADMIN=3300
CLIENT_CPU=1   # readperf runs iscsi-perf there
# shellcheck source=bench/lib.sh
. bench/lib.sh
BIN="$(portshift_bin)"
DIR="$(mktemp -d -p /dev/shm)"
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null
    wait 2>/dev/null || true
    mountpoint -q "$DIR/huge" && umount "$DIR/huge"
    rm -rf "$DIR"
}
trap cleanup EXIT
mkdir -p "$DIR/small" "$DIR/huge"
mount -t tmpfs -o size=1200m,huge=always tmpfs "$DIR/huge"
fill_lun "$DIR/small/lun.img"
cp "$DIR/small/lun.img" "$DIR/huge/lun.img"

for run in $(seq "$RUNS"); do
    for kind in small huge; do
        taskset -c 0 "$BIN" target --portal 127.0.0.1:$PORT --lun "$IQN=$DIR/$kind/lun.img" \
            --admin 127.0.0.1:$ADMIN > "$DIR/target.log" 2>&1 &
        PID=$!
        for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
        kill -0 "$PID" 2>/dev/null || { echo "target did not start:" >&2; cat "$DIR/target.log" >&2; exit 1; }
        read -r iops _ cpu < <(readperf "$PID" -b 8 -m 32 -r "iscsi://127.0.0.1:$PORT/$IQN/0")
        pmd=$(awk '/^ShmemPmdMapped/ { print $2 }' "/proc/$PID/smaps_rollup")
        echo "round $run, $kind pages: ${iops:-?} IOPS, ${cpu:-?} µs target CPU/IO, ShmemPmdMapped ${pmd:-?} kB"
        kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    done
done
