//! The route table: compiled from [`RouteConfig`]s once, read on every request.

use crate::config::{ConfigError, KeyPath, RouteConfig};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::RegexSet;
use std::collections::HashMap;
use std::sync::Arc;

/// What a matched route does.
#[derive(Debug)]
pub enum Action {
    /// Proxy to an upstream (or a split between several).
    Proxy {
        /// Where requests go.
        target: super::Target,
        /// Prefix to remove from the path before proxying.
        strip_prefix: Option<Box<str>>,
        /// Forward the client's Host header (otherwise the backend address is used).
        preserve_host: bool,
    },
    /// Answer with a fixed response.
    Respond(FixedResponse),
}

/// A pre-built fixed response for `respond:` routes.
#[derive(Debug)]
pub struct FixedResponse {
    /// Status code.
    pub status: u16,
    /// Headers, validated at load.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// The route's name from the config.
    pub name: Arc<str>,
    /// Position in the config file.
    pub index: usize,
    /// What to do with a matching request.
    pub action: Action,
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
    /// Compiles routes; `upstream_index` maps an upstream name to its index.
    pub fn build(
        configs: &[RouteConfig],
        upstream_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<RouteTable, ConfigError> {
        let root = KeyPath::root().key("routes");
        let mut table = RouteTable {
            routes: Vec::with_capacity(configs.len()),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            any_host: PathIndex::default(),
        };
        for (i, rc) in configs.iter().enumerate() {
            let p = root.index(i);
            let index = |name: &str, at: KeyPath| {
                upstream_index(name)
                    .ok_or_else(|| ConfigError::at(&at, format!("unknown upstream {name:?}")))
            };
            let target = match &rc.upstream {
                Some(name) => Some(super::Target::One(index(name, p.key("upstream"))?)),
                None if !rc.split.is_empty() => {
                    let mut sides = Vec::with_capacity(rc.split.len());
                    for (j, side) in rc.split.iter().enumerate() {
                        let at = p.key("split").index(j).key("upstream");
                        sides.push((
                            index(&side.upstream, at)?,
                            Arc::from(side.upstream.as_str()),
                            side.weight as u64,
                        ));
                    }
                    let sticky = match &rc.sticky {
                        Some(st) => match (&st.cookie, &st.header) {
                            (Some(c), _) => Some(super::Sticky::Cookie(c.as_str().into())),
                            (None, Some(h)) => Some(super::Sticky::Header(
                                parse_header(&p.key("sticky").key("header"), h, "x")?.0,
                            )),
                            (None, None) => None,
                        },
                        None => None,
                    };
                    Some(super::Target::Split(super::Split::new(&sides, sticky)))
                }
                None => None,
            };
            let action = match (target, &rc.respond) {
                (Some(target), _) => Action::Proxy {
                    target,
                    strip_prefix: rc
                        .strip_prefix
                        .then(|| rc.matcher.path_prefix.as_deref().map(Into::into))
                        .flatten(),
                    preserve_host: rc.preserve_host,
                },
                (None, Some(resp)) => Action::Respond(FixedResponse {
                    status: resp.status,
                    headers: resp
                        .headers
                        .iter()
                        .map(|(k, v)| parse_header(&p.key("respond").key("headers").key(k), k, v))
                        .collect::<Result<_, _>>()?,
                    body: Bytes::from(resp.body.clone()),
                }),
                (None, None) => return Err(ConfigError::at(&p, "needs an upstream or a respond")),
            };
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
                index: i,
                action,
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

fn parse_header(p: &KeyPath, k: &str, v: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
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
        RouteTable::build(&cfg.routes, |_| Some(0)).unwrap()
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
