//! What a proxy error means, decided in one place: who is at fault, the status and body the
//! client gets, the `avx_errors_total{kind}` it is counted under, whether a stale cached
//! answer may stand in, and whether the backend is charged for it (breaker, passive health).

use super::context::RequestCtx;
use crate::metrics::ErrorKind;
use pingora_error::{Error, ErrorSource, ErrorType};

/// Who an error is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client went away (write, read or connection error on its side): nothing is
    /// answered and nothing is counted.
    ClientGone,
    /// The client's request was at fault (framing, too slow): a 4xx.
    Client,
    /// The upstream failed: it refused, timed out, reset, or spoke invalid HTTP.
    Upstream,
    /// The gateway decided (an HTTP status it raised itself, no healthy backend) or failed.
    Gateway,
}

/// A classified proxy error.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// Who is at fault.
    pub fault: Fault,
    /// The status answered when no response header went out yet.
    pub status: u16,
    /// The plain-text body of that answer.
    pub body: &'static str,
    etype_status: Option<u16>,
    connect: bool,
    timeout: bool,
    no_backend: bool,
}

impl Failure {
    /// Classifies `e` for this request.
    pub fn of(e: &Error, ctx: &RequestCtx) -> Failure {
        use ErrorType::*;
        let source = e.esource();
        let fault = match source {
            ErrorSource::Downstream
                if matches!(e.etype(), WriteError | ReadError | ConnectionClosed) =>
            {
                Fault::ClientGone
            }
            ErrorSource::Downstream => Fault::Client,
            ErrorSource::Upstream => Fault::Upstream,
            ErrorSource::Internal | ErrorSource::Unset => Fault::Gateway,
        };
        let timeout = matches!(
            e.etype(),
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
        );
        let connect = source != &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ConnectTimedout
                    | ConnectRefused
                    | ConnectNoRoute
                    | ConnectError
                    | ConnectProxyFailure
                    | TLSHandshakeFailure
                    | TLSHandshakeTimedout
                    | TLSWantX509Lookup
                    | InvalidCert
                    | HandshakeError
                    | SocketError
                    | BindError
            );
        let etype_status = match e.etype() {
            HTTPStatus(s) => Some(*s),
            _ => None,
        };
        let (status, body) = match (etype_status, fault) {
            (Some(503), _) => (503, "no healthy upstream\n"),
            (Some(code), _) => (code, "error\n"),
            (None, Fault::Client | Fault::ClientGone) if timeout => (408, "request timeout\n"),
            (None, _) if timeout => (504, "upstream timed out\n"),
            (None, Fault::Upstream) => (502, "bad gateway\n"),
            (None, Fault::Client | Fault::ClientGone) => (400, "bad request\n"),
            (None, Fault::Gateway) => (500, "internal error\n"),
        };
        Failure {
            fault,
            status,
            body,
            etype_status,
            connect,
            timeout,
            // `upstream_peer` found no backend it could try.
            no_backend: etype_status == Some(503)
                && ctx.upstream.is_some()
                && ctx.backend.is_none(),
        }
    }

    /// Whether the backend is charged for it (circuit breaker, passive health).
    pub fn counts_against_backend(&self) -> bool {
        self.fault == Fault::Upstream
    }

    /// Whether a stale cached answer may stand in for it (`stale-if-error`): upstream failures
    /// and 5xx statuses, never the client's own faults.
    pub fn serves_stale(&self) -> bool {
        self.fault == Fault::Upstream || self.etype_status.is_some_and(|s| s >= 500)
    }

    /// The `avx_errors_total{kind}` it is counted under, given the status actually sent
    /// (0 when none was).
    pub fn metric_kind(&self, sent: u16) -> Option<ErrorKind> {
        if self.connect || self.no_backend {
            return Some(ErrorKind::Connect);
        }
        match self.fault {
            Fault::Upstream if self.timeout => Some(ErrorKind::Timeout),
            Fault::Upstream => Some(ErrorKind::Reset),
            // The client's fault when it was answered with a 4xx (bad framing, too slow); a
            // client that went away is not an error of the gateway.
            Fault::Client | Fault::ClientGone if (400..500).contains(&sent) => {
                Some(ErrorKind::BadRequest)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(etype: ErrorType, source: ErrorSource) -> Failure {
        let e = match source {
            ErrorSource::Upstream => Error::new_up(etype),
            ErrorSource::Downstream => Error::new_down(etype),
            _ => Error::new_in(etype),
        };
        Failure::of(&e, &RequestCtx::new(runtime()))
    }

    fn runtime() -> std::sync::Arc<crate::runtime::Runtime> {
        let yaml = "listeners: [{ address: 127.0.0.1:18998 }]\n\
            upstreams: { b: { servers: [{ address: 127.0.0.1:3000 }] } }\n\
            routes: [{ name: r, match: { path_prefix: / }, upstream: b }]\n";
        let cfg = crate::config::Config::from_yaml_str(yaml).expect("valid yaml");
        let built = crate::runtime::Runtime::build(&cfg, &Default::default(), None);
        std::sync::Arc::new(built.expect("builds"))
    }

    #[test]
    fn each_error_gets_one_meaning() {
        use ErrorSource::*;
        use ErrorType::*;
        let f = of(ConnectRefused, Upstream);
        assert_eq!(
            (f.status, f.metric_kind(502)),
            (502, Some(ErrorKind::Connect))
        );
        assert!(f.counts_against_backend() && f.serves_stale());
        let f = of(ReadTimedout, Upstream);
        assert_eq!(
            (f.status, f.metric_kind(504)),
            (504, Some(ErrorKind::Timeout))
        );
        let f = of(ReadTimedout, Downstream);
        assert_eq!(
            (f.status, f.metric_kind(408)),
            (408, Some(ErrorKind::BadRequest))
        );
        assert!(!f.counts_against_backend() && !f.serves_stale());
        let f = of(WriteError, Downstream);
        assert_eq!((f.fault, f.metric_kind(0)), (Fault::ClientGone, None));
        let f = of(HTTPStatus(502), Internal);
        assert_eq!(f.status, 502);
        assert!(!f.counts_against_backend() && f.serves_stale());
        let f = of(InvalidHTTPHeader, Upstream);
        assert_eq!(
            (f.status, f.metric_kind(502)),
            (502, Some(ErrorKind::Reset))
        );
    }
}
