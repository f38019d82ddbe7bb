#!/usr/bin/env bash
# What rate limiting costs, side by side: Portico's CPU per request with a local limit, with
# the same limit in Redis, with JWT auth, and with JWT + a local limit (scenario (f)), each
# as a multiple of Portico's own plain proxy measured in the same round; and what the Redis
# round trip does to p99.
#
#   bench/rate_limit.sh [--binary PATH] [--rounds N] [--duration S]
#
# Run it on a quiet machine, as root (nice -19), with at least 2 CPUs: Portico alone on CPU 1;
# the origin (NGINX), redis-server and wrk on CPU 0 ("Redis on the load generator's core").
# Each measurement starts Portico fresh with the variant's config (bench/tools/ratelimitlib.py),
# checks it answers 200, warms up for 2 s, then runs `wrk -t1 -c50` for the duration; CPU is
# Portico's utime+stime from /proc over the measured window divided by the 2xx answers. The
# variants are alternated within each round (plain, local, redis, jwt, f) so that drift hits
# them alike; the multiples are per round, and the table gives their medians.
# Needs: nginx, wrk, redis-server, curl, python3 (bench/run.sh installs all but redis-server:
# apt-get install redis-server). Loopback only; every process started here is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/bench/tools/benchlib.py
RL=$ROOT/bench/tools/ratelimitlib.py
BINARY=$ROOT/target/release/portico
ROUNDS=3
DUR=10
WARM=2
CONNS=50
PORT_BASE=${BENCH_PORT_BASE:-28200}
ORIGIN_PORT=$PORT_BASE
PORTICO_PORT=$((PORT_BASE + 4))
REDIS_PORT=$((PORT_BASE + 6))
CPU_LOAD=0
CPU_PROXY=1
VARIANTS=(plain local redis jwt f)
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) shift; BINARY=$1 ;;
    --rounds) shift; ROUNDS=$1 ;;
    --duration) shift; DUR=$1 ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
  esac
  shift
done
for tool in nginx wrk redis-server redis-cli curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
[ -x "$BINARY" ] || { echo "no Portico binary at $BINARY (cargo build --release)" >&2; exit 1; }
PRIO=()
[ "$(id -u)" = 0 ] && PRIO=(nice -n -19)
RUN=$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)-rate-limit
mkdir -p "$RUN/raw"
cp "$BINARY" "$RUN/portico"
STARTED=()
cleanup() {
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
CLK_TCK=$(getconf CLK_TCK)

wait_http() {  # url [curl args...]
  local url=$1; shift
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  echo "no 200 from $url" >&2
  return 1
}
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

mkdir -p "$RUN/origin/tmp"
python3 "$LIB" nginx-origin "$RUN/origin" "$ORIGIN_PORT" > "$RUN/origin/nginx.conf"
"${PRIO[@]}" taskset -c $CPU_LOAD nginx -p "$RUN/origin" -e "$RUN/origin/error.log" -c "$RUN/origin/nginx.conf" &
STARTED+=($!)
wait_http "http://127.0.0.1:$ORIGIN_PORT/"
"${PRIO[@]}" taskset -c $CPU_LOAD redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
  --appendonly no --dir "$RUN" > "$RUN/redis.log" 2>&1 &
STARTED+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
TOKEN=$(python3 "$RL" token)
{
  echo "date: $(date -u +%FT%TZ)"; echo "binary: $BINARY"; "$RUN/portico" --version 2>/dev/null || true
  echo "uptime before: $(uptime)"; redis-server --version; nginx -v 2>&1; { wrk -v 2>&1 || true; } | head -1
} > "$RUN/env.txt"
RUNS=$RUN/runs.jsonl
: > "$RUNS"

for round in $(seq 1 "$ROUNDS"); do
  for variant in "${VARIANTS[@]}"; do
    conf=$RUN/$variant.yaml
    python3 "$RL" config "$variant" "$ORIGIN_PORT" "$PORTICO_PORT" "$REDIS_PORT" > "$conf"
    auth=()
    wrk_auth=""
    if [ "$variant" = jwt ] || [ "$variant" = f ]; then auth=(-H "authorization: Bearer $TOKEN"); wrk_auth="Bearer $TOKEN"; fi
    "${PRIO[@]}" taskset -c $CPU_PROXY "$RUN/portico" run -c "$conf" --workers 1 > "$RUN/raw/$variant-r$round.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_http "http://127.0.0.1:$PORTICO_PORT/" "${auth[@]}"
    url=http://127.0.0.1:$PORTICO_PORT/
    BENCH_AUTH=$wrk_auth "${PRIO[@]}" taskset -c $CPU_LOAD wrk -t1 -c$CONNS -d${WARM}s -s "$ROOT/bench/wrk/bench.lua" "$url" > /dev/null 2>&1 || true
    t0=$(cpu_ticks "$pid"); w0=$(date +%s.%N)
    BENCH_AUTH=$wrk_auth "${PRIO[@]}" taskset -c $CPU_LOAD wrk -t1 -c$CONNS -d${DUR}s --timeout 5s -s "$ROOT/bench/wrk/bench.lua" "$url" > "$RUN/raw/$variant-r$round.out" 2>&1
    t1=$(cpu_ticks "$pid"); w1=$(date +%s.%N)
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    parsed=$(python3 "$LIB" parse-wrk "$RUN/raw/$variant-r$round.out")
    python3 - "$parsed" "$variant" "$round" "$((t1 - t0))" "$w0" "$w1" "$CLK_TCK" >> "$RUNS" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
ticks, w0, w1, tck = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
d.update(variant=sys.argv[2], round=int(sys.argv[3]), cpu_us_per_req=ticks * 1e6 / tck / d["ok"] if d["ok"] else None,
         cpu_util=ticks / tck / (w1 - w0))
print(json.dumps(d))
PY
    tail -n 1 "$RUNS" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print("[rate-limit] r{round} {variant:<6} {rps:8.0f} req/s  CPU {cpu_us_per_req:6.2f} µs/req  p50 {p50_us} µs  p99 {p99_us} µs  non-2xx {bad}".format(bad=d["requests"] - d["ok"], **d))'
  done
done
echo "uptime after: $(uptime)" >> "$RUN/env.txt"

python3 - "$RUNS" > "$RUN/summary.md" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
variants = ["plain", "local", "redis", "jwt", "f"]
med = statistics.median
by = lambda v: [r for r in runs if r["variant"] == v]
print("| variant | CPU µs/req | × plain (median of per-round ratios) | per round | p50 µs | p99 µs | req/s |")
print("|---|---:|---:|---|---:|---:|---:|")
for v in variants:
    rs = by(v)
    if not rs:
        continue
    ratios = []
    for r in rs:
        base = [p for p in by("plain") if p["round"] == r["round"]]
        if base and base[0]["cpu_us_per_req"]:
            ratios.append(r["cpu_us_per_req"] / base[0]["cpu_us_per_req"])
    print(f"| {v} | {med([r['cpu_us_per_req'] for r in rs]):.2f} | {med(ratios):.3f}× | "
          f"{', '.join(f'{x:.2f}' for x in ratios)} | {med([r['p50_us'] for r in rs]):.0f} | "
          f"{med([r['p99_us'] for r in rs]):.0f} | {med([r['rps'] for r in rs]):.0f} |")
print()
print("Target (issue 10): (f) JWT (cache hit) + local limit ≤ 1.10× plain.")
PY
cat "$RUN/summary.md"
ln -sfn "$(basename "$RUN")" "$ROOT/bench/results/latest-rate-limit"
echo "raw results: $RUN"
