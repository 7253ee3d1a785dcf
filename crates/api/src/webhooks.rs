//! Webhooks: every notice in the engine's outbox (a payment settled, failed or held) is POSTed
//! to its merchant's endpoint, signed, and marked delivered through the journal only after the
//! receiver answered 2xx. So a crash neither loses a notice (it is still in the outbox when the
//! engine reopens) nor invents one (only journaled notices are sent); a receiver may see one
//! twice (a crash between its answer and the journal), and dedupes on the event id, which is
//! the notice's id and the same on every attempt.
//!
//! Signature (as Stripe does it): `railyard-signature: t=<unix seconds>,v1=<hex>` where the hex
//! is HMAC-SHA256 with the merchant's signing secret over `<t>.<body>`; a receiver refuses a
//! timestamp outside its tolerance (`verify`), so a captured delivery cannot be replayed later.
//!
//! Retries: exponential backoff from 1 s doubling to at most 1 h, each wait jittered by up to
//! a fifth, for 24 h from the first attempt; then the delivery is `failed` and waits for a
//! re-send. A merchant with no endpoint gets no deliveries: its notices are marked delivered
//! (skipped) so the outbox holds only what is owed to someone, and it polls the API instead.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hmac::{Hmac, Mac};
use model::*;
use sha2::Sha256;

use crate::Api;
use crate::wire::{DeliveryView, WebhookEvent, hex_id, state_name};

pub const SIGNATURE_HEADER: &str = "railyard-signature";
pub const EVENT_HEADER: &str = "railyard-event-id";

/// The key a merchant's deliveries are signed with, derived from the server's secret.
pub fn signing_secret(server_key: &[u8; 32], merchant: MerchantId) -> String {
    let mut input = b"railyard webhook signing v1:".to_vec();
    input.extend_from_slice(&merchant.0.to_le_bytes());
    format!("whsec_{}", hex::encode(blake3::keyed_hash(server_key, &input).as_bytes()))
}

fn mac(secret: &str, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header's value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is not t=<seconds>,v1=<hex>")]
    Malformed,
    #[error("the timestamp is outside the tolerance (a replay, or a clock far off)")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// What a receiver does: checks the signature over the exact body, and the timestamp against
/// `now` within `tolerance_s` seconds. The comparison is constant-time.
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64, tolerance_s: u64) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => signature = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (timestamp, signature) = timestamp.zip(signature).ok_or(VerifyError::Malformed)?;
    if now.abs_diff(timestamp) > tolerance_s {
        return Err(VerifyError::Stale);
    }
    mac(secret, timestamp, body).verify_slice(&signature).map_err(|_| VerifyError::Mismatch)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Delivered,
    Skipped,
    Failed,
}

#[derive(Clone, Debug)]
struct Delivery {
    merchant: MerchantId,
    payment: PaymentId,
    state: PaymentState,
    status: Status,
    attempts: u32,
    first_attempt: Option<Instant>,
    next_at: Instant,
    last_error: Option<String>,
}

/// Most finished deliveries remembered for listing (pending ones are all kept: the outbox
/// bounds them).
const FINISHED_KEPT: usize = 10_000;

/// The sender's view of every delivery since the server started.
#[derive(Debug, Default)]
pub struct Deliveries {
    inner: Mutex<DeliveriesInner>,
}

#[derive(Debug, Default)]
struct DeliveriesInner {
    all: BTreeMap<u128, Delivery>,
    finished: VecDeque<u128>,
}

impl DeliveriesInner {
    fn finish(&mut self, id: u128, status: Status) {
        if let Some(d) = self.all.get_mut(&id) {
            d.status = status;
            self.finished.push_back(id);
        }
        while self.finished.len() > FINISHED_KEPT {
            if let Some(old) = self.finished.pop_front()
                && self.all.get(&old).is_some_and(|d| d.status != Status::Pending)
            {
                self.all.remove(&old);
            }
        }
    }
}

