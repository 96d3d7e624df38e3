#!/usr/bin/env bash
# Benchmark: `portshift isns` on its embedded redb store against the same server on a
# three-member etcd cluster (loopback, Debian's etcd-server), with one and with two servers,
# loaded by `portshift isns-bench`, in one run on this machine.
#   bench/isns_etcd.sh [SECONDS]       (default 10 s per query measurement)
# For each setup, on a fresh registry: register N target nodes (default NODES=10000; 10 per
# entity, 4 portals each) over 8 connections through the first server, then SECONDS of
# queries (DevAttrQry for a random node's portals, one in flight per connection) from two
# load generators of C = 4 at once (8 connections in all; q/s summed, p99 the larger): both
# against the one server, or one against each of the two servers, so every setup has the same
# client side. The servers' CPU time (utime + stime) gives CPU per query.
# Writes the table to bench/results/isns-etcd-latest.md.
# PORTSHIFT_BIN=path runs that binary instead of building target/release/portshift.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
NODES="${NODES:-10000}"
REG_TIMEOUT="${REG_TIMEOUT:-300}"
export PATH="$PATH:/usr/sbin:/sbin"
for t in etcd etcdctl jq; do
    command -v "$t" >/dev/null || {
        echo "missing $t: apt-get install -y etcd-server etcd-client jq" >&2
        exit 1
    }
done
# shellcheck source=bench/lib.sh
. bench/lib.sh
BIN="$(portshift_bin)"
DIR="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT


free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The etcd cluster: three members on loopback.
CLIENTS=(); PEERS=()
for i in 0 1 2; do CLIENTS+=("$(free_port)"); PEERS+=("$(free_port)"); done
INITIAL="m0=http://127.0.0.1:${PEERS[0]},m1=http://127.0.0.1:${PEERS[1]},m2=http://127.0.0.1:${PEERS[2]}"
ENDPOINTS="http://127.0.0.1:${CLIENTS[0]},http://127.0.0.1:${CLIENTS[1]},http://127.0.0.1:${CLIENTS[2]}"
for i in 0 1 2; do
    etcd --name "m$i" --data-dir "$DIR/etcd-m$i" \
        --listen-client-urls "http://127.0.0.1:${CLIENTS[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${CLIENTS[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${PEERS[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${PEERS[$i]}" \
        --initial-cluster "$INITIAL" --initial-cluster-state new \
        --initial-cluster-token "bench-$$" > "$DIR/etcd-m$i.log" 2>&1 &
    PIDS+=($!)
done
for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" put /bench/probe up >/dev/null 2>&1 && break
    sleep 0.2
done

# server NAME ARGS... -> starts `portshift isns` on a free port; sets PORT and PID
server() {
    local name=$1
    shift
    PORT="$(free_port)"
    "$BIN" isns --listen "127.0.0.1:$PORT" "$@" > "$DIR/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do listening "$PORT" && break; sleep 0.1; done
    listening "$PORT" || { echo "$name did not start:" >&2; cat "$DIR/$name.log" >&2; exit 1; }
}

# ibench PORT ARGS... -> isns-bench's JSON report
ibench() {
    local port=$1
    shift
    timeout $((REG_TIMEOUT + SECS + 60)) "$BIN" isns-bench --server "127.0.0.1:$port" \
        --run-id bench --register-timeout "$REG_TIMEOUT" --json "$@" 2>/dev/null || true
}

# register PORT -> "nodes/s"
register() {
    ibench "$1" --nodes "$NODES" --concurrency 8 --duration 0 |
        jq -r '.register | "\(.nodes_per_s | round) \(.completed)"'
}

# Results: SETUP Q/S P99_US CPU_US_PER_QUERY ERRORS REG_NODES_PER_S
RES="$DIR/results"
: > "$RES"

