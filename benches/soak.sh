#!/usr/bin/env bash
# Soak: a flat mixed load for a bounded time while the gateway's RSS is sampled.
#
#   benches/soak.sh [--duration 600] [--warmup 60] [--conns 50]
#
# Starts the harness's origin (NGINX, 127.0.0.1:19000, with its 64 KiB /big file) and one
# gateway with every feature on (rate limit, breaker, cache, gzip, JSON access log, metrics),
# then drives it with wrk (benches/mixed.lua: half proxied, 40% cached over 5,000 keys, 10%
# gzip) for --duration seconds, sampling VmRSS every 5 s. Passes when the RSS at the end is
# within 10% of the RSS after --warmup seconds; prints every sample to the run's log. Not part
# of CI (issue 6). Loopback only; every process it starts is stopped on exit.
set -euo pipefail
DURATION=600
WARMUP=60
CONNS=50
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" soak

cargo build --release --locked --bin avx-gateway
start_origin

cat > "$WORK/soak.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/soak.pid, upgrade_sock: $WORK/soak.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ address: 127.0.0.1:18301 }]
admin: { address: 127.0.0.1:18302 }
access_log: { enabled: true, path: $WORK/access.log, format: json }
upstreams:
  origin:
    servers: [{ address: 127.0.0.1:19000 }]
    connection_pool: { max_idle: 256 }
    circuit_breaker: { failure_threshold: 50 }
routes:
  - name: proxied
    match: { path_prefix: /p/ }
    upstream: origin
    strip_prefix: true
    rate_limit: { requests_per_second: 1000000, burst: 100000 }
  - name: cached
    match: { path_prefix: /c/ }
    upstream: origin
    strip_prefix: true
    cache: { enabled: true }
  - name: compressed
    match: { path_prefix: /z/ }
    upstream: origin
    strip_prefix: true
    compression: { enabled: true, level: 1, algorithms: [gzip] }
YAML
RUST_LOG=warn ./target/release/avx-gateway -c "$WORK/soak.yaml" 2>"$WORK/gateway.log" &
GW=$!
PIDS+=("$GW")
wait_port 18301

rss() { awk '/VmRSS/ {print $2}' "/proc/$GW/status"; }
kill -0 "$GW" 2>/dev/null || { echo "FAIL: the gateway did not start"; cat "$WORK/gateway.log"; exit 1; }
echo "soak: ${DURATION}s, warm-up ${WARMUP}s, $CONNS connections, $(date -u +%FT%TZ), $(nproc) cpus"
echo "idle RSS: $(( $(rss) / 1024 )) MB"
timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" -s benches/mixed.lua \
  http://127.0.0.1:18301 > "$WORK/wrk.txt" &
WRK=$!
START=$(date +%s)
WARM_RSS=""
MAX_RSS=0
while kill -0 "$WRK" 2>/dev/null; do
  sleep 5
  kill -0 "$GW" || { echo "FAIL: the gateway exited"; cat "$WORK/gateway.log"; exit 1; }
  now=$(( $(date +%s) - START ))
  r=$(rss)
  [ "$r" -gt "$MAX_RSS" ] && MAX_RSS=$r
  if [ -z "$WARM_RSS" ] && [ "$now" -ge "$WARMUP" ]; then WARM_RSS=$r; fi
  echo "t=${now}s rss=$((r / 1024))MB"
done
wait "$WRK" || true
END_RSS=$(rss)
cat "$WORK/wrk.txt"
errors=$(curl -s http://127.0.0.1:18302/metrics | awk '/^avx_errors_total/ {s += $2} END {print s + 0}')
echo "avx_errors_total (all kinds): $errors"
[ -n "$WARM_RSS" ] || { echo "FAIL: the run was shorter than the warm-up"; exit 1; }
growth=$(awk -v a="$WARM_RSS" -v b="$END_RSS" 'BEGIN {printf "%.1f", 100 * (b - a) / a}')
echo "RSS after warm-up $((WARM_RSS / 1024)) MB, at the end $((END_RSS / 1024)) MB (${growth}%), peak $((MAX_RSS / 1024)) MB"
if awk -v g="$growth" 'BEGIN {exit !(g <= 10)}'; then
  echo "PASS: growth within 10%"
else
  echo "FAIL: growth above 10%"
  exit 1
fi
