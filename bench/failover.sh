#!/usr/bin/env bash
# Failover under load: steady GETs through Portico to three backends; one backend is killed
# (SIGKILL: connections reset, port refused) a third of the way in and restarted at two
# thirds; every error the clients see is counted. The target for idempotent GETs is 0.
#
#   bench/failover.sh                        20 s at 2,000 req/s, target/release/portico
#   bench/failover.sh --binary PATH          the Portico binary (nothing is built)
#   bench/failover.sh --duration S           seconds of load (default 20; the kill is at S/3,
#                                            the restart at 2S/3)
#   bench/failover.sh --rate R               offered load, req/s over all connections
#                                            (default 2000)
#   bench/failover.sh --conns C              connections (default 10; R / C each)
#   bench/failover.sh --no-resilience        the same cluster without health checks, outlier
#                                            detection and retries (for comparison)
#
# The backends are three NGINX origins (`return 200`, one worker each). Portico (one worker,
# access log off) runs the cluster with its resilience settings on: active HTTP health
# checks every 1 s, outlier detection ejecting on the first gateway failure, and a route
# retry (2 retries, idempotent methods). Prints requests, non-2xx answers, failed and
# errored requests (h2load's counts), and Portico's own counters: retries, ejections,
# health-check failures of the killed backend. Loopback only; the load is bounded in time;
# every process started here is stopped on exit.
# Environment: BENCH_PORT_BASE (default 28030: origins +1..+3, Portico +4, admin +5).
# Raw results: bench/results/<run id>-failover/ (gitignored).

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/bench/tools/benchlib.py
BIN=$ROOT/target/release/portico
DUR=20
RATE=2000
CONNS=10
RESILIENCE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) shift; BIN=$1 ;;
    --duration) shift; DUR=$1 ;;
    --rate) shift; RATE=$1 ;;
    --conns) shift; CONNS=$1 ;;
    --no-resilience) RESILIENCE=0 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for tool in h2load nginx curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install nghttp2-client nginx curl)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release, or --binary)" >&2; exit 1; }

BASE=${BENCH_PORT_BASE:-28030}
PORTICO_PORT=$((BASE + 4))
ADMIN_PORT=$((BASE + 5))
RUN=$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)-failover
mkdir -p "$RUN"
STARTED=()
cleanup() {
  for pid in "${STARTED[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() {
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  echo "no 200 from $1" >&2
  return 1
}

ORIGIN_PIDS=()
start_origin() { # INDEX
  local i=$1 dir=$RUN/origin$1 port=$((BASE + $1))
  mkdir -p "$dir/tmp"
  # Each origin listens on its own port (the three loopback addresses it also binds are
  # unused here).
  python3 "$LIB" nginx-origin "$dir" "$port" > "$dir/nginx.conf"
  nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
  ORIGIN_PIDS[$i]=$!
  STARTED+=($!)
  wait_http "http://127.0.0.1:$port/"
}

kill_origin() { # INDEX: master and worker at once, as a crash would
  local pid=${ORIGIN_PIDS[$1]}
  local children
  children=$(pgrep -P "$pid" || true)
  kill -KILL "$pid" $children 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for i in 1 2 3; do start_origin "$i"; done

if [ "$RESILIENCE" = 1 ]; then
  CLUSTER_KEYS="
    health_check: { path: /, interval: 1s, timeout: 500ms, unhealthy_threshold: 1, healthy_threshold: 1 }
    outlier_detection: { consecutive_gateway_failures: 1, base_ejection_time: 2s }"
  ROUTE_KEYS="
    retry: { retries: 2 }"
else
  CLUSTER_KEYS=""
  ROUTE_KEYS=""
fi
cat > "$RUN/portico.yaml" <<YAML
runtime: { workers: 1, watch_interval: 0s, drain_timeout: 0s }
access_log: { enabled: false }
admin: { address: 127.0.0.1:$ADMIN_PORT }
listeners:
  - name: plain
    address: 127.0.0.1:$PORTICO_PORT
    limits: { idle_timeout: 300s }
clusters:
  - name: three
    endpoints: [127.0.0.1:$((BASE + 1)), 127.0.0.1:$((BASE + 2)), 127.0.0.1:$((BASE + 3))]$CLUSTER_KEYS
routes:
  - name: all
    cluster: three$ROUTE_KEYS
YAML
"$BIN" run -c "$RUN/portico.yaml" > "$RUN/portico.log" 2>&1 &
PORTICO=$!
STARTED+=("$PORTICO")
wait_http "http://127.0.0.1:$PORTICO_PORT/"

PER_CONN=$(( (RATE + CONNS - 1) / CONNS ))
KILL_AT=$(echo "$DUR / 3" | bc -l)
RESTART_AT=$(echo "$DUR * 2 / 3" | bc -l)
echo "load: $CONNS connections x $PER_CONN req/s for ${DUR}s; backend 2 killed at ${KILL_AT}s, restarted at ${RESTART_AT}s"
h2load --h1 -c "$CONNS" --rps "$PER_CONN" -D "$DUR" "http://127.0.0.1:$PORTICO_PORT/" \
  > "$RUN/h2load.log" 2>&1 &
LOAD=$!
STARTED+=("$LOAD")
sleep "$KILL_AT"
kill_origin 2
echo "killed backend 2"
sleep "$(echo "$RESTART_AT - $KILL_AT" | bc -l)"
start_origin 2
echo "restarted backend 2"
wait "$LOAD" || true
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" > "$RUN/metrics.txt"
curl -s "http://127.0.0.1:$ADMIN_PORT/clusters" > "$RUN/clusters.json"

requests=$(awk '/^requests:/ { print $2 }' "$RUN/h2load.log")
read -r succeeded failed errored < <(awk '/^requests:/ { print $8, $10, $12 }' "$RUN/h2load.log")
read -r s2 s3 s4 s5 < <(awk '/^status codes:/ { print $3, $5, $7, $9 }' "$RUN/h2load.log")
metric() { awk -v s="$1" 'index($0, s) == 1 { sum += $NF } END { print sum + 0 }' "$RUN/metrics.txt"; }
victim="endpoint=\"127.0.0.1:$((BASE + 2))\""
{
  echo "# Failover under load ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "$CONNS connections x $PER_CONN req/s for ${DUR}s, backend 2 killed at ${KILL_AT%.*}s and restarted at ${RESTART_AT%.*}s; resilience settings: $([ "$RESILIENCE" = 1 ] && echo on || echo off)"
  echo
  echo "| requests | 2xx | non-2xx | failed | errored | retries | ejections of backend 2 | failed health checks of backend 2 |"
  echo "|---|---|---|---|---|---|---|---|"
  echo "| $requests | $s2 | $((s3 + s4 + s5)) | $failed | $errored | $(metric portico_upstream_endpoint_retries_total) | $(metric "portico_upstream_endpoint_ejections_total{cluster=\"three\",$victim}") | $(metric "portico_upstream_health_checks_total{cluster=\"three\",$victim,result=\"failed\"}") |"
} | tee "$RUN/summary.md"
errors=$((s3 + s4 + s5 + failed + errored))
echo "errors seen by clients: $errors (target 0)"
