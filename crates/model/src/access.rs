//! Who may do what: API keys and their roles, and where a merchant's notices go. Only a key's
//! hash is ever journaled (the secret is shown once, to whoever created it); the engine checks
//! nothing cryptographic, it keeps the facts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{MerchantId, Timestamp};

/// What a key may do. A merchant key sees only its own merchant's batches, payments and
/// deliveries; treasury changes pools; operator runs rails and resolves holds; admin does all
/// of that and manages keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Merchant,
    Treasury,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Merchant, Role::Treasury, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Merchant => "merchant",
            Role::Treasury => "treasury",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API key as railyard keeps it: its hash is the map key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub role: Role,
    /// The merchant a merchant key acts for (none for the other roles).
    pub merchant: Option<MerchantId>,
    pub label: String,
    pub created_by: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Keys by the hash of their secret, and each merchant's webhook endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub keys: BTreeMap<[u8; 32], ApiKey>,
    pub webhooks: BTreeMap<MerchantId, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("a key with this hash exists already")]
    DuplicateKey,
    #[error("no such key")]
    UnknownKey,
    #[error("the key was revoked already")]
    AlreadyRevoked,
    #[error("a merchant key needs a merchant, and only a merchant key has one")]
    MerchantMismatch,
    #[error("a key label is 1 to 64 printable characters")]
    Label,
    #[error("a webhook endpoint is an http:// or https:// URL of at most 2048 characters")]
    Url,
}

impl Access {
    /// Whether a key may be created with these facts.
    pub fn check_new(
        &self,
        key: &[u8; 32],
        role: Role,
        merchant: Option<MerchantId>,
        label: &str,
    ) -> Result<(), AccessError> {
        if self.keys.contains_key(key) {
            return Err(AccessError::DuplicateKey);
        }
        if (role == Role::Merchant) != merchant.is_some() {
            return Err(AccessError::MerchantMismatch);
        }
        if label.is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
            return Err(AccessError::Label);
        }
        Ok(())
    }

    /// Whether `url` may be a webhook endpoint.
    pub fn check_url(url: &str) -> Result<(), AccessError> {
        let scheme = url.starts_with("http://") || url.starts_with("https://");
        if !scheme || url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(AccessError::Url);
        }
        Ok(())
    }

    /// The live (not revoked) key with this hash.
    pub fn live(&self, key: &[u8; 32]) -> Option<&ApiKey> {
        self.keys.get(key).filter(|k| k.revoked_at.is_none())
    }

    /// Whether any live admin key exists (the first start creates one when none does).
    pub fn has_admin(&self) -> bool {
        self.keys.values().any(|k| k.role == Role::Admin && k.revoked_at.is_none())
    }
}
