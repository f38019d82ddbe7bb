#!/usr/bin/env bash
# How much do config reloads disturb traffic? See bench/README.md ("Reloads under load").
#
#   bench/reload.sh                          5,000 routes, 10 s per phase, 5,000 req/s
#   bench/reload.sh --routes 1000,5000       one Portico per route count, in turn
#   bench/reload.sh --binary PATH            the Portico binary (default target/release/portico;
#                                            nothing is built)
#   bench/reload.sh --duration S             seconds per phase (default 10)
#   bench/reload.sh --rate R                 offered load, req/s (default 5000)
#   bench/reload.sh --interval S             seconds between SIGHUPs (default 0.5)
#   bench/reload.sh --conns C                connections, one h2load each (default 50; the
#                                            rate is split evenly: R / C per connection)
#   bench/reload.sh --no-nice                do not run the measured processes at nice -19
#
# For each route count: start Portico on a generated config (N routes, one worker, access log
# off, no file watch, admin listener on), time a few reloads with no traffic, warm up, then
# two phases of equal length at the same fixed offered load on one route: "quiet" (no
# reloads), then "reloading" (SIGHUP every --interval seconds, the config file alternating
# between two byte-different equivalent versions). Prints req/s, p50, p99, max, errors and
# the reloads done per phase, and p99(reloading) / p99(quiet).
#
# Environment: BENCH_PORT_BASE (default 28010: origin +0, Portico +1, admin +2), BENCH_WARMUP
# (s, default 2), BENCH_IDLE_RELOADS (reloads timed with no traffic, default 5).
# Needs root on Debian only to install missing tools with apt. Everything listens on
# 127.0.0.1; every load run is bounded; every process this script starts is stopped on exit.
# Raw results: bench/results/<run id>-reload/ (gitignored; bench/results/latest-reload).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
LIB=$BENCH/tools/benchlib.py
RLIB=$BENCH/tools/reloadlib.py

BIN=$ROOT/target/release/portico
ROUTES_LIST="5000"
DUR=10
RATE=5000
INTERVAL=0.5
CONNS=50
NICE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) shift; BIN=$1 ;;
    --binary=*) BIN=${1#--binary=} ;;
    --routes) shift; ROUTES_LIST=${1//,/ } ;;
    --routes=*) ROUTES_LIST=${1#--routes=}; ROUTES_LIST=${ROUTES_LIST//,/ } ;;
    --duration) shift; DUR=$1 ;;
    --duration=*) DUR=${1#--duration=} ;;
    --rate) shift; RATE=$1 ;;
    --rate=*) RATE=${1#--rate=} ;;
    --interval) shift; INTERVAL=$1 ;;
    --interval=*) INTERVAL=${1#--interval=} ;;
    --conns) shift; CONNS=$1 ;;
    --conns=*) CONNS=${1#--conns=} ;;
    --no-nice) NICE=0 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "$DUR" "$RATE" "$CONNS" $ROUTES_LIST; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive whole number: $v" >&2; exit 2; }
done
[[ "$INTERVAL" =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "bad --interval: $INTERVAL" >&2; exit 2; }
PER_CONN=$((RATE / CONNS))
[ "$PER_CONN" -ge 1 ] || { echo "--rate must be at least --conns ($CONNS)" >&2; exit 2; }
if [ $((PER_CONN * CONNS)) != "$RATE" ]; then
  echo "note: $RATE req/s is not a multiple of $CONNS connections; offering $((PER_CONN * CONNS))" >&2
  RATE=$((PER_CONN * CONNS))
fi
WARM=${BENCH_WARMUP:-2}
IDLE_RELOADS=${BENCH_IDLE_RELOADS:-5}

PORT_BASE=${BENCH_PORT_BASE:-28010}
ORIGIN_PORT=$PORT_BASE
PORTICO_PORT=$((PORT_BASE + 1))
ADMIN_PORT=$((PORT_BASE + 2))
METRICS=http://127.0.0.1:$ADMIN_PORT/metrics

# Pinning as in run.sh: Portico alone on CPU 1; the load generators, the origin and this
# script's helpers (SIGHUP sender, metric scrapes) on CPU 0. With `workers: 1` Portico serves
# every request on one thread; whatever a reload does on that thread, requests wait for it.
CPU_LOAD=0
CPU_PROXY=1
if [ "$(nproc)" -lt 2 ]; then
  echo "warning: fewer than 2 CPUs; everything shares CPU 0 (latency figures meaningless)" >&2
  CPU_PROXY=0
fi
PRIO=(nice -n 0)
if [ "$NICE" = 1 ] && [ "$(id -u)" = 0 ]; then PRIO=(nice -n -19); fi

has() { command -v "$1" >/dev/null 2>&1; }

install_tools() {
  local missing=()
  has nginx || missing+=(nginx)
  has h2load || missing+=(nghttp2-client)
  has curl || missing+=(curl)
  has taskset || missing+=(util-linux)
  has ss || missing+=(iproute2)
  has python3 || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "missing tools (${missing[*]}); run as root to install them" >&2; exit 1; }
    echo "installing: ${missing[*]}" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
}

