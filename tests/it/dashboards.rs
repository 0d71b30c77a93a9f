//! The shipped Grafana dashboard and Prometheus rules (deploy/grafana, deploy/prometheus): the
//! dashboard is importable JSON whose panels all query the `DS_PROMETHEUS` data source, its
//! queries are valid PromQL, and every metric the dashboard or the rules read exists in a real
//! scrape of a gateway that has the features they show turned on.

use crate::harness::{
    check_config, client, free_addr, promtool, refused_addr, wait_until, GatewayProcess, Reply,
    ScriptedOrigin, TestUpstream,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn dashboard() -> Value {
    let path = repo_file("deploy/grafana/avx-gateway.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn rules() -> serde_yaml::Value {
    let path = repo_file("deploy/prometheus/avx-gateway-rules.yml");
    let text = std::fs::read_to_string(&path).expect("read the rules");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// Every panel, those nested in collapsed rows included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The PromQL of the dashboard: every panel target, and the metric selector of every
/// `label_values(SELECTOR, LABEL)` template variable.
fn dashboard_queries(dash: &Value) -> Vec<String> {
    let mut exprs: Vec<String> = panels(dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let def = var["definition"].as_str().unwrap_or_default().trim();
        let args = def
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(...): {def}", var["name"]));
        // label_values(LABEL) names no metric.
        if let Some((selector, _label)) = args.rsplit_once(',') {
            exprs.push(selector.trim().to_string());
        }
    }
    exprs
}

/// (names defined by `record:`, every `expr:`) of the rules file.
fn rule_queries(rules: &serde_yaml::Value) -> (BTreeSet<String>, Vec<String>) {
    let mut recorded = BTreeSet::new();
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if let Some(name) = rule["record"].as_str() {
                recorded.insert(name.to_string());
            }
            exprs.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    (recorded, exprs)
}

/// PromQL words that are not metric names (functions are recognised by their `(`).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads. Label matchers, ranges and strings are dropped
/// first, then every remaining identifier that is not a function call, a keyword or a label
/// list counts. Histogram series (`_bucket`, `_sum`, `_count`) count as their family.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Strings (with Grafana's `$variables` in them), `{...}` and `[...]`.
    fn skip_string(chars: &mut impl Iterator<Item = char>, quote: char) {
        while let Some(d) = chars.next() {
            if d == '\\' {
                chars.next();
            } else if d == quote {
                break;
            }
        }
    }
    let mut plain = String::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => skip_string(&mut chars, c),
            // A matcher's value may hold a `}`: skip strings inside the braces too.
            '{' => {
                while let Some(d) = chars.next() {
                    match d {
                        '}' => break,
                        '"' | '\'' | '`' => skip_string(&mut chars, d),
                        _ => {}
                    }
                }
                // The selector's metric name and what follows stay apart.
                plain.push(' ');
            }
            '[' => {
                for _ in chars.by_ref().take_while(|&d| d != ']') {}
                plain.push(' ');
            }
            _ => plain.push(c),
        }
    }
    let b = plain.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let next_non_space = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || c == b'.' || c == b'$' {
            // A number, a duration (5m) or a Grafana variable.
            i += 1;
            while i < b.len() && (is_ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == b'_' || c == b':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let word = &plain[start..i];
        let after = next_non_space(i);
        if LABEL_LISTS.contains(&word) && b.get(after) == Some(&b'(') {
            i = plain[after..].find(')').map_or(b.len(), |j| after + j + 1);
            continue;
        }
        if b.get(after) == Some(&b'(') || KEYWORDS.contains(&word) {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .unwrap_or(word);
        names.insert(family.to_string());
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (route, le) (rate(avx_request_duration_seconds_bucket{job=~"$job", route=~"a|b"}[$__rate_interval])))"#
        ),
        ["avx_request_duration_seconds"]
    );
    assert_eq!(
        names(
            "route:x:rate5m > 0.05 and on (job, route) sum without (instance) (rate(a_total[5m] offset 1h)) > 1e3"
        ),
        ["a_total", "route:x:rate5m"]
    );
    assert_eq!(
        names(r#"time() - avx_config_loaded_timestamp_seconds{instance=~"$instance", x="}a"}"#),
        ["avx_config_loaded_timestamp_seconds"]
    );
    assert_eq!(
        names("max by(upstream)(up_total) * ignoring(backend) group_left(version) info"),
        ["info", "up_total"]
    );
}

#[test]
fn the_dashboard_is_importable_and_every_panel_queries_the_prometheus_data_source() {
    let dash = dashboard();
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let is_ours = |d: &Value| d["type"] == "prometheus" && d["uid"] == "${DS_PROMETHEUS}";
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert!(is_ours(&v["datasource"]), "variable {}: {}", v["name"], v);
    }
    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for p in panels(&dash) {
        let title = &p["title"];
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "id twice: {title}"
        );
        for key in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][key].is_u64(), "panel {title}: gridPos.{key}");
        }
        // Rows only group panels: they hold no query.
        if p["type"] == "row" {
            continue;
        }
        assert!(
            is_ours(&p["datasource"]),
            "panel {title}: {}",
            p["datasource"]
        );
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {title}: no targets"));
        for t in targets {
            assert!(is_ours(&t["datasource"]), "panel {title}: target {t}");
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel {title}: target without expr"
            );
            queried += 1;
        }
    }
    assert!(queried > 20, "only {queried} queries");
}

