# Shared scaffolding of the measurement scripts in benches/ (sourced, not run).
#
# After `. benches/common.sh NAME`: the working directory is the repository, $ROOT and $BENCH
# (the side-by-side harness, benches/harness) are set, $WORK is a fresh temporary folder, and every
# PID added to PIDS is killed when the script exits, before $WORK is removed. A script may set
# KEEP_HOOK to a function that runs just before that removal.
# shellcheck shell=bash

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
BENCH=${BENCH:-$ROOT/benches/harness}
WORK=$(mktemp -d "/tmp/avx-$1.XXXXXX")
PIDS=()
KEEP_HOOK=""
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$KEEP_HOOK" ]; then "$KEEP_HOOK"; fi
  rm -rf "$WORK"
}
trap bench_cleanup EXIT

# cpu_ticks PID: user + system CPU of PID so far, in clock ticks; TICK_US is one tick in µs.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# shellcheck disable=SC2034 # read by the scripts that source this file
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# wait_port PORT: until something accepts connections on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  exit 1
}

# wait_200 URL [CURL_ARGS...]: until URL answers 200 (60 s at most: a proxy under valgrind
# starts slowly).
wait_200() {
  local url=$1
  shift
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")" = 200 ] && return 0
    sleep 0.2
  done
  echo "no 200 from $url" >&2
  exit 1
}

# hs256_token SECRET: an HS256 JWT for `sub: bench`, valid for a day (standard library only).
hs256_token() {
  python3 - "$1" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=")
head = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
sig = b(hmac.new(sys.argv[1].encode(), head + b"." + body, hashlib.sha256).digest())
print((head + b"." + body + b"." + sig).decode())
PY
}

# start_origin: the harness's origin (NGINX, 1 worker, 127.0.0.1:19000) with its 64 KiB /big
# body; the harness's configs keep their runtime files under /tmp/bench-run.
start_origin() {
  mkdir -p /tmp/bench-run/www /tmp/bench-run/upstream-tmp /tmp/bench-run/nginx-tmp
  python3 "$BENCH/lib.py" genbig /tmp/bench-run/www/big.json
  nginx -c "$BENCH/conf/upstream.nginx.conf" -p "$WORK" -e "$WORK/origin.err" -g 'daemon off;' &
  PIDS+=($!)
  wait_200 http://127.0.0.1:19000/api/test
}

# start_simple_pair GW_PORT BARE_PORT [ROUTE_KEYS]: the gateway with its defaults (one route,
# one upstream: the origin; ROUTE_KEYS is YAML added to the route, such as
# "cache: { enabled: true }") and the bare Pingora reference, 2 workers each; sets $GW and
# $BARE to their PIDs.
start_simple_pair() {
  cat > "$WORK/gw.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/gw.pid, upgrade_sock: $WORK/gw.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ address: 127.0.0.1:$1 }]
upstreams:
  origin: { servers: [{ address: 127.0.0.1:19000 }], connection_pool: { max_idle: 256 } }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: origin
    ${3:-}
YAML
  RUST_LOG=warn ./target/release/avx-gateway -c "$WORK/gw.yaml" 2>"$WORK/gw.log" &
  GW=$!
  PIDS+=("$GW")
  RUST_LOG=warn benches/bare-proxy/target/release/bare_proxy "127.0.0.1:$2" 127.0.0.1:19000 2 \
    2>"$WORK/bare.log" &
  BARE=$!
  PIDS+=("$BARE")
}
