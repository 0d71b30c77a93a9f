//! Traffic shaping on a route: `split` (weights over 10,000 requests, sticky cookies and
//! headers) and `mirror` (the shadow gets a copy; a dead or silent shadow changes nothing; the
//! in-flight cap holds).

use crate::harness::{
    client, fetch, metric, refused_addr, wait_until, GatewayProcess, OriginReply, RawOrigin,
};
use std::time::{Duration, Instant};

fn tagged(tag: &'static str) -> impl Fn(&crate::harness::raw_origin::SeenRequest) -> OriginReply {
    move |_| OriginReply::new(200, tag).header("x-side", tag)
}

fn split_gateway(v1: &RawOrigin, v2: &RawOrigin) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  shop-v1: {{ servers: [{{ address: "{v1}" }}] }}
  shop-v2: {{ servers: [{{ address: "{v2}" }}] }}
routes:
  - name: plain
    match: {{ path_prefix: /plain/ }}
    split:
      - {{ upstream: shop-v1, weight: 90 }}
      - {{ upstream: shop-v2, weight: 10 }}
  - name: cookie
    match: {{ path_prefix: /cookie/ }}
    split:
      - {{ upstream: shop-v1, weight: 50 }}
      - {{ upstream: shop-v2, weight: 50 }}
    sticky: {{ cookie: avx-split }}
  - name: header
    match: {{ path_prefix: /header/ }}
    split:
      - {{ upstream: shop-v1, weight: 50 }}
      - {{ upstream: shop-v2, weight: 50 }}
    sticky: {{ header: x-user }}
"#,
        v1 = v1.addr,
        v2 = v2.addr
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_honours_weights_and_sticky_clients_never_switch() {
    let v1 = RawOrigin::start_with(tagged("v1")).await;
    let v2 = RawOrigin::start_with(tagged("v2")).await;
    let gw = split_gateway(&v1, &v2);

    const N: usize = 10_000;
    const TASKS: usize = 8;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (c, url) = (c.clone(), gw.url("/plain/x"));
        tasks.push(tokio::spawn(async move {
            let mut v2 = 0;
            for _ in 0..N / TASKS {
                let r = fetch(&c, "GET", &url, &[]).await;
                assert_eq!(r.status, 200);
                v2 += usize::from(r.header("x-side") == Some("v2"));
            }
            v2
        }));
    }
    let mut to_v2 = 0;
    for t in tasks {
        to_v2 += t.await.expect("task");
    }
    let share = to_v2 as f64 / N as f64;
    eprintln!(
        "split 90/10 over {N} requests: {to_v2} to v2 ({:.2}%)",
        share * 100.0
    );
    assert!((share - 0.10).abs() <= 0.03, "v2 got {:.2}%", share * 100.0);

    // Sticky cookie: a new client gets a side and a cookie; with it, it never switches.
    let mut sides = Vec::new();
    for _ in 0..20 {
        let r = fetch(&c, "GET", &gw.url("/cookie/x"), &[]).await;
        let side = r.header("x-side").expect("side").to_string();
        let set = r.header("set-cookie").expect("a sticky cookie").to_string();
        assert!(
            set.starts_with("avx-split=shop-") && set.contains("HttpOnly"),
            "{set}"
        );
        let cookie = set.split(';').next().expect("pair").to_string();
        for _ in 0..20 {
            let again = fetch(&c, "GET", &gw.url("/cookie/x"), &[("cookie", &cookie)]).await;
            assert_eq!(again.header("x-side"), Some(side.as_str()), "{cookie}");
            assert!(again.header("set-cookie").is_none());
        }
        sides.push(side);
    }
    assert!(
        sides.iter().any(|s| s == "v1") && sides.iter().any(|s| s == "v2"),
        "{sides:?}"
    );
    let forged = fetch(
        &c,
        "GET",
        &gw.url("/cookie/x"),
        &[("cookie", "avx-split=shop-v9")],
    )
    .await;
    assert!(
        forged.header("set-cookie").is_some(),
        "an unknown side is replaced"
    );

    // Sticky header: the same user always lands on the same side.
    let mut seen = [0usize; 2];
    for u in 0..40 {
        let user = format!("user-{u}");
        let first = fetch(&c, "GET", &gw.url("/header/x"), &[("x-user", &user)]).await;
        let side = first.header("x-side").expect("side").to_string();
        for _ in 0..5 {
            let r = fetch(&c, "GET", &gw.url("/header/x"), &[("x-user", &user)]).await;
            assert_eq!(r.header("x-side"), Some(side.as_str()), "{user}");
        }
        seen[usize::from(side == "v2")] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
}

fn mirror_gateway(primary: &RawOrigin, shadow: &str, silent: &str) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  primary: {{ servers: [{{ address: "{primary}" }}] }}
  shadow: {{ servers: [{{ address: "{shadow}" }}] }}
  dead: {{ servers: [{{ address: "{dead}" }}] }}
  silent: {{ servers: [{{ address: "{silent}" }}], timeouts: {{ read_ms: 60000 }} }}
