//! Path normalization (RFC 3986 §6.2.2 and §5.2.4), applied once before routing so that route
//! matching, `strip_prefix`, the cache key and the upstream request all see the same path.
//!
//! The model is Envoy's `normalize_path` + `merge_slashes` + `path_with_escaped_slashes_action`,
//! with `;` handled explicitly because Tomcat and Spring read `/admin;x` as `/admin`.

use std::fmt;

/// What to do with `%2F` and `%5C` (an encoded `/` or `\`) in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Refuse the request (400).
    #[default]
    Reject,
    /// Keep them encoded (as `%2F` / `%5C`); they never separate segments.
    Keep,
    /// Decode them to `/` before the other steps, so they separate segments.
    Unescape,
}

/// What to do with `;` (matrix parameters) in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathSemicolons {
    /// Refuse the request (400).
    #[default]
    Reject,
    /// Keep them as ordinary path bytes.
    Keep,
}

/// The path rules of `server:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// Decode unreserved escapes, uppercase the others, remove dot-segments.
    pub normalize: bool,
    /// Collapse runs of `/`.
    pub merge_slashes: bool,
    /// `%2F` and `%5C`.
    pub escaped_slashes: EscapedSlashes,
    /// `;`.
    pub semicolons: PathSemicolons,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            semicolons: PathSemicolons::Reject,
        }
    }
}

