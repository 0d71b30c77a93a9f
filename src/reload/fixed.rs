//! The keys a running process cannot change: what Pingora binds, spawns or sizes at start.
//! A reload that changes one is refused, naming the key, and the binary upgrade does it.

use crate::config::{Config, ConfigError, KeyPath};

/// The first start-up-only key that differs between `live` and `next`, as a located error.
/// `compressing_route` is the first route of `next` that compresses, when the proxy was
/// started without Pingora's compression module.
pub fn check(
    live: &Config,
    next: &Config,
    compressing_route: Option<usize>,
) -> Result<(), ConfigError> {
    let root = KeyPath::root();
    let refuse = |path: KeyPath, what: &str| Err(needs_upgrade(&path, what));
    if live.listeners.len() != next.listeners.len() {
        return refuse(root.key("listeners"), "listeners added or removed");
    }
    for (i, (a, b)) in live.listeners.iter().zip(&next.listeners).enumerate() {
        let at = root.key("listeners").index(i);
        if a.address != b.address {
            return refuse(at.key("address"), "listener moved");
        }
        if a.h2c != b.h2c {
            return refuse(at.key("h2c"), "listener protocol changed");
        }
        if a.tls != b.tls {
            // TLS files are read when the listener is built, so a new certificate also
            // needs the upgrade (its path, or the file behind an unchanged path).
            return refuse(at.key("tls"), "listener TLS changed");
        }
    }
    match (&live.admin, &next.admin) {
        (Some(a), Some(b)) if a.address != b.address => {
            return refuse(root.key("admin").key("address"), "admin listener moved")
        }
        (Some(_), None) | (None, Some(_)) => {
            return refuse(root.key("admin"), "admin listener added or removed")
        }
        _ => {}
    }
    let (a, b) = (&live.server, &next.server);
    let server = root.key("server");
    macro_rules! fixed {
        ($($field:ident),* $(,)?) => {$(
            if a.$field != b.$field {
                return refuse(server.key(stringify!($field)), "fixed at start");
            }
        )*};
    }
    // Pingora's ServerConf, the listeners' HttpServerOptions and their connection limit.
    fixed!(
        workers,
        work_stealing,
        listener_tasks_per_fd,
        pid_file,
        upgrade_sock,
        daemon,
        user,
        group,
        error_log,
        grace_period_seconds,
        graceful_shutdown_timeout_seconds,
        upstream_keepalive_pool_size,
        max_connections,
        keepalive_requests,
        keepalive_timeout_seconds,
        header_read_timeout_ms,
        watch_config,
        watch_debounce_ms,
        preserve_header_case,
    );
    if let Some(i) = compressing_route {
        // Pingora's compression module is added to the proxy at start only when a route
        // compresses, so the first compressing route needs a new process.
        return refuse(
            root.key("routes").index(i).key("compression"),
            "the first compressing route",
        );
    }
    Ok(())
}

/// Per listener, SHA-256 over its TLS certificate and key files (None without TLS, or when a
/// file cannot be read now: Pingora reports an unreadable file itself at start).
pub fn tls_digests(config: &Config) -> Vec<Option<String>> {
    config
        .listeners
        .iter()
        .map(|l| {
            let tls = l.tls.as_ref()?;
            let mut bytes = std::fs::read(&tls.cert).ok()?;
            bytes.extend(std::fs::read(&tls.key).ok()?);
            Some(super::sha256_hex(&bytes))
        })
        .collect()
}

/// The first listener whose certificate or key file changed on disk since `live` was taken
/// (a file that cannot be read now proves nothing, so it is not a change), as a located error.
pub fn check_tls(live: &[Option<String>], next: &Config) -> Result<(), ConfigError> {
    let now = tls_digests(next);
    let changed = live
        .iter()
        .zip(&now)
        .position(|(a, b)| matches!((a, b), (Some(a), Some(b)) if a != b));
    match changed {
        Some(i) => Err(needs_upgrade(
            &KeyPath::root()
                .key("listeners")
                .index(i)
                .key("tls")
                .key("cert"),
            "the certificate or key file changed; listeners load them at start",
        )),
        None => Ok(()),
    }
}

/// A refusal at `path`: `what` changed, and only the binary upgrade can apply it.
fn needs_upgrade(path: &KeyPath, what: &str) -> ConfigError {
    ConfigError::at(
        path,
        format!("{what}; this needs the binary upgrade (avx-gateway-upgrade), not a reload"),
    )
}

/// The first route of `next` that compresses (Pingora's compression module is then needed).
pub fn first_compressing_route(next: &Config) -> Option<usize> {
    let routes = KeyPath::root().key("routes");
    next.routes.iter().enumerate().position(|(i, r)| {
        let at = routes.index(i).key("compression");
        matches!(
            crate::compression::CompressionPolicy::build(&next.compression, &r.compression, &at),
            Ok(Some(_))
        )
    })
}
