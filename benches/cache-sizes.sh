#!/usr/bin/env bash
# Cache hit rate and latency by cache size, the seed's "cache size" table, re-measured.
#
#   benches/cache-sizes.sh [--keys 100000] [--duration 15s] [--sizes "1000 10000 100000"]
#
# Starts the harness's origin (NGINX, 127.0.0.1:19000) and, for each size, a caching gateway
# with `cache.max_size` = size. wrk (1 thread, 50 connections) requests /api/test?k=N with N
# drawn from a Zipf(1.0) distribution over --keys keys (benches/zipf.lua), so a few keys are
# hot and most are cold, as in real traffic. Hit rate = hits / (hits + misses) from the
# gateway's /metrics; the same run against the gateway without a cache is the baseline for
# "latency improvement". Also printed: the entries stored and what they weigh against
# `cache.max_bytes` (avx_cache_bytes), beside the peak RSS. Loopback only; every process it
# starts is stopped on exit.
set -euo pipefail
KEYS=100000
DURATION=15s
SIZES="1000 10000 100000"
while [ $# -gt 0 ]; do
  case $1 in
    --keys) KEYS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" cache-sizes

cargo build --release --locked --bin avx-gateway
start_origin

metric() { # admin-port name
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'
}

run() { # label max_size(0 = no cache)
  local label=$1 size=$2 cache=""
  [ "$size" -gt 0 ] && cache="    cache: { enabled: true }"
  cat > "$WORK/$label.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/$label.pid, upgrade_sock: $WORK/$label.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ address: 127.0.0.1:18201 }]
admin: { address: 127.0.0.1:18202 }
upstreams:
  origin: { servers: [{ address: 127.0.0.1:19000 }], connection_pool: { max_idle: 256 } }
cache: { max_size: $((size > 0 ? size : 1)), max_bytes: 4294967296 }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: origin
$cache
YAML
  RUST_LOG=warn ./target/release/avx-gateway -c "$WORK/$label.yaml" 2>"$WORK/$label.log" &
  local pid=$!
  wait_port 18201
  KEYS=$KEYS wrk -t1 -c50 -d"$DURATION" --latency -s benches/zipf.lua \
    http://127.0.0.1:18201/api/test > "$WORK/$label.wrk"
  local hits misses entries bytes rss
  hits=$(metric 18202 avx_cache_hits_total); misses=$(metric 18202 avx_cache_misses_total)
  entries=$(metric 18202 avx_cache_entries); bytes=$(metric 18202 avx_cache_bytes)
  rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v label="$label" -v hits="${hits:-0}" -v misses="${misses:-0}" -v rss="$rss" \
    -v entries="${entries:-0}" -v bytes="${bytes:-0}" '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    END {
      total = hits + misses
      rate = total > 0 ? sprintf("%.1f%%", 100 * hits / total) : "-"
      printf "%-12s %10s req/s  p50 %8s  p99 %8s  hit rate %7s  peak RSS %4s MB  entries %6d  weighed %4d MB\n", label, rps, p50, p99, rate, rss, entries, bytes / 1048576
    }' "$WORK/$label.wrk"
}

echo "cache sizes: $KEYS keys, Zipf(1.0), wrk -t1 -c50 -d$DURATION, $(date -u +%FT%TZ), $(nproc) cpus"
run no-cache 0
for s in $SIZES; do run "max_size=$s" "$s"; done
