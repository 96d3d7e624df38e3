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

# CPU time of process PID so far, in clock ticks.
cputicks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# readperf PID ARGS... URL -> prints "IOPS MBPS CPU-US-PER-IO" (iscsi-perf, SECS seconds)
readperf() {
    local pid=$1 out c0 c1 iops mb
    shift
    c0=$(cputicks "$pid")
    out="$(timeout $((SECS + 30)) iscsi-perf -t "$SECS" -i "$INI" "$@" 2>&1 | tr '\r' '\n')"
    c1=$(cputicks "$pid")
    read -r iops mb < <(echo "$out" | grep -o 'iops average [0-9]* ([0-9]* MB/s)' | tail -n1 |
        sed -E 's/iops average ([0-9]+) \(([0-9]+) MB\/s\)/\1 \2/')
    [ -n "${iops:-}" ] || { echo "iscsi-perf: no result: $out" >&2; return; }
    awk -v i="$iops" -v m="$mb" -v c=$((c1 - c0)) -v s="$SECS" -v t="$TICK" \
        'BEGIN { printf "%d %d %.1f\n", i, m, (i > 0 ? c / t * 1e6 / (i * s) : 0) }'
}

