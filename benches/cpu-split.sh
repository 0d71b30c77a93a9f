#!/usr/bin/env bash
# User and kernel CPU per request of the simple proxy: the gateway, bare Pingora and NGINX.
#
#   benches/cpu-split.sh [--duration 8] [--rounds 3] [--cache]
#
# The same origin and wrk (1 thread, 50 connections) against each proxy in turn, rounds
# interleaved; utime and stime of the proxy's processes come from /proc/PID/stat before and
# after each run. With --cache every request is a cache hit: the gateway with its route
# caching, NGINX's proxy_cache and HAProxy's in-memory cache (the harness's configs).
# Loopback only; every process it starts is stopped on exit.
set -euo pipefail
DURATION=8
ROUNDS=3
CACHE=""
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --cache) CACHE=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" cpu-split

cargo build --release --locked --bin avx-gateway
cargo build --release --locked --manifest-path benches/bare-proxy/Cargo.toml
start_origin
nginx -c "$BENCH/conf/proxy.nginx.conf" -p "$WORK" -e "$WORK/px.err" -g 'daemon off;' &
NGINX=$!
PIDS+=("$NGINX")
TARGETS="gw bare nginx"
if [ -n "$CACHE" ]; then
  # The route caches; the origin sends max-age=60, so every request after the first is a hit.
  start_simple_pair 18801 18802 "cache: { enabled: true }"
  haproxy -db -f "$BENCH/conf/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  HAPROXY=$!
  PIDS+=("$HAPROXY")
  TARGETS="gw nginx haproxy"
else
  start_simple_pair 18801 18802
fi

ticks() { # pids... -> "utime stime" summed over the processes and their children's threads
  local u=0 s=0
  for p in "$@"; do
    read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat")
    u=$((u + pu)); s=$((s + ps))
  done
  echo "$u $s"
}
group() { # name -> pids (NGINX: master and workers)
  case $1 in
    gw) echo "$GW" ;;
    bare) echo "$BARE" ;;
    nginx) echo "$NGINX $(pgrep -P "$NGINX" | tr '\n' ' ')" ;;
    haproxy) echo "$HAPROXY" ;;
  esac
}
port() {
  case $1 in
    gw) echo 18801 ;;
    bare) echo 18802 ;;
    nginx) if [ -n "$CACHE" ]; then echo 19002; else echo 19001; fi ;;
    haproxy) echo 19005 ;;
  esac
}
for t in $TARGETS; do wait_200 "http://127.0.0.1:$(port "$t")/api/test"; done

HZ=$(getconf CLK_TCK)
LABEL="simple proxy"
if [ -n "$CACHE" ]; then LABEL="cache hits"; fi
echo "$LABEL, wrk -t1 -c50 -d${DURATION}s, $ROUNDS rounds, $(date -u +%FT%TZ), $(nproc) cpus"
printf '%-6s %6s %9s %9s %9s %9s\n' target round req/s user_us sys_us total_us
for round in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    # shellcheck disable=SC2046
    read -r u0 s0 < <(ticks $(group "$t"))
    out=$(wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$(port "$t")/api/test")
    # shellcheck disable=SC2046
    read -r u1 s1 < <(ticks $(group "$t"))
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    awk -v t="$t" -v r="$round" -v n="$reqs" -v d="$DURATION" -v hz="$HZ" \
      -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN {
        printf "%-6s %6d %9.0f %9.1f %9.1f %9.1f\n", t, r, n / d, u / hz * 1e6 / n, s / hz * 1e6 / n, (u + s) / hz * 1e6 / n }'
  done
done
