#!/usr/bin/env bash
# Portico vs NGINX, side by side, on one machine. See bench/README.md.
#
#   bench/run.sh              full run: 8 s per measurement, 3 rounds, each closed-loop scenario
#                             at two operating points per round, A B A B (~20-30 min; the script
#                             prints its estimate at start)
#   bench/run.sh --quick      smoke test: 3 s per measurement, 1 round (~6 min)
#   bench/run.sh --only a,e   only these scenarios (a a-h2up b c d d-h2 e rate w2 idle);
#                             a-h2up: (a) with Portico's cluster on the origin's h2c port
#                             (NGINX cannot speak HTTP/2 upstream: it stays on HTTP/1.1);
#                             w2: both proxies with two workers (Portico `--workers 2`,
#                             NGINX `worker_processes 2`) on both CPUs, at the fixed offered load
#   bench/run.sh --profile    also record a perf profile of each proxy under scenario (a)
#                             (BENCH_PROFILE_SCENARIO=d, d-h2, e, b or c: under that one)
#   bench/run.sh --no-build   reuse target/release/portico as it is
#   bench/run.sh --no-nice    do not raise the priority of the measured processes (nice -19)
#   bench/run.sh --rev HEAD   benchmark a commit: build it from `git archive` in
#                             bench/results/src-<sha> with its own target dir (no effect on the
#                             working tree; the first such build takes several minutes)
#   bench/run.sh --binary PATH    measure this Portico binary instead of a build (nothing is built)
#   bench/run.sh --baseline PATH  also measure a second Portico binary (e.g. the build before a
#                             change) as proxy `portico-base`: same config, port, pinning,
#                             priority and --workers 1 as `portico`, run right after it in every
#                             round (portico, portico-base, nginx, nginx-fwd). The summary adds
#                             portico / portico-base CPU per request in each round and its
#                             median: the figure to quote for a before/after comparison (a pair
#                             measured back to back is much steadier than the ±15 % between rounds)
#
# Environment overrides: BENCH_DURATION (s, default 8), BENCH_ROUNDS (3),
# BENCH_H1_CONNS ("64 100": wrk connections, one operating point each; BENCH_CONNS=N, the old
# name, gives one point), BENCH_H2_POINTS ("8x8 10x10": h2load connections x streams, paired
# with BENCH_H1_CONNS point by point), BENCH_TLS_CIPHER (TLS_AES_128_GCM_SHA256: the TLS 1.3
# suite of both proxies and the only one the load generators offer), BENCH_UPSTREAM_IDLE (256:
# idle upstream connections each proxy keeps; above the most requests in flight, so neither
# proxy opens upstream connections under load), BENCH_RATE (req/s for the fixed-rate run),
# BENCH_IDLE_CONNS, BENCH_PORT_BASE (28000: the origin; +1..+3 NGINX h1, h2c, TLS; +4, +5
# Portico plain (h1 + h2c), TLS; +6 the origin over h2c).
#
# Needs root on Debian for the apt-get step (skipped when every tool is already there).
# Everything listens on 127.0.0.1; every load run is bounded in time; every process this
# script starts is stopped on exit. Raw results: bench/results/<run id>/ (gitignored).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
LIB=$BENCH/tools/benchlib.py
WRK_SCRIPT=$BENCH/wrk/bench.lua

QUICK=0
BUILD=1
PROFILE=0
NICE=1
REV=""
BINARY=""       # --binary: the Portico to measure instead of a build
BASELINE=""     # --baseline: a second Portico measured as portico-base
ONLY="a a-h2up b c d d-h2 e rate w2 idle"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --profile) PROFILE=1 ;;
    --no-nice) NICE=0 ;;
    --rev) shift; REV=$1 ;;
    --rev=*) REV=${1#--rev=} ;;
    --binary) shift; BINARY=$1 ;;
    --binary=*) BINARY=${1#--binary=} ;;
    --baseline) shift; BASELINE=$1 ;;
    --baseline=*) BASELINE=${1#--baseline=} ;;
    --only) shift; ONLY=${1//,/ } ;;
    --only=*) ONLY=${1#--only=}; ONLY=${ONLY//,/ } ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
# Checked before anything is installed or started.
PROFILE_SCENARIO=${BENCH_PROFILE_SCENARIO:-a}
case "$PROFILE_SCENARIO" in
  a|a-h2up|b|c|d|d-h2|e) ;;
  *) echo "BENCH_PROFILE_SCENARIO=$PROFILE_SCENARIO: expected a closed-loop scenario (a a-h2up b c d d-h2 e)" >&2; exit 2 ;;
esac
if [ -n "$BINARY" ] && [ -n "$REV" ]; then echo "--binary and --rev exclude each other" >&2; exit 2; fi
for bin in "$BINARY" "$BASELINE"; do
  [ -z "$bin" ] || [ -x "$bin" ] || { echo "no executable at $bin" >&2; exit 2; }
done

if [ "$QUICK" = 1 ]; then
  DUR=${BENCH_DURATION:-3}; ROUNDS=${BENCH_ROUNDS:-1}; WARM=1
else
  DUR=${BENCH_DURATION:-8}; ROUNDS=${BENCH_ROUNDS:-3}; WARM=2
