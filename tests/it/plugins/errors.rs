//! Plugin config errors: each names the file, the line and the key path, with a message.

use crate::config_errors::assert_error;

/// A config with one route whose `plugins:` list is `items` (lines indented six spaces);
/// the first item is on line 10 (11 with one `route_extra` line).
fn route_with(items: &str, route_extra: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:18080\nupstreams:\n  b: {{ servers: [{{ address: 127.0.0.1:3000 }}] }}\nroutes:\n  - name: r\n    match: {{ path_prefix: /x/ }}\n    upstream: b\n{route_extra}    plugins:\n{items}"
    )
}

const P: &str = "routes[0].plugins[0]";

#[test]
fn built_in_plugin_errors_are_located() {
    let cases: &[(&str, usize, String, &str)] = &[
        (
            "      - cors: { allow_origins: [\"*\"], allow_credentials: true }\n",
            10,
            format!("{P}.cors.allow_origins[0]"),
            "cannot be combined with allow_credentials",
        ),
        (
            "      - cors: { allow_origin: [x] }\n",
            10,
            format!("{P}.cors"),
            "unknown field `allow_origin`",
        ),
        (
            "      - ip_restriction:\n          allow: [10.0.0.0/8, 10.0.0.300/8]\n",
            11,
            format!("{P}.ip_restriction.allow[1]"),
            "invalid CIDR or address \"10.0.0.300/8\"",
        ),
        (
            "      - ip_restriction: {}\n",
            10,
            format!("{P}.ip_restriction"),
            "needs an allow or a deny list",
        ),
        (
            "      - jwtt: {}\n",
            10,
            format!("{P}.jwtt"),
            "unknown plugin type \"jwtt\"",
        ),
        (
            "      - cors: { allow_origins: [\"https://a.example\"] }\n        rewrite: { regex: a, replacement: b }\n",
            10,
            P.to_string(),
            "a plugin item has one key",
        ),
        (
            "      - key_auth:\n          consumers:\n            - { name: a, key_sha256: abc }\n",
            12,
            format!("{P}.key_auth.consumers[0].key_sha256"),
            "expected 64 hex digits",
        ),
        (
            "      - key_auth:\n          consumers:\n            - { name: a, key_env: AVX_TEST_SURELY_UNSET }\n",
            12,
            format!("{P}.key_auth.consumers[0].key_env"),
            "environment variable AVX_TEST_SURELY_UNSET is unset or empty",
        ),
        (
            "      - key_auth: { from: [body:key], consumers: [] }\n",
            10,
            format!("{P}.key_auth.from[0]"),
            "expected header:NAME, query:NAME or cookie:NAME",
        ),
        (
            "      - rewrite: { regex: '^/x/(.*)$', replacement: '/$2' }\n",
            10,
            format!("{P}.rewrite.replacement"),
            "$2 is not a capture group",
        ),
        (
            "      - rewrite: { regex: '^/x/(.*$', replacement: '/' }\n",
            10,
            format!("{P}.rewrite.regex"),
            "invalid regex",
        ),
        (
            "      - request_headers:\n          set: { x-a: \"$nope\" }\n",
            11,
            format!("{P}.request_headers.set.x-a"),
            "unknown variable $nope",
        ),
        (
            "      - jwt:\n          keys:\n            - { alg: HS257, secret: x }\n",
            12,
            format!("{P}.jwt.keys[0].alg"),
            "unknown algorithm \"HS257\"",
        ),
        (
            "      - jwt:\n          keys:\n            - { alg: HS256, secret: short }\n",
            12,
            format!("{P}.jwt.keys[0]"),
            "the HS256 secret has 5 bytes; RFC 7518 requires at least 32",
        ),
        (
            "      - jwt:\n          keys:\n            - { alg: RS256, secret: \"base64:AAAA\" }\n",
            12,
            format!("{P}.jwt.keys[0]"),
            "RS256 verifies with a public key: give public_key_file",
        ),
        (
            "      - jwt: { jwks_file: /nonexistent/jwks.json }\n",
            10,
            format!("{P}.jwt.jwks_file"),
            "cannot read /nonexistent/jwks.json",
        ),
        (
            "      - jwt: { leeway_seconds: 5 }\n",
            10,
            format!("{P}.jwt"),
            "needs keys, a jwks_file or a jwks_url",
        ),
        (
            "      - basic_auth:\n          users: { bob: \"$apr1$x$y\" }\n",
            11,
            format!("{P}.basic_auth.users.bob"),
            "unsupported or malformed hash for user \"bob\"",
        ),
        (
            "      - redirect: { regex: '^/x(.*)$', replacement: 'https://new.example$1' }\n",
            10,
            format!("{P}.redirect.replacement"),
            "a capture may only follow the host and a '/'",
        ),
        (
            "      - redirect: { regex: '^/x(.*)$', replacement: 'new/$1' }\n",
            10,
            format!("{P}.redirect.replacement"),
            "expected a path starting with / or an absolute URL",
        ),
        (
            "      - redirect: { regex: '^/x(.*)$', replacement: '${1}://host/' }\n",
            10,
            format!("{P}.redirect.replacement"),
            "expected a path starting with / or an absolute URL",
        ),
        (
            "      - redirect: { https: true, status: 200 }\n",
            10,
            format!("{P}.redirect.status"),
            "200 is not a redirect status",
        ),
    ];
    for (items, line, key, msg) in cases {
        assert_error(&route_with(items, ""), *line, key, msg);
    }
}

