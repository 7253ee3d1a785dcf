//! The staff APIs. Operators: rails (health, breaker, pause, resume, drain with a dry run that
//! lists exactly what a real drain moves), queue depths, held payments and their resolution,
//! reconciliation and its anomalies. Treasury: pools against min / target / max, funding.
//! (Admin: `admin.rs`.) Every change is journaled with the key that made it and the reason given.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use model::*;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Api;
use crate::auth::Caller;
use crate::batch::clip;
use crate::merchant::{idempotency_key, json_body, view};
use crate::problem::{Problem, ProblemBody};
use crate::wire::*;

pub(crate) fn routes(router: OpenApiRouter<Api>) -> OpenApiRouter<Api> {
    router
        .routes(routes!(list_rails))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(drain))
        .routes(routes!(queues))
        .routes(routes!(held))
        .routes(routes!(resolve))
        .routes(routes!(last_reconciliation, run_reconciliation))
        .routes(routes!(anomalies))
        .routes(routes!(incident_report))
        .routes(routes!(stats))
        .routes(routes!(list_pools))
        .routes(routes!(fund_pool))
        .routes(routes!(set_thresholds))
        .routes(routes!(classes))
        .routes(routes!(set_class))
        .routes(routes!(routing))
        .routes(routes!(set_rules))
}

const STAFF: [Role; 2] = [Role::Operator, Role::Treasury];

fn rail_name(text: &str) -> Result<RailId, Problem> {
    Name::new(text)
        .map_err(|_| Problem::new(StatusCode::NOT_FOUND, "unknown_rail", format!("no rail named {:?}", clip(text))))
}

pub(crate) fn reason(text: &str) -> Result<String, Problem> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 500 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
            "say why in `reason` (1 to 500 characters): it is journaled for the audit",
        ));
    }
    Ok(text.to_owned())
}

/// Rails with their health, breaker state and backlog.
#[utoipa::path(get, path = "/v1/rails", tag = "operator", responses((status = 200, body = Vec<RailView>)))]
async fn list_rails(State(api): State<Api>, caller: Caller) -> Result<Json<Vec<RailView>>, Problem> {
    caller.require(&STAFF)?;
    Ok(Json(api.handle.read(rail_views)))
}

pub(crate) fn rail_views(m: &engine::service::ReadModel) -> Vec<RailView> {
    m.rails
        .iter()
        .map(|r| RailView {
            rail: r.rail.to_string(),
            network: r.network.to_string(),
            paused: r.paused,
            breaker: match r.breaker {
                router::BreakerState::Closed => "closed",
                router::BreakerState::Open { .. } => "open",
                router::BreakerState::HalfOpen => "half_open",
            }
            .to_owned(),
            success_permille: r.success_permille,
            queued: r.queued,
        })
        .collect()
}

/// Stops new planning on a rail; what is in flight there stays watched.
#[utoipa::path(post, path = "/v1/rails/{rail}/pause", tag = "operator", params(("rail" = String, Path)), request_body = Because,
    responses((status = 204), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn pause(
    State(api): State<Api>,
    caller: Caller,
    Path(rail): Path<String>,
    body: Body,
) -> Result<StatusCode, Problem> {
    set_paused(&api, &caller, &rail, body, true).await
}

#[utoipa::path(post, path = "/v1/rails/{rail}/resume", tag = "operator", params(("rail" = String, Path)), request_body = Because,
    responses((status = 204), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn resume(
    State(api): State<Api>,
    caller: Caller,
    Path(rail): Path<String>,
    body: Body,
) -> Result<StatusCode, Problem> {
    set_paused(&api, &caller, &rail, body, false).await
}

/// Pause or resume: the same checks, one journaled event with who and why.
async fn set_paused(api: &Api, caller: &Caller, rail: &str, body: Body, pause: bool) -> Result<StatusCode, Problem> {
    caller.require(&[Role::Operator])?;
    let input: Because = json_body(body).await?;
    let (rail, who, why) = (rail_name(rail)?, caller.who(), reason(&input.reason)?);
    if pause {
        api.handle.pause(rail, who, why).await??
    } else {
        api.handle.resume(rail, who, why).await??
    };
    Ok(StatusCode::NO_CONTENT)
}

/// Moves a rail's queued payments to the rails the router picks without it. `dry_run` reports
/// exactly the same moves and changes nothing. Payments in flight are never moved.
#[utoipa::path(post, path = "/v1/rails/{rail}/drain", tag = "operator", params(("rail" = String, Path)), request_body = DrainIn,
    responses((status = 200, body = DrainView), (status = 404, body = ProblemBody)))]