/// Why a path was refused; every case is answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A NUL or another control character, raw or percent-encoded.
    ControlCharacter,
    /// A raw `\`.
    Backslash,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C` under `escaped_slashes: reject`.
    EscapedSlash,
    /// `;` under `path_semicolons: reject`.
    Semicolon,
    /// Dot-segments that climb above the root (`/../x`).
    AboveRoot,
}

impl PathError {
    /// A short reason, for the 400 body and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path must start with /",
            PathError::ControlCharacter => "control character in path",
            PathError::Backslash => "backslash in path",
            PathError::BadEscape => "malformed percent-encoding in path",
            PathError::EscapedSlash => "encoded slash in path",
            PathError::Semicolon => "semicolon in path",
            PathError::AboveRoot => "path climbs above the root",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for PathError {}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3: the characters whose encoded and plain forms are equivalent.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Normalizes a path (without its query). Returns `Ok(None)` when the path is already in
/// normal form, so the common case allocates nothing; otherwise the normalized path.
///
/// Control characters (raw or encoded), raw backslashes and malformed escapes are refused
/// whatever the policy, because no rule can make them safe to route or forward.
pub fn normalize(path: &[u8], policy: &PathPolicy) -> Result<Option<String>, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut rewrite = false;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    path.get(i + 1).copied().and_then(hex_value),
                    path.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let decoded = h << 4 | l;
                if is_control(decoded) {
                    return Err(PathError::ControlCharacter);
                }
                if matches!(decoded, b'/' | b'\\') {
                    match policy.escaped_slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Unescape => rewrite = true,
                        EscapedSlashes::Keep => {}
                    }
                }
                if decoded == b';' && policy.semicolons == PathSemicolons::Reject {
                    return Err(PathError::Semicolon);
                }
                if policy.normalize
                    && (is_unreserved(decoded)
                        || path[i + 1].is_ascii_lowercase()
                        || path[i + 2].is_ascii_lowercase())
                {
                    rewrite = true;
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' if policy.semicolons == PathSemicolons::Reject => {
                return Err(PathError::Semicolon)
            }
            b'/' if policy.merge_slashes && path.get(i + 1) == Some(&b'/') => rewrite = true,
            b'.' if policy.normalize && is_dot_segment_start(path, i) => rewrite = true,
            _ if is_control(b) => return Err(PathError::ControlCharacter),
            0x80..=0xff if policy.normalize => rewrite = true,
            _ => {}
        }
        i += 1;
    }
    if !rewrite {
        return Ok(None);
    }
    rebuild(path, policy).map(Some)
}

/// Whether the `.` at `i` begins a `.` or `..` segment.
fn is_dot_segment_start(path: &[u8], i: usize) -> bool {
    if i == 0 || path[i - 1] != b'/' {
        return false;
    }
    let rest = &path[i..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    matches!(&rest[..end], b"." | b"..")
}

/// The slow path: decode into a byte string, then rebuild it segment by segment.
fn rebuild(path: &[u8], policy: &PathPolicy) -> Result<String, PathError> {
    // Decoded form: unreserved escapes decoded, other escapes kept as `%XX` (uppercase when
    // normalizing), unescaped slashes as `/`. Every escape was validated by the scan.
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            let (h, l) = (path[i + 1], path[i + 2]);
            let value = hex_value(h).unwrap_or(0) << 4 | hex_value(l).unwrap_or(0);
            if matches!(value, b'/' | b'\\') && policy.escaped_slashes == EscapedSlashes::Unescape {
                decoded.push(b'/');
            } else if policy.normalize && is_unreserved(value) {
                decoded.push(value);
            } else if policy.normalize {
                decoded.extend_from_slice(&[b'%', h.to_ascii_uppercase(), l.to_ascii_uppercase()]);
            } else {
                decoded.extend_from_slice(&path[i..i + 3]);
            }
            i += 3;
        } else if b >= 0x80 {
            // Encoded whenever the path is rebuilt, so the result is ASCII and canonical.
            decoded.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            i += 1;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    // Segments after the leading `/`; an empty last segment is a trailing slash.
    let mut out: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = decoded[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate() {
        let is_last = n == last;
        match *seg {
            b"." if policy.normalize => {
                if is_last {
                    out.push(b"");
                }
            }
            b".." if policy.normalize => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                if is_last {
                    out.push(b"");
                }
            }
            b"" if policy.merge_slashes && !is_last => {}
            _ => out.push(seg),
        }
    }
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        // Every byte left is ASCII (non-ASCII bytes were encoded above), so this is exact.
        s.push_str(&String::from_utf8_lossy(seg));
    }
    if s.is_empty() {
        s.push('/');
    }
    Ok(s)
}

/// Whether a path contains a `.` or `..` segment, plain or percent-encoded (possible only
/// when `normalize_path` is off), which `strip_prefix` must not let climb out of its prefix.
pub fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|s| {
        let dot = |part: &[u8]| part == b"." || part.eq_ignore_ascii_case(b"%2e");
        match s.len() {
            1 | 3 => dot(s),
            2 => s == b"..",
            4 => (dot(&s[..1]) && dot(&s[1..])) || (dot(&s[..3]) && dot(&s[3..])),
            6 => dot(&s[..3]) && dot(&s[3..]),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        norm_with(p, PathPolicy::default())
    }

    fn norm_with(p: &str, policy: PathPolicy) -> Result<String, PathError> {
        normalize(p.as_bytes(), &policy).map(|o| o.unwrap_or_else(|| p.to_string()))
    }

    #[test]
    fn normal_paths_are_not_copied() {
        for p in ["/", "/a", "/a/b/", "/a/b.c", "/%20x", "/a..b/.c", "/~u/-_."] {
            assert_eq!(
                normalize(p.as_bytes(), &PathPolicy::default()),
                Ok(None),
                "{p}"
            );
        }
    }

    #[test]
    fn the_issue_table() {
        assert_eq!(norm("/pub/../admin"), Ok("/admin".into()));
        assert_eq!(norm("/pub/%2e%2e/admin"), Ok("/admin".into()));
        assert_eq!(norm("/pub/%2E%2e/admin"), Ok("/admin".into()));
        assert_eq!(norm("//admin"), Ok("/admin".into()));
        assert_eq!(norm("/./admin"), Ok("/admin".into()));
        assert_eq!(norm("/%61dmin"), Ok("/admin".into()));
        assert_eq!(norm("/admin%2f"), Err(PathError::EscapedSlash));
        assert_eq!(norm("/pub/..%2fadmin"), Err(PathError::EscapedSlash));
        assert_eq!(norm("/api/../internal"), Ok("/internal".into()));
    }

    #[test]
    fn dot_segments_follow_rfc3986() {
        assert_eq!(norm("/a/b/c/./../../g"), Ok("/a/g".into()));
        assert_eq!(norm("/a/b/.."), Ok("/a/".into()));
        assert_eq!(norm("/a/b/."), Ok("/a/b/".into()));
        assert_eq!(norm("/a/.."), Ok("/".into()));
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/../x"), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/../../x"), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/.b/..c"), Ok("/a/.b/..c".into()));
    }

    #[test]
    fn escapes_are_canonical() {
        assert_eq!(norm("/a%7eb"), Ok("/a~b".into()));
        assert_eq!(norm("/a%3fb"), Ok("/a%3Fb".into()));
        assert_eq!(norm("/caf\u{e9}"), Ok("/caf%C3%A9".into()));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%4"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(norm("/a%0d%0a"), Err(PathError::ControlCharacter));
        assert_eq!(norm("/a\0b"), Err(PathError::ControlCharacter));
        assert_eq!(norm("/a\\b"), Err(PathError::Backslash));
        assert_eq!(norm("/a%5cb"), Err(PathError::EscapedSlash));
        assert_eq!(norm("admin"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn policies() {
        let keep = PathPolicy {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(
            norm_with("/pub/..%2fadmin", keep),
            Ok("/pub/..%2Fadmin".into())
        );
        assert_eq!(norm_with("/admin%2f", keep), Ok("/admin%2F".into()));
        let unescape = PathPolicy {
            escaped_slashes: EscapedSlashes::Unescape,
            ..PathPolicy::default()
        };
        assert_eq!(norm_with("/pub/..%2fadmin", unescape), Ok("/admin".into()));
        assert_eq!(norm_with("/a%5Cb", unescape), Ok("/a/b".into()));
        assert_eq!(norm("/admin;x"), Err(PathError::Semicolon));
        assert_eq!(norm("/admin%3bx"), Err(PathError::Semicolon));
        let semis = PathPolicy {
            semicolons: PathSemicolons::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(norm_with("/admin;x", semis), Ok("/admin;x".into()));
        let raw = PathPolicy {
            normalize: false,
            merge_slashes: false,
            ..PathPolicy::default()
        };
        assert_eq!(norm_with("//a/../%61", raw), Ok("//a/../%61".into()));
        assert_eq!(norm_with("/a\0", raw), Err(PathError::ControlCharacter));
        let merge_only = PathPolicy {
            normalize: false,
            ..PathPolicy::default()
        };
        assert_eq!(
            norm_with("//a///b/../c", merge_only),
            Ok("/a/b/../c".into())
        );
        assert!(has_dot_segment(b"/a/b/../c"));
        assert!(has_dot_segment(b"/a/%2E%2e/c"));
        assert!(has_dot_segment(b"/a/.%2e/c"));
        assert!(has_dot_segment(b"/a/%2e./c"));
        assert!(has_dot_segment(b"/a/./c"));
        assert!(!has_dot_segment(b"/a/b..c"));
        assert!(!has_dot_segment(b"/a/..."));
    }

    #[test]
    fn output_is_a_fixed_point() {
        for p in [
            "/pub/../admin",
            "//a//b//",
            "/a/%2e/b/%7E",
            "/x/./y/../z/.",
            "/caf\u{e9}/%c3%a9",
        ] {
            let once = norm(p).unwrap();
            assert_eq!(norm(&once), Ok(once.clone()), "{p}");
        }
    }
}