fn view(id: u128, d: &Delivery) -> DeliveryView {
    let now = Instant::now();
    DeliveryView {
        event: hex_id(id),
        payment: hex_id(d.payment.0),
        state: state_name(d.state),
        status: format!("{:?}", d.status).to_lowercase(),
        attempts: d.attempts,
        last_error: d.last_error.clone(),
        next_attempt_at: (d.status == Status::Pending).then(|| {
            unix_ms()
                .saturating_add(u64::try_from(d.next_at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX))
        }),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl Deliveries {
    /// A merchant's deliveries, newest event id last.
    pub fn list(&self, merchant: MerchantId) -> Vec<DeliveryView> {
        let inner = self.inner.lock().expect("deliveries lock");
        inner.all.iter().filter(|(_, d)| d.merchant == merchant).map(|(id, d)| view(*id, d)).collect()
    }

    /// Sends a delivery again now (its attempts and retry window start afresh).
    pub fn resend(&self, merchant: MerchantId, id: u128) -> Option<DeliveryView> {
        let mut inner = self.inner.lock().expect("deliveries lock");
        let d = inner.all.get_mut(&id).filter(|d| d.merchant == merchant)?;
        d.status = Status::Pending;
        d.attempts = 0;
        d.first_attempt = None;
        d.next_at = Instant::now();
        d.last_error = None;
        Some(view(id, d))
    }

    /// Deliveries not yet delivered (for the backlog metric).
    pub fn backlog(&self) -> usize {
        self.inner.lock().expect("deliveries lock").all.values().filter(|d| d.status == Status::Pending).count()
    }
}

/// How the sender retries.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    pub poll: Duration,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    pub retry_for: Duration,
    pub timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for SenderConfig {
    fn default() -> SenderConfig {
        SenderConfig {
            poll: Duration::from_millis(250),
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3_600),
            retry_for: Duration::from_secs(24 * 3_600),
            timeout: Duration::from_secs(10),
            concurrency: 16,
        }
    }
}

fn backoff(config: &SenderConfig, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let wait = config.backoff_first.saturating_mul(1 << exponent).min(config.backoff_max);
    let jitter_ms = u64::try_from(wait.as_millis() / 5).unwrap_or(0);
    wait + Duration::from_millis(fastrand::u64(0..=jitter_ms))
}

/// Runs the sender until `shutdown` resolves.
pub async fn run(api: Api, config: SenderConfig, shutdown: impl std::future::Future<Output = ()>) {
    let client = match reqwest::Client::builder().timeout(config.timeout).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhook sender cannot start");
            return;
        }
    };
    tokio::pin!(shutdown);
    // The outbox is read again only when the journal moved (a notice can only be new then),
    // or every few seconds anyway: an idle server with a long backlog does not page through it
    // four times a second.
    let mut scanned_tip = None;
    let mut scanned_at = std::time::Instant::now();
    loop {
        let tip = api.handle.read(|m| m.tip);
        let rescan = scanned_tip != Some(tip) || scanned_at.elapsed() >= Duration::from_secs(5);
        if rescan {
            scanned_tip = Some(tip);
            scanned_at = std::time::Instant::now();
        }
        if let Err(error) = pass(&api, &client, &config, rescan).await {
            tracing::warn!(%error, "webhook pass failed; trying again");
            scanned_tip = None;
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(config.poll) => {}
        }
    }
}

