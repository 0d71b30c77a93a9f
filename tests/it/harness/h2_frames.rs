//! A frame-level HTTP/2 client for attacks: it writes exactly the frames a test builds, in
//! whatever order and shape, and reports every frame the server sends back.
//!
//! Over cleartext with prior knowledge ([`H2Client::connect_h2c`], for an `h2c: true`
//! listener) or over TLS with ALPN `h2` ([`H2Client::connect_tls`], accepting any
//! certificate, for the tests' rcgen self-signed ones).
//!
//! Requests are encoded by a hand-written HPACK encoder ([`hpack`]) that only emits literal
//! representations without Huffman coding, which every decoder must accept and which lets a
//! test produce oversized or malformed blocks byte by byte. Responses are not fully decoded:
//! the server's blocks are Huffman-coded and may use its dynamic table, and no HPACK decoder
//! crate is well kept (`hpack` 0.3.0 is from 2015, `hpack_codec` from 2018, the others are
//! forks or pre-releases), so [`hpack::decode_status`] reads only the `:status` field, which
//! an h2 server sends first. The client advertises `SETTINGS_HEADER_TABLE_SIZE = 0`, so that
//! field is never a dynamic-table reference. Well-formed exchanges whose headers matter go
//! through reqwest (already a dev-dependency, on the same h2 crate as the gateway) instead.
//!
//! Frames are read by a background task into a channel, so a test can write megabytes
//! while the server answers without either side blocking on a full socket buffer.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame type codes (RFC 9113 section 6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 section 7).
pub mod code {
    /// NO_ERROR.
    pub const NO_ERROR: u32 = 0x0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// STREAM_CLOSED.
    pub const STREAM_CLOSED: u32 = 0x5;
    /// FRAME_SIZE_ERROR.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// CANCEL.
    pub const CANCEL: u32 = 0x8;
    /// COMPRESSION_ERROR.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// ENHANCE_YOUR_CALM.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// SETTINGS identifiers.
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// The largest frame payload a peer must accept before SETTINGS_MAX_FRAME_SIZE raises it.
pub const DEFAULT_MAX_FRAME: usize = 16_384;

/// One frame as read from the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Type code ([`kind`]).
    pub kind: u8,
    /// Flags ([`flag`]).
    pub flags: u8,
    /// Stream id (reserved bit cleared).
    pub stream: u32,
    /// The payload, padding included.
    pub payload: Vec<u8>,
}

/// The contents of a GOAWAY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The last stream the server processed.
    pub last_stream: u32,
    /// The error code ([`code`]).
    pub code: u32,
    /// The debug data, lossily as text.
    pub debug: String,
}

impl Frame {
    /// Whether `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// The GOAWAY contents, if this is a GOAWAY.
    pub fn goaway(&self) -> Option<GoAway> {
        (self.kind == kind::GOAWAY && self.payload.len() >= 8).then(|| GoAway {
            last_stream: be32(&self.payload[0..4]) & 0x7fff_ffff,
            code: be32(&self.payload[4..8]),
            debug: String::from_utf8_lossy(&self.payload[8..]).into_owned(),
        })
    }

    /// The error code, if this is a RST_STREAM.
    pub fn rst_code(&self) -> Option<u32> {
        (self.kind == kind::RST_STREAM && self.payload.len() >= 4).then(|| be32(&self.payload))
    }

    /// The header block fragment of a HEADERS or CONTINUATION frame, padding and priority
    /// removed.
    pub fn header_fragment(&self) -> Option<&[u8]> {
        match self.kind {
            kind::CONTINUATION => Some(&self.payload),
            kind::HEADERS => {
                let mut p = &self.payload[..];
                let mut pad = 0;
                if self.has(flag::PADDED) {
                    pad = *p.first()? as usize;
                    p = &p[1..];
                }
                if self.has(flag::PRIORITY) {
                    p = p.get(5..)?;
                }
                p.get(..p.len().checked_sub(pad)?)
            }
            _ => None,
        }
    }

