//! Component benchmarks. Run one group with e.g.
//! `cargo bench --bench gateway_bench -- route_matching`.

use avx_gateway::access_log::{AccessLog, LogEntry};
use avx_gateway::cache::{CacheStore, IndexedStorage, Scheme};
use avx_gateway::config::{
    AccessLogConfig, AccessLogFormat, CacheConfig, CircuitBreakerConfig, Config, RouteConfig,
};
use avx_gateway::metrics::{ErrorKind, RequestSample};
use avx_gateway::policy::{now_us, RateLimiter};
use avx_gateway::routing::RouteTable;
use avx_gateway::runtime::Runtime;
use avx_gateway::upstream::CircuitBreaker;
use avx_gateway::upstream::Upstream;
use avx_gateway::Gateway;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use pingora_cache::eviction::{lru, EvictionManager};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheEntryKey, CacheKey, CacheMeta};
use pingora_http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// `n` routes mixing exact paths, prefixes, regexes and hosts, as a YAML route list.
fn routes_yaml(n: usize) -> String {
    let mut y = String::from("routes:\n");
    for i in 0..n {
        let m = match i % 4 {
            0 => format!("{{ path: /exact/{i} }}"),
            1 => format!("{{ path_prefix: /prefix/{i}/ }}"),
            2 => format!("{{ host: h{i}.example.com, path_prefix: /api/ }}"),
            // Regexes are the expensive kind; keep them a bounded share like real configs.
            _ if i % 40 == 3 => format!("{{ path_regex: '^/re/{i}/[0-9]+$' }}"),
            _ => format!("{{ path_prefix: /p/{i} }}"),
        };
        y.push_str(&format!("  - {{ name: r{i}, match: {m}, upstream: u }}\n"));
    }
    y
}

fn route_configs(n: usize) -> Vec<RouteConfig> {
    let cfg: Config = serde_yaml::from_str(&routes_yaml(n)).expect("bench routes parse");
    cfg.routes
}

fn route_matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_matching");
    let headers = HeaderMap::new();
    for n in [10usize, 100, 1_000, 10_000] {
        let table = RouteTable::build(&route_configs(n)).expect("table builds");
        let last = n - (n % 4) - 4;
        let cases = [
            ("exact", None, format!("/exact/{last}")),
            ("prefix", None, format!("/prefix/{}/deep/path", last + 1)),
            (
                "host",
                Some(format!("h{}.example.com", last + 2)),
                "/api/users/7".to_string(),
            ),
            ("regex", None, "/re/3/12345".to_string()),
            ("miss", None, "/nothing/here".to_string()),
        ];
        for (kind, host, path) in &cases {
            g.bench_with_input(BenchmarkId::new(*kind, n), path, |b, path| {
                b.iter(|| {
                    table
                        .find(host.as_deref(), black_box(path), &Method::GET, &headers)
                        .map(|r| r.id)
                })
            });
        }
    }
    g.finish();
}

fn load_balancer(c: &mut Criterion) {
    let mut g = c.benchmark_group("load_balancer");
    for alg in [
        "round_robin",
        "random",
        "consistent_hash",
        "least_connections",
    ] {
        for n in [2usize, 10, 100] {
            let servers: String = (0..n)
                .map(|i| format!("{{ address: 127.0.0.{}:{} }}, ", 1 + i / 200, 1000 + i))
                .collect();
            let extra = if alg == "consistent_hash" {
                "hash_key: path"
            } else {
                ""
            };
            let yaml = format!("servers: [{servers}]\nload_balancing: {alg}\n{extra}\n");
            let cfg = serde_yaml::from_str(&yaml).expect("upstream parses");
            let up = Upstream::build("u", &cfg, None, None).expect("upstream builds");
            g.bench_function(BenchmarkId::new(alg, n), |b| {
                b.iter(|| up.select(black_box(b"/api/users/42"), &[]))
            });
        }
    }
    g.finish();
}

fn rate_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit");
    // A limit far above the offered load: this measures the check, not rejections.
    let limiter = RateLimiter::new(1e6, 1000, 65_536);
    let ip: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
    g.bench_function("check_one_key", |b| {
        b.iter(|| limiter.check(black_box(&ip)))
    });
    let keys: Vec<u64> = (0..100_000).collect();
    let mut i = 0usize;
    g.bench_function("check_100k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            limiter.check(black_box(&keys[i]))
        })
    });
    g.finish();
}

fn circuit_breaker(c: &mut Criterion) {
    let mut g = c.benchmark_group("circuit_breaker");
    let breaker = CircuitBreaker::new(&CircuitBreakerConfig::default());
    g.bench_function("admit_closed", |b| {
        b.iter(|| breaker.admit(black_box(now_us())))
    });
    g.bench_function("admit_and_record_success", |b| {
        b.iter(|| {
            let now = now_us();
            let a = breaker.admit(now);
            breaker.record(a, false, now);
        })
    });
    g.finish();
}

