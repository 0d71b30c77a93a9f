//! Connection reuse on both sides of the gateway: many requests on one client connection,
//! pipelining, clients that leave mid-request, pooled upstream connections the origin closed,
//! and the retry of a request whose pooled connection died. These are the paths the
//! per-connection and pool patches in `patches/pingora-core` touch.

use crate::harness::{GatewayProcess, OriginReply, RawConn, RawOrigin};
use std::net::SocketAddr;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

fn config(origin: SocketAddr, preserve: bool) -> String {
    format!(
        "server:\n  workers: 1\n  pid_file: {{dir}}/gw.pid\n  upgrade_sock: {{dir}}/upgrade.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n  preserve_header_case: {preserve}\nlisteners:\n  - address: {{listen}}\nupstreams:\n  backend:\n    servers: [{{ address: {origin} }}]\nroutes:\n  - {{ name: app, match: {{ path_prefix: /app/ }}, upstream: backend }}\n"
    )
}

/// The number in `/app/<word>/<n>`.
fn index_of(target: &str) -> Option<usize> {
    target.split('?').next()?.rsplit('/').next()?.parse().ok()
}

/// An origin whose answer names the request it answers, in its body and in a header of its
/// own, so a response handed to the wrong request shows.
async fn naming_origin() -> RawOrigin {
    RawOrigin::start_with(|req| {
        let Some(i) = index_of(&req.target) else {
            return OriginReply::new(200, format!("{}\n", req.target));
        };
        OriginReply::new(200, response_body(i)).header(&format!("X-Resp-Only-{i}"), &i.to_string())
    })
    .await
}

fn response_body(i: usize) -> String {
    format!("r{i}:{}", "x".repeat((i * 101) % 3000))
}

fn request_body(i: usize) -> String {
    format!("b{i}:{}", "y".repeat((i * 53) % 2000))
}

/// Request `i` of the varied sequence: GET, POST with a length, POST chunked in turn, each
/// with header names of its own and a different number and size of extra headers.
fn varied_request(i: usize) -> Vec<u8> {
    let method = if i % 3 == 0 { "GET" } else { "POST" };
    let mut head =
        format!("{method} /app/req/{i}?q={i} HTTP/1.1\r\nHost: ka.test\r\nX-MiXeD-{i}: m{i}\r\n");
    for k in 0..pads(i) {
        head.push_str(&format!(
            "X-Pad-{i}-{k}: {}\r\n",
            "p".repeat((i * 37 + k) % 500)
        ));
    }
    let body = request_body(i);
    match i % 3 {
        0 => head.push_str("\r\n"),
        1 => head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len())),
        _ => {
            let (a, b) = body.split_at(body.len() / 2);
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            for part in [a, b] {
                if !part.is_empty() {
                    head.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
                }
            }
            head.push_str("0\r\n\r\n");
        }
    }
    head.into_bytes()
}

fn pads(i: usize) -> usize {
    (i * 7) % 13
}

