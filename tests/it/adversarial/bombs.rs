//! Decompression bombs: an origin answers with a small gzip body that inflates to 512 MiB,
//! to clients that do not accept gzip, so the gateway decodes it for them. Bounded by
//! `max_decompressed_bytes` (8 MiB here): clients get at most that much and then a response
//! that is visibly cut off (no final chunk, connection closed, or a reset h2 stream), the
//! gateway's memory stays small while several such clients stall, and the cut is counted in
//! `avx_decompression_cut_total`. A normal gzip file is still decoded in full, or passed
//! through untouched to a client that accepts gzip.

use crate::harness::h2_frames::frames;
use crate::harness::{
    accept_loop, client, free_addr, wait_until, GatewayProcess, H2Client, OriginReply, RawOrigin,
};
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `max_decompressed_bytes` of the route.
const CAP: usize = 8 * 1024 * 1024;
/// Allowance over [`CAP`] for what a client may count: nothing, the decoder stops at the cap.
const SLACK: usize = 64 * 1024;
/// What the bomb inflates to.
const BOMB_INFLATED: usize = 512 * 1024 * 1024;
/// Stalling clients held at once while the gateway's memory is watched.
const STALLERS: usize = 5;
/// The gateway's resident memory must stay below this with all of them holding.
const RSS_LIMIT_KIB: u64 = 100 * 1024;
/// Stop reading a response past this: the gateway is not bounding it.
const READ_GUARD: usize = 4 * CAP;
const LIMIT: Duration = Duration::from_secs(10);
/// Deadline for a prompt reader of the paced bomb to be cut at the cap.
const PACED_LIMIT: Duration = Duration::from_secs(45);

/// 512 MiB of zeros, gzipped (about 500 KB), built once per test process.
fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let started = Instant::now();
        let gz = zeros_gzip(BOMB_INFLATED / SEGMENT);
        eprintln!(
            "bomb: {} MiB of zeros -> {} bytes of gzip in {:?}",
            BOMB_INFLATED >> 20,
            gz.len(),
            started.elapsed()
        );
        gz
    })
}

/// Zeros per deflate segment of [`zeros_gzip`].
const SEGMENT: usize = 1024 * 1024;

/// A gzip member of `segments` MiB of zeros, without compressing all of it: one MiB of
/// zeros is deflated once by a fresh compressor and ended with a full flush (byte-aligned,
/// non-final blocks whose matches stay inside the segment), so the segment's bytes can be
/// repeated as they are; an empty final block ends the stream. The trailer's CRC-32 is
/// combined from the segment's (`Crc::combine`), the size is the real one.
fn zeros_gzip(segments: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let deflate = |input: &[u8], flush: FlushCompress| {
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(64 * 1024);
        c.compress_vec(input, &mut out, flush).unwrap();
        assert_eq!(c.total_in() as usize, input.len(), "segment not consumed");
        out
    };
    let zeros = vec![0u8; SEGMENT];
    let segment = deflate(&zeros, FlushCompress::Full);
    let last = deflate(&[], FlushCompress::Finish);
    let mut seg_crc = Crc::new();
    seg_crc.update(&zeros);
    let mut crc = Crc::new();
    for _ in 0..segments {
        crc.combine(&seg_crc);
    }
    // RFC 1952 header: magic, CM=8, no flags, no mtime, XFL 2 (best), OS 255 (unknown).
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    for _ in 0..segments {
        gz.extend_from_slice(&segment);
    }
    gz.extend_from_slice(&last);
    gz.extend_from_slice(&crc.sum().to_le_bytes());
    gz.extend_from_slice(&((segments * SEGMENT) as u32).to_le_bytes());
    gz
}

#[test]
fn the_bomb_builder_makes_valid_gzip() {
    let gz = zeros_gzip(3);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .expect("a valid gzip stream, CRC and size included");
    assert_eq!(out.len(), 3 * SEGMENT);
    assert!(out.iter().all(|&b| b == 0));
    assert!(gz.len() < 3 * SEGMENT / 500, "{} bytes", gz.len());
}

