//! SHA-256 digests of credentials (ring), compared in constant time (subtle), so no code path
//! compares a secret, or anything derived from one, with a short-circuiting `==`.

use subtle::ConstantTimeEq;

/// The SHA-256 of a credential.
#[derive(Clone, Copy)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The SHA-256 of `parts`, each followed by a NUL separator but the last.
    pub fn of(parts: &[&[u8]]) -> Digest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                ctx.update(&[0]);
            }
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Digest(out)
    }

    /// A digest written as 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Digest> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        }
        Some(Digest(out))
    }

    /// The first byte, to pick a shard.
    pub fn first_byte(&self) -> u8 {
        self.0[0]
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Digest {}

impl std::hash::Hash for Digest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Consistent with `eq`: equal digests have equal bytes.
        self.0.hash(state);
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: a digest of a key is as good as the key for an offline guess.
        f.write_str("Digest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_known_value() {
        let d = Digest::of(&[b"secret"]);
        let hex = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        assert_eq!(Digest::from_hex(hex), Some(d));
        assert_eq!(Digest::from_hex(&hex.to_uppercase()), Some(d));
        assert_eq!(Digest::from_hex("abc"), None);
        assert_eq!(Digest::from_hex(&"zz".repeat(32)), None);
        assert_ne!(Digest::of(&[b"a", b"b"]), Digest::of(&[b"ab"]));
    }
}