async fn drain(
    State(api): State<Api>,
    caller: Caller,
    Path(rail): Path<String>,
    body: Body,
) -> Result<Json<DrainView>, Problem> {
    caller.require(&[Role::Operator])?;
    let input: DrainIn = json_body(body).await?;
    let why =
        if input.dry_run && input.reason.trim().is_empty() { "dry run".to_owned() } else { reason(&input.reason)? };
    let report = api.handle.drain(rail_name(&rail)?, input.dry_run, caller.who(), why).await??;
    Ok(Json(DrainView {
        dry_run: input.dry_run,
        moves: report
            .moves
            .iter()
            .map(|m| MoveView { payment: hex_id(m.payment.0), from: m.from.to_string(), to: m.to.to_string() })
            .collect(),
        unmovable: report.unmovable.iter().map(|p| hex_id(p.0)).collect(),
    }))
}

fn depth_map<K: ToString>(
    depths: &std::collections::BTreeMap<K, queue::Depth>,
) -> std::collections::BTreeMap<String, DepthView> {
    depths
        .iter()
        .map(|(k, d)| (k.to_string(), DepthView { queued: d.queued, oldest_age_ms: d.oldest_age_ms }))
        .collect()
}

/// Queue depth and oldest age per rail, class and merchant.
#[utoipa::path(get, path = "/v1/queues", tag = "operator", responses((status = 200, body = QueuesView)))]
async fn queues(State(api): State<Api>, caller: Caller) -> Result<Json<QueuesView>, Problem> {
    caller.require(&STAFF)?;
    Ok(Json(api.handle.read(queues_view)))
}

pub(crate) fn queues_view(m: &engine::service::ReadModel) -> QueuesView {
    QueuesView {
        rails: depth_map(&m.depths.rails),
        classes: depth_map(&m.depths.classes),
        merchants: depth_map(&m.depths.merchants),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    cursor: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<usize>,
}

/// Held payments, with why each is held, oldest id first.
#[utoipa::path(get, path = "/v1/held", tag = "operator", params(PageQuery), responses((status = 200, body = PaymentPage)))]
async fn held(
    State(api): State<Api>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<Json<PaymentPage>, Problem> {
    caller.require(&STAFF)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    let after = query.cursor.as_deref().and_then(parse_id).unwrap_or(0);
    let mut records: Vec<PaymentRecord> = api.handle.read(|m| {
        m.payments
            .values()
            .filter(|r| matches!(r.state, PaymentState::Held { .. }) && r.payment.id.0 > after)
            .cloned()
            .collect()
    });
    records.sort_by_key(|r| r.payment.id);
    let more = records.len() > limit;
    records.truncate(limit);
    let payments = records.iter().map(|r| view(&api, r)).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if more { records.last().map(|r| hex_id(r.payment.id.0)) } else { None };
    Ok(Json(PaymentPage { payments, next_cursor }))
}

/// Resolves a held payment: retry or fail one not in flight, resume one in flight.
#[utoipa::path(post, path = "/v1/payments/{id}/resolve", tag = "operator", params(("id" = String, Path)), request_body = ResolveIn,
    responses((status = 200, body = PaymentView), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn resolve(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<PaymentView>, Problem> {
    caller.require(&[Role::Operator])?;
    let id = PaymentId(parse_id(&id).ok_or_else(|| Problem::not_found("payment"))?);
    let input: ResolveIn = json_body(body).await?;
    let resolution = match input.resolution.as_str() {
        "retry" => Resolution::Retry,
        "fail" => Resolution::Fail,
        "resume" => Resolution::Resume,
        other => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_resolution",
                format!("resolution {:?} is not retry, fail or resume", clip(other)),
            ));
        }
    };
    api.handle.resolve(id, resolution, caller.who(), reason(&input.reason)?).await??;
    let record = api.handle.payment(id)?.ok_or_else(|| Problem::not_found("payment"))?;
    Ok(Json(view(&api, &record)?))
}

fn reconciliation_view(r: &engine::Reconciliation) -> ReconciliationView {
    ReconciliationView {
        settlements_checked: r.settlements_checked,
        clean: r.clean.len(),
        destinations_checked: r.destinations_checked,
        differences: r.differences.iter().map(|d| format!("{d:?}")).collect(),
    }
}

/// The latest reconciliation with the chains, and what it found.
#[utoipa::path(get, path = "/v1/reconciliation", tag = "operator",
    responses((status = 200, body = ReconciliationView), (status = 404, body = ProblemBody)))]
