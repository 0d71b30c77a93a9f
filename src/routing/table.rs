//! The route table: compiled from [`RouteConfig`]s once, read on every request.

use super::RouteId;
use crate::config::{ConfigError, KeyPath, RouteConfig};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::RegexSet;
use std::collections::HashMap;
use std::sync::Arc;

/// One route as the table matches it: its id and the method and header conditions checked
/// after the host and path lookup.
#[derive(Debug)]
pub struct Route {
    /// The route's name from the config.
    pub name: Arc<str>,
    /// The route's id (its position in the config file).
    pub id: RouteId,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl Route {
    fn accepts(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(name, want)| match want {
                None => headers.contains_key(name),
                Some(v) => headers.get_all(name).iter().any(|h| h == v),
            })
    }
}

/// Routes that share a host constraint, indexed by path.
#[derive(Default)]
struct PathIndex {
    exact: HashMap<Box<str>, Vec<usize>>,
    prefix: HashMap<Box<str>, Vec<usize>>,
    regex_sources: Vec<String>,
    regex_routes: Vec<usize>,
    regex: Option<RegexSet>,
}

impl PathIndex {
    fn find<'a>(
        &self,
        routes: &'a [Route],
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&'a Route> {
        let pick = |ids: &Vec<usize>| {
            ids.iter()
                .map(|&i| &routes[i])
                .find(|r| r.accepts(method, headers))
        };
        if let Some(r) = self.exact.get(path).and_then(pick) {
            return Some(r);
        }
        if !self.prefix.is_empty() {
            // Segment-aware candidates, longest first: the whole path, then for each '/' the
            // prefix that ends with it and the one that ends just before it.
            if let Some(r) = self.prefix.get(path).and_then(pick) {
                return Some(r);
            }
            for (i, b) in path.bytes().enumerate().rev() {
                if b != b'/' {
                    continue;
                }
                if i + 1 < path.len() {
                    if let Some(r) = self.prefix.get(&path[..=i]).and_then(pick) {
                        return Some(r);
                    }
                }
                if i > 0 {
                    if let Some(r) = self.prefix.get(&path[..i]).and_then(pick) {
                        return Some(r);
                    }
                }
            }
        }
        if let Some(set) = &self.regex {
            for m in set.matches(path).iter() {
                let r = &routes[self.regex_routes[m]];
                if r.accepts(method, headers) {
                    return Some(r);
                }
            }
        }
        None
    }

    fn compile(&mut self) -> Result<(), regex::Error> {
        if !self.regex_sources.is_empty() {
            self.regex = Some(RegexSet::new(&self.regex_sources)?);
        }
        Ok(())
    }
}

/// The compiled, immutable route table.
pub struct RouteTable {
    routes: Vec<Route>,
    exact_hosts: HashMap<Box<str>, PathIndex>,
    // Keyed by the suffix including its leading dot: `*.example.com` -> `.example.com`.
    wildcard_hosts: HashMap<Box<str>, PathIndex>,
    any_host: PathIndex,
}

