//! What the API needs from the engine beyond payments: API keys and webhook endpoints (journaled
//! with who), a merchant cancelling a payment still queued, and the outbox read in pages for the
//! webhook sender. Each refusal changes nothing.

use model::*;

use crate::state::Notice;
use crate::{Engine, EngineError, OperatorError};

impl Engine {
    /// Records a new API key by the hash of its secret (the caller made the secret and shows it
    /// once; it never reaches the engine).
    pub async fn create_key(
        &mut self,
        key: [u8; 32],
        role: Role,
        merchant: Option<MerchantId>,
        label: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.running()?;
        let (label, by) = (label.to_owned(), by.to_owned());
        self.stage_input(Event::ApiKeyCreated { key, role, merchant, label, by, at: now })?;
        self.commit_and_act(now).await
    }

    pub async fn revoke_key(
        &mut self,
        key: [u8; 32],
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.running()?;
        let (by, reason) = (by.to_owned(), reason.to_owned());
        self.stage_input(Event::ApiKeyRevoked { key, by, reason, at: now })?;
        self.commit_and_act(now).await
    }

    /// Sets (or with `None` removes) where a merchant's notices are sent.
    pub async fn set_webhook(
        &mut self,
        merchant: MerchantId,
        url: Option<String>,
        by: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.running()?;
        self.stage_input(Event::WebhookEndpointSet { merchant, url, by: by.to_owned(), at: now })?;
        self.commit_and_act(now).await
    }

    /// A merchant takes back a payment no rail has yet: it fails with the reason, and the
    /// merchant is notified like any failure. Another merchant's payment is unknown; one
    /// already planned (its settlement may be signed next) cannot be cancelled.
    pub async fn cancel(
        &mut self,
        merchant: MerchantId,
        payment: PaymentId,
        by: &str,
        now: Timestamp,
    ) -> Result<(), OperatorError> {
        self.running()?;
        // Open payments are in the book, finished ones in the history store.
        let record = self
            .payment(payment)?
            .filter(|r| r.payment.merchant == merchant)
            .ok_or(OperatorError::UnknownPayment(payment))?;
        if !matches!(record.state, PaymentState::Accepted | PaymentState::Queued) {
            return Err(OperatorError::NotCancellable { payment, state: record.state });
        }
        let reason = format!("cancelled by the merchant ({by}) while queued");
        self.staging.forget(payment);
        self.stage(vec![Event::PaymentFailed { payment, reason, at: now }])?;
        self.commit_and_act(now).await?;
        Ok(())
    }

    /// Treasury changes a configured pool's min / target / max (journaled with who and why).
    /// Reservations already made stay: they are facts; the new minimum applies to what is
    /// decided from now on, so no running payment is broken by it.
    pub async fn set_pool_thresholds(
        &mut self,
        config: router::PoolConfig,
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.running()?;
        let router::PoolConfig { rail, asset, min, target, max } = config;
        if self.state.pools.config(rail, asset).is_none() {
            return Err(EngineError::Refused(format!("no pool of {asset} on rail {rail} is configured")));
        }
        if !(min <= target && target <= max) {
            return Err(EngineError::Refused(format!(
                "thresholds must keep min <= target <= max (min {}, target {}, max {})",
                asset.format_amount(min),
                asset.format_amount(target),
                asset.format_amount(max)
            )));
        }
        let (by, reason) = (by.to_owned(), reason.to_owned());
        self.stage_input(Event::PoolThresholdsSet { rail, asset, min, target, max, by, reason, at: now })?;
        self.commit_and_act(now).await
    }

    /// Up to `limit` undelivered notices after `after` (by id), for the webhook sender.
    /// None on a node that does not coordinate: the coordinator's node delivers (and
    /// acknowledges) them, once.
    pub fn outbox_page(&self, after: Option<u128>, limit: usize) -> Vec<(u128, Notice)> {
        // The coordinator delivers the notices (and journals their acknowledgement).
        if self.is_standby() || !self.coordinates() {
            return Vec::new();
        }
        let range = match after {
            Some(after) => self.state.outbox.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => self.state.outbox.range(..),
        };
        range.take(limit).map(|(id, notice)| (*id, *notice)).collect()
    }
}
