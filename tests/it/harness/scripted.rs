//! A programmable origin: the test decides, per path, what it answers, and reads back every
//! request it received.
//!
//! [`ScriptedOrigin::set`] scripts a [`Reply`] (status, headers, body, delay) for a path and
//! may be called again between requests to change it. A request is answered by the reply
//! scripted for its exact path and query, else for its path, else by the fallback
//! ([`ScriptedOrigin::set_fallback`]), else with a 404. With [`Reply::answer_304`], a
//! conditional request whose `If-None-Match` names the reply's `ETag` (or whose
//! `If-Modified-Since` equals its `Last-Modified`) gets a 304 carrying the reply's headers.
//!
//! Every request is recorded ([`Recorded`]): method, path and query, headers.

use super::upstream::{full, serve_http1, Body};
use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// How a reply's body is sent.
#[derive(Clone)]
pub enum ReplyBody {
    /// All at once, with `Content-Length`.
    Full(Bytes),
    /// As these chunks (chunked framing unless the reply sets `Content-Length`), `gap` apart.
    /// With `gate`, the last chunk waits for a permit of it (see [`Reply::hold_last_chunk`]).
    Chunks {
        /// The chunks, in order.
        chunks: Vec<Bytes>,
        /// Pause before each chunk after the first.
        gap: Duration,
        /// Permit the last chunk waits for.
        gate: Option<Arc<Semaphore>>,
    },
}

/// One scripted response.
#[derive(Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, in order (a name may repeat).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: ReplyBody,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Answer a matching conditional request with 304.
    pub answer_304: bool,
}

impl Reply {
    /// A 200 with this body and `Content-Type: text/plain`.
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply::status(200, body).header("content-type", "text/plain")
    }

    /// A response with this status and body and no headers.
    pub fn status(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Full(body.into()),
            delay: Duration::ZERO,
            answer_304: false,
        }
    }

    /// Adds a header (kept in order; a name may repeat).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces every header of this name with one value.
    pub fn set_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.header(name, value)
    }

    /// Waits `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Answers a matching conditional request with 304 (see the module docs).
    pub fn answer_304(mut self) -> Reply {
        self.answer_304 = true;
        self
    }

    /// Sends the body as `chunks`, `gap` apart.
    pub fn chunks(mut self, chunks: Vec<Bytes>, gap: Duration) -> Reply {
        self.body = ReplyBody::Chunks {
            chunks,
            gap,
            gate: None,
        };
        self
    }

    /// Makes the last chunk wait until a permit is added to the returned semaphore.
    pub fn hold_last_chunk(mut self) -> (Reply, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        if let ReplyBody::Chunks { gate: g, .. } = &mut self.body {
            *g = Some(gate.clone());
        }
        (self, gate)
    }

    /// The first value of a header of this reply.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request the origin received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The path and query, as sent.
    pub uri: String,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether this request targets `p` (exactly its path and query, or, when `p` has no
    /// query, its path).
    pub fn targets(&self, p: &str) -> bool {
        self.uri == p || (!p.contains('?') && self.path == p)
    }
}

#[derive(Default)]
struct Script {
    replies: Mutex<HashMap<String, Reply>>,
    fallback: Mutex<Option<Reply>>,
    log: Mutex<Vec<Recorded>>,
}

/// A running scripted origin, stopped on drop.
pub struct ScriptedOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    script: Arc<Script>,
    task: JoinHandle<()>,
}

