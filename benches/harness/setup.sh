#!/usr/bin/env bash
# benches/harness/setup.sh - install what benches/harness/run.sh needs (Debian 12). Idempotent.
#   nginx (+ echo module for /slow), haproxy, hey, wrk, h2load (nghttp2-client), curl, taskset,
#   openssl (the h2 scenario's certificate). apt-get through sudo when not root.
#   oha (fixed-rate mode, latency correction) via cargo, bounded to 10 minutes; optional.
set -u
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q nginx libnginx-mod-http-echo haproxy hey wrk nghttp2-client curl \
  openssl util-linux procps iproute2 time
# Debian's packages do not start the system nginx/haproxy in this container (policy-rc.d);
# run.sh never uses them anyway: it starts its own instances with configs from
# benches/harness/conf.
if ! command -v oha >/dev/null && command -v cargo >/dev/null; then
  timeout 600 cargo install oha --locked || echo "oha not installed (optional): --rate falls back to hey -q"
fi