#[test]
fn combination_and_global_errors_are_located() {
    assert_error(
        &route_with(
            "      - rewrite: { regex: '^/x/(.*)$', replacement: '/$1' }\n",
            "    strip_prefix: true\n",
        ),
        9,
        "routes[0].strip_prefix",
        "cannot be combined with a rewrite plugin",
    );
    let global = format!(
        "plugins:\n  - ip_restriction: {{ deny: [] }}\n{}",
        route_with(
            "      - cors: { allow_origins: [\"https://a.example\"] }\n",
            ""
        )
    );
    assert_error(
        &global,
        2,
        "plugins[0].ip_restriction",
        "needs an allow or a deny list",
    );
    assert_error(
        &route_with(
            "      - cors: { allow_origins: [\"https://a.example\"] }\n",
            "    rate_limit: { requests_per_second: 1, key: user }\n",
        ),
        9,
        "routes[0].rate_limit.key",
        "expected client_ip, consumer, header:NAME or route",
    );
}

/// Like `assert_error`, and the column too: the error is exactly
/// `FILE:LINE:COL: KEY: ...MSG...`.
#[track_caller]
fn assert_error_at(yaml: &str, line: usize, col: usize, key: &str, msg: &str) {
    let (ok, out, path, _dir) = crate::harness::check_config(yaml);
    assert!(
        !ok,
        "`-t` accepted an invalid config:\n{yaml}\noutput: {out}"
    );
    let full = out
        .lines()
        .find(|l| l.contains("configuration error"))
        .unwrap_or_else(|| panic!("no `configuration error` line in: {out}"));
    let want = format!("{}:{line}:{col}: {key}: ", path.display());
    let rest = full
        .split_once(&want)
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("expected `{want}...`: {full}"));
    assert!(rest.contains(msg), "expected message `{msg}`: {full}");
}

#[test]
fn forward_auth_and_ip_restriction_errors_name_line_column_and_key() {
    // The column is the offending key's (for a check of the plugin's own), or the value's
    // (for a value serde cannot read at all).
    let cases: &[(&str, usize, usize, String, &str)] = &[
        (
            "      - forward_auth: { url: \"http://127.0.0.1:4181/v\", timeout_ms: 0 }\n",
            10,
            57,
            format!("{P}.forward_auth.timeout_ms"),
            "must be > 0",
        ),
        (
            "      - forward_auth:\n          url: http://127.0.0.1:4181/v\n          timeout_ms: 0\n",
            12,
            11,
            format!("{P}.forward_auth.timeout_ms"),
            "must be > 0",
        ),
        (
            "      - forward_auth: { url: \"ftp://127.0.0.1/v\" }\n",
            10,
            25,
            format!("{P}.forward_auth.url"),
            "\"ftp://127.0.0.1/v\": expected http:// or https://",
        ),
        (
            "      - forward_auth:\n          url: \"not a url\"\n",
            11,
            11,
            format!("{P}.forward_auth.url"),
            "invalid URL \"not a url\"",
        ),
        (
            "      - forward_auth: { url: \"http://\" }\n",
            10,
            25,
            format!("{P}.forward_auth.url"),
            "invalid URL \"http://\"",
        ),
        (
            "      - forward_auth: { timeout_ms: 100 }\n",
            10,
            23,
            format!("{P}.forward_auth"),
            "missing field `url`",
        ),
        (
            "      - ip_restriction: { deny: [10.0.0.0/8], status: 302 }\n",
            10,
            47,
            format!("{P}.ip_restriction.status"),
            "302 is not a 4xx or 5xx status",
        ),
        (
            "      - ip_restriction: { deny: [10.0.0.0/8], status: 600 }\n",
            10,
            47,
            format!("{P}.ip_restriction.status"),
            "600 is not a 4xx or 5xx status",
        ),
        (
            "      - ip_restriction:\n          allow: [127.0.0.1]\n          status: 399\n",
            12,
            11,
            format!("{P}.ip_restriction.status"),
            "399 is not a 4xx or 5xx status",
        ),
        (
            "      - ip_restriction: { deny: [10.0.0.0/8], status: 70000 }\n",
            10,
            55,
            format!("{P}.ip_restriction.status"),
            "invalid value: integer `70000`, expected u16",
        ),
    ];
    for (items, line, col, key, msg) in cases {
        assert_error_at(&route_with(items, ""), *line, *col, key, msg);
    }
    // Both ends of the range pass.
    for status in [400, 599] {
        let yaml = route_with(
            &format!("      - ip_restriction: {{ deny: [10.0.0.0/8], status: {status} }}\n"),
            "",
        );
        let (ok, out, _, _dir) = crate::harness::check_config(&yaml);
        assert!(ok, "status {status} refused: {out}");
    }
}
