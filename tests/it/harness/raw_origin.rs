//! A hand-written HTTP/1.1 origin that records every byte the gateway sends it.
//!
//! Not hyper: hyper would refuse, normalize or hide exactly what request-smuggling tests need
//! to see, i.e. the bytes on the gateway-to-origin hop and how a plain parser splits them into
//! requests. The parser is deliberately *lenient* where real backends are (a bare LF ends a
//! line, empty lines between requests are skipped), so that a request the gateway lets through
//! in a form some backend would split differently shows up here as a second request; and it
//! is *strict* about framing (conflicting Content-Length, Transfer-Encoding with
//! Content-Length, a non-chunked final coding, obs-fold, bad chunk sizes): such a request is
//! recorded in [`RawOrigin::malformed`] with the bytes that were left and the connection is
//! closed, because the gateway must never forward one.
//!
//! Every request is answered (see [`OriginReply`]): by the first path-prefix entry of
//! [`RawOrigin::reply_for`] that matches, else by the responder closure
//! ([`RawOrigin::set_responder`]), else with a `200` whose body names the request number.
//! Every response carries `Content-Length`, `X-Origin-Conn` (the connection index) and
//! `X-Origin-Req` (the request's 1-based number over the whole origin).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Larger request heads are recorded as malformed: the gateway caps its own at 64 KiB.
const MAX_HEAD: usize = 1024 * 1024;

/// One request as this origin parsed it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Index of the connection it arrived on (0-based, in accept order).
    pub conn: usize,
    /// 1-based number over the whole origin, as in `X-Origin-Req`.
    pub seq: usize,
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// The version token, e.g. `HTTP/1.1`.
    pub version: String,
    /// Header names (lower-cased) and values (trimmed), in wire order.
    pub headers: Vec<(String, String)>,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in wire order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// Bytes this origin could not parse as a request; the connection was closed after them.
#[derive(Debug, Clone)]
pub struct Malformed {
    /// Index of the connection.
    pub conn: usize,
    /// Why the parse failed.
    pub reason: String,
    /// The unparsed bytes, from the start of the failed request.
    pub bytes: Vec<u8>,
}

