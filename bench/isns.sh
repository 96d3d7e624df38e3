#!/usr/bin/env bash
# Benchmark: Debian's isnsd (open-isns) against `portshift isns`, in the same run on this machine,
# both on loopback, loaded by `portshift isns-bench`.
#   bench/isns.sh [SECONDS]        (default 10 s per query measurement)
# For each N in NODES (default "1000 10000 100000") and each server, on a fresh database: one run
# registers N target nodes (10 per entity, 4 portals each) over 8 connections, bounded by
# REG_TIMEOUT seconds (default 120: a server that has not registered them all by then gets no
# query measurement at that N, and the table says how far it got); then two query-only runs
# (--skip-register) of SECONDS each ask for random nodes' portals over C = 1 and C = 8
# persistent connections. Around each query run the server's CPU time (utime + stime,
# /proc/PID/stat) gives its CPU cost per query. Prints a table per server and the ratios
# portshift / isnsd, and writes it to bench/results/isns-latest.md.
# PORTSHIFT_BIN=path runs that binary instead of building target/release/portshift.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
NODES="${NODES:-1000 10000 100000}"
REG_TIMEOUT="${REG_TIMEOUT:-120}"
ISNSD_PORT="${ISNSD_PORT:-3295}"
PS_PORT="${PS_PORT:-3296}"
export PATH="$PATH:/usr/sbin:/sbin"
for t in isnsd jq; do
    command -v "$t" >/dev/null || {
        echo "missing $t: apt-get install -y open-isns-server jq" >&2
        exit 1
    }
