//! Prometheus metrics: requests by route template and status, access
//! decisions by outcome, the database pool, and the time checks spend in
//! the database. Served as text at `GET /metrics`.
//!
//! Every label value comes from a fixed set, so a client cannot add series:
//! the method is one of [`METHOD_LABELS`] or `other`, the route is a
//! registered template or `unmatched`, the status is a number of HTTP.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tollgate_domain::access::Decision;
use tollgate_domain::status::{HotPathState, PoolState};

use crate::error::ApiError;
use crate::state::AppState;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The methods counted under their own name; every other is `other`.
pub const METHOD_LABELS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// A request's method as a label value (and in the request log): a
/// standard method by name, anything else as `other`. HTTP lets a client
/// send any token as a method, so it is never used verbatim.
pub fn method_label(method: &Method) -> &'static str {
    METHOD_LABELS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other")
}

/// The route label of a request that matched no registered template.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Every metric Tollgate exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    decisions: IntCounterVec,
    check_store: Histogram,
    pool_max: IntGauge,
    pool_open: IntGauge,
    pool_idle: IntGauge,
    pool_in_use: IntGauge,
    pool_checkouts: IntGauge,
    pool_wait: Gauge,
    pool_timeouts: IntGauge,
    checks_rejected: IntCounter,
    checks_abandoned: IntCounter,
    cache_lookups: IntCounterVec,
    cache_entries: IntGaugeVec,
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> T {
    // Names are fixed and unique, so registration cannot fail.
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        log::error!("metric registration failed: {e}");
    }
    metric
}

impl Metrics {
    /// The metrics of [`Self::new`], whose definitions are constants.
    #[allow(
        clippy::panic,
        reason = "the metric names, help texts and labels are constants: one that \
                  prometheus refuses is a bug every test that builds an AppState finds"
    )]
    pub fn fixed() -> Self {
        Self::new().unwrap_or_else(|e| panic!("the fixed metric definitions are invalid: {e}"))
    }

    /// Every metric, registered; fails only on an invalid definition.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        let labels = &["method", "route", "status"];
        Ok(Self {
            requests: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tollgate_http_requests_total",
                        "HTTP requests by route template and status",
                    ),
                    labels,
                )?,
            ),
            latency: registered(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tollgate_http_request_duration_seconds",
                        "HTTP request latency",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )?,
            ),
            decisions: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tollgate_access_decisions_total",
                        "Access checks by outcome",
                    ),
                    &["outcome"],
                )?,
            ),
            check_store: registered(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tollgate_access_check_db_seconds",
                        "Time an access check waits for the database (queue, batch, commit)",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?,
            ),
            pool_max: registered(
                r,
                IntGauge::new(
                    "tollgate_db_pool_max_connections",
                    "Most connections the pool opens",
                )?,
            ),
            pool_open: registered(
                r,
                IntGauge::new("tollgate_db_pool_connections", "Open database connections")?,
            ),
            pool_idle: registered(
                r,
                IntGauge::new(
                    "tollgate_db_pool_idle_connections",
                    "Open connections not in use",
                )?,
            ),
            pool_in_use: registered(
                r,
                IntGauge::new("tollgate_db_pool_in_use_connections", "Connections in use")?,
            ),
            pool_checkouts: registered(
                r,
                IntGauge::new(
                    "tollgate_db_pool_checkouts",
                    "Connections handed out since start",
                )?,
            ),
            pool_wait: registered(
                r,
                Gauge::new(
                    "tollgate_db_pool_wait_seconds",
                    "Seconds spent waiting for a connection since start",
                )?,
            ),
            pool_timeouts: registered(
                r,
                IntGauge::new(
                    "tollgate_db_pool_timeouts",
                    "Checkouts that timed out since start",
                )?,
            ),
            checks_rejected: registered(
                r,
                IntCounter::new(
                    "tollgate_access_checks_rejected_total",
                    "Checks answered 503 at once because the writer's queue was full",
                )?,
            ),
            checks_abandoned: registered(
                r,
                IntCounter::new(
                    "tollgate_access_checks_abandoned_total",
                    "Checks skipped unconsumed: their caller left or their deadline passed first",
                )?,
            ),
            cache_lookups: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tollgate_cache_lookups_total",
                        "Read cache lookups: keys hit (a real key), unknown (a hash known to \
                         name no key) or miss, and of the misses loaded (a real key) or \
                         loaded_unknown; contexts hit or miss",
                    ),
                    &["map", "result"],
                )?,
            ),
            cache_entries: registered(
                r,
                IntGaugeVec::new(
                    Opts::new("tollgate_cache_entries", "Entries in the read cache"),
                    &["map"],
                )?,
            ),
            registry,
        })
    }

    fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a decision; `store` is the time it waited for the database.
    pub fn observe_decision(&self, decision: &Decision, store: Option<Duration>) {
        let outcome = decision.denied.map_or("allowed", |r| r.as_str());
        self.decisions.with_label_values(&[outcome]).inc();
        if let Some(t) = store {
            self.check_store.observe(t.as_secs_f64());
        }
    }

    fn set_pool(&self, s: PoolState) {
        self.pool_max.set(i64::from(s.max_size));
        self.pool_open.set(i64::from(s.connections));
        self.pool_idle.set(i64::from(s.idle));
        self.pool_in_use
            .set(i64::from(s.connections.saturating_sub(s.idle)));
        self.pool_checkouts
            .set(i64::try_from(s.checkouts).unwrap_or(i64::MAX));
        self.pool_wait.set(s.wait_seconds);
        self.pool_timeouts
            .set(i64::try_from(s.timeouts).unwrap_or(i64::MAX));
    }

    fn set_hot_path(&self, s: HotPathState) {
        // The store counts; the counters catch up to its totals.
        let catch_up = |counter: &IntCounter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        catch_up(&self.checks_rejected, s.checks_rejected);
        catch_up(&self.checks_abandoned, s.checks_abandoned);
        let c = s.cache;
        for (map, result, total) in [
            ("keys", "hit", c.key_hits),
            ("keys", "unknown", c.unknown_key_hits),
            ("keys", "miss", c.keys_loaded + c.unknown_keys_loaded),
            ("keys", "loaded", c.keys_loaded),
            ("keys", "loaded_unknown", c.unknown_keys_loaded),
            ("contexts", "hit", c.context_hits),
            ("contexts", "miss", c.context_misses),
        ] {
            catch_up(&self.cache_lookups.with_label_values(&[map, result]), total);
        }
        for (map, entries) in [
            ("keys", c.keys),
            ("unknown_keys", c.unknown_keys),
            ("contexts", c.contexts),
        ] {
            self.cache_entries
                .with_label_values(&[map])
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
    }

    fn render(&self) -> Result<String, ApiError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(ApiError::internal)?;
        String::from_utf8(out).map_err(ApiError::internal)
    }
}