async fn sixty_varied_requests_on_one_connection(preserve: bool) {
    const N: usize = 60;
    let origin = naming_origin().await;
    let gw = GatewayProcess::start(&config(origin.addr, preserve));
    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..N {
        conn.send(&varied_request(i)).await.expect("send");
        let resp = conn
            .read_response(LIMIT)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}; origin: {}", origin.describe()));
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        assert_eq!(resp.body, response_body(i).into_bytes(), "request {i}");
        let own = format!("x-resp-only-{i}");
        let theirs: Vec<_> = resp
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-resp-only-"))
            .collect();
        assert_eq!(theirs.len(), 1, "request {i}: {:?}", resp.headers);
        assert_eq!(theirs[0].0, own, "request {i}");
    }

    let seen = origin.requests();
    assert_eq!(seen.len(), N, "{}", origin.describe());
    assert!(origin.malformed().is_empty(), "{}", origin.describe());
    for (i, req) in seen.iter().enumerate() {
        assert_eq!(req.target, format!("/app/req/{i}?q={i}"), "{req:?}");
        assert_eq!(req.method, if i % 3 == 0 { "GET" } else { "POST" });
        let family = |prefix: &str| {
            req.headers
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(family("x-mixed-"), vec![format!("x-mixed-{i}")], "{req:?}");
        let want_pads: Vec<_> = (0..pads(i)).map(|k| format!("x-pad-{i}-{k}")).collect();
        assert_eq!(family("x-pad-"), want_pads, "request {i}");
        for k in 0..pads(i) {
            let want = "p".repeat((i * 37 + k) % 500);
            assert_eq!(req.header(&format!("x-pad-{i}-{k}")), Some(want.as_str()));
        }
        let want_body = if i % 3 == 0 {
            Vec::new()
        } else {
            request_body(i).into_bytes()
        };
        assert_eq!(req.body, want_body, "request {i}");
    }
    // The names reach the origin as the client wrote them only when case is preserved.
    let raw = String::from_utf8_lossy(&origin.all_raw()).into_owned();
    let mixed = (0..N)
        .filter(|i| raw.contains(&format!("\r\nX-MiXeD-{i}: m{i}\r\n")))
        .count();
    assert_eq!(mixed, if preserve { N } else { 0 }, "preserve={preserve}");
    // Every request rode one pooled upstream connection, give or take a spare the pool opened.
    assert!(
        origin.connections() <= 2,
        "{} upstream connections for {N} sequential requests",
        origin.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_varied_requests_on_one_connection_keep_their_own_headers_and_bodies() {
    sixty_varied_requests_on_one_connection(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_varied_requests_keep_their_own_headers_without_case_preservation() {
    sixty_varied_requests_on_one_connection(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_or_the_rest_refused() {
    let origin = naming_origin().await;
    let gw = GatewayProcess::start(&config(origin.addr, false));
    // Routed, routed with a body, unrouted, routed chunked, routed: in one write.
    let batch = [
        b"GET /app/p/1 HTTP/1.1\r\nHost: ka.test\r\n\r\n".to_vec(),
        b"POST /app/p/2 HTTP/1.1\r\nHost: ka.test\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"GET /nowhere/3 HTTP/1.1\r\nHost: ka.test\r\n\r\n".to_vec(),
        b"POST /app/p/4 HTTP/1.1\r\nHost: ka.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            .to_vec(),
        b"GET /app/p/5 HTTP/1.1\r\nHost: ka.test\r\n\r\n".to_vec(),
    ];
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(&batch.concat()).await.expect("send the batch");

    let mut answered = Vec::new();
    for i in 1..=5 {
        match conn.read_response(LIMIT).await {
            Ok(resp) => answered.push((i, resp)),
            Err(e) => {
                // Refusing the rest of a pipeline by closing is allowed; hanging is not.
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof,
                    "request {i}: {e}"
                );
                break;
            }
        }
    }
    assert!(!answered.is_empty(), "no answer at all");
    for (i, resp) in &answered {
        if *i == 3 {
            assert_eq!(resp.status, 404, "{resp:?}");
        } else {
            assert_eq!(resp.status, 200, "request {i}: {resp:?}");
            assert_eq!(resp.body, response_body(*i).into_bytes(), "request {i}");
        }
    }
    // The origin saw the routed requests that were answered, once each, in order, with their
    // bodies; none that the client was not answered for.
    let routed: Vec<usize> = answered
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| *i != 3)
        .collect();
    let seen = origin.requests();
    let seen_idx: Vec<usize> = seen.iter().filter_map(|r| index_of(&r.target)).collect();
    assert_eq!(seen_idx, routed, "{}", origin.describe());
    for r in &seen {
        match index_of(&r.target) {
            Some(2) => assert_eq!(r.body, b"hello"),
            Some(4) => assert_eq!(r.body, b"abc"),
            _ => assert!(r.body.is_empty(), "{r:?}"),
        }
    }
    assert!(origin.malformed().is_empty(), "{}", origin.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_body_costs_its_upstream_connection_and_nothing_else() {
    let origin = naming_origin().await;
    let gw = GatewayProcess::start(&config(origin.addr, false));
    {
        let mut conn = RawConn::connect(gw.addr).await;
        let head = b"POST /app/up/1 HTTP/1.1\r\nHost: ka.test\r\nContent-Length: 100000\r\n\r\n";
        conn.send(head).await.expect("send head");
        conn.send(&[b'z'; 1000])
            .await
            .expect("send part of the body");
        // The head was forwarded: the origin has a connection with half a request on it.
        assert!(
            crate::harness::wait_until(LIMIT, || async { origin.connections() >= 1 }).await,
            "the gateway never opened an upstream connection"
        );
    }
    // That connection carries a request that can never complete: it must be closed, not
    // pooled for the next client.
    assert!(
        origin.wait_all_closed(LIMIT).await,
        "the half-sent request's upstream connection stayed open: {}",
        origin.describe()
    );
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /app/next/2 HTTP/1.1\r\nHost: ka.test\r\n\r\n")
        .await
        .expect("send");
    let resp = conn.read_response(LIMIT).await.expect("next response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, response_body(2).into_bytes());
    // The abandoned request never completed at the origin; only the next one did.
    let seen = origin.targets();
    assert_eq!(
        seen,
        vec!["GET /app/next/2".to_string()],
        "{}",
        origin.describe()
    );
    // What it got of the abandoned one was the head and (part of) the body the client sent,
    // then the close: nothing else, and nothing more on that connection.
    let partial = origin.malformed();
    assert_eq!(partial.len(), 1, "{}", origin.describe());
    assert_eq!(partial[0].conn, 0);
    assert!(
        partial[0].reason.contains("closed inside"),
        "{:?}",
        partial[0]
    );
    let bytes = &partial[0].bytes;
    assert!(bytes.starts_with(b"POST /app/up/1 HTTP/1.1\r\n"));
    // The client's close may overtake the forwarding of its last bytes: some of them, no more.
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the head went upstream whole")
        + 4;
    let body = &bytes[head_end..];
    assert!(
        body.len() <= 1000 && body.iter().all(|b| *b == b'z'),
        "{:?}",
        String::from_utf8_lossy(body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_the_origin_is_slow_never_gets_its_answer_to_someone_else() {
    let origin = naming_origin().await;
    origin.reply_for(
        "/app/slow/",
        OriginReply::new(200, "the slow answer").delay(Duration::from_millis(500)),
    );
    let gw = GatewayProcess::start(&config(origin.addr, false));
    {
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(b"GET /app/slow/1 HTTP/1.1\r\nHost: ka.test\r\n\r\n")
            .await
            .expect("send");
        assert!(origin.wait_for_target("/app/slow/1", LIMIT).await);
    }
    // Requests during and after the slow answer, on new client connections, each get theirs:
    // keep going until well past the moment the slow answer came back to the gateway.
    let until = std::time::Instant::now() + Duration::from_millis(800);
    let mut i = 2;
    while std::time::Instant::now() < until || i < 8 {
        i += 1;
        let mut conn = RawConn::connect(gw.addr).await;
        for j in 0..3 {
            let n = i * 10 + j;
            conn.send(format!("GET /app/after/{n} HTTP/1.1\r\nHost: ka.test\r\n\r\n").as_bytes())
                .await
                .expect("send");
            let resp = conn.read_response(LIMIT).await.expect("response");
            assert_eq!(resp.status, 200, "{resp:?}");
            assert_eq!(resp.body, response_body(n).into_bytes(), "request {n}");
        }
    }
    let slow = origin
        .targets()
        .iter()
        .filter(|t| t.starts_with("GET /app/slow/"))
        .count();
    assert_eq!(slow, 1, "{} requests", origin.count());
    assert!(origin.malformed().is_empty(), "{:?}", origin.malformed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_origin_closed_while_idle_is_not_reused() {
    let origin = naming_origin().await;
    let gw = GatewayProcess::start(&config(origin.addr, false));
    // Each answer closes its connection afterwards without saying so, like an origin whose
    // keep-alive timeout fires just after answering.
    origin.set_responder(|req| {
        let i = index_of(&req.target).unwrap_or(0);
        OriginReply::new(200, response_body(i)).drop_after()
    });
    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..6 {
        conn.send(format!("GET /app/idle/{i} HTTP/1.1\r\nHost: ka.test\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let resp = conn.read_response(LIMIT).await.expect("response");
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        assert_eq!(resp.body, response_body(i).into_bytes(), "request {i}");
        // Let the close land so the next request finds a dead idle connection in the pool.
        assert!(origin.wait_all_closed(LIMIT).await, "{}", origin.describe());
    }
    // Racing the close: the next request may find the connection dead only when it is used.
    for i in 6..40 {
        conn.send(format!("GET /app/idle/{i} HTTP/1.1\r\nHost: ka.test\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let resp = conn.read_response(LIMIT).await.expect("response");
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        assert_eq!(resp.body, response_body(i).into_bytes(), "request {i}");
    }
    let seen: Vec<usize> = origin
        .targets()
        .iter()
        .filter_map(|t| index_of(t))
        .collect();
    // A GET retried after its pooled connection turned out dead may reach the origin twice,
    // but only when the first attempt never got an answer; with this origin every attempt
    // that arrives is answered, so each request is seen exactly once.
    assert_eq!(seen, (0..40).collect::<Vec<_>>(), "{}", origin.describe());
    assert!(origin.malformed().is_empty(), "{}", origin.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_whose_pooled_connection_dies_is_retried_once_on_a_new_one() {
    let origin = naming_origin().await;
    let gw = GatewayProcess::start(&config(origin.addr, false));
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /app/warm/1 HTTP/1.1\r\nHost: ka.test\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(conn.read_response(LIMIT).await.expect("warm").status, 200);
    assert_eq!(origin.connections(), 1);

    // The next request rides the pooled connection; the origin drops it unanswered the first
    // time it sees it, as a backend that closed the idle connection just as it was reused.
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = attempts.clone();
    origin.set_responder(move |req| {
        let i = index_of(&req.target).unwrap_or(0);
        if req.target.starts_with("/app/dies/")
            && a.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0
        {
            return OriginReply::new(200, "").abort();
        }
        OriginReply::new(200, response_body(i))
    });
    conn.send(b"GET /app/dies/2 HTTP/1.1\r\nHost: ka.test\r\n\r\n")
        .await
        .expect("send");
    let resp = conn.read_response(LIMIT).await.expect("retried response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, response_body(2).into_bytes());
    let dies: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|r| r.target == "/app/dies/2")
        .collect();
    assert_eq!(dies.len(), 2, "{}", origin.describe());
    assert_eq!(
        dies[0].conn, 0,
        "the first attempt rode the pooled connection"
    );
    assert_ne!(dies[1].conn, 0, "the retry went out on a fresh connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_pooled_connection_dies_is_not_replayed() {
    let origin = naming_origin().await;
    let gw = GatewayProcess::start(&config(origin.addr, false));
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /app/warm/1 HTTP/1.1\r\nHost: ka.test\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(conn.read_response(LIMIT).await.expect("warm").status, 200);
    origin.reply_for("/app/post/", OriginReply::new(200, "").abort());
    conn.send(b"POST /app/post/2 HTTP/1.1\r\nHost: ka.test\r\nContent-Length: 4\r\n\r\nonce")
        .await
        .expect("send");
    let resp = conn.read_response(LIMIT).await.expect("an error response");
    assert_eq!(resp.status, 502, "{resp:?}");
    let posts: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|r| r.target == "/app/post/2")
        .collect();
    // A POST may have had effects: the origin sees it once, not again on a new connection.
    assert_eq!(posts.len(), 1, "{}", origin.describe());
    assert_eq!(posts[0].body, b"once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_on_a_fresh_connection_is_a_502_not_a_retry() {
    let origin = naming_origin().await;
    origin.reply_for("/app/fresh/", OriginReply::new(200, "").abort());
    let gw = GatewayProcess::start(&config(origin.addr, false));
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /app/fresh/1 HTTP/1.1\r\nHost: ka.test\r\n\r\n")
        .await
        .expect("send");
    let resp = conn.read_response(LIMIT).await.expect("an error response");
    assert_eq!(resp.status, 502, "{resp:?}");
    // A fresh connection that dies carries no sign of a stale pool: no second attempt.
    assert_eq!(origin.targets(), vec!["GET /app/fresh/1".to_string()]);
    // The client is told whether its connection survives the upstream failure, and it does
    // what it was told; either way the next request is answered for itself.
    if resp
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        let (rest, closed) = conn.read_until_closed(LIMIT).await;
        assert!(
            closed && rest.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
        conn = RawConn::connect(gw.addr).await;
    }
    conn.send(b"GET /app/ok/2 HTTP/1.1\r\nHost: ka.test\r\n\r\n")
        .await
        .expect("send");
    let resp = conn.read_response(LIMIT).await.expect("the next response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, response_body(2).into_bytes());
}