/// A response this origin writes.
#[derive(Debug, Clone)]
pub struct OriginReply {
    /// Status code.
    pub status: u16,
    /// Extra headers, in order; `Content-Length` is added unless one is set here.
    pub headers: Vec<(String, String)>,
    /// The body (not written for HEAD).
    pub body: Vec<u8>,
    /// Send `Connection: close` and close after the response.
    pub close: bool,
    /// Close after the response without saying so, as an origin whose idle timeout fires.
    pub drop_after: bool,
    /// Close without writing any response, as an origin that crashed mid-request.
    pub abort: bool,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl OriginReply {
    /// A response with this status and body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> OriginReply {
        OriginReply {
            status,
            headers: Vec::new(),
            body: body.into(),
            close: false,
            drop_after: false,
            abort: false,
            delay: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> OriginReply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Closes the connection after this response.
    pub fn close(mut self) -> OriginReply {
        self.close = true;
        self
    }

    /// Closes the connection after this response without a `Connection: close`.
    pub fn drop_after(mut self) -> OriginReply {
        self.drop_after = true;
        self
    }

    /// Closes the connection instead of answering.
    pub fn abort(mut self) -> OriginReply {
        self.abort = true;
        self
    }

    /// Answers after `delay`.
    pub fn delay(mut self, delay: Duration) -> OriginReply {
        self.delay = Some(delay);
        self
    }
}

/// Computes the reply to a request.
pub type Responder = Arc<dyn Fn(&SeenRequest) -> OriginReply + Send + Sync>;

/// What one connection carried.
#[derive(Default)]
struct ConnLog {
    raw: Vec<u8>,
    open: bool,
}

#[derive(Default)]
struct State {
    conns: Mutex<Vec<ConnLog>>,
    requests: Mutex<Vec<SeenRequest>>,
    malformed: Mutex<Vec<Malformed>>,
    table: Mutex<Vec<(String, OriginReply)>>,
    responder: Mutex<Option<Responder>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide what the origin recorded from the next assertion.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running raw origin, stopped on drop.
pub struct RawOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl RawOrigin {
    /// Starts an origin on a free loopback port with the default replies.
    pub async fn start() -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw origin");
        let addr = listener.local_addr().expect("raw origin addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = super::accept_loop(listener, move |sock| serve(sock, st.clone()));
        RawOrigin { addr, state, task }
    }

    /// Starts an origin whose replies come from `responder` (unless a prefix entry matches).
    pub async fn start_with<F>(responder: F) -> RawOrigin
    where
        F: Fn(&SeenRequest) -> OriginReply + Send + Sync + 'static,
    {
        let origin = Self::start().await;
        origin.set_responder(responder);
        origin
    }

    /// Answers every request whose target starts with `prefix` with `reply`; the first
    /// matching entry, in the order added, wins; a prefix added again replaces its entry.
    pub fn reply_for(&self, prefix: &str, reply: OriginReply) {
        let mut table = lock(&self.state.table);
        match table.iter_mut().find(|(p, _)| p == prefix) {
            Some(entry) => entry.1 = reply,
            None => table.push((prefix.to_string(), reply)),
        }
    }

    /// Sets the closure that answers requests no prefix entry matches.
    pub fn set_responder<F>(&self, responder: F)
    where
        F: Fn(&SeenRequest) -> OriginReply + Send + Sync + 'static,
    {
        *lock(&self.state.responder) = Some(Arc::new(responder));
    }

    /// Every request parsed so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.state.requests).clone()
    }

    /// How many requests were parsed so far.
    pub fn count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// The targets of every request so far, in arrival order (for assertion messages).
    pub fn targets(&self) -> Vec<String> {
        lock(&self.state.requests)
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }

    /// Whether any parsed request's target contains `needle`.
    pub fn saw_target_containing(&self, needle: &str) -> bool {
        lock(&self.state.requests)
            .iter()
            .any(|r| r.target.contains(needle))
    }

    /// Every byte received on connection `conn` (empty for an unknown index).
    pub fn raw(&self, conn: usize) -> Vec<u8> {
        lock(&self.state.conns)
            .get(conn)
            .map(|c| c.raw.clone())
            .unwrap_or_default()
    }

    /// Every byte received, all connections concatenated in accept order.
    pub fn all_raw(&self) -> Vec<u8> {
        lock(&self.state.conns)
            .iter()
            .flat_map(|c| c.raw.iter().copied())
            .collect()
    }

    /// Whether `needle` occurs anywhere in the received bytes of any one connection.
    pub fn raw_contains(&self, needle: &[u8]) -> bool {
        lock(&self.state.conns)
            .iter()
            .any(|c| find(&c.raw, needle).is_some())
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.state.conns).len()
    }

    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> usize {
        lock(&self.state.conns).iter().filter(|c| c.open).count()
    }

    /// Everything that failed to parse, in order.
    pub fn malformed(&self) -> Vec<Malformed> {
        lock(&self.state.malformed).clone()
    }

    /// Waits up to `deadline` until at least `n` requests were parsed.
    pub async fn wait_for_count(&self, n: usize, deadline: Duration) -> bool {
        super::wait_until(deadline, || async { self.count() >= n }).await
    }

    /// Waits up to `deadline` until a request whose target contains `needle` was parsed.
    pub async fn wait_for_target(&self, needle: &str, deadline: Duration) -> bool {
        super::wait_until(deadline, || async { self.saw_target_containing(needle) }).await
    }

    /// Waits up to `deadline` until `cond` holds for the requests parsed so far.
    pub async fn wait_for<F>(&self, deadline: Duration, cond: F) -> bool
    where
        F: Fn(&[SeenRequest]) -> bool,
    {
        super::wait_until(deadline, || async { cond(&lock(&self.state.requests)) }).await
    }

    /// Waits up to `deadline` until no connection is open (e.g. the gateway dropped its pool).
    pub async fn wait_all_closed(&self, deadline: Duration) -> bool {
        super::wait_until(deadline, || async { self.open_connections() == 0 }).await
    }

    /// A multi-line summary of everything received, for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} connection(s), requests {:?}",
            self.connections(),
            self.targets()
        );
        for m in self.malformed() {
            s.push_str(&format!(
                "\nmalformed on conn {}: {} in {:?}",
                m.conn,
                m.reason,
                String::from_utf8_lossy(&m.bytes[..m.bytes.len().min(300)])
            ));
        }
        s
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve(mut sock: TcpStream, st: Arc<State>) {
    let conn = {
        let mut conns = lock(&st.conns);
        conns.push(ConnLog {
            raw: Vec::new(),
            open: true,
        });
        conns.len() - 1
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'conn: loop {
        loop {
            match parse(&buf) {
                Parse::Partial => break,
                Parse::Invalid(reason) => {
                    lock(&st.malformed).push(Malformed {
                        conn,
                        reason,
                        bytes: std::mem::take(&mut buf),
                    });
                    break 'conn;
                }
                Parse::Complete(req, used) => {
                    buf.drain(..used);
                    let (bytes, reply) = respond(&st, conn, req);
                    if let Some(delay) = reply.delay {
                        tokio::time::sleep(delay).await;
                    }
                    if reply.abort {
                        break 'conn;
                    }
                    if sock.write_all(&bytes).await.is_err() || reply.close || reply.drop_after {
                        break 'conn;
                    }
                }
            }
        }
        let n = match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                // Whatever is left is a request the gateway started and never finished.
                if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                    lock(&st.malformed).push(Malformed {
                        conn,
                        reason: "connection closed inside a request".into(),
                        bytes: std::mem::take(&mut buf),
                    });
                }
                break;
            }
            Ok(n) => n,
        };
        lock(&st.conns)[conn].raw.extend_from_slice(&chunk[..n]);
        buf.extend_from_slice(&chunk[..n]);
    }
    lock(&st.conns)[conn].open = false;
}

