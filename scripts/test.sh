#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests against the real binary, doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --locked "$@"
