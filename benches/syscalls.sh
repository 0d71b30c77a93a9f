#!/usr/bin/env bash
# System calls per proxied request, by call, for the gateway and NGINX (and a second gateway
# build with AVX_BASELINE_BIN): strace -c attached to every thread of each proxy while hey
# sends a fixed number of small keep-alive requests through it to the harness's origin.
# strace slows what it traces, so these are counts, not timings; they include the second of
# idle wait before hey starts (a handful of timer and epoll calls).
#
#   benches/syscalls.sh [--requests 20000] [--connections 10]
#
# AVX_GW_BIN (default: target/release/avx-gateway, built) and AVX_BASELINE_BIN pick the
# binaries. Needs nginx, hey and strace (benches/setup.sh installs them). Loopback only.
set -euo pipefail
REQUESTS=20000
CONNS=10
while [ $# -gt 0 ]; do
  case $1 in
    --requests) REQUESTS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" syscalls

[ -n "${AVX_GW_BIN:-}" ] || cargo build --release --locked --bin avx-gateway
GW_BIN=${AVX_GW_BIN:-./target/release/avx-gateway}
start_origin

# gateway NAME BIN PORT: the gateway's defaults (one route, the origin), 2 workers.
gateway() {
  cat >"$WORK/$1.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/$1.pid, upgrade_sock: $WORK/$1.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ address: 127.0.0.1:$3 }]
upstreams:
  origin: { servers: [{ address: 127.0.0.1:19000 }], connection_pool: { max_idle: 256 } }
routes:
  - { name: all, match: { path_prefix: / }, upstream: origin }
YAML
  RUST_LOG=warn "$2" -c "$WORK/$1.yaml" 2>"$WORK/$1.log" &
  PIDS+=($!)
  eval "PID_$1=$!"
}
gateway gw "$GW_BIN" 18160
targets=("gw 18160")
if [ -n "${AVX_BASELINE_BIN:-}" ]; then
  gateway base "$AVX_BASELINE_BIN" 18161
  targets+=("base 18161")
fi
mkdir -p /tmp/bench-run/nginx-tmp
nginx -c "$BENCH/conf/proxy.nginx.conf" -p "$WORK" -e "$WORK/px.err" -g 'daemon off;' &
PIDS+=($!)
# shellcheck disable=SC2034 # read through eval in threads()
PID_nginx=$!
targets+=("nginx 19001")
for t in "${targets[@]}"; do wait_200 "http://127.0.0.1:${t#* }/api/test"; done

# tracees NAME: the processes to trace for proxy NAME (NGINX: its workers), comma-separated;
# `strace -f -p` follows every thread of each.
tracees() {
  local pid
  pid=$(eval "echo \$PID_$1")
  if [ "$1" = nginx ]; then pgrep -P "$pid" | paste -sd,; else echo "$pid"; fi
}

echo "hey, $REQUESTS requests over $CONNS keep-alive connections per target, $(date -u '+%F %H:%M UTC')"
for t in "${targets[@]}"; do
  name=${t% *}
  port=${t#* }
  strace -c -q -f -p "$(tracees "$name")" -o "$WORK/$name.strace" &
  tracer=$!
  sleep 1 # strace attaches asynchronously; nothing is sent before it has
  out=$(hey -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$port/api/test")
  done_reqs=$(awk '/\[200\]/ { print $2 }' <<<"$out")
  kill -INT "$tracer"
  wait "$tracer" 2>/dev/null || true
  if [ "${done_reqs:-0}" != "$REQUESTS" ]; then
    echo "$name: $done_reqs of $REQUESTS requests got a 200" >&2
    grep -A8 "Status code distribution" <<<"$out" >&2 || true
    exit 1
  fi
  echo "== $name: $done_reqs requests"
  awk -v n="$done_reqs" '
    $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
      calls = $4; name = $NF
      printf "  %-16s %8.3f per request\n", name, calls / n; total += calls
    }
    END { printf "  %-16s %8.3f per request\n", "all", total / n }' "$WORK/$name.strace"
done