impl ScriptedOrigin {
    /// Starts an origin with nothing scripted on a free loopback port.
    pub async fn start() -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind scripted origin");
        let addr = listener.local_addr().expect("scripted origin addr");
        let script = Arc::new(Script::default());
        let s = script.clone();
        let task = serve_http1(listener, move |req| answer(req, s.clone()));
        ScriptedOrigin { addr, script, task }
    }

    /// Scripts (or re-scripts) the reply for a path, a path and query, or either prefixed by a
    /// method and a space (`"DELETE /item"`).
    pub fn set(&self, path: &str, reply: Reply) {
        lock(&self.script.replies).insert(path.to_string(), reply);
    }

    /// Scripts the reply for every request nothing else matches.
    pub fn set_fallback(&self, reply: Reply) {
        *lock(&self.script.fallback) = Some(reply);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.script.log).clone()
    }

    /// The requests that targeted `p` (see [`Recorded::targets`]).
    pub fn requests_to(&self, p: &str) -> Vec<Recorded> {
        lock(&self.script.log)
            .iter()
            .filter(|r| r.targets(p))
            .cloned()
            .collect()
    }

    /// How many requests targeted `p` (see [`Recorded::targets`]).
    pub fn hits(&self, p: &str) -> usize {
        lock(&self.script.log)
            .iter()
            .filter(|r| r.targets(p))
            .count()
    }

    /// How many requests were received in all.
    pub fn total_hits(&self) -> usize {
        lock(&self.script.log).len()
    }

    /// The latest request that targeted `p`.
    pub fn last(&self, p: &str) -> Option<Recorded> {
        lock(&self.script.log)
            .iter()
            .rev()
            .find(|r| r.targets(p))
            .cloned()
    }

    /// Stops listening and drops every open connection; new connections are refused. The
    /// recorded requests stay readable.
    ///
    /// Returns once the accept loop is gone: `abort` only asks, and until the loop's task is
    /// dropped its connections live on, so a kept-alive connection could still answer the
    /// caller's next request (seen once in CI as a refetch where a stale answer was due).
    pub async fn shut_down(&self) {
        self.task.abort();
        let stopped =
            super::wait_until(Duration::from_secs(5), || async { self.task.is_finished() }).await;
        assert!(stopped, "scripted origin still running 5 s after shut_down");
    }

    /// Stops listening; connections are refused from now on. Returns the address.
    pub fn stop(self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn answer(req: Request<Incoming>, script: Arc<Script>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let uri = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_string());
    let rec = Recorded {
        method: req.method().to_string(),
        path: path.clone(),
        uri: uri.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    lock(&script.log).push(rec.clone());
    // Read (and drop) any request body so the connection stays usable.
    let _ = req.into_body().collect().await;
    let reply = {
        let replies = lock(&script.replies);
        let method = &rec.method;
        replies
            .get(&format!("{method} {uri}"))
            .or_else(|| replies.get(&format!("{method} {path}")))
            .or_else(|| replies.get(&uri))
            .or_else(|| replies.get(&path))
            .cloned()
            .or_else(|| lock(&script.fallback).clone())
    };
    let Some(reply) = reply else {
        let mut resp = Response::new(full(format!("nothing scripted for {uri}\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let not_modified = reply.answer_304 && conditional_matches(&rec, &reply);
    let status = if not_modified { 304 } else { reply.status };
    // hyper itself leaves the body out of a HEAD response.
    let body = match &reply.body {
        _ if not_modified => full(Bytes::new()),
        ReplyBody::Full(b) => full(b.clone()),
        ReplyBody::Chunks { chunks, gap, gate } => chunked(chunks.clone(), *gap, gate.clone()),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).expect("scripted status");
    for (k, v) in &reply.headers {
        if not_modified && k.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let name = hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("header name");
        let value = hyper::header::HeaderValue::from_str(v).expect("header value");
        resp.headers_mut().append(name, value);
    }
    resp
}

/// Whether a conditional request matches the reply's current validators.
fn conditional_matches(req: &Recorded, reply: &Reply) -> bool {
    if let Some(inm) = req.header("if-none-match") {
        let Some(etag) = reply.get("etag") else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm.trim() == "*" || inm.split(',').any(|t| weak(t) == weak(etag));
    }
    match (req.header("if-modified-since"), reply.get("last-modified")) {
        (Some(ims), Some(lm)) => ims.trim() == lm.trim(),
        _ => false,
    }
}

fn chunked(chunks: Vec<Bytes>, gap: Duration, gate: Option<Arc<Semaphore>>) -> Body {
    let n = chunks.len();
    let frames = stream::unfold(
        (chunks.into_iter().enumerate(), gate),
        move |(mut it, gate)| async move {
            let (i, chunk) = it.next()?;
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if i + 1 == n {
                if let Some(g) = &gate {
                    let _ = g.acquire().await.map(|p| p.forget());
                }
            }
            Some((Ok::<_, Infallible>(Frame::data(chunk)), (it, gate)))
        },
    );
    BodyExt::boxed(StreamBody::new(frames))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for `Date`, `Expires`, `Last-Modified`.
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
