//! Zero-downtime upgrade: Pingora's graceful handoff (`-u` + SIGQUIT) under continuous
//! keep-alive load, an in-flight slow request across an upgrade, and the shipped
//! `deploy/avx-gateway-upgrade` script (success, daemon mode, and a config that fails
//! validation).
//!
//! Every upgrade costs Pingora's fixed 5 s close wait before the old process stops accepting,
//! plus `grace_period_seconds` and `graceful_shutdown_timeout_seconds` (1 s each here) before
//! it exits. Each test is bounded by [`BOUND`].

use crate::harness::gateway::binary;
use crate::harness::{
    check_config, client, pid_running, GatewayProcess, Load, PidGuard, TestUpstream,
};
use std::future::Future;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Upper bound on each test.
const BOUND: Duration = Duration::from_secs(55);

/// Bound on one handoff step (new process waiting; new process serving).
const STEP: Duration = Duration::from_secs(10);

/// Bound on an old process's exit after SIGQUIT: 5 s close wait + 1 s grace + 1 s shutdown.
const OLD_EXIT: Duration = Duration::from_secs(15);

/// The upgrade script shipped in deploy/.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/avx-gateway-upgrade");

/// Runs `body` and fails the test if it takes longer than [`BOUND`].
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(BOUND, body)
        .await
        .expect("the test exceeded its time bound");
}

/// A gateway proxying `/api/` and `/slow` to `up`, with 1 s grace and shutdown timeouts.
fn start_gateway(up: &TestUpstream) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"server:
  workers: 2
  pid_file: {{dir}}/gw.pid
  upgrade_sock: {{dir}}/upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
listeners:
  - address: {{listen}}
upstreams:
  backend:
    servers: [{{ address: {} }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: backend
  - name: slow
    match: {{ path: /slow }}
    upstream: backend
"#,
        up.addr
    ))
}

/// One graceful upgrade by hand: start `-u`, wait until it waits on the upgrade socket, only
/// then SIGQUIT the old process, and wait until `/status` is answered by the new pid.
/// Returns the new process and the time from SIGQUIT to the new process serving.
async fn upgrade(old: &GatewayProcess) -> (GatewayProcess, Duration) {
    let mut new = old.spawn_upgrade();
    new.wait_upgrade_waiting(STEP).await;
    let quit = Instant::now();
    old.signal("QUIT");
    new.wait_serving(STEP).await;
    (new, quit.elapsed())
}

/// Waits (bounded) for a process to exit; returns its exit code.
async fn exit_code(gw: &mut GatewayProcess, deadline: Duration) -> Option<i32> {
    let end = Instant::now() + deadline;
    while gw.is_running() {
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.wait_exit(Duration::from_secs(1))
}

/// Runs the upgrade script off the async workers; returns its output.
async fn run_script(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(SCRIPT)
            .args(&args)
            .env("RUST_LOG", "info")
            .output()
            .expect("run deploy/avx-gateway-upgrade")
    })
    .await
    .expect("script task")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `NEW` of the script's "upgrade complete: pid OLD -> NEW" line.
