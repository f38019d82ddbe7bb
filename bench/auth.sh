#!/usr/bin/env bash
# What authentication costs per request, and what 100,000 consumers cost to load.
#
#   bench/auth.sh [BINARY]      (default target/release/portico; build it first)
#
# 1. Instructions per proxied GET (callgrind through bench/instructions.sh: exact and
#    repeatable on a busy machine), each as a multiple of the plain proxy's:
#      plain    no auth (scenario a), and the same with f1's token sent but not asked for
#               (what reading a 250-byte header costs, before any authentication)
#      f1       a JWT route, the same ES256 token on every request: the verified-token cache
#      f2-es    a JWT route with the cache off: an ES256 signature checked on every request
#      f2-rs    the same with RS256 (2048-bit)
#      key      an API-key route with 100,000 consumers: one SHA-256 and one hash lookup
#      key-10   the same with 10 consumers (the lookup does not grow with the directory)
#    Tokens and keys are made by PyJWT (tests/tools/jwt_tool.py); the key set is a file.
# 2. The time `portico validate` takes for a config whose consumers file holds 100,000
#    consumers, as JSON and as YAML, minus the same config without consumers (best of 3).
#
# BENCH_KEEP=DIR keeps each scenario's callgrind profile under DIR/<config name>/.
# Loopback only; needs what bench/instructions.sh needs, plus python3 with PyJWT.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINARY=${1:-$ROOT/target/release/portico}
TOOL=$ROOT/tests/tools/jwt_tool.py
WORK=$(mktemp -d /tmp/portico-auth-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
[ -x "$BINARY" ] || { echo "no $BINARY: cargo build --release first" >&2; exit 1; }
python3 -c 'import jwt' 2>/dev/null || { echo "needs PyJWT: python3 -m pip install 'PyJWT[crypto]'" >&2; exit 1; }

# Keys, tokens, the key set, and the consumers files.
python3 - "$TOOL" "$WORK" <<'PY'
import hashlib, json, subprocess, sys, time
tool, work = sys.argv[1], sys.argv[2]
def batch(commands):
    out = subprocess.run(["python3", tool, "batch"], input=json.dumps(commands), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
es, rs = batch([["keygen", "ES256", "es"], ["keygen", "RS256", "rs"]])
claims = {"iss": "https://idp.bench", "aud": "https://api.bench", "sub": "bench", "scope": "read", "exp": int(time.time()) + 86400}
es_token, rs_token = batch([["sign", "ES256", es["private_pem"], "es", claims, {}], ["sign", "RS256", rs["private_pem"], "rs", claims, {}]])
open(f"{work}/jwks.json", "w").write(json.dumps({"keys": [es["jwk"], rs["jwk"]]}))
open(f"{work}/es.token", "w").write(es_token)
open(f"{work}/rs.token", "w").write(rs_token)
def digest(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
for count, name in [(100_000, "consumers"), (10, "consumers-10")]:
    consumers = [{"id": f"app-{i}", "plan": "gold", "scopes": ["read"], "api_keys": [digest(f"pk_bench_{i}")]} for i in range(count)]
    open(f"{work}/{name}.json", "w").write(json.dumps(consumers))
    if count == 100_000:
        with open(f"{work}/{name}.yaml", "w") as f:
            for c in consumers:
                f.write(f"- id: {c['id']}\n  plan: gold\n  scopes: [read]\n  api_keys: [\"{c['api_keys'][0]}\"]\n")
PY

# config NAME ROUTE_AUTH [PROVIDER_EXTRA] [CONSUMERS_FILE]: a template for bench/instructions.sh.
config() {
  local name=$1 auth=$2 extra=${3:-} consumers=${4:-$WORK/consumers-10.json}
  cat > "$WORK/$name.yaml" <<EOF
runtime: { workers: 1, watch_interval: 0s, drain_timeout: 0s }
access_log: { enabled: false }
listeners:
  - { name: plain, address: "127.0.0.1:@PORT@", limits: { idle_timeout: 300s } }
consumers: { file: "$consumers" }
auth_providers:
  - name: keys
    api_key: { header: x-api-key }
  - name: idp
    jwt:
      issuer: https://idp.bench
      audiences: [https://api.bench]
      jwks_file: "$WORK/jwks.json"
$extra
clusters:
  - { name: origin, endpoints: ["127.0.0.1:@ORIGIN_PORT@"], pool: { max_idle_per_endpoint: 64, idle_timeout: 300s } }
routes:
  - name: all
    cluster: origin
$auth
EOF
}
config plain ""
config f1 "    auth: { providers: [idp], scopes: [read] }"
config f2 "    auth: { providers: [idp], scopes: [read] }" "      cache_size: 0"
config key "    auth: { providers: [keys], scopes: [read] }" "" "$WORK/consumers.json"
config key10 "    auth: { providers: [keys], scopes: [read] }"

measure() {
  local template=$1 header=${2:-}
  local keep=${BENCH_KEEP:+$BENCH_KEEP/$(basename "$template" .yaml)}
  BENCH_CONFIG_TEMPLATE=$template BENCH_HEADER=$header BENCH_KEEP=$keep \
    "$ROOT/bench/instructions.sh" "$BINARY" \
    | awk 'NR == 2 { print $NF }'
}
plain=$(measure "$WORK/plain.yaml")
printf '%-44s %12s %8s\n' "scenario" "instr/req" "x plain"
row() { printf '%-44s %12.0f %8.3f\n' "$1" "$2" "$(echo "$2 / $plain" | bc -l)"; }
row "plain proxy (no auth)" "$plain"
row "plain proxy, the ES256 token sent but unused" "$(measure "$WORK/plain.yaml" "authorization: Bearer $(cat "$WORK/es.token")")"
row "f1  JWT ES256, verified-token cache hit" "$(measure "$WORK/f1.yaml" "authorization: Bearer $(cat "$WORK/es.token")")"
row "f2  JWT ES256, signature checked each time" "$(measure "$WORK/f2.yaml" "authorization: Bearer $(cat "$WORK/es.token")")"
row "f2  JWT RS256, signature checked each time" "$(measure "$WORK/f2.yaml" "authorization: Bearer $(cat "$WORK/rs.token")")"
row "API key, 100,000 consumers" "$(measure "$WORK/key.yaml" "x-api-key: pk_bench_99999")"
row "API key, 10 consumers" "$(measure "$WORK/key10.yaml" "x-api-key: pk_bench_7")"

# Loading 100,000 consumers: `portico validate` (parse, check, index), best of 3, less the
# same config with 10 consumers.
best() {
  local best=999999
  for _ in 1 2 3; do
    local start end
    start=$(date +%s%N)
    "$BINARY" validate "$1" > /dev/null
    end=$(date +%s%N)
    best=$(( (end - start) < best * 1000000 ? (end - start) / 1000000 : best ))
  done
  echo "$best"
}
sed -e 's/@PORT@/1/' -e 's/@ORIGIN_PORT@/2/' "$WORK/key10.yaml" > "$WORK/v10.yaml"
sed -e 's/@PORT@/1/' -e 's/@ORIGIN_PORT@/2/' "$WORK/key.yaml" > "$WORK/vjson.yaml"
sed -e 's/@PORT@/1/' -e 's/@ORIGIN_PORT@/2/' -e "s#consumers.json#consumers.yaml#" "$WORK/key.yaml" > "$WORK/vyaml.yaml"
base=$(best "$WORK/v10.yaml")
json=$(best "$WORK/vjson.yaml")
yaml=$(best "$WORK/vyaml.yaml")
echo
echo "100,000 consumers: load and validate (portico validate, best of 3, less 10 consumers' ${base} ms)"
echo "  JSON file ($(du -h "$WORK/consumers.json" | cut -f1)): $((json - base)) ms"
echo "  YAML file ($(du -h "$WORK/consumers.yaml" | cut -f1)): $((yaml - base)) ms"