async fn last_reconciliation(State(api): State<Api>, caller: Caller) -> Result<Json<ReconciliationView>, Problem> {
    caller.require(&STAFF)?;
    let last = api.handle.read(|m| m.last_reconciliation.clone());
    last.map(|r| Json(reconciliation_view(&r))).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no reconciliation has run since the server started; POST to run one",
        )
    })
}

/// Runs a reconciliation now and returns it.
#[utoipa::path(post, path = "/v1/reconciliation", tag = "operator", responses((status = 200, body = ReconciliationView)))]
async fn run_reconciliation(State(api): State<Api>, caller: Caller) -> Result<Json<ReconciliationView>, Problem> {
    caller.require(&[Role::Operator])?;
    let report = api.handle.reconcile().await??;
    Ok(Json(reconciliation_view(&report)))
}

/// Settlements whose last reconciliation found a difference (a final settlement off its chain,
/// a dead one paid), and the settlements whose finality was lost and is being restored.
#[utoipa::path(get, path = "/v1/anomalies", tag = "operator", responses((status = 200, body = Vec<AnomalyView>)))]
async fn anomalies(State(api): State<Api>, caller: Caller) -> Result<Json<Vec<AnomalyView>>, Problem> {
    caller.require(&STAFF)?;
    Ok(Json(api.handle.read(|m| {
        m.flagged
            .iter()
            .map(|(settlement, difference)| AnomalyView {
                settlement: hex_id(settlement.0),
                difference: format!("{difference:?}"),
            })
            .collect()
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    /// The window's start, Unix milliseconds.
    since: u64,
    /// `json` (default) or `markdown`.
    format: Option<String>,
}

/// The incident report from `since` to now: affected rails with the recovery estimate and its
/// inputs, payments delayed per merchant and class, drains, what is in flight and its time to
/// finality, holds, anomalies, and the actions taken with who and why.
#[utoipa::path(get, path = "/v1/reports/incident", tag = "operator", params(ReportQuery),
    responses((status = 200, description = "the report as JSON, or Markdown with format=markdown"), (status = 400, body = ProblemBody)))]
async fn incident_report(
    State(api): State<Api>,
    caller: Caller,
    Query(query): Query<ReportQuery>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    caller.require(&STAFF)?;
    let markdown = match query.format.as_deref() {
        None | Some("json") => false,
        Some("markdown") => true,
        Some(other) => {
            return Err(Problem::bad_request(
                "invalid_format",
                format!("format {:?} is json or markdown", clip(other)),
            ));
        }
    };
    let handle = api.handle.clone();
    let now = handle.read(|m| m.as_of);
    let since = Timestamp(query.since);
    let report = tokio::task::spawn_blocking(move || engine::report::incident(&handle, since, now))
        .await
        .map_err(Problem::internal)??;
    Ok(if markdown {
        ([(axum::http::header::CONTENT_TYPE, "text/markdown; charset=utf-8")], report.markdown()).into_response()
    } else {
        Json(report).into_response()
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    /// The window's start, Unix milliseconds (default: an hour ago).
    since: Option<u64>,
}

/// Statistics over a window: settled count and amount per rail, asset and class; fees per
/// payout per rail; time from intake to final (p50, p99); rollback, reissue and hold rates;
/// the exposure still unconfirmed per rail.
#[utoipa::path(get, path = "/v1/stats", tag = "operator", params(StatsQuery),
    responses((status = 200, description = "the statistics of the window")))]
async fn stats(
    State(api): State<Api>,
    caller: Caller,
    Query(query): Query<StatsQuery>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    caller.require(&STAFF)?;
    let handle = api.handle.clone();
    let now = handle.read(|m| m.as_of);
    let since = Timestamp(query.since.unwrap_or(now.0.saturating_sub(3_600_000)));
    let stats = tokio::task::spawn_blocking(move || engine::stats::stats(&handle, since, now))
        .await
        .map_err(Problem::internal)??;
    Ok(Json(stats).into_response())
}

/// Pools: what each can still reserve, what is reserved, against min / target / max.
#[utoipa::path(get, path = "/v1/pools", tag = "treasury", responses((status = 200, body = Vec<PoolView>)))]
async fn list_pools(State(api): State<Api>, caller: Caller) -> Result<Json<Vec<PoolView>>, Problem> {
    caller.require(&STAFF)?;
    Ok(Json(api.handle.read(pool_views)))
}

pub(crate) fn pool_views(m: &engine::service::ReadModel) -> Vec<PoolView> {
    m.pools
        .iter()
        .map(|p| {
            let f = |a: Amount| p.asset.format_amount(a);
            let status = if p.available < p.min {
                "below_min"
            } else if p.available > p.max && !p.max.is_zero() {
                "above_max"
            } else {
                "ok"
            };
            PoolView {
                rail: p.rail.to_string(),
                asset: p.asset.symbol().to_owned(),
                available: f(p.available),
                reserved: f(p.reserved),
                min: f(p.min),
                target: f(p.target),
                max: f(p.max),
                status: status.to_owned(),
            }
        })
        .collect()
}

/// Records a deposit into a rail's pool. The Idempotency-Key names the transfer: the same key
/// and amount again changes nothing; the same key with another amount is refused.
#[utoipa::path(post, path = "/v1/pools/{rail}/{asset}/fund", tag = "treasury", params(("rail" = String, Path), ("asset" = String, Path),
    ("Idempotency-Key" = String, Header)), request_body = FundIn,
    responses((status = 204), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn fund_pool(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    Path((rail, asset)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, Problem> {
    caller.require(&[Role::Treasury])?;
    let key = idempotency_key(&headers)?;
    let rail = rail_name(&rail)?;
    let asset = api.config.assets.iter().find(|a| a.symbol() == asset).copied().ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "unknown_asset", format!("no asset {:?} is carried here", clip(&asset)))
    })?;
    let input: FundIn = json_body(body).await?;
    let amount = asset
        .parse_amount(&input.amount)
        .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount", clip(&e.to_string())))?;
    let transfer = u128::from_le_bytes(
        blake3::hash(format!("fund:{key}").as_bytes()).as_bytes()[..16].try_into().expect("16 bytes"),
    );
    api.handle.fund_pool(rail, asset, amount, transfer).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a pool's min / target / max. Reservations made stay (they are facts); the new
/// minimum applies to what is decided from now on. Journaled with who and why.
#[utoipa::path(put, path = "/v1/pools/{rail}/{asset}", tag = "treasury", params(("rail" = String, Path), ("asset" = String, Path)),
    request_body = ThresholdsIn, responses((status = 204), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn set_thresholds(
    State(api): State<Api>,
    caller: Caller,
    Path((rail, asset)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, Problem> {
    caller.require(&[Role::Treasury])?;
    let rail = rail_name(&rail)?;
    let asset = api.config.assets.iter().find(|a| a.symbol() == asset).copied().ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "unknown_asset", format!("no asset {:?} is carried here", clip(&asset)))
    })?;
    let input: ThresholdsIn = json_body(body).await?;
    let amount = |field: &str, text: &str| {
        asset.parse_amount(text).map_err(|e| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_amount",
                format!("{field}: {}", clip(&e.to_string())),
            )
        })
    };
    let config = router::PoolConfig {
        rail,
        asset,
        min: amount("min", &input.min)?,
        target: amount("target", &input.target)?,
        max: amount("max", &input.max)?,
    };
    api.handle.set_pool_thresholds(config, caller.who(), reason(&input.reason)?).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// The priority classes in force.
#[utoipa::path(get, path = "/v1/classes", tag = "treasury", responses((status = 200, body = Vec<ClassView>)))]
async fn classes(State(api): State<Api>, caller: Caller) -> Result<Json<Vec<ClassView>>, Problem> {
    caller.require(&STAFF)?;
    let policy = api.handle.read(|m| std::sync::Arc::clone(&m.policy));
    Ok(Json(
        policy
            .classes
            .iter()
            .map(|c| ClassView {
                name: c.name.to_string(),
                weight: c.weight,
                deadline_default_ms: c.deadline_default_ms,
                age_max_ms: c.age_max_ms,
                urgent: policy.urgent.contains(&c.name),
            })
            .collect(),
    ))
}

/// Changes a class's weight, default deadline, age limit and urgency (journaled). Refused when
/// payments of the class already waited longer than the new age limit.
#[utoipa::path(put, path = "/v1/classes/{name}", tag = "treasury", params(("name" = String, Path)), request_body = ClassIn,
    responses((status = 204), (status = 422, body = ProblemBody)))]
