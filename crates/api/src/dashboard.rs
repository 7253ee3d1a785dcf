//! The operator dashboard: a page at `/` (HTML, CSS and JS served from the binary: no CDN,
//! nothing fetched from elsewhere) that reads the staff API with the key the operator types
//! in, and follows `GET /v1/events`, a server-sent event stream of the read model's overview.
//! Pool balances over time are sampled here (`sample_pools`, every 10 s, kept for 24 h, in
//! memory: a restart starts the history again).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use model::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Api;
use crate::auth::Caller;
use crate::ops::{pool_views, queues_view, rail_views};
use crate::problem::Problem;
use crate::wire::{PoolView, QueuesView, RailView};

const STAFF: [Role; 2] = [Role::Operator, Role::Treasury];
const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");
/// Event streams open at once, at most (each holds a connection and a timer).
pub const STREAMS_MAX: usize = 64;
/// Pool samples kept per pool: 24 h at one per 10 s.
const SAMPLES_MAX: usize = 8_640;

pub(crate) fn routes(router: OpenApiRouter<Api>) -> OpenApiRouter<Api> {
    router
        .route("/", axum::routing::get(page))
        .route("/dashboard.js", axum::routing::get(script))
        .route("/dashboard.css", axum::routing::get(style))
        .routes(routes!(overview))
        .routes(routes!(events))
        .routes(routes!(pool_history))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Only this server's own script and style; no inline code, no other origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// What the dashboard shows at a glance, from the read model.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    /// The engine round that published it (Unix ms) and the journal's tip then.
    pub as_of: u64,
    pub tip: u64,
    pub stopped: Option<String>,
    /// Payments per state (all time).
    pub counts: BTreeMap<String, u64>,
    pub rails: Vec<RailView>,
    pub queues: QueuesView,
    pub pools: Vec<PoolView>,
    /// Payments held now (guards, incidents).
    pub held: u64,
    /// Settlements reconciliation flagged.
    pub anomalies: usize,
    /// Notices not yet delivered to merchants.
    pub outbox: usize,
}

fn overview_of(m: &engine::service::ReadModel) -> Overview {
    Overview {
        as_of: m.as_of.0,
        tip: m.tip,
        stopped: m.stopped.clone(),
        counts: m.counts_by_name(),
        rails: rail_views(m),
        queues: queues_view(m),
        pools: pool_views(m),
        held: m.counts.iter().filter(|(s, _)| matches!(s, PaymentState::Held { .. })).map(|(_, n)| *n).sum(),
        anomalies: m.flagged.len(),
        outbox: m.outbox,
    }
}

/// Rails, queues, pools and counts at a glance.
#[utoipa::path(get, path = "/v1/overview", tag = "operator", responses((status = 200, body = Overview)))]
async fn overview(State(api): State<Api>, caller: Caller) -> Result<Json<Overview>, Problem> {
    caller.require(&STAFF)?;
    Ok(Json(api.handle.read(overview_of)))
}

/// The overview as server-sent events (`event: overview`), sent when the engine has moved on,
/// at most twice a second; a comment every 15 s keeps idle connections open.
#[utoipa::path(get, path = "/v1/events", tag = "operator",
    responses((status = 200, content_type = "text/event-stream", description = "overview events"),
              (status = 503, description = "too many streams open")))]
async fn events(
    State(api): State<Api>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    caller.require(&STAFF)?;
    let permit = std::sync::Arc::clone(&api.streams).try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("at most {STREAMS_MAX} event streams are open at once"),
        )
        .retry_after(5)
    })?;
    let state = (api, permit, None::<(u64, u64)>);
    let stream = futures::stream::unfold(state, |(api, permit, last)| async move {
        if last.is_some() {
            // At most twice a second, however fast the engine goes round.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        loop {
            // A server shutting down ends its streams (graceful shutdown waits for them).
            if !api.is_serving() {
                return None;
            }
            let (as_of, tip) = api.handle.read(|m| (m.as_of.0, m.tip));
            if last != Some((as_of, tip)) {
                let overview = api.handle.read(overview_of);
                let event = Event::default().event("overview").json_data(&overview).unwrap_or_default();
                return Some((Ok(event), (api, permit, Some((as_of, tip)))));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One pool's balance at a time (decimal strings in the asset's units).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolSample {
    pub at: u64,
    pub available: String,
    pub reserved: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolSeries {
    pub rail: String,
    pub asset: String,
    pub samples: Vec<PoolSample>,
}

/// Pool balances over time, sampled by `sample_pools`.
#[derive(Debug, Default)]
pub struct PoolHistory(Mutex<BTreeMap<(RailId, Asset), VecDeque<Sample>>>);

/// When (Unix ms), available, reserved.
type Sample = (u64, Amount, Amount);

impl PoolHistory {
    /// Takes one sample of every pool from the read model.
    pub fn sample(&self, m: &engine::service::ReadModel) {
        let mut history = self.0.lock().expect("pool history lock");
        for pool in &m.pools {
            let series = history.entry((pool.rail, pool.asset)).or_default();
            if series.len() >= SAMPLES_MAX {
                series.pop_front();
            }
            series.push_back((m.as_of.0, pool.available, pool.reserved));
        }
    }

    fn series(&self, since: u64) -> Vec<PoolSeries> {
        let history = self.0.lock().expect("pool history lock");
        history
            .iter()
            .map(|((rail, asset), samples)| PoolSeries {
                rail: rail.to_string(),
                asset: asset.symbol().to_owned(),
                samples: samples
                    .iter()
                    .filter(|(at, _, _)| *at >= since)
                    .map(|(at, available, reserved)| PoolSample {
                        at: *at,
                        available: asset.format_amount(*available),
                        reserved: asset.format_amount(*reserved),
                    })
                    .collect(),
            })
            .collect()
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Unix ms: samples from then on (default: all kept, up to 24 h).
    since: Option<u64>,
}

/// Pool balances over time (one sample per pool every 10 s, the last 24 h, since the server started).
#[utoipa::path(get, path = "/v1/pools/history", tag = "treasury", params(HistoryQuery), responses((status = 200, body = Vec<PoolSeries>)))]
async fn pool_history(
    State(api): State<Api>,
    caller: Caller,
    axum::extract::Query(query): axum::extract::Query<HistoryQuery>,
) -> Result<Json<Vec<PoolSeries>>, Problem> {
    caller.require(&STAFF)?;
    Ok(Json(api.pool_history.series(query.since.unwrap_or(0))))
}

/// Samples every pool every `every` until `shutdown` resolves.
pub async fn sample_pools(api: Api, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut timer = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = timer.tick() => api.handle.read(|m| api.pool_history.sample(m)),
        }
    }
}