# ------------------------------------------------------------------ run directory

[ -x "$BIN" ] || { echo "no Portico binary at $BIN (build it, or give --binary PATH)" >&2; exit 1; }
RUN_ID=$(date -u +%Y%m%d-%H%M%S)-reload
OUT=$BENCH/results/$RUN_ID
WORK=$OUT/work
RAW=$OUT/raw
mkdir -p "$WORK" "$RAW"
ln -sfn "$RUN_ID" "$BENCH/results/latest-reload"
RUNS=$OUT/runs.jsonl
: > "$RUNS"
exec > >(tee -a "$OUT/run.log") 2>&1
log() { echo "[reload $(date +%H:%M:%S)] $*"; }

install_tools
for port in "$ORIGIN_PORT" "$PORTICO_PORT" "$ADMIN_PORT"; do
  if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
    echo "port $port is in use on this machine; choose other ports with BENCH_PORT_BASE=N" >&2
    exit 1
  fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# A private copy: a build may replace the binary during the run.
PORTICO=$WORK/portico
cp "$BIN" "$PORTICO"
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ processes

STARTED=()      # every pid we started, for the exit trap
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() {
  local keep=() pid
  for pid in "${STARTED[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  STARTED=("${keep[@]}")
}

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }   # utime+stime
cpu_line() { awk -v c="cpu$1" '$1 == c {print $2, $3, $4, $5, $6, $7, $8, $9}' /proc/stat; }

wait_http() {  # url [curl args...]: until a 200 arrives (30 s at most: large configs)
  local url=$1; shift
  local i
  for i in $(seq 1 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null)" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "no 200 from $url after 30 s" >&2
  return 1
}

metric() { python3 "$RLIB" metric "$METRICS" "$@"; }
reloads_ok() { metric portico_config_reloads_total outcome=success; }
reloads_failed() { metric portico_config_reloads_total outcome=failure; }

start_origin() {
  local dir=$WORK/origin
  mkdir -p "$dir/tmp"
  python3 "$LIB" nginx-origin "$dir" "$ORIGIN_PORT" > "$dir/nginx.conf"
  "${PRIO[@]}" taskset -c "$CPU_LOAD" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
  ORIGIN_PID=$!
  STARTED+=("$ORIGIN_PID")
  wait_http "http://127.0.0.1:$ORIGIN_PORT/"
  ORIGIN_BODY=$(curl -s "http://127.0.0.1:$ORIGIN_PORT/")
  log "origin: nginx on 127.0.0.1:$ORIGIN_PORT (CPU $CPU_LOAD), body \"$ORIGIN_BODY\""
}

start_portico() {  # dir: runs $dir/portico.yaml
  local dir=$1
  "${PRIO[@]}" taskset -c "$CPU_PROXY" "$PORTICO" run -c "$dir/portico.yaml" --workers 1 \
    > "$dir/stdout.log" 2> "$dir/stderr.log" &
  PROXY_PID=$!
  STARTED+=("$PROXY_PID")
  wait_http "http://127.0.0.1:$ADMIN_PORT/healthz"
}

stop_portico() {
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  forget "$PROXY_PID"
}

# start_load SECONDS DIR: CONNS h2load processes, one connection each, one request in flight,
# PER_CONN req/s each, on the target route; per-request logs in DIR. One process per
# connection (as run.sh's fixed-rate run): a single h2load starts all its connections' timers
# together and sends in bursts. Runs in the background; LOAD_PIDS are the processes.
start_load() {
  local secs=$1 dir=$2 i
  mkdir -p "$dir"
  LOAD_PIDS=()
  for i in $(seq 1 "$CONNS"); do
    "${PRIO[@]}" taskset -c "$CPU_LOAD" timeout $((secs + 30)) h2load --h1 -t1 -c1 -m1 \
      --rps="$PER_CONN" -D "$secs" -H ":authority: $TARGET_HOST" --log-file="$dir/h2load.$i.log" \
      "http://127.0.0.1:$PORTICO_PORT$TARGET_PATH" > "$dir/h2load.$i" 2>&1 &
    LOAD_PIDS+=($!)
  done
  STARTED+=("${LOAD_PIDS[@]}")
}
wait_load() {
  local pid rc=0
  for pid in "${LOAD_PIDS[@]}"; do wait "$pid" || rc=1; forget "$pid"; done
  return $rc
}

