//! Stamps the git revision into the binary as `AVX_GIT_HASH` (for `avx_build_info`).
//!
//! `AVX_GIT_HASH` from the environment wins (release tarballs have no `.git`); otherwise
//! `git rev-parse --short HEAD`; otherwise "unknown". A missing `git` never fails the build.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=AVX_GIT_HASH");
    let hash = std::env::var("AVX_GIT_HASH")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AVX_GIT_HASH={hash}");
    // Re-stamp after a commit or checkout. Only existing paths are watched: Cargo treats a
    // missing one as always changed, which would rebuild the crate on every build.
    let dirs = [
        git(&["rev-parse", "--git-dir"]).map(|d| format!("{d}/HEAD")),
        git(&["rev-parse", "--git-common-dir"]).map(|d| format!("{d}/refs/heads")),
        git(&["rev-parse", "--git-common-dir"]).map(|d| format!("{d}/packed-refs")),
    ];
    for path in dirs.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
