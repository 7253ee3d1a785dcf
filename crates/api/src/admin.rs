//! The admin API: API keys (created with a secret shown once, listed, revoked) and the audit
//! export.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use model::*;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Api;
use crate::auth::{self, Caller};
use crate::merchant::json_body;
use crate::ops::reason;
use crate::problem::{Problem, ProblemBody};
use crate::wire::*;

pub(crate) fn routes(router: OpenApiRouter<Api>) -> OpenApiRouter<Api> {
    router.routes(routes!(list_keys, create_key)).routes(routes!(revoke_key)).routes(routes!(audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// The first record to list (default 1).
    from: Option<u64>,
    /// Every record (its hash), not only the actions: to recompute the chain.
    all: Option<bool>,
    /// Lines per page, 1 to 10,000 (default 1,000).
    limit: Option<usize>,
}

/// The operator, treasury and admin actions with their place in a hash chain over every
/// journal record, so an auditor can verify nothing was removed.
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditQuery), responses((status = 200, body = AuditView)))]
async fn audit(
    State(api): State<Api>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditView>, Problem> {
    caller.require(&[Role::Admin])?;
    let limit = query.limit.unwrap_or(1_000);
    if !(1..=10_000).contains(&limit) {
        return Err(Problem::bad_request("invalid_limit", "limit is 1 to 10000"));
    }
    let (from, all) = (query.from.unwrap_or(1).max(1), query.all.unwrap_or(false));
    let handle = api.handle.clone();
    let page =
        tokio::task::spawn_blocking(move || handle.audit(from, all, limit)).await.map_err(Problem::internal)??;
    Ok(Json(AuditView {
        lines: page
            .lines
            .iter()
            .map(|line| AuditLineView {
                seq: line.seq,
                payload_hash: hex::encode(line.payload_hash),
                chain: hex::encode(line.chain),
                action: line.action.as_ref().and_then(|event| serde_json::to_value(event).ok()),
            })
            .collect(),
        next: page.next,
        head: ChainHead { seq: page.tip, chain: hex::encode(page.head) },
    }))
}

fn key_view(hash: &[u8; 32], key: &ApiKey) -> KeyView {
    KeyView {
        id: auth::key_id(hash),
        role: key.role.to_string(),
        merchant: key.merchant.map(|m| m.0),
        label: key.label.clone(),
        created_by: key.created_by.clone(),
        created_at: key.created_at.0,
        revoked_at: key.revoked_at.map(|t| t.0),
    }
}

/// Every API key (never a secret).
#[utoipa::path(get, path = "/v1/keys", tag = "admin", responses((status = 200, body = Vec<KeyView>)))]
async fn list_keys(State(api): State<Api>, caller: Caller) -> Result<Json<Vec<KeyView>>, Problem> {
    caller.require(&[Role::Admin])?;
    Ok(Json(api.handle.read(|m| m.access.keys.iter().map(|(h, k)| key_view(h, k)).collect())))
}

/// Creates a key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", tag = "admin", request_body = KeyIn,
    responses((status = 201, body = KeyCreated), (status = 422, body = ProblemBody)))]
async fn create_key(
    State(api): State<Api>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<KeyCreated>), Problem> {
    caller.require(&[Role::Admin])?;
    let input: KeyIn = json_body(body).await?;
    let role = Role::parse(&input.role).ok_or_else(|| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_role", "role is merchant, treasury, operator or admin")
    })?;
    let new = auth::generate().map_err(Problem::internal)?;
    let merchant = input.merchant.map(MerchantId);
    api.handle.create_key(new.hash, role, merchant, input.label, caller.who()).await??;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            id: auth::key_id(&new.hash),
            role: role.to_string(),
            merchant: input.merchant,
            secret: new.secret,
        }),
    ))
}

/// Revokes a key at once: its next request is a 401.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "admin", params(("id" = String, Path)), request_body = Because,
    responses((status = 204), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn revoke_key(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, Problem> {
    caller.require(&[Role::Admin])?;
    let input: Because = json_body(body).await?;
    let hash = api
        .handle
        .read(|m| m.access.keys.keys().find(|h| auth::key_id(h) == id).copied())
        .ok_or_else(|| Problem::not_found("key"))?;
    api.handle.revoke_key(hash, caller.who(), reason(&input.reason)?).await?.map_err(|e| match e {
        engine::EngineError::Refused(r) => Problem::new(StatusCode::CONFLICT, "already_revoked", r),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}
