//! railyard's HTTP API (axum): what merchants, treasury staff and operators use.
//!
//! `app(api)` is the whole router. Every handler talks to the engine only through its
//! `EngineHandle`: commands go over the engine's bounded channel (a full channel is a 503 with
//! Retry-After), queries read the published read model and the history store and never wait
//! for a round. Requests and answers are this crate's own types (`wire`), converted at the
//! edge; errors are RFC 9457 problems (`problem`). The OpenAPI 3.1 document is generated from
//! the same route table the server runs (`utoipa-axum`), so the two cannot disagree.

mod admin;
pub mod auth;
pub mod batch;
pub mod dashboard;
mod guards;
mod merchant;
mod metrics;
pub mod node;
mod ops;
pub mod problem;
pub mod webhooks;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{HeaderName, Request};
use engine::service::EngineHandle;
use model::Asset;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use metrics::Metrics;
pub use webhooks::Deliveries;

/// Limits and inputs the API is built with.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The largest request body (a batch file): larger is a 413.
    pub body_bytes_max: usize,
    /// Most payments in one batch: more is a 413 (the engine's own limit, checked early).
    pub rows_max: usize,
    /// Requests per second per key (GCRA), and the burst above it: past it, 429.
    pub requests_per_second: u32,
    pub requests_burst: u32,
    /// The assets the configured rails carry (a batch's symbols are looked up here).
    pub assets: Vec<Asset>,
    /// The server's secret from which each merchant's webhook signing key is derived.
    pub webhook_key: [u8; 32],
}

impl ApiConfig {
    /// Limits at their defaults.
    pub fn new(assets: Vec<Asset>, rows_max: usize, webhook_key: [u8; 32]) -> ApiConfig {
        ApiConfig {
            body_bytes_max: 8 << 20,
            rows_max,
            requests_per_second: 50,
            requests_burst: 200,
            assets,
            webhook_key,
        }
    }
}

/// The API's shared state: cheap to clone.
#[derive(Clone, Debug)]
pub struct Api {
    pub handle: EngineHandle,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    pub deliveries: Arc<Deliveries>,
    limiter: Arc<auth::KeyLimiter>,
    ready: Arc<AtomicBool>,
    /// Set on a node sharing its journal with others.
    node: Arc<std::sync::RwLock<Option<node::NodeView>>>,
    forwarder: reqwest::Client,
    /// Open event streams (`dashboard::STREAMS_MAX` at most).
    streams: Arc<tokio::sync::Semaphore>,
    pub pool_history: Arc<dashboard::PoolHistory>,
}

impl Api {
    pub fn new(handle: EngineHandle, config: ApiConfig) -> Api {
        let limiter = auth::limiter(config.requests_per_second, config.requests_burst);
        Api {
            handle,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            deliveries: Arc::new(Deliveries::default()),
            limiter,
            ready: Arc::new(AtomicBool::new(false)),
            node: Arc::default(),
            forwarder: node::forwarder(),
            streams: Arc::new(tokio::sync::Semaphore::new(dashboard::STREAMS_MAX)),
            pool_history: Arc::new(dashboard::PoolHistory::default()),
        }
    }

    /// Marks the server ready (`/readyz` answers 200) once the engine has opened and the
    /// listener is bound.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the server is up and not shutting down (event streams end when it is not).
    pub fn is_serving(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Ready: serving, the engine running, and on a standby caught up with the journal.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.handle.read(|m| m.stopped.is_none() && m.lag == 0)
    }

    /// Where this node stands among the nodes sharing its journal.
    pub fn set_node(&self, view: node::NodeView) {
        *self.node.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(view);
    }

    pub fn node(&self) -> Option<node::NodeView> {
        self.node.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "railyard", description = "multi-rail payment routing and settlement: merchants, treasury, operators"),
    components(schemas(problem::ProblemBody, problem::RowProblem, batch::BatchIn, batch::PaymentIn, wire::WebhookEvent)),
    modifiers(&BearerAuth)
)]
struct Doc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("ry_<64 hex digits>").build();
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
        openapi.security =
            Some(vec![utoipa::openapi::security::SecurityRequirement::new("api_key", Vec::<String>::new())]);
    }
}

/// The route table and the OpenAPI document it generates.
pub fn routes() -> (Router<Api>, utoipa::openapi::OpenApi) {
    let router = OpenApiRouter::with_openapi(Doc::openapi());
    let router = merchant::routes(router);
    let router = ops::routes(router);
    let router = guards::routes(router);
    let router = dashboard::routes(router);
    let router = admin::routes(router);
    let router = metrics::routes(router);
    router.split_for_parts()
}

/// The whole HTTP application: routes, the OpenAPI document at `/openapi.json`, request ids
/// (`x-request-id`, made when absent, echoed back, in every log line of the request).
pub fn app(api: Api) -> Router {
    let (router, doc) = routes();
    let doc = Arc::new(doc);
    let request_id = HeaderName::from_static("x-request-id");
    router
        .route("/openapi.json", axum::routing::get(move || async move { axum::Json(doc.as_ref().clone()) }))
        .layer(axum::middleware::from_fn_with_state(api.clone(), node::forward_changes))
        .with_state(api)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            // The path only: queries and headers (the key) never reach the logs.
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}
