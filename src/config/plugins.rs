//! The `plugins:` items of the YAML model: one-key maps `{ TYPE: CONFIG }`, the built-in types
//! parsed into their typed configs right here (so their errors carry line and key path), user
//! types kept as YAML for their registered factory.

use crate::plugin::builtin::{
    basic_auth::BasicAuthConfig, cors::CorsConfig, forward_auth::ForwardAuthConfig,
    headers::HeadersConfig, ip_restriction::IpRestrictionConfig, jwt::JwtConfig,
    key_auth::KeyAuthConfig, redirect::RedirectConfig, rewrite::RewriteConfig,
};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// One item of a `plugins:` list.
#[derive(Debug, Clone)]
pub enum PluginSpec {
    /// `ip_restriction`.
    IpRestriction(IpRestrictionConfig),
    /// `cors`.
    Cors(CorsConfig),
    /// `jwt`.
    Jwt(JwtConfig),
    /// `key_auth`.
    KeyAuth(KeyAuthConfig),
    /// `basic_auth`.
    BasicAuth(BasicAuthConfig),
    /// `forward_auth`.
    ForwardAuth(ForwardAuthConfig),
    /// `redirect`.
    Redirect(RedirectConfig),
    /// `rewrite`.
    Rewrite(RewriteConfig),
    /// `request_headers`.
    RequestHeaders(HeadersConfig),
    /// `response_headers`.
    ResponseHeaders(HeadersConfig),
    /// A type registered with `GatewayBuilder::plugin`, built when the gateway is.
    Custom {
        /// The type name.
        kind: String,
        /// Its config, as written.
        config: serde_yaml::Value,
    },
}

impl PluginSpec {
    /// The item's type name.
    pub fn kind(&self) -> &str {
        match self {
            PluginSpec::IpRestriction(_) => "ip_restriction",
            PluginSpec::Cors(_) => "cors",
            PluginSpec::Jwt(_) => "jwt",
            PluginSpec::KeyAuth(_) => "key_auth",
            PluginSpec::BasicAuth(_) => "basic_auth",
            PluginSpec::ForwardAuth(_) => "forward_auth",
            PluginSpec::Redirect(_) => "redirect",
            PluginSpec::Rewrite(_) => "rewrite",
            PluginSpec::RequestHeaders(_) => "request_headers",
            PluginSpec::ResponseHeaders(_) => "response_headers",
            PluginSpec::Custom { kind, .. } => kind,
        }
    }
}

impl<'de> Deserialize<'de> for PluginSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SpecVisitor)
    }
}

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = PluginSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a one-key map { TYPE: CONFIG }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PluginSpec, A::Error> {
        let Some(kind) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "an empty plugin item: expected a one-key map { TYPE: CONFIG }",
            ));
        };
        let spec = match kind.as_str() {
            "ip_restriction" => PluginSpec::IpRestriction(map.next_value()?),
            "cors" => PluginSpec::Cors(map.next_value()?),
            "jwt" => PluginSpec::Jwt(map.next_value()?),
            "key_auth" => PluginSpec::KeyAuth(map.next_value()?),
            "basic_auth" => PluginSpec::BasicAuth(map.next_value()?),
            "forward_auth" => PluginSpec::ForwardAuth(map.next_value()?),
            "redirect" => PluginSpec::Redirect(map.next_value()?),
            "rewrite" => PluginSpec::Rewrite(map.next_value()?),
            "request_headers" => PluginSpec::RequestHeaders(map.next_value()?),
            "response_headers" => PluginSpec::ResponseHeaders(map.next_value()?),
            _ => PluginSpec::Custom {
                config: map.next_value()?,
                kind,
            },
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "a plugin item has one key, its type; found a second, {extra:?} \
                 (start a new list item with `- {extra}:`)"
            )));
        }
        Ok(spec)
    }
}
