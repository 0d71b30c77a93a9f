#!/usr/bin/env bash
# Installs the system packages the build needs (cmake for zlib-ng, a C toolchain for zstd and
# ring). Idempotent; uses sudo when not root.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# promtool (from Debian's `prometheus` package) checks the /metrics exposition in the tests.
# Only that binary is unpacked, into target/tools: installing the package would also add a
# system user and, where no policy-rc.d stops it, start a Prometheus server on :9090.
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v promtool >/dev/null && [ ! -x "$root/target/tools/promtool" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  tmp="$(mktemp -d)"
  fetch() { (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); }
  fetch || { $SUDO apt-get update -qq && fetch; }
  mkdir -p "$root/target/tools"
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb |
    tar -xO ./usr/bin/promtool >"$root/target/tools/promtool.part"
  chmod +x "$root/target/tools/promtool.part"
  mv "$root/target/tools/promtool.part" "$root/target/tools/promtool"
  rm -rf "$tmp"
fi

# redis-server for the cluster rate-limit tests (tests/it/harness/redis.rs starts its own on a
# free port, without persistence). The package's service is never started: a policy-rc.d
# that denies starts is in place for the install when the machine has none of its own.
if ! command -v redis-server >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    own_policy=1
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  install_redis() { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null; }
  install_redis || { $SUDO apt-get update -qq && install_redis; }
  [ -z "$own_policy" ] || { $SUDO rm -f "$policy"; trap - EXIT; }
fi