fn script_new_pid(out: &Output) -> Option<u32> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.contains("upgrade complete"))?;
    line.split("-> ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pid the admin `/status` reports, over a fresh connection.
async fn status_pid(gw: &GatewayProcess) -> Option<u64> {
    gw.status().await["pid"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_upgrades_under_keepalive_load_fail_no_request() {
    bounded(async {
        let up = TestUpstream::start("a").await;
        let first = start_gateway(&up);
        let load = Load::start(format!("http://{}", first.addr), 4);
        assert!(
            crate::harness::wait_until(STEP, || async { load.ok() >= 50 }).await,
            "load did not get going: {}",
            load.stats.summary()
        );

        let mut olds = Vec::new();
        let mut current = first;
        let mut handoffs = Vec::new();
        for _ in 0..3 {
            let (new, took) = upgrade(&current).await;
            handoffs.push(took);
            olds.push(std::mem::replace(&mut current, new));
            // Some traffic on the new process before the next handoff.
            let before = load.ok();
            assert!(
                crate::harness::wait_until(STEP, || async { load.ok() >= before + 50 }).await,
                "no traffic after the upgrade: {}",
                load.stats.summary()
            );
        }
        // Keep the load on until every old process has drained and exited, so each one's
        // stop-accepting and keep-alive shutdown happens under load.
        for (i, old) in olds.iter_mut().enumerate() {
            let code = exit_code(old, OLD_EXIT).await;
            assert_eq!(code, Some(0), "old process {i} exit:\n{}", old.log());
        }
        let stats = load.stop().await;
        eprintln!(
            "three upgrades: {}; SIGQUIT-to-serving {handoffs:?}",
            stats.summary()
        );
        stats.assert_clean(500);
        assert_eq!(
            status_pid(&current).await,
            Some(u64::from(current.pid())),
            "the last process serves /status"
        );
        assert!(current.is_running());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_in_flight_completes_across_an_upgrade() {
    bounded(async {
        let up = TestUpstream::start("a").await;
        let mut old = start_gateway(&up);
        let url = old.url("/slow?ms=2000");
        let slow = tokio::spawn(async move {
            let resp = client().get(url).send().await.expect("slow request");
            let status = resp.status();
            (status, resp.text().await.expect("slow body"))
        });
        assert!(
            crate::harness::wait_until(STEP, || async { up.inflight() == 1 }).await,
            "the slow request never reached the upstream"
        );
        let started = Instant::now();
        let (new, took) = upgrade(&old).await;
        let (status, body) = slow.await.expect("slow task");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "slow done");
        eprintln!(
            "slow request done {:?} after the upgrade began; handoff {took:?}",
            started.elapsed()
        );
        assert_eq!(
            exit_code(&mut old, OLD_EXIT).await,
            Some(0),
            "{}",
            old.log()
        );
        let resp = client().get(new.url("/api/after")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_fails_validation_leaves_the_old_process_serving() {
    bounded(async {
        let up = TestUpstream::start("a").await;
        let mut gw = start_gateway(&up);
        let good = std::fs::read_to_string(&gw.config).unwrap();
        let bad = gw.dir.write(
            "bad.yaml",
            &good.replace("upstream: backend", "upstream: missing"),
        );
        let out = run_script(vec![
            "-b".into(),
            binary(),
            "-c".into(),
            bad.display().to_string(),
            "--timeout".into(),
            "10".into(),
        ])
        .await;
        let report = text(&out);
        assert_eq!(out.status.code(), Some(2), "{report}");
        assert!(report.contains("is invalid"), "{report}");
        assert!(report.contains("nothing changed"), "{report}");
        assert!(
            report.contains("missing"),
            "the validation error is shown: {report}"
        );
        // No new process was started (nobody waited on the upgrade socket) and the old one
        // serves as before.
        assert!(!gw.upgrade_sock().exists(), "{report}");
        assert!(gw.is_running());
        assert_eq!(status_pid(&gw).await, Some(u64::from(gw.pid())));
        let resp = client().get(gw.url("/api/still")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_upgrade_script_hands_over_under_load_then_to_a_daemon() {
    bounded(async {
        let up = TestUpstream::start("a").await;
        let mut first = start_gateway(&up);
        let load = Load::start(format!("http://{}", first.addr), 2);
        let config = first.config.display().to_string();
        let log = first.dir.path("script-started.log").display().to_string();
        let pid_file = first.dir.path("gw.pid").display().to_string();

        // 1. Foreground mode: the old pid comes from /status (no pid file without -d).
        let out = run_script(vec![
            "-b".into(),
            binary(),
            "-c".into(),
            config.clone(),
            "--timeout".into(),
            "20".into(),
            "--log".into(),
            log.clone(),
        ])
        .await;
        let report = text(&out);
        eprintln!("{report}");
        let second = script_new_pid(&out).unwrap_or(0);
        let _second_guard = PidGuard(second);
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert!(
            report.contains(&format!("pid {} -> {second}", first.pid())),
            "{report}"
        );
        assert_ne!(second, first.pid());
        assert!(pid_running(second));
        let resp = client()
            .get(first.url("/api/after-script"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            exit_code(&mut first, OLD_EXIT).await,
            Some(0),
            "{}",
            first.log()
        );
        assert_eq!(status_pid(&first).await, Some(u64::from(second)));

        // 2. Daemon mode (as under systemd): `-d -u`, the new pid is read from the pid file,
        //    and --wait-old waits for the previous process to exit.
        let out = run_script(vec![
            "-b".into(),
            binary(),
            "-c".into(),
            config,
            "-p".into(),
            pid_file.clone(),
            "--daemon".into(),
            "--wait-old".into(),
            "--timeout".into(),
            "20".into(),
            "--log".into(),
            log.clone(),
        ])
        .await;
        let report = text(&out);
        eprintln!("{report}");
        let daemon: u32 = std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        let _daemon_guard = PidGuard(daemon);
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert!(
            report.contains(&format!("pid {second} -> {daemon}")),
            "{report}"
        );
        assert!(
            report.contains(&format!("old process {second} exited")),
            "{report}"
        );
        assert!(!pid_running(second));
        assert_eq!(status_pid(&first).await, Some(u64::from(daemon)));

        let stats = load.stop().await;
        eprintln!("script upgrades: {}", stats.summary());
        stats.assert_clean(100);
    })
    .await;
}

#[test]
fn the_shipped_production_config_is_valid() {
    let (ok, out, _, _dir) = check_config(include_str!("../../deploy/gateway.yaml"));
    assert!(ok, "{out}");
}
