//! In-process reload: `POST /reload`, SIGHUP (also through a daemonized process),
//! `server.watch_config` and `avx-gateway reload`; what a reload changes at once, what it
//! keeps (cache entries, rate-limit buckets, health state, connections), and what it refuses.

use crate::harness::gateway::binary;
use crate::harness::{
    client, metric, pid_running, wait_until, GatewayProcess, Load, PidGuard, RawConn, Reply,
    ScriptedOrigin, TestDir, TestUpstream,
};
use std::net::SocketAddr;
use std::time::Duration;

/// Bound on a reload's effect being visible (file watching adds its debounce).
const SOON: Duration = Duration::from_secs(10);

/// The api route to `origin`, plus `extra` routes (YAML list items).
fn config(origin: SocketAddr, extra: &str) -> String {
    api_config(origin, "", extra)
}

/// Like [`config`], with `api_keys` (indented YAML lines) added to the api route.
fn api_config(origin: SocketAddr, api_keys: &str, extra: &str) -> String {
    format!(
        r#"listeners:
  - address: {{listen}}
upstreams:
  backend:
    servers: [{{ address: {origin} }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: backend
{api_keys}{extra}"#
    )
}

fn fixed_route(name: &str, path: &str, body: &str) -> String {
    format!(
        "  - {{ name: {name}, match: {{ path: {path} }}, respond: {{ status: 200, body: \"{body}\" }} }}\n"
    )
}

async fn generation(gw: &GatewayProcess) -> u64 {
    gw.status().await["config"]["generation"]
        .as_u64()
        .unwrap_or(0)
}

async fn get(gw: &GatewayProcess, path: &str) -> (u16, String) {
    let resp = client()
        .get(gw.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", gw.log()));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_keepalive_load_fail_no_request() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&config(origin.addr, ""));
    let load = Load::start(gw.url(""), 4);
    assert!(
        wait_until(SOON, || async { load.ok() > 50 }).await,
        "load never got going: {}",
        load.stats.summary()
    );
    for i in 0..20u64 {
        // Alternate between two route sets, so every reload really changes the routing.
        let extra = if i % 2 == 0 {
            fixed_route("extra", "/extra", "x")
        } else {
            String::new()
        };
        gw.rewrite_config(&config(origin.addr, &extra));
        let (status, body) = gw.reload().await;
        assert_eq!(status, 200, "reload {i}: {body}");
        assert!(
            body.contains(&format!("\"generation\":{}", i + 2)),
            "{body}"
        );
        let before = load.ok();
        assert!(
            wait_until(SOON, || async { load.ok() > before + 10 }).await,
            "load stalled after reload {i}: {}",
            load.stats.summary()
        );
    }
    let stats = load.stop().await;
    eprintln!("20 reloads: {}", stats.summary());
    stats.assert_clean(500);
    assert_eq!(
        metric(&gw, "avx_config_reloads_total{result=\"ok\"}").await,
        Some(20.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_then_removed_applies_to_the_next_request_of_a_kept_alive_connection() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&config(origin.addr, ""));
    let mut conn = RawConn::connect(gw.addr).await;
    let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n\r\n");
    conn.send(ask("/new").as_bytes()).await.expect("send");
    let r = conn.read_response(SOON).await.expect("answer");
    assert_eq!(r.status, 404, "no route yet");

    gw.rewrite_config(&config(origin.addr, &fixed_route("new", "/new", "added")));
    assert_eq!(gw.reload().await.0, 200);
    conn.send(ask("/new").as_bytes())
        .await
        .expect("send on the same connection");
    let r = conn
        .read_response(SOON)
        .await
        .expect("answer after the reload");
    assert_eq!((r.status, &r.body[..]), (200, &b"added"[..]));

    gw.rewrite_config(&config(origin.addr, ""));
    assert_eq!(gw.reload().await.0, 200);
    conn.send(ask("/new").as_bytes())
        .await
        .expect("send on the same connection");
    let r = conn
        .read_response(SOON)
        .await
        .expect("answer after the second reload");
    assert_eq!(r.status, 404, "the route is gone again");
    conn.send(ask("/api/still").as_bytes()).await.expect("send");
    let r = conn.read_response(SOON).await.expect("answer");
    assert_eq!(
        r.status, 200,
        "the kept route still proxies on the same connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let origin = TestUpstream::start("origin").await;
    let slow = "  - { name: slow, match: { path: /slow }, upstream: backend }\n";
    let gw = GatewayProcess::start(&config(origin.addr, slow));
    let url = gw.url("/slow?ms=1500");
    let in_flight = tokio::spawn(async move {
        let resp = client().get(url).send().await.expect("slow request");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    });
    assert!(wait_until(SOON, || async { origin.inflight() == 1 }).await);
    gw.rewrite_config(&config(origin.addr, ""));
    assert_eq!(gw.reload().await.0, 200);
    assert_eq!(
        get(&gw, "/slow").await.0,
        404,
        "new requests see the new routes"
    );
    let (status, body) = in_flight.await.expect("slow request task");
    assert_eq!((status, body.as_str()), (200, "slow done"));
}

/// A caching route over a scripted origin, with `cache:` sizing and an extra route.
fn cache_config(origin: SocketAddr, cache: &str, extra: &str) -> String {
    format!(
        r#"listeners:
  - address: {{listen}}
upstreams:
  backend:
    servers: [{{ address: {origin} }}]
cache: {cache}
routes:
  - name: cached
    match: {{ path_prefix: /c/ }}
    upstream: backend
    cache: {{ enabled: true }}
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_entry_is_still_a_hit_after_reloads_that_resize_the_store() {
    let origin = ScriptedOrigin::start().await;
    origin.set(
        "/c/page",
        Reply::ok("cached body").header("cache-control", "max-age=300"),
    );
    let gw = GatewayProcess::start(&cache_config(origin.addr, "{}", ""));
    let http = client();
    let cache_status = |r: &reqwest::Response| {
        r.headers()
            .get("x-cache-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let r = http.get(gw.url("/c/page")).send().await.expect("fill");
    assert_eq!(cache_status(&r).as_deref(), Some("MISS"));
    for (i, cache) in [
        "{ max_bytes: 50000000 }",
        "{ max_bytes: 50000000, max_size: 5000 }",
    ]
    .iter()
    .enumerate()
    {
        let extra = fixed_route("other", "/other", "o");
        gw.rewrite_config(&cache_config(origin.addr, cache, &extra));
        let (status, body) = gw.reload().await;
        assert_eq!(status, 200, "reload {i}: {body}");
        let r = http
            .get(gw.url("/c/page"))
            .send()
            .await
            .expect("after reload");
        assert_eq!(cache_status(&r).as_deref(), Some("HIT"), "after reload {i}");
        assert_eq!(r.text().await.unwrap_or_default(), "cached body");
    }
    assert_eq!(
        origin.hits("/c/page"),
        1,
        "only the first request reached the origin"
    );
    assert_eq!(gw.status().await["cache"]["entries"], 1);
}

fn limited_config(origin: SocketAddr, burst: u32, extra: &str) -> String {
    let limit =
        format!("    rate_limit: {{ requests_per_second: 0.1, burst: {burst}, key: client_ip }}\n");
    api_config(origin, &limit, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_bucket_still_limits_after_a_reload_until_the_limit_changes() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&limited_config(origin.addr, 2, ""));
    // 0.1 req/s and a burst of 2: three requests, then nothing for ten seconds.
    for i in 0..3 {
        assert_eq!(
            get(&gw, "/api/x").await.0,
            200,
            "request {i} within the burst"
        );
    }
    assert_eq!(get(&gw, "/api/x").await.0, 429);

    gw.rewrite_config(&limited_config(
        origin.addr,
        2,
        &fixed_route("other", "/other", "o"),
    ));
    assert_eq!(gw.reload().await.0, 200);
    assert_eq!(get(&gw, "/other").await.0, 200, "the reload is live");
    assert_eq!(
        get(&gw, "/api/x").await.0,
        429,
        "the spent bucket survived the reload"
    );

    // A changed limit is a new policy with fresh buckets.
    gw.rewrite_config(&limited_config(origin.addr, 5, ""));
    assert_eq!(gw.reload().await.0, 200);
    assert_eq!(get(&gw, "/api/x").await.0, 200, "a new limit starts afresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_changes_nothing_and_says_where_it_is_wrong() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&config(origin.addr, ""));
    let good = std::fs::read_to_string(&gw.config).expect("read config");
    let bad = config(
        origin.addr,
        "  - { name: broken, match: { path: /b }, upstream: nowhere }\n",
    );
    gw.rewrite_config(&bad);

    let (status, body) = gw.reload().await;
    assert_eq!(status, 400, "{body}");
    let file = gw.config.display().to_string();
    assert!(body.contains(&format!("{file}:")), "names the file: {body}");
    assert!(body.contains("routes[1].upstream"), "names the key: {body}");
    let line = body[file.len() + 1..]
        .split(':')
        .next()
        .and_then(|l| l.parse::<usize>().ok())
        .expect("a line number after the file name");
    let text = std::fs::read_to_string(&gw.config).expect("read config");
    assert!(
        text.lines()
            .nth(line - 1)
            .is_some_and(|l| l.contains("nowhere")),
        "line {line} is the bad one: {body}"
    );

    assert_eq!(get(&gw, "/api/ok").await.0, 200, "the old config serves");
    assert_eq!(generation(&gw).await, 1);
    let status_doc = gw.status().await;
    let last = status_doc["config"]["last_error"].as_str().unwrap_or("");
    assert!(last.contains("routes[1].upstream"), "{status_doc}");
    assert_eq!(
        metric(&gw, "avx_config_reloads_total{result=\"error\"}").await,
        Some(1.0)
    );
    assert!(gw.log().contains("routes[1].upstream"), "logged");

    // The subcommand systemd's ExecReload runs fails visibly with the same message.
    let out = reload_command(&gw.config.display().to_string()).await;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[1].upstream"), "{stderr}");

    // Fixed again: the next reload goes live and clears the error.
    std::fs::write(&gw.config, good).expect("restore config");
    let out = reload_command(&gw.config.display().to_string()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status_doc = gw.status().await;
    assert_eq!(status_doc["config"]["generation"], 2);
    assert!(status_doc["config"]["last_error"].is_null(), "{status_doc}");
}

async fn reload_command(config: &str) -> std::process::Output {
    let config = config.to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(["reload", "-c", &config])
            .output()
            .expect("run avx-gateway reload")
    })
    .await
    .expect("reload command task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_and_worker_changes_are_refused_naming_the_key() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&config(origin.addr, ""));
    let moved = config(origin.addr, "").replace("{listen}", "127.0.0.1:1");
    gw.rewrite_config(&moved);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("listeners[0].address"), "{body}");
    assert!(
        body.contains("avx-gateway-upgrade"),
        "points at the upgrade: {body}"
    );

    let text = std::fs::read_to_string(&gw.config).expect("read config");
    let more_workers = text
        .replace("127.0.0.1:1", &gw.addr.to_string())
        .replace("workers: 2", "workers: 3");
    std::fs::write(&gw.config, more_workers).expect("write config");
    let (status, body) = gw.reload().await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("server.workers"), "{body}");

    assert_eq!(get(&gw, "/api/ok").await.0, 200, "the old config serves");
    assert_eq!(generation(&gw).await, 1);
    assert_eq!(
        metric(&gw, "avx_config_reloads_total{result=\"refused\"}").await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_is_kept_for_unchanged_upstreams_and_checks_start_for_new_ones() {
    let sick = TestUpstream::start("sick").await;
    sick.set_healthy(false);
    let fresh = TestUpstream::start("fresh").await;
    let checked = |name: &str, addr: SocketAddr| {
        format!(
            "  {name}:\n    servers: [{{ address: {addr} }}]\n    health_check: {{ type: http, path: /health, interval_ms: 200, unhealthy_threshold: 1, healthy_threshold: 1 }}\n"
        )
    };
    let yaml = |upstreams: &str, routes: &str| {
        format!("listeners:\n  - address: {{listen}}\nupstreams:\n{upstreams}routes:\n  - {{ name: s, match: {{ path_prefix: /s/ }}, upstream: sick }}\n{routes}")
    };
    let gw = GatewayProcess::start(&yaml(&checked("sick", sick.addr), ""));
    let healthy = |doc: &serde_json::Value, up: &str| {
        doc["upstreams"][up]["backends"][0]["healthy"].as_bool()
    };
    assert!(
        wait_until(SOON, || async {
            healthy(&gw.status().await, "sick") == Some(false)
        })
        .await,
        "the sick backend is found out"
    );

    let both = format!(
        "{}{}",
        checked("sick", sick.addr),
        checked("fresh", fresh.addr)
    );
    let fresh_route = "  - { name: f, match: { path_prefix: /f/ }, upstream: fresh }\n";
    gw.rewrite_config(&yaml(&both, fresh_route));
    assert_eq!(gw.reload().await.0, 200);
    assert_eq!(
        healthy(&gw.status().await, "sick"),
        Some(false),
        "an unchanged upstream keeps its health state across the reload"
    );
    let seen = fresh.health_checks();
    assert!(
        wait_until(SOON, || async { fresh.health_checks() > seen + 2 }).await,
        "the added upstream is health-checked"
    );
    assert_eq!(get(&gw, "/f/x").await.0, 200);
    sick.set_healthy(true);
    assert!(
        wait_until(SOON, || async {
            healthy(&gw.status().await, "sick") == Some(true)
        })
        .await,
        "the kept upstream's checks still run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_results_outlive_a_rebuilt_upstream_until_the_check_changes() {
    let sick = TestUpstream::start("sick").await;
    sick.set_healthy(false);
    // One probe at start, then none for a minute: only a kept result explains what follows.
    let yaml = |upstream_keys: &str, timeout_ms: u64| {
        format!(
            "listeners:\n  - address: {{listen}}\nupstreams:\n  sick:\n    servers: [{{ address: {}, weight: 1 }}]\n    health_check: {{ type: http, path: /health, interval_ms: 60000, timeout_ms: {timeout_ms}, unhealthy_threshold: 1, healthy_threshold: 1 }}\n{upstream_keys}routes:\n  - {{ name: s, match: {{ path_prefix: /s/ }}, upstream: sick }}\n",
            sick.addr
        )
    };
    let gw = GatewayProcess::start(&yaml("", 1000));
    let healthy =
        |doc: serde_json::Value| doc["upstreams"]["sick"]["backends"][0]["healthy"].as_bool();
    assert!(
        wait_until(SOON, || async { healthy(gw.status().await) == Some(false) }).await,
        "the first probe finds the backend down"
    );
    assert_eq!(get(&gw, "/s/x").await.0, 503, "no healthy backend");
    let probes = sick.health_checks();

    // Timeouts and retries change: a new upstream object over the same servers and check.
    gw.rewrite_config(&yaml(
        "    retries: 0\n    timeouts: { read_ms: 20000 }\n",
        1000,
    ));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        healthy(gw.status().await),
        Some(false),
        "the result is kept"
    );
    assert_eq!(get(&gw, "/s/x").await.0, 503, "the down backend stays out");
    assert_eq!(sick.health_checks(), probes, "kept, not probed again");
    // A new weight for the same server: still the same server to the health check.
    gw.rewrite_config(
        &yaml("    retries: 0\n    timeouts: { read_ms: 20000 }\n", 1000)
            .replace("weight: 1", "weight: 3"),
    );
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        healthy(gw.status().await),
        Some(false),
        "kept across a reweight"
    );
    assert_eq!(sick.health_checks(), probes, "not probed again");
    sick.set_healthy(true);
    assert_eq!(
        healthy(gw.status().await),
        Some(false),
        "until the next probe, the kept result stands"
    );

    // A changed check is a new judgement: it probes at once, and finds the backend up.
    gw.rewrite_config(&yaml(
        "    retries: 0\n    timeouts: { read_ms: 20000 }\n",
        900,
    ));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_until(SOON, || async { healthy(gw.status().await) == Some(true) }).await,
        "the new check probes at once"
    );
    assert!(sick.health_checks() > probes);
    assert_eq!(get(&gw, "/s/x").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_a_reload_removes_is_no_longer_probed_by_the_kept_check() {
    let stays = TestUpstream::start("stays").await;
    let goes = TestUpstream::start("goes").await;
    let yaml = |servers: &str| {
        format!(
            "listeners:\n  - address: {{listen}}\nupstreams:\n  pool:\n    servers: [{servers}]\n    health_check: {{ type: http, path: /health, interval_ms: 100 }}\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: pool }}\n"
        )
    };
    let both = format!(
        "{{ address: {} }}, {{ address: {} }}",
        stays.addr, goes.addr
    );
    let gw = GatewayProcess::start(&yaml(&both));
    assert!(
        wait_until(SOON, || async { goes.health_checks() >= 2 }).await,
        "both servers are probed"
    );
    gw.rewrite_config(&yaml(&format!("{{ address: {} }}", stays.addr)));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    // A probe already under way may still land; after that, none.
    let (kept, gone) = (stays.health_checks(), goes.health_checks());
    assert!(
        wait_until(SOON, || async { stays.health_checks() >= kept + 10 }).await,
        "the kept check still probes the server that stays"
    );
    assert!(
        goes.health_checks() <= gone + 1,
        "the removed server was probed {} more times",
        goes.health_checks() - gone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_ejection_outlives_a_rebuilt_upstream_over_the_same_servers() {
    let good = TestUpstream::start("good").await;
    let bad = TestUpstream::start("bad").await;
    bad.set_fail_status(Some(503));
    let yaml = |upstream_keys: &str| {
        format!(
            "listeners:\n  - address: {{listen}}\nupstreams:\n  pool:\n    servers: [{{ address: {} }}, {{ address: {} }}]\n    load_balancing: round_robin\n    passive_health: {{ consecutive_failures: 1, cooldown_ms: 60000 }}\n{upstream_keys}routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: pool }}\n",
            good.addr, bad.addr
        )
    };
    let ejected = |doc: serde_json::Value| -> Vec<Option<bool>> {
        (0..2)
            .map(|i| doc["upstreams"]["pool"]["backends"][i]["ejected"].as_bool())
            .collect()
    };
    let gw = GatewayProcess::start(&yaml(""));
    for i in 0..4 {
        get(&gw, &format!("/x/{i}")).await;
    }
    assert_eq!(bad.hits(), 1, "one failure ejects the bad backend");
    assert_eq!(ejected(gw.status().await), [Some(false), Some(true)]);

    gw.rewrite_config(&yaml("    timeouts: { read_ms: 20000 }\n"));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ejected(gw.status().await),
        [Some(false), Some(true)],
        "the ejection is kept"
    );
    for i in 0..10 {
        assert_eq!(get(&gw, &format!("/y/{i}")).await.0, 200, "request {i}");
    }
    assert_eq!(
        bad.hits(),
        1,
        "nothing reached the ejected backend after the reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let origin = TestUpstream::start("origin").await;
    let watched = |extra: &str| {
        format!(
            "server:\n  workers: 2\n  pid_file: {{dir}}/gw.pid\n  upgrade_sock: {{dir}}/upgrade.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n  watch_config: true\n  watch_debounce_ms: 100\n{}",
            config(origin.addr, extra)
        )
    };
    let gw = GatewayProcess::start(&watched(""));
    gw.rewrite_config(&watched(&fixed_route("w", "/watched", "seen")));
    assert!(
        wait_until(SOON, || async { get(&gw, "/watched").await.0 == 200 }).await,
        "the edit went live without a signal: {}",
        gw.log()
    );
    assert_eq!(generation(&gw).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_daemonized_gateway() {
    let origin = TestUpstream::start("origin").await;
    let dir = TestDir::new();
    let (listen, admin) = (crate::harness::free_addr(), crate::harness::free_addr());
    let d = dir.0.display().to_string();
    let yaml = |extra: &str| {
        format!(
            "server:\n  daemon: true\n  pid_file: {d}/gw.pid\n  upgrade_sock: {d}/upgrade.sock\n  error_log: {d}/error.log\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\nadmin:\n  address: {admin}\n{}",
            config(origin.addr, extra).replace("{listen}", &listen.to_string())
        )
    };
    let path = dir.write("gateway.yaml", &yaml(""));
    // Started as an operator would from the config's directory, with a relative `-c`: the
    // daemon must still find the file when it reloads.
    let workdir = dir.0.clone();
    let started = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .current_dir(workdir)
            .args(["-c", "gateway.yaml"])
            .status()
            .expect("start the daemon")
    })
    .await
    .expect("start task");
    assert!(
        started.success(),
        "the foreground part exits 0 after forking"
    );
    let pid_file = dir.path("gw.pid");
    let read_pid = || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
    };
    assert!(
        wait_until(SOON, || async { read_pid().is_some() }).await,
        "pid file written"
    );
    let pid = read_pid().unwrap_or(0);
    let _guard = PidGuard(pid);
    let http = client();
    let url = |p: &str| format!("http://{listen}{p}");
    let serving = || async {
        http.get(url("/api/up"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    };
    assert!(wait_until(SOON, serving).await, "the daemon serves");

    std::fs::write(&path, yaml(&fixed_route("hup", "/hup", "reloaded"))).expect("edit");
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status();
    let reloaded = || async {
        match http.get(url("/hup")).send().await {
            Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|b| b == "reloaded"),
            _ => false,
        }
    };
    assert!(
        wait_until(SOON, reloaded).await,
        "SIGHUP reloaded the daemon"
    );
    assert!(pid_running(pid), "SIGHUP did not terminate it");
    let doc: serde_json::Value = http
        .get(format!("http://{admin}/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON");
    assert_eq!(doc["config"]["generation"], 2);
    assert_eq!(doc["pid"], pid);
}

/// The unit's `ExecReload=` command line, with the installed paths pointed at this test's.
fn exec_reload_line(gw: &GatewayProcess, flag: &std::path::Path) -> String {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/avx-gateway.service"
    ))
    .expect("read the unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload="))
        .expect("the unit has an ExecReload=");
    let script = line
        .strip_prefix("/bin/sh -c '")
        .and_then(|l| l.strip_suffix('\''))
        .expect("ExecReload= is a /bin/sh -c '...' line");
    script
        .replace("/run/avx-gateway/upgrade", &flag.display().to_string())
        .replace("/usr/bin/avx-gateway ", &format!("{} ", binary()))
        .replace(
            "/etc/avx-gateway/gateway.yaml",
            &gw.config.display().to_string(),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemctl_reload_runs_the_in_process_reload_and_fails_on_a_bad_file() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&config(origin.addr, ""));
    let flag = gw.dir.path("upgrade-flag");
    let script = exec_reload_line(&gw, &flag);
    let run = || {
        let script = script.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("/bin/sh")
                .args(["-c", &script])
                .output()
                .expect("run ExecReload")
        })
    };
    gw.rewrite_config(&config(origin.addr, &fixed_route("r", "/r", "via systemd")));
    let out = run().await.expect("ExecReload task");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&gw, "/r").await, (200, "via systemd".to_string()));

    gw.rewrite_config(&config(
        origin.addr,
        "  - { name: r, match: { path: /r }, upstream: gone }\n",
    ));
    let out = run().await.expect("ExecReload task");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "a bad file fails the reload");
    assert!(stderr.contains("routes[1].upstream"), "{stderr}");
    assert_eq!(get(&gw, "/r").await.0, 200, "the old config serves");
    assert_eq!(generation(&gw).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_a_reload_drops_stops_its_background_refresh() {
    let idp = crate::harness::RawOrigin::start().await;
    idp.reply_for(
        "/jwks",
        crate::harness::OriginReply::new(200, r#"{"keys":[]}"#)
            .header("content-type", "application/json"),
    );
    let origin = TestUpstream::start("origin").await;
    let jwt = format!(
        "  - name: jwt\n    match: {{ path_prefix: /jwt/ }}\n    upstream: backend\n    plugins:\n      - jwt: {{ jwks_url: \"http://{}/jwks\", refresh_seconds: 1 }}\n",
        idp.addr
    );
    let gw = GatewayProcess::start(&config(origin.addr, &jwt));
    // The refresher starts with the first token the route has to check (a well-formed one
    // naming a key the empty set does not have).
    let token = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImEifQ.eyJzdWIiOiJ1In0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let r = client()
        .get(gw.url("/jwt/x"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request with a token");
    assert_eq!(r.status(), 401);
    let fetched = idp.count();
    assert!(
        idp.wait_for_count(fetched + 2, SOON).await,
        "the JWKS is refreshed every second"
    );

    gw.rewrite_config(&config(origin.addr, ""));
    assert_eq!(gw.reload().await.0, 200);
    // A fetch already under way may still finish; after it, the replaced plugin's loop ends.
    let _ = tokio::time::timeout(
        Duration::from_millis(1500),
        idp.wait_for_count(idp.count() + 1, SOON),
    )
    .await;
    let settled = idp.count();
    assert!(
        !idp.wait_for_count(settled + 1, Duration::from_secs(3))
            .await,
        "the dropped plugin kept fetching its JWKS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_at_the_same_path_is_refused_not_silently_ignored() {
    let certs = TestDir::new();
    let first = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = certs.write("cert.pem", &first.cert.pem());
    let key = certs.write("key.pem", &first.key_pair.serialize_pem());
    let origin = TestUpstream::start("origin").await;
    let yaml = config(origin.addr, "").replace(
        "  - address: {listen}\n",
        &format!(
            "  - address: {{listen}}\n    tls: {{ cert: {}, key: {} }}\n",
            cert.display(),
            key.display()
        ),
    );
    let gw = GatewayProcess::start(&yaml);
    assert_eq!(gw.reload().await.0, 200, "unchanged files reload");

    // The files are renewed in place: the listener still serves the certificate it loaded at
    // start, so the reload must say so instead of reporting success.
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&cert, renewed.cert.pem()).expect("renew cert");
    std::fs::write(&key, renewed.key_pair.serialize_pem()).expect("renew key");
    let (status, body) = gw.reload().await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("listeners[0].tls.cert"), "{body}");
    assert!(body.contains("avx-gateway-upgrade"), "{body}");
    assert_eq!(generation(&gw).await, 2, "nothing changed");

    std::fs::write(&cert, first.cert.pem()).expect("restore cert");
    std::fs::write(&key, first.key_pair.serialize_pem()).expect("restore key");
    assert_eq!(gw.reload().await.0, 200, "the files it serves again");
}

const TOKEN: &str = "reload-test-token";

/// `yaml` with an `admin:` listener on `{admin}` guarded by `token`.
fn with_admin_token(yaml: &str, token: &str) -> String {
    format!("{yaml}admin:\n  address: \"{{admin}}\"\n  token: {token}\n")
}

/// `method path` on the admin listener with `Authorization: auth` when given: status, body.
async fn admin_request(
    gw: &GatewayProcess,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
) -> (u16, String) {
    let mut req = client().request(method.clone(), gw.admin_url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} admin {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// `/status` read with the bearer `token`.
async fn status_with_token(gw: &GatewayProcess, token: &str) -> serde_json::Value {
    let (status, body) = admin_request(
        gw,
        reqwest::Method::GET,
        "/status",
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, 200, "/status with the token: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is JSON ({e}): {body}"))
}

/// The `/metrics` sample `series`, read with the bearer `token`.
async fn metric_with_token(gw: &GatewayProcess, token: &str, series: &str) -> Option<f64> {
    let (status, text) = admin_request(
        gw,
        reqwest::Method::GET,
        "/metrics",
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, 200, "/metrics with the token");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_needs_the_admin_token_and_without_it_reloads_nothing() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&with_admin_token(&config(origin.addr, ""), TOKEN));
    // What the admin listener answers any request without the token.
    let refused = admin_request(&gw, reqwest::Method::GET, "/status", None).await;
    assert_eq!(refused.0, 401, "/status without the token: {}", refused.1);

    gw.rewrite_config(&with_admin_token(
        &config(origin.addr, &fixed_route("new", "/new", "added")),
        TOKEN,
    ));
    let wrong = [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(TOKEN.to_string()),
        Some(format!("Basic {TOKEN}")),
    ];
    for auth in &wrong {
        let answer = admin_request(&gw, reqwest::Method::POST, "/reload", auth.as_deref()).await;
        assert_eq!(answer, refused, "POST /reload with {auth:?}");
    }
    assert_eq!(get(&gw, "/new").await.0, 404, "nothing was reloaded");
    let doc = status_with_token(&gw, TOKEN).await;
    assert_eq!(doc["config"]["generation"], 1, "{doc}");
    assert!(doc["config"]["last_error"].is_null(), "{doc}");
    for result in ["ok", "error", "refused"] {
        let series = format!("avx_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(
            metric_with_token(&gw, TOKEN, &series).await.unwrap_or(0.0),
            0.0,
            "an unauthorized POST /reload is no reload attempt: {series}"
        );
    }

    let (status, body) = admin_request(
        &gw,
        reqwest::Method::POST,
        "/reload",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"generation\":2"), "{body}");
    assert_eq!(get(&gw, "/new").await, (200, "added".to_string()));
    assert_eq!(
        status_with_token(&gw, TOKEN).await["config"]["generation"],
        2
    );
}

/// `avx-gateway reload -c config` with `AVX_GATEWAY_ADMIN_TOKEN` set to `env_token`, or unset.
async fn reload_command_with_env(config: &str, env_token: Option<&str>) -> std::process::Output {
    let config = config.to_string();
    let env_token = env_token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(binary());
        cmd.args(["reload", "-c", &config]);
        match env_token {
            Some(t) => cmd.env("AVX_GATEWAY_ADMIN_TOKEN", t),
            None => cmd.env_remove("AVX_GATEWAY_ADMIN_TOKEN"),
        };
        cmd.output().expect("run avx-gateway reload")
    })
    .await
    .expect("reload command task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_subcommand_sends_the_admin_token_and_fails_visibly_on_a_wrong_one() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&with_admin_token(&config(origin.addr, ""), TOKEN));
    let file = gw.config.display().to_string();
    let text = |o: &std::process::Output| {
        format!(
            "stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // A wrong token in the environment wins over the file's, and is refused.
    gw.rewrite_config(&with_admin_token(
        &config(origin.addr, &fixed_route("one", "/one", "1")),
        TOKEN,
    ));
    let out = reload_command_with_env(&file, Some("wrong-token")).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("unauthorized"),
        "says why: {stderr}"
    );
    assert_eq!(get(&gw, "/one").await.0, 404, "nothing was reloaded");
    assert_eq!(
        status_with_token(&gw, TOKEN).await["config"]["generation"],
        1
    );

    // The right token from the environment.
    let out = reload_command_with_env(&file, Some(TOKEN)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"generation\":2"),
        "prints the new generation: {}",
        text(&out)
    );
    assert_eq!(get(&gw, "/one").await, (200, "1".to_string()));

    // Without the variable, the file's token is sent.
    gw.rewrite_config(&with_admin_token(
        &config(origin.addr, &fixed_route("two", "/two", "2")),
        TOKEN,
    ));
    let out = reload_command_with_env(&file, None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(get(&gw, "/two").await, (200, "2".to_string()));

    // Rotation: the file's new token is not the live one yet, so the file alone is refused;
    // the old one in the variable reloads, and then only the new token opens the listener.
    let rotated = "rotated-test-token";
    gw.rewrite_config(&with_admin_token(
        &config(origin.addr, &fixed_route("three", "/three", "3")),
        rotated,
    ));
    let out = reload_command_with_env(&file, None).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        text(&out)
    );
    assert_eq!(get(&gw, "/three").await.0, 404, "nothing was reloaded");
    let out = reload_command_with_env(&file, Some(TOKEN)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(get(&gw, "/three").await, (200, "3".to_string()));
    let old = admin_request(
        &gw,
        reqwest::Method::GET,
        "/status",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(
        old.0, 401,
        "the old token no longer opens the admin listener"
    );
    assert_eq!(
        status_with_token(&gw, rotated).await["config"]["generation"],
        4
    );
}

/// An upstream `backend` over `origin` (with `weight`) guarded by a circuit breaker that opens
/// after three failures and stays open 30 s, the api route to it, and `extra` routes.
fn breaker_config(origin: SocketAddr, weight: u32, extra: &str) -> String {
    format!(
        r#"listeners:
  - address: {{listen}}
upstreams:
  backend:
    servers: [{{ address: {origin}, weight: {weight} }}]
    passive_health: {{ enabled: false }}
    circuit_breaker: {{ failure_threshold: 3, failure_rate: 0, open_seconds: 30 }}
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: backend
{extra}"#
    )
}

/// The `(state, transitions)` of the `backend` upstream's breaker on `/status`.
async fn backend_breaker(gw: &GatewayProcess) -> (String, u64) {
    let doc = gw.status().await;
    let cb = &doc["upstreams"]["backend"]["circuit_breaker"];
    (
        cb["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no breaker state: {doc}"))
            .to_string(),
        cb["transitions"].as_u64().unwrap_or(u64::MAX),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_stays_open_across_reloads_until_its_servers_change() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&breaker_config(origin.addr, 1, ""));
    let http = client();
    origin.set_fail_status(Some(503));
    for i in 0..3 {
        let r = http.get(gw.url("/api/x")).send().await.expect("request");
        assert_eq!(r.status(), 503, "failure {i}");
        assert!(
            r.headers().contains_key("x-upstream"),
            "failure {i} is the origin's"
        );
    }
    assert_eq!(backend_breaker(&gw).await, ("open".to_string(), 1));
    assert_eq!(origin.hits(), 3);
    // The origin recovers: a closed breaker would now let requests through to a 200.
    origin.set_fail_status(None);

    // An unrelated change keeps the upstream, and with it the open circuit.
    gw.rewrite_config(&breaker_config(
        origin.addr,
        1,
        &fixed_route("other", "/other", "o"),
    ));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&gw, "/other").await.0, 200, "the reload is live");
    assert_eq!(
        backend_breaker(&gw).await,
        ("open".to_string(), 1),
        "the breaker survived the reload"
    );
    let r = http.get(gw.url("/api/x")).send().await.expect("request");
    assert_eq!(r.status(), 503, "still failing fast after the reload");
    assert!(
        !r.headers().contains_key("x-upstream"),
        "answered by the gateway"
    );
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .expect("an integer Retry-After");
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("circuit open"), "{body:?}");
    assert_eq!(origin.hits(), 3, "the open circuit sent nothing upstream");

    // Other changes to the upstream's section rebuild it, and the breaker still judges the
    // same servers, so it stays open.
    gw.rewrite_config(&breaker_config(origin.addr, 1, "").replace(
        "    passive_health:",
        "    retries: 0\n    timeouts: { read_ms: 20000 }\n    passive_health:",
    ));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        backend_breaker(&gw).await,
        ("open".to_string(), 1),
        "a rebuilt upstream over the same servers keeps its breaker"
    );
    let r = http.get(gw.url("/api/x")).send().await.expect("request");
    assert_eq!(r.status(), 503);
    assert!(
        !r.headers().contains_key("x-upstream"),
        "still failing fast"
    );
    assert_eq!(origin.hits(), 3);

    // A change of the upstream's servers (the same address, another weight) starts it afresh.
    gw.rewrite_config(&breaker_config(origin.addr, 2, ""));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend_breaker(&gw).await, ("closed".to_string(), 0));
    let r = http.get(gw.url("/api/x")).send().await.expect("request");
    assert_eq!(r.status(), 200, "a fresh breaker lets the request through");
    assert!(r.headers().contains_key("x-upstream"));
    assert_eq!(origin.hits(), 4);
}

/// `yaml` with a one-worker `server:` section (one upstream pool, so every request may reuse
/// every idle connection), and the harness's private paths and short grace periods.
fn one_worker(yaml: &str) -> String {
    format!(
        "server:\n  workers: 1\n  pid_file: {{dir}}/gw.pid\n  upgrade_sock: {{dir}}/upgrade.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n{yaml}"
    )
}

/// One request on `conn`: asserts a 200 from the origin and returns its `X-Origin-Conn`.
async fn origin_conn_of(conn: &mut RawConn, path: &str) -> String {
    let ask = format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n\r\n");
    conn.send(ask.as_bytes()).await.expect("send");
    let r = conn
        .read_response(SOON)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {r:?}");
    r.header("x-origin-conn")
        .unwrap_or_else(|| panic!("GET {path} not answered by the origin: {r:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_reused_across_reloads() {
    let origin = crate::harness::RawOrigin::start().await;
    // `upstream_keys`: lines added to the upstream's section.
    let yaml = |upstream_keys: &str, extra: &str| {
        one_worker(&format!(
            "listeners:\n  - address: {{listen}}\nupstreams:\n  backend:\n    servers: [{{ address: {} }}]\n{upstream_keys}routes:\n  - {{ name: api, match: {{ path_prefix: /api/ }}, upstream: backend }}\n{extra}",
            origin.addr
        ))
    };
    let gw = GatewayProcess::start(&yaml("", ""));
    // One client connection: its requests are handled one after the other, so each finds the
    // connection the previous one gave back to the pool.
    let mut conn = RawConn::connect(gw.addr).await;
    let first = origin_conn_of(&mut conn, "/api/0").await;
    for i in 1..5 {
        let path = format!("/api/{i}");
        assert_eq!(origin_conn_of(&mut conn, &path).await, first, "{path}");
    }
    assert_eq!(origin.connections(), 1, "{}", origin.describe());

    // An unrelated change: the next requests, on this connection and on a new one, still
    // go over the pooled upstream connection.
    gw.rewrite_config(&yaml("", &fixed_route("other", "/other", "o")));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&gw, "/other").await.0, 200, "the reload is live");
    assert_eq!(origin_conn_of(&mut conn, "/api/after").await, first);
    let mut fresh = RawConn::connect(gw.addr).await;
    assert_eq!(origin_conn_of(&mut fresh, "/api/fresh").await, first);

    // A changed upstream section with the same backend: a new upstream object, and still the
    // same pooled connection (the pool is keyed by backend).
    gw.rewrite_config(&yaml(
        "    timeouts: { read_ms: 20000 }\n",
        &fixed_route("other", "/other", "o"),
    ));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origin_conn_of(&mut fresh, "/api/changed").await, first);
    assert_eq!(origin_conn_of(&mut conn, "/api/changed2").await, first);
    assert_eq!(
        origin.connections(),
        1,
        "no upstream connection was opened across the reloads: {}",
        origin.describe()
    );
    assert_eq!(origin.open_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_route_that_stops_caching_are_not_served_until_it_caches_again() {
    let origin = ScriptedOrigin::start().await;
    origin.set(
        "/c/page",
        Reply::ok("cached body").header("cache-control", "max-age=300"),
    );
    let caching = cache_config(origin.addr, "{}", "");
    let not_caching = caching.replace("cache: { enabled: true }", "cache: { enabled: false }");
    assert_ne!(caching, not_caching);
    let gw = GatewayProcess::start(&caching);
    let http = client();
    let fetch = |path: &'static str| {
        let http = http.clone();
        let url = gw.url(path);
        async move {
            let r = http.get(url).send().await.expect("request");
            let status = r.status().as_u16();
            let cache = r
                .headers()
                .get("x-cache-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (status, cache, r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(fetch("/c/page").await.1.as_deref(), Some("MISS"));
    assert_eq!(
        fetch("/c/page").await,
        (200, Some("HIT".to_string()), "cached body".to_string())
    );
    assert_eq!(origin.hits("/c/page"), 1);
    // From now on the origin answers something else, so an answer says where it came from.
    origin.set(
        "/c/page",
        Reply::ok("origin body").header("cache-control", "max-age=300"),
    );

    gw.rewrite_config(&not_caching);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    for i in 0..2 {
        let (status, cache, body) = fetch("/c/page").await;
        assert_eq!((status, body.as_str()), (200, "origin body"), "request {i}");
        assert_ne!(cache.as_deref(), Some("HIT"), "request {i}");
        assert_eq!(
            origin.hits("/c/page"),
            2 + i,
            "request {i} went to the origin"
        );
    }
    assert_eq!(
        gw.status().await["cache"]["entries"],
        1,
        "the store keeps the entry, and nothing new was stored"
    );

    // Caching comes back: the kept entry, still fresh, is served again (docs/operations.md).
    gw.rewrite_config(&caching);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fetch("/c/page").await,
        (200, Some("HIT".to_string()), "cached body".to_string())
    );
    assert_eq!(
        origin.hits("/c/page"),
        3,
        "the hit did not reach the origin"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_config_changes_on_a_successful_reload_only() {
    let origin = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&config(origin.addr, ""));
    let file_hash = || sha256_hex(&std::fs::read(&gw.config).expect("read config"));
    let started = gw.status().await["config"].clone();
    assert_eq!(started["generation"], 1, "{started}");
    assert_eq!(started["sha256"], file_hash(), "{started}");
    assert!(started["last_error"].is_null(), "{started}");
    let loaded_unix = started["loaded_at_unix"].as_u64().expect("loaded_at_unix");
    assert_eq!(
        started["loaded_at"],
        crate::harness::http_date(std::time::UNIX_EPOCH + Duration::from_secs(loaded_unix)),
        "loaded_at is the HTTP date of loaded_at_unix: {started}"
    );
    let loaded_metric = metric(&gw, "avx_config_loaded_timestamp_seconds")
        .await
        .expect("avx_config_loaded_timestamp_seconds");
    assert_eq!(metric(&gw, "avx_config_generation").await, Some(1.0));
    // loaded_at has a resolution of one second: let the clock pass it first.
    assert!(
        wait_until(SOON, || async { unix_now() > loaded_unix }).await,
        "the clock did not move past loaded_at"
    );

    // A bad file (400) and a change that needs the upgrade (409) leave it all as it was.
    let unchanged = |doc: &serde_json::Value, what: &str| {
        for key in ["generation", "sha256", "loaded_at", "loaded_at_unix"] {
            assert_eq!(doc[key], started[key], "{key} after {what}: {doc}");
        }
    };
    gw.rewrite_config(&config(
        origin.addr,
        "  - { name: broken, match: { path: /b }, upstream: nowhere }\n",
    ));
    assert_eq!(gw.reload().await.0, 400);
    let doc = gw.status().await["config"].clone();
    unchanged(&doc, "a bad file");
    assert!(doc["last_error"].is_string(), "{doc}");
    gw.rewrite_config(&config(origin.addr, "").replace("{listen}", "127.0.0.1:1"));
    assert_eq!(gw.reload().await.0, 409);
    unchanged(&gw.status().await["config"], "a refused change");
    assert_eq!(
        metric(&gw, "avx_config_loaded_timestamp_seconds").await,
        Some(loaded_metric)
    );
    assert_eq!(metric(&gw, "avx_config_generation").await, Some(1.0));

    // A good new file: a new generation, the new file's hash, a later loaded_at.
    gw.rewrite_config(&config(origin.addr, &fixed_route("new", "/new", "n")));
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("reload answer is JSON");
    let doc = gw.status().await["config"].clone();
    assert_eq!(doc["generation"], 2, "{doc}");
    assert_eq!(doc["sha256"], file_hash(), "{doc}");
    assert_ne!(doc["sha256"], started["sha256"], "{doc}");
    assert_eq!(
        (&answer["generation"], &answer["sha256"]),
        (&doc["generation"], &doc["sha256"]),
        "POST /reload answers what /status then shows"
    );
    let reloaded_unix = doc["loaded_at_unix"].as_u64().expect("loaded_at_unix");
    assert!(
        reloaded_unix > loaded_unix && reloaded_unix <= unix_now(),
        "loaded_at_unix {loaded_unix} -> {reloaded_unix}"
    );
    assert_ne!(doc["loaded_at"], started["loaded_at"], "{doc}");
    assert!(
        doc["last_error"].is_null(),
        "a good reload clears the error: {doc}"
    );
    assert!(
        metric(&gw, "avx_config_loaded_timestamp_seconds")
            .await
            .is_some_and(|t| t > loaded_metric),
        "the loaded timestamp metric moved"
    );
    assert_eq!(metric(&gw, "avx_config_generation").await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_once_after_a_burst_of_writes() {
    let origin = TestUpstream::start("origin").await;
    // A long debounce: the writes below come much faster than that.
    let watched = |extra: &str| {
        format!(
            "server:\n  workers: 2\n  pid_file: {{dir}}/gw.pid\n  upgrade_sock: {{dir}}/upgrade.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n  watch_config: true\n  watch_debounce_ms: 1500\n{}",
            config(origin.addr, extra)
        )
    };
    let gw = GatewayProcess::start(&watched(""));
    // Each version valid and different: a reload per write would be counted per write.
    for v in 1..=4 {
        gw.rewrite_config(&watched(&fixed_route("w", "/watched", &format!("v{v}"))));
        // Also spaces the writes out by a request's round trip.
        assert_eq!(
            get(&gw, "/watched").await.0,
            404,
            "write {v}: no reload while the writes go on"
        );
    }
    assert!(
        wait_until(SOON, || async {
            get(&gw, "/watched").await == (200, "v4".to_string())
        })
        .await,
        "the last version went live: {}",
        gw.log()
    );
    assert_eq!(
        metric(&gw, "avx_config_reloads_total{result=\"ok\"}").await,
        Some(1.0),
        "one reload for the burst"
    );
    assert_eq!(generation(&gw).await, 2);
}
