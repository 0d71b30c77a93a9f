//! Header values with variables (`"$client_ip"`, `"tenant-$consumer"`), compiled at load.

use super::{Consumer, RequestInfo};
use http::HeaderValue;
use std::fmt::Write;

/// A request variable a header value can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `$client_ip`.
    ClientIp,
    /// `$request_id`.
    RequestId,
    /// `$route`.
    Route,
    /// `$consumer` (empty when none).
    Consumer,
    /// `$host`, the effective host.
    Host,
    /// `$scheme`, `http` or `https`.
    Scheme,
    /// `$upstream` (empty before upstream selection).
    Upstream,
}

impl Var {
    const ALL: [(&'static str, Var); 7] = [
        ("client_ip", Var::ClientIp),
        ("request_id", Var::RequestId),
        ("route", Var::Route),
        ("consumer", Var::Consumer),
        ("host", Var::Host),
        ("scheme", Var::Scheme),
        ("upstream", Var::Upstream),
    ];
}

#[derive(Debug, Clone)]
enum Part {
    Lit(Box<str>),
    Var(Var),
}

/// A compiled header value: a fixed value, or literal parts and variables.
#[derive(Debug, Clone)]
pub struct Template {
    fixed: Option<HeaderValue>,
    parts: Box<[Part]>,
}

impl Template {
    /// Compiles `$name` variables; `$$` is a literal `$`.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(at) = rest.find('$') {
            lit.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('$') {
                lit.push('$');
                rest = after;
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let Some(&(_, var)) = Var::ALL.iter().find(|(n, _)| *n == name) else {
                let known: Vec<&str> = Var::ALL.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown variable ${name} (known: ${}; write $$ for a literal $)",
                    known.join(", $")
                ));
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into()));
            }
            parts.push(Part::Var(var));
            rest = &rest[end..];
        }
        lit.push_str(rest);
        if HeaderValue::from_str(&lit).is_err() {
            return Err(format!("invalid header value {src:?}"));
        }
        if parts.is_empty() {
            let fixed =
                HeaderValue::from_str(&lit).map_err(|_| format!("invalid header value {src:?}"))?;
            return Ok(Template {
                fixed: Some(fixed),
                parts: Box::new([]),
            });
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into()));
        }
        Ok(Template {
            fixed: None,
            parts: parts.into(),
        })
    }

    /// The value for this request; `None` when a variable's value cannot be a header value
    /// (then the field is left out rather than sent broken).
    pub fn render(
        &self,
        info: &RequestInfo<'_>,
        consumer: Option<&Consumer>,
    ) -> Option<HeaderValue> {
        if let Some(v) = &self.fixed {
            return Some(v.clone());
        }
        let mut out = String::with_capacity(64);
        for part in self.parts.iter() {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(Var::ClientIp) => {
                    if let Some(ip) = info.client_ip {
                        let _ = write!(out, "{ip}");
                    }
                }
                Part::Var(Var::RequestId) => {
                    out.push_str(info.request_id.and_then(|v| v.to_str().ok()).unwrap_or(""))
                }
                Part::Var(Var::Route) => out.push_str(info.route),
                Part::Var(Var::Consumer) => out.push_str(consumer.map_or("", |c| &c.name)),
                Part::Var(Var::Host) => out.push_str(info.host.unwrap_or("")),
                Part::Var(Var::Scheme) => out.push_str(info.scheme()),
                Part::Var(Var::Upstream) => out.push_str(info.upstream.unwrap_or("")),
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

crate::config::deserialize_via_try_from!(Template, "a header value, with $variables");

impl TryFrom<String> for Template {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Template::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_compiled_once_and_rendered_per_request() {
        let t = Template::parse("ip=$client_ip route=$route $$5").expect("parses");
        let id = HeaderValue::from_static("r-1");
        let info = RequestInfo {
            client_ip: Some("10.0.0.1".parse().expect("ip")),
            host: Some("a.example"),
            tls: true,
            route: "api",
            request_id: Some(&id),
            upstream: None,
        };
        assert_eq!(
            t.render(&info, None).expect("renders"),
            "ip=10.0.0.1 route=api $5"
        );
        let c = Consumer::external("bob");
        let t = Template::parse("$consumer@$host/$scheme").expect("parses");
        assert_eq!(
            t.render(&info, Some(&c)).expect("renders"),
            "bob@a.example/https"
        );
        assert!(Template::parse("$nope")
            .unwrap_err()
            .contains("unknown variable $nope"));
        assert!(Template::parse("bad\nvalue").is_err());
        let evil = Consumer::external("a\r\nx-injected: 1");
        assert!(Template::parse("$consumer")
            .expect("parses")
            .render(&info, Some(&evil))
            .is_none());
    }
}
