//! Semantic validation of a parsed [`Config`]: everything serde cannot check by itself.

use super::error::{ConfigError, KeyPath};
use super::model::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// Largest accepted backend weight; weighted selection repeats a backend `weight` times.
pub const MAX_WEIGHT: usize = 10_000;

pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    let root = KeyPath::root();
    server(&c.server, &root.key("server"))?;
    listeners(c, &root)?;
    for (name, up) in &c.upstreams {
        upstream(up, &root.key("upstreams").key(name))?;
    }
    if let Some(rl) = &c.rate_limit {
        rate_limit(rl, &root.key("rate_limit"))?;
    }
    cache(&c.cache, &root.key("cache"))?;
    compression(&c.compression, &root.key("compression"))?;
    for (i, cidr) in c.trusted_proxies.iter().enumerate() {
        if crate::policy::TrustedProxies::parse(std::slice::from_ref(cidr)).is_err() {
            return err(
                &root.key("trusted_proxies").index(i),
                format!("invalid CIDR {cidr:?}"),
            );
        }
    }
    if c.access_log.enabled && c.access_log.path.trim().is_empty() {
        return err(
            &root.key("access_log").key("path"),
            "must be `stdout` or a file path",
        );
    }
    if let Some(r) = &c.redis {
        redis(r, &root.key("redis"))?;
    }
    cluster_limits_need_redis(c, &root)?;
    routes(c, &root.key("routes"))
}

fn redis(r: &RedisConfig, p: &KeyPath) -> Result<(), ConfigError> {
    match (&r.url, r.urls.is_empty()) {
        (None, true) => return err(p, "needs `url` (one server) or `urls` (cluster nodes)"),
        (Some(_), false) => return err(&p.key("urls"), "cannot be combined with `url`"),
        _ => {}
    }
    if r.pool_size == 0 || r.pool_size > 1024 {
        return err(&p.key("pool_size"), "must be in 1..=1024");
    }
    if r.timeout_ms == 0 || r.timeout_ms > 60_000 {
        return err(&p.key("timeout_ms"), "must be in 1..=60000");
    }
    Ok(())
}

/// A `scope: cluster` limit is pointed at its own key, the place to fix.
fn cluster_limits_need_redis(c: &Config, root: &KeyPath) -> Result<(), ConfigError> {
    if c.redis.is_some() {
        return Ok(());
    }
    let global = c.rate_limit.as_ref().map(|rl| (rl, root.key("rate_limit")));
    let own = c.routes.iter().enumerate().filter_map(|(i, r)| {
        let p = root.key("routes").index(i).key("rate_limit");
        r.rate_limit.as_ref().map(|rl| (rl, p))
    });
    for (rl, p) in global.into_iter().chain(own) {
        if rl.scope == LimitScope::Cluster {
            return err(
                &p.key("scope"),
                "`cluster` needs a top-level `redis:` section",
            );
        }
    }
    Ok(())
}

fn cache(c: &CacheConfig, p: &KeyPath) -> Result<(), ConfigError> {
    for (key, v) in [
        ("max_size", c.max_size),
        ("max_bytes", c.max_bytes),
        ("max_object_bytes", c.max_object_bytes),
    ] {
        if v == 0 {
            return err(&p.key(key), "must be greater than 0");
        }
    }
    if c.ttl_seconds == 0 {
        return err(&p.key("ttl_seconds"), "must be greater than 0");
    }
    let name = &c.targeted_cache_control;
    if http::HeaderName::from_bytes(name.as_bytes()).is_err()
        || name.eq_ignore_ascii_case("cache-control")
        || name.eq_ignore_ascii_case("cdn-cache-control")
    {
        return err(
            &p.key("targeted_cache_control"),
            format!(
                "{name:?} must be a header name other than Cache-Control and CDN-Cache-Control"
            ),
        );
    }
    Ok(())
}

fn compression(c: &CompressionConfig, p: &KeyPath) -> Result<(), ConfigError> {
    if let Some(level) = c.level {
        if !(1..=9).contains(&level) {
            return err(&p.key("level"), "must be 1-9");
        }
    }
    if c.max_decompressed_bytes == Some(0) {
        return err(&p.key("max_decompressed_bytes"), "must be greater than 0");
    }
    for (i, a) in c.algorithms.iter().flatten().enumerate() {
        if crate::compression::parse_algorithm(a).is_none() {
            return err(
                &p.key("algorithms").index(i),
                format!("unknown algorithm {a:?}: expected gzip, br or zstd"),
            );
        }
    }
    Ok(())
}

