//! A user plugin through the library: examples/custom_plugin.rs registers `tenant` with
//! `Gateway::builder().plugin(..)`; this runs that binary against real origins.

use super::yaml;
use crate::harness::{check_config, client, fetch, GatewayProcess, RawOrigin};
use std::path::PathBuf;
use std::process::Command;

/// The example binary, built by `scripts/test.sh` (`cargo build --examples`) next to the
/// test binaries: `target/debug/examples/custom_plugin`.
fn example() -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|d| d.join("examples").join("custom_plugin"))
        .unwrap_or_else(|| PathBuf::from("custom_plugin"));
    assert!(
        dir.exists(),
        "{} is missing: build it with `cargo build --examples` (scripts/test.sh does)",
        dir.display()
    );
    dir.display().to_string()
}

const ROUTES: &str = r#"
  - name: api
    match: { path_prefix: / }
    upstream: backend
    plugins:
      - tenant: { header: x-tenant, allowed: [acme, globex], forward_as: x-tenant-id }
"#;

#[tokio::test]
async fn the_tenant_plugin_runs_through_the_builder() {
    let origin = RawOrigin::start().await;
    let gw = GatewayProcess::start_binary(&example(), &yaml(&origin, ROUTES, ""));
    let c = client();
    let r = fetch(
        &c,
        "GET",
        &gw.url("/a"),
        &[("x-tenant", "acme"), ("x-tenant-id", "forged")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-served-tenant"), Some("acme"));
    assert_eq!(r.header("x-tenant-checked"), Some("1"));
    assert_eq!(origin.requests()[0].header_all("x-tenant-id"), ["acme"]);
    let r = fetch(&c, "GET", &gw.url("/a"), &[("x-tenant", "initech")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "unknown tenant\n");
    let r = fetch(&c, "GET", &gw.url("/a"), &[("accept", "application/json")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "{\"error\":\"missing tenant header\"}\n");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn the_tenant_plugin_config_errors_are_located() {
    let origin = RawOrigin::start().await;
    let bad = yaml(
        &origin,
        &ROUTES.replace("forward_as: x-tenant-id", "forward_to: x"),
        "",
    );
    let dir = crate::harness::TestDir::new();
    let path = dir.write("gateway.yaml", &bad.replace("{listen}", "127.0.0.1:1"));
    let out = Command::new(example())
        .args(["-t", "-c"])
        .arg(&path)
        .output()
        .expect("run the example");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let line = bad
        .lines()
        .position(|l| l.contains("- tenant:"))
        .expect("the tenant item")
        + 1;
    assert!(
        text.contains(&format!("{}:{line}:", path.display()))
            && text.contains("routes[0].plugins[0].tenant: unknown field `forward_to`"),
        "{text}"
    );
    // The stock binary does not know the type.
    let (ok, out, _, _dir) = check_config(&bad.replace("{listen}", "127.0.0.1:1"));
    assert!(!ok);
    assert!(
        out.contains("routes[0].plugins[0].tenant: unknown plugin type \"tenant\""),
        "{out}"
    );
}
