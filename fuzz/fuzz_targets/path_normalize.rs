//! The path normalizer under every policy: it never panics, and what it returns is a normal
//! path that normalizing again leaves alone.
#![no_main]

use avx_gateway::edge::path::{has_dot_segment, normalize};
use avx_gateway::edge::{EscapedSlashes, PathPolicy, PathSemicolons};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, path)) = data.split_first() else {
        return;
    };
    let policy = PathPolicy {
        normalize: mode & 1 != 0,
        merge_slashes: mode & 2 != 0,
        escaped_slashes: match (mode >> 2) % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Unescape,
        },
        semicolons: if mode & 0x80 != 0 {
            PathSemicolons::Keep
        } else {
            PathSemicolons::Reject
        },
    };
    let Ok(out) = normalize(path, &policy) else {
        return;
    };
    let result: &[u8] = out.as_deref().map_or(path, str::as_bytes);
    assert_eq!(result.first(), Some(&b'/'), "{result:?}");
    assert!(
        !result.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\'),
        "{result:?}"
    );
    if out.is_some() {
        assert!(result.is_ascii(), "{result:?}");
    }
    assert_eq!(
        normalize(result, &policy),
        Ok(None),
        "not a fixed point: {path:?} -> {result:?} under {policy:?}"
    );
    let lower = result.to_ascii_lowercase();
    if policy.normalize {
        assert!(!has_dot_segment(result), "{path:?} -> {result:?}");
        // No escape of an unreserved character, and every escape in upper case.
        for (i, &b) in result.iter().enumerate() {
            if b == b'%' {
                let hex = &result[i + 1..i + 3];
                assert!(!hex.iter().any(u8::is_ascii_lowercase), "{result:?}");
            }
        }
    }
    if policy.merge_slashes {
        assert!(!result.windows(2).any(|w| w == b"//"), "{result:?}");
    }
    if policy.escaped_slashes == EscapedSlashes::Reject {
        assert!(
            !lower.windows(3).any(|w| w == b"%2f" || w == b"%5c"),
            "{result:?}"
        );
    }
    if policy.semicolons == PathSemicolons::Reject {
        assert!(!result.contains(&b';') && !lower.windows(3).any(|w| w == b"%3b"));
    }
});