fn rate_limit(rl: &RateLimitConfig, p: &KeyPath) -> Result<(), ConfigError> {
    if !(rl.requests_per_second > 0.0 && rl.requests_per_second <= 1e6) {
        return err(&p.key("requests_per_second"), "must be in (0, 1000000]");
    }
    if !(400..=599).contains(&rl.status) {
        return err(&p.key("status"), "must be a 4xx or 5xx status");
    }
    if rl.slots == 0 || rl.slots > 1 << 24 {
        return err(&p.key("slots"), "must be in 1..=16777216");
    }
    if rl.ipv6_prefix == 0 || rl.ipv6_prefix > 128 {
        return err(&p.key("ipv6_prefix"), "must be in 1..=128");
    }
    Ok(())
}

fn err<T>(path: &KeyPath, msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::at(path, msg))
}

fn server(s: &ServerSection, p: &KeyPath) -> Result<(), ConfigError> {
    if s.workers == 0 {
        return err(&p.key("workers"), "must be at least 1");
    }
    if s.listener_tasks_per_fd == 0 {
        return err(&p.key("listener_tasks_per_fd"), "must be at least 1");
    }
    if s.header_read_timeout_ms == 0 {
        return err(&p.key("header_read_timeout_ms"), "must be greater than 0");
    }
    if s.max_header_bytes < 1024 {
        return err(&p.key("max_header_bytes"), "must be at least 1024");
    }
    if s.client_body_timeout_ms == 0 {
        return err(&p.key("client_body_timeout_ms"), "must be greater than 0");
    }
    if s.max_connections == 0 {
        return err(&p.key("max_connections"), "must be at least 1");
    }
    Ok(())
}

/// The path rules of `server:`, as requests are normalized with them.
fn path_policy(s: &ServerSection) -> crate::edge::PathPolicy {
    crate::edge::PathPolicy {
        normalize: s.normalize_path,
        merge_slashes: s.merge_slashes,
        escaped_slashes: s.escaped_slashes,
        semicolons: s.path_semicolons,
    }
}

/// Parses `ip:port` (listeners, admin); a host name is refused: nothing is resolved to bind.
pub fn socket_addr(path: &KeyPath, addr: &str) -> Result<SocketAddr, ConfigError> {
    addr.parse::<SocketAddr>().or_else(|_| {
        err(
            path,
            format!("invalid address {addr:?}: expected ip:port, e.g. 127.0.0.1:8080"),
        )
    })
}

/// `dns_refresh_seconds` and `dns_servers` only mean something next to a DNS name.
fn dns(u: &UpstreamConfig, p: &KeyPath) -> Result<(), ConfigError> {
    let names = u.has_dns_names();
    if let Some(secs) = u.dns_refresh_seconds {
        if !names {
            return err(
                &p.key("dns_refresh_seconds"),
                "only used when a server address is a DNS name",
            );
        }
        if secs == 0 || secs > 86_400 {
            return err(&p.key("dns_refresh_seconds"), "must be in 1..=86400");
        }
    }
    if !u.dns_servers.is_empty() && !names {
        return err(
            &p.key("dns_servers"),
            "only used when a server address is a DNS name",
        );
    }
    for (i, a) in u.dns_servers.iter().enumerate() {
        if a.port() == 0 || a.ip().is_unspecified() {
            return err(
                &p.key("dns_servers").index(i),
                format!("invalid DNS server {a}"),
            );
        }
    }
    Ok(())
}

