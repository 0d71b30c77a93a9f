#!/usr/bin/env bash
# The whole test suite: unit tests, then integration tests against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The examples are binaries built on the library; tests/it/plugins runs examples/custom_plugin.
cargo build --locked --examples
# No doc tests: the crate has none, and an empty last runner would end the log on "0 passed".
cargo test --locked --lib --bins --tests "$@" 2>&1 | tee "$log"
# The patched Pingora crates' own unit tests (the patches' tests among them); not when the
# arguments pick tests of ours.
if [ $# -eq 0 ]; then
  bash scripts/vendor-pingora.sh --test 2>&1 | tee -a "$log"
fi
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
