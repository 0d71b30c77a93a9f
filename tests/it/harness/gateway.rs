//! Starts the real `avx-gateway` binary from a YAML string on free ports.

use super::free_addr;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// A new empty directory under the system temp dir.
    pub fn new() -> TestDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("avx-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        TestDir(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The gateway binary built by cargo for these tests, or `AVX_GATEWAY_BIN` when set (to run
/// the suite against another build, e.g. to show a test fails on an older gateway).
pub fn binary() -> String {
    std::env::var("AVX_GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_avx-gateway").into())
}

/// Runs `avx-gateway -t -c <yaml>`; returns (exit success, stderr + stdout).
pub fn check_config(yaml: &str) -> (bool, String, PathBuf, TestDir) {
    let dir = TestDir::new();
    let path = dir.write("gateway.yaml", yaml);
    let out = Command::new(binary())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run avx-gateway -t");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.success(), text, path, dir)
}

/// A running gateway process, killed on drop.
pub struct GatewayProcess {
    child: Option<Child>,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// The config file the gateway runs on.
    pub config: PathBuf,
    /// Scratch directory holding the config, pid file and upgrade socket; shared with the
    /// processes that take over from this one ([`GatewayProcess::spawn_upgrade`]).
    pub dir: Arc<TestDir>,
    log: PathBuf,
}

impl GatewayProcess {
    /// Starts the gateway on `yaml`, where `{listen}` and `{admin}` stand for free loopback
    /// addresses and `{dir}` for a scratch directory. A `server:` section with short grace
    /// periods and private pid/upgrade paths is prepended unless the YAML has its own.
    pub fn start(yaml: &str) -> GatewayProcess {
        Self::start_binary(&binary(), yaml)
    }

    /// Like [`GatewayProcess::start`], with another binary built on the library (an example
    /// with its own plugins, say).
    pub fn start_binary(bin: &str, yaml: &str) -> GatewayProcess {
        Self::start_in_env(bin, yaml, &[])
    }