/// Two binds collide when their ports match and either IP is the other or a wildcard.
fn collide(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn listeners(c: &Config, root: &KeyPath) -> Result<(), ConfigError> {
    if c.listeners.is_empty() {
        return err(&root.key("listeners"), "at least one listener is required");
    }
    let mut seen: Vec<(SocketAddr, KeyPath)> = Vec::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let p = root.key("listeners").index(i);
        let addr = socket_addr(&p.key("address"), &l.address)?;
        if let Some(tls) = &l.tls {
            for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
                match std::fs::read_to_string(file) {
                    Ok(pem) if pem.contains("-----BEGIN ") => {}
                    Ok(_) => return err(&p.key("tls").key(key), format!("{file:?} is not PEM")),
                    Err(e) => {
                        return err(&p.key("tls").key(key), format!("cannot read {file:?}: {e}"))
                    }
                }
            }
        }
        claim(&mut seen, addr, p.key("address"))?;
    }
    if let Some(admin) = &c.admin {
        let p = root.key("admin").key("address");
        let addr = socket_addr(&p, &admin.address)?;
        claim(&mut seen, addr, p.clone())?;
        if !addr.ip().is_loopback() && admin.token.as_deref().is_none_or(str::is_empty) {
            return err(
                &p,
                format!("{addr} is not loopback, so admin.token is required"),
            );
        }
        for (i, h) in admin.allowed_hosts.iter().enumerate() {
            if crate::edge::target::normalize_host(h.as_bytes(), 80).is_err() || h.contains(':') {
                return err(
                    &root.key("admin").key("allowed_hosts").index(i),
                    format!("invalid host name {h:?} (no port)"),
                );
            }
        }
    }
    Ok(())
}

fn claim(
    seen: &mut Vec<(SocketAddr, KeyPath)>,
    addr: SocketAddr,
    path: KeyPath,
) -> Result<(), ConfigError> {
    if let Some((_, other)) = seen.iter().find(|(a, _)| collide(a, &addr)) {
        return err(&path, format!("address {addr} collides with {other}"));
    }
    seen.push((addr, path));
    Ok(())
}

fn upstream(u: &UpstreamConfig, p: &KeyPath) -> Result<(), ConfigError> {
    if u.servers.is_empty() {
        return err(&p.key("servers"), "at least one server is required");
    }
    let mut addrs = HashSet::new();
    for (i, s) in u.servers.iter().enumerate() {
        let sp = p.key("servers").index(i);
        if !addrs.insert(&s.address) {
            return err(
                &sp.key("address"),
                format!("duplicate server {}", s.address),
            );
        }
        if s.weight == 0 || s.weight > MAX_WEIGHT {
            return err(
                &sp.key("weight"),
                format!("weight {} out of range 1..={MAX_WEIGHT}", s.weight),
            );
        }
    }
    dns(u, p)?;
    if let Some(key) = &u.hash_key {
        hash_key(&p.key("hash_key"), key)?;
        if u.load_balancing != LoadBalancing::ConsistentHash {
            return err(
                &p.key("hash_key"),
                "only used with load_balancing: consistent_hash",
            );
        }
    }
    if let Some(hc) = &u.health_check {
        let hp = p.key("health_check");
        if hc.interval_ms == 0 {
            return err(&hp.key("interval_ms"), "must be greater than 0");
        }
        if hc.timeout_ms == 0 {
            return err(&hp.key("timeout_ms"), "must be greater than 0");
        }
        if hc.healthy_threshold == 0 {
            return err(&hp.key("healthy_threshold"), "must be at least 1");
        }
        if hc.unhealthy_threshold == 0 {
            return err(&hp.key("unhealthy_threshold"), "must be at least 1");
        }
        if !hc.path.starts_with('/') {
            return err(&hp.key("path"), "must start with '/'");
        }
        if !(100..=599).contains(&hc.expected_status) {
            return err(
                &hp.key("expected_status"),
                "must be an HTTP status (100-599)",
            );
        }
    }
    let tp = p.key("timeouts");
    for (key, v) in [
        ("connect_ms", u.timeouts.connect_ms),
        ("read_ms", u.timeouts.read_ms),
        ("write_ms", u.timeouts.write_ms),
    ] {
        if v == 0 {
            return err(&tp.key(key), "must be greater than 0");
        }
    }
    if let Some(cb) = &u.circuit_breaker {
        let cp = p.key("circuit_breaker");
        if !(0.0..=1.0).contains(&cb.failure_rate) {
            return err(&cp.key("failure_rate"), "must be between 0 and 1");
        }
        if cb.failure_threshold == 0 && cb.failure_rate == 0.0 {
            return err(&cp, "set failure_threshold or failure_rate");
        }
        if cb.window_seconds == 0 || cb.window_seconds > 3600 {
            return err(&cp.key("window_seconds"), "must be in 1..=3600");
        }
        if !(cb.open_seconds > 0.0 && cb.open_seconds <= 86_400.0) {
            return err(&cp.key("open_seconds"), "must be in (0, 86400]");
        }
        if cb.half_open_requests == 0 {
            return err(&cp.key("half_open_requests"), "must be at least 1");
        }
        statuses(&cp.key("failure_statuses"), &cb.failure_statuses)?;
    }
    let ph = &u.passive_health;
    if ph.consecutive_failures == Some(0) {
        return err(
            &p.key("passive_health").key("consecutive_failures"),
            "must be at least 1",
        );
    }
    statuses(
        &p.key("passive_health").key("failure_statuses"),
        &ph.failure_statuses,
    )?;
    if let Some(tls) = &u.tls {
        if tls.sni.is_empty() {
            return err(&p.key("tls").key("sni"), "must not be empty");
        }
    }
    Ok(())
}

