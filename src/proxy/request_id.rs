//! Request ids: keep a sane incoming `X-Request-Id`, otherwise mint a unique one cheaply.
//!
//! "Sane" is at most 128 characters of `[A-Za-z0-9._:-]`: an id lands in logs, traces and
//! other services' headers, so anything that could break a log line or a header parser
//! (spaces, quotes, commas, `%`, control bytes) is replaced rather than forwarded.

use http::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest incoming id we keep; longer ones are replaced rather than forwarded.
const MAX_LEN: usize = 128;

static COUNTER: AtomicU64 = AtomicU64::new(0);
static PREFIX: OnceLock<u64> = OnceLock::new();

/// Returns the incoming id when it is short and of the allowed characters, otherwise a new one.
pub fn resolve(incoming: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = incoming {
        let b = v.as_bytes();
        let allowed = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-');
        if !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(allowed) {
            return v.clone();
        }
    }
    generate()
}

/// A process-unique id: a per-process prefix (start time and pid) and a counter, in hex.
pub fn generate() -> HeaderValue {
    let prefix = *PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos.rotate_left(17) ^ (std::process::id() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 33];
    hex(prefix, &mut buf[..16]);
    buf[16] = b'-';
    hex(n, &mut buf[17..]);
    // Hex digits and '-' are always valid header bytes.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_mints_unique_ones() {
        let keep = HeaderValue::from_static("abc-123");
        assert_eq!(resolve(Some(&keep)), keep);
        let a = resolve(None);
        let b = resolve(None);
        assert_ne!(a, b);
        assert_eq!(a.len(), 33);
        let keep = HeaderValue::from_static("Ab.9_:-z");
        assert_eq!(resolve(Some(&keep)), keep);
        let at_limit = HeaderValue::from_str(&"x".repeat(128)).unwrap();
        assert_eq!(resolve(Some(&at_limit)), at_limit);
        for bad in [
            "x".repeat(129),
            "a b".into(),
            "a\"b".into(),
            "a,b".into(),
            "a%0d".into(),
            "<script>".into(),
            "id/1".into(),
        ] {
            let bad = HeaderValue::from_str(&bad).unwrap();
            assert_ne!(resolve(Some(&bad)), bad, "{bad:?}");
        }
    }
}
