//! The merchant API: submit a batch (JSON or CSV, idempotent), read batches and payments, list
//! them with cursors, cancel a payment still queued, and the merchant's webhook endpoint and
//! deliveries. A merchant key sees only its own merchant's things: another merchant's id is a
//! 404, exactly like an id that does not exist.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::{Intake, IntakeError};
use model::*;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::batch::{self, clip};
use crate::problem::{Problem, ProblemBody, RowProblem};
use crate::wire::{self, *};
use crate::{Api, webhooks};

pub(crate) fn routes(router: OpenApiRouter<Api>) -> OpenApiRouter<Api> {
    router
        .routes(routes!(submit))
        .routes(routes!(get_batch))
        .routes(routes!(list_payments))
        .routes(routes!(get_payment))
        .routes(routes!(cancel))
        .routes(routes!(get_webhook, set_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(resend_delivery))
}

const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Reads a body up to `limit` bytes; more is a 413.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {limit} bytes; split the batch"),
        )
    })
}

/// Reads a small JSON body into `T`, naming the field that is wrong.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Problem> {
    json_body_up_to(body, 64 << 10).await
}

/// `json_body` for a body up to `limit` bytes.
pub(crate) async fn json_body_up_to<T: serde::de::DeserializeOwned>(body: Body, limit: usize) -> Result<T, Problem> {
    let bytes = read_body(body, limit).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        Problem::bad_request(
            "malformed_json",
            format!("the body is not valid here (at {path}): {}", clip(&error.into_inner().to_string())),
        )
    })
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let key = headers.get("idempotency-key").ok_or_else(|| {
        Problem::bad_request(
            "missing_idempotency_key",
            "send an Idempotency-Key header (1 to 255 visible characters) so a retry cannot create a second batch",
        )
    })?;
    let key = key
        .to_str()
        .map_err(|_| Problem::bad_request("invalid_idempotency_key", "the Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::bad_request(
            "invalid_idempotency_key",
            "the Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// Submits a batch of payouts, validated whole and accepted whole.
#[utoipa::path(post, path = "/v1/batches", tag = "merchant",
    request_body(content = batch::BatchIn, description = "JSON (application/json) or CSV (text/csv) with the columns reference, amount, asset, destination, networks, class[, deadline_ms]"),
    params(("Idempotency-Key" = String, Header, description = "the same key with the same body replays the answer; with another body, 409")),
    responses((status = 202, body = BatchAccepted), (status = 400, body = ProblemBody), (status = 409, body = ProblemBody),
        (status = 413, body = ProblemBody), (status = 415, body = ProblemBody), (status = 422, body = ProblemBody), (status = 429, body = ProblemBody), (status = 503, body = ProblemBody)))]
async fn submit(State(api): State<Api>, caller: Caller, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    caller.require(&[Role::Merchant])?;
    let merchant = caller.merchant()?;
    let key = idempotency_key(&headers)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let started = std::time::Instant::now();
    let bytes = read_body(body, api.config.body_bytes_max).await?;
    let rows = match media.as_str() {
        "application/json" => batch::parse_json(&bytes)?,
        "text/csv" => batch::parse_csv(&bytes)?,
        _ => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the batch as application/json or text/csv",
            ));
        }
    };
    if rows.is_empty() || rows.len() > api.config.rows_max {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_size",
            format!("a batch carries 1 to {} payments; this one has {}", api.config.rows_max, rows.len()),
        ));
    }
    let drafts = batch::drafts(rows, &api.config.assets)?;
    let references: Vec<String> = drafts.iter().map(|d| d.reference.clone()).collect();
    let outcome = api.handle.submit(merchant, key, drafts).await?;
    let (batch, payments, replayed) = match outcome {
        Ok(Intake::Accepted { batch, payments }) => (batch, payments, false),
        Ok(Intake::Duplicate { batch, payments }) => (batch, payments, true),
        Err(IntakeError::Invalid(rows)) => {
            let rows = rows
                .into_iter()
                .map(|r| RowProblem {
                    row: r.row,
                    field: r.field.to_owned(),
                    code: r.code.to_owned(),
                    message: clip_message(&r.message),
                })
                .collect();
            return Err(batch::rejected(rows));
        }
        Err(error @ IntakeError::BatchSize { .. }) => {
            return Err(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_size", error.to_string()));
        }
        Err(IntakeError::Conflict { batch }) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!(
                    "this Idempotency-Key was used for batch {} with a different body; use a new key for a new batch",
                    wire::hex_id(batch.0)
                ),
            ));
        }
        Err(IntakeError::Engine(error)) => return Err(error.into()),
    };
    api.metrics.intake_seconds.observe(started.elapsed().as_secs_f64());
    let answer = BatchAccepted {
        batch: hex_id(batch.0),
        count: payments.len(),
        replayed: false,
        payments: payments
            .iter()
            .zip(references)
            .map(|(id, reference)| AcceptedPayment { id: hex_id(id.0), reference })
            .collect(),
    };
    let mut response = (StatusCode::ACCEPTED, Json(answer)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The engine's row messages are its own, but a long field may be quoted in them.
fn clip_message(message: &str) -> String {
    if message.len() <= 300 {
        message.to_owned()
    } else {
        format!("{}…", message.chars().take(300).collect::<String>())
    }
}

fn parse(text: &str, what: &str) -> Result<u128, Problem> {
    wire::parse_id(text).ok_or_else(|| Problem::not_found(what))
}

/// A batch with its payments counted per state.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "merchant", params(("id" = String, Path)),
    responses((status = 200, body = BatchView), (status = 404, body = ProblemBody)))]
