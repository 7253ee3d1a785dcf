//! A node among several on one shared journal (PostgreSQL): what it is (leader or standby),
//! for `/readyz` and the metrics, and forwarding. A standby answers every query from its own
//! copy of the state, and accepts merchants' batches itself (an intake needs no lease: the
//! node journals it in its turn, the idempotency claim a unique constraint); any other
//! request that changes something (any method but GET and HEAD) is forwarded to the leader
//! the lease row names, with its headers and body, and the leader's answer returned as it
//! is. With no leader known the answer is a 503 with Retry-After.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Api;
use crate::problem::Problem;

/// This node's place among the nodes sharing the journal (set by the code that holds the
/// lease; absent on a node alone on its journal).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// This node's holder name (the URL it advertises).
    pub node: String,
    /// Whether this node holds the coordinator lease (routing, the queue, commands).
    pub leader: bool,
    /// The coordinator lease's holder as last seen (this node when it leads).
    pub leader_url: Option<String>,
    /// The coordinator lease's fencing token while this node holds it.
    pub token: Option<i64>,
    /// The rails whose lease this node holds (it signs, broadcasts and watches on them).
    pub rails: Vec<String>,
    /// Commits refused because a lease was lost, since the process started.
    pub fencing_refusals: u64,
    /// Times this node took the lease.
    pub promotions: u64,
}

/// Marks a request a standby forwarded.
const FORWARDED: &str = "x-railyard-forwarded";

/// Headers that belong to one hop, not to the request.
const HOP: [HeaderName; 4] = [header::CONNECTION, header::HOST, header::TRANSFER_ENCODING, header::CONTENT_LENGTH];

/// Forwards a change to the leader when this node stands by.
pub(crate) async fn forward_changes(State(api): State<Api>, request: Request, next: Next) -> Response {
    let standby = api.handle.read(|m| m.standby);
    // A merchant's batch needs no lease: a standby journals it itself, in its turn — when it
    // knows the caller's key (one made moments ago on another node it may not have applied
    // yet: the leader judges it).
    let intake = *request.method() == Method::POST
        && request.uri().path() == "/v1/batches"
        && crate::auth::known_here(&api, request.headers());
    if !standby || intake || matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let leader = api.node().and_then(|n| n.leader_url).filter(|url| Some(url) != api.node().map(|n| n.node).as_ref());
    // Forwarded once at most: two standbys that each think the other leads answer 503
    // instead of passing a request back and forth.
    let leader = leader.filter(|_| !request.headers().contains_key(FORWARDED));
    let Some(leader) = leader else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "this node does not coordinate and no node holds the coordinator lease yet; retry shortly",
        )
        .retry_after(2)
        .into_response();
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, api.config.body_bytes_max).await else {
        return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the request body is over the limit")
            .into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing =
        api.forwarder.request(parts.method.clone(), format!("{leader}{path}")).body(body).header(FORWARDED, "1");
    for (name, value) in &parts.headers {
        if !HOP.contains(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    match outgoing.send().await {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if !HOP.contains(name) {
                    response = response.header(name, value);
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            response.body(Body::from(bytes)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(error) => {
            tracing::warn!(%error, %leader, "the leader did not answer a forwarded request");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "leader_unreachable",
                "this node stands by and the leader did not answer; retry shortly (nothing was changed here)",
            )
            .retry_after(2)
            .into_response()
        }
    }
}

/// The client forwarded requests go out on.
pub(crate) fn forwarder() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}
