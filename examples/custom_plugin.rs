//! A gateway binary with one plugin of its own: `tenant`, which admits only requests that
//! name a known tenant in a header, forwards the tenant upstream under a fixed name, and tags
//! the response. It is built exactly as users build theirs: [`Gateway::builder`] with
//! `.plugin(NAME, factory)`, and the YAML item `- tenant: { ... }`.
//!
//! ```yaml
//! routes:
//!   - name: api
//!     match: { path_prefix: /api/ }
//!     upstream: backend
//!     plugins:
//!       - tenant: { header: x-tenant, allowed: [acme, globex], forward_as: x-tenant-id }
//! ```
//!
//! `cargo run --example custom_plugin -- -c gateway.yaml` (same flags as `avx-gateway`).

use async_trait::async_trait;
use avx_gateway::cli::{init_logging, Cli};
use avx_gateway::plugin::{
    Flow, Plugin, PluginContext, Reply, ReplyKind, RequestView, ResponseView, UpstreamView,
};
use avx_gateway::{ConfigError, Gateway};
use clap::Parser;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;

/// The plugin's YAML, checked by serde: an unknown key is an error with its location.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantConfig {
    /// The request header that names the tenant.
    #[serde(default = "default_header")]
    header: String,
    /// The tenants let through.
    allowed: Vec<String>,
    /// The header the tenant is forwarded upstream as (the client's own is never trusted).
    #[serde(default = "default_forward")]
    forward_as: String,
}

fn default_header() -> String {
    "x-tenant".into()
}

fn default_forward() -> String {
    "x-tenant-id".into()
}

/// The compiled plugin: parsed once, read per request.
struct Tenant {
    header: HeaderName,
    allowed: HashSet<String>,
    forward_as: HeaderName,
}

impl Tenant {
    /// The factory registered with the builder.
    fn build(
        value: &serde_yaml::Value,
        cx: &PluginContext<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let c: TenantConfig = cx.parse(value)?;
        let name = |key: &str, v: &str| {
            HeaderName::from_bytes(v.as_bytes())
                .map_err(|_| cx.error(key, format!("invalid header name {v:?}")))
        };
        if c.allowed.is_empty() {
            return Err(cx.error("allowed", "needs at least one tenant"));
        }
        Ok(Arc::new(Tenant {
            header: name("header", &c.header)?,
            allowed: c.allowed.into_iter().collect(),
            forward_as: name("forward_as", &c.forward_as)?,
        }))
    }

    fn tenant<'r>(&self, req: &'r RequestView<'_>) -> Option<&'r str> {
        req.header(&self.header)?.to_str().ok()
    }
}

#[async_trait]
impl Plugin for Tenant {
    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        match self.tenant(req) {
            Some(t) if self.allowed.contains(t) => Flow::Continue,
            Some(_) => Flow::Reply(Reply::new(
                StatusCode::FORBIDDEN,
                ReplyKind::Forbidden,
                "unknown tenant",
            )),
            None => Flow::Reply(Reply::bad_request("missing tenant header")),
        }
    }

    async fn upstream_request(&self, req: &mut UpstreamView<'_>) {
        // Only a value the request hook admitted is forwarded, under our own name.
        let tenant = req.headers().get(&self.header).cloned();
        if self.forward_as != self.header {
            req.remove_header(&self.forward_as);
        }
        if let Some(t) = tenant {
            req.set_header(self.forward_as.clone(), t);
        }
    }

    async fn response(&self, resp: &mut ResponseView<'_>) {
        if let Some(t) = resp.request_headers().get(&self.header).cloned() {
            resp.set_header(HeaderName::from_static("x-served-tenant"), t);
        }
        resp.set_header(
            HeaderName::from_static("x-tenant-checked"),
            HeaderValue::from_static("1"),
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let gateway = match Gateway::builder()
        .plugin("tenant", Tenant::build)
        .build_from_file(&cli.conf)
    {
        Ok(g) => g,
        Err(e) => {
            eprintln!("custom_plugin: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.test {
        println!("custom_plugin: configuration {} is valid", cli.conf);
        return ExitCode::SUCCESS;
    }
    match gateway.run(cli.pingora_opt()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_plugin: {e}");
            ExitCode::FAILURE
        }
    }
}