/// Substitutes Grafana's variables as a dashboard would, for a PromQL parser.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$route", ".*")
        .replace("$upstream", ".*")
}

#[test]
fn the_dashboard_queries_are_valid_promql() {
    let Some(promtool) = promtool() else {
        // CI runs scripts/setup.sh, which provides promtool: there its absence is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing on CI: scripts/setup.sh should have unpacked it"
        );
        eprintln!("\n!!! SKIPPED the_dashboard_queries_are_valid_promql: promtool not found !!!\n");
        return;
    };
    // promtool parses the expressions of a rules file: one recording rule per query.
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_queries(&dashboard()).iter().enumerate() {
        let quoted = serde_json::to_string(&as_promql(expr)).unwrap();
        file.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = crate::harness::TestDir::new();
    let path = dir.write("dashboard-rules.yml", &file);
    let out = std::process::Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules on the dashboard's queries:\n{}{}\n{file}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric families with at least one sample in a text exposition.
fn scraped_families(text: &str) -> BTreeSet<String> {
    let types: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((w.next()?, w.next()?))
        })
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|sample| {
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| {
                let base = sample.strip_suffix(s)?;
                matches!(types.get(base), Some(&"histogram") | Some(&"summary")).then_some(base)
            });
            family.unwrap_or(sample).to_string()
        })
        .collect()
}

/// A part of the test gateway's config: top-level sections, upstreams and routes (YAML at the
/// indentation of their list or map).
struct Part {
    what: &'static str,
    top: String,
    upstreams: String,
    routes: String,
}

fn compose(parts: &[&Part]) -> String {
    let mut yaml = String::from("listeners:\n  - address: \"{listen}\"\n");
    for p in parts {
        yaml.push_str(&p.top);
    }
    yaml.push_str("upstreams:\n");
    for p in parts {
        yaml.push_str(&p.upstreams);
    }
    yaml.push_str("routes:\n");
    for p in parts {
        yaml.push_str(&p.routes);
    }
    yaml
}

