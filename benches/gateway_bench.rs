//! Component benchmarks. Run one group with e.g.
//! `cargo bench --bench gateway_bench -- route_matching`.

use avx_gateway::config::{CircuitBreakerConfig, Config, RouteConfig};
use avx_gateway::policy::{now_us, RateLimiter};
use avx_gateway::routing::RouteTable;
use avx_gateway::upstream::CircuitBreaker;
use avx_gateway::upstream::Upstream;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Method};

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
        let table = RouteTable::build(&route_configs(n), |_| Some(0)).expect("table builds");
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
                        .map(|r| r.index)
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
            let (up, _) = Upstream::build("u", &cfg, None).expect("upstream builds");
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

criterion_group!(
    benches,
    route_matching,
    load_balancer,
    rate_limit,
    circuit_breaker
);
criterion_main!(benches);