routes:
  - name: copied
    match: {{ path_prefix: /copied/ }}
    upstream: primary
    mirror: {{ upstream: shadow }}
  - name: dead
    match: {{ path_prefix: /dead/ }}
    upstream: primary
    mirror: {{ upstream: dead }}
  - name: capped
    match: {{ path_prefix: /capped/ }}
    upstream: primary
    mirror: {{ upstream: silent, max_in_flight: 2 }}
"#,
        primary = primary.addr,
        dead = refused_addr(1),
    ))
}

#[tokio::test]
async fn mirror_copies_requests_and_never_slows_or_fails_the_real_one() {
    let primary = RawOrigin::start().await;
    let shadow = RawOrigin::start().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc = accepted.clone();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            acc.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            conns.push(s);
        }
    });
    let gw = mirror_gateway(&primary, &shadow.addr.to_string(), &silent_addr.to_string());
    let c = client();

    let r = fetch(&c, "GET", &gw.url("/copied/a?q=1"), &[("x-trace", "t1")]).await;
    assert_eq!(r.status, 200);
    let body = "x".repeat(100_000);
    let r = c
        .post(gw.url("/copied/upload"))
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert!(
        shadow.wait_for_count(2, Duration::from_secs(5)).await,
        "{}",
        shadow.describe()
    );
    let copies = shadow.requests();
    assert_eq!(copies[0].target, "/copied/a?q=1");
    assert_eq!(copies[0].header("x-trace"), Some("t1"));
    assert_eq!(copies[1].method, "POST");
    assert_eq!(copies[1].body.len(), body.len(), "the body is copied whole");
    assert_eq!(primary.requests()[1].body.len(), body.len());

    // A dead shadow: the real requests are unaffected.
    for _ in 0..5 {
        let start = Instant::now();
        let r = fetch(&c, "GET", &gw.url("/dead/x"), &[]).await;
        assert_eq!(r.status, 200);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    // A silent shadow with max_in_flight 2: two copies hang, eight are dropped, and every real
    // request is answered at once.
    for _ in 0..10 {
        let start = Instant::now();
        let r = fetch(&c, "GET", &gw.url("/capped/x"), &[]).await;
        assert_eq!(r.status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            metric(
                &gw,
                r#"avx_mirror_requests_total{result="dropped",route="capped"}"#,
            )
            .await
                == Some(8.0)
        })
        .await,
        "dropped: {:?}",
        metric(
            &gw,
            r#"avx_mirror_requests_total{result="dropped",route="capped"}"#
        )
        .await
    );
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            metric(
                &gw,
                r#"avx_mirror_requests_total{result="failed",route="dead"}"#,
            )
            .await
                == Some(5.0)
        })
        .await
    );
    assert_eq!(
        metric(
            &gw,
            r#"avx_mirror_requests_total{result="sent",route="copied"}"#
        )
        .await,
        Some(2.0)
    );
    held.abort();
}

#[test]
fn split_and_mirror_config_errors_are_located() {
    use crate::config_errors::assert_error;
    let head = "listeners:\n  - address: 127.0.0.1:18080\nupstreams:\n  a: { servers: [{ address: 127.0.0.1:3000 }] }\n  b: { servers: [{ address: 127.0.0.1:3001 }] }\nroutes:\n  - name: r\n    match: { path_prefix: / }\n";
    let cases: &[(&str, usize, &str, &str)] = &[
        ("    split: [{ upstream: a, weight: 1 }]\n", 9, "routes[0].split", "needs at least two sides"),
        (
            "    upstream: a\n    split: [{ upstream: a, weight: 1 }, { upstream: b, weight: 1 }]\n",
            7,
            "routes[0]",
            "set one of upstream, split and respond",
        ),
        (
            "    split:\n      - { upstream: a, weight: 1 }\n      - { upstream: nope, weight: 1 }\n",
            11,
            "routes[0].split[1].upstream",
            "unknown upstream \"nope\"",
        ),
        (
            "    split:\n      - { upstream: a, weight: 1 }\n      - { upstream: b, weight: 0 }\n",
            11,
            "routes[0].split[1].weight",
            "out of range",
        ),
        ("    upstream: a\n    sticky: { cookie: s }\n", 10, "routes[0].sticky", "only with split"),
        (
            "    split: [{ upstream: a, weight: 1 }, { upstream: b, weight: 1 }]\n    sticky: { cookie: s, header: x }\n",
            10,
            "routes[0].sticky",
            "set exactly one of cookie and header",
        ),
        (
            "    split: [{ upstream: a, weight: 1 }, { upstream: b, weight: 1 }]\n    cache: { enabled: true }\n",
            10,
            "routes[0].cache.enabled",
            "cannot be combined with split",
        ),
        ("    upstream: a\n    mirror: { upstream: b, percent: 101 }\n", 10, "routes[0].mirror.percent", "must be in 0..=100"),
        ("    upstream: a\n    mirror: { upstream: c }\n", 10, "routes[0].mirror.upstream", "unknown upstream \"c\""),
        (
            "    respond: { status: 204 }\n    mirror: { upstream: b }\n",
            10,
            "routes[0].mirror",
            "a respond route has nothing to mirror",
        ),
    ];
    for (tail, line, key, msg) in cases {
        assert_error(&format!("{head}{tail}"), *line, key, msg);
    }
}
