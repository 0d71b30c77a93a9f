#!/usr/bin/env bash
# Whole-gateway load tests, side by side with NGINX and HAProxy through the shared harness.
#
#   benches/load.sh [--rounds 5] [--duration 10s] [--tool wrk|hey] [--scenario all|simple|cache|compression]
#
# Builds the release binary and the bare Pingora reference (examples/bare_proxy.rs, built
# unpatched through benches/bare-proxy/Cargo.toml), starts one
# gateway per feature set on its own port, all against the harness's origin (127.0.0.1:19000),
# then runs benches/harness/run.sh with every target so the rounds interleave:
#   gw        AVX defaults: one route, no rate limit, no cache              :18101
#   gw-floor  + rate limit far above the offered load + circuit breaker    :18102
#   gw-log    gw-floor + JSON access log to a file                         :18107
#   gw-cache  + cache (hits)                                               :18103
#   gw-gzip   + gzip level 1, like the NGINX peer                          :18104
#   gw-full   rate limit + breaker + cache + compression + access log      :18105
#   bare      examples/bare_proxy.rs, Pingora defaults                     :18106
# Metrics are always on. gw-floor and gw-log are issue 6's floor targets (<= 1.15x and
# <= 1.3x the bare proxy's CPU per request).
# With AVX_BASELINE_BIN=/path/to/older/avx-gateway, gw-floor-base (:18108) runs that build on
# gw-floor's config, interleaved with the rest, so a change's cost is measured in one run.
# A POST-with-body run (hey -m POST) against gw and nginx follows; results land in
# $BENCH_RESULTS (default /tmp/avx-bench-results). Loopback only; every process it starts is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=${BENCH:-$ROOT/benches/harness}
WORK=$(mktemp -d /tmp/avx-load.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --locked --bin avx-gateway
# The reference is built against Pingora exactly as published (benches/bare-proxy/Cargo.toml).
cargo build --release --locked --manifest-path benches/bare-proxy/Cargo.toml
BARE=$ROOT/benches/bare-proxy/target/release/bare_proxy

config() { # name port extra-route-keys [extra-top-level]
  cat > "$WORK/$1.yaml" <<YAML
server:
  workers: 2
  pid_file: $WORK/$1.pid
  upgrade_sock: $WORK/$1.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
listeners: [{ address: 127.0.0.1:$2 }]
upstreams:
  origin:
    servers: [{ address: 127.0.0.1:19000 }]
    connection_pool: { max_idle: 256 }
$4
routes:
  - name: all
    match: { path_prefix: / }
    upstream: origin
$3
YAML
}

RL="    rate_limit: { requests_per_second: 1000000, burst: 100000, key: client_ip }"
CB="    circuit_breaker: { failure_threshold: 50 }"
config gw 18101 "" ""
config gw-floor 18102 "$RL" "$CB"
config gw-log 18107 "$RL" "$CB
access_log: { enabled: true, path: $WORK/access-floor.log, format: json }"
config gw-cache 18103 "    cache: { enabled: true }" ""
config gw-gzip 18104 "    compression: { enabled: true, level: 1, algorithms: [gzip] }" ""
config gw-full 18105 "$RL
    cache: { enabled: true }
    compression: { enabled: true, level: 1, algorithms: [gzip] }" "$CB
access_log: { enabled: true, path: $WORK/access.log, format: json }"

for name in gw gw-floor gw-log gw-cache gw-gzip gw-full; do
  ./target/release/avx-gateway -t -c "$WORK/$name.yaml" >/dev/null
  RUST_LOG=warn ./target/release/avx-gateway -c "$WORK/$name.yaml" 2>"$WORK/$name.log" &
  PIDS+=($!)
done
RUST_LOG=warn "$BARE" 127.0.0.1:18106 127.0.0.1:19000 2 2>"$WORK/bare.log" &
PIDS+=($!)
PORTS=(18101 18102 18103 18104 18105 18106 18107)
BASELINE=()
if [ -n "${AVX_BASELINE_BIN:-}" ]; then
  config gw-floor-base 18108 "$RL" "$CB"
  RUST_LOG=warn "$AVX_BASELINE_BIN" -c "$WORK/gw-floor-base.yaml" 2>"$WORK/gw-floor-base.log" &
  PIDS+=($!)
  PORTS+=(18108)
  BASELINE=(--target gw-floor-base@simple=http://127.0.0.1:18108)
fi

for port in "${PORTS[@]}"; do
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    sleep 0.1
  done
done

"$BENCH/run.sh" \
  --target gw=http://127.0.0.1:18101 \
  --target gw-floor@simple=http://127.0.0.1:18102 \
  --target gw-log@simple=http://127.0.0.1:18107 \
  --target gw-cache@cache=http://127.0.0.1:18103 \
  --target gw-gzip@compression=http://127.0.0.1:18104 \
  --target gw-full=http://127.0.0.1:18105 \
  --target bare@simple=http://127.0.0.1:18106 \
  "${BASELINE[@]}" \
  --tag avx-load "$@"

# POST with a 4 KiB body: the harness has no POST scenario, so hey runs it directly, gateway
# and NGINX alternately (run.sh has stopped its peers, so start the origin and NGINX again).
if command -v hey >/dev/null && command -v nginx >/dev/null; then
  # The harness's configs name their own pid files under /tmp/bench-run.
  mkdir -p /tmp/bench-run "$WORK/ngx"
  nginx -c "$BENCH/conf/upstream.nginx.conf" -p "$WORK/ngx" -e "$WORK/ngx/up.err"
  nginx -c "$BENCH/conf/proxy.nginx.conf" -p "$WORK/ngx" -e "$WORK/ngx/px.err"
  head -c 4096 /dev/zero | tr '\0' 'x' > "$WORK/body"
  for round in 1 2 3; do
    for t in gw=http://127.0.0.1:18101 nginx=http://127.0.0.1:19001; do
      printf 'POST round %s %-6s ' "$round" "${t%%=*}"
      # Requests/sec plus the status-code distribution, so errors cannot pass for throughput.
      hey -z 5s -c 50 -m POST -D "$WORK/body" -T application/octet-stream "${t#*=}/api/test" \
        | awk '/Requests\/sec/ {printf "req/s %s ", $2} /^  \[[0-9]+\]/ {printf "%s %s ", $1, $2} END {print ""}'
    done
  done
  for f in /tmp/bench-run/upstream.pid /tmp/bench-run/nginx.pid; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
fi
