//! Guards over HTTP. Treasury sets a merchant's guards (`PUT /v1/merchants/{merchant}/guards`)
//! and approves, releases or rejects the payouts they hold (`POST /v1/payments/{id}/approve`,
//! `/release`, `/reject`); staff and the merchant itself read them. The engine checks the role
//! again: a merchant or operator key never releases a guard.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use engine::service::GuardAction;
use model::guard::{AllowMode, AssetGuard, address_key_of_text};
use model::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Api;
use crate::auth::Caller;
use crate::batch::clip;
use crate::merchant::{json_body, json_body_up_to, view};
use crate::ops::reason;
use crate::problem::{Problem, ProblemBody};
use crate::wire::{PaymentView, parse_id};

pub(crate) fn routes(router: OpenApiRouter<Api>) -> OpenApiRouter<Api> {
    router
        .routes(routes!(get_guards, set_guards))
        .routes(routes!(approve))
        .routes(routes!(release))
        .routes(routes!(reject))
}

/// A merchant's guards on the wire (amounts as decimal strings of the asset).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardsWire {
    /// off, only (any other destination is refused at intake) or or_hold (held for treasury).
    #[serde(default)]
    pub allow_mode: String,
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// Destinations never to pay (contracts that cannot receive, for instance): held.
    #[serde(default)]
    pub blocked: Vec<String>,
    #[serde(default)]
    pub assets: Vec<AssetGuardWire>,
    /// How long a large payout waits after intake.
    #[serde(default)]
    pub large_delay_ms: u64,
    /// Approvals by distinct treasury keys a large payout needs (0 to 2).
    #[serde(default)]
    pub large_approvals: u8,
    /// Hold destinations that look like one paid before (same first and last characters).
    #[serde(default)]
    pub poisoning: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetGuardWire {
    pub asset: String,
    /// A first payout to a new destination above this sends `test_amount` first.
    pub test_above: Option<String>,
    pub test_amount: Option<String>,
    /// Above this a payout waits for the time lock and the approvals.
    pub large_above: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardsIn {
    /// The guards; null removes them.
    pub guards: Option<GuardsWire>,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GuardsOut {
    pub merchant: u64,
    /// Null: no guards beyond the ones every payout gets (burn addresses, precompiles).
    pub guards: Option<GuardsWire>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardDecisionIn {
    pub reason: String,
}

fn invalid(field: impl std::fmt::Display, message: impl std::fmt::Display) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_guards", format!("{field}: {message}"))
}

fn to_policy(wire: GuardsWire, assets: &[Asset]) -> Result<GuardPolicy, Problem> {
    let allow_mode = match wire.allow_mode.as_str() {
        "" | "off" => AllowMode::Off,
        "only" => AllowMode::Only,
        "or_hold" => AllowMode::OrHold,
        other => return Err(invalid("allow_mode", format!("{:?} is not off, only or or_hold", clip(other)))),
    };
    let list = |field: &str, entries: Vec<String>| -> Result<Vec<String>, Problem> {
        if entries.len() > model::guard::LIST_MAX {
            return Err(invalid(field, format!("at most {} addresses", model::guard::LIST_MAX)));
        }
        entries
            .iter()
            .enumerate()
            .map(|(i, text)| {
                address_key_of_text(text.trim())
                    .ok_or_else(|| invalid(format!("{field}[{i}]"), format!("{:?} is not an address", clip(text))))
            })
            .collect()
    };
    let mut guards = Vec::new();
    for (i, a) in wire.assets.into_iter().enumerate() {
        let asset = assets.iter().find(|x| x.symbol() == a.asset).copied().ok_or_else(|| {
            invalid(format!("assets[{i}].asset"), format!("no asset {:?} is carried here", clip(&a.asset)))
        })?;
        let amount = |field: &str, text: Option<String>| -> Result<Option<Amount>, Problem> {
            text.map(|t| {
                asset.parse_amount(&t).map_err(|e| invalid(format!("assets[{i}].{field}"), clip(&e.to_string())))
            })
            .transpose()
        };
        guards.push(AssetGuard {
            asset,
            test_above: amount("test_above", a.test_above)?,
            test_amount: amount("test_amount", a.test_amount)?.unwrap_or(Amount::ZERO),
            large_above: amount("large_above", a.large_above)?,
        });
    }
    let policy = GuardPolicy {
        allow_mode,
        allowlist: list("allowlist", wire.allowlist)?,
        blocked: list("blocked", wire.blocked)?,
        assets: guards,
        large_delay_ms: wire.large_delay_ms,
        large_approvals: wire.large_approvals,
        poisoning: wire.poisoning,
    };
    policy.validate().map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_guards", e.to_string()))?;
    Ok(policy)
}

fn to_wire(policy: &GuardPolicy) -> GuardsWire {
    let amount = |asset: Asset, a: Option<Amount>| a.map(|a| asset.format_amount(a));
    GuardsWire {
        allow_mode: match policy.allow_mode {
            AllowMode::Off => "off",
            AllowMode::Only => "only",
            AllowMode::OrHold => "or_hold",
        }
        .to_owned(),
        allowlist: policy.allowlist.clone(),
        blocked: policy.blocked.clone(),
        assets: policy
            .assets
            .iter()
            .map(|g| AssetGuardWire {
                asset: g.asset.symbol().to_owned(),
                test_above: amount(g.asset, g.test_above),
                test_amount: g.test_above.map(|_| g.asset.format_amount(g.test_amount)),
                large_above: amount(g.asset, g.large_above),
            })
            .collect(),
        large_delay_ms: policy.large_delay_ms,
        large_approvals: policy.large_approvals,
        poisoning: policy.poisoning,
    }
}

/// A merchant's guards (staff, or the merchant itself).
#[utoipa::path(get, path = "/v1/merchants/{merchant}/guards", tag = "treasury", params(("merchant" = u64, Path)),
    responses((status = 200, body = GuardsOut), (status = 404, body = ProblemBody)))]
