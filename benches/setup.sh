#!/usr/bin/env bash
# Installs what the measurement scripts in benches/ need on a fresh Debian machine: the
# side-by-side harness's peers and load generators (benches/harness/setup.sh), valgrind for
# callgrind.sh, redis-server for ratelimit-load.sh, strace for the system-call counts in
# docs/performance.md. Idempotent; apt-get through sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benches/harness/setup.sh
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q valgrind redis-server strace python3