    /// Like [`GatewayProcess::start`], with `env` added to the gateway process's environment
    /// (a secret for a `secret_env` or `key_env` key, say); the test process's own
    /// environment is left alone.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> GatewayProcess {
        Self::start_in_env(&binary(), yaml, env)
    }

    /// `bin` on `yaml` (rendered into a fresh scratch directory) with `env` added, once ready.
    fn start_in_env(bin: &str, yaml: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let dir = TestDir::new();
        let addr = free_addr();
        let admin = free_addr();
        let text = render(yaml, addr, admin, &dir);
        let config = dir.write("gateway.yaml", &text);
        let mut gw = Self::spawn_env(
            bin,
            config,
            Arc::new(dir),
            addr,
            admin,
            &[],
            "gateway.log",
            env,
        );
        gw.wait_ready(Duration::from_secs(20));
        gw
    }

    /// Starts a new process on the same config with `-u` (Pingora's graceful upgrade) and
    /// returns at once: the new process loads the config, then waits on `server.upgrade_sock`
    /// for this one's listening sockets, which this one sends on SIGQUIT. Wait with
    /// [`GatewayProcess::wait_upgrade_waiting`] before signalling, then
    /// [`GatewayProcess::wait_serving`].
    pub fn spawn_upgrade(&self) -> GatewayProcess {
        static UPGRADES: AtomicUsize = AtomicUsize::new(0);
        let n = UPGRADES.fetch_add(1, Ordering::Relaxed);
        Self::spawn(
            &binary(),
            self.config.clone(),
            self.dir.clone(),
            self.addr,
            self.admin,
            &["-u"],
            &format!("gateway-upgrade-{n}.log"),
        )
    }

    /// Starts the gateway with one upstream `pool` over `servers` (each the body of a flow
    /// mapping, e.g. `address: "127.0.0.1:3000", weight: 2`), extra upstream `keys` (YAML lines
    /// indented four spaces) and a catch-all route `all` to it.
    pub fn start_with_pool(servers: &[String], keys: &str) -> GatewayProcess {
        let servers: String = servers
            .iter()
            .map(|s| format!("      - {{ {s} }}\n"))
            .collect();
        Self::start(&format!(
            "listeners:\n  - address: \"{{listen}}\"\nupstreams:\n  pool:\n{keys}\n    servers:\n{servers}\
             routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: pool\n"
        ))
    }

    fn spawn(
        bin: &str,
        config: PathBuf,
        dir: Arc<TestDir>,
        addr: SocketAddr,
        admin: SocketAddr,
        extra: &[&str],
        log_name: &str,
    ) -> GatewayProcess {
        Self::spawn_env(bin, config, dir, addr, admin, extra, log_name, &[])
    }

    /// [`GatewayProcess::spawn`] with `env` added to the process's environment.
    #[allow(clippy::too_many_arguments)]
    fn spawn_env(
        bin: &str,
        config: PathBuf,
        dir: Arc<TestDir>,
        addr: SocketAddr,
        admin: SocketAddr,
        extra: &[&str],
        log_name: &str,
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        let log = dir.path(log_name);
        let log_file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn avx-gateway");
        GatewayProcess {
            child: Some(child),
            addr,
            admin,
            config,
            dir,
            log,
        }
    }

    /// Replaces the config file with `yaml` (same placeholders and defaults as
    /// [`GatewayProcess::start`], so the listeners stay the same), atomically as editors and
    /// config management do: written beside it, then renamed over it.
    pub fn rewrite_config(&self, yaml: &str) {
        let text = render(yaml, self.addr, self.admin, &self.dir);
        let tmp = self.dir.write("gateway.yaml.tmp", &text);
        std::fs::rename(&tmp, &self.config).expect("rename the new config into place");
    }

    /// `POST /reload` on the admin listener: the status and the body.
    pub async fn reload(&self) -> (u16, String) {
        let resp = super::client()
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("POST admin /reload");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `http://ADDR` of the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://ADMIN` of the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The admin `/status` JSON document.
    pub async fn status(&self) -> serde_json::Value {
        super::client()
            .get(self.admin_url("/status"))
            .send()
            .await
            .expect("GET admin /status")
            .json()
            .await
            .expect("admin /status is JSON")
    }

    /// Everything the gateway has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory of the gateway process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Open file descriptors of the gateway process (entries of `/proc/PID/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn wait_ready(&mut self, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("gateway exited early with {status}:\n{}", self.log());
            }
            if http_ok(self.admin, "/health") && TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if Instant::now() > end {
                panic!("gateway not ready within {deadline:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits up to `deadline` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `server.upgrade_sock` of the config (the harness default is `{dir}/upgrade.sock`).
    pub fn upgrade_sock(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap_or_default();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("upgrade_sock:"))
            .map(|v| PathBuf::from(v.trim().trim_matches('"')))
            .unwrap_or_else(|| PathBuf::from("/tmp/avx-gateway-upgrade.sock"))
    }

    /// Whether this process waits for a graceful-upgrade handoff: it listens on the upgrade
    /// socket. `/proc/net/unix` lists a listening socket with the `__SO_ACCEPTCON` flag
    /// (`00010000`); its inode must be one of this process's fds.
    pub fn is_waiting_for_upgrade(&self) -> bool {
        let path = self.upgrade_sock();
        let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        let inodes: Vec<String> = table
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 8 && f[3] == "00010000" && Path::new(f[7]) == path)
                    .then(|| format!("socket:[{}]", f[6]))
            })
            .collect();
        if inodes.is_empty() {
            return false;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return false;
        };
        fds.flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    }

    /// Waits up to `deadline` until this `-u` process waits on the upgrade socket; panics with
    /// its log if it exits first or the deadline passes.
    pub async fn wait_upgrade_waiting(&mut self, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "new gateway exited with {status} before the handoff:\n{}",
                    self.log()
                );
            }
            if self.is_waiting_for_upgrade() {
                return;
            }
            if Instant::now() > end {
                panic!(
                    "new gateway not waiting on {} within {deadline:?}:\n{}",
                    self.upgrade_sock().display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `deadline` until the admin `/status` is answered by this process (its pid)
    /// with `"ready": true`. Every poll uses a fresh connection: a pooled one would keep
    /// reaching the old process.
    pub async fn wait_serving(&mut self, deadline: Duration) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(2))
            .build()
            .expect("build reqwest client");
        let end = Instant::now() + deadline;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("gateway exited with {status}:\n{}", self.log());
            }
            if let Ok(resp) = client.get(self.admin_url("/status")).send().await {
                if let Ok(v) = resp.json::<serde_json::Value>().await {
                    if v["pid"].as_u64() == Some(u64::from(self.pid())) && v["ready"] == true {
                        return;
                    }
                }
            }
            if Instant::now() > end {
                panic!(
                    "gateway not serving /status within {deadline:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The config directory, for tests that write extra files next to the config.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A blocking `GET path` returning whether the answer was 200; used before any runtime exists.
fn http_ok(addr: SocketAddr, path: &str) -> bool {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

/// The config text the harness runs: placeholders filled in, and a `server:` section (short
/// grace periods, private pid and upgrade paths) and an `admin:` listener added when absent.
fn render(yaml: &str, addr: SocketAddr, admin: SocketAddr, dir: &TestDir) -> String {
    let mut text = yaml
        .replace("{listen}", &addr.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{dir}", &dir.0.display().to_string());
    if !text.lines().any(|l| l.starts_with("server:")) {
        text = format!(
            "server:\n  workers: 2\n  pid_file: {d}/gw.pid\n  upgrade_sock: {d}/upgrade.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n{text}",
            d = dir.0.display()
        );
    }
    if !text.lines().any(|l| l.starts_with("admin:")) {
        text.push_str(&format!("\nadmin:\n  address: {admin}\n"));
    }
    text
}
