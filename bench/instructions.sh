#!/usr/bin/env bash
# Instructions per proxied request, by callgrind: exact and repeatable on a busy machine.
#
#   bench/instructions.sh BINARY [BINARY...]     e.g. an old build and target/release/portico
#   BENCH_SCENARIO=b bench/instructions.sh ...   a 1 KiB POST instead of a GET (scenario (b));
#   BENCH_SCENARIO=e                             GETs over h2c, 4 connections x 4 streams (e)
#   BENCH_SCENARIO=d|d-h2                        GETs over HTTPS/1.1, or HTTP/2 over TLS
#                                                (4 x 4), TLS_AES_128_GCM_SHA256, one
#                                                handshake per connection as in bench/run.sh
#   BENCH_SCENARIO=rl-local|rl-redis|jwt|f       GETs on a route with a local rate limit, the
#                                                same limit in Redis (a redis-server is started
#                                                here), JWT auth (cached token), or JWT + a local
#                                                limit (scenario (f)); bench/tools/ratelimitlib.py
#   BENCH_CONFIG_TEMPLATE=FILE                   Portico's config from FILE instead, with
#                                                @ORIGIN_PORT@ and @PORT@ filled in (bench/auth.sh)
#   BENCH_HEADER='name: value'                   a header on every request (a credential)
#   BENCH_KEEP=DIR                               keep each binary's 5,000-request callgrind
#                                                profile in DIR (for callgrind_annotate)
#   BENCH_ROUTE_KEYS=$'cors: { allow_origins: ["*"] }\ncompression: {}' bench/instructions.sh ...
#                                                the cost of route policies: YAML lines of
#                                                route keys added to the one route
#   BENCH_LB_VARIANTS=1 bench/instructions.sh BIN  scenario (a) to three endpoints (the origin's
#                                                three loopback addresses) under round robin,
#                                                least request (P2C + peak EWMA), ring hashing
#                                                on the path and on the client address: the cost
#                                                of each policy as a multiple of round robin's
#
# For each binary: Portico (one worker, access log off, scenario (a)'s config) runs under
# `valgrind --tool=callgrind` in front of an NGINX origin, serves `h2load --h1 -c 4` a fixed
# number of GETs, and is stopped with SIGTERM. Two runs, 1,000 and 5,000 requests; the
# difference of their instruction totals divided by 4,000 cancels start-up and shutdown. The
# figure counts Portico's own user-space instructions (all threads), not the kernel's work.
# Loopback only; every process started here is stopped on exit.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/bench/tools/benchlib.py
PORT_BASE=${BENCH_PORT_BASE:-28100}
ORIGIN_PORT=$PORT_BASE
PORTICO_PORT=$((PORT_BASE + 4))
PORTICO_TLS_PORT=$((PORT_BASE + 5))
REDIS_PORT=$((PORT_BASE + 6))
WORK=$(mktemp -d /tmp/portico-instructions.XXXXXX)
STARTED=()

cleanup() {
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

for tool in valgrind h2load nginx curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (bench/run.sh installs it)" >&2; exit 1; }
done
[ $# -ge 1 ] || { sed -n '2,26p' "$0"; exit 2; }

wait_http() {  # url [curl args...]
  local url=$1; shift
  # Patient: under callgrind, loading a large config (100,000 consumers) takes a while.
  for _ in $(seq 1 1200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  echo "no 200 from $url" >&2
  return 1
}

mkdir -p "$WORK/origin/tmp"
python3 "$LIB" nginx-origin "$WORK/origin" "$ORIGIN_PORT" > "$WORK/origin/nginx.conf"
nginx -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf" &
STARTED+=($!)
wait_http "http://127.0.0.1:$ORIGIN_PORT/"
python3 "$LIB" portico-config a "$ORIGIN_PORT" "$PORTICO_PORT" 0 "" "" > "$WORK/portico.yaml"
SCENARIO=${BENCH_SCENARIO:-a}
AUTH=()
URL=http://127.0.0.1:$PORTICO_PORT/
case "$SCENARIO" in
  a) LOAD=(--h1 -c 4) ;;
  d|d-h2)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    BENCH_PORTICO_CIPHER=TLS_AES_128_GCM_SHA256 python3 "$LIB" portico-config a "$ORIGIN_PORT" \
      "$PORTICO_PORT" "$PORTICO_TLS_PORT" "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/portico.yaml"
    URL=https://127.0.0.1:$PORTICO_TLS_PORT/
    if [ "$SCENARIO" = d ]; then LOAD=(--h1 -c 4); else LOAD=(-c 4 -m 4); fi
    LOAD+=(--tls13-ciphers=TLS_AES_128_GCM_SHA256) ;;
  b) head -c 1024 /dev/zero | tr '\0' x > "$WORK/body"; LOAD=(--h1 -c 4 -d "$WORK/body") ;;
  e) LOAD=(-c 4 -m 4) ;;
  rl-local|rl-redis|jwt|f)
    RL=$ROOT/bench/tools/ratelimitlib.py
    variant=${SCENARIO#rl-}
    python3 "$RL" config "$variant" "$ORIGIN_PORT" "$PORTICO_PORT" "$REDIS_PORT" > "$WORK/portico.yaml"
    if [ "$variant" = redis ]; then
      command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
      redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" > "$WORK/redis.log" 2>&1 &
      STARTED+=($!)
      for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    fi
    if [ "$variant" = jwt ] || [ "$variant" = f ]; then
      AUTH=(-H "authorization: Bearer $(python3 "$RL" token)")
    fi
    LOAD=(--h1 -c 4 "${AUTH[@]}") ;;
  *) echo "BENCH_SCENARIO is a, b, d, d-h2, e, rl-local, rl-redis, jwt or f" >&2; exit 2 ;;
