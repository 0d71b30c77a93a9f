#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60) from a copy of its
# committed seed corpus, with cargo-fuzz (libFuzzer) on the stable toolchain (-s none: no
# sanitizer, which would need nightly; the targets assert their own properties). Fails on any
# crash; the crashing input is kept in fuzz/artifacts/TARGET/. See docs/fuzzing.md.
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
bash scripts/setup.sh
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
# The targets build against the same sources and patched Pingora as the gateway, with
# fuzz/Cargo.lock (its own workspace, so the root build never sees it).
cargo fuzz build -s none
declare -A MAX_LEN=([path_normalize]=4096 [target_host]=4096 [config_yaml]=65536)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in path_normalize target_host config_yaml; do
  # libFuzzer writes new inputs into its first corpus directory: give it a scratch copy.
  cp -r "fuzz/corpus/$target" "$work/$target"
  log="$work/$target.log"
  if ! cargo fuzz run -s none "$target" "$work/$target" -- \
      -max_total_time="$SECONDS_EACH" -max_len="${MAX_LEN[$target]}" -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
  echo "fuzz: $target ok: $execs runs in ${SECONDS_EACH}s, $cov, corpus $(find "$work/$target" -type f | wc -l)"
done