# measure SETUP REG PORT:PID PORT:PID -> two load generators at once (C = 4 each), one per
# argument (the same server twice, or two servers); CPU time of each distinct server PID
measure() {
    local setup=$1 reg=$2
    shift 2
    local n=$# c=$((8 / $#)) i=0 t0=0 t1=0
    local pids=() ports=() jobs=()
    for sp in "$@"; do ports+=("${sp%%:*}"); done
    mapfile -t pids < <(printf '%s\n' "$@" | sed 's/.*://' | sort -u)
    for p in "${pids[@]}"; do t0=$((t0 + $(cputicks "$p"))); done
    for port in "${ports[@]}"; do
        ibench "$port" --nodes "$NODES" --concurrency "$c" --duration "$SECS" --skip-register \
            > "$DIR/q-$setup-$i.json" &
        jobs+=($!)
        i=$((i + 1))
    done
    for j in "${jobs[@]}"; do wait "$j" || true; done
    sleep 1
    for p in "${pids[@]}"; do t1=$((t1 + $(cputicks "$p"))); done
    jq -s --arg s "$setup" --arg reg "$reg" --argjson ticks $((t1 - t0)) --argjson hz "$TICK" -r '
        (map(.query.queries_per_s) | add) as $qps
        | (map(.query.queries) | add) as $q
        | (map(.query.latency_us.p99) | max) as $p99
        | (map(.query.errors | add // 0) | add) as $err
        | "\($s) \($qps | round) \($p99) \(if $q > 0 then ($ticks / $hz * 1e6 / $q * 10 | round / 10) else 0 end) \($err) \($reg)"' \
        "$DIR"/q-"$setup"-*.json >> "$RES"
    echo "$setup: $(tail -n 1 "$RES")" >&2
}

# 1. Embedded redb store, one server.
server embedded --db "$DIR/isns.redb"
read -r reg ok < <(register "$PORT")
[ "$ok" = true ] || echo "embedded: registration did not finish" >&2
measure embedded "$reg" "$PORT:$PID" "$PORT:$PID"
kill "$PID"

# 2. etcd, one server.
server etcd-one --etcd "$ENDPOINTS" --etcd-prefix /bench-one/
read -r reg ok < <(register "$PORT")
[ "$ok" = true ] || echo "etcd, one server: registration did not finish" >&2
measure etcd-one "$reg" "$PORT:$PID" "$PORT:$PID"
kill "$PID"

# 3. etcd, two servers on one registry: registered through A, queried through A and B.
server etcd-a --etcd "$ENDPOINTS" --etcd-prefix /bench-two/
A="$PORT:$PID"
server etcd-b --etcd "$ENDPOINTS" --etcd-prefix /bench-two/
B="$PORT:$PID"
read -r reg ok < <(register "${A%%:*}")
[ "$ok" = true ] || echo "etcd, two servers: registration did not finish" >&2
sleep 2 # B's watch applies the last registrations
measure etcd-two "$reg" "$A" "$B"

mkdir -p bench/results
{
    echo "iSNS queries at $NODES registered nodes (10 per entity, 4 portals), $SECS s, 8 connections in all, one request in flight each."
    echo
    echo "| setup | registration nodes/s | q/s | p99 µs | server CPU µs/query | errors |"
    echo "|---|---|---|---|---|---|"
    while read -r setup qps p99 cpu err reg; do
        case "$setup" in
        embedded) name="embedded redb, 1 server (C = 4 + 4)" ;;
        etcd-one) name="etcd (3 members), 1 server (C = 4 + 4)" ;;
        etcd-two) name="etcd (3 members), 2 servers (C = 4 each)" ;;
        esac
        echo "| $name | $reg | $qps | $p99 | $cpu | $err |"
    done < "$RES"
    echo
    echo "reproduce: bench/isns_etcd.sh $SECS   (NODES=$NODES; $(nproc) cores, $(date -u +%Y-%m-%d), $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
} | tee bench/results/isns-etcd-latest.md