    /// The data of a DATA frame, padding removed.
    pub fn data(&self) -> Option<&[u8]> {
        if self.kind != kind::DATA {
            return None;
        }
        if self.has(flag::PADDED) {
            let pad = *self.payload.first()? as usize;
            self.payload.get(1..self.payload.len().checked_sub(pad)?)
        } else {
            Some(&self.payload)
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Frame encoders: each returns the complete frame (9-byte header and payload).
pub mod frames {
    use super::{flag, kind};

    /// Any frame. The length field is 24 bits; a longer payload is a test bug.
    pub fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 1 << 24, "frame payload over 16 MiB");
        let len = payload.len() as u32;
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&len.to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HEADERS carrying `block`.
    pub fn headers(stream: u32, block: &[u8], end_stream: bool, end_headers: bool) -> Vec<u8> {
        let mut flags = 0;
        if end_stream {
            flags |= flag::END_STREAM;
        }
        if end_headers {
            flags |= flag::END_HEADERS;
        }
        raw(kind::HEADERS, flags, stream, block)
    }

    /// CONTINUATION carrying `block`.
    pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
        let flags = if end_headers { flag::END_HEADERS } else { 0 };
        raw(kind::CONTINUATION, flags, stream, block)
    }

    /// A header block split into HEADERS and as many CONTINUATION frames as `max_frame`
    /// requires, END_HEADERS on the last.
    pub fn header_block(stream: u32, block: &[u8], end_stream: bool, max_frame: usize) -> Vec<u8> {
        let mut parts = block.chunks(max_frame.max(1)).peekable();
        let first = parts.next().unwrap_or(&[]);
        let mut out = headers(stream, first, end_stream, parts.peek().is_none());
        while let Some(p) = parts.next() {
            out.extend(continuation(stream, p, parts.peek().is_none()));
        }
        out
    }

    /// DATA.
    pub fn data(stream: u32, data: &[u8], end_stream: bool) -> Vec<u8> {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        raw(kind::DATA, flags, stream, data)
    }

    /// RST_STREAM with `code`.
    pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
        raw(kind::RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// SETTINGS with these (identifier, value) pairs.
    pub fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
        let mut p = Vec::with_capacity(pairs.len() * 6);
        for (id, v) in pairs {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        raw(kind::SETTINGS, 0, 0, &p)
    }

    /// A SETTINGS acknowledgement.
    pub fn settings_ack() -> Vec<u8> {
        raw(kind::SETTINGS, flag::ACK, 0, &[])
    }

    /// PING (or its ACK).
    pub fn ping(data: [u8; 8], ack: bool) -> Vec<u8> {
        raw(kind::PING, if ack { flag::ACK } else { 0 }, 0, &data)
    }

    /// WINDOW_UPDATE.
    pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
        raw(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
    }

    /// GOAWAY.
    pub fn goaway(last_stream: u32, code: u32, debug: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(8 + debug.len());
        p.extend_from_slice(&last_stream.to_be_bytes());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(debug);
        raw(kind::GOAWAY, 0, 0, &p)
    }
}

/// A hand-written HPACK (RFC 7541) encoder for literal fields, malformed-block builders, and a
/// reader for the `:status` field of a response block.
pub mod hpack {
    /// Appends `value` as an integer with an `n`-bit prefix; `high` holds the bits above it.
    pub fn encode_int(value: usize, n: u8, high: u8, out: &mut Vec<u8>) {
        let max = (1usize << n) - 1;
        if value < max {
            out.push(high | value as u8);
            return;
        }
        out.push(high | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    /// Appends a string literal without Huffman coding.
    pub fn encode_str(s: &[u8], out: &mut Vec<u8>) {
        encode_int(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }

    /// A "literal header field without indexing, new name" (section 6.2.2): no table state
    /// changes, so blocks can be built, cut and replayed freely.
    pub fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x00];
        encode_str(name, &mut out);
        encode_str(value, &mut out);
        out
    }

    /// A block of literal fields, in order.
    pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        fields
            .iter()
            .flat_map(|(k, v)| literal(k.as_bytes(), v.as_bytes()))
            .collect()
    }

    /// A request block: the four pseudo-headers, then `extra`.
    pub fn request(
        method: &str,
        scheme: &str,
        authority: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut out = block(&[
            (":method", method),
            (":scheme", scheme),
            (":authority", authority),
            (":path", path),
        ]);
        out.extend(block(extra));
        out
    }

    /// A string literal whose length prefix claims `claimed` bytes but carries `actual`.
    pub fn lying_str(claimed: usize, actual: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(claimed, 7, 0, &mut out);
        out.extend_from_slice(actual);
        out
    }

    /// An indexed field (section 6.1) at `index`; past both tables it is a decoding error.
    pub fn indexed(index: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(index, 7, 0x80, &mut out);
        out
    }

    /// An integer prefix followed by `n` continuation bytes: past 2^64 for n >= 10.
    pub fn overlong_int(n: usize) -> Vec<u8> {
        let mut out = vec![0x80 | 0x7f];
        out.extend(std::iter::repeat_n(0xff, n));
        out.push(0x01);
        out
    }

    /// A dynamic table size update (section 6.3) to `size`.
    pub fn table_size_update(size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(size, 5, 0x20, &mut out);
        out
    }

    /// Reads an integer with an `n`-bit prefix; returns it and the bytes used.
    pub fn decode_int(buf: &[u8], n: u8) -> Option<(usize, usize)> {
        let max = (1usize << n) - 1;
        let first = (*buf.first()? as usize) & max;
        if first < max {
            return Some((first, 1));
        }
        let (mut value, mut shift) = (max, 0u32);
        for (i, b) in buf.iter().enumerate().skip(1) {
            value = value.checked_add(((*b & 0x7f) as usize).checked_shl(shift)?)?;
            if b & 0x80 == 0 {
                return Some((value, i + 1));
            }
            shift += 7;
            if shift > 56 {
                return None;
            }
        }
        None
    }

    /// Decodes a Huffman-coded string made only of the digits `0`-`9` (RFC 7541 appendix B:
    /// `0`-`2` are the 5-bit codes 0x0-0x2, `3`-`9` the 6-bit codes 0x19-0x1f), the only
    /// alphabet a status code needs.
    fn huffman_digits(data: &[u8]) -> Option<String> {
        let bits = data.len() * 8;
        let bit = |i: usize| (data[i / 8] >> (7 - i % 8)) & 1;
        let take = |at: usize, n: usize| (at..at + n).fold(0u8, |acc, i| (acc << 1) | bit(i));
        let (mut at, mut out) = (0, String::new());
        while at < bits {
            let left = bits - at;
            if left < 8 && (at..bits).all(|i| bit(i) == 1) {
                return Some(out); // EOS padding
            }
            if left >= 5 && take(at, 5) <= 2 {
                out.push((b'0' + take(at, 5)) as char);
                at += 5;
            } else if left >= 6 && (0x19..=0x1f).contains(&take(at, 6)) {
                out.push((b'3' + take(at, 6) - 0x19) as char);
                at += 6;
            } else {
                return None;
            }
        }
        Some(out)
    }

    /// Reads a string literal; a Huffman-coded one only if it is all digits.
    fn decode_str(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
        let huffman = *buf.first()? & 0x80 != 0;
        let (len, n) = decode_int(buf, 7)?;
        let data = buf.get(n..n + len)?;
        let s = if huffman {
            huffman_digits(data)?.into_bytes()
        } else {
            data.to_vec()
        };
        Some((s, n + len))
    }

    /// The `:status` of a response header block: its first field after any table size
    /// updates, either a static-table entry (8-14) or a literal named by index 8 or by text.
    pub fn decode_status(block: &[u8]) -> Option<u16> {
        let mut i = 0;
        while block.get(i)? & 0xe0 == 0x20 {
            i += decode_int(&block[i..], 5)?.1;
        }
        let b = block[i];
        if b & 0x80 != 0 {
            let (index, _) = decode_int(&block[i..], 7)?;
            const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
            return STATIC.get(index.checked_sub(8)?).copied();
        }
        let prefix = if b & 0xc0 == 0x40 { 6 } else { 4 };
        let (name_index, n) = decode_int(&block[i..], prefix)?;
        i += n;
        if name_index == 0 {
            let (name, n) = decode_str(&block[i..])?;
            if name != b":status" {
                return None;
            }
            i += n;
        } else if !(8..=14).contains(&name_index) {
            return None;
        }
        let (value, _) = decode_str(&block[i..])?;
        std::str::from_utf8(&value).ok()?.parse().ok()
    }

    #[test]
    fn reads_status_in_every_representation() {
        assert_eq!(decode_status(&[0x88]), Some(200));
        assert_eq!(decode_status(&[0x20, 0x8d]), Some(404));
        // Literal with incremental indexing, name index 8, raw "431".
        assert_eq!(decode_status(&[0x48, 0x03, b'4', b'3', b'1']), Some(431));
        // Literal without indexing, name index 8, Huffman "431": 011010 011001 00001, then
        // EOS padding; cut one byte short, the string ends in four zero bits and is refused.
        assert_eq!(decode_status(&[0x08, 0x82, 0x69, 0x90]), None);
        assert_eq!(
            decode_status(&[0x08, 0x83, 0b0110_1001, 0b1001_0000, 0b1111_1111]),
            Some(431)
        );
        let mut int = Vec::new();
        encode_int(1337, 5, 0, &mut int);
        assert_eq!(decode_int(&int, 5), Some((1337, int.len())));
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Event {
    Frame(Frame),
    Closed(String),
}

/// What one bounded read produced.
#[derive(Debug)]
pub enum Read {
    /// A frame.
    Frame(Frame),
    /// The server closed (EOF or reset); the text says how.
    Closed(String),
    /// Nothing arrived within the limit.
    TimedOut,
}

/// Everything received while draining a connection.
#[derive(Debug, Default)]
pub struct Drained {
    /// The frames, in order.
    pub frames: Vec<Frame>,
    /// Whether the connection closed within the limit.
    pub closed: bool,
}

impl Drained {
    /// The first GOAWAY received.
    pub fn goaway(&self) -> Option<GoAway> {
        self.frames.iter().find_map(Frame::goaway)
    }

    /// RST_STREAM frames as (stream, code).
    pub fn resets(&self) -> Vec<(u32, u32)> {
        self.frames
            .iter()
            .filter_map(|f| f.rst_code().map(|c| (f.stream, c)))
            .collect()
    }

    /// Statuses of the response HEADERS received, as (stream, status).
    pub fn statuses(&self) -> Vec<(u32, Option<u16>)> {
        self.frames
            .iter()
            .filter(|f| f.kind == kind::HEADERS)
            .map(|f| (f.stream, f.header_fragment().and_then(hpack::decode_status)))
            .collect()
    }

    /// A one-line summary, for assertion messages.
    pub fn summary(&self) -> String {
        let mut counts = std::collections::BTreeMap::new();
        for f in &self.frames {
            *counts.entry(f.kind).or_insert(0usize) += 1;
        }
        format!(
            "frames by type {counts:?}, goaway {:?}, first resets {:?}, closed {}",
            self.goaway(),
            &self.resets()[..self.resets().len().min(5)],
            self.closed
        )
    }
}

/// The outcome of one request stream.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// The response status, when a HEADERS frame with a readable `:status` arrived.
    pub status: Option<u16>,
    /// Whether any response HEADERS arrived on the stream.
    pub headers: bool,
    /// The response body received.
    pub body: Vec<u8>,
    /// The RST_STREAM code, if the stream was reset.
    pub reset: Option<u32>,
    /// A GOAWAY received meanwhile.
    pub goaway: Option<GoAway>,
    /// Whether the connection closed.
    pub closed: bool,
    /// Whether the stream ended (END_STREAM or reset).
    pub ended: bool,
}

/// A raw HTTP/2 client connection.
pub struct H2Client {
    writer: WriteHalf<Box<dyn Io>>,
    events: mpsc::UnboundedReceiver<Event>,
    closed: Option<String>,
    /// The `:authority` of [`H2Client::request_block`].
    pub authority: String,
    /// The `:scheme` of [`H2Client::request_block`]: `http` over h2c, `https` over TLS.
    pub scheme: &'static str,
    /// Acknowledge the server's SETTINGS and PINGs while reading (on by default).
    pub auto_ack: bool,
    /// Bound on each [`H2Client::send`]: a server that stops reading must not hang a test.
    pub write_limit: Duration,
    next_stream: u32,
}

impl H2Client {
    /// Connects over cleartext with prior knowledge and sends the preface and SETTINGS.
    pub async fn connect_h2c(addr: SocketAddr) -> io::Result<H2Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Self::start(Box::new(tcp), addr, "http").await
    }

    /// Connects over TLS with ALPN `h2` (any certificate accepted), then as
    /// [`H2Client::connect_h2c`]. Fails unless the server selected `h2`.
    pub async fn connect_tls(addr: SocketAddr, server_name: &str) -> io::Result<H2Client> {
        use tokio_rustls::rustls::pki_types::ServerName;
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(b"h2") {
            return Err(io::Error::other(format!(
                "ALPN selected {:?}, not h2",
                alpn.map(|a| String::from_utf8_lossy(&a).into_owned())
            )));
        }
        let mut c = Self::start(Box::new(tls), addr, "https").await?;
        c.authority = format!("{server_name}:{}", addr.port());
        Ok(c)
    }

    async fn start(
        io: Box<dyn Io>,
        addr: SocketAddr,
        scheme: &'static str,
    ) -> io::Result<H2Client> {
        let (mut reader, writer) = tokio::io::split(io);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let why = loop {
                let mut head = [0u8; 9];
                if let Err(e) = reader.read_exact(&mut head).await {
                    break e.to_string();
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if let Err(e) = reader.read_exact(&mut payload).await {
                    break format!("inside a frame: {e}");
                }
                let frame = Frame {
                    kind: head[3],
                    flags: head[4],
                    stream: be32(&head[5..9]) & 0x7fff_ffff,
                    payload,
                };
                if tx.send(Event::Frame(frame)).is_err() {
                    return;
                }
            };
            let _ = tx.send(Event::Closed(why));
        });
        let mut c = H2Client {
            writer,
            events,
            closed: None,
            authority: addr.to_string(),
            scheme,
            auto_ack: true,
            write_limit: Duration::from_secs(5),
            next_stream: 1,
        };
        let mut hello = PREFACE.to_vec();
        // Table size 0 keeps the server's `:status` out of its dynamic table (see the module
        // docs); the large windows keep flow control out of the way of response bodies.
        hello.extend(frames::settings(&[
            (setting::HEADER_TABLE_SIZE, 0),
            (setting::ENABLE_PUSH, 0),
            (setting::INITIAL_WINDOW_SIZE, 1 << 24),
        ]));
        hello.extend(frames::window_update(0, (1 << 30) - 65_535));
        c.send(&hello).await?;
        Ok(c)
    }

    /// A fresh client-initiated stream id (odd, increasing).
    pub fn next_stream_id(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        id
    }

    /// Writes bytes (any number of frames) and flushes; fails with `TimedOut` when the server
    /// has not taken them within [`H2Client::write_limit`].
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.write_limit, write).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the server read nothing for {:?}", self.write_limit),
            )),
        }
    }

    /// A request block with this connection's scheme and authority.
    pub fn request_block(&self, method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        hpack::request(method, self.scheme, &self.authority, path, extra)
    }

    /// Sends `GET path` on a new stream (END_STREAM, END_HEADERS) and returns its id.
    pub async fn get(&mut self, path: &str) -> io::Result<u32> {
        let id = self.next_stream_id();
        let block = self.request_block("GET", path, &[]);
        self.send(&frames::headers(id, &block, true, true)).await?;
        Ok(id)
    }

    /// Whether the server has closed the connection (as far as frames read so far show).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Reads the next frame, waiting at most `limit`.
    pub async fn read_frame(&mut self, limit: Duration) -> Read {
        if let Some(why) = &self.closed {
            return Read::Closed(why.clone());
        }
        let event = match tokio::time::timeout(limit, self.events.recv()).await {
            Err(_) => return Read::TimedOut,
            Ok(None) => Event::Closed("reader task ended".into()),
            Ok(Some(e)) => e,
        };
        match event {
            Event::Closed(why) => {
                self.closed = Some(why.clone());
                Read::Closed(why)
            }
            Event::Frame(f) => {
                if self.auto_ack {
                    // A write failure here surfaces as a close on the next read.
                    if f.kind == kind::SETTINGS && !f.has(flag::ACK) {
                        let _ = self.send(&frames::settings_ack()).await;
                    } else if f.kind == kind::PING && !f.has(flag::ACK) {
                        let mut data = [0u8; 8];
                        data.copy_from_slice(&f.payload[..8.min(f.payload.len())]);
                        let _ = self.send(&frames::ping(data, true)).await;
                    }
                }
                Read::Frame(f)
            }
        }
    }

    /// Reads frames until the connection closes or `limit` has passed in total.
    pub async fn drain(&mut self, limit: Duration) -> Drained {
        self.drain_until(limit, |_| false).await
    }

    /// Reads frames until `stop` holds for one (included), the connection closes, or `limit`
    /// has passed in total.
    pub async fn drain_until<F>(&mut self, limit: Duration, mut stop: F) -> Drained
    where
        F: FnMut(&Frame) -> bool,
    {
        let end = Instant::now() + limit;
        let mut out = Drained::default();
        loop {
            match self
                .read_frame(end.saturating_duration_since(Instant::now()))
                .await
            {
                Read::Frame(f) => {
                    let done = stop(&f);
                    out.frames.push(f);
                    if done {
                        return out;
                    }
                }
                Read::Closed(_) => {
                    out.closed = true;
                    return out;
                }
                Read::TimedOut => return out,
            }
        }
    }

    /// Waits for the server's first SETTINGS frame (and acknowledges it).
    pub async fn wait_settings(&mut self, limit: Duration) -> io::Result<Frame> {
        let d = self
            .drain_until(limit, |f| f.kind == kind::SETTINGS && !f.has(flag::ACK))
            .await;
        d.frames
            .into_iter()
            .find(|f| f.kind == kind::SETTINGS && !f.has(flag::ACK))
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no server SETTINGS"))
    }

    /// Reads until `stream` ends (END_STREAM or RST_STREAM), a GOAWAY arrives, the connection
    /// closes, or `limit` passes; collects the response status and body.
    pub async fn read_stream(&mut self, stream: u32, limit: Duration) -> StreamOutcome {
        let mut out = StreamOutcome::default();
        let d = self
            .drain_until(limit, |f| {
                f.kind == kind::GOAWAY
                    || (f.stream == stream
                        && (f.kind == kind::RST_STREAM
                            || (matches!(f.kind, kind::HEADERS | kind::DATA)
                                && f.has(flag::END_STREAM))))
            })
            .await;
        out.closed = d.closed;
        out.goaway = d.goaway();
        for f in d.frames.iter().filter(|f| f.stream == stream) {
            match f.kind {
                kind::HEADERS => {
                    out.headers = true;
                    if out.status.is_none() {
                        out.status = f.header_fragment().and_then(hpack::decode_status);
                    }
                    out.ended |= f.has(flag::END_STREAM);
                }
                kind::DATA => {
                    out.body.extend_from_slice(f.data().unwrap_or(&[]));
                    out.ended |= f.has(flag::END_STREAM);
                }
                kind::RST_STREAM => {
                    out.reset = f.rst_code();
                    out.ended = true;
                }
                _ => {}
            }
        }
        out
    }
}

/// TLS client settings for the gateway's test certificates: ALPN `h2` only, any certificate.
fn tls_config() -> Arc<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls::{crypto::ring, ClientConfig};
    let provider = Arc::new(ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Trusts any certificate (the tests' are fresh rcgen self-signed ones) but still checks the
/// handshake signatures, so the TLS session is a real one.
#[derive(Debug)]
struct AnyCert(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _server_name: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
