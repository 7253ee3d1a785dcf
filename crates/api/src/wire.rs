//! The wire format: what the API sends and takes, converted from the domain types at the edge
//! (the domain types are not the wire format). Ids are lowercase hex, amounts decimal strings
//! in the asset's units, times Unix milliseconds, transaction ids `0x`-prefixed hex.

use std::collections::BTreeMap;

use model::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn hex_id(id: u128) -> String {
    format!("{id:x}")
}

pub fn parse_id(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 32 {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

pub fn txid(bytes: &[u8; 32]) -> String {
    format!("0x{}", hex::encode(bytes))
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AcceptedPayment {
    pub id: String,
    pub reference: String,
}

/// The answer to an accepted batch (also replayed for the same key and body).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    pub batch: String,
    pub count: usize,
    /// True when this answers a retry of a batch accepted before.
    pub replayed: bool,
    pub payments: Vec<AcceptedPayment>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchView {
    pub id: String,
    pub merchant: u64,
    pub count: u32,
    /// Payments per state: accepted, queued, planned, signed, broadcast, confirmed, settled,
    /// held, failed, rolled_back, reissued.
    pub states: BTreeMap<String, u64>,
    /// Whether every payment is settled or failed.
    pub finished: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    pub state: String,
    pub at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SettlementView {
    pub id: String,
    pub rail: String,
    /// The network by name (`base`, `ethereum`, `evm:<chain id>`, `bitcoin`), for an explorer.
    pub network: String,
    pub chain_id: Option<u64>,
    pub state: String,
    /// The transaction that carries it (the latest version signed), once signed.
    pub txid: Option<String>,
    pub confirmations: Option<u32>,
    pub payouts: usize,
    /// The fee of the latest version, with its latest child's (child pays for parent), in
    /// the rail's fee asset (Bitcoin: exactly what it pays; EVM: the most it may pay), and
    /// that per payout.
    pub fee: Option<String>,
    pub fee_per_payout: Option<String>,
    /// Bitcoin: the latest version's size in virtual bytes.
    pub vbytes: Option<u64>,
    /// Bitcoin: the children signed to pull it into a block (each pays for it; at most one
    /// is mined), oldest first.
    pub accelerated_by: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentView {
    pub id: String,
    pub batch: String,
    pub merchant: u64,
    pub reference: String,
    pub amount: String,
    pub asset: String,
    pub destination: String,
    pub networks: Vec<String>,
    pub class: String,
    pub state: String,
    /// 1 for the first attempt; each reissue after a provably dead attempt adds one.
    pub attempt: u32,
    /// Why it was last held, failed or resolved.
    pub reason: Option<String>,
    /// While open: why the router sent it where it went (or why it waits), rail by rail.
    pub routing: Option<String>,
    pub history: Vec<StepView>,
    pub settlement: Option<SettlementView>,
    /// What reconciliation found wrong with its settlement, if anything.
    pub difference: Option<String>,
    /// While guards hold it: every reason, and what releases it.
    pub guard: Option<GuardView>,
    /// What railyard noted on it (a test payout split off it, and its amount).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GuardReasonView {
    /// not_allowlisted, unpayable_destination, look_alike_destination, new_destination,
    /// large_payout or awaiting_test_payout.
    pub code: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GuardView {
    pub reasons: Vec<GuardReasonView>,
    /// Who or what releases it, in words.
    pub release_by: String,
    /// Unix ms: not planned before (the time lock).
    pub release_at: Option<u64>,
    pub approvals_needed: u8,
    /// The treasury keys that approved it.
    pub approvals: Vec<String>,
    /// The test payout it waits for.
    pub test_payout: Option<String>,
}

pub fn guard_view(hold: &GuardHold) -> GuardView {
    GuardView {
        reasons: hold
            .reasons
            .iter()
            .map(|(kind, reason)| GuardReasonView { code: kind.code().to_owned(), reason: reason.clone() })
            .collect(),
        release_by: hold.release_by(),
        release_at: hold.release_at.map(|t| t.0),
        approvals_needed: hold.approvals_needed,
        approvals: hold.approvals.clone(),
        test_payout: hold.test.map(|t| hex_id(t.0)),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentPage {
    pub payments: Vec<PaymentView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub fn state_name(state: PaymentState) -> String {
    match state {
        PaymentState::Held { .. } => "held".to_owned(),
        PaymentState::RolledBack => "rolled_back".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

pub fn settlement_state_name(state: SettlementState) -> (String, Option<u32>) {
    match state {
        SettlementState::Confirmed { depth } => ("confirmed".to_owned(), Some(depth)),
        other => (format!("{other:?}").to_lowercase(), None),
    }
}

pub fn settlement_view(record: &SettlementRecord) -> SettlementView {
    let s = &record.settlement;
    let (state, confirmations) = settlement_state_name(record.state);
    let fee = record.txs.last().map(|tx| {
        let child = record.children_of(&tx.txid).last().map_or(Amount::ZERO, |child| child.fee);
        tx.fee.checked_add(child).unwrap_or(tx.fee)
    });
    SettlementView {
        id: hex_id(s.id.0),
        rail: s.rail.to_string(),
        network: s.network.to_string(),
        chain_id: match s.network {
            Network::Evm(ChainId(id)) => Some(id),
            Network::Bitcoin(_) => None,
        },
        state,
        txid: record.txs.last().map(|tx| txid(&tx.txid)),
        confirmations,
        payouts: s.legs.len(),
        fee: fee.map(|fee| s.fee_asset.format_amount(fee)),
        fee_per_payout: fee.map(|fee| {
            let legs = u128::try_from(s.legs.len()).unwrap_or(u128::MAX).max(1);
            s.fee_asset.format_amount(Amount::new(fee.units() / legs))
        }),
        vbytes: match s.network {
            Network::Bitcoin(_) => record.txs.last().and_then(SignedTx::bitcoin_vbytes),
            Network::Evm(_) => None,
        },
        accelerated_by: record.children.iter().map(|child| txid(&child.txid)).collect(),
    }
}

pub fn payment_view(
    record: &PaymentRecord,
    settlement: Option<&SettlementRecord>,
    difference: Option<String>,
    routing: Option<String>,
) -> PaymentView {
    let p = &record.payment;
    PaymentView {
        id: hex_id(p.id.0),
        batch: hex_id(p.batch.0),
        merchant: p.merchant.0,
        reference: p.reference.clone(),
        amount: p.asset.format_amount(p.amount),
        asset: p.asset.symbol().to_owned(),
        destination: p.destination.to_string(),
        networks: p.networks.iter().map(ToString::to_string).collect(),
        class: p.class.to_string(),
        state: state_name(record.state),
        attempt: record.attempt,
        reason: record.reason.clone(),
        routing,
        history: record.steps.iter().map(|s| StepView { state: state_name(s.state), at: s.at.0 }).collect(),
        settlement: settlement.map(settlement_view),
        guard: None,
        metadata: p.metadata.clone(),
        difference,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RailView {
    pub rail: String,
    pub network: String,
    pub paused: bool,
    /// closed, open or half_open.
    pub breaker: String,
    /// Recent successes per thousand outcomes.
    pub success_permille: u32,
    pub queued: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    pub rail: String,
    pub asset: String,
    /// What routing may still reserve.
    pub available: String,
    /// Reserved for settlements not yet final.
    pub reserved: String,
    pub min: String,
    pub target: String,
    pub max: String,
    /// below_min, above_max or ok.
    pub status: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DepthView {
    pub queued: usize,
    pub oldest_age_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuesView {
    pub rails: BTreeMap<String, DepthView>,
    pub classes: BTreeMap<String, DepthView>,
    pub merchants: BTreeMap<String, DepthView>,
}

/// Who did it and why: every operator and treasury change is journaled with both.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Because {
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainIn {
    /// Report what would move and move nothing.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MoveView {
    pub payment: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DrainView {
    pub dry_run: bool,
    pub moves: Vec<MoveView>,
    /// Payments no other rail can take: they stay queued where they are.
    pub unmovable: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveIn {
    /// retry, fail (held and not in flight) or resume (held in flight).
    pub resolution: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FundIn {
    pub amount: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconciliationView {
    pub settlements_checked: usize,
    pub clean: usize,
    pub destinations_checked: usize,
    pub differences: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyIn {
    /// merchant, treasury, operator or admin.
    pub role: String,
    /// For a merchant key: the merchant it acts for.
    #[serde(default)]
    pub merchant: Option<u64>,
    pub label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub role: String,
    pub merchant: Option<u64>,
    pub label: String,
    pub created_by: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

/// A key just created: the secret is in this answer and nowhere else.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyCreated {
    pub id: String,
    pub role: String,
    pub merchant: Option<u64>,
    /// Shown once: store it now.
    pub secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    /// Where notices are POSTed; `null` removes the endpoint.
    pub url: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub merchant: u64,
    pub url: Option<String>,
    /// The HMAC-SHA256 key the receiver checks signatures with.
    pub signing_secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// The event id: stable across retries, for the receiver to dedupe.
    pub event: String,
    pub payment: String,
    pub state: String,
    /// pending, delivered or failed (retries exhausted; re-send it).
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<u64>,
}

/// The body of a webhook delivery.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEvent {
    /// Stable across retries: dedupe on it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: u64,
    pub payment: PaymentView,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsIn {
    pub min: String,
    pub target: String,
    pub max: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ClassView {
    pub name: String,
    /// Share of dequeues while every class is backlogged.
    pub weight: u32,
    pub deadline_default_ms: u64,
    /// Queued longer than this, a payment is held for an operator.
    pub age_max_ms: Option<u64>,
    /// May use a pool's reserve below its minimum.
    pub urgent: bool,
}

/// A routing rule on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleWire {
    /// This merchant's payments go only on these rails.
    MerchantOnly { merchant: u64, rails: Vec<String> },
    /// Payments of the asset at or above the amount go only on these rails.
    AmountAtLeastOnly { asset: String, amount: String, rails: Vec<String> },
    /// Payments of the asset prefer these rails, in order (a bonus, not a restriction).
    AssetPrefers { asset: String, rails: Vec<String> },
}

impl RuleWire {
    pub fn from_rule(rule: &Rule) -> RuleWire {
        let names = |rails: &[RailId]| rails.iter().map(ToString::to_string).collect();
        match rule {
            Rule::MerchantOnly { merchant, rails } => {
                RuleWire::MerchantOnly { merchant: merchant.0, rails: names(rails) }
            }
            Rule::AmountAtLeastOnly { asset, amount, rails } => RuleWire::AmountAtLeastOnly {
                asset: asset.symbol().to_owned(),
                amount: asset.format_amount(*amount),
                rails: names(rails),
            },
            Rule::AssetPrefers { asset, rails } => {
                RuleWire::AssetPrefers { asset: asset.symbol().to_owned(), rails: names(rails) }
            }
        }
    }
}

/// How the router weighs rails, and the rules that override it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoutingView {
    pub weights: BTreeMap<String, u64>,
    pub rules: Vec<RuleWire>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesIn {
    pub rules: Vec<RuleWire>,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassIn {
    pub weight: u32,
    pub deadline_default_ms: u64,
    #[serde(default)]
    pub age_max_ms: Option<u64>,
    pub urgent: bool,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AnomalyView {
    pub settlement: String,
    /// What the last check found.
    pub difference: String,
}

/// One record of the audit export.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditLineView {
    pub seq: u64,
    /// BLAKE3 of the record's bytes, hex.
    pub payload_hash: String,
    /// The chain after this record: BLAKE3(previous chain ‖ seq as u64 LE ‖ payload hash), hex.
    pub chain: String,
    /// The action (who, why, what), when the record is one.
    #[schema(value_type = Option<Object>)]
    pub action: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChainHead {
    pub seq: u64,
    pub chain: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub lines: Vec<AuditLineView>,
    /// Pass as `from` for the next page.
    pub next: Option<u64>,
    /// The chain at the journal's tip: keep it to check later exports against.
    pub head: ChainHead,
}