async fn get_batch(State(api): State<Api>, caller: Caller, Path(id): Path<String>) -> Result<Json<BatchView>, Problem> {
    let id = BatchId(parse(&id, "batch")?);
    let record =
        api.handle.batch(id)?.filter(|b| caller.sees(b.merchant)).ok_or_else(|| Problem::not_found("batch"))?;
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    for p in api.handle.payments(&record.payments)?.into_iter().flatten() {
        *states.entry(state_name(p.state)).or_default() += 1;
    }
    let finished = record.open == 0 || states.iter().all(|(s, _)| s == "settled" || s == "failed");
    Ok(Json(BatchView { id: hex_id(id.0), merchant: record.merchant.0, count: record.count, states, finished }))
}

pub(crate) fn view(api: &Api, record: &PaymentRecord) -> Result<PaymentView, Problem> {
    let settlement = match record.settlement {
        Some(id) => api.handle.settlement(id)?,
        None => None,
    };
    // What reconciliation last found wrong with its settlement, and why it went where it went:
    // both from the read model (the record is at hand, no second lookup).
    let (difference, routing, guard) = api.handle.read(|m| {
        let difference = record.settlement.and_then(|s| m.flagged.get(&s)).map(|d| format!("{d:?}"));
        let guard = m.guards.held.get(&record.payment.id).map(crate::wire::guard_view);
        (difference, m.routes.get(&record.payment.id).map(|r| r.to_string()), guard)
    });
    let mut view = payment_view(record, settlement.as_ref(), difference, routing);
    view.guard = guard;
    Ok(view)
}

/// A payment: its state, history, reason and settlement (with the transaction once signed).
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "merchant", params(("id" = String, Path)),
    responses((status = 200, body = PaymentView), (status = 404, body = ProblemBody)))]
async fn get_payment(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, Problem> {
    let id = PaymentId(parse(&id, "payment")?);
    let record = api
        .handle
        .payment(id)?
        .filter(|p| caller.sees(p.payment.merchant))
        .ok_or_else(|| Problem::not_found("payment"))?;
    Ok(Json(view(&api, &record)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this batch's payments.
    batch: Option<String>,
    /// Only payments in this state (queued, held, settled, failed, …).
    state: Option<String>,
    /// Only the payment(s) with this merchant reference.
    reference: Option<String>,
    /// For staff keys: the merchant whose payments to list by reference.
    merchant: Option<u64>,
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<usize>,
}

const STATES: [&str; 11] = [
    "accepted",
    "queued",
    "planned",
    "signed",
    "broadcast",
    "confirmed",
    "settled",
    "held",
    "failed",
    "rolled_back",
    "reissued",
];

/// Lists payments by batch, by state or by merchant reference, a page at a time.
#[utoipa::path(get, path = "/v1/payments", tag = "merchant", params(ListQuery),
    responses((status = 200, body = PaymentPage), (status = 400, body = ProblemBody), (status = 404, body = ProblemBody)))]
async fn list_payments(
    State(api): State<Api>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<PaymentPage>, Problem> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::bad_request("invalid_limit", "limit is 1 to 500"));
    }
    let cursor = match &query.cursor {
        Some(text) => Some(
            wire::parse_id(text)
                .ok_or_else(|| Problem::bad_request("invalid_cursor", "the cursor is not one this API gave"))?,
        ),
        None => None,
    };
    if let Some(state) = &query.state
        && !STATES.contains(&state.as_str())
    {
        return Err(Problem::bad_request(
            "invalid_state",
            format!("state {:?} is not one of {}", clip(state), STATES.join(", ")),
        ));
    }
    let state_ok = |record: &PaymentRecord| query.state.as_ref().is_none_or(|s| *s == state_name(record.state));
    let mut page = Vec::new();
    let next_cursor;
    if let Some(batch) = &query.batch {
        let id = BatchId(parse(batch, "batch")?);
        let record =
            api.handle.batch(id)?.filter(|b| caller.sees(b.merchant)).ok_or_else(|| Problem::not_found("batch"))?;
        let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let mut index = start;
        // Read a page's worth at a time (finished ones: one history read per batch).
        while index < record.payments.len() && page.len() < limit {
            let end = (index + limit - page.len()).min(record.payments.len());
            for p in api.handle.payments(&record.payments[index..end])?.into_iter().flatten() {
                if state_ok(&p) {
                    page.push(view(&api, &p)?);
                }
            }
            index = end;
        }
        next_cursor = (index < record.payments.len()).then(|| hex_id(index as u128));
    } else if let Some(reference) = &query.reference {
        let merchant = match caller.role {
            Role::Merchant => caller.merchant()?,
            _ => MerchantId(query.merchant.ok_or_else(|| {
                Problem::bad_request("missing_merchant", "a staff key lists by reference with merchant=<id>")
            })?),
        };
        let ids = api.handle.payments_by_reference(merchant, reference)?;
        for p in api.handle.payments(&ids)?.into_iter().flatten() {
            if state_ok(&p) {
                page.push(view(&api, &p)?);
            }
        }
        next_cursor = None;
    } else if let Some(state) = &query.state {
        let mine = |record: &PaymentRecord| caller.sees(record.payment.merchant) && state_ok(record);
        if state == "settled" || state == "failed" {
            // Finished payments live in the history store: a bounded scan per page.
            let (found, last) = api.handle.finished_payments(cursor.map(PaymentId), limit, 20_000, mine)?;
            for record in &found {
                page.push(view(&api, record)?);
            }
            next_cursor = last.map(|id| hex_id(id.0));
        } else {
            let mut open: Vec<PaymentRecord> = api.handle.read(|m| {
                m.payments.values().filter(|r| mine(r) && cursor.is_none_or(|c| r.payment.id.0 > c)).cloned().collect()
            });
            open.sort_by_key(|r| r.payment.id);
            let more = open.len() > limit;
            open.truncate(limit);
            for record in &open {
                page.push(view(&api, record)?);
            }
            next_cursor = if more { open.last().map(|r| hex_id(r.payment.id.0)) } else { None };
        }
    } else {
        return Err(Problem::bad_request(
            "missing_filter",
            "list payments by batch=<id>, state=<state> or reference=<reference>",
        ));
    }
    Ok(Json(PaymentPage { payments: page, next_cursor }))
}