/// A runtime with 100 routes over one upstream, as the metrics see a real config.
fn metrics_runtime() -> Runtime {
    let yaml = format!(
        "upstreams:\n  u:\n    servers: [{{ address: 127.0.0.1:9 }}]\n{}",
        routes_yaml(100)
    );
    let cfg: Config = serde_yaml::from_str(&yaml).expect("bench config parses");
    Runtime::build(&cfg, &Default::default(), None).expect("runtime builds")
}

fn metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    let rt = metrics_runtime();
    let m = &rt.metrics;
    let ok = RequestSample {
        route: Some(avx_gateway::routing::RouteId::new(42)),
        method: &Method::GET,
        status: 200,
        duration: std::time::Duration::from_micros(350),
        upstream: Some((
            avx_gateway::upstream::UpstreamId::new(0),
            std::time::Duration::from_micros(250),
        )),
        error: None,
        rate_limited: false,
    };
    let failed = RequestSample {
        status: 502,
        error: Some(ErrorKind::Connect),
        ..ok.clone()
    };
    // What `logging` adds to a proxied request: counter, two histograms, in-flight gauge.
    g.bench_function("record_request", |b| {
        b.iter(|| {
            let in_flight = m.enter_route(black_box(avx_gateway::routing::RouteId::new(42)));
            m.record(black_box(&ok));
            drop(in_flight);
        })
    });
    g.bench_function("record_error", |b| b.iter(|| m.record(black_box(&failed))));
    // The same while another thread records on the same route: the cost of sharing the
    // series' cache lines across cores (there is no lock to wait for).
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let in_flight = m.enter_route(avx_gateway::routing::RouteId::new(42));
                m.record(&ok);
                drop(in_flight);
            }
        });
        g.bench_function("record_request_contended", |b| {
            b.iter(|| {
                let in_flight = m.enter_route(black_box(avx_gateway::routing::RouteId::new(42)));
                m.record(black_box(&ok));
                drop(in_flight);
            })
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    g.bench_function("scrape_100_routes", |b| b.iter(|| m.encode().len()));
    g.finish();
}

fn access_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("access_log");
    let entry = LogEntry {
        time: std::time::SystemTime::now(),
        request_id: Some(b"0f6c3d2a9b8e4f10"),
        client_ip: Some("192.0.2.7".parse().expect("ip")),
        method: "GET",
        host: Some(b"api.example.com"),
        path: "/api/users/42?expand=orders",
        protocol: "HTTP/1.1",
        status: 200,
        bytes: 1234,
        duration: std::time::Duration::from_micros(850),
        route: Some("api"),
        upstream: Some("users"),
        upstream_addr: Some("10.0.0.12:8080".parse().expect("addr")),
        upstream_duration: Some(std::time::Duration::from_micros(610)),
        cache_status: None,
        decision: None,
        consumer: None,
        referer: None,
        user_agent: Some(b"Mozilla/5.0 (X11; Linux x86_64) bench"),
        trace_id: None,
    };
    for (name, format) in [
        ("combined", AccessLogFormat::Combined),
        ("json", AccessLogFormat::Json),
    ] {
        let cfg = AccessLogConfig {
            enabled: true,
            path: "/dev/null".into(),
            format,
        };
        let log = AccessLog::open(
            &cfg,
            prometheus::IntCounter::new("d", "d").expect("counter"),
        )
        .expect("open /dev/null");
        g.bench_function(BenchmarkId::new("render", name), |b| {
            b.iter(|| log.render(black_box(&entry)).len())
        });
        // The worker's whole cost: render and hand over to the writer thread.
        log.start().expect("start writer");
        g.bench_function(BenchmarkId::new("log", name), |b| {
            b.iter(|| log.log(black_box(&entry)))
        });
        log.shutdown(std::time::Duration::from_secs(2));
    }
    g.finish();
}

/// A stored 1 KiB entry's metadata, as the proxy would build it.
fn cache_meta() -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).expect("header");
    h.insert_header("cache-control", "max-age=60").expect("cc");
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, h)
}

