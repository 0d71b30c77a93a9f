//! Compression series: bytes into and out of the compressor, per algorithm.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// `algorithm` label values, all registered at zero; unknown names count as `other`.
const ALGORITHMS: [&str; 4] = ["gzip", "br", "zstd", "other"];

/// The compression series.
pub(super) struct CompressionSeries {
    bytes_in: [IntCounter; ALGORITHMS.len()],
    bytes_out: [IntCounter; ALGORITHMS.len()],
    decompression_cut: IntCounter,
}

impl CompressionSeries {
    /// Creates the series and registers them.
    pub(super) fn register(registry: &Registry) -> prometheus::Result<CompressionSeries> {
        let vec = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let v = IntCounterVec::new(Opts::new(name, help), &["algorithm"])?;
            registry.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let bytes_in = vec(
            "avx_compression_bytes_in_total",
            "Response body bytes handed to the compressor, by algorithm.",
        )?;
        let bytes_out = vec(
            "avx_compression_bytes_out_total",
            "Compressed response body bytes produced, by algorithm.",
        )?;
        let decompression_cut = IntCounter::new(
            "avx_decompression_cut_total",
            "Decompressed responses cut off at max_decompressed_bytes (or as invalid gzip).",
        )?;
        registry.register(Box::new(decompression_cut.clone()))?;
        Ok(CompressionSeries {
            bytes_in: ALGORITHMS.map(|a| bytes_in.with_label_values(&[a])),
            bytes_out: ALGORITHMS.map(|a| bytes_out.with_label_values(&[a])),
            decompression_cut,
        })
    }

    /// Counts one decompressed response cut off.
    pub(super) fn record_cut(&self) {
        self.decompression_cut.inc();
    }

    /// Adds one response's byte counts. `algorithm` is a content-coding token (`gzip`, `br`,
    /// `zstd`) or the name Pingora's compressor reports (`brotli`); decompression (`de-*`)
    /// is not compression and is ignored.
    pub(super) fn record(&self, algorithm: &str, bytes_in: u64, bytes_out: u64) {
        let i = match algorithm {
            "gzip" => 0,
            "br" | "brotli" => 1,
            "zstd" => 2,
            a if a.starts_with("de-") => return,
            _ => 3,
        };
        self.bytes_in[i].inc_by(bytes_in);
        self.bytes_out[i].inc_by(bytes_out);
    }
}
