//! Decompressing gzip from the upstream for a client that does not accept it, with bounded
//! memory: a gzip bomb (a small body that inflates to gigabytes) costs at most one chunk's
//! worth of output at a time, and at most `max_decompressed_bytes` in total.
//!
//! Pingora's module inflates each chunk without a bound, so a stalled client held the whole
//! inflated output of a chunk (about 130 MB for a 128 KB bomb); the gateway decodes itself.

use bytes::Bytes;
use std::io::{self, Write};

/// Most output one input chunk may inflate to. Upstream reads are at most 64 KiB, so this is a
/// ratio of 64:1 over a full read, well above what real text reaches (typically under 20:1).
pub const MAX_CHUNK_OUTPUT: usize = 4 * 1024 * 1024;

/// Why decompression stopped.
#[derive(Debug)]
pub enum InflateError {
    /// The output went over a bound: the response is cut off.
    Limit,
    /// The body is not valid gzip.
    Corrupt(io::Error),
}

/// The decoder's output buffer, refusing to grow past the bounds.
struct Bounded {
    out: Vec<u8>,
    chunk_left: usize,
    total_left: u64,
}

const LIMIT: &str = "decompression limit";

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.chunk_left || buf.len() as u64 > self.total_left {
            return Err(io::Error::other(LIMIT));
        }
        self.chunk_left -= buf.len();
        self.total_left -= buf.len() as u64;
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A streaming gzip decoder for one response body.
pub struct Inflate {
    decoder: flate2::write::GzDecoder<Bounded>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Inflate {
    /// A decoder that produces at most `max_total` bytes.
    pub fn new(max_total: u64) -> Self {
        Inflate {
            decoder: flate2::write::GzDecoder::new(Bounded {
                out: Vec::new(),
                chunk_left: MAX_CHUNK_OUTPUT,
                total_left: max_total,
            }),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Decodes one chunk (and, at the end, checks the trailer); returns the output so far.
    pub fn push(&mut self, chunk: &[u8], end: bool) -> Result<Bytes, InflateError> {
        self.decoder.get_mut().chunk_left = MAX_CHUNK_OUTPUT;
        let mut result = self.decoder.write_all(chunk);
        if result.is_ok() && end {
            result = self.decoder.try_finish();
        }
        if let Err(e) = result {
            return Err(if e.to_string() == LIMIT {
                InflateError::Limit
            } else {
                InflateError::Corrupt(e)
            });
        }
        self.bytes_in += chunk.len() as u64;
        let out = std::mem::take(&mut self.decoder.get_mut().out);
        self.bytes_out += out.len() as u64;
        Ok(Bytes::from(out))
    }

    /// Bytes into and out of the decoder so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_across_chunks() {
        let body = b"hello gateway ".repeat(5000);
        let gz = gzip(&body);
        let mut inf = Inflate::new(1 << 20);
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = gz.chunks(100).collect();
        for (i, c) in chunks.iter().enumerate() {
            out.extend_from_slice(&inf.push(c, i + 1 == chunks.len()).unwrap());
        }
        assert_eq!(out, body);
        assert_eq!(inf.totals(), (gz.len() as u64, body.len() as u64));
    }

    #[test]
    fn a_bomb_is_cut_off_per_chunk_and_in_total() {
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 128 * 1024, "{} bytes", bomb.len());
        // One chunk may not inflate past MAX_CHUNK_OUTPUT.
        let mut inf = Inflate::new(u64::MAX);
        assert!(matches!(inf.push(&bomb, true), Err(InflateError::Limit)));
        // Small chunks stay under the per-chunk bound, then hit the total.
        let mut inf = Inflate::new(8 * 1024 * 1024);
        let mut total = 0usize;
        let mut cut = false;
        for c in bomb.chunks(512) {
            match inf.push(c, false) {
                Ok(out) => {
                    assert!(out.len() <= MAX_CHUNK_OUTPUT);
                    total += out.len();
                }
                Err(InflateError::Limit) => {
                    cut = true;
                    break;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(cut, "the total bound cut the bomb off");
        assert!(total <= 8 * 1024 * 1024);
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut inf = Inflate::new(1 << 20);
        assert!(matches!(
            inf.push(b"not gzip at all", true),
            Err(InflateError::Corrupt(_))
        ));
    }
}
