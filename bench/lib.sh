# Shared by bench/run.sh and bench/cpu_ab.sh: how a read workload is measured.
# Needs SECS (seconds per measurement) and INI (initiator name) set by the caller.

# portshift_bin -> the binary to benchmark: $PORTSHIFT_BIN if set, else target/release/portshift,
# built first.
portshift_bin() {
    if [ -n "${PORTSHIFT_BIN:-}" ]; then
        echo "$PORTSHIFT_BIN"
    else
        cargo build --release -q -p portshift >&2
        echo "$PWD/target/release/portshift"
    fi
}

# scratch_dir GIB -> a new temporary directory for the LUN files: $BENCH_DIR if set, else
# /dev/shm when it has room for GIB GiB (so the targets, not write-back to a disk, are
# measured), else /tmp.
scratch_dir() {
    local base="${BENCH_DIR:-}"
    if [ -z "$base" ] && [ -d /dev/shm ] &&
        [ "$(df -k --output=avail /dev/shm | tail -n1)" -gt $(($1 * 1024 * 1024)) ]; then
        base=/dev/shm
    fi
    mktemp -d -p "${base:-/tmp}"
}

# fill_lun FILE: 1 GiB of random bytes in FILE, read once so that it sits in the page cache.
fill_lun() {
    head -c 1073741824 /dev/urandom > "$1"
    cat "$1" > /dev/null
}

# io_ios: the I/O count in a `portshift io --json` report on standard input (empty if none).
io_ios() { grep -o '"ios": *[0-9]*' | head -n1 | grep -o '[0-9]*$' || true; }

# median: the median of the numbers on standard input, one per line.
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# CPU time of process PID so far, in clock ticks.
cputicks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# readperf PID ARGS... URL -> prints "IOPS MBPS CPU-US-PER-IO" (iscsi-perf, SECS seconds; on
# CPU $CLIENT_CPU when that is set)
readperf() {
    local pid=$1 out c0 c1 iops mb pin=()
    shift
    [ -n "${CLIENT_CPU:-}" ] && pin=(taskset -c "$CLIENT_CPU")
    c0=$(cputicks "$pid")
    out="$(timeout $((SECS + 30)) "${pin[@]}" iscsi-perf -t "$SECS" -i "$INI" "$@" 2>&1 | tr '\r' '\n')"
    c1=$(cputicks "$pid")
    read -r iops mb < <(echo "$out" | grep -o 'iops average [0-9]* ([0-9]* MB/s)' | tail -n1 |
        sed -E 's/iops average ([0-9]+) \(([0-9]+) MB\/s\)/\1 \2/')
    [ -n "${iops:-}" ] || { echo "iscsi-perf: no result: $out" >&2; return; }
    awk -v i="$iops" -v m="$mb" -v c=$((c1 - c0)) -v s="$SECS" -v t="$TICK" \
        'BEGIN { printf "%d %d %.1f\n", i, m, (i > 0 ? c / t * 1e6 / (i * s) : 0) }'
}