# Wait until Portico has answered every SIGHUP it will answer: the reload counters stop moving.
settle_reloads() {
  local prev="" cur i
  for i in $(seq 1 60); do
    cur="$(reloads_ok) $(reloads_failed)"
    [ "$cur" = "$prev" ] && return 0
    prev=$cur
    sleep 0.5
  done
}

now() { date +%s.%N; }
sleep_until() {  # epoch seconds
  sleep "$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; if (d < 0) d = 0; printf "%.3f", d }')"
}
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a + b }'; }
# One /proc sample (no request to Portico: a /metrics scrape would itself cost its thread
# milliseconds with thousands of routes): name, time, Portico's utime+stime, CPU lines.
sample() {
  echo "$1 $(now) $(cpu_ticks "$PROXY_PID") $(cpu_line "$CPU_PROXY") $(cpu_line "$CPU_LOAD")" >> "$2"
}

# Reload time with no traffic: IDLE_RELOADS SIGHUPs, 1 s apart (file alternating as below).
idle_reloads() {
  local routes=$1 dir=$WORK/portico-$1 before after
  [ "$IDLE_RELOADS" -gt 0 ] || return 0
  before=$(reloads_ok)
  "${PRIO[@]}" taskset -c "$CPU_LOAD" python3 "$RLIB" hup "$PROXY_PID" 1 "$IDLE_RELOADS" \
    "$dir/portico.yaml" "$dir/a.yaml" "$dir/b.yaml" "$RAW/$routes-idle.hups.jsonl"
  settle_reloads
  after=$(reloads_ok)
  local times done=$((${after%.*} - ${before%.*}))
  times=$(python3 "$RLIB" reload-times "$dir/stderr.log" "$RAW/$routes-idle.hups.jsonl" "$(now)")
  echo "{\"routes\": $routes, \"signals\": $IDLE_RELOADS, \"reloads\": $done, \"times\": $times}" \
    >> "$OUT/idle-reloads.jsonl"
  log "$(python3 "$RLIB" idle-line "$times" "$routes" "$done" "$IDLE_RELOADS")"
  if [ "$done" -le 0 ]; then
    log "ERROR: portico_config_reloads_total{outcome=\"success\"} did not move after $IDLE_RELOADS SIGHUPs"
    return 1
  fi
}

