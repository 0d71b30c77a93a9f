#!/usr/bin/env bash
# RFC 9111 conformance of the gateway's cache, with the cache-tests.fyi suite (npm package
# http-cache-tests), scored next to the NGINX and Varnish results that ship with the suite.
#
#   scripts/cache-conformance.sh [--keep]     # needs node and npm; loopback only
#
# Starts the suite's origin on 127.0.0.1:8000, the gateway (debug build) caching everything in
# front of it on 127.0.0.1:18200, runs the suite's command-line client through the gateway and
# prints, per test kind (required, optimal, check), how many tests pass for AVX, NGINX and
# Varnish. Raw results: $WORK/avx.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUITE_VERSION=0.4.5
WORK=$(mktemp -d /tmp/avx-cache-tests.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "${1:-}" = "--keep" ] || rm -rf "$WORK"
}
trap 'cleanup "${KEEP:-}"' EXIT
[ "${1:-}" = "--keep" ] && KEEP=--keep

command -v node >/dev/null || { echo "node is required" >&2; exit 1; }
(cd "$WORK" && npm install --silent --no-audit --no-fund "http-cache-tests@$SUITE_VERSION" >/dev/null)
SUITE=$WORK/node_modules/http-cache-tests

cargo build --quiet --locked --bin avx-gateway
cat > "$WORK/gateway.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/gw.pid, upgrade_sock: $WORK/gw.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ address: 127.0.0.1:18200 }]
admin: { address: 127.0.0.1:18201 }
upstreams:
  suite: { servers: [{ address: 127.0.0.1:8000 }], passive_health: { enabled: false } }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: suite
    cache: { enabled: true }
YAML

(cd "$SUITE" && exec env npm_config_protocol=http npm_config_port=8000 npm_config_pidfile="$WORK/origin.pid" node server/server.mjs) >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "$ROOT/target/debug/avx-gateway" -c "$WORK/gateway.yaml" 2>"$WORK/gateway.log" &
PIDS+=($!)
for port in 8000 18200; do
  up=no
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && up=yes && break
    sleep 0.1
  done
  [ "$up" = yes ] || { echo "nothing listens on 127.0.0.1:$port; see $WORK" >&2; KEEP=--keep; exit 1; }
done

(cd "$SUITE" && env npm_config_base=http://127.0.0.1:18200 npm_config_id= npm_package_config_id= node --no-warnings cli.mjs) >"$WORK/avx.json"

cat > "$WORK/score.mjs" <<'JS'
import fs from 'fs'
const [suiteDir, ours] = process.argv.slice(2)
const suites = (await import(`${suiteDir}/tests/index.mjs`)).default
const load = f => JSON.parse(fs.readFileSync(f, 'utf8'))
const targets = { avx: load(ours), nginx: load(`${suiteDir}/results/nginx.json`), varnish: load(`${suiteDir}/results/varnish.json`) }
const kinds = ['required', 'optimal', 'check']
const score = {}
for (const name of Object.keys(targets)) score[name] = Object.fromEntries(kinds.map(k => [k, 0]))
const totals = Object.fromEntries(kinds.map(k => [k, 0]))
for (const suite of suites) {
  for (const test of suite.tests) {
    const kind = test.kind || 'required'
    totals[kind]++
    for (const [name, results] of Object.entries(targets)) {
      if (results[test.id] === true) score[name][kind]++
    }
  }
}
console.log(`kind      tests   ${Object.keys(targets).map(n => n.padStart(8)).join('')}`)
for (const k of kinds) {
  console.log(`${k.padEnd(9)} ${String(totals[k]).padStart(5)}   ${Object.keys(targets).map(n => String(score[n][k]).padStart(8)).join('')}`)
}
JS
node "$WORK/score.mjs" "$SUITE" "$WORK/avx.json"
