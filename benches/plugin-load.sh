#!/usr/bin/env bash
# What a route's plugins cost per request under load: one gateway (2 workers, release build)
# with two routes to the harness's origin, measured in interleaved rounds with wrk:
#   plain    no plugins                                            (Host: plain.bench)
#   plugins  cors + jwt (HS256, valid token) + request_headers     (Host: plugins.bench)
# Every request of the plugins run carries an Origin and a valid bearer token. CPU per request
# is the gateway process's user+system time over the run (from /proc) divided by the requests
# wrk completed.
#
#   benches/plugin-load.sh [--rounds 5] [--duration 10s] [--connections 50]
#
# Needs nginx and wrk (benches/setup.sh installs both). Loopback only.
set -euo pipefail
ROUNDS=5
DUR=10s
CONNS=50
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" plugin-load

[ -n "${AVX_GW_BIN:-}" ] || cargo build --release --locked --bin avx-gateway
GW_BIN=${AVX_GW_BIN:-./target/release/avx-gateway}
start_origin

SECRET="plugin-load-bench-secret-32-bytes!"
TOKEN=$(hs256_token "$SECRET")
cat > "$WORK/gw.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/gw.pid, upgrade_sock: $WORK/gw.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ address: 127.0.0.1:18120 }]
upstreams:
  origin: { servers: [{ address: 127.0.0.1:19000 }], connection_pool: { max_idle: 256 } }
routes:
  - name: plugins
    match: { host: plugins.bench }
    upstream: origin
    plugins:
      - cors: { allow_origins: ["https://app.example.com"], allow_credentials: true }
      - jwt: { keys: [{ alg: HS256, secret: "$SECRET" }], forward_claims: { sub: x-user-id } }
      - request_headers: { set: { x-client: "\$client_ip", x-env: bench } }
  - name: plain
    match: { path_prefix: / }
    upstream: origin
YAML
RUST_LOG=warn "$GW_BIN" -c "$WORK/gw.yaml" 2>"$WORK/gw.log" &
GW=$!
PIDS+=("$GW")
URL=http://127.0.0.1:18120/api/test
wait_200 "$URL" -H "Host: plain.bench"
wait_200 "$URL" -H "Host: plugins.bench" -H "Authorization: Bearer $TOKEN" \
  -H "Origin: https://app.example.com"

run() { # name wrk-args... -> "name req/s cpu_us_per_request"
  local name=$1
  shift
  local before after out reqs rps
  before=$(cpu_ticks "$GW")
  out=$(wrk -t2 -c"$CONNS" -d"$DUR" "$@" "$URL")
  after=$(cpu_ticks "$GW")
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$name: non-2xx answers:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk -v n="$name" -v rps="$rps" -v reqs="$reqs" -v t=$((after - before)) -v us="$TICK_US" \
    'BEGIN { printf "%s %.0f %.2f\n", n, rps, t * us / reqs }'
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, wrk -t2 -c$CONNS -d$DUR, $ROUNDS interleaved rounds"
printf '%-6s %-8s %10s %14s\n' round target req/s cpu_us/req
RES=$WORK/results
for r in $(seq "$ROUNDS"); do
  for t in plain plugins; do
    if [ "$t" = plain ]; then
      line=$(run plain -H "Host: plain.bench")
    else
      line=$(run plugins -H "Host: plugins.bench" -H "Authorization: Bearer $TOKEN" \
        -H "Origin: https://app.example.com")
    fi
    echo "$r $line" >>"$RES"
    read -r name rps cpu <<<"$line"
    printf '%-6s %-8s %10s %14s\n' "$r" "$name" "$rps" "$cpu"
  done
done
python3 - "$RES" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r, name, rps, cpu in rows:
    by.setdefault(int(r), {})[name] = (float(rps), float(cpu))
cpu_ratio = [v["plugins"][1] / v["plain"][1] for v in by.values()]
rps_ratio = [v["plugins"][0] / v["plain"][0] for v in by.values()]
extra = [v["plugins"][1] - v["plain"][1] for v in by.values()]
med = statistics.median
print(f"median per-round ratio plugins/plain: cpu/request {med(cpu_ratio):.2f} "
      f"(range {min(cpu_ratio):.2f}-{max(cpu_ratio):.2f}), req/s {med(rps_ratio):.2f}")
print(f"median extra cpu per request: {med(extra):.2f} us")
PY
