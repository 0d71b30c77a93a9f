//! `avx-gateway -t`: valid configs pass; every error names the file, the line and the key path.
//! Also `--version`, `--help`, and the shipped default config.

use crate::harness::gateway::binary;
use crate::harness::{check_config, client, GatewayProcess};
use std::process::Command;

/// A parsed `avx-gateway: configuration error: FILE:LINE:COL: key.path: message` line.
#[derive(Debug)]
struct Located {
    line: Option<usize>,
    /// `key.path: message`, or just `message` for whole-document errors.
    rest: String,
    full: String,
}

/// Runs `-t` on `yaml`, asserts it fails, and parses the error for the config file.
fn config_error(yaml: &str) -> Located {
    let (ok, out, path, _dir) = check_config(yaml);
    assert!(
        !ok,
        "`-t` accepted an invalid config:\n{yaml}\noutput: {out}"
    );
    let file = path.display().to_string();
    let full = out
        .lines()
        .find(|l| l.contains("configuration error"))
        .unwrap_or_else(|| panic!("no `configuration error` line in: {out}"))
        .to_string();
    let after_file = full
        .split_once(file.as_str())
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("error does not name the file {file}: {full}"));
    // `:LINE:COL: rest`, `:LINE: rest` or `: rest`.
    let (line, rest) = match after_file.strip_prefix(':') {
        Some(loc) if loc.starts_with(|c: char| c.is_ascii_digit()) => {
            let digits: String = loc.chars().take_while(|c| c.is_ascii_digit()).collect();
            let tail = loc.split_once(": ").map_or("", |(_, r)| r);
            (digits.parse().ok(), tail)
        }
        Some(tail) => (None, tail),
        None => (None, after_file),
    };
    Located {
        line,
        rest: rest.trim().to_string(),
        full,
    }
}

/// Asserts the error is at `key` (exact key path), on `line`, with a message containing `msg`.
#[track_caller]
pub(crate) fn assert_error(yaml: &str, line: usize, key: &str, msg: &str) {
    let e = config_error(yaml);
    assert!(
        e.rest.starts_with(&format!("{key}: ")),
        "expected key path `{key}`: {}",
        e.full
    );
    assert!(e.rest.contains(msg), "expected message `{msg}`: {}", e.full);
    assert_eq!(
        e.line,
        Some(line),
        "expected line {line} for `{key}`: {}",
        e.full
    );
}

const LISTEN: &str = "listeners:\n  - address: 127.0.0.1:18080\n";

#[test]
fn a_valid_config_passes_test_mode() {
    let (ok, out, _, _dir) = check_config(&format!(
        "{LISTEN}upstreams:
  api:
    servers:
      - {{ address: 127.0.0.1:3000, weight: 2 }}
      - {{ address: 127.0.0.1:3001 }}
    health_check: {{ type: http, path: /health, interval_ms: 1000 }}
routes:
  - name: api
    match: {{ path_prefix: /api/, methods: [GET, POST] }}
    upstream: api
  - name: re
    match: {{ path_regex: '^/v[0-9]+/' }}
    upstream: api
  - name: fixed
    match: {{ path: /ping }}
    respond: {{ status: 200, body: pong }}
"
    ));
    assert!(ok, "valid config rejected: {out}");
    assert!(out.contains("is valid"), "{out}");
}

