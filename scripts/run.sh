#!/usr/bin/env bash
# Installs what the build needs, builds the release binary and starts the gateway on the
# shipped config (or on the config given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
conf="${1:-conf/gateway.yaml}"
cargo build --release --locked
exec ./target/release/avx-gateway -c "$conf"