/// One pass: learn new notices from the outbox, send what is due, journal what was delivered.
async fn pass(api: &Api, client: &reqwest::Client, config: &SenderConfig, rescan: bool) -> Result<(), String> {
    let mut after = None;
    let mut fresh = Vec::new();
    // Without a rescan the pass only sends what is due.
    let mut pages = if rescan { usize::MAX } else { 0 };
    while pages > 0 {
        pages -= 1;
        let page = api.handle.outbox(after, 1_000).await.map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        let inner = api.deliveries.inner.lock().expect("deliveries lock");
        fresh.extend(page.into_iter().filter(|(id, _)| !inner.all.contains_key(id)));
        drop(inner);
        if fresh.len() >= 10_000 {
            break;
        }
    }
    let now = Instant::now();
    // The payments in one read (finished ones: one history read per batch, not per notice).
    let ids: Vec<PaymentId> = fresh.iter().map(|(_, notice)| notice.payment).collect();
    let records = api.handle.payments(&ids).map_err(|e| e.to_string())?;
    for ((id, notice), record) in fresh.into_iter().zip(records) {
        let Some(record) = record else { continue };
        if notice.state == PaymentState::Settled
            && let (Some(first), Some(last)) = (record.steps.first(), record.steps.last())
        {
            api.metrics.settle_seconds.observe(Duration::from_millis(last.at.saturating_since(first.at)).as_secs_f64());
        }
        let delivery = Delivery {
            merchant: record.payment.merchant,
            payment: notice.payment,
            state: notice.state,
            status: Status::Pending,
            attempts: 0,
            first_attempt: None,
            next_at: now,
            last_error: None,
        };
        api.deliveries.inner.lock().expect("deliveries lock").all.insert(id, delivery);
    }
    let due: Vec<(u128, Delivery)> = {
        let inner = api.deliveries.inner.lock().expect("deliveries lock");
        inner
            .all
            .iter()
            .filter(|(_, d)| d.status == Status::Pending && d.next_at <= now)
            .take(1_000)
            .map(|(id, d)| (*id, d.clone()))
            .collect()
    };
    if due.is_empty() {
        return Ok(());
    }
    let endpoints = api.handle.read(|m| std::sync::Arc::clone(&m.access));
    let mut skipped = Vec::new();
    let mut sends = Vec::new();
    for (id, delivery) in due {
        match endpoints.webhooks.get(&delivery.merchant) {
            None => skipped.push(id),
            Some(url) => sends.push((id, delivery, url.clone())),
        }
    }
    let results: Vec<(u128, Result<(), String>)> = futures::stream::iter(sends)
        .map(|(id, delivery, url)| async move { (id, send(api, client, id, &delivery, &url).await) })
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    let delivered: Vec<u128> = results.iter().filter(|(_, r)| r.is_ok()).map(|(id, _)| *id).collect();
    let acknowledged: Vec<u128> = delivered.iter().chain(&skipped).copied().collect();
    if !acknowledged.is_empty() {
        // Journaled before the deliveries count as done: if this fails they are sent again.
        api.handle.acknowledge(acknowledged).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let mut inner = api.deliveries.inner.lock().expect("deliveries lock");
    for id in skipped {
        inner.finish(id, Status::Skipped);
    }
    for (id, result) in results {
        match result {
            Ok(()) => inner.finish(id, Status::Delivered),
            Err(error) => {
                let Some(d) = inner.all.get_mut(&id) else { continue };
                d.attempts += 1;
                let first = *d.first_attempt.get_or_insert(now);
                d.last_error = Some(error);
                if now.duration_since(first) >= config.retry_for {
                    inner.finish(id, Status::Failed);
                } else {
                    d.next_at = Instant::now() + backoff(config, d.attempts);
                }
            }
        }
    }
    Ok(())
}

async fn send(api: &Api, client: &reqwest::Client, id: u128, delivery: &Delivery, url: &str) -> Result<(), String> {
    let record = api.handle.payment(delivery.payment).map_err(|e| e.to_string())?.ok_or("the payment is gone")?;
    let payment = crate::merchant::view(api, &record).map_err(|p| p.0.detail)?;
    let event = WebhookEvent {
        id: hex_id(id),
        kind: format!("payment.{}", state_name(delivery.state)),
        created_at: unix_ms(),
        payment,
    };
    let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
    let secret = signing_secret(&api.config.webhook_key, delivery.merchant);
    let signature = sign(&secret, unix_ms() / 1_000, &body);
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(EVENT_HEADER, hex_id(id))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("cannot reach the endpoint: {}", crate::batch::clip(&e.to_string())))?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("the endpoint answered {status}")) }
}