/// Middleware: counts and times every request by method, route template
/// and status, each from a fixed set (see the module's header).
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = method_label(req.method());
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| UNMATCHED_ROUTE.into());
        metrics.observe_request(method, &route, res.status().as_u16(), started.elapsed());
    }
    Ok(res)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(metrics)));
}

/// `GET /metrics`, Prometheus text format, no key.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (text format)",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.status.state();
    state.metrics.set_pool(store.pool);
    state.metrics.set_hot_path(store.hot_path);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render()?))
}

#[cfg(test)]
mod tests {
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use actix_web::App;
    use tollgate_domain::status::{HotPathState, PoolState, StoreState};

    use super::*;
    use crate::state::mocked::Mocks;

    #[actix_web::test]
    async fn metrics_show_the_stores_pool_and_hot_path_counters() {
        let mut mocks = Mocks::default();
        mocks.status.expect_state().returning(|| StoreState {
            pool: PoolState {
                max_size: 7,
                connections: 5,
                idle: 2,
                ..PoolState::default()
            },
            hot_path: HotPathState {
                checks_rejected: 4,
                ..HotPathState::default()
            },
        });
        let app = init_service(
            App::new()
                .app_data(web::Data::new(mocks.into_state()))
                .configure(configure),
        )
        .await;
        let res = call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
        let text = String::from_utf8(read_body(res).await.to_vec()).expect("utf-8");
        for line in [
            "tollgate_db_pool_max_connections 7",
            "tollgate_db_pool_connections 5",
            "tollgate_db_pool_in_use_connections 3",
            "tollgate_access_checks_rejected_total 4",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }

    #[test]
    fn standard_methods_keep_their_name_and_others_are_other() {
        for m in METHOD_LABELS {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            assert_eq!(method_label(&method), *m);
        }
        for odd in ["XKQZ", "get", "CONNECT", "TRACE", "PROPFIND", "M-SEARCH"] {
            let method = Method::from_bytes(odd.as_bytes()).expect("method");
            assert_eq!(method_label(&method), "other", "{odd}");
        }
    }
}
