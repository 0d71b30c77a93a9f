#!/usr/bin/env bash
# What a cluster-wide rate limit costs per request next to the local one: one gateway (2
# workers, release build) with two routes to the harness's origin, both limited far above the
# load so every request is admitted and checked, measured in interleaved rounds with wrk:
#   local    rate_limit scope: local    (Host: local.bench)
#   cluster  rate_limit scope: cluster  (Host: cluster.bench), on a redis-server on loopback
# Each request comes from the same client IP, so one key is checked per request (the worst
# case for Redis: no spread). CPU per request is the gateway's user+system time over the run
# (from /proc) divided by the requests wrk completed; the redis-server's own CPU per request
# is reported beside it, because in a fleet that cost is paid too.
#
#   benches/ratelimit-load.sh [--rounds 5] [--duration 10s] [--connections 50]
#
# Needs nginx, wrk and redis-server (benches/setup.sh installs them). Loopback only.
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
. "$(dirname "$0")/common.sh" ratelimit-load

[ -n "${AVX_GW_BIN:-}" ] || cargo build --release --locked --bin avx-gateway
GW_BIN=${AVX_GW_BIN:-./target/release/avx-gateway}
start_origin

REDIS_PORT=18130
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --logfile "$WORK/redis.log" &
REDIS=$!
PIDS+=("$REDIS")
for _ in $(seq 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.05
done

cat > "$WORK/gw.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/gw.pid, upgrade_sock: $WORK/gw.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ address: 127.0.0.1:18131 }]
redis: { url: "redis://127.0.0.1:$REDIS_PORT/0", pool_size: 8, timeout_ms: 20 }
upstreams:
  origin: { servers: [{ address: 127.0.0.1:19000 }], connection_pool: { max_idle: 256 } }
routes:
  - name: cluster
    match: { host: cluster.bench }
    upstream: origin
    rate_limit: { requests_per_second: 1000000, burst: 100000, key: client_ip, scope: cluster }
  - name: local
    match: { path_prefix: / }
    upstream: origin
    rate_limit: { requests_per_second: 1000000, burst: 100000, key: client_ip }
YAML
RUST_LOG=warn "$GW_BIN" -c "$WORK/gw.yaml" 2>"$WORK/gw.log" &
GW=$!
PIDS+=("$GW")
URL=http://127.0.0.1:18131/api/test
wait_200 "$URL" -H "Host: local.bench"
wait_200 "$URL" -H "Host: cluster.bench"


run() { # name host -> "name req/s gw_cpu_us_per_request redis_cpu_us_per_request"
  local name=$1 host=$2
  local before after rbefore rafter out reqs rps
  before=$(cpu_ticks "$GW")
  rbefore=$(cpu_ticks "$REDIS")
  out=$(wrk -t2 -c"$CONNS" -d"$DUR" -H "Host: $host" "$URL")
  after=$(cpu_ticks "$GW")
  rafter=$(cpu_ticks "$REDIS")
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$name: non-2xx answers:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk -v n="$name" -v rps="$rps" -v reqs="$reqs" -v t=$((after - before)) \
    -v rt=$((rafter - rbefore)) -v us="$TICK_US" \
    'BEGIN { printf "%s %.0f %.2f %.2f\n", n, rps, t * us / reqs, rt * us / reqs }'
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, wrk -t2 -c$CONNS -d$DUR, $ROUNDS interleaved rounds"
printf '%-6s %-8s %10s %14s %16s\n' round target req/s gw_cpu_us/req redis_cpu_us/req
RES=$WORK/results
for r in $(seq "$ROUNDS"); do
  for t in local cluster; do
    line=$(run "$t" "$t.bench")
    echo "$r $line" >>"$RES"
    read -r name rps cpu rcpu <<<"$line"
    printf '%-6s %-8s %10s %14s %16s\n' "$r" "$name" "$rps" "$cpu" "$rcpu"
  done
done
python3 - "$RES" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r, name, rps, cpu, rcpu in rows:
    by.setdefault(int(r), {})[name] = (float(rps), float(cpu), float(rcpu))
med = statistics.median
cpu_ratio = [v["cluster"][1] / v["local"][1] for v in by.values()]
rps_ratio = [v["cluster"][0] / v["local"][0] for v in by.values()]
extra = [v["cluster"][1] - v["local"][1] for v in by.values()]
redis = [v["cluster"][2] for v in by.values()]
print(f"median per-round ratio cluster/local: gateway cpu/request {med(cpu_ratio):.2f} "
      f"(range {min(cpu_ratio):.2f}-{max(cpu_ratio):.2f}), req/s {med(rps_ratio):.2f}")
print(f"median extra gateway cpu per request: {med(extra):.2f} us; "
      f"redis-server cpu per request: {med(redis):.2f} us")
PY
