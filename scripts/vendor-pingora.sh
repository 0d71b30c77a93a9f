#!/usr/bin/env bash
# Rebuilds vendor/<crate> from the published .crate plus the patch series in patches/<crate>/,
# or, with --check, proves that vendor/ is exactly that (CI runs the check).
#
#   scripts/vendor-pingora.sh           rebuild every vendored crate in place
#   scripts/vendor-pingora.sh --check   rebuild into a temporary folder and diff against vendor/
#   scripts/vendor-pingora.sh --test    run each vendored crate's own unit tests (the patches'
#                                       tests among them), locked by patches/<crate>/Cargo.lock
#
# patches/<crate>/SOURCE holds `<version> <sha256>`: the checksum crates.io's index records for
# that .crate (Cargo.lock cannot hold it: a [patch.crates-io] path source has no checksum).
# patches/<crate>/series lists the patches in the order they apply; each patch is a `git diff`
# with a header (what, why, measured effect, upstream issue, tests, when to drop it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mode=${1:-rebuild}
case "$mode" in rebuild | --check | --test) ;; *)
  echo "usage: $0 [--check | --test]" >&2
  exit 2
  ;;
esac

if [ "$mode" = --test ]; then
  for dir in patches/*/; do
    crate=$(basename "$dir")
    # The crate's dev-dependencies are outside the workspace's lock, so they have their own.
    cp "patches/$crate/Cargo.lock" "vendor/$crate/Cargo.lock"
    skip=()
    if [ -f "patches/$crate/skip-tests" ]; then
      while read -r t || [ -n "$t" ]; do
        case "$t" in '' | '#'*) continue ;; esac
        skip+=(--skip "$t")
      done <"patches/$crate/skip-tests"
    fi
    # With the features the gateway builds it with (test-features), so its TLS code is tested.
    features=$(cat "patches/$crate/test-features" 2>/dev/null || true)
    (cd "vendor/$crate" && CARGO_TARGET_DIR="$ROOT/target/vendor" \
      cargo test --locked --lib --features "$features" -- --exact "${skip[@]}")
  done
  exit 0
fi

WORK=$(mktemp -d /tmp/avx-vendor.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# fetch CRATE VERSION SHA256 -> path of the verified .crate
fetch() {
  local crate=$1 version=$2 sum=$3 file
  file=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "$crate-$version.crate" 2>/dev/null | head -1)
  if [ -z "$file" ]; then
    file="$WORK/$crate-$version.crate"
    if ! curl -sSfL --retry 3 -o "$file" "https://static.crates.io/crates/$crate/$crate-$version.crate"; then
      echo "downloading $crate $version from static.crates.io failed" >&2
      exit 1
    fi
  fi
  if ! echo "$sum  $file" | sha256sum -c --quiet - >&2; then
    echo "$file: checksum differs from patches/$crate/SOURCE" >&2
    exit 1
  fi
  echo "$file"
}

# build CRATE DEST: the published crate, trimmed, with the series applied, in DEST.
build() {
  local crate=$1 dest=$2 version sum file p
  read -r version sum <"patches/$crate/SOURCE"
  file=$(fetch "$crate" "$version" "$sum")
  mkdir -p "$dest"
  tar xzf "$file" -C "$dest" --strip-components=1
  # Not built by the gateway; 0000-*.patch removes their Cargo.toml tables.
  rm -rf "$dest/examples" "$dest/benches" "$dest/Cargo.lock" "$dest/Cargo.toml.orig" \
    "$dest/.cargo_vcs_info.json"
  # A repository of its own, so git apply patches exactly this tree (outside one, or with
  # GIT_DIR set, it could skip paths and still succeed).
  git -C "$dest" init -q
  while read -r p || [ -n "$p" ]; do
    case "$p" in '' | '#'*) continue ;; esac
    if ! env -u GIT_DIR -u GIT_WORK_TREE git -C "$dest" apply --whitespace=nowarn \
      "$ROOT/patches/$crate/$p"; then
      echo "patches/$crate/$p does not apply" >&2
      exit 1
    fi
  done <"patches/$crate/series"
  rm -rf "$dest/.git"
}

status=0
for dir in patches/*/; do
  crate=$(basename "$dir")
  build "$crate" "$WORK/$crate"
  if [ "$mode" = --check ]; then
    # Cargo.lock and target/ appear when the crate's own tests run; neither is committed.
    if ! diff -r -x Cargo.lock -x target "$WORK/$crate" "vendor/$crate"; then
      echo "vendor/$crate differs from its published sources plus patches/$crate/series" >&2
      status=1
    else
      echo "vendor/$crate: published $crate $(cut -d' ' -f1 "patches/$crate/SOURCE") plus $(grep -c '^[0-9]' "patches/$crate/series") patches"
    fi
  else
    rm -rf "vendor/$crate"
    cp -a "$WORK/$crate" "vendor/$crate"
    echo "vendor/$crate rebuilt"
  fi
done
exit $status
