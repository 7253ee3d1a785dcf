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

use std::sync::atomic::AtomicU64;

use model::{Amount, Asset, RailId};

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
    settled_payouts: Family<Labels, Gauge>,
    settled_amount: Family<Labels, Gauge<f64, AtomicU64>>,
    fees_paid: Family<Labels, Gauge<f64, AtomicU64>>,
    pool_available: Family<Labels, Gauge<f64, AtomicU64>>,
    pool_reserved: Family<Labels, Gauge<f64, AtomicU64>>,
    guard_held: Gauge,
    leader: Gauge,
    lease_token: Gauge,
    replication_lag: Gauge,
    fencing_refusals: Gauge,
    promotions: Gauge,
    rails: Gauge,
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
            settled_payouts: Family::default(),
            settled_amount: Family::default(),
            fees_paid: Family::default(),
            pool_available: Family::default(),
            pool_reserved: Family::default(),
            guard_held: Gauge::default(),
            leader: Gauge::default(),
            lease_token: Gauge::default(),
            replication_lag: Gauge::default(),
            fencing_refusals: Gauge::default(),
            promotions: Gauge::default(),
            rails: Gauge::default(),
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
        registry.register(
            "settled_payouts",
            "payouts settled per rail and asset since the process started",
            metrics.settled_payouts.clone(),
        );
        registry.register(
            "settled_amount",
            "amount settled per rail and asset since the process started, in the asset's units",
            metrics.settled_amount.clone(),
        );
        registry.register(
            "fees_paid",
            "fees the chains charged per rail since the process started, in the fee asset's units",
            metrics.fees_paid.clone(),
        );
        registry.register(
            "pool_available",
            "a pool's available balance, in the asset's units",
            metrics.pool_available.clone(),
        );
        registry.register(
            "pool_reserved",
            "a pool's reserved balance, in the asset's units",
            metrics.pool_reserved.clone(),
        );
        registry.register(
            "node_leader",
            "1 while this node holds the coordinator lease (routing, the queue, commands)",
            metrics.leader.clone(),
        );
        registry.register(
            "node_lease_token",
            "the coordinator lease's fencing token while held",
            metrics.lease_token.clone(),
        );
        registry.register(
            "node_rails",
            "rails whose lease this node holds (it signs, broadcasts and watches on them)",
            metrics.rails.clone(),
        );
        registry.register(
            "node_replication_lag_records",
            "records in the shared journal this standby has not applied yet",
            metrics.replication_lag.clone(),
        );
        registry.register(
            "node_fencing_refusals",
            "commits refused because this node's lease was lost (since start)",
            metrics.fencing_refusals.clone(),
        );
        registry.register(
            "node_promotions",
            "times this node opened an engine acting under leases",
            metrics.promotions.clone(),
        );
        registry.register("guard_held", "payouts held by mis-transfer guards", metrics.guard_held.clone());
        Metrics { registry, ..metrics }
    }
}

fn to_gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// An amount in its asset's units for exposition only (Prometheus values are floats; nothing
/// computes money from them).
fn units(asset: Asset, amount: Amount) -> f64 {
    asset.format_amount(amount).parse().unwrap_or(f64::MAX)
}

fn rail_asset(rail: RailId, asset: Asset) -> Labels {
    vec![("rail".to_owned(), rail.to_string()), ("asset".to_owned(), asset.symbol().to_owned())]
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
            for ((rail, asset), totals) in &m.settled {
                let labels = rail_asset(*rail, *asset);
                self.settled_payouts.get_or_create(&labels).set(to_gauge(totals.payouts));
                self.settled_amount.get_or_create(&labels).set(units(*asset, totals.amount));
                if let Some(fee_asset) = totals.fee_asset {
                    self.fees_paid.get_or_create(&rail_asset(*rail, fee_asset)).set(units(fee_asset, totals.fees));
                }
            }
            for pool in &m.pools {
                let labels = rail_asset(pool.rail, pool.asset);
                self.pool_available.get_or_create(&labels).set(units(pool.asset, pool.available));
                self.pool_reserved.get_or_create(&labels).set(units(pool.asset, pool.reserved));
            }
            self.guard_held.set(to_gauge(m.guards.held.len()));
            self.replication_lag.set(to_gauge(m.lag));
        });
        if let Some(node) = api.node() {
            self.leader.set(i64::from(node.leader));
            self.lease_token.set(node.token.unwrap_or(0));
            self.rails.set(to_gauge(node.rails.len()));
            self.fencing_refusals.set(to_gauge(node.fencing_refusals));
            self.promotions.set(to_gauge(node.promotions));
        }
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

/// 200 when the engine is open and running (on a standby: caught up with the journal) and the
/// server takes requests; 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, body = String), (status = 503, body = String)))]
async fn readyz(State(api): State<Api>) -> (StatusCode, String) {
    if api.is_ready() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        let why = api.handle.read(|m| match (&m.stopped, m.lag) {
            (Some(stopped), _) => stopped.clone(),
            (None, 0) => "starting".to_owned(),
            (None, lag) => format!("catching up with the journal: {lag} records behind"),
        });
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}", crate::batch::clip(&why)))
    }
}