/// Records `req`, picks its reply and renders it; returns the bytes and the reply (its
/// `close` set when the request asked for one).
fn respond(st: &State, conn: usize, mut req: Parsed) -> (Vec<u8>, OriginReply) {
    let seen = {
        let mut requests = lock(&st.requests);
        let seen = SeenRequest {
            conn,
            seq: requests.len() + 1,
            method: std::mem::take(&mut req.method),
            target: std::mem::take(&mut req.target),
            version: std::mem::take(&mut req.version),
            headers: std::mem::take(&mut req.headers),
            body: std::mem::take(&mut req.body),
        };
        requests.push(seen.clone());
        seen
    };
    let table_hit = lock(&st.table)
        .iter()
        .find(|(p, _)| seen.target.starts_with(p.as_str()))
        .map(|(_, r)| r.clone());
    let responder = lock(&st.responder).clone();
    let mut reply = table_hit
        .or_else(|| responder.map(|f| f(&seen)))
        .unwrap_or_else(|| OriginReply::new(200, format!("origin request {}\n", seen.seq)));
    let client_close = seen
        .header_all("connection")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"));
    let http10_close = seen.version == "HTTP/1.0"
        && !seen
            .header_all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"));
    let close = reply.close || client_close || http10_close;
    reply.close = close;

    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status)).into_bytes();
    let has = |name: &str| {
        reply
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    for (k, v) in &reply.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    let bodyless = matches!(reply.status, 100..=199 | 204 | 304);
    if !bodyless && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", reply.body.len()).as_bytes());
    }
    out.extend_from_slice(
        format!("X-Origin-Conn: {conn}\r\nX-Origin-Req: {}\r\n", seen.seq).as_bytes(),
    );
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if seen.method != "HEAD" && !bodyless {
        out.extend_from_slice(&reply.body);
    }
    (out, reply)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A request as parsed, before it gets its connection and number.
