//! A streaming brotli encoder for one response.

/// A streaming brotli encoder for one response.
///
/// Pingora 0.9.1's own brotli encoder only flushes at the end of the body and never writes
/// the final (ISLAST) meta-block, so strict decoders reject its output. The gateway therefore
/// encodes br itself and keeps Pingora's module for gzip and zstd.
pub struct BrotliStream {
    writer: brotli::CompressorWriter<Vec<u8>>,
    bytes_in: u64,
    bytes_out: u64,
}

impl BrotliStream {
    /// An encoder at `level` (1-9, used as brotli's quality) with a 4 MiB window.
    pub fn new(level: u32) -> Self {
        BrotliStream {
            writer: brotli::CompressorWriter::new(Vec::new(), 16 * 1024, level, 22),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Encodes a chunk and returns what is ready to send (flushed, so the stream keeps moving).
    pub fn push(&mut self, chunk: &[u8]) -> std::io::Result<bytes::Bytes> {
        use std::io::Write;
        self.writer.write_all(chunk)?;
        self.writer.flush()?;
        let out = std::mem::take(self.writer.get_mut());
        self.bytes_in += chunk.len() as u64;
        self.bytes_out += out.len() as u64;
        Ok(bytes::Bytes::from(out))
    }

    /// Ends the stream: the rest of the output (with the final meta-block) and the totals of
    /// bytes in and out.
    pub fn finish(self) -> (bytes::Bytes, u64, u64) {
        let rest = self.writer.into_inner();
        let out = self.bytes_out + rest.len() as u64;
        (bytes::Bytes::from(rest), self.bytes_in, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_stream_ends_with_a_final_block() {
        let mut enc = BrotliStream::new(6);
        let mut out = enc.push(&b"hello ".repeat(1000)).unwrap().to_vec();
        out.extend_from_slice(&enc.push(b"world").unwrap());
        let (rest, bytes_in, bytes_out) = enc.finish();
        out.extend_from_slice(&rest);
        assert_eq!(bytes_in, 6005);
        assert_eq!(bytes_out, out.len() as u64);
        let mut plain = Vec::new();
        brotli::Decompressor::new(&out[..], 4096)
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain.len(), 6005);
    }
}
