//! Intake: a merchant's batch is validated whole and accepted whole (journaled with its
//! idempotency claim in one commit) or rejected whole with typed per-row errors.

use std::collections::BTreeMap;

use journal::{Appended, Claim};
use model::*;
use serde::Serialize;

use crate::{Engine, EngineError, derived};

/// One payment as a merchant submits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Draft {
    pub reference: String,
    pub amount: Amount,
    pub asset: Asset,
    pub destination: String,
    pub networks: Vec<Network>,
    pub class: ClassName,
    pub deadline: Option<Timestamp>,
}

/// One merchant's batch of a group (`Engine::submit_many`).
#[derive(Clone, Copy, Debug)]
pub struct Submission<'a> {
    pub merchant: MerchantId,
    pub key: &'a str,
    pub drafts: &'a [Draft],
}

/// A batch judged: answered at once (a duplicate), or handed to the journal.
pub(crate) enum Admitted {
    Answered(Intake),
    Sent { batch: BatchId, payments: Vec<PaymentId> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intake {
    Accepted {
        batch: BatchId,
        payments: Vec<PaymentId>,
    },
    /// The same key with the same body was accepted before: the original answer.
    Duplicate {
        batch: BatchId,
        payments: Vec<PaymentId>,
    },
}

/// Why one row of a batch is invalid: the row (from 0), the field, a stable code a program
/// can match, and a message that says what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub row: usize,
    pub field: &'static str,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the batch is rejected whole: {} row(s) are invalid", .0.len())]
    Invalid(Vec<RowError>),
    #[error("a batch carries 1 to {max} payments; this one has {count}")]
    BatchSize { count: usize, max: usize },
    #[error("idempotency key already used for batch {batch} with a different body")]
    Conflict { batch: BatchId },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The most a payment id takes encoded (a u128 varint).
const ID_BYTES_MAX: usize = 19;

/// Journal records hold at most this many bytes of payments (the rest of the record limit is
/// left for the batch header).
pub(crate) fn chunk_bytes_max(record_bytes_max: usize) -> usize {
    record_bytes_max.saturating_sub(1024)
}

impl Engine {
    /// Accepts a merchant's batch whole, or rejects it whole with per-row reasons. The same
    /// key with the same body returns the original answer; with a different body, a conflict.
    /// The body is hashed here, over the canonical encoding of the drafts: a caller cannot
    /// make two different batches look alike.
    ///
    /// A standby takes this one command itself, in its turn on the shared journal: an intake
    /// needs no lease (the idempotency claim is a unique constraint), and the node that acts
    /// routes what it admitted once it catches up.
    pub async fn submit(
        &mut self,
        merchant: MerchantId,
        key: &str,
        drafts: &[Draft],
        now: Timestamp,
    ) -> Result<Intake, IntakeError> {
        let mut answers = self.submit_many(&[Submission { merchant, key, drafts }], now).await;
        answers.pop().expect("one answer per batch")
    }

    /// Several merchants' batches in one group: each is judged exactly as `submit` would
    /// judge it after the ones before it, but the group waits for the journal once. Batch
    /// `k` is written while batch `k + 1` is checked (see `gate`), so a service under load
    /// pays one durable commit per group, not per batch. One answer per batch, in order.
    pub async fn submit_many(
        &mut self,
        batches: &[Submission<'_>],
        now: Timestamp,
    ) -> Vec<Result<Intake, IntakeError>> {
        let (leftovers, admitted) = self.admit_all(batches, now);
        let durable = self.until_durable().await;
        self.answer_all(leftovers, admitted, durable)
    }

    /// The first half of `submit_many`: each batch judged after the ones before it, and the
    /// accepted ones handed to the writer, each as its own append, without waiting. Returns
    /// whether leftovers of an earlier round went first (their append's answer comes first).
    pub(crate) fn admit_all(
        &mut self,
        batches: &[Submission<'_>],
        now: Timestamp,
    ) -> (bool, Vec<Result<Admitted, IntakeError>>) {
        self.admitting = self.standby.is_some() && self.in_turn;
        // Whatever an earlier round left staged goes first, on its own: a batch and its claim
        // must be one append. A refusal here is the engine's state (stopped, or a standby out
        // of its turn), which each batch's own check reports to its merchant.
        let leftovers = self.send_staged(None).unwrap_or(false);
        let mut admitted = Vec::with_capacity(batches.len());
        for batch in batches {
            admitted.push(self.admit(batch.merchant, batch.key, batch.drafts, now));
        }
        (leftovers, admitted)
    }

    /// The second half of `submit_many`: each batch's answer once the appends in flight were
    /// waited for (`durable`: their answers in order, the leftovers' first).
    pub(crate) fn answer_all(
        &mut self,
        leftovers: bool,
        admitted: Vec<Result<Admitted, IntakeError>>,
        durable: Result<Vec<Appended>, EngineError>,
    ) -> Vec<Result<Intake, IntakeError>> {
        self.admitting = false;
        // When the wait failed, every batch sent is told the engine stopped (none is answered
        // accepted); otherwise each has its append's answer, in order.
        let (mut appended, failed) = match durable {
            Ok(outcomes) => (outcomes.into_iter(), None),
            Err(error) => (Vec::new().into_iter(), Some(self.stopped.clone().unwrap_or_else(|| error.to_string()))),
        };
        if leftovers {
            appended.next();
        }
        let mut out = Vec::with_capacity(admitted.len());
        for answer in admitted {
            out.push(match answer {
                Ok(Admitted::Answered(intake)) => Ok(intake),
                Ok(Admitted::Sent { batch, payments }) => match (&failed, appended.next()) {
                    (Some(reason), _) => Err(EngineError::Stopped(reason.clone()).into()),
                    (None, Some(Appended::Committed { .. })) => Ok(Intake::Accepted { batch, payments }),
                    (None, _) => Err(self.stop("idempotency claim taken by another writer".to_owned()).into()),
                },
                Err(refused) => Err(refused),
            });
        }
        out
    }

    /// Judges one batch and, when it is accepted, hands it to the journal with its claim
    /// (without waiting: `submit_many` waits for the group).
    fn admit(
        &mut self,
        merchant: MerchantId,
        key: &str,
        drafts: &[Draft],
        now: Timestamp,
    ) -> Result<Admitted, IntakeError> {
        self.running()?;
        // Encoded into the engine's kept scratch list and hashed in one call: no allocation per
        // batch, and blake3 hashes a whole buffer several chunks at a time (fed field by field
        // it copied every few bytes into its block buffer).
        let mut scratch = std::mem::take(&mut self.encode_scratch);
        scratch.clear();
        let scratch = postcard::to_extend(drafts, scratch).expect("drafts serialize");
        let body_hash = *blake3::hash(&scratch).as_bytes();
        self.encode_scratch = scratch;
        let batch = BatchId(derived(&[b"batch", &merchant.0.to_le_bytes(), key.as_bytes()]));
        if let Some((original, hash)) = self.claimed(merchant, key)? {
            return if hash == body_hash {
                let payments = self.batch(original)?.map(|b| b.payments).unwrap_or_default();
                Ok(Admitted::Answered(Intake::Duplicate { batch: original, payments }))
            } else {
                Err(IntakeError::Conflict { batch: original })
            };
        }
        if drafts.is_empty() || drafts.len() > self.config.batch_payments_max {
            return Err(IntakeError::BatchSize { count: drafts.len(), max: self.config.batch_payments_max });
        }
        // Payment ids follow intake order: the sequence number the batch's first record will
        // get, then the row. Unique (no two batches start at one record), and the history
        // store, keyed by id, is then written nearly in order.
        let first_record = u128::from(self.decided_tip() + 1);
        let ids: Vec<PaymentId> = (0..drafts.len() as u128).map(|row| PaymentId(first_record << 32 | row)).collect();
        let mut payments = self.validate(batch, merchant, &ids, drafts)?;
        // The guards: an `Only` allowlist refuses rows; other guards hold payouts (and split a
        // test payout off a first large payout to a new destination).
        let (refused, holds) = self.guard_intake(&mut payments, now)?;
        if !refused.is_empty() {
            let errors = refused
                .into_iter()
                .map(|(row, message)| RowError { row, field: "destination", code: "not_allowlisted", message })
                .collect();
            return Err(IntakeError::Invalid(errors));
        }
        // A reference names the merchant's payout, not the test split off it.
        let references = crate::history::reference_ops(&payments[..drafts.len()]);
        let held: std::collections::BTreeSet<PaymentId> = holds.iter().map(|(id, _)| *id).collect();
        let mut events = self.batch_events(batch, merchant, key, body_hash, payments, &held, now);
        for (payment, hold) in holds {
            events.extend(crate::guards::hold_events(payment, hold, "intake", now));
        }
        self.stage(events)?;
        self.history.extend(references);
        let claim = Claim { merchant: merchant.0.to_string(), key: key.to_owned(), batch: batch.0, body_hash };
        self.send_staged(Some(claim))?;
        Ok(Admitted::Sent { batch, payments: ids })
    }

    /// The batch a merchant's key was claimed for and its body's hash: from the journal's
    /// index, or from an append still in flight.
    fn claimed(&self, merchant: MerchantId, key: &str) -> Result<Option<(BatchId, [u8; 32])>, EngineError> {
        if let Some(found) = self.claim_in_flight(merchant, key) {
            return Ok(Some(found));
        }
        let entry = self.journal.idempotency(&merchant.0.to_string(), key)?;
        Ok(entry.map(|e| (BatchId(e.batch), e.body_hash)))
    }

    /// The batch as journal records: a header with the first payments, continuations of at
    /// most a record's worth each, then its payments queued (all but those the guards hold),
    /// a record's worth of ids at a time.
    #[allow(clippy::too_many_arguments)]
    fn batch_events(
        &self,
        batch: BatchId,
        merchant: MerchantId,
        key: &str,
        body_hash: [u8; 32],
        payments: Vec<Payment>,
        held: &std::collections::BTreeSet<PaymentId>,
        now: Timestamp,
    ) -> Vec<Event> {
        let count = u32::try_from(payments.len()).expect("batch_payments_max fits u32");
        let ids: Vec<PaymentId> = payments.iter().map(|p| p.id).filter(|id| !held.contains(id)).collect();
        let queued =
            ids.chunks(self.per_record(ID_BYTES_MAX)).map(|c| Event::PaymentsQueued { payments: c.to_vec(), at: now });
        let bytes_max = chunk_bytes_max(self.config.journal.record_bytes_max);
        let mut left = payments.len();
        let mut chunks: Vec<Vec<Payment>> = vec![Vec::with_capacity(left)];
        let mut bytes = 0;
        for payment in payments {
            let size = postcard::experimental::serialized_size(&payment).expect("payments serialize");
            let current = chunks.last_mut().expect("at least one chunk");
            if !current.is_empty() && bytes + size > bytes_max {
                current.shrink_to_fit();
                chunks.push(Vec::with_capacity(left));
                bytes = 0;
            }
            left -= 1;
            bytes += size;
            chunks.last_mut().expect("at least one chunk").push(payment);
        }
        let mut chunks = chunks.into_iter();
        let first = chunks.next().expect("at least one chunk");
        let mut events = vec![Event::BatchAccepted {
            batch,
            merchant,
            idempotency_key: key.to_owned(),
            body_hash,
            count,
            payments: first,
            at: now,
        }];
        events.extend(chunks.map(|payments| Event::PaymentsAccepted { batch, payments, at: now }));
        events.extend(queued);
        events
    }

    fn validate(
        &self,
        batch: BatchId,
        merchant: MerchantId,
        ids: &[PaymentId],
        drafts: &[Draft],
    ) -> Result<Vec<Payment>, IntakeError> {
        let mut errors = Vec::new();
        let mut payments = Vec::with_capacity(drafts.len());
        let references: Vec<&str> = drafts.iter().map(|d| d.reference.as_str()).collect();
        let taken = self.references_taken(merchant, &references)?;
        let mut first_row: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (row, ((draft, id), taken)) in drafts.iter().zip(ids).zip(taken).enumerate() {
            let outcome = self.validate_row(batch, merchant, *id, draft).and_then(|payment| {
                // A merchant's reference names one payment: not twice in a batch, not again later.
                if let Some(first) = first_row.insert(&draft.reference, row) {
                    let message = format!(
                        "reference {:?} is also used by row {first}; give each payment its own",
                        draft.reference
                    );
                    return Err(("reference", "duplicate_reference", message));
                }
                if taken {
                    let message = format!(
                        "reference {:?} was used by an earlier batch; give this payment a new one",
                        draft.reference
                    );
                    return Err(("reference", "reference_used", message));
                }
                Ok(payment)
            });
            match outcome {
                Ok(payment) => payments.push(payment),
                Err((field, code, message)) => errors.push(RowError { row, field, code, message }),
            }
        }
        if errors.is_empty() { Ok(payments) } else { Err(IntakeError::Invalid(errors)) }
    }

    fn validate_row(
        &self,
        batch: BatchId,
        merchant: MerchantId,
        id: PaymentId,
        draft: &Draft,
    ) -> Result<Payment, (&'static str, &'static str, String)> {
        let destination = Address::parse_for(&draft.destination, &draft.networks)
            .map_err(|error| ("destination", "invalid_destination", format!("destination: {error}")))?;
        let payment = Payment {
            id,
            batch,
            merchant,
            reference: draft.reference.clone(),
            amount: draft.amount,
            asset: draft.asset,
            destination,
            networks: draft.networks.clone(),
            class: draft.class,
            deadline: draft.deadline,
            metadata: BTreeMap::new(),
        };
        payment.validate().map_err(|error| {
            let (field, code) = match &error {
                PaymentError::ZeroAmount => ("amount", "amount_not_positive"),
                PaymentError::Reference => ("reference", "invalid_reference"),
                PaymentError::NetworkCount | PaymentError::DuplicateNetwork { .. } => ("networks", "invalid_networks"),
                PaymentError::Destination(_) => ("destination", "invalid_destination"),
                PaymentError::Metadata => ("metadata", "invalid_metadata"),
            };
            (field, code, error.to_string())
        })?;
        if !self.config.queue.classes.iter().any(|c| c.name == draft.class) {
            return Err(("class", "unknown_class", format!("unknown priority class {}", draft.class)));
        }
        let serving: Vec<&Capabilities> = self
            .rails
            .iter()
            .map(|r| r.capabilities())
            .filter(|c| c.assets.contains(&draft.asset) && draft.networks.contains(&c.network))
            .collect();
        if serving.is_empty() {
            let message = format!("no rail carries {} on the allowed networks", draft.asset);
            return Err(("asset", "no_rail_for_asset", message));
        }
        // A payment no rail could ever carry would wait for ever: refuse it here, naming the
        // limits of the rails that carry the asset.
        if !serving.iter().any(|c| c.amount_min <= draft.amount && draft.amount <= c.amount_max) {
            let show = |amount| draft.asset.format_amount(amount);
            let limits: Vec<String> = serving
                .iter()
                .map(|c| format!("{} takes {} to {}", c.rail, show(c.amount_min), show(c.amount_max)))
                .collect();
            // On Bitcoin the floor is the dust threshold: an output below it is not relayed.
            let dust = draft.networks.iter().any(|n| matches!(n, Network::Bitcoin(_)))
                && serving.iter().all(|c| draft.amount < c.amount_min);
            let why = if dust {
                "is below Bitcoin's dust threshold or the rail's minimum"
            } else {
                "is outside every rail's limits"
            };
            let message = format!("{} {} {why} ({})", show(draft.amount), draft.asset, limits.join("; "));
            return Err(("amount", "amount_out_of_rail_limits", message));
        }
        Ok(payment)
    }
}
