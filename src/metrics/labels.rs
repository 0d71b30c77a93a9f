//! The fixed label vocabularies: methods, status classes, error kinds and histogram buckets.
//!
//! Every label value comes from these lists or from names in the config, so the number of
//! series is bounded by the config and never by what clients send.

use http::Method;

/// Latency buckets in seconds: fine below 1 ms, where a proxy's own overhead lives.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// `method` label values; any other method is `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// `status_class` label values; `other` is a request that got no response (client gone).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Index of `method` in [`METHODS`].
pub fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Index of `status`'s class in [`STATUS_CLASSES`] (0 = no response goes to `other`).
pub fn status_class_index(status: u16) -> usize {
    match status {
        100..=599 => (status / 100 - 1) as usize,
        _ => 5,
    }
}

/// The `kind` label of `avx_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No backend could be reached: refused, connect timeout, TLS handshake, none healthy.
    Connect,
    /// The upstream took too long to read from or write to.
    Timeout,
    /// The upstream answered with a 5xx status.
    Upstream5xx,
    /// The upstream connection broke (closed, reset, or spoke invalid HTTP).
    Reset,
    /// Rejected by the route's rate limit or `max_in_flight` cap.
    RateLimited,
    /// Rejected by an open (or saturated half-open) circuit breaker.
    CircuitOpen,
    /// No route matched the request.
    NoRoute,
    /// The client sent a request the gateway refused (framing, size, timeout).
    BadRequest,
    /// An authentication plugin refused the request (401).
    Unauthorized,
    /// An access plugin denied the request (`ip_restriction`, a refused CORS preflight: 403).
    Forbidden,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Upstream5xx,
        ErrorKind::Reset,
        ErrorKind::RateLimited,
        ErrorKind::CircuitOpen,
        ErrorKind::NoRoute,
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Upstream5xx => "upstream_5xx",
            ErrorKind::Reset => "reset",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_methods() {
        assert_eq!(STATUS_CLASSES[status_class_index(200)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class_index(101)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class_index(599)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class_index(0)], "other");
        assert_eq!(STATUS_CLASSES[status_class_index(600)], "other");
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(METHODS[method_index(&custom)], "other");
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