/// Whether `avx-gateway -t` accepts the config (placeholders filled in).
fn accepted(yaml: &str) -> Result<(), String> {
    let filled = yaml
        .replace("{listen}", &free_addr().to_string())
        .replace("{admin}", &free_addr().to_string());
    let (ok, out, _, _dir) = check_config(&filled);
    if ok {
        Ok(())
    } else {
        Err(out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_and_the_rules_is_in_a_real_scrape() {
    let pool = TestUpstream::start("pool").await;
    let origin = ScriptedOrigin::start().await;
    origin.set("/health", Reply::ok("ok"));
    origin.set_fallback(Reply::ok("cached").header("cache-control", "max-age=60"));
    // What exists on every build: routes with a cache, a rate limit, a circuit breaker and
    // active health checks over real origins.
    let base = Part {
        what: "routes, cache, rate limit, breaker, health checks",
        top: String::new(),
        upstreams: format!(
            r#"  pool:
    servers: [{{ address: "{pool}" }}]
    passive_health: {{ enabled: false }}
    circuit_breaker: {{ failure_threshold: 100, failure_rate: 0 }}
    health_check: {{ type: http, path: /health, interval_ms: 100, timeout_ms: 500 }}
  origin:
    servers: [{{ address: "{origin}" }}]
    health_check: {{ type: http, path: /health, interval_ms: 100, timeout_ms: 500 }}
"#,
            pool = pool.addr,
            origin = origin.addr
        ),
        routes: r#"  - name: cached
    match: { path_prefix: /cached }
    upstream: origin
    cache: { enabled: true }
  - name: limited
    match: { path_prefix: /limited }
    upstream: pool
    rate_limit: { requests_per_second: 1, burst: 0, key: route }
  - name: api
    match: { path_prefix: /api }
    upstream: pool
    strip_prefix: true
"#
        .into(),
    };
    // Features of issue 13 whose series only exist where they are configured, with the keys the
    // issue fixes. Each is added when `avx-gateway -t` accepts it. One this build rejects is not
    // hidden: its series are then missing from the scrape, and the failure names both. Both
    // backends are refused loopback ports: a Redis that cannot be reached and a collector that
    // drops spans still export their series.
    let optional = [
        Part {
            what: "cluster rate limits on Redis",
            top: format!(
                "redis:\n  url: redis://{}/0\n  timeout_ms: 20\n",
                refused_addr(1)
            ),
            upstreams: String::new(),
            routes: r#"  - name: cluster
    match: { path_prefix: /cluster }
    upstream: pool
    rate_limit: { requests_per_second: 100, burst: 50, key: client_ip, scope: cluster, failure_mode: open }
"#
            .into(),
        },
        Part {
            what: "tracing",
            top: format!(
                "tracing:\n  enabled: true\n  otlp_endpoint: http://{}/v1/traces\n  sample_ratio: 1.0\n",
                refused_addr(2)
            ),
            upstreams: String::new(),
            routes: String::new(),
        },
        Part {
            what: "DNS discovery",
            top: String::new(),
            // `localhost` is answered by the resolver itself (RFC 6761): no DNS query leaves
            // the machine.
            upstreams: format!(
                "  named:\n    servers: [{{ address: \"localhost:{}\" }}]\n",
                pool.addr.port()
            ),
            routes: "  - name: named\n    match: { path_prefix: /named }\n    upstream: named\n"
                .into(),
        },
    ];
    let mut parts = vec![&base];
    accepted(&compose(&parts)).expect("the base config is valid");
    let mut skipped = Vec::new();
    for p in &optional {
        let mut with = parts.clone();
        with.push(p);
        match accepted(&compose(&with)) {
            Ok(()) => parts.push(p),
            Err(why) => skipped.push(format!("{}: {}", p.what, why.trim())),
        }
    }
    let gw = GatewayProcess::start(&compose(&parts));

    let c = client();
    // A miss, then a hit once the first answer is stored.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let r = c.get(gw.url("/cached/a")).send().await.expect("request");
            let hit = r
                .headers()
                .get("x-cache-status")
                .is_some_and(|v| v == "HIT");
            r.bytes().await.expect("body");
            hit
        })
        .await,
        "no cache HIT; log:\n{}",
        gw.log()
    );
    for path in [
        "/limited/a",
        "/limited/b",
        "/api/ok",
        "/api/status/500",
        "/cluster/a",
        "/named/a",
        "/nothing",
    ] {
        let resp = c.get(gw.url(path)).send().await.expect("request");
        resp.bytes().await.expect("body");
    }
    // Series are recorded as a request ends, just after its client has the answer.
    let scrape = || async {
        c.get(gw.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    };
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let t = scrape().await;
            t.contains(r#"avx_rate_limited_total{route="limited"} 1"#)
                && t.contains(r#"avx_errors_total{kind="upstream_5xx",route="api"} 1"#)
        })
        .await,
        "traffic not recorded:\n{}",
        scrape().await
    );
    let text = scrape().await;
    let scraped = scraped_families(&text);

    let (recorded, rule_exprs) = rule_queries(&rules());
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (source, exprs) in [
        ("dashboard", dashboard_queries(&dashboard())),
        ("rules", rule_exprs),
    ] {
        for e in &exprs {
            for name in metric_names(e) {
                if !recorded.contains(&name) {
                    used.entry(name).or_default().insert(source);
                }
            }
        }
    }
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !scraped.contains(*name))
        .map(|(name, from)| {
            format!(
                "{name} (used by the {})",
                Vec::from_iter(from.clone()).join(" and ")
            )
        })
        .collect();
    eprintln!(
        "dashboards: {} metric names used, {} missing from the scrape",
        used.len(),
        missing.len()
    );
    for m in &missing {
        eprintln!("dashboards: MISSING {m}");
    }
    for s in &skipped {
        eprintln!("dashboards: not configured, this build rejects {s}");
    }
    assert!(
        missing.is_empty(),
        "{} metric names of deploy/grafana/avx-gateway.json or deploy/prometheus/avx-gateway-rules.yml \
         are not in a scrape:\n  {}\nfeatures this build rejected:\n  {}\nscrape:\n{text}",
        missing.len(),
        missing.join("\n  "),
        if skipped.is_empty() { "none".to_string() } else { skipped.join("\n  ") },
    );
}
