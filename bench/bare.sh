#!/usr/bin/env bash
# The floor of Portico's architecture, side by side: a bare hyper 1.x proxy
# (bench/tools/bare_proxy: hyper's server and client, a pool, nothing else) measured by
# bench/run.sh against NGINX, with a Portico binary measured in the same rounds.
#
#   bench/bare.sh [PORTICO_BINARY] [run.sh options...]
#
# PORTICO_BINARY defaults to target/release/portico (build it first). Scenarios (a), (b),
# (d) and (d-h2) (over rustls on ring, as Portico) and (e) (h2c downstream; the bare proxy
# turns an HTTP/2 request into HTTP/1.1 minimally); `--only d,d-h2` after the binary picks.
# In run.sh's summary the proxy named `portico` is the bare proxy and `portico-base` is
# Portico: "Portico/NGINX CPU" on the `portico` rows is the bare proxy's ratio to NGINX, and
# "portico / portico-base" is the bare proxy's CPU per request over Portico's.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORTICO=${1:-$ROOT/target/release/portico}
[ $# -gt 0 ] && shift
[ -x "$PORTICO" ] || { echo "no Portico binary at $PORTICO (cargo build --release)" >&2; exit 1; }
TARGET=$ROOT/bench/results/target-bare
cargo build --release --quiet --manifest-path "$ROOT/bench/tools/bare_proxy/Cargo.toml" \
  --target-dir "$TARGET"
exec "$ROOT/bench/run.sh" --only a,b,d,d-h2,e --no-build --binary "$TARGET/release/bare_proxy" \
  --baseline "$PORTICO" "$@"