impl RouteTable {
    /// Compiles the routes' match conditions.
    pub fn build(configs: &[RouteConfig]) -> Result<RouteTable, ConfigError> {
        let root = KeyPath::root().key("routes");
        let mut table = RouteTable {
            routes: Vec::with_capacity(configs.len()),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            any_host: PathIndex::default(),
        };
        for (i, rc) in configs.iter().enumerate() {
            let p = root.index(i);
            let m = &rc.matcher;
            let headers = m
                .headers
                .iter()
                .map(|(k, v)| {
                    let hp = p.key("match").key("headers").key(k);
                    if v == "*" {
                        let name = parse_header(&hp, k, "x")?.0;
                        Ok((name, None))
                    } else {
                        parse_header(&hp, k, v).map(|(n, v)| (n, Some(v)))
                    }
                })
                .collect::<Result<_, ConfigError>>()?;
            let methods = m
                .methods
                .iter()
                .map(|s| Method::from_bytes(s.to_ascii_uppercase().as_bytes()))
                .collect::<Result<_, _>>()
                .map_err(|_| ConfigError::at(&p.key("match").key("methods"), "invalid method"))?;
            table.routes.push(Route {
                name: rc.name.as_str().into(),
                id: RouteId::new(i),
                methods,
                headers,
            });
            let group = match m.host.as_deref().map(str::to_ascii_lowercase) {
                None => &mut table.any_host,
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => table.wildcard_hosts.entry(suffix.into()).or_default(),
                    None => table.exact_hosts.entry(h.into()).or_default(),
                },
            };
            if let Some(path) = &m.path {
                group.exact.entry(path.as_str().into()).or_default().push(i);
            } else if let Some(re) = &m.path_regex {
                group.regex_sources.push(re.clone());
                group.regex_routes.push(i);
            } else {
                let prefix = m.path_prefix.as_deref().unwrap_or("/");
                group.prefix.entry(prefix.into()).or_default().push(i);
            }
        }
        let groups = table
            .exact_hosts
            .values_mut()
            .chain(table.wildcard_hosts.values_mut())
            .chain(std::iter::once(&mut table.any_host));
        for g in groups {
            g.compile()
                .map_err(|e| ConfigError::at(&root, format!("cannot compile path regexes: {e}")))?;
        }
        Ok(table)
    }

    /// The route for a request, or `None` when no route matches.
    ///
    /// `host` may carry a port and any case; `path` excludes the query string.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&Route> {
        if let Some(host) = host.map(strip_port).filter(|h| !h.is_empty()) {
            if !self.exact_hosts.is_empty() || !self.wildcard_hosts.is_empty() {
                let lowered;
                let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    lowered = host.to_ascii_lowercase();
                    lowered.as_str()
                } else {
                    host
                };
                if let Some(r) = self
                    .exact_hosts
                    .get(host)
                    .and_then(|g| g.find(&self.routes, path, method, headers))
                {
                    return Some(r);
                }
                // Longest wildcard suffix first: for a.b.example.com try .b.example.com, then
                // .example.com, then .com.
                for (i, b) in host.bytes().enumerate() {
                    if b == b'.' {
                        if let Some(r) = self
                            .wildcard_hosts
                            .get(&host[i..])
                            .and_then(|g| g.find(&self.routes, path, method, headers))
                        {
                            return Some(r);
                        }
                    }
                }
            }
        }
        self.any_host.find(&self.routes, path, method, headers)
    }

    /// All routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

pub(super) fn parse_header(
    p: &KeyPath,
    k: &str,
    v: &str,
) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let name = HeaderName::from_bytes(k.as_bytes())
        .map_err(|_| ConfigError::at(p, format!("invalid header name {k:?}")))?;
    let value = HeaderValue::from_str(v)
        .map_err(|_| ConfigError::at(p, format!("invalid header value {v:?}")))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table(yaml: &str) -> RouteTable {
        let cfg: Config = serde_yaml::from_str(yaml).unwrap();
        RouteTable::build(&cfg.routes).unwrap()
    }

    fn find<'a>(t: &'a RouteTable, host: &str, path: &str, method: &str) -> Option<&'a str> {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        t.find(Some(host), path, &m, &HeaderMap::new())
            .map(|r| &*r.name)
    }

    #[test]
    fn precedence() {
        let t = table(
            r#"
routes:
  - { name: re, match: { path_regex: '^/api/v[0-9]+' }, upstream: u }
  - { name: pre, match: { path_prefix: /api/ }, upstream: u }
  - { name: pre_long, match: { path_prefix: /api/v1 }, upstream: u }
  - { name: exact, match: { path: /api/v1/x }, upstream: u }
  - { name: host, match: { host: a.example.com, path_prefix: / }, upstream: u }
  - { name: wild, match: { host: "*.example.com", path_prefix: /api }, upstream: u }
  - { name: post, match: { path_prefix: /p, methods: [POST] }, upstream: u }
"#,
        );
        assert_eq!(find(&t, "x", "/api/v1/x", "GET"), Some("exact"));
        assert_eq!(find(&t, "x", "/api/v1/y", "GET"), Some("pre_long"));
        assert_eq!(find(&t, "x", "/api/v1", "GET"), Some("pre_long"));
        assert_eq!(find(&t, "x", "/api/v10", "GET"), Some("pre"));
        assert_eq!(find(&t, "x", "/api", "GET"), None);
        assert_eq!(find(&t, "x", "/apix", "GET"), None);
        assert_eq!(find(&t, "A.example.com:8080", "/zzz", "GET"), Some("host"));
        assert_eq!(find(&t, "b.example.com", "/api/v1/x", "GET"), Some("wild"));
        assert_eq!(find(&t, "b.example.com", "/other", "GET"), None);
        assert_eq!(find(&t, "example.com", "/api/q", "GET"), Some("pre"));
        assert_eq!(find(&t, "x", "/p/1", "POST"), Some("post"));
        assert_eq!(find(&t, "x", "/p/1", "GET"), None);
    }
}