# One continuous load run at the fixed rate, cut into windows by the time each request was
# sent: WARM s warm-up (not counted), DUR s "quiet", DUR s "reloading" (a SIGHUP every
# INTERVAL s, the config file alternating between a.yaml and b.yaml), 1 s tail (not counted:
# the load generators stop at slightly different times). One run rather than one per phase:
# no connection set-up or process start-up inside a measured window.
measure_routes() {  # N
  local routes=$1 dir=$WORK/portico-$1
  mkdir -p "$dir"
  python3 "$RLIB" config "$routes" "$ORIGIN_PORT" "$PORTICO_PORT" "$ADMIN_PORT" 0 > "$dir/a.yaml"
  python3 "$RLIB" config "$routes" "$ORIGIN_PORT" "$PORTICO_PORT" "$ADMIN_PORT" 1 > "$dir/b.yaml"
  cp "$dir/a.yaml" "$dir/portico.yaml"
  "$PORTICO" validate "$dir/a.yaml" > "$dir/validate.out" 2>&1 \
    || { log "ERROR: the generated config does not validate: $(head -n 3 "$dir/validate.out")"; return 1; }
  read -r TARGET_HOST TARGET_PATH TARGET_ROUTE < <(python3 "$RLIB" target "$routes")
  local started
  started=$(now)
  start_portico "$dir"
  log "$routes routes: Portico up in $(awk -v a="$started" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }') s; target GET http://$TARGET_HOST$TARGET_PATH (route $TARGET_ROUTE)"
  local body
  body=$(curl -s --max-time 5 -H "Host: $TARGET_HOST" "http://127.0.0.1:$PORTICO_PORT$TARGET_PATH" || true)
  if [ "$body" != "$ORIGIN_BODY" ]; then
    log "ERROR: the target route answered \"${body:0:200}\" instead of the origin's body"
    stop_portico; return 1
  fi
  idle_reloads "$routes" || { stop_portico; return 1; }

  local raw=$RAW/$routes samples=$RAW/$routes.samples hups=$RAW/$routes-reloading.hups.jsonl
  local ok0 ok1 fail0 fail1 req0 req1 t_load t_quiet t_reload t_end hup_pid
  : > "$samples"
  ok0=$(reloads_ok); fail0=$(reloads_failed)
  req0=$(metric portico_requests_total "route=$TARGET_ROUTE" class=2xx)
  t_load=$(now)
  t_quiet=$(add "$t_load" "$WARM"); t_reload=$(add "$t_quiet" "$DUR"); t_end=$(add "$t_reload" "$DUR")
  log "$routes routes: ${WARM}s warm-up, ${DUR}s quiet, ${DUR}s with a SIGHUP every ${INTERVAL}s, 1s tail; $RATE req/s"
  start_load $((WARM + 2 * DUR + 1)) "$raw"
  "${PRIO[@]}" taskset -c "$CPU_LOAD" python3 "$RLIB" hup "$PROXY_PID" "$INTERVAL" "$DUR" \
    "$dir/portico.yaml" "$dir/a.yaml" "$dir/b.yaml" "$hups" "$t_reload" &
  hup_pid=$!
  STARTED+=("$hup_pid")
  sleep_until "$t_quiet"; sample q "$samples"
  sleep_until "$t_reload"; sample r "$samples"
  sleep_until "$t_end"; sample e "$samples"
  wait_load || log "an h2load process exited with an error ($raw)"
  wait "$hup_pid" || log "the SIGHUP sender failed"
  forget "$hup_pid"
  settle_reloads
  ok1=$(reloads_ok); fail1=$(reloads_failed)
  req1=$(metric portico_requests_total "route=$TARGET_ROUTE" class=2xx)
  stop_portico
  cat > "$RAW/$routes.ctx.json" <<EOF
{"routes": $routes, "offered_rps": $RATE, "per_conn_rps": $PER_CONN, "duration_s": $DUR,
 "interval_s": $INTERVAL, "target_host": "$TARGET_HOST", "target_path": "$TARGET_PATH",
 "target_route": "$TARGET_ROUTE", "raw": "$raw", "samples": "$samples", "hups": "$hups",
 "stderr": "$dir/stderr.log", "until": $(now), "clk_tck": $CLK_TCK,
 "signals": $(grep -c . "$hups" || true), "reloads": $((${ok1%.*} - ${ok0%.*})),
 "reload_failures": $((${fail1%.*} - ${fail0%.*})), "target_2xx": $((${req1%.*} - ${req0%.*})),
 "loadavg": "$(cut -d' ' -f1-3 /proc/loadavg)"}
EOF
  python3 "$RLIB" record "$RAW/$routes.ctx.json" "$RUNS"
}

# ------------------------------------------------------------------ environment record

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "command: bench/reload.sh --binary $BIN --routes ${ROUTES_LIST// /,} --duration $DUR --rate $RATE --interval $INTERVAL --conns $CONNS$([ "$NICE" = 1 ] || echo ' --no-nice')"
  echo "load: $CONNS connections x $PER_CONN req/s (h2load --h1 -c1 -m1 --rps), ${DUR}s per phase, warm-up ${WARM}s, SIGHUP every ${INTERVAL}s; priority: ${PRIO[*]}"
  echo "pinning: Portico on CPU $CPU_PROXY; origin, load generators and helpers on CPU $CPU_LOAD"
  echo "machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) CPUs, kernel $(uname -r)"
  echo "portico: $BIN ($("$PORTICO" --version 2>&1 | head -n 1)), sha256 $(sha256sum "$PORTICO" | cut -c1-16)"
  echo "nginx: $(nginx -v 2>&1)"
  echo "h2load: $(h2load --version 2>&1 | head -n 1)"
  echo "uptime before: $(uptime)"
} > "$OUT/env.txt"
cat "$OUT/env.txt"

start_origin
for routes in $ROUTES_LIST; do
  measure_routes "$routes" || log "$routes routes: not measured"
done

echo "uptime after: $(uptime)" >> "$OUT/env.txt"
log "$(tail -n 1 "$OUT/env.txt")"
python3 "$RLIB" table "$RUNS" "$OUT/idle-reloads.jsonl" > "$OUT/summary.md"
echo
cat "$OUT/summary.md"
log "raw results: $OUT"