fn statuses(p: &KeyPath, list: &[u16]) -> Result<(), ConfigError> {
    for (i, s) in list.iter().enumerate() {
        if !(100..=599).contains(s) {
            return err(&p.index(i), format!("{s} is not an HTTP status"));
        }
    }
    Ok(())
}

/// Validates a `hash_key` (`client_ip`, `path` or `header:NAME`).
pub fn hash_key(p: &KeyPath, key: &str) -> Result<(), ConfigError> {
    match crate::upstream::HashKey::parse(key) {
        Some(_) => Ok(()),
        None => err(
            p,
            format!("invalid key {key:?}: expected client_ip, path or header:NAME"),
        ),
    }
}

fn routes(c: &Config, p: &KeyPath) -> Result<(), ConfigError> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, r) in c.routes.iter().enumerate() {
        let rp = p.index(i);
        if r.name.is_empty() {
            return err(&rp.key("name"), "must not be empty");
        }
        if let Some(first) = names.insert(&r.name, i) {
            return err(
                &rp.key("name"),
                format!("duplicate route name {:?} (also routes[{first}])", r.name),
            );
        }
        let known = |u: &str, at: KeyPath| -> Result<(), ConfigError> {
            if c.upstreams.contains_key(u) {
                Ok(())
            } else {
                err(&at, format!("unknown upstream {u:?}"))
            }
        };
        match (&r.upstream, r.split.is_empty(), &r.respond) {
            (Some(u), true, None) => known(u, rp.key("upstream"))?,
            (None, false, None) => split(r, &rp, &known)?,
            (None, true, Some(_)) => {}
            (None, true, None) => return err(&rp, "needs an upstream, a split or a respond"),
            _ => return err(&rp, "set one of upstream, split and respond"),
        }
        if r.sticky.is_some() && r.split.is_empty() {
            return err(&rp.key("sticky"), "only with split");
        }
        if let Some(m) = &r.mirror {
            let mp = rp.key("mirror");
            if r.respond.is_some() {
                return err(&mp, "a respond route has nothing to mirror");
            }
            known(&m.upstream, mp.key("upstream"))?;
            if m.percent > 100 {
                return err(&mp.key("percent"), "must be in 0..=100");
            }
            if m.max_in_flight == 0 {
                return err(&mp.key("max_in_flight"), "must be at least 1");
            }
        }
        if let Some(resp) = &r.respond {
            let pp = rp.key("respond");
            if !(100..=599).contains(&resp.status) {
                return err(&pp.key("status"), "must be an HTTP status (100-599)");
            }
            for (k, v) in &resp.headers {
                header(&pp.key("headers").key(k), k, Some(v))?;
            }
        }
        matcher(&r.matcher, &rp.key("match"), &path_policy(&c.server))?;
        if let Some(rl) = &r.rate_limit {
            rate_limit(rl, &rp.key("rate_limit"))?;
        }
        compression(&r.compression, &rp.key("compression"))?;
        if r.max_in_flight == Some(0) {
            return err(&rp.key("max_in_flight"), "must be at least 1");
        }
        if r.strip_prefix && r.matcher.path_prefix.is_none() {
            return err(&rp.key("strip_prefix"), "needs match.path_prefix");
        }
    }
    Ok(())
}