done
# shellcheck source=bench/lib.sh
. bench/lib.sh
BIN="$(portshift_bin)"
DIR="$(mktemp -d)"
SRV_PID=""
cleanup() {
    [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT


listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start SERVER DATADIR -> sets SRV_PID and PORT (fresh database in DATADIR)
start() {
    mkdir -p "$2"
    if [ "$1" = isnsd ]; then
        PORT=$ISNSD_PORT
        mkdir -p "$2/db"
        printf '%s\n' "Security = 0" "BindAddress = 127.0.0.1:$PORT" "Database = $2/db" \
            "PIDFile = $2/isnsd.pid" "ControlSocket = $2/isnsctl" \
            "SourceName = iqn.2026-11.org.example:bench-isnsd" "DefaultDiscoveryDomain = 1" \
            > "$2/isnsd.conf"
        listening "$PORT" && { echo "port $PORT is in use (ISNSD_PORT=...)" >&2; exit 1; }
        isnsd -f -c "$2/isnsd.conf" > "$2/server.log" 2>&1 &
    else
        PORT=$PS_PORT
        listening "$PORT" && { echo "port $PORT is in use (PS_PORT=...)" >&2; exit 1; }
        "$BIN" isns --listen "127.0.0.1:$PORT" --db "$2/isns.redb" > "$2/server.log" 2>&1 &
    fi
    SRV_PID=$!
    for _ in $(seq 100); do listening "$PORT" && break; sleep 0.1; done
    kill -0 "$SRV_PID" 2>/dev/null && listening "$PORT" ||
        { echo "$1 did not start:" >&2; cat "$2/server.log" >&2; exit 1; }
}

stop() {
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=""
}

# isns-bench ARGS... -> its JSON report on stdout (bounded by `timeout` as well)
ibench() {
    timeout $((REG_TIMEOUT + SECS + 60)) "$BIN" isns-bench --server "127.0.0.1:$PORT" \
        --run-id bench --register-timeout "$REG_TIMEOUT" --json "$@" 2>/dev/null || true
}

# Results, one line each:
#   reg SERVER N COMPLETED NODES SECS NODES_PER_S P99_US ERRORS
#   qry SERVER N C QUERIES_PER_S P50_US P99_US CPU_US_PER_QUERY ERRORS
RES="$DIR/results"
: > "$RES"
for n in $NODES; do
    for server in isnsd portshift; do
        start "$server" "$DIR/$server-$n"
        echo "$server: registering $n nodes (at most $REG_TIMEOUT s)" >&2
        reg="$(ibench --nodes "$n" --concurrency 8 --duration 0)"
        if [ -z "$reg" ]; then
            echo "reg $server $n false 0 0 0 0 no-report" >> "$RES"
            stop
            continue
        fi
        echo "$reg" | jq -r --arg s "$server" --arg n "$n" '.register |
            "reg \($s) \($n) \(.completed) \(.registered_nodes) \(.elapsed_s * 10 | round / 10)
             \(.nodes_per_s | round) \(.latency_us.p99) \(.errors | add // 0)"' | tr -s ' \n' ' ' >> "$RES"
        echo >> "$RES"
        if [ "$(echo "$reg" | jq -r .register.completed)" = true ]; then
            for c in 1 8; do
                echo "$server: N = $n, C = $c, $SECS s of queries" >&2
                c0=$(cputicks "$SRV_PID")
                q="$(ibench --nodes "$n" --concurrency "$c" --duration "$SECS" --skip-register)"
                c1=$(cputicks "$SRV_PID")
                [ -n "$q" ] || { echo "qry $server $n $c 0 0 0 0 no-report" >> "$RES"; continue; }
                echo "$q" | jq -r --arg s "$server" --arg n "$n" --arg c "$c" \
                    --argjson ticks $((c1 - c0)) --argjson hz "$TICK" '.query |
                    "qry \($s) \($n) \($c) \(.queries_per_s | round) \(.latency_us.p50)
                     \(.latency_us.p99)
                     \(if .queries > 0 then ($ticks / $hz * 1e6 / .queries * 10 | round / 10) else 0 end)
                     \(.errors | add // 0)"' | tr -s ' \n' ' ' >> "$RES"
                echo >> "$RES"
            done
        fi
        stop
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
field() { awk -v k="$1" -v s="$2" -v n="$3" -v c="${4:-}" -v f="$5" \
    '$1 == k && $2 == s && $3 == n && (k == "reg" || $4 == c) { print $f; exit }' "$RES"; }

mkdir -p bench/results
{
    echo "Registration: N target nodes, 10 per entity (one DevAttrReg each, 4 portals), 8 connections, at most $REG_TIMEOUT s."
    echo
    echo "| N | isnsd nodes/s | isnsd registered (s) | portshift nodes/s | portshift registered (s) | ratio (portshift/isnsd) |"
    echo "|---|---|---|---|---|---|"
    for n in $NODES; do
        row="| $n"
        for s in isnsd portshift; do
            done_="$(field reg "$s" "$n" "" 5)"; secs="$(field reg "$s" "$n" "" 6)"
            rate="$(field reg "$s" "$n" "" 7)"; ok="$(field reg "$s" "$n" "" 4)"
            if [ "$ok" = true ]; then got="all in ${secs}"; else got="${done_:-0} of $n in ${secs:-?} (not finished)"; fi
            row="$row | ${rate:-?} | $got"
        done
        echo "$row | $(ratio "$(field reg portshift "$n" "" 7)" "$(field reg isnsd "$n" "" 7)") |"
    done
    echo
    echo "Queries: DevAttrQry for a random node's portals, one in flight per connection, $SECS s each; server CPU (utime + stime) per query."
    echo
    echo "| N | C | isnsd q/s | portshift q/s | q/s ratio | isnsd CPU µs/q | portshift CPU µs/q | CPU ratio | isnsd p99 µs | portshift p99 µs | p99 ratio | portshift p50 µs | errors (isnsd/portshift) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for n in $NODES; do
        for c in 1 8; do
            iq="$(field qry isnsd "$n" "$c" 5)"; pq="$(field qry portshift "$n" "$c" 5)"
            icpu="$(field qry isnsd "$n" "$c" 8)"; pcpu="$(field qry portshift "$n" "$c" 8)"
            ip99="$(field qry isnsd "$n" "$c" 7)"; pp99="$(field qry portshift "$n" "$c" 7)"
            pp50="$(field qry portshift "$n" "$c" 6)"
            ie="$(field qry isnsd "$n" "$c" 9)"; pe="$(field qry portshift "$n" "$c" 9)"
            echo "| $n | $c | ${iq:--} | ${pq:--} | $(ratio "${pq:-0}" "${iq:-0}") | ${icpu:--} | ${pcpu:--} | $(ratio "${pcpu:-0}" "${icpu:-0}") | ${ip99:--} | ${pp99:--} | $(ratio "${pp99:-0}" "${ip99:-0}") | ${pp50:--} | ${ie:--}/${pe:--} |"
        done
    done
    echo
    echo "(- : no query run, the registration did not finish within $REG_TIMEOUT s.)"
    echo "reproduce: bench/isns.sh $SECS   (NODES=\"$NODES\" REG_TIMEOUT=$REG_TIMEOUT; $(nproc) cores, $(date -u +%Y-%m-%d), $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
} | tee bench/results/isns-latest.md
