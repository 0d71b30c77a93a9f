//! A real `redis-server` on a free loopback port, without persistence, that tests can stop and
//! start again on the same port (fault tests); killed on drop.

use super::{free_port, TestDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    /// Its loopback port (kept across [`RedisServer::stop`] and [`RedisServer::start_again`]).
    pub port: u16,
    dir: TestDir,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`, or `REDIS_SERVER` when set) and waits until it
    /// answers `PING`.
    pub fn start() -> RedisServer {
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            dir: TestDir::new(),
        };
        r.start_again();
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again on the same port after [`RedisServer::stop`].
    pub fn start_again(&mut self) {
        self.start_with(&[]);
    }

    fn start_with(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "redis-server is already running");
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let log = std::fs::File::create(self.dir.path("redis.log")).expect("create redis log");
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.0.display().to_string()])
            .args(extra)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin} (run scripts/setup.sh): {e}"));
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while self.cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < end, "redis-server did not answer PING");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to its clients, like a crash) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends one command (RESP array) and returns the first line of the reply, or `None` when
    /// the server cannot be reached. Bulk replies return their payload line.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        if let Some(len) = line.strip_prefix('$') {
            let len: i64 = len.parse().ok()?;
            if len < 0 {
                return Some(String::new());
            }
            let mut body = vec![0u8; len as usize + 2];
            r.read_exact(&mut body).ok()?;
            body.truncate(len as usize);
            return String::from_utf8(body).ok();
        }
        Some(line)
    }

    /// Calls of `command` (lowercase, e.g. `evalsha`) since start or the last
    /// `CONFIG RESETSTAT`, from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cmd(&["INFO", "commandstats"]).unwrap_or_default();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of `n` primaries (no replicas) made of [`RedisServer`]-like processes, each
/// with its bus on its own free port; stopped on drop.
pub struct RedisCluster {
    /// The nodes, in slot order.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` cluster-enabled nodes, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start(n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let mut r = RedisServer {
                    child: None,
                    port: free_port(),
                    dir: TestDir::new(),
                };
                let conf = r.dir.path("nodes.conf").display().to_string();
                let bus = free_port().to_string();
                r.start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-port",
                    &bus,
                ]);
                r
            })
            .collect();
        let cli = std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|r| format!("127.0.0.1:{}", r.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("run {cli} --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let end = Instant::now() + Duration::from_secs(20);
        while !nodes.iter().all(|r| {
            r.cmd(&["CLUSTER", "INFO"])
                .is_some_and(|i| i.contains("cluster_state:ok"))
        }) {
            assert!(
                Instant::now() < end,
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }
}