#[test]
fn unknown_upstream_names_its_line_and_key() {
    // Block style: the `upstream: apii` key is on line 12.
    let yaml = format!(
        "{LISTEN}upstreams:
  api:
    servers: [{{ address: 127.0.0.1:3000 }}]
routes:
  - name: a
    match: {{ path_prefix: /a }}
    upstream: api
  - name: b
    match: {{ path_prefix: /b }}
    upstream: apii
"
    );
    assert_error(&yaml, 12, "routes[1].upstream", "unknown upstream \"apii\"");
    let e = config_error(&yaml);
    assert!(e.full.contains(":12:5: "), "column of the key: {}", e.full);

    // Flow-style routes: line 8.
    let yaml = format!(
        "{LISTEN}upstreams:
  api:
    servers: [{{ address: 127.0.0.1:3000 }}]
routes:
  - {{ name: a, match: {{ path_prefix: /a }}, upstream: api }}
  - {{ name: b, match: {{ path_prefix: /b }}, upstream: apii }}
"
    );
    assert_error(&yaml, 8, "routes[1].upstream", "unknown upstream \"apii\"");

    // Comments and blank lines that mention the key must not mislead the locator: line 16.
    let yaml = format!(
        "{LISTEN}upstreams:
  api:
    servers: [{{ address: 127.0.0.1:3000 }}]
routes:
  # upstream: apii is referenced below
  - name: a
    match:
      path_prefix: /a
      headers: {{ x-upstream: \"*\" }}
    upstream: api

  - name: b
    # upstream: nope
    upstream: apii
"
    );
    assert_error(&yaml, 16, "routes[1].upstream", "unknown upstream \"apii\"");

    // Routes before the other sections: line 3.
    let yaml = "routes:
  - name: b
    upstream: apii
listeners:
  - address: 127.0.0.1:18080
upstreams:
  apii2:
    servers: [{ address: 127.0.0.1:3000 }]
";
    assert_error(yaml, 3, "routes[0].upstream", "unknown upstream \"apii\"");
}

#[test]
fn unknown_upstream_in_a_non_indented_sequence_names_its_line() {
    // `- ` items at the same indentation as their key are common YAML (many emitters write it).
    let yaml = "listeners:
- address: 127.0.0.1:18080
upstreams:
  api:
    servers:
    - address: 127.0.0.1:3000
routes:
- name: a
  upstream: api
- name: b
  upstream: apii
";
    assert_error(yaml, 11, "routes[1].upstream", "unknown upstream \"apii\"");
}

#[test]
fn duplicate_route_names_are_rejected() {
    let yaml = format!(
        "{LISTEN}routes:
  - name: a
    respond: {{ status: 200 }}
  - name: b
    respond: {{ status: 200 }}
  - name: a
    respond: {{ status: 201 }}
"
    );
    assert_error(
        &yaml,
        8,
        "routes[2].name",
        "duplicate route name \"a\" (also routes[0])",
    );
}

#[test]
fn invalid_server_address_is_rejected() {
    let yaml = format!(
        "{LISTEN}upstreams:
  api:
    servers:
      - address: 127.0.0.1:3000
      - address: localhost
routes:
  - name: a
    upstream: api
"
    );
    assert_error(
        &yaml,
        7,
        "upstreams.api.servers[1].address",
        "invalid address \"localhost\": the port is required",
    );
}

#[test]
fn invalid_server_address_in_a_flow_sequence_names_its_line() {
    // The style the shipped config's comments and most examples use.
    let yaml = format!(
        "{LISTEN}upstreams:
  api:
    servers: [{{ address: 127.0.0.1:3000 }}, {{ address: \"10.0.0.1:99999\" }}]
routes:
  - name: a
    upstream: api
"
    );
    assert_error(
        &yaml,
        5,
        "upstreams.api.servers[1].address",
        "invalid address \"10.0.0.1:99999\"",
    );
}

#[test]
fn invalid_listener_address_is_rejected() {
    let yaml = "listeners:
  - address: 127.0.0.1:18080
  - address: not-an-address
";
    assert_error(
        yaml,
        3,
        "listeners[1].address",
        "invalid address \"not-an-address\"",
    );
    let yaml = "listeners:\n  - address: 127.0.0.1\n";
    assert_error(
        yaml,
        2,
        "listeners[0].address",
        "invalid address \"127.0.0.1\"",
    );
}

#[test]
fn invalid_regex_is_rejected() {
    let yaml = format!(
        "{LISTEN}routes:
  - name: a
    match:
      path_regex: \"^/(unclosed\"
    respond: {{ status: 200 }}
"
    );
    assert_error(
        &yaml,
        6,
        "routes[0].match.path_regex",
        "invalid regex \"^/(unclosed\"",
    );
}

#[test]
fn route_hosts_and_paths_must_be_in_normal_form() {
    // Requests are matched after normalization, so these could never match as written.
    let yaml = format!(
        "{LISTEN}routes:
  - name: a
    match:
      host: admin.example.com.
    respond: {{ status: 403 }}
"
    );
    assert_error(&yaml, 6, "routes[0].match.host", "without the trailing dot");
    let yaml = format!(
        "{LISTEN}routes:
  - name: a
    match:
      path_prefix: /a/./b
    respond: {{ status: 403 }}
"
    );
    assert_error(&yaml, 6, "routes[0].match.path_prefix", "write \"/a/b\"");
}

#[test]
fn zero_weight_is_rejected() {
    let yaml = format!(
        "{LISTEN}upstreams:
  api:
    servers:
      - address: 127.0.0.1:3000
        weight: 0
routes:
  - name: a
    upstream: api
"
    );
    assert_error(
        &yaml,
        7,
        "upstreams.api.servers[0].weight",
        "weight 0 out of range",
    );
}

#[test]
fn empty_server_list_is_rejected() {
    let yaml = format!(
        "{LISTEN}upstreams:
  api:
    servers: []
routes:
  - name: a
    upstream: api
"
    );
    assert_error(
        &yaml,
        5,
        "upstreams.api.servers",
        "at least one server is required",
    );
}

#[test]
fn missing_server_list_points_at_its_upstream() {
    // `servers` is absent, so the nearest line that exists is the upstream's own key (line 4).
    let yaml = format!(
        "{LISTEN}upstreams:
  api:
    load_balancing: random
routes:
  - name: a
    upstream: api
"
    );
    assert_error(
        &yaml,
        4,
        "upstreams.api.servers",
        "at least one server is required",
    );
}

#[test]
fn colliding_listeners_are_rejected() {
    let same = "listeners:
  - address: 127.0.0.1:18080
  - address: 127.0.0.1:18080
";
    assert_error(
        same,
        3,
        "listeners[1].address",
        "collides with listeners[0].address",
    );

    let wildcard = "listeners:
  - address: 0.0.0.0:18080
  - address: 127.0.0.1:18081
  - address: 127.0.0.1:18080
";
    assert_error(
        wildcard,
        4,
        "listeners[2].address",
        "address 127.0.0.1:18080 collides with listeners[0].address",
    );

    let wildcard_second = "listeners:
  - address: 127.0.0.1:18080
  - address: 0.0.0.0:18080
";
    assert_error(
        wildcard_second,
        3,
        "listeners[1].address",
        "collides with listeners[0].address",
    );

    let admin = "listeners:
  - address: 127.0.0.1:18080
admin:
  address: 127.0.0.1:18080
";
    assert_error(
        admin,
        4,
        "admin.address",
        "collides with listeners[0].address",
    );

    let admin_wildcard = "admin:
  address: 0.0.0.0:18090
listeners:
  - address: 127.0.0.1:18080
  - address: 127.0.0.1:18090
";
    let e = config_error(admin_wildcard);
    assert!(
        e.rest.contains("collides with"),
        "admin 0.0.0.0:P and listener 127.0.0.1:P: {}",
        e.full
    );
    assert!(e.line == Some(2) || e.line == Some(5), "{}", e.full);

    // Different ports on the same IP are fine.
    let (ok, out, _, _dir) = check_config(
        "listeners:
  - address: 127.0.0.1:18080
  - address: 0.0.0.0:18081
admin:
  address: 127.0.0.1:18082
",
    );
    assert!(ok, "{out}");
}

#[test]
fn unknown_keys_are_rejected_anywhere() {
    // Top level: a whole-document error, located at the typo.
    let e = config_error(&format!("{LISTEN}rotes: []\n"));
    assert!(e.rest.contains("unknown field `rotes`"), "{}", e.full);
    assert_eq!(e.line, Some(3), "{}", e.full);

    // Server section.
    assert_error(
        &format!("server:\n  wokers: 2\n{LISTEN}"),
        2,
        "server",
        "unknown field `wokers`",
    );

    // A listener.
    assert_error(
        "listeners:\n  - address: 127.0.0.1:18080\n    h2: true\n",
        3,
        "listeners[0]",
        "unknown field `h2`",
    );

    // Nested two levels into an upstream.
    assert_error(
        &format!(
            "{LISTEN}upstreams:
  api:
    servers: [{{ address: 127.0.0.1:3000 }}]
    health_check:
      intervl_ms: 100
"
        ),
        7,
        "upstreams.api.health_check",
        "unknown field `intervl_ms`",
    );

    // A route's match, block style and flow style.
    assert_error(
        &format!(
            "{LISTEN}routes:
  - name: a
    match:
      path_prefx: /a
    respond: {{ status: 200 }}
"
        ),
        6,
        "routes[0].match",
        "unknown field `path_prefx`",
    );
    assert_error(
        &format!(
            "{LISTEN}routes:
  - name: a
    match: {{ path_prefx: /a }}
    respond: {{ status: 200 }}
"
        ),
        5,
        "routes[0].match",
        "unknown field `path_prefx`",
    );

    // A route itself.
    assert_error(
        &format!(
            "{LISTEN}routes:
  - name: a
    upstrem: api
"
        ),
        5,
        "routes[0]",
        "unknown field `upstrem`",
    );
}

#[test]
fn wrong_types_are_rejected() {
    assert_error(
        &format!("server:\n  workers: two\n{LISTEN}"),
        2,
        "server.workers",
        "invalid type: string \"two\"",
    );
    assert_error(
        "listeners:\n  address: 127.0.0.1:18080\n",
        2,
        "listeners",
        "expected a sequence",
    );
    assert_error(
        &format!(
            "{LISTEN}upstreams:
  api:
    servers:
      - address: 127.0.0.1:3000
        weight: heavy
"
        ),
        7,
        "upstreams.api.servers[0].weight",
        "invalid type: string \"heavy\"",
    );
    assert_error(
        "listeners:\n  - address: 127.0.0.1:18080\n    h2c: sometimes\n",
        3,
        "listeners[0].h2c",
        "invalid type",
    );
    assert_error(
        &format!(
            "{LISTEN}upstreams:
  api:
    servers: [{{ address: 127.0.0.1:3000 }}]
    load_balancing: fastest
"
        ),
        6,
        "upstreams.api.load_balancing",
        "unknown variant `fastest`",
    );
}

#[test]
fn version_and_help() {
    let out = Command::new(binary()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {text:?}"
    );
    assert!(text.contains("avx-gateway"), "--version printed {text:?}");

    let out = Command::new(binary()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["-c, --conf", "-t, --test", "-d, --daemon", "-u, --upgrade"] {
        assert!(text.contains(flag), "--help lacks `{flag}`:\n{text}");
    }
}

fn shipped_config() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/gateway.yaml")
}

#[test]
fn the_shipped_default_config_passes_test_mode() {
    let out = Command::new(binary())
        .arg("-t")
        .arg("-c")
        .arg(shipped_config())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "conf/gateway.yaml rejected: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_default_config_answers_api_test() {
    let shipped = std::fs::read_to_string(shipped_config()).unwrap();
    for fixed in [
        "0.0.0.0:8080",
        "127.0.0.1:9090",
        "/tmp/avx-gateway.pid",
        "/tmp/avx-gateway-upgrade.sock",
    ] {
        assert!(
            shipped.contains(fixed),
            "conf/gateway.yaml changed: {fixed}"
        );
    }
    let copy = shipped
        .replace("0.0.0.0:8080", "{listen}")
        .replace("127.0.0.1:9090", "{admin}")
        .replace("/tmp/avx-gateway.pid", "{dir}/gw.pid")
        .replace("/tmp/avx-gateway-upgrade.sock", "{dir}/upgrade.sock");
    let gw = GatewayProcess::start(&copy);

    let resp = client().get(gw.url("/api/test")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.text().await.unwrap();
    assert_eq!(body, r#"{"status":"ok"}"#);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ok");

    let resp = client().get(gw.url("/nothing-here")).send().await.unwrap();
    assert_eq!(resp.status(), 404, "unrouted paths are 404");
}
