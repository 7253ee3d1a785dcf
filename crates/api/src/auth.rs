//! API keys: 32 random bytes shown once as `ry_` and 64 hex digits, kept (journaled) only as
//! their BLAKE3 hash. A request names its key in `Authorization: Bearer …`; the key's role
//! decides what it may do, and a merchant key sees only its own merchant's things. The key's
//! public id (the first 8 bytes of the hash, in hex) names it in lists and logs; the secret
//! itself is never logged.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use model::{MerchantId, Role};

use crate::Api;
use crate::problem::Problem;

const PREFIX: &str = "ry_";

/// A new key: the secret to show once, and its hash to journal.
#[derive(Debug)]
pub struct NewKey {
    pub secret: String,
    pub hash: [u8; 32],
}

/// Makes a key from the operating system's randomness.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(NewKey { secret: format!("{PREFIX}{}", hex::encode(bytes)), hash: hash_bytes(&bytes) })
}

fn hash_bytes(bytes: &[u8; 32]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// The hash of a presented key, or `None` when it is not a well-formed key.
pub fn hash(secret: &str) -> Option<[u8; 32]> {
    let hex_part = secret.strip_prefix(PREFIX)?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut bytes).ok()?;
    Some(hash_bytes(&bytes))
}

/// A key's public id: safe to show and log.
pub fn key_id(hash: &[u8; 32]) -> String {
    hex::encode(&hash[..8])
}

/// Requests per key: GCRA, like the queue's limits.
pub(crate) type KeyLimiter =
    RateLimiter<[u8; 32], governor::state::keyed::DefaultKeyedStateStore<[u8; 32]>, DefaultClock>;

pub(crate) fn limiter(per_second: u32, burst: u32) -> Arc<KeyLimiter> {
    let rate = NonZeroU32::new(per_second.max(1)).expect("at least 1");
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    Arc::new(RateLimiter::hashmap(Quota::per_second(rate).allow_burst(burst)))
}

/// Who is calling: resolved from the key on every request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    pub merchant: Option<MerchantId>,
    /// The key's public id, for audit records ("key 1a2b…").
    pub key_id: String,
}

impl Caller {
    /// Admin may do what every staff role does; otherwise the role must be one of `roles`.
    /// (Acting as a merchant takes a merchant key: see `merchant`.)
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            return Ok(());
        }
        let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs a key with role {} (or admin); this key's role is {}", wanted.join(" or "), self.role),
        ))
    }

    /// The merchant a merchant key acts for; other roles have none.
    pub fn merchant(&self) -> Result<MerchantId, Problem> {
        self.merchant
            .ok_or_else(|| Problem::new(StatusCode::FORBIDDEN, "forbidden", "only a merchant key acts for a merchant"))
    }

    /// Whether this caller may see something of `owner`'s: its own merchant, or a staff role.
    pub fn sees(&self, owner: MerchantId) -> bool {
        match self.role {
            Role::Merchant => self.merchant == Some(owner),
            _ => true,
        }
    }

    /// Who, for the journal's audit fields.
    pub fn who(&self) -> String {
        format!("{} key {}", self.role, self.key_id)
    }
}

/// Whether the request's API key is one this node knows (a standby may not know yet a key
/// made moments ago on another node).
pub(crate) fn known_here(api: &Api, headers: &axum::http::HeaderMap) -> bool {
    let secret = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(hash) = secret.and_then(|s| hash(s.trim())) else { return false };
    api.handle.read(|m| m.access.keys.contains_key(&hash))
}

impl FromRequestParts<Api> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Caller, Problem> {
        let unauthorized = |detail: &str| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        let value = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("send the API key as `Authorization: Bearer ry_…`"))?;
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer ry_…`"))?;
        let hash = hash(secret.trim()).ok_or_else(|| unauthorized("this is not a railyard API key"))?;
        let access = api.handle.read(|m| Arc::clone(&m.access));
        let key = access.keys.get(&hash).ok_or_else(|| unauthorized("unknown API key"))?;
        if key.revoked_at.is_some() {
            return Err(unauthorized("this API key was revoked"));
        }
        if let Err(not_until) = api.limiter.check_key(&hash) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            api.metrics.rate_limited.inc();
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this key; slow down",
            )
            .retry_after(wait.as_secs() + 1));
        }
        Ok(Caller { role: key.role, merchant: key.merchant, key_id: key_id(&hash) })
    }
}
