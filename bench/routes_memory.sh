#!/usr/bin/env bash
# Portico's memory and start-up/reload time with many routes. See bench/README.md
# ("Memory at scale").
#
#   bench/routes_memory.sh                     1,000, 5,000 and 20,000 routes
#   bench/routes_memory.sh --routes 5000       other route counts (comma-separated)
#   bench/routes_memory.sh --binary PATH       the Portico binary (default
#                                              target/release/portico; nothing is built)
#   bench/routes_memory.sh --reloads K         reloads per route count (default 3)
#
# For each route count: generate the config (bench/tools/reloadlib.py's routes: templates and
# prefixes with hosts, one worker, access log off, admin listener on, plus one probe route
# that tells which version of the file is live), start Portico, time start → the last route
# answers, read VmRSS, send 20 requests to the last route, read VmRSS and VmHWM (peak), then
# K reloads (a changed file + SIGHUP, timed until the probe route serves the new version) and
# VmRSS once it settles. Prints a table; JSON lines in bench/results/<run id>-memory/runs.jsonl
# (gitignored; bench/results/latest-memory).
#
# Memory is not noisy: this runs on a busy machine too (the times are then indicative only).
# Needs python3 (standard library only). Everything listens on 127.0.0.1; every wait is
# bounded; the origin runs inside the helper and Portico is stopped after each route count.
# Environment: BENCH_PORT_BASE (default 28030: origin +0, Portico +1, admin +2).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
MLIB=$BENCH/tools/memlib.py

BIN=$ROOT/target/release/portico
ROUTES_LIST="1000 5000 20000"
RELOADS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) shift; BIN=$1 ;;
    --binary=*) BIN=${1#--binary=} ;;
    --routes) shift; ROUTES_LIST=${1//,/ } ;;
    --routes=*) ROUTES_LIST=${1#--routes=}; ROUTES_LIST=${ROUTES_LIST//,/ } ;;
    --reloads) shift; RELOADS=$1 ;;
    --reloads=*) RELOADS=${1#--reloads=} ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "$RELOADS" $ROUTES_LIST; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive whole number: $v" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no Portico binary at $BIN (build it, or give --binary PATH)" >&2; exit 1; }

PORT_BASE=${BENCH_PORT_BASE:-28030}
for port in "$PORT_BASE" $((PORT_BASE + 1)) $((PORT_BASE + 2)); do
  if command -v ss >/dev/null && ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
    echo "port $port is in use on this machine; choose other ports with BENCH_PORT_BASE=N" >&2
    exit 1
  fi
done

RUN_ID=$(date -u +%Y%m%d-%H%M%S)-memory
OUT=$BENCH/results/$RUN_ID
mkdir -p "$OUT"
ln -sfn "$RUN_ID" "$BENCH/results/latest-memory"
# A private copy: a build may replace the binary during the run. Removed at exit (a release
# build with debug info is tens of MB; env.txt keeps its checksum).
cp "$BIN" "$OUT/portico"
trap 'rm -f "$OUT/portico"' EXIT
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "command: bench/routes_memory.sh --binary $BIN --routes ${ROUTES_LIST// /,} --reloads $RELOADS"
  echo "machine: $(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) CPUs, kernel $(uname -r)"
  echo "portico: $BIN ($("$OUT/portico" --version 2>&1 | head -n 1)), sha256 $(sha256sum "$OUT/portico" | cut -c1-16)"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/env.txt"

STATUS=0
# shellcheck disable=SC2086  # the route counts are separate arguments
python3 "$MLIB" run "$OUT" "$OUT/portico" "$PORT_BASE" "$RELOADS" $ROUTES_LIST || STATUS=$?
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/env.txt"
if [ -s "$OUT/runs.jsonl" ]; then
  python3 "$MLIB" table "$OUT/runs.jsonl" > "$OUT/summary.md"
  echo
  cat "$OUT/summary.md"
fi
echo "raw results: $OUT"
exit "$STATUS"
