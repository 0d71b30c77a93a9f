#!/usr/bin/env bash
# HTTP/2 over TLS with multiplexed streams, AVX against NGINX, side by side: h2load against
# each proxy's TLS listener (ALPN h2, one self-signed certificate for both), the harness's
# NGINX origin behind both over HTTP/1.1 keep-alive. Rounds are interleaved, the order rotated
# each round. CPU per request is each proxy's user+system time over the run (from /proc; all
# NGINX worker processes summed) divided by the requests h2load completed.
#
#   benches/h2load.sh [--rounds 5] [--requests 200000] [--clients 10] [--streams 10]
#
# h2load runs one client thread and the origin one NGINX worker, so NGINX's req/s may be held
# back by them; the CPU per request is each proxy's own and does not depend on that.
# Needs nginx, h2load and openssl (benches/setup.sh installs them). Loopback only.
set -euo pipefail
ROUNDS=5
REQUESTS=200000
CLIENTS=10
STREAMS=10
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" h2load

[ -n "${AVX_GW_BIN:-}" ] || cargo build --release --locked --bin avx-gateway
GW_BIN=${AVX_GW_BIN:-./target/release/avx-gateway}
start_origin

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

cat >"$WORK/gw.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/gw.pid, upgrade_sock: $WORK/gw.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners:
  - address: 127.0.0.1:18150
    tls: { cert: $WORK/cert.pem, key: $WORK/key.pem, h2: true }
upstreams:
  origin: { servers: [{ address: 127.0.0.1:19000 }], connection_pool: { max_idle: 256 } }
routes:
  - { name: all, match: { path_prefix: / }, upstream: origin }
YAML
RUST_LOG=warn "$GW_BIN" -c "$WORK/gw.yaml" 2>"$WORK/gw.log" &
GW=$!
PIDS+=("$GW")

# NGINX as the harness's proxy peer runs it (2 workers, upstream keep-alive), with h2 over TLS.
mkdir -p "$WORK/ngx"
cat >"$WORK/ngx/nginx.conf" <<NGX
worker_processes 2;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/ngx/body;
    proxy_temp_path $WORK/ngx/proxy;
    upstream origin { server 127.0.0.1:19000; keepalive 128; keepalive_requests 1000000; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {
        listen 127.0.0.1:18151 ssl http2 reuseport;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        location / { proxy_pass http://origin; }
    }
}
NGX
nginx -c "$WORK/ngx/nginx.conf" -p "$WORK/ngx" -e "$WORK/ngx/error.log" -g 'daemon off;' &
NGX=$!
PIDS+=("$NGX")

wait_200 https://127.0.0.1:18150/api/test -k --http2
wait_200 https://127.0.0.1:18151/api/test -k --http2
NGX_PIDS=$(pgrep -P "$NGX" | paste -sd' ')

# ticks PIDS...: their summed user+system CPU in clock ticks.
ticks() {
  local t=0 p
  for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done
  echo "$t"
}

run() { # name port pids... -> "name req/s cpu_us_per_request"
  local name=$1 port=$2
  shift 2
  local before after out reqs rps
  before=$(ticks "$@")
  out=$(h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" "https://127.0.0.1:$port/api/test")
  after=$(ticks "$@")
  reqs=$(awk '/^status codes:/ { print $3 }' <<<"$out")
  rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
  if ! grep -q " $REQUESTS succeeded" <<<"$out"; then
    echo "$name: not every request succeeded:" >&2
    grep -E "^requests:|^status codes:" <<<"$out" >&2
    exit 1
  fi
  awk -v n="$name" -v rps="$rps" -v reqs="$reqs" -v t=$((after - before)) -v us="$TICK_US" \
    'BEGIN { printf "%s %.0f %.1f\n", n, rps, t * us / reqs }'
}

echo "h2load -n $REQUESTS -c $CLIENTS -m $STREAMS, $ROUNDS rounds, $(date -u '+%F %H:%M UTC')"
results=()
for r in $(seq "$ROUNDS"); do
  # One assignment per run: a failed run must stop the script (set -e), which it would not
  # inside a compound array assignment.
  if [ $((r % 2)) = 1 ]; then
    a=$(run gw 18150 "$GW")
    # shellcheck disable=SC2086 # one PID per word
    b=$(run nginx 18151 $NGX_PIDS)
  else
    # shellcheck disable=SC2086
    a=$(run nginx 18151 $NGX_PIDS)
    b=$(run gw 18150 "$GW")
  fi
  results+=("$r $a" "$r $b")
done
# One line per round, then the medians of the per-round ratios (mawk has no asort).
printf '%s\n' "${results[@]}" | awk '
  { rps[$1, $2] = $3; cpu[$1, $2] = $4; rounds[$1] = 1 }
  END {
    for (r in rounds)
      printf "%s %.0f %.0f %.1f %.1f %.3f %.3f\n", r, rps[r, "gw"], rps[r, "nginx"],
        cpu[r, "gw"], cpu[r, "nginx"], rps[r, "gw"] / rps[r, "nginx"], cpu[r, "gw"] / cpu[r, "nginx"]
  }' | sort -n >"$WORK/rounds"
printf "%-6s %10s %10s %12s %12s %8s %8s\n" round "gw req/s" "ngx req/s" "gw us/req" \
  "ngx us/req" "rps x" "cpu x"
awk '{ printf "%-6s %10s %10s %12s %12s %8.2f %8.2f\n", $1, $2, $3, $4, $5, $6, $7 }' "$WORK/rounds"
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "median gw/nginx: req/s $(cut -d' ' -f6 "$WORK/rounds" | median)," \
  "CPU per request $(cut -d' ' -f7 "$WORK/rounds" | median)"