fn cache(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    let span = Span::inactive();
    for n in [1_000usize, 10_000, 100_000] {
        let store = CacheStore::build(&CacheConfig::default()).expect("cache store");
        let storage: &'static IndexedStorage = store.storage;
        // The proxy's key layout: scheme, host, path (see `RouteCache::key`).
        let key = |i: usize| CacheKey::new(format!("http\0bench.example\0/item/{i}"), "");
        rt.block_on(async {
            for i in 0..n {
                let mut miss = storage
                    .get_miss_handler(&key(i), &cache_meta(), &span.handle())
                    .await
                    .expect("miss handler");
                miss.write_body(body.clone(), true).await.expect("write");
                miss.finish().await.expect("finish");
            }
        });
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("lookup_hit", n), |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                rt.block_on(storage.lookup(&key(i), &span.handle()))
                    .expect("lookup")
                    .is_some()
            })
        });
        g.bench_function(BenchmarkId::new("lookup_miss", n), |b| {
            b.iter(|| {
                i += 1;
                rt.block_on(storage.lookup(&key(n + i), &span.handle()))
                    .expect("lookup")
                    .is_none()
            })
        });
        let mut next = n;
        g.bench_function(BenchmarkId::new("insert_1k", n), |b| {
            b.iter(|| {
                next += 1;
                rt.block_on(async {
                    let mut miss = storage
                        .get_miss_handler(&key(next), &cache_meta(), &span.handle())
                        .await
                        .expect("miss handler");
                    miss.write_body(body.clone(), true).await.expect("write");
                    miss.finish().await
                })
                .expect("finish")
            })
        });
        // Invalidation after an unsafe request: one URL's entries found through the URL
        // index, so the cost must not grow with the number of entries (issue 11: within 2x
        // from 1k to 100k). Each iteration stores a fresh entry first, outside the timing.
        let mut victim = 2 * n;
        g.bench_function(BenchmarkId::new("invalidate_url", n), |b| {
            b.iter_batched(
                || {
                    victim += 1;
                    rt.block_on(async {
                        let mut miss = storage
                            .get_miss_handler(&key(victim), &cache_meta(), &span.handle())
                            .await
                            .expect("miss handler");
                        miss.write_body(body.clone(), true).await.expect("write");
                        miss.finish().await.expect("finish");
                    });
                    format!("/item/{victim}")
                },
                |path| {
                    let purged =
                        rt.block_on(store.purge_url(Some(Scheme::Http), "bench.example", &path));
                    assert_eq!(purged, 1);
                },
                criterion::BatchSize::SmallInput,
            )
        });
        // Eviction: an LRU at its entry limit admitting one more entry evicts the oldest.
        let lru = lru::Manager::<16>::with_capacity_and_watermark(usize::MAX, n / 16 + 1, Some(n));
        let fresh = SystemTime::now() + Duration::from_secs(60);
        for i in 0..n {
            lru.admit(CacheEntryKey::key_only(key(i).to_compact()), 1024, fresh);
        }
        let mut j = n;
        g.bench_function(BenchmarkId::new("evict", n), |b| {
            b.iter(|| {
                j += 1;
                lru.admit(CacheEntryKey::key_only(key(j).to_compact()), 1024, fresh)
                    .len()
            })
        });
    }
    g.finish();
}

/// A keep-alive origin answering every request with a small JSON body.
async fn bench_origin() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 8192];
                let resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
                let mut pending = Vec::new();
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if sock.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn stress_test(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let origin = rt.block_on(bench_origin());
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let dir = std::env::temp_dir().join(format!("avx-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let yaml = format!(
        "server: {{ workers: 2, pid_file: {d}/gw.pid, upgrade_sock: {d}/up.sock }}\n\
         listeners: [{{ address: {listen} }}]\n\
         upstreams: {{ origin: {{ servers: [{{ address: {origin} }}] }} }}\n\
         routes: [{{ name: all, match: {{ path_prefix: / }}, upstream: origin }}]\n",
        d = dir.display()
    );
    let config = Config::from_yaml_str(&yaml).expect("bench config");
    let gateway = Gateway::builder()
        .config(config)
        .build()
        .expect("gateway builds");
    std::thread::spawn(move || {
        if let Ok(server) = gateway.into_server(Default::default()) {
            server.run_forever();
        }
    });
    let url = format!("http://{listen}/api/test");
    rt.block_on(async {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway did not start");
    });
    let mut g = c.benchmark_group("stress_test");
    g.sample_size(10);
    for clients in [1usize, 10, 50] {
        const PER_CLIENT: usize = 200;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .expect("client");
        g.throughput(criterion::Throughput::Elements(
            (clients * PER_CLIENT) as u64,
        ));
        g.bench_function(BenchmarkId::new("keepalive_clients", clients), |b| {
            b.to_async(&rt).iter(|| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let tasks: Vec<_> = (0..clients)
                        .map(|_| {
                            let (http, url) = (http.clone(), url.clone());
                            tokio::spawn(async move {
                                for _ in 0..PER_CLIENT {
                                    let r = http.get(&url).send().await.expect("request");
                                    assert!(r.status().is_success());
                                    r.bytes().await.expect("body");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("client task");
                    }
                }
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    route_matching,
    load_balancer,
    rate_limit,
    circuit_breaker,
    metrics,
    cache,
    stress_test,
    access_log
);
criterion_main!(benches);