async fn set_class(
    State(api): State<Api>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<StatusCode, Problem> {
    caller.require(&[Role::Treasury])?;
    let class = Name::new(&name)
        .map_err(|_| Problem::new(StatusCode::NOT_FOUND, "unknown_class", format!("no class {:?}", clip(&name))))?;
    let input: ClassIn = json_body(body).await?;
    let setting = engine::policy::ClassSetting {
        weight: input.weight,
        deadline_default_ms: input.deadline_default_ms,
        age_max_ms: input.age_max_ms,
        urgent: input.urgent,
    };
    api.handle.set_class(class, setting, caller.who(), reason(&input.reason)?).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// How the router weighs rails and the rules in force.
#[utoipa::path(get, path = "/v1/routing", tag = "treasury", responses((status = 200, body = RoutingView)))]
async fn routing(State(api): State<Api>, caller: Caller) -> Result<Json<RoutingView>, Problem> {
    caller.require(&STAFF)?;
    let policy = api.handle.read(|m| std::sync::Arc::clone(&m.policy));
    let w = policy.weights.unwrap_or_default();
    Ok(Json(RoutingView {
        weights: [
            ("fee", w.fee),
            ("time", w.time),
            ("failure", w.failure),
            ("deadline_miss", w.deadline_miss),
            ("preference", w.preference),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        rules: policy.rules.iter().map(RuleWire::from_rule).collect(),
    }))
}

/// Replaces the routing rules (journaled). Refused when a queued payment would have no rail
/// under them, or a rule names an unknown rail or asset.
#[utoipa::path(put, path = "/v1/routing/rules", tag = "treasury", request_body = RulesIn,
    responses((status = 204), (status = 422, body = ProblemBody)))]
async fn set_rules(State(api): State<Api>, caller: Caller, body: Body) -> Result<StatusCode, Problem> {
    caller.require(&[Role::Treasury])?;
    let input: RulesIn = json_body(body).await?;
    let invalid = |index: usize, what: String| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rule", format!("rules[{index}]: {what}"))
    };
    let mut rules = Vec::with_capacity(input.rules.len());
    for (index, rule) in input.rules.iter().enumerate() {
        let rails = |names: &[String]| {
            names
                .iter()
                .map(|n| Name::new(n).map_err(|_| invalid(index, format!("{:?} is not a rail name", clip(n)))))
                .collect::<Result<Vec<_>, _>>()
        };
        let asset = |symbol: &str| {
            api.config
                .assets
                .iter()
                .find(|a| a.symbol() == symbol)
                .copied()
                .ok_or_else(|| invalid(index, format!("asset {:?} is not carried here", clip(symbol))))
        };
        rules.push(match rule {
            RuleWire::MerchantOnly { merchant, rails: names } => {
                Rule::MerchantOnly { merchant: MerchantId(*merchant), rails: rails(names)? }
            }
            RuleWire::AmountAtLeastOnly { asset: symbol, amount, rails: names } => {
                let asset = asset(symbol)?;
                let amount = asset.parse_amount(amount).map_err(|e| invalid(index, clip(&e.to_string())))?;
                Rule::AmountAtLeastOnly { asset, amount, rails: rails(names)? }
            }
            RuleWire::AssetPrefers { asset: symbol, rails: names } => {
                Rule::AssetPrefers { asset: asset(symbol)?, rails: rails(names)? }
            }
        });
    }
    api.handle.set_rules(rules, caller.who(), reason(&input.reason)?).await??;
    Ok(StatusCode::NO_CONTENT)
}
