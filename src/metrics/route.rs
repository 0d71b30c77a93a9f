//! Per-route series: created on a route's first request, then reached without any lock.
//!
//! A route's children are resolved from the labelled families once (that takes the family's
//! lock a single time per series) and kept in `OnceLock`s, so recording is an atomic load plus
//! the metric's own atomic adds. Series a route never produces (say `PATCH` × `1xx`) are never
//! created and never exported.

use super::labels::{ErrorKind, LATENCY_BUCKETS, METHODS, STATUS_CLASSES};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::{Arc, OnceLock};

const CELLS: usize = METHODS.len() * STATUS_CLASSES.len();

/// The labelled families every route's series come from.
pub(super) struct RouteFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    in_flight: IntGaugeVec,
    rate_limited: IntCounterVec,
}

impl RouteFamilies {
    /// Creates the families and registers them.
    pub(super) fn register(registry: &Registry) -> prometheus::Result<RouteFamilies> {
        let f = RouteFamilies {
            requests: IntCounterVec::new(
                Opts::new(
                    "avx_requests_total",
                    "Requests served, by route, method and status class.",
                ),
                &["route", "method", "status_class"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "avx_request_duration_seconds",
                    "Whole-request latency, from the request header to the end of the response.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "avx_errors_total",
                    "Failed or refused requests, by route and kind.",
                ),
                &["route", "kind"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new("avx_route_in_flight", "Requests in flight, by route."),
                &["route"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "avx_rate_limited_total",
                    "Requests rejected by the route's rate limit.",
                ),
                &["route"],
            )?,
        };
        registry.register(Box::new(f.requests.clone()))?;
        registry.register(Box::new(f.duration.clone()))?;
        registry.register(Box::new(f.errors.clone()))?;
        registry.register(Box::new(f.in_flight.clone()))?;
        registry.register(Box::new(f.rate_limited.clone()))?;
        Ok(f)
    }
}

/// A route's name and, once it has seen traffic, its series.
pub(super) struct RouteSlot {
    name: Arc<str>,
    series: OnceLock<Box<RouteSeries>>,
}

impl RouteSlot {
    /// An empty slot for the route called `name` ("" for unmatched requests).
    pub(super) fn new(name: Arc<str>) -> RouteSlot {
        RouteSlot {
            name,
            series: OnceLock::new(),
        }
    }

    /// The route's name, as used in labels.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The route's series, created on first use.
    pub(super) fn series(&self, f: &RouteFamilies) -> &RouteSeries {
        self.series
            .get_or_init(|| Box::new(RouteSeries::new(&self.name, f)))
    }
}

/// The series of one route.
pub(super) struct RouteSeries {
    requests: [OnceLock<IntCounter>; CELLS],
    errors: [OnceLock<IntCounter>; ErrorKind::ALL.len()],
    /// `avx_request_duration_seconds{route}`.
    pub(super) duration: prometheus::Histogram,
    /// `avx_route_in_flight{route}`.
    pub(super) in_flight: IntGauge,
    /// `avx_rate_limited_total{route}`.
    pub(super) rate_limited: IntCounter,
}

impl RouteSeries {
    fn new(name: &str, f: &RouteFamilies) -> RouteSeries {
        RouteSeries {
            requests: std::array::from_fn(|_| OnceLock::new()),
            errors: std::array::from_fn(|_| OnceLock::new()),
            duration: f.duration.with_label_values(&[name]),
            in_flight: f.in_flight.with_label_values(&[name]),
            rate_limited: f.rate_limited.with_label_values(&[name]),
        }
    }

    /// `avx_requests_total{route, method, status_class}` by index into the label lists.
    pub(super) fn requests(
        &self,
        f: &RouteFamilies,
        name: &str,
        method: usize,
        class: usize,
    ) -> &IntCounter {
        self.requests[method * STATUS_CLASSES.len() + class].get_or_init(|| {
            f.requests
                .with_label_values(&[name, METHODS[method], STATUS_CLASSES[class]])
        })
    }

    /// `avx_errors_total{route, kind}`.
    pub(super) fn errors(&self, f: &RouteFamilies, name: &str, kind: ErrorKind) -> &IntCounter {
        self.errors[kind as usize]
            .get_or_init(|| f.errors.with_label_values(&[name, kind.as_str()]))
    }
}