struct Parsed {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

enum Parse {
    /// A request and the bytes it used (leading empty lines included).
    Complete(Parsed, usize),
    Partial,
    Invalid(String),
}

/// The next line of `buf` from `at`: (content without CR/LF, index after the LF).
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rel = buf[at..].iter().position(|&b| b == b'\n')?;
    let mut content = &buf[at..at + rel];
    if content.last() == Some(&b'\r') {
        content = &content[..content.len() - 1];
    }
    Some((content, at + rel + 1))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse(buf: &[u8]) -> Parse {
    // RFC 9112 section 2.2: empty lines before a request line are ignored.
    let mut at = 0;
    while let Some((l, next)) = line(buf, at) {
        if !l.is_empty() {
            break;
        }
        at = next;
    }
    let start = at;
    let mut lines = Vec::new();
    let body_start = loop {
        let Some((l, next)) = line(buf, at) else {
            if buf.len() - start > MAX_HEAD {
                return Parse::Invalid("request head over 1 MiB".into());
            }
            return Parse::Partial;
        };
        at = next;
        if l.is_empty() {
            break at;
        }
        lines.push(l);
    };
    let Some((request_line, header_lines)) = lines.split_first() else {
        return Parse::Partial;
    };
    let Ok(request_line) = std::str::from_utf8(request_line) else {
        return Parse::Invalid("request line is not UTF-8".into());
    };
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Parse::Invalid(format!("request line {request_line:?}"));
    };
    if !is_token(method) || target.is_empty() || !version.starts_with("HTTP/1.") {
        return Parse::Invalid(format!("request line {request_line:?}"));
    }
    let mut headers = Vec::new();
    for l in header_lines {
        if l.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Parse::Invalid("obs-fold continuation line".into());
        }
        let text = String::from_utf8_lossy(l);
        let Some((name, value)) = text.split_once(':') else {
            return Parse::Invalid(format!("header line without a colon: {text:?}"));
        };
        if !is_token(name) {
            return Parse::Invalid(format!("bad header name {name:?}"));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Parse::Invalid(format!("control byte in the value of {name}"));
        }
        headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    let values = |n: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    };
    let te = values("transfer-encoding");
    let cl = values("content-length");
    let (body, used) = if !te.is_empty() {
        if !cl.is_empty() {
            return Parse::Invalid("Transfer-Encoding together with Content-Length".into());
        }
        if te.last().map(String::as_str) != Some("chunked") {
            return Parse::Invalid(format!("final transfer coding is not chunked: {te:?}"));
        }
        match parse_chunked(buf, body_start) {
            Chunked::Done(body, end) => (body, end),
            Chunked::Partial => return Parse::Partial,
            Chunked::Invalid(why) => return Parse::Invalid(why),
        }
    } else if !cl.is_empty() {
        if cl
            .iter()
            .any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()))
            || cl.iter().any(|v| *v != cl[0])
        {
            return Parse::Invalid(format!("Content-Length {cl:?}"));
        }
        let Ok(len) = cl[0].parse::<usize>() else {
            return Parse::Invalid(format!("Content-Length {cl:?} out of range"));
        };
        if buf.len() - body_start < len {
            return Parse::Partial;
        }
        (buf[body_start..body_start + len].to_vec(), body_start + len)
    } else {
        (Vec::new(), body_start)
    };
    Parse::Complete(
        Parsed {
            method: method.to_string(),
            target: target.to_string(),
            version: version.to_string(),
            headers,
            body,
        },
        used,
    )
}

enum Chunked {
    Done(Vec<u8>, usize),
    Partial,
    Invalid(String),
}

fn parse_chunked(buf: &[u8], mut at: usize) -> Chunked {
    let mut body = Vec::new();
    loop {
        let Some((size_line, next)) = line(buf, at) else {
            return Chunked::Partial;
        };
        let text = String::from_utf8_lossy(size_line);
        let size_text = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim_end_matches([' ', '\t']);
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Chunked::Invalid(format!("chunk size line {text:?}"));
        }
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Chunked::Invalid(format!("chunk size line {text:?}"));
        };
        at = next;
        if size == 0 {
            // Trailer fields up to the empty line.
            loop {
                let Some((trailer, next)) = line(buf, at) else {
                    return Chunked::Partial;
                };
                at = next;
                if trailer.is_empty() {
                    return Chunked::Done(body, at);
                }
            }
        }
        if buf.len() < at + size {
            return Chunked::Partial;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        match line(buf, at) {
            None if buf.len() - at < 2 => return Chunked::Partial,
            Some((&[], next)) => at = next,
            _ => return Chunked::Invalid("chunk data not followed by CRLF".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> (Parsed, usize) {
        match parse(raw) {
            Parse::Complete(p, n) => (p, n),
            Parse::Partial => panic!("partial: {:?}", String::from_utf8_lossy(raw)),
            Parse::Invalid(e) => panic!("invalid ({e}): {:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn parses_pipelined_chunked_and_content_length_requests() {
        let raw = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nT: v\r\n\r\nGET /b HTTP/1.1\nContent-Length: 2\n\nhi";
        let (a, used) = complete(raw);
        assert_eq!((a.target.as_str(), a.body.as_slice()), ("/a", &b"abc"[..]));
        let (b, used2) = complete(&raw[used..]);
        assert_eq!((b.target.as_str(), b.body.as_slice()), ("/b", &b"hi"[..]));
        assert_eq!(used + used2, raw.len());
    }

    #[test]
    fn refuses_ambiguous_framing() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\n",
        ] {
            assert!(
                matches!(parse(raw), Parse::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            Parse::Partial
        ));
    }
}