esac
if [ -n "${BENCH_CONFIG_TEMPLATE:-}" ]; then
  sed -e "s/@ORIGIN_PORT@/$ORIGIN_PORT/g" -e "s/@PORT@/$PORTICO_PORT/g" \
    "$BENCH_CONFIG_TEMPLATE" > "$WORK/portico.yaml"
fi
if [ -n "${BENCH_HEADER:-}" ]; then
  AUTH+=(-H "$BENCH_HEADER")
  LOAD+=(-H "$BENCH_HEADER")
fi

# instructions BINARY REQUESTS: callgrind's total for one run, into $TOTAL.
instructions() {
  local binary=$1 requests=$2 out=$WORK/callgrind.$RANDOM
  valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" run -c "$WORK/portico.yaml" \
    --workers 1 > "$WORK/portico.log" 2>&1 &
  local pid=$!
  STARTED+=("$pid")
  wait_http "http://127.0.0.1:$PORTICO_PORT/" "${AUTH[@]}"
  h2load -n "$requests" "${LOAD[@]}" "$URL" > "$WORK/h2load.log"
  grep -q " 0 failed, 0 errored" "$WORK/h2load.log" || { cat "$WORK/h2load.log" >&2; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  # The warm-up requests of wait_http are in both runs and cancel out too.
  TOTAL=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
  PROFILE=$out
}

if [ -n "${BENCH_LB_VARIANTS:-}" ]; then
  printf '%-50s %-22s %14s %10s\n' "binary (scenario a, 3 endpoints)" policy instr/request "x rr"
  for binary in "$@"; do
    rr=""
    for variant in round_robin p2c_ewma ring_hash ring_hash_client_ip; do
      case "$variant" in
        round_robin) lb='{ policy: round_robin }' ;;
        p2c_ewma) lb='{ policy: least_request, peak_ewma: true }' ;;
        ring_hash) lb='{ policy: consistent_hash, hash_on: path }' ;;
        ring_hash_client_ip) lb='{ policy: consistent_hash, hash_on: client_ip }' ;;
      esac
      BENCH_ENDPOINTS=3 BENCH_LB=$lb python3 "$LIB" portico-config a "$ORIGIN_PORT" \
        "$PORTICO_PORT" 0 "" "" > "$WORK/portico.yaml"
      instructions "$binary" 1000; small=$TOTAL
      instructions "$binary" 5000; large=$TOTAL
      per=$(echo "($large - $small) / 4000" | bc -l)
      [ -n "$rr" ] || rr=$per
      printf '%-50s %-22s %14.0f %10.3f\n' "$binary" "$variant" "$per" \
        "$(echo "$per / $rr" | bc -l)"
    done
  done
  exit 0
fi

printf '%-60s %14s\n' "binary (scenario $SCENARIO)" "instr/request"
for binary in "$@"; do
  instructions "$binary" 1000; small=$TOTAL
  instructions "$binary" 5000; large=$TOTAL
  if [ -n "${BENCH_KEEP:-}" ]; then
    mkdir -p "$BENCH_KEEP"
    cp "$PROFILE" "$BENCH_KEEP/callgrind.$(basename "$binary").5000"
  fi
  printf '%-60s %14.0f\n' "$binary" "$(echo "($large - $small) / 4000" | bc -l)"
done