/// About 1 MiB of varied text, and its gzip.
fn text_file() -> (Vec<u8>, Vec<u8>) {
    let mut text = Vec::new();
    let mut i = 0u64;
    while text.len() < 1024 * 1024 {
        // A cheap LCG keeps the text from compressing like zeros.
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        writeln!(
            text,
            "line {} of the test file: {:016x} {}",
            text.len(),
            i,
            i % 977
        )
        .unwrap();
    }
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&text).unwrap();
    (text, e.finish().unwrap())
}

/// An origin that answers every request with the bomb, written [`PIECE`] bytes every
/// [`PIECE_GAP`]. Records each request head.
///
/// For `/paced/prompt` it also goes in lock-step with the test's reader: the next piece is
/// written only once the reader got more bytes (or after [`LOCKSTEP_WAIT`]). On a loaded
/// machine a descheduled gateway would otherwise find many pieces waiting in one read, and a
/// read that inflates past the decoder's 4 MiB per-read bound is cut by that bound; in
/// lock-step each read inflates to about 512 KiB, so it is the 8 MiB total that stops it.
struct PacedBomb {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    /// Bytes the prompt reader has received so far.
    progress: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Longest the lock-step origin waits for the reader before writing the next piece anyway.
const LOCKSTEP_WAIT: Duration = Duration::from_secs(1);

impl PacedBomb {
    async fn start() -> PacedBomb {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let progress = Arc::new(AtomicUsize::new(0));
        let (h, p) = (heads.clone(), progress.clone());
        let task = accept_loop(listener, move |sock| {
            serve_paced(sock, h.clone(), p.clone())
        });
        PacedBomb {
            addr,
            heads,
            progress,
            task,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for PacedBomb {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_paced(
    mut sock: TcpStream,
    heads: Arc<Mutex<Vec<String>>>,
    progress: Arc<AtomicUsize>,
) {
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head_text = String::from_utf8_lossy(&buf).into_owned();
    let lockstep = head_text.starts_with("GET /paced/prompt ");
    heads.lock().unwrap().push(head_text);
    let body = bomb();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(PIECE_GAP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for piece in body.chunks(PIECE) {
        tick.tick().await;
        let seen = progress.load(Ordering::Relaxed);
        if sock.write_all(piece).await.is_err() {
            return; // the gateway gave up on it
        }
        if lockstep {
            let until = Instant::now() + LOCKSTEP_WAIT;
            while progress.load(Ordering::Relaxed) == seen && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Bytes per write of [`PacedBomb`].
const PIECE: usize = 512;
/// Time between writes of [`PacedBomb`].
const PIECE_GAP: Duration = Duration::from_millis(2);

/// A gateway with compression (8 MiB decode bound) on `/paced` (to [`PacedBomb`]) and on
/// everything else (to a [`RawOrigin`]); the first listener is HTTP/1.1, the second h2c.
struct Site {
    gw: GatewayProcess,
    origin: RawOrigin,
    paced: PacedBomb,
    h2c: SocketAddr,
    text: Vec<u8>,
    text_gz: Vec<u8>,
}

async fn site() -> Site {
    let origin = RawOrigin::start().await;
    let gz = |body: Vec<u8>| {
        OriginReply::new(200, body)
            .header("Content-Type", "text/plain")
            .header("Content-Encoding", "gzip")
    };
    origin.reply_for("/bomb", gz(bomb().to_vec()));
    let (text, text_gz) = text_file();
    origin.reply_for("/file", gz(text_gz.clone()));
    let paced = PacedBomb::start().await;
    let h2c = free_addr();
    let gw = GatewayProcess::start(&format!(
        r#"{server}listeners:
  - address: {{listen}}
  - address: {h2c}
    h2c: true
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
  paced:
    servers: [{{ address: {paced} }}]
routes:
  - name: paced
    match: {{ path_prefix: /paced }}
    upstream: paced
    compression: {{ enabled: true, max_decompressed_bytes: {CAP} }}
  - name: all
    match: {{ path_prefix: / }}
    upstream: origin
    compression: {{ enabled: true, max_decompressed_bytes: {CAP} }}
"#,
        server = super::server_section(),
        origin = origin.addr,
        paced = paced.addr,
    ));
    Site {
        gw,
        origin,
        paced,
        h2c,
        text,
        text_gz,
    }
}

/// A GET with this `Accept-Encoding`.
fn request(path: &str, accept_encoding: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gateway.test\r\nAccept-Encoding: {accept_encoding}\r\n\r\n"
    )
}

/// An HTTP/1.1 response read until the close (or the limit), chunked framing decoded as far
/// as it goes.
#[derive(Debug, Default)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    /// Decoded body bytes.
    body: Vec<u8>,
    /// The final (zero) chunk arrived, or a Content-Length body was complete.
    complete: bool,
    /// The connection closed within the limit.
    closed: bool,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads everything from `sock` until it closes, `limit` passes or [`READ_GUARD`] bytes came,
/// then parses the one response.
async fn read_all(sock: &mut TcpStream, limit: Duration) -> Got {
    read_all_reporting(sock, limit, &AtomicUsize::new(0)).await
}

/// [`read_all`], publishing the bytes received so far in `progress`.
async fn read_all_reporting(sock: &mut TcpStream, limit: Duration, progress: &AtomicUsize) -> Got {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    progress.store(raw.len(), Ordering::Relaxed);
                }
            }
            if raw.len() > READ_GUARD {
                return false;
            }
        }
    })
    .await
    .unwrap_or(false);
    Got {
        closed,
        ..parse_partial(&raw)
    }
}

/// Decodes chunked framing as far as it is complete; returns the data and whether the final
/// chunk was seen.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
        else {
            return (body, false);
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return (body, true);
        }
        let take = size.min(rest.len());
        body.extend_from_slice(&rest[..take]);
        if rest.len() < size + 2 {
            return (body, false);
        }
        rest = &rest[size + 2..];
    }
}

/// A bomb response was bounded and visibly cut off: at most the cap (all zeros), no final
/// chunk, connection closed. A gateway that found the bomb before sending the header may
/// instead answer an error status with no decoded data at all.
fn assert_cut(what: &str, got: &Got) {
    assert!(
        got.body.len() <= CAP + SLACK,
        "{what}: {} decoded bytes (cap {CAP})",
        got.body.len()
    );
    assert!(got.closed, "{what}: the connection was not closed: {got:?}");
    if got.status == 200 {
        assert!(
            got.body.iter().all(|&b| b == 0),
            "{what}: decoded data is not the bomb's zeros: {:?}",
            String::from_utf8_lossy(&got.body[..got.body.len().min(200)])
        );
        assert!(
            !got.complete,
            "{what}: the cut-off response looks complete ({} bytes)",
            got.body.len()
        );
        assert_eq!(
            got.header("content-encoding"),
            None,
            "{what}: {:?}",
            got.headers
        );
    } else {
        assert!(
            got.status >= 500 && got.body.len() < 1024,
            "{what}: status {} with {} bytes: {:?} {:?}",
            got.status,
            got.body.len(),
            got.headers,
            String::from_utf8_lossy(&got.body[..got.body.len().min(200)])
        );
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

async fn cuts(gw: &GatewayProcess) -> f64 {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    metric(&text, "avx_decompression_cut_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_bombs_are_cut_at_max_decompressed_bytes_with_small_memory() {
    let site = site().await;
    let cuts_before = cuts(&site.gw).await;
    let rss_start = site.gw.rss_kib();

    // One client reads the whole-body bomb (one upstream write: each read inflates past the
    // decoder's per-read bound at once).
    let mut sock = TcpStream::connect(site.gw.addr).await.unwrap();
    sock.write_all(request("/bomb", "identity").as_bytes())
        .await
        .unwrap();
    let got = read_all(&mut sock, LIMIT).await;
    assert_cut("bulk bomb", &got);
    eprintln!(
        "bulk bomb: status {}, {} decoded bytes, complete {}",
        got.status,
        got.body.len(),
        got.complete
    );

    // One client reads the paced bomb promptly: the 8 MiB total is what cuts it.
    let mut sock = TcpStream::connect(site.gw.addr).await.unwrap();
    sock.write_all(request("/paced/prompt", "identity").as_bytes())
        .await
        .unwrap();
    // The origin paces its pieces with timers, so on a loaded 2-core machine reaching the cap
    // takes longer than the bulk bomb; the bound only has to stop a hung test.
    let got = read_all_reporting(&mut sock, PACED_LIMIT, &site.paced.progress).await;
    assert_cut("paced bomb, prompt reader", &got);
    eprintln!(
        "paced bomb, prompt reader: status {}, {} decoded bytes ({:.2} MiB), complete {}",
        got.status,
        got.body.len(),
        got.body.len() as f64 / (1 << 20) as f64,
        got.complete
    );
    assert_eq!(
        got.status, 200,
        "the paced bomb starts like a normal response"
    );
    // Each upstream read inflates to about 512 KiB here, so the cut lands within a read or
    // two of the cap: not much earlier.
    assert!(
        got.body.len() >= CAP - 2 * 1024 * 1024,
        "the prompt reader was cut at {} bytes, well before the {CAP} cap",
        got.body.len()
    );
    let paced_before = site.paced.heads().len();

    // Five clients fetch the paced bomb and stall (read nothing) while memory is watched.
    let mut stallers = Vec::new();
    for i in 0..STALLERS {
        let mut s = TcpStream::connect(site.gw.addr).await.unwrap();
        s.write_all(request(&format!("/paced/{i}"), "identity").as_bytes())
            .await
            .unwrap();
        stallers.push(s);
    }
    let all_upstream = wait_until(Duration::from_secs(5), || async {
        site.paced.heads().len() >= paced_before + STALLERS
    })
    .await;
    assert!(all_upstream, "origin saw {:?}", site.paced.heads());
    // Sampled for a fixed 2 s while they hold: the measurement window, not a wait for
    // something to happen.
    let mut peak = site.gw.rss_kib();
    let watch_until = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < watch_until {
        peak = peak.max(site.gw.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "RSS: {rss_start} KiB at start, peak {peak} KiB while {STALLERS} clients stall on the bomb"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "the gateway's RSS peaked at {peak} KiB with {STALLERS} stalled bomb clients"
    );

    // Now they read: each gets at most the cap, then the cut.
    let mut tasks = Vec::new();
    for (i, mut s) in stallers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let got = read_all(&mut s, LIMIT).await;
            (i, got)
        }));
    }
    for t in tasks {
        let (i, got) = t.await.unwrap();
        assert_cut(&format!("paced bomb, staller {i}"), &got);
        eprintln!(
            "paced bomb, staller {i}: status {}, {} decoded bytes",
            got.status,
            got.body.len()
        );
    }
    let rss_after = site.gw.rss_kib();
    eprintln!("RSS after the stallers read: {rss_after} KiB");

    // Over HTTP/2 the cut is a reset stream (or a closed connection), never END_STREAM.
    let mut h2 = H2Client::connect_h2c(site.h2c).await.expect("h2c connect");
    h2.wait_settings(LIMIT).await.expect("SETTINGS");
    let id = h2.next_stream_id();
    let block = h2.request_block("GET", "/paced/h2", &[("accept-encoding", "identity")]);
    h2.send(&frames::headers(id, &block, true, true))
        .await
        .unwrap();
    let o = h2.read_stream(id, LIMIT).await;
    eprintln!(
        "h2 paced bomb: status {:?}, {} decoded bytes, reset {:?}, closed {}, goaway {:?}",
        o.status,
        o.body.len(),
        o.reset,
        o.closed,
        o.goaway
    );
    assert!(o.body.len() <= CAP + SLACK, "h2: {} bytes", o.body.len());
    assert!(
        o.reset.is_some() || o.closed || o.goaway.is_some(),
        "h2: the cut-off stream was not reset: {:?} {:?} ended {}",
        o.status,
        o.reset,
        o.ended
    );

    // What the origins received: each request once, with the client's Accept-Encoding.
    let heads = site.paced.heads();
    assert_eq!(heads.len(), STALLERS + 2, "{heads:?}");
    for h in &heads {
        assert!(h.starts_with("GET /paced/"), "{h:?}");
        assert!(
            h.to_ascii_lowercase().contains("accept-encoding: identity"),
            "the client's Accept-Encoding went upstream: {h:?}"
        );
    }
    assert_eq!(site.origin.count(), 1, "{}", site.origin.describe());
    let cut_total = cuts(&site.gw).await;
    eprintln!("avx_decompression_cut_total: {cuts_before} -> {cut_total}");
    assert!(
        cut_total >= cuts_before + 1.0,
        "avx_decompression_cut_total {cuts_before} -> {cut_total}"
    );
    assert!(
        cut_total >= cuts_before + (STALLERS + 3) as f64,
        "every bomb was cut: avx_decompression_cut_total {cuts_before} -> {cut_total}, \
         {} responses cut",
        STALLERS + 3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_gzip_file_is_decoded_in_full_or_passed_through() {
    let site = site().await;
    let cuts_before = cuts(&site.gw).await;

    let mut sock = TcpStream::connect(site.gw.addr).await.unwrap();
    sock.write_all(request("/file", "identity").as_bytes())
        .await
        .unwrap();
    // One request on a kept-alive connection: it stays open, so read up to the final chunk.
    let got = read_one(&mut sock).await;
    assert_eq!(got.status, 200, "{:?}", got.headers);
    assert_eq!(got.header("content-encoding"), None, "{:?}", got.headers);
    assert!(got.complete, "the decoded file is complete (final chunk)");
    assert_eq!(got.body.len(), site.text.len());
    assert!(
        got.body == site.text,
        "decoded file differs from the original"
    );

    let mut sock = TcpStream::connect(site.gw.addr).await.unwrap();
    sock.write_all(request("/file", "gzip").as_bytes())
        .await
        .unwrap();
    let got = read_one(&mut sock).await;
    assert_eq!(got.status, 200, "{:?}", got.headers);
    assert_eq!(
        got.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        got.headers
    );
    assert!(got.complete);
    assert!(
        got.body == site.text_gz,
        "passed-through gzip differs from the origin's ({} vs {} bytes)",
        got.body.len(),
        site.text_gz.len()
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&got.body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert!(decoded == site.text);

    let seen = site.origin.requests();
    assert_eq!(seen.len(), 2, "{}", site.origin.describe());
    assert_eq!(
        cuts(&site.gw).await,
        cuts_before,
        "a normal file was counted as cut"
    );
}

/// Reads one response on a connection that stays open: up to the final chunk or the
/// Content-Length, or the close.
async fn read_one(sock: &mut TcpStream) -> Got {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => 0,
        };
        raw.extend_from_slice(&buf[..n]);
        let parsed = parse_partial(&raw);
        if n == 0 || parsed.complete || raw.len() > READ_GUARD {
            return Got {
                closed: n == 0,
                ..parsed
            };
        }
    }
}

/// Parses one response from what arrived so far.
fn parse_partial(raw: &[u8]) -> Got {
    let mut got = Got::default();
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return got;
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    got.status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    got.headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    if got
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        (got.body, got.complete) = dechunk(rest);
    } else if let Some(len) = got.header("content-length").and_then(|l| l.parse().ok()) {
        got.complete = rest.len() >= len;
        got.body = rest[..rest.len().min(len)].to_vec();
    } else {
        got.body = rest.to_vec();
    }
    got
}
