//! The upstream fault matrix: a real loopback origin misbehaving on demand. In every case the
//! client gets the right status (or a cleanly ended stream once the body had started), the
//! gateway keeps serving another route, nothing panics and no file descriptor leaks.

use crate::harness::{client, wait_until, Fault, FaultyUpstream, GatewayProcess, TestUpstream};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// File descriptors the gateway may hold above its baseline once the faults are over (say, a
/// second pooled connection to the healthy upstream).
const FD_MARGIN: usize = 2;

/// A gateway with one route per faulty origin (`/f0`, `/f1`, ...) and a catch-all route to a
/// healthy upstream, plus its settled file-descriptor count.
struct Bench {
    gw: GatewayProcess,
    faults: Vec<FaultyUpstream>,
    healthy: TestUpstream,
    baseline_fds: usize,
}

impl Bench {
    async fn start(faults: &[Fault], read_ms: u64) -> Bench {
        let healthy = TestUpstream::start("healthy").await;
        let mut started = Vec::new();
        for f in faults {
            started.push(FaultyUpstream::start(*f).await);
        }
        let mut upstreams = String::new();
        let mut routes = String::new();
        for (i, f) in started.iter().enumerate() {
            // No retries and no passive ejection: every request meets the fault itself.
            upstreams.push_str(&format!(
                "  f{i}:
    servers: [{{ address: \"{}\" }}]
    retries: 0
    passive_health: {{ enabled: false }}
    timeouts: {{ connect_ms: 500, read_ms: {read_ms}, write_ms: 1000 }}
",
                f.addr
            ));
            routes.push_str(&format!(
                "  - {{ name: f{i}, match: {{ path_prefix: /f{i} }}, upstream: f{i} }}\n"
            ));
        }
        let gw = GatewayProcess::start(&format!(
            "listeners:
  - address: \"{{listen}}\"
upstreams:
{upstreams}  healthy:
    servers: [{{ address: \"{}\" }}]
routes:
{routes}  - {{ name: healthy, match: {{ path_prefix: / }}, upstream: healthy }}
",
            healthy.addr
        ));
        let mut bench = Bench {
            gw,
            faults: started,
            healthy,
            baseline_fds: 0,
        };
        // Warm up the healthy route so its pooled upstream connection is part of the baseline.
        bench.assert_serves().await;
        bench.baseline_fds = bench.settled_fds().await;
        bench
    }

    fn url(&self, fault: usize) -> String {
        self.gw.url(&format!("/f{fault}/x"))
    }

    /// The healthy route answers 200 from its upstream (on a fresh client, dropped after).
    async fn assert_serves(&self) {
        let before = self.healthy.hits();
        let resp = client()
            .get(self.gw.url("/ok"))
            .send()
            .await
            .expect("the healthy route answers");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-upstream"], "healthy");
        resp.bytes().await.expect("healthy body");
        assert_eq!(self.healthy.hits(), before + 1);
    }

    /// The gateway's fd count once it has not changed for 200 ms.
    async fn settled_fds(&self) -> usize {
        let last = Cell::new(self.gw.open_fds());
        let same = Cell::new(0);
        let settled = wait_until(Duration::from_secs(5), || async {
            let now = self.gw.open_fds();
            same.set(if now == last.get() { same.get() + 1 } else { 0 });
            last.set(now);
            same.get() >= 8
        })
        .await;
        assert!(settled, "the gateway's fd count never settled");
        last.get()
    }

    /// After the faults: the healthy route still serves, every connection to a faulty origin
    /// is closed, the fd count is back near its baseline and nothing panicked.
    async fn assert_recovered(&self) {
        self.assert_serves().await;
        for (i, f) in self.faults.iter().enumerate() {
            let closed = wait_until(Duration::from_secs(5), || async { f.open() == 0 }).await;
            assert!(
                closed,
                "f{i} ({:?}): {} connections still open",
                f.fault,
                f.open()
            );
        }
        let limit = self.baseline_fds + FD_MARGIN;
        let back = wait_until(Duration::from_secs(5), || async {
            self.gw.open_fds() <= limit
        })
        .await;
        assert!(
            back,
            "gateway fds {} did not return to the baseline {} (+{FD_MARGIN})",
            self.gw.open_fds(),
            self.baseline_fds
        );
        assert!(
            !self.gw.log().contains("panicked"),
            "the gateway panicked:\n{}",
            self.gw.log()
        );
    }
}

/// Sends `n` requests to fault `f` one after another; asserts each gets `status` quickly.
async fn expect_status(bench: &Bench, f: usize, n: usize, status: u16) {
    let c = client();
    for i in 0..n {
        let started = Instant::now();
        let resp = c
            .get(bench.url(f))
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(resp.status(), status, "f{f} request {i}");
        assert!(
            !resp.text().await.unwrap().is_empty(),
            "the error has a body"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "f{f} request {i} took {:?}",
            started.elapsed()
        );
    }
}

/// How a response whose body may be cut short ended.
#[derive(Debug)]
enum Ending {
    /// The gateway answered with this status (not 200).
    Status(u16),
    /// `200`, then the body bytes that arrived, and whether the body ended in an error.
    Body(Vec<u8>, bool),
}

/// Sends `n` concurrent GETs to `url`, each on its own client, reading whatever body arrives;
/// returns how each ended and how long it took.
async fn fetch_concurrently(url: String, n: usize) -> Vec<(Ending, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut resp = client().get(url).send().await.expect("the gateway answers");
                let status = resp.status().as_u16();
                if status != 200 {
                    resp.bytes().await.expect("error body");
                    return (Ending::Status(status), started.elapsed());
                }
                let mut body = Vec::new();
                let failed = loop {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        Ok(None) => break false,
                        Err(_) => break true,
                    }
                };
                (Ending::Body(body, failed), started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_502() {
    let bench = Bench::start(&[Fault::ConnectionRefused], 1000).await;
    expect_status(&bench, 0, 5, 502).await;
    bench.assert_recovered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_on_accept_is_502() {
    let bench = Bench::start(&[Fault::ResetOnAccept], 1000).await;
    expect_status(&bench, 0, 5, 502).await;
    assert_eq!(bench.faults[0].accepted(), 5, "one connection per request");
    bench.assert_recovered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_times_out_with_504_while_other_routes_serve() {
    let bench = Bench::start(&[Fault::Hang], 500).await;
    let hung: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (client(), bench.url(0));
            tokio::spawn(async move {
                let started = Instant::now();
                let resp = c.get(url).send().await.expect("the gateway answers");
                let status = resp.status().as_u16();
                resp.bytes().await.expect("error body");
                (status, started.elapsed())
            })
        })
        .collect();
    let waiting = wait_until(Duration::from_secs(2), || async {
        bench.faults[0].open() == 5
    })
    .await;
    assert!(waiting, "the requests never reached the hanging upstream");
    bench.assert_serves().await;
    for h in hung {
        let (status, took) = h.await.unwrap();
        assert_eq!(status, 504);
        assert!(took < Duration::from_secs(2), "the 504 took {took:?}");
    }
    bench.assert_recovered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drip_slower_than_the_read_timeout_ends_the_stream_early() {
    // 10 body bytes, 400 ms apart: 4 s in all, and every gap is longer than read_ms.
    let drip = Fault::SlowDrip {
        body_len: 10,
        gap: Duration::from_millis(400),
    };
    let bench = Bench::start(&[drip], 200).await;
    for (i, (ending, took)) in fetch_concurrently(bench.url(0), 5).await.iter().enumerate() {
        match ending {
            // Timed out before the header reached the client.
            Ending::Status(504) => {}
            // The header had gone out: the stream must end early rather than hang.
            Ending::Body(body, failed) => assert!(
                *failed || body.len() < 10,
                "request {i}: the whole body arrived despite the read timeout"
            ),
            other => panic!("request {i}: {other:?}"),
        }
        assert!(*took < Duration::from_secs(2), "request {i} took {took:?}");
    }
    bench.assert_recovered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drip_within_the_read_timeout_completes() {
    let drip = Fault::SlowDrip {
        body_len: 8,
        gap: Duration::from_millis(50),
    };
    let bench = Bench::start(&[drip], 1000).await;
    // The origin closes each connection after its response: pooled ones must not leak.
    for (i, (ending, took)) in fetch_concurrently(bench.url(0), 5).await.iter().enumerate() {
        match ending {
            Ending::Body(body, false) => assert_eq!(body, b"abcdefgh", "request {i}"),
            other => panic!("request {i}: {other:?}"),
        }
        assert!(
            *took >= Duration::from_millis(350),
            "request {i} did not drip"
        );
    }
    bench.assert_recovered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_response_is_502() {
    let bench = Bench::start(
        &[
            Fault::Malformed(b"NOT HTTP\r\n\r\n"),
            Fault::Malformed(b"HTTP/1.1 abc\r\n\r\n"),
        ],
        1000,
    )
    .await;
    expect_status(&bench, 0, 5, 502).await;
    expect_status(&bench, 1, 5, 502).await;
    bench.assert_recovered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_mid_body_truncates_the_stream() {
    let bench = Bench::start(&[Fault::CloseMidBody], 1000).await;
    for (i, (ending, took)) in fetch_concurrently(bench.url(0), 5).await.iter().enumerate() {
        match ending {
            Ending::Body(body, failed) => assert!(
                *failed && body.len() < 100_000,
                "request {i}: {} bytes, error: {failed}",
                body.len()
            ),
            other => panic!("request {i}: headers were sent, yet {other:?}"),
        }
        assert!(*took < Duration::from_secs(2), "request {i} took {took:?}");
    }
    bench.assert_recovered().await;
}
