//! Active health checks, built from `health_check:` and run by Pingora's load balancer service.

use crate::config::{HealthCheckConfig, HealthCheckKind, UpstreamConfig};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use std::time::Duration;

/// Builds the health check for an upstream; `None` when it has none configured.
pub(crate) fn build(up: &UpstreamConfig) -> Result<Option<Box<dyn HealthCheck + Send + Sync>>> {
    let Some(hc) = &up.health_check else {
        return Ok(None);
    };
    let timeout = Duration::from_millis(hc.timeout_ms);
    Ok(Some(match hc.kind {
        HealthCheckKind::Tcp => {
            let mut check = match &up.tls {
                Some(tls) => TcpHealthCheck::new_tls(&tls.sni),
                None => TcpHealthCheck::new(),
            };
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            let opts = &mut check.peer_template.options;
            opts.connection_timeout = Some(timeout);
            opts.total_connection_timeout = Some(timeout);
            if let Some(tls) = &up.tls {
                opts.verify_cert = tls.verify;
                opts.verify_hostname = tls.verify;
            }
            check
        }
        HealthCheckKind::Http => Box::new(http_check(up, hc, timeout)?),
    }))
}

fn http_check(
    up: &UpstreamConfig,
    hc: &HealthCheckConfig,
    timeout: Duration,
) -> Result<HttpHealthCheck> {
    let host = hc
        .host
        .clone()
        .or_else(|| up.tls.as_ref().map(|t| t.sni.clone()))
        .unwrap_or_else(|| "localhost".to_string());
    let mut check = HttpHealthCheck::new(&host, up.tls.is_some());
    let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None)?;
    req.insert_header("Host", &host)?;
    req.insert_header("User-Agent", "avx-gateway-health-check")?;
    check.req = req;
    check.consecutive_success = hc.healthy_threshold;
    check.consecutive_failure = hc.unhealthy_threshold;
    let opts = &mut check.peer_template.options;
    opts.connection_timeout = Some(timeout);
    opts.total_connection_timeout = Some(timeout);
    opts.read_timeout = Some(timeout);
    opts.write_timeout = Some(timeout);
    if let Some(tls) = &up.tls {
        opts.verify_cert = tls.verify;
        opts.verify_hostname = tls.verify;
    }
    let expected = hc.expected_status;
    check.validator = Some(Box::new(move |resp: &ResponseHeader| {
        if resp.status.as_u16() == expected {
            Ok(())
        } else {
            Error::e_explain(
                ErrorType::CustomCode("unexpected health check status", resp.status.as_u16()),
                format!("expected {expected}, got {}", resp.status.as_u16()),
            )
        }
    }));
    Ok(check)
}