/// Cancels a payment no rail has taken yet (queued): it fails, and the merchant is notified.
#[utoipa::path(post, path = "/v1/payments/{id}/cancel", tag = "merchant", params(("id" = String, Path)),
    responses((status = 200, body = PaymentView), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn cancel(State(api): State<Api>, caller: Caller, Path(id): Path<String>) -> Result<Json<PaymentView>, Problem> {
    caller.require(&[Role::Merchant])?;
    let merchant = caller.merchant()?;
    let id = PaymentId(parse(&id, "payment")?);
    api.handle.cancel(merchant, id, caller.who()).await??;
    let record = api.handle.payment(id)?.ok_or_else(|| Problem::not_found("payment"))?;
    Ok(Json(view(&api, &record)?))
}

/// The merchant's webhook endpoint and the key its deliveries are signed with.
#[utoipa::path(get, path = "/v1/webhook", tag = "merchant", responses((status = 200, body = WebhookView)))]
async fn get_webhook(State(api): State<Api>, caller: Caller) -> Result<Json<WebhookView>, Problem> {
    caller.require(&[Role::Merchant])?;
    let merchant = caller.merchant()?;
    let url = api.handle.read(|m| m.access.webhooks.get(&merchant).cloned());
    let signing_secret = webhooks::signing_secret(&api.config.webhook_key, merchant);
    Ok(Json(WebhookView { merchant: merchant.0, url, signing_secret }))
}

/// Sets (or with `url: null` removes) where the merchant's notices are sent.
#[utoipa::path(put, path = "/v1/webhook", tag = "merchant", request_body = WebhookIn,
    responses((status = 200, body = WebhookView), (status = 422, body = ProblemBody)))]
async fn set_webhook(State(api): State<Api>, caller: Caller, body: Body) -> Result<Json<WebhookView>, Problem> {
    caller.require(&[Role::Merchant])?;
    let merchant = caller.merchant()?;
    let input: WebhookIn = json_body(body).await?;
    if let Some(url) = &input.url {
        Access::check_url(url)
            .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_url", e.to_string()))?;
    }
    api.handle.set_webhook(merchant, input.url.clone(), caller.who()).await??;
    let signing_secret = webhooks::signing_secret(&api.config.webhook_key, merchant);
    Ok(Json(WebhookView { merchant: merchant.0, url: input.url, signing_secret }))
}

/// The merchant's webhook deliveries: pending, delivered (since the server started) and failed.
#[utoipa::path(get, path = "/v1/webhook/deliveries", tag = "merchant", responses((status = 200, body = Vec<DeliveryView>)))]
async fn list_deliveries(State(api): State<Api>, caller: Caller) -> Result<Json<Vec<DeliveryView>>, Problem> {
    caller.require(&[Role::Merchant])?;
    Ok(Json(api.deliveries.list(caller.merchant()?)))
}

/// Sends a delivery again now (a failed one, or one the receiver lost).
#[utoipa::path(post, path = "/v1/webhook/deliveries/{event}/resend", tag = "merchant", params(("event" = String, Path)),
    responses((status = 202, body = DeliveryView), (status = 404, body = ProblemBody)))]
async fn resend_delivery(
    State(api): State<Api>,
    caller: Caller,
    Path(event): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), Problem> {
    caller.require(&[Role::Merchant])?;
    let event = parse(&event, "delivery")?;
    let view = api.deliveries.resend(caller.merchant()?, event).ok_or_else(|| Problem::not_found("delivery"))?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