async fn get_guards(
    State(api): State<Api>,
    caller: Caller,
    Path(merchant): Path<u64>,
) -> Result<Json<GuardsOut>, Problem> {
    if !caller.sees(MerchantId(merchant)) {
        return Err(Problem::not_found("merchant"));
    }
    let guards = api.handle.read(|m| m.guards.policies.get(&MerchantId(merchant)).map(to_wire));
    Ok(Json(GuardsOut { merchant, guards }))
}

/// Sets (or, with `guards: null`, removes) a merchant's guards. Payouts past intake are judged
/// by them again just before signing.
#[utoipa::path(put, path = "/v1/merchants/{merchant}/guards", tag = "treasury", params(("merchant" = u64, Path)),
    request_body = GuardsIn,
    responses((status = 200, body = GuardsOut), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn set_guards(
    State(api): State<Api>,
    caller: Caller,
    Path(merchant): Path<u64>,
    body: Body,
) -> Result<Json<GuardsOut>, Problem> {
    caller.require(&[Role::Treasury])?;
    // An allowlist of ten thousand addresses is about 450 KB.
    let input: GuardsIn = json_body_up_to(body, 1 << 20).await?;
    let reason = reason(&input.reason)?;
    let policy = input.guards.map(|g| to_policy(g, &api.config.assets)).transpose()?;
    let guards = policy.as_ref().map(to_wire);
    let action = GuardAction::Set { merchant: MerchantId(merchant), policy };
    api.handle.guard(action, caller.who(), caller.role, reason).await??;
    Ok(Json(GuardsOut { merchant, guards }))
}

async fn decide(
    api: &Api,
    caller: &Caller,
    id: &str,
    body: Body,
    action: fn(PaymentId) -> GuardAction,
) -> Result<Json<PaymentView>, Problem> {
    caller.require(&[Role::Treasury])?;
    let id = PaymentId(parse_id(id).ok_or_else(|| Problem::not_found("payment"))?);
    let input: GuardDecisionIn = json_body(body).await?;
    let reason = reason(&input.reason)?;
    api.handle.guard(action(id), caller.who(), caller.role, reason).await??;
    let record = api.handle.payment(id)?.ok_or_else(|| Problem::not_found("payment"))?;
    Ok(Json(view(api, &record)?))
}

/// Approves a large payout held by guards (each treasury key once; the time lock still holds).
#[utoipa::path(post, path = "/v1/payments/{id}/approve", tag = "treasury", params(("id" = String, Path)),
    request_body = GuardDecisionIn,
    responses((status = 200, body = PaymentView), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn approve(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<PaymentView>, Problem> {
    decide(&api, &caller, &id, body, |payment| GuardAction::Approve { payment }).await
}

/// Releases the reasons of a guard hold that need a person (allowlist, look-alike, unpayable,
/// new destination); a time lock, approvals or a test payout still hold it until done.
#[utoipa::path(post, path = "/v1/payments/{id}/release", tag = "treasury", params(("id" = String, Path)),
    request_body = GuardDecisionIn,
    responses((status = 200, body = PaymentView), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn release(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<PaymentView>, Problem> {
    decide(&api, &caller, &id, body, |payment| GuardAction::Release { payment }).await
}

/// Rejects a payout held by guards: it fails and the merchant is told.
#[utoipa::path(post, path = "/v1/payments/{id}/reject", tag = "treasury", params(("id" = String, Path)),
    request_body = GuardDecisionIn,
    responses((status = 200, body = PaymentView), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn reject(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<PaymentView>, Problem> {
    decide(&api, &caller, &id, body, |payment| GuardAction::Reject { payment }).await
}
