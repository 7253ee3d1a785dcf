//! The audit export: the journal's operator, treasury and admin actions, each with its place
//! in a hash chain over every record, so an auditor can check that nothing was removed.
//!
//! The chain: `chain(0)` is 32 zero bytes; `chain(n) = BLAKE3(chain(n-1) ‖ n as u64 LE ‖
//! BLAKE3(payload(n)))` over every record `n` of the journal. An auditor who kept a head
//! (`seq`, `chain`) from an earlier export recomputes it from a full export (`all`: every
//! record's payload hash) and finds any record removed, changed or reordered before it.

use journal::Journal;
use model::*;

use crate::EngineError;

/// One line of the export.
#[derive(Clone, Debug)]
pub struct AuditLine {
    pub seq: u64,
    pub payload_hash: [u8; 32],
    /// The chain after this record.
    pub chain: [u8; 32],
    /// The action, when the record is one (with `all`, other records have none).
    pub action: Option<Event>,
}

/// A page of the export, and the chain's head at the journal's tip.
#[derive(Clone, Debug)]
pub struct AuditPage {
    pub lines: Vec<AuditLine>,
    /// The seq to go on from, when the page is full.
    pub next: Option<u64>,
    pub tip: u64,
    pub head: [u8; 32],
}

/// Whether an event is a person's action (operator, treasury, admin, or a merchant's setting).
pub fn is_action(event: &Event) -> bool {
    matches!(
        event,
        Event::RailPaused { .. }
            | Event::RailResumed { .. }
            | Event::RailDrained { .. }
            | Event::PaymentResolved { .. }
            | Event::PoolFunded { .. }
            | Event::ApiKeyCreated { .. }
            | Event::ApiKeyRevoked { .. }
            | Event::WebhookEndpointSet { .. }
            | Event::PoolThresholdsSet { .. }
            | Event::ClassSet { .. }
            | Event::RoutingRulesSet { .. }
            | Event::GuardsSet { .. }
            | Event::PaymentApproved { .. }
    ) || matches!(event, Event::PaymentGuarded { by, .. } if by != "railyard")
}

/// The next link of the chain.
pub fn link(chain: &[u8; 32], seq: u64, payload_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(chain);
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload_hash);
    *hasher.finalize().as_bytes()
}

/// Reads the whole journal (the chain starts at record 1) and returns up to `limit` lines from
/// `from` on: the actions, or with `all` every record.
pub fn export(journal: &Journal, from: u64, all: bool, limit: usize) -> Result<AuditPage, EngineError> {
    let tip = journal.tip();
    let mut chain = [0u8; 32];
    let mut lines = Vec::new();
    let mut next = None;
    let mut seq = 1;
    while seq <= tip {
        let records = journal.read_range(seq, 4_096)?;
        let Some(last) = records.last() else { break };
        seq = last.seq + 1;
        for record in records {
            let payload_hash = *blake3::hash(&record.payload).as_bytes();
            chain = link(&chain, record.seq, &payload_hash);
            if record.seq < from || next.is_some() {
                continue;
            }
            let event = Event::decode(&record.payload)
                .map_err(|e| EngineError::Config(format!("record {}: {e}", record.seq)))?;
            let action = is_action(&event).then_some(event);
            if action.is_some() || all {
                if lines.len() == limit {
                    next = Some(record.seq);
                    continue;
                }
                lines.push(AuditLine { seq: record.seq, payload_hash, chain, action });
            }
        }
    }
    Ok(AuditPage { lines, next, tip, head: chain })
}
