//! What a matched route does: proxy (to one upstream or a split) or answer by itself.

use super::table::parse_header;
use super::{Split, Sticky, Target};
use crate::config::{ConfigError, KeyPath, RouteConfig};
use crate::upstream::UpstreamId;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

/// What a matched route does.
#[derive(Debug)]
pub enum Action {
    /// Proxy to an upstream (or a split between several).
    Proxy {
        /// Where requests go.
        target: Target,
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

impl Action {
    /// Compiles a route's action; `upstream` maps an upstream name to its id.
    pub fn build(
        rc: &RouteConfig,
        p: &KeyPath,
        upstream: impl Fn(&str) -> Option<UpstreamId>,
    ) -> Result<Action, ConfigError> {
        let id = |name: &str, at: KeyPath| {
            upstream(name).ok_or_else(|| ConfigError::at(&at, format!("unknown upstream {name:?}")))
        };
        let target = match &rc.upstream {
            Some(name) => Some(Target::One(id(name, p.key("upstream"))?)),
            None if !rc.split.is_empty() => {
                let mut sides = Vec::with_capacity(rc.split.len());
                for (j, side) in rc.split.iter().enumerate() {
                    let at = p.key("split").index(j).key("upstream");
                    sides.push((
                        id(&side.upstream, at)?,
                        Arc::from(side.upstream.as_str()),
                        side.weight as u64,
                    ));
                }
                let sticky = match rc.sticky.as_ref().map(|s| (&s.cookie, &s.header)) {
                    Some((Some(c), _)) => Some(Sticky::Cookie(c.as_str().into())),
                    Some((None, Some(h))) => Some(Sticky::Header(
                        parse_header(&p.key("sticky").key("header"), h, "x")?.0,
                    )),
                    _ => None,
                };
                Some(Target::Split(Split::new(&sides, sticky)))
            }
            None => None,
        };
        Ok(match (target, &rc.respond) {
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
            (None, None) => {
                return Err(ConfigError::at(
                    p,
                    "needs an upstream, a split or a respond",
                ))
            }
        })
    }
}