fn split(
    r: &crate::config::RouteConfig,
    rp: &KeyPath,
    known: &dyn Fn(&str, KeyPath) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    let sp = rp.key("split");
    for (j, side) in r.split.iter().enumerate() {
        known(&side.upstream, sp.index(j).key("upstream"))?;
        if side.weight == 0 || side.weight > MAX_WEIGHT {
            return err(
                &sp.index(j).key("weight"),
                format!("weight {} out of range 1..={MAX_WEIGHT}", side.weight),
            );
        }
        if r.split[..j].iter().any(|s| s.upstream == side.upstream) {
            return err(&sp.index(j).key("upstream"), "listed twice in the split");
        }
    }
    if r.split.len() < 2 {
        return err(&sp, "needs at least two sides (or use upstream)");
    }
    if r.cache.enabled {
        // The cache key does not hold the side, so one side's answers would be served for
        // the other's.
        return err(
            &rp.key("cache").key("enabled"),
            "cannot be combined with split",
        );
    }
    if let Some(st) = &r.sticky {
        let stp = rp.key("sticky");
        match (&st.cookie, &st.header) {
            (Some(name), None) => {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return err(&stp.key("cookie"), format!("invalid cookie name {name:?}"));
                }
            }
            (None, Some(h)) => header(&stp.key("header"), h, None)?,
            _ => return err(&stp, "set exactly one of cookie and header"),
        }
    }
    Ok(())
}

fn header(p: &KeyPath, name: &str, value: Option<&str>) -> Result<(), ConfigError> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return err(p, format!("invalid header name {name:?}"));
    }
    if let Some(v) = value {
        if http::HeaderValue::from_str(v).is_err() {
            return err(p, format!("invalid header value {v:?}"));
        }
    }
    Ok(())
}

fn matcher(
    m: &MatchConfig,
    p: &KeyPath,
    policy: &crate::edge::PathPolicy,
) -> Result<(), ConfigError> {
    let kinds = [&m.path, &m.path_prefix, &m.path_regex]
        .iter()
        .filter(|x| x.is_some())
        .count();
    if kinds > 1 {
        return err(p, "use only one of path, path_prefix and path_regex");
    }
    for (key, v) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
        if let Some(v) = v {
            if !v.starts_with('/') {
                return err(&p.key(key), format!("{v:?} must start with '/'"));
            }
            // Requests are matched after normalization, so a route written in another form
            // could never match (or would match less than it says).
            match crate::edge::path::normalize(v.as_bytes(), policy) {
                Ok(None) => {}
                Ok(Some(normal)) => {
                    return err(
                        &p.key(key),
                        format!("{v:?} is not in normal form (requests are matched after server path normalization): write {normal:?}"),
                    )
                }
                Err(e) => return err(&p.key(key), format!("{v:?}: {e}, so no request could match it")),
            }
        }
    }
    if let Some(re) = &m.path_regex {
        if let Err(e) = regex::Regex::new(re) {
            let first = e.to_string().lines().last().unwrap_or_default().to_string();
            return err(
                &p.key("path_regex"),
                format!("invalid regex {re:?}: {first}"),
            );
        }
    }
    if let Some(host) = &m.host {
        if host.ends_with('.') {
            // Requests are matched on the normalized host, which has no trailing dot.
            return err(
                &p.key("host"),
                format!("invalid host {host:?}: write it without the trailing dot"),
            );
        }
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let name_ok = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        // Requests are matched on the host without its port, so a port here would never match.
        let ipv6_ok = host == bare && bare.parse::<std::net::Ipv6Addr>().is_ok();
        if !(name_ok || ipv6_ok) {
            return err(
                &p.key("host"),
                format!("invalid host {host:?}: expected a name or *.suffix, without a port"),
            );
        }
    }
    for (i, method) in m.methods.iter().enumerate() {
        if http::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty() {
            return err(
                &p.key("methods").index(i),
                format!("invalid method {method:?}"),
            );
        }
    }
    for (k, v) in &m.headers {
        header(
            &p.key("headers").key(k),
            k,
            (v != "*").then_some(v.as_str()),
        )?;
    }
    Ok(())
}
