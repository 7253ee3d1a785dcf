//! `/metrics` (Prometheus text format, by the `prometheus-client` crate), `/healthz` (the
//! process answers) and `/readyz` (the engine is open, running, and the server is bound).
//! Gauges are read from the engine's read model when scraped; the latency histograms are fed
//! by the intake handler and the webhook sender.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Api;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub intake_seconds: Histogram,
    pub settle_seconds: Histogram,
    pub rate_limited: Counter,
    queue_depth: Family<Labels, Gauge>,
    class_depth: Family<Labels, Gauge>,
    payments: Family<Labels, Gauge>,
    rail_up: Family<Labels, Gauge>,
    open_settlements: Family<Labels, Gauge>,
    webhook_backlog: Gauge,
    outbox: Gauge,
    journal_records: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("railyard");
        let metrics = Metrics {
            registry: Registry::default(),
            intake_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            settle_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 16)),
            rate_limited: Counter::default(),
            queue_depth: Family::default(),
            class_depth: Family::default(),
            payments: Family::default(),
            rail_up: Family::default(),
            open_settlements: Family::default(),
            webhook_backlog: Gauge::default(),
            outbox: Gauge::default(),
            journal_records: Gauge::default(),
        };
        registry.register(
            "intake_seconds",
            "time to validate and durably accept a batch",
            metrics.intake_seconds.clone(),
        );
        registry.register("settle_seconds", "time from intake to a payment settled", metrics.settle_seconds.clone());
        registry.register("rate_limited", "requests refused by the per-key rate limit", metrics.rate_limited.clone());
        registry.register("queue_depth", "payments queued per rail", metrics.queue_depth.clone());
        registry.register("class_queue_depth", "payments queued per priority class", metrics.class_depth.clone());
        registry.register("payments", "payments per state (all time)", metrics.payments.clone());
        registry.register(
            "rail_up",
            "1 when a rail takes new work (breaker closed, not paused)",
            metrics.rail_up.clone(),
        );
        registry.register(
            "settlements",
            "open settlements per state (planned, signed, broadcast, confirmed)",
            metrics.open_settlements.clone(),
        );
        registry.register("webhook_backlog", "webhook deliveries not yet delivered", metrics.webhook_backlog.clone());
        registry.register("journal_records", "records in the journal (its tip)", metrics.journal_records.clone());
        registry.register("outbox", "notices journaled and not yet delivered", metrics.outbox.clone());
        Metrics { registry, ..metrics }
    }
}

fn to_gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Metrics {
    fn render(&self, api: &Api) -> String {
        api.handle.read(|m| {
            for rail in &m.rails {
                let labels = vec![("rail".to_owned(), rail.rail.to_string())];
                self.queue_depth.get_or_create(&labels).set(to_gauge(rail.queued));
                let up = !rail.paused && matches!(rail.breaker, router::BreakerState::Closed);
                self.rail_up.get_or_create(&labels).set(i64::from(up));
            }
            for (class, depth) in &m.depths.classes {
                self.class_depth
                    .get_or_create(&vec![("class".to_owned(), class.to_string())])
                    .set(to_gauge(depth.queued));
            }
            for (state, n) in m.counts_by_name() {
                self.payments.get_or_create(&vec![("state".to_owned(), state)]).set(to_gauge(n));
            }
            let mut by_state: std::collections::BTreeMap<String, i64> =
                ["planned", "signed", "broadcast", "confirmed"].into_iter().map(|s| (s.to_owned(), 0)).collect();
            for record in m.settlements.values() {
                *by_state.entry(crate::wire::settlement_state_name(record.state).0).or_default() += 1;
            }
            for (state, n) in by_state {
                self.open_settlements.get_or_create(&vec![("state".to_owned(), state)]).set(n);
            }
            self.outbox.set(to_gauge(m.outbox));
            self.journal_records.set(to_gauge(m.tip));
        });
        self.webhook_backlog.set(to_gauge(api.deliveries.backlog()));
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::error!(%error, "metrics do not encode");
        }
        text
    }
}

pub(crate) fn routes(router: OpenApiRouter<Api>) -> OpenApiRouter<Api> {
    router.routes(routes!(metrics)).routes(routes!(healthz)).routes(routes!(readyz))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    let text = api.metrics.render(&api);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

/// 200 while the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the engine is open and running and the server takes requests; 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, body = String), (status = 503, body = String)))]
async fn readyz(State(api): State<Api>) -> (StatusCode, String) {
    if api.is_ready() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        let why = api.handle.read(|m| m.stopped.clone()).unwrap_or_else(|| "starting".to_owned());
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}", crate::batch::clip(&why)))
    }
}