fi
# Operating points of the closed-loop scenarios, paired by position: point 1 is 64 wrk
# connections for HTTP/1.1 and 8 connections x 8 streams for HTTP/2, point 2 is 100 and
# 10 x 10. Every point is measured in every round.
read -r -a H1_POINTS <<< "${BENCH_H1_CONNS:-${BENCH_CONNS:-64 100}}"
read -r -a H2_POINTS <<< "${BENCH_H2_POINTS:-8x8 10x10}"
if [ ${#H1_POINTS[@]} -ne ${#H2_POINTS[@]} ] || [ ${#H1_POINTS[@]} -eq 0 ]; then
  echo "BENCH_H1_CONNS (${H1_POINTS[*]}) and BENCH_H2_POINTS (${H2_POINTS[*]}) must list as many points" >&2; exit 2
fi
for point in "${H1_POINTS[@]}"; do
  [[ $point =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_H1_CONNS: $point is not a number of connections" >&2; exit 2; }
done
for point in "${H2_POINTS[@]}"; do
  [[ $point =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || { echo "BENCH_H2_POINTS: $point is not CONNECTIONSxSTREAMS" >&2; exit 2; }
done
OPS=$(seq 1 ${#H1_POINTS[@]})
# One TLS 1.3 suite on both sides: NGINX and Portico are configured with it, and the load
# generators offer nothing else (so even a Portico build without `cipher_suites` uses it).
TLS_CIPHER=${BENCH_TLS_CIPHER:-TLS_AES_128_GCM_SHA256}
case "$TLS_CIPHER" in
  TLS_AES_128_GCM_SHA256|TLS_AES_256_GCM_SHA384|TLS_CHACHA20_POLY1305_SHA256) ;;
  *) echo "BENCH_TLS_CIPHER=$TLS_CIPHER: expected a TLS 1.3 suite both proxies implement (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256)" >&2; exit 2 ;;
esac
export BENCH_TLS_CIPHER=$TLS_CIPHER                      # NGINX's config (benchlib.py)
export BENCH_UPSTREAM_IDLE=${BENCH_UPSTREAM_IDLE:-256}   # both proxies' idle upstream connections
RATE_CLIENTS=50                   # fixed-rate run: connections (one h2load each), one request in flight each
IDLE_CONNS=${BENCH_IDLE_CONNS:-2000}
POST_BYTES=1024

# Ports (all on 127.0.0.1), BENCH_PORT_BASE + 0..6 (+6: the origin over h2c).
PORT_BASE=${BENCH_PORT_BASE:-28000}
ORIGIN_PORT=$PORT_BASE
NGINX_H1=$((PORT_BASE + 1)); NGINX_H2C=$((PORT_BASE + 2)); NGINX_TLS=$((PORT_BASE + 3))
PORTICO_H1=$((PORT_BASE + 4)); PORTICO_TLS=$((PORT_BASE + 5))   # Portico: h1 and h2c on one port

# CPU pinning: the proxy under test alone on CPU 1; load generator and origin on CPU 0.
CPU_LOAD=0
CPU_PROXY=1
# The proxy's workers and the CPUs they may run on: one worker on CPU_PROXY, except in the
# two-worker scenario (w2), where each proxy runs two on every CPU (the load generator and
# origin share them: on a bigger machine, give each side CPUs of its own).
PROXY_WORKERS=1
PROXY_CPUS=$CPU_PROXY
if [ "$(nproc)" -lt 2 ]; then
  echo "warning: fewer than 2 CPUs; everything shares CPU 0 (req/s and latency meaningless)" >&2
  CPU_PROXY=0
fi

# Run what we measure at nice -19 (root only): on a machine shared with other work (builds),
# the scheduler then gives them the leftovers instead of slices of the proxy's core.
# --no-nice turns it off. Same for both proxies, the origin and the load generators.
PRIO=(nice -n 0)
if [ "$NICE" = 1 ] && [ "$(id -u)" = 0 ]; then PRIO=(nice -n -19); fi

has() { command -v "$1" >/dev/null 2>&1; }
is_selected() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
is_fixed_load() { [ "$1" = rate ] || [ "$1" = w2 ]; }

# ------------------------------------------------------------------ tools and build

install_tools() {
  local missing=()
  has wrk || missing+=(wrk)
  has nginx || missing+=(nginx)
  has h2load || missing+=(nghttp2-client)
  has curl || missing+=(curl)
  has openssl || missing+=(openssl)
  has taskset || missing+=(util-linux)
  has ps || missing+=(procps)
  has ss || missing+=(iproute2)
  has nghttp || missing+=(nghttp2-client)
  has python3 || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "missing tools (${missing[*]}); run as root to install them" >&2; exit 1; }
    echo "installing: ${missing[*]}" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  # The Debian package may have started the system nginx on :80; we never use it (our
  # instances run from their own prefix and config) and leave it alone.
}

ensure_cargo() {
  if ! has cargo && [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
  if ! has cargo; then
    # Debian's rustc is older than Portico's rust-version; use rustup's stable toolchain.
    echo "cargo not found: installing the Rust stable toolchain with rustup (minimal profile)" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# ------------------------------------------------------------------ run directory

RUN_ID=$(date -u +%Y%m%d-%H%M%S)$([ "$QUICK" = 1 ] && echo -quick || true)
OUT=$BENCH/results/$RUN_ID
WORK=$OUT/work
RAW=$OUT/raw
mkdir -p "$WORK" "$RAW"
ln -sfn "$RUN_ID" "$BENCH/results/latest"
RUNS=$OUT/runs.jsonl
: > "$RUNS"
# The clients' OpenSSL config (wrk, curl and openssl s_client read it through OPENSSL_CONF):
# TLS 1.3 offers only $TLS_CIPHER. h2load sets its own list (--tls13-ciphers).
CLIENT_TLS_CONF=$WORK/openssl-client.cnf
printf '%s\n' "openssl_conf = bench_init" "[bench_init]" "ssl_conf = bench_ssl" "[bench_ssl]" \
  "system_default = bench_tls" "[bench_tls]" "Ciphersuites = $TLS_CIPHER" > "$CLIENT_TLS_CONF"
exec > >(tee -a "$OUT/run.log") 2>&1
log() { echo "[bench $(date +%H:%M:%S)] $*"; }

# What the run will take: every measurement is a fresh proxy, a warm-up and the measured
# window (about DUR + WARM + 2 s); rate and w2 have one point; idle about 8 s per measurement.
estimate_seconds() {
  local proxies=2 total=20 scenario n
  [ -z "$BASELINE" ] || proxies=3
  for scenario in a a-h2up b c d d-h2 e; do
    is_selected "$scenario" || continue
    n=$proxies; [ "$scenario" = a ] && n=$((n + 1))              # + nginx-fwd
    total=$((total + ROUNDS * ${#H1_POINTS[@]} * n * (DUR + WARM + 2) + 5 * proxies))
  done
  for scenario in rate w2; do
    if is_selected "$scenario"; then total=$((total + ROUNDS * proxies * (DUR + WARM + 4))); fi
  done
  if is_selected idle; then total=$((total + 2 * ROUNDS * proxies * 8)); fi
  if [ "$PROFILE" = 1 ]; then total=$((total + proxies * (3 * DUR + WARM + 6))); fi
  echo "$total"
}
EST=$(estimate_seconds)
log "expected duration: about $((EST / 60)) min $((EST % 60)) s ($ROUNDS round(s), ${DUR} s per measurement + ${WARM} s warm-up, ${#H1_POINTS[@]} operating point(s) per closed-loop scenario), plus the build if there is one"

install_tools
for port in $(seq "$PORT_BASE" $((PORT_BASE + 6))); do
  if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
    echo "port $port is in use on this machine; choose other ports with BENCH_PORT_BASE=N" >&2
    exit 1
  fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

PORTICO=$WORK/portico
if [ -n "$REV" ]; then
  SHA=$(git -C "$ROOT" rev-parse --verify "$REV^{commit}")
  SRC=$BENCH/results/src-${SHA:0:12}
  BIN=$BENCH/results/target/release/portico
  if [ ! -d "$SRC" ]; then
    mkdir -p "$SRC"
    git -C "$ROOT" archive "$SHA" | tar -x -C "$SRC"
  fi
  ensure_cargo
  log "building Portico ${SHA:0:12} ($REV) from a clean export: cargo build --release (fat LTO: the first build takes several minutes on 2 cores; later runs reuse it)"
  (cd "$SRC" && CARGO_TARGET_DIR=$BENCH/results/target cargo build --release) 2>&1 | tail -n 3
  PORTICO_VERSION="${SHA:0:12} (clean build of $REV)"
elif [ -n "$BINARY" ]; then
  BIN=$BINARY
  PORTICO_VERSION="$(readlink -f "$BINARY") (--binary, not built here)"
else
  BIN=$ROOT/target/release/portico
  if [ "$BUILD" = 1 ]; then
    ensure_cargo
    log "building Portico: cargo build --release (fat LTO, one codegen unit: the first build takes several minutes on 2 cores; later runs reuse it)"
    (cd "$ROOT" && cargo build --release) 2>&1 | tail -n 3
  fi
  PORTICO_VERSION="$(git -C "$ROOT" rev-parse --short=12 HEAD) + working tree (uncommitted changes in src/ and Cargo.*: $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock | wc -l) files)"
fi
[ -x "$BIN" ] || { echo "no $BIN; run without --no-build" >&2; exit 1; }
# A private copy: other builds may replace the binary during the run.
cp "$BIN" "$PORTICO"
PORTICO_BASE=""
if [ -n "$BASELINE" ]; then
  PORTICO_BASE=$WORK/portico-base   # its own copy too (and perf names it portico-base)
  cp "$BASELINE" "$PORTICO_BASE"
fi

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

forget() {  # drop a pid from STARTED once it is gone
  local keep=() pid
  for pid in "${STARTED[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  STARTED=("${keep[@]}")
}

# utime+stime (clock ticks) summed over the given pids; field 14 and 15 of /proc/PID/stat,
# counted after the ")" that ends the command name.
cpu_ticks() {
  local total=0 pid t
  for pid in "$@"; do
    t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
    total=$((total + t))
  done
  echo "$total"
}
# "cpuN" line of /proc/stat: user nice system idle iowait irq softirq steal (clock ticks).
cpu_line() { awk -v c="cpu$1" '$1 == c {print $2, $3, $4, $5, $6, $7, $8, $9}' /proc/stat; }
vm_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }   # pid field
# Voluntary context switches summed over every thread of the given pids.
wakeups() {
  local pid
  for pid in "$@"; do cat /proc/"$pid"/task/*/status 2>/dev/null; done \
    | awk '$1 == "voluntary_ctxt_switches:" {n += $2} END {print n + 0}'
}
# Connections the origin has accepted so far (its stub_status), counting this query's own.
# Only the proxies connect to the origin, so the difference over a window, less one for the
# second query, is the upstream connections the proxy opened in it.
origin_accepts() {
  curl -s --max-time 2 "http://127.0.0.1:$ORIGIN_PORT/bench-status" | awk 'NR == 3 {print $1}'
}

wait_http() {  # url [curl args...]: until a 200 arrives (10 s at most)
  local url=$1; shift
  local i
  for i in $(seq 1 100); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null)" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "no 200 from $url after 10 s" >&2
  return 1
}

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

# start_proxy PROXY SCENARIO: sets PROXY_PID (the process we started), CPU_PIDS (pids whose
# CPU time is the proxy's: nginx master + worker, Portico's one process) and MEM_PID (the
# process holding the connections: nginx's worker, Portico).
start_proxy() {
  local proxy=$1 scenario=$2 dir=$WORK/$1-$2
  mkdir -p "$dir/tmp"
  case "$proxy" in
    portico|portico-base)
      # portico-base (--baseline) reads portico's config file: both builds run the same bytes.
      # Its logs stay in its own directory.
      # A baseline that predates `tls.cipher_suites` gets a config of its own without it.
      local confdir=$WORK/portico-$scenario exe=$PORTICO cipher=$PORTICO_CIPHER
      if [ "$proxy" = portico-base ]; then
        exe=$PORTICO_BASE
        if [ "$BASE_CIPHER" != "$PORTICO_CIPHER" ]; then
          confdir=$WORK/portico-base-conf-$scenario; cipher=$BASE_CIPHER
        fi
      fi
      local conf=$confdir/portico.yaml
      mkdir -p "$confdir"
      [ -f "$conf" ] || BENCH_PORTICO_CIPHER=$cipher python3 "$LIB" portico-config "$scenario" "$ORIGIN_PORT" \
        "$PORTICO_H1" "$PORTICO_TLS" "${TLS_CERT_FOR_PORTICO:-}" "${TLS_KEY_FOR_PORTICO:-}" > "$conf"
      "${PRIO[@]}" taskset -c "$PROXY_CPUS" "$exe" run -c "$conf" --workers "$PROXY_WORKERS" \
        > "$dir/stdout.log" 2> "$dir/stderr.log" &
      PROXY_PID=$!
      STARTED+=("$PROXY_PID")
      CPU_PIDS=("$PROXY_PID")
      MEM_PID=$PROXY_PID
      ;;
    nginx|nginx-fwd)
      [ -f "$dir/nginx.conf" ] || python3 "$LIB" nginx-proxy "$dir" "$scenario" "$ORIGIN_PORT" \
        "$NGINX_H1" "$NGINX_H2C" "$NGINX_TLS" "${TLS_CERT:-}" "${TLS_KEY:-}" \
        "$([ "$proxy" = nginx-fwd ] && echo 1 || echo 0)" > "$dir/nginx.conf"
      BENCH_PROXY_WORKERS=$PROXY_WORKERS "${PRIO[@]}" taskset -c "$PROXY_CPUS" \
        nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
      PROXY_PID=$!
      STARTED+=("$PROXY_PID")
      ;;
  esac
  wait_http "$(proxy_url "$proxy" "$scenario" h1)"
  if [ "$proxy" = nginx ] || [ "$proxy" = nginx-fwd ]; then
    local workers=() i
    # Every worker (the two-worker scenario has two), once all have started.
    for i in $(seq 1 50); do
      mapfile -t workers < <(ps -o pid= --ppid "$PROXY_PID" | tr -d ' ')
      [ "${#workers[@]}" -lt "$PROXY_WORKERS" ] || break
      sleep 0.1
    done
    [ "${#workers[@]}" -gt 0 ] || { echo "nginx worker not found" >&2; return 1; }
    CPU_PIDS=("$PROXY_PID" "${workers[@]}")
    MEM_PID=${workers[0]}
  fi
}

stop_proxy() {
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  forget "$PROXY_PID"
}

# proxy_url PROXY SCENARIO KIND(h1|h2c|tls)
proxy_url() {
  local path=/ port
  [ "$2" = c ] && path=/svc0999/x
  case "$1:$3" in
    portico*:h1|portico*:h2c) port=$PORTICO_H1 ;;   # portico and portico-base
    portico*:tls) port=$PORTICO_TLS ;;
    nginx*:h1) port=$NGINX_H1 ;;
    nginx*:h2c) port=$NGINX_H2C ;;
    nginx*:tls) port=$NGINX_TLS ;;
  esac
  if [ "$3" = tls ]; then echo "https://127.0.0.1:$port$path"; else echo "http://127.0.0.1:$port$path"; fi
}

# ------------------------------------------------------------------ load generators

# point_label SCENARIO OP: the operating point OP (1-based) of a closed-loop scenario, as
# "64 conns" (wrk) or "8x8" (h2load connections x streams).
point_label() {
  case "$1" in
    d-h2|e) echo "${H2_POINTS[$(($2 - 1))]}" ;;
    *) echo "${H1_POINTS[$(($2 - 1))]} conns" ;;
  esac
}

# load SCENARIO PROXY SECONDS OUTFILE [OP]: one bounded run of the scenario's load generator
# at operating point OP (default 1), pinned to the load CPU. Prints nothing; the output goes
# to OUTFILE (+ OUTFILE.log). Over TLS the load generators offer only $TLS_CIPHER: h2load by
# --tls13-ciphers, wrk (no option for it) through an OpenSSL config file.
load() {
  local scenario=$1 proxy=$2 secs=$3 out=$4 op=${5:-1}
  local limit=$((secs + 30))
  local conns=${H1_POINTS[$((op - 1))]} h2=${H2_POINTS[$((op - 1))]}
  local h2_clients=${h2%x*} h2_streams=${h2#*x}
  case "$scenario" in
    a|a-h2up|c)
      "${PRIO[@]}" taskset -c "$CPU_LOAD" timeout "$limit" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s \
        -s "$WRK_SCRIPT" "$(proxy_url "$proxy" "$scenario" h1)" > "$out" 2>&1 ;;
    b)
      BENCH_POST_BYTES=$POST_BYTES "${PRIO[@]}" taskset -c "$CPU_LOAD" timeout "$limit" wrk -t1 -c"$conns" \
        -d"${secs}s" --timeout 5s -s "$WRK_SCRIPT" "$(proxy_url "$proxy" a h1)" > "$out" 2>&1 ;;
    d)
      OPENSSL_CONF=$CLIENT_TLS_CONF "${PRIO[@]}" taskset -c "$CPU_LOAD" timeout "$limit" wrk -t1 -c"$conns" \
        -d"${secs}s" --timeout 5s -s "$WRK_SCRIPT" "$(proxy_url "$proxy" a tls)" > "$out" 2>&1 ;;
    d-h2)
      "${PRIO[@]}" taskset -c "$CPU_LOAD" timeout "$limit" h2load -t1 -c"$h2_clients" -m"$h2_streams" \
        --tls13-ciphers="$TLS_CIPHER" -D "$secs" --log-file="$out.log" "$(proxy_url "$proxy" a tls)" > "$out" 2>&1 ;;
    e)
      "${PRIO[@]}" taskset -c "$CPU_LOAD" timeout "$limit" h2load -t1 -c"$h2_clients" -m"$h2_streams" \
        -D "$secs" --log-file="$out.log" "$(proxy_url "$proxy" a h2c)" > "$out" 2>&1 ;;
    rate|w2)
      # One h2load process per connection: a single h2load paces all its connections with
      # timers started together, so its requests leave in bursts of -c at a time; separate
      # processes start a little apart and spread them out.
      local i parts=()
      for i in $(seq 1 "$RATE_CLIENTS"); do
        "${PRIO[@]}" taskset -c "$CPU_LOAD" timeout "$limit" h2load --h1 -t1 -c1 -m1 \
          --rps="$((RATE / RATE_CLIENTS))" -D "$secs" --log-file="$out.log.$i" \
          "$(proxy_url "$proxy" a h1)" > "$out.$i" 2>&1 &
        parts+=($!)
      done
      local rc=0
      for i in "${parts[@]}"; do wait "$i" || rc=1; done
      cat "$out".[0-9]* > "$out"; cat "$out".log.[0-9]* > "$out.log"
      rm -f "$out".[0-9]* "$out".log.[0-9]*
      return $rc ;;
  esac
}

parse() {  # scenario outfile
  case "$1" in
    a|a-h2up|b|c|d) python3 "$LIB" parse-wrk "$2" ;;
    *) python3 "$LIB" parse-h2load "$2" "$2.log" ;;
  esac
}

# Check the proxy answers the scenario's request with the origin's body.
check_answer() {
  local proxy=$1 scenario=$2 url args=()
  case "$scenario" in
    d) url=$(proxy_url "$proxy" a tls); args=(-k) ;;
    d-h2) url=$(proxy_url "$proxy" a tls); args=(-k --http2) ;;
    e) url=$(proxy_url "$proxy" a h2c); args=(--http2-prior-knowledge) ;;
    b) url=$(proxy_url "$proxy" a h1); args=(--data-binary "@$WORK/post.bin") ;;
    *) url=$(proxy_url "$proxy" "$scenario" h1) ;;
  esac
  local body
  body=$(OPENSSL_CONF=$CLIENT_TLS_CONF curl -s --max-time 5 "${args[@]}" "$url" || true)
  if [ "$body" != "$ORIGIN_BODY" ]; then
    log "WARNING: $proxy ($scenario) answered \"${body:0:200}\" instead of the origin's body"
    return 1
  fi
}

measure() {  # scenario proxy round [op]
  local scenario=$1 proxy=$2 round=$3 op=${4:-1}
  local base=$RAW/$scenario-op$op-$proxy-r$round point=""
  is_fixed_load "$scenario" || point=$(point_label "$scenario" "$op")
  start_proxy "$proxy" "$(config_of "$scenario")"
  check_answer "$proxy" "$scenario" || true
  load "$scenario" "$proxy" "$WARM" "$base.warmup" "$op" || true
  local t0 t1 w0 w1
  local s0 s1 l0 l1 v0 v1 o0 o1
  s0=$(cpu_line "$CPU_PROXY"); l0=$(cpu_line "$CPU_LOAD")
  v0=$(wakeups "${CPU_PIDS[@]}"); o0=$(origin_accepts)
  local m0 m1   # the first pid's own ticks: NGINX's master (its share of "master + worker")
  m0=$(cpu_ticks "${CPU_PIDS[0]}")
  t0=$(cpu_ticks "${CPU_PIDS[@]}"); w0=$(date +%s.%N)
  load "$scenario" "$proxy" "$DUR" "$base.out" "$op" || log "load generator exited with an error ($base.out)"
  t1=$(cpu_ticks "${CPU_PIDS[@]}"); w1=$(date +%s.%N)
  m1=$(cpu_ticks "${CPU_PIDS[0]}")
  v1=$(wakeups "${CPU_PIDS[@]}"); o1=$(origin_accepts)
  s1=$(cpu_line "$CPU_PROXY"); l1=$(cpu_line "$CPU_LOAD")
  local hwm rss threads
  hwm=$(vm_kib "$MEM_PID" VmHWM); rss=$(vm_kib "$MEM_PID" VmRSS); threads=$(vm_kib "$MEM_PID" Threads)
  stop_proxy
  local parsed
  parsed=$(parse "$scenario" "$base.out") || { log "could not parse $base.out"; return 0; }
  python3 - "$parsed" <<EOF >> "$RUNS"
import json, sys
d = json.loads(sys.argv[1])
ticks = $t1 - $t0
wall = $w1 - $w0
cpu_us = ticks * 1e6 / $CLK_TCK
# The proxy's CPU as /proc/stat sees it: user+nice+system beyond the proxy's own ticks is
# someone else's work on the proxy's core (a disturbed run); irq+softirq is shown apart
# (mostly the loopback traffic the proxy itself sends).
s0, s1 = [int(x) for x in "$s0".split()], [int(x) for x in "$s1".split()]
l0, l1 = [int(x) for x in "$l0".split()], [int(x) for x in "$l1".split()]
sd = [b - a for a, b in zip(s0, s1)]
ld = [b - a for a, b in zip(l0, l1)]
window = $w1 - $w0
proxy_cpu_other = max(0, sd[0] + sd[1] + sd[2] - ticks) / $CLK_TCK / window
proxy_cpu_irq = (sd[5] + sd[6]) / $CLK_TCK / window
load_cpu_busy = (sum(ld) - ld[3] - ld[4]) / $CLK_TCK / window
# Wake-ups: voluntary context switches of the proxy's threads (each is a sleep in epoll_wait
# or a lock and the wake-up after it): fewer per request = more requests handled per wake-up.
# Upstream opens: connections the origin accepted in the window (minus the second stub_status
# query): a proxy whose idle pool overflowed reconnects under load.
d.update(scenario="$scenario", proxy="$proxy", round=$round, op=$op, point="$point" or None,
         ctx_switches_per_req=($v1 - $v0) / d["ok"] if d["ok"] else None,
         upstream_opens=max(0, ${o1:-0} - ${o0:-0} - 1) if "$o0" and "$o1" else None,
         threads=$threads,
         nginx_master_ticks=($m1 - $m0) if "$proxy".startswith("nginx") else None,
         cpu_ticks=ticks, wall_s=wall,
         cpu_us_per_req=cpu_us / d["ok"] if d["ok"] else None,
         cpu_util=(ticks / $CLK_TCK) / wall, peak_rss_kib=$hwm, rss_end_kib=$rss,
         offered_rps=${RATE:-0} if "$scenario" in ("rate", "w2") else None,
         proxy_cpu_other=proxy_cpu_other, proxy_cpu_irq=proxy_cpu_irq,
         irq_us_per_req=(sd[5] + sd[6]) * 1e6 / $CLK_TCK / d["ok"] if d["ok"] else None,
         load_cpu_busy=load_cpu_busy, loadavg=open("/proc/loadavg").read().split()[0])
print(json.dumps(d))
EOF
  tail -n 1 "$RUNS" | python3 "$LIB" line "$CPU_PROXY"
}

config_of() {  # the proxy config a scenario runs with
  case "$1" in
    c) echo c ;;
    w2) echo w2 ;;   # a's, in a directory of its own: NGINX's names two workers
    a-h2up) echo a-h2up ;;   # Portico's cluster on the origin's h2c port
    *) echo a ;;   # one catch-all route; the same config serves h1, h2c and TLS
  esac
}

measure_idle() {  # proxy round requests-per-connection (1: idle keep-alive; 0: never used)
  local proxy=$1 round=$2 reqs=$3
  local base=$RAW/idle$reqs-$proxy-r$round
  start_proxy "$proxy" a
  # A few requests first, so the upstream connection and lazily built state exist.
  local i
  for i in 1 2 3 4 5; do curl -s -o /dev/null "$(proxy_url "$proxy" a h1)"; done
  sleep 0.5
  local before after hwm
  before=$(vm_kib "$MEM_PID" VmRSS)
  local fifo=$WORK/idle.fifo
  rm -f "$fifo"; mkfifo "$fifo"
  local port=$PORTICO_H1
  case "$proxy" in nginx*) port=$NGINX_H1 ;; esac
  "${PRIO[@]}" taskset -c "$CPU_LOAD" python3 "$LIB" idle 127.0.0.1 "$port" "$IDLE_CONNS" "$reqs" < "$fifo" > "$base.out" 2>&1 &
  local client=$!
  STARTED+=("$client")
  exec 9> "$fifo"
  for i in $(seq 1 300); do grep -q '^ready' "$base.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  after=$(vm_kib "$MEM_PID" VmRSS); hwm=$(vm_kib "$MEM_PID" VmHWM)
  exec 9>&-          # the client sees EOF, checks its connections are still open, exits
  for i in $(seq 1 100); do kill -0 "$client" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$client" 2>/dev/null || true
  wait "$client" 2>/dev/null || true
  forget "$client"
  stop_proxy
  local ok failures alive
  read -r _ ok failures < <(grep '^ready' "$base.out" || echo "ready 0 $IDLE_CONNS")
  alive=$(awk '/^alive/ {print $2}' "$base.out")
  python3 - <<EOF >> "$RUNS"
import json
ok = $ok
print(json.dumps(dict(scenario="idle", proxy="$proxy", round=$round, requests_per_conn=$reqs, conns=ok,
    failures=$failures, alive=${alive:-None}, rss_before_kib=$before, rss_after_kib=$after,
    peak_rss_kib=$hwm, bytes_per_conn=($after - $before) * 1024 / ok if ok else None)))
EOF
  log "idle  $proxy r$round: $ok connections with $reqs request(s) each (failures $failures, still open at the end ${alive:-?}): RSS $before -> $after KiB = $(( ok ? (after - before) * 1024 / ok : 0 )) bytes/conn"
}

# ------------------------------------------------------------------ environment record

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "mode: $([ "$QUICK" = 1 ] && echo quick || echo full), ${DUR}s per run, $ROUNDS round(s), warm-up ${WARM}s, priority: ${PRIO[*]}"
  echo "operating points: $(for op in $OPS; do printf '%s: wrk -c%s, h2load %s (connections x streams); ' "$op" "${H1_POINTS[$((op - 1))]}" "${H2_POINTS[$((op - 1))]}"; done)"
  echo "TLS: $TLS_CIPHER on both proxies (the load generators offer only it); idle upstream connections kept: $BENCH_UPSTREAM_IDLE per proxy"
  echo "machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) CPUs, kernel $(uname -r)"
  echo "portico: $PORTICO_VERSION, binary sha256 $(sha256sum "$PORTICO" | cut -c1-16)"
  if [ -n "$BASELINE" ]; then
    echo "portico-base: $(readlink -f "$BASELINE") (--baseline), binary sha256 $(sha256sum "$PORTICO_BASE" | cut -c1-16)"
  fi
  echo "rustc: $(rustc -V 2>/dev/null || echo '?')"
  echo "nginx: $(nginx -v 2>&1)"
  echo "wrk: $(wrk -v 2>&1 | head -n 1)"
  echo "h2load: $(h2load --version 2>&1 | head -n 1)"
  echo "openssl: $(openssl version)"
  echo "uptime before: $(uptime)"
} > "$OUT/env.txt"
cat "$OUT/env.txt"

# ------------------------------------------------------------------ setup

head -c "$POST_BYTES" /dev/zero | tr '\0' x > "$WORK/post.bin"
start_origin

# TLS: one self-signed ECDSA P-256 certificate for both proxies.
TLS_CERT=$WORK/cert.pem
TLS_KEY=$WORK/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null
chmod 644 "$TLS_KEY"   # nginx workers run as nobody and never read it; the master does
PORTICO_TLS_OK=0
# Portico's listener gets `cipher_suites: [$TLS_CIPHER]`; a build that does not know the key
# runs with its default suites (the load generators offer only $TLS_CIPHER, so its handshakes
# still use it; the start-up check below records what it chooses by itself).
PORTICO_CIPHER=$TLS_CIPHER
BASE_CIPHER=$TLS_CIPHER
BENCH_PORTICO_CIPHER=$PORTICO_CIPHER python3 "$LIB" portico-config a "$ORIGIN_PORT" "$PORTICO_H1" "$PORTICO_TLS" "$TLS_CERT" "$TLS_KEY" > "$WORK/tls-probe.yaml"
if ! "$PORTICO" validate "$WORK/tls-probe.yaml" > "$WORK/tls-probe.out" 2>&1 \
   && grep -q cipher_suites "$WORK/tls-probe.out"; then
  log "this Portico build does not accept tls.cipher_suites ($(grep -m 1 cipher_suites "$WORK/tls-probe.out")): it runs with its default cipher suites; the load generators offer only $TLS_CIPHER"
  PORTICO_CIPHER=""; BASE_CIPHER=""
  python3 "$LIB" portico-config a "$ORIGIN_PORT" "$PORTICO_H1" "$PORTICO_TLS" "$TLS_CERT" "$TLS_KEY" > "$WORK/tls-probe.yaml"
fi
if ! "$PORTICO" validate "$WORK/tls-probe.yaml" > "$WORK/tls-probe.out" 2>&1; then
  log "SKIP (d) and (d-h2): this Portico build does not accept a listener 'tls:' section yet: $(grep -m 1 -i 'tls' "$WORK/tls-probe.out" || head -n 2 "$WORK/tls-probe.out" | tail -n 1)"
else
  # The config is accepted: check the listener really speaks TLS before measuring it.
  mkdir -p "$WORK/portico-a"
  cp "$WORK/tls-probe.yaml" "$WORK/portico-a/portico.yaml"
  start_proxy portico a
  if OPENSSL_CONF=$CLIENT_TLS_CONF curl -sk --max-time 3 -o /dev/null "https://127.0.0.1:$PORTICO_TLS/" 2> "$WORK/tls-probe.curl"; then
    PORTICO_TLS_OK=1
    log "Portico serves TLS on a listener with a tls: section: scenarios (d) and (d-h2) will run"
  else
    log "SKIP (d) and (d-h2): Portico accepts the listener 'tls:' section but the listener does not complete a TLS handshake (curl exit $?)"
    rm -f "$WORK/portico-a/portico.yaml"   # plain config for the other scenarios
  fi
  stop_proxy
fi
if [ -n "$BASELINE" ]; then
  # The baseline runs portico's config file, so it must accept the plain config, and the TLS
  # listener too or neither build gets one (then (d) and (d-h2) are skipped).
  python3 "$LIB" portico-config a "$ORIGIN_PORT" "$PORTICO_H1" "$PORTICO_TLS" "" "" > "$WORK/base-probe.yaml"
  if ! "$PORTICO_BASE" validate "$WORK/base-probe.yaml" > "$WORK/base-probe.out" 2>&1; then
    echo "the --baseline binary does not accept the benchmark config: $(head -n 3 "$WORK/base-probe.out")" >&2
    exit 1
  fi
  if [ "$PORTICO_TLS_OK" = 1 ]; then
    base_tls=$WORK/tls-probe.yaml
    if ! "$PORTICO_BASE" validate "$base_tls" > "$WORK/tls-probe-base.out" 2>&1 \
       && [ -n "$BASE_CIPHER" ] && grep -q cipher_suites "$WORK/tls-probe-base.out"; then
      # An older baseline: the same config without the key, in a file of its own.
      BASE_CIPHER=""
      log "the --baseline build does not accept tls.cipher_suites: it runs with its default cipher suites (a config of its own, otherwise the same); the load generators offer only $TLS_CIPHER"
      base_tls=$WORK/tls-probe-base.yaml
      python3 "$LIB" portico-config a "$ORIGIN_PORT" "$PORTICO_H1" "$PORTICO_TLS" "$TLS_CERT" "$TLS_KEY" > "$base_tls"
      mkdir -p "$WORK/portico-base-conf-a"
      cp "$base_tls" "$WORK/portico-base-conf-a/portico.yaml"
    fi
    if ! "$PORTICO_BASE" validate "$base_tls" > "$WORK/tls-probe-base.out" 2>&1; then
      PORTICO_TLS_OK=0
      log "SKIP (d) and (d-h2): the --baseline build does not accept the listener 'tls:' section (both builds run the same config)"
    else
      start_proxy portico-base a
      if ! OPENSSL_CONF=$CLIENT_TLS_CONF curl -sk --max-time 3 -o /dev/null "https://127.0.0.1:$PORTICO_TLS/" 2> "$WORK/tls-probe-base.curl"; then
        PORTICO_TLS_OK=0
        log "SKIP (d) and (d-h2): the --baseline build's TLS listener does not complete a handshake (both builds run the same config)"
      fi
      stop_proxy
    fi
    if [ "$PORTICO_TLS_OK" = 0 ]; then   # plain config for both
      rm -f "$WORK/portico-a/portico.yaml" "$WORK/portico-base-conf-a/portico.yaml"
    fi
  fi
fi
if [ "$PORTICO_TLS_OK" = 1 ]; then
  TLS_CERT_FOR_PORTICO=$TLS_CERT; TLS_KEY_FOR_PORTICO=$TLS_KEY
fi

# The order within a round: the baseline right after portico, so that each pair is measured
# back to back (the machine changes less within a pair than between rounds).
PROXIES=(portico)
if [ -n "$BASELINE" ]; then PROXIES+=(portico-base); fi
PROXIES+=(nginx)

# ------------------------------------------------------------------ start-up facts

# record_facts PROXY: the TLS 1.3 suite it negotiates with the load generators' offer and with
# a client offering every suite AES-256 first (its own choice), and the SETTINGS it sends on
# HTTP/2 over TLS and h2c (streams per connection, windows, frame size): what tells two runs
# of this harness, or this harness and another one, apart.
record_facts() {
  local proxy=$1 tls=1 url hostport loaded="" offering_all=""
  case "$proxy" in portico*) [ "$PORTICO_TLS_OK" = 1 ] || tls=0 ;; esac
  start_proxy "$proxy" a
  if [ "$tls" = 1 ]; then
    url=$(proxy_url "$proxy" a tls); hostport=${url#https://}; hostport=${hostport%%/*}
    loaded=$(OPENSSL_CONF=$CLIENT_TLS_CONF timeout 10 openssl s_client -connect "$hostport" \
      -servername localhost < /dev/null 2> /dev/null | sed -n 's/.*, Cipher is //p' | head -n 1)
    offering_all=$(timeout 10 openssl s_client -connect "$hostport" -servername localhost -tls1_3 \
      -ciphersuites TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256 \
      < /dev/null 2> /dev/null | sed -n 's/.*, Cipher is //p' | head -n 1)
    timeout 10 nghttp -nv "$url" > "$RAW/nghttp-$proxy-tls.out" 2>&1 || true
    log "$proxy TLS: ${loaded:-no handshake} with the load generators' offer ($TLS_CIPHER only); ${offering_all:-no handshake} with a client offering every suite, AES-256 first"
    if [ "$loaded" != "$TLS_CIPHER" ]; then
      log "WARNING: $proxy did not negotiate $TLS_CIPHER with the load generators' offer"
    fi
  fi
  timeout 10 nghttp -nv "$(proxy_url "$proxy" a h2c)" > "$RAW/nghttp-$proxy-h2c.out" 2>&1 || true
  stop_proxy
  local note=""
  case "$proxy" in
    portico) [ -n "$PORTICO_CIPHER" ] || note="this build does not accept tls.cipher_suites: its default suites, the client's order" ;;
    portico-base) [ -n "$BASE_CIPHER" ] || note="this build does not accept tls.cipher_suites: its default suites, the client's order" ;;
  esac
  python3 "$LIB" facts "$proxy" "$tls" "$loaded" "$offering_all" "$note" \
    "$RAW/nghttp-$proxy-tls.out" "$RAW/nghttp-$proxy-h2c.out" >> "$WORK/facts.jsonl"
  log "$proxy HTTP/2 SETTINGS: $(tail -n 1 "$WORK/facts.jsonl" | python3 "$LIB" facts-line)"
}

: > "$WORK/facts.jsonl"
if is_selected d || is_selected d-h2 || is_selected e; then
  for proxy in "${PROXIES[@]}"; do record_facts "$proxy"; done
fi
python3 "$LIB" facts-merge "$WORK/facts.jsonl" "$TLS_CIPHER" > "$OUT/facts.json"

# ------------------------------------------------------------------ the runs

run_scenario() {  # scenario [extra proxies...]: every operating point in every round
  local scenario=$1; shift
  local proxies=("${PROXIES[@]}" "$@") round proxy op ops=$OPS points=""
  ! is_fixed_load "$scenario" || ops=1
  if ! is_fixed_load "$scenario"; then
    for op in $ops; do points+="${points:+, }$(point_label "$scenario" "$op")"; done
  fi
  log "scenario $scenario: ${proxies[*]}, $ROUNDS round(s) of ${DUR}s${points:+ at each of: $points}"
  for round in $(seq 1 "$ROUNDS"); do
    for op in $ops; do
      for proxy in "${proxies[@]}"; do
        measure "$scenario" "$proxy" "$round" "$op"
      done
    done
  done
}

if is_selected a; then run_scenario a nginx-fwd; fi
if is_selected a-h2up; then run_scenario a-h2up; fi
if is_selected b; then run_scenario b; fi
if is_selected c; then run_scenario c; fi
if is_selected e; then run_scenario e; fi
if is_selected d || is_selected d-h2; then
  if [ "$PORTICO_TLS_OK" = 1 ]; then
    if is_selected d; then run_scenario d; fi
    if is_selected d-h2; then run_scenario d-h2; fi
  fi
fi
if is_selected rate || is_selected w2; then
  if [ -z "${BENCH_RATE:-}" ]; then
    # 40 % of the slower proxy's closed-loop GET throughput, else 10 000 req/s.
    RATE=$(python3 - "$RUNS" "$RATE_CLIENTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
clients = int(sys.argv[2])
meds = [statistics.median([r["rps"] for r in runs if r["scenario"] == "a" and r["proxy"] == p])
        for p in ("portico", "nginx")
        if any(r["scenario"] == "a" and r["proxy"] == p for r in runs)]
rate = 0.4 * min(meds) if len(meds) == 2 else 10000
step = clients * 10
print(max(step, int(rate // step) * step))
EOF
)
  else
    RATE=$BENCH_RATE
  fi
  log "fixed offered load: $RATE req/s over $RATE_CLIENTS connections"
  if is_selected rate; then run_scenario rate; fi
  if is_selected w2; then
    log "two workers per proxy on CPUs 0-$(($(nproc) - 1)), at the same offered load"
    PROXY_WORKERS=2 PROXY_CPUS=0-$(($(nproc) - 1))
    run_scenario w2
    PROXY_WORKERS=1 PROXY_CPUS=$CPU_PROXY
  fi
fi
if is_selected idle; then
  log "idle connections: $IDLE_CONNS keep-alive connections after one request each, then as many that never sent one"
  for reqs in 1 0; do
    for round in $(seq 1 "$ROUNDS"); do
      for proxy in "${PROXIES[@]}"; do measure_idle "$proxy" "$round" "$reqs"; done
    done
  done
fi

# ------------------------------------------------------------------ profile (optional)

profile_proxy() {  # proxy: where the CPU time goes under $PROFILE_SCENARIO, and syscalls per request
  local proxy=$1 pids scenario=$PROFILE_SCENARIO
  start_proxy "$proxy" "$(config_of "$scenario")"
  pids=$(IFS=,; echo "${CPU_PIDS[*]}")
  load "$scenario" "$proxy" "$WARM" "$RAW/profile-$proxy.warmup" || true
  perf record -e cpu-clock -F 4999 -p "$pids" -o "$OUT/perf-$proxy.data" -- sleep "$DUR" \
    > "$RAW/perf-record-$proxy.log" 2>&1 &
  local perf_pid=$!
  STARTED+=("$perf_pid")
  load "$scenario" "$proxy" "$DUR" "$RAW/profile-$proxy.out" || true
  wait "$perf_pid" || true
  forget "$perf_pid"
  # Syscall counts from tracepoints (cheap: no ptrace), divided by the requests served.
  # The counting window (DUR + 2 s) covers the whole load run; the idle proxy makes no calls.
  perf stat -e 'syscalls:sys_enter_*' -x, -p "$pids" -o "$RAW/syscalls-$proxy.csv" \
    -- sleep $((DUR + 2)) > /dev/null 2>&1 &
  perf_pid=$!
  STARTED+=("$perf_pid")
  sleep 1
  load "$scenario" "$proxy" "$DUR" "$RAW/syscalls-$proxy.out" || true
  wait "$perf_pid" || true
  forget "$perf_pid"
  stop_proxy
  perf report -i "$OUT/perf-$proxy.data" --stdio --no-children --sort dso 2>/dev/null \
    | grep -v '^#' | grep -v '^$' > "$OUT/profile-$proxy-dso.txt" || true
  perf report -i "$OUT/perf-$proxy.data" --stdio --no-children --sort dso,symbol \
    --percent-limit 0.4 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-160 \
    > "$OUT/profile-$proxy-symbols.txt" || true
  # User space only (the proxy's binary, libc, vdso), as a share of all samples.
  perf report -i "$OUT/perf-$proxy.data" --stdio --no-children --sort dso,symbol \
    --dsos "${proxy%-fwd},libc.so.6,[vdso]" \
    --percentage absolute --percent-limit 0.2 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-160 \
    > "$OUT/profile-$proxy-user.txt" || true
  python3 "$LIB" syscalls "$RAW/syscalls-$proxy.csv" "$RAW/syscalls-$proxy.out" \
    > "$OUT/profile-$proxy-syscalls.txt" || true
  log "profile $proxy: $(tr -s ' ' < "$OUT/profile-$proxy-dso.txt" | head -n 3 | tr '\n' ';') syscalls/request: $(head -n 1 "$OUT/profile-$proxy-syscalls.txt")"
}

if [ "$PROFILE" = 1 ]; then
  if has perf && perf record -e cpu-clock -o "$WORK/perf-probe.data" -- true >/dev/null 2>&1; then
    log "profile: perf record -e cpu-clock -F 4999 and perf stat -e 'syscalls:sys_enter_*' under scenario ($PROFILE_SCENARIO), ${DUR}s each"
    for proxy in "${PROXIES[@]}"; do profile_proxy "$proxy"; done
    log "profile: $OUT/profile-*.txt"
  else
    log "profile: perf does not work here; try valgrind --tool=callgrind (see bench/README.md)"
  fi
fi

# ------------------------------------------------------------------ summary

echo "uptime after: $(uptime)" >> "$OUT/env.txt"
log "$(tail -n 1 "$OUT/env.txt")"
python3 "$LIB" summarize "$RUNS" "$OUT/summary.json" "$OUT/facts.json" > "$OUT/summary.md"
echo
cat "$OUT/summary.md"
log "raw results: $OUT"
