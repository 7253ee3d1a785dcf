//! Mis-transfer guards: what stops a payout before it is signed. A payout on a chain cannot be
//! taken back, so the cheapest loss is the one held here.
//!
//! A merchant's `GuardPolicy` (set by treasury, journaled) and a few checks every payout gets
//! (burn addresses, precompiles) are judged by `check`, a pure function of the payment, the
//! policy and what the history store knows of the destination (`Known`). It runs at intake
//! and again just before signing (a policy changed after intake still applies). A payout a
//! guard stops is held with a `GuardHold`: every reason, who may release it, and the automatic
//! conditions (time lock, approvals, a test payout) that release it by themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::amount::Amount;
use crate::asset::Asset;
use crate::ids::{MerchantId, PaymentId, Timestamp};
use crate::payment::Payment;

/// Characters compared at each end of an address by the poisoning check (after the `0x` or
/// bech32 prefix). An attacker's look-alike matches a few characters at both ends, since that
/// is what wallets show; four catches those that match four or more.
pub const FINGERPRINT_CHARS: usize = 4;

/// Addresses whose coins no one can spend.
const BURN: [&str; 3] = [
    "0x000000000000000000000000000000000000dead",
    "0xdead000000000000000000000000000000000000",
    "1BitcoinEaterAddressDontSendf59kuE",
];

/// Entries in an allowlist or a blocked list, at most.
pub const LIST_MAX: usize = 10_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowMode {
    /// No allowlist.
    #[default]
    Off,
    /// Only listed destinations: any other is refused at intake.
    Only,
    /// Listed destinations pass; any other is held for treasury.
    OrHold,
}

/// Per asset: when a first payout to a new destination is preceded by a test payout, and
/// when a payout is large.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetGuard {
    pub asset: Asset,
    /// A first payout to a destination above this is split: a test payout of `test_amount`
    /// goes first, the rest is held until the test is final.
    pub test_above: Option<Amount>,
    pub test_amount: Amount,
    /// A payout above this waits out the time lock and the approvals.
    pub large_above: Option<Amount>,
}

/// A merchant's guards, as treasury set them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardPolicy {
    pub allow_mode: AllowMode,
    /// Destinations in `address_key` form.
    pub allowlist: Vec<String>,
    /// Known contracts with no code to receive (and anything else never to pay), in
    /// `address_key` form.
    pub blocked: Vec<String>,
    pub assets: Vec<AssetGuard>,
    /// How long a large payout waits after it was accepted.
    pub large_delay_ms: u64,
    /// Approvals by distinct treasury keys a large payout needs (0 to 2).
    pub large_approvals: u8,
    /// Hold a destination that looks like one paid before but is not it.
    pub poisoning: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> GuardError {
    GuardError::Invalid { field: field.into(), message: message.into() }
}

impl GuardPolicy {
    /// Checks a policy on its own: list sizes, addresses in key form, test amounts below their
    /// thresholds, at most two approvals. Names the field.
    pub fn validate(&self) -> Result<(), GuardError> {
        for (field, list) in [("allowlist", &self.allowlist), ("blocked", &self.blocked)] {
            if list.len() > LIST_MAX {
                return Err(invalid(field, format!("at most {LIST_MAX} addresses")));
            }
            for (i, entry) in list.iter().enumerate() {
                if address_key_of_text(entry).as_deref() != Some(entry.as_str()) {
                    return Err(invalid(format!("{field}[{i}]"), "not an address in key form"));
                }
            }
        }
        if self.allow_mode != AllowMode::Off && self.allowlist.is_empty() {
            return Err(invalid("allowlist", "an allowlist in force needs at least one address"));
        }
        if self.large_approvals > 2 {
            return Err(invalid("large_approvals", "0, 1 or 2"));
        }
        for (i, guard) in self.assets.iter().enumerate() {
            if self.assets[..i].iter().any(|g| g.asset == guard.asset) {
                return Err(invalid(format!("assets[{i}].asset"), format!("{} is listed twice", guard.asset)));
            }
            if let Some(above) = guard.test_above
                && (guard.test_amount.is_zero() || guard.test_amount >= above)
            {
                return Err(invalid(
                    format!("assets[{i}].test_amount"),
                    "must be above zero and below test_above (the rest of the payout follows the test)",
                ));
            }
        }
        Ok(())
    }

    fn asset(&self, asset: Asset) -> Option<&AssetGuard> {
        self.assets.iter().find(|g| g.asset == asset)
    }
}

/// What stops a payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GuardKind {
    /// Not on the merchant's allowlist (mode `OrHold`).
    NotAllowlisted,
    /// A burn address, a precompile or a listed contract that cannot receive.
    Unpayable,
    /// Looks like a destination paid before but differs in the middle.
    LookAlike,
    /// A first payout to this destination above the test threshold found just before signing
    /// (the guard was set after intake), or whose test payout failed: treasury decides.
    NewDestination,
    /// Above the large threshold: a time lock and approvals.
    Large,
    /// The rest of a split payout, waiting for its test payout to be final.
    AwaitingTest,
}

impl GuardKind {
    /// Whether the guard releases the payout by itself once its conditions hold.
    pub fn automatic(self) -> bool {
        matches!(self, GuardKind::Large | GuardKind::AwaitingTest)
    }

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn code(self) -> &'static str {
        match self {
            GuardKind::NotAllowlisted => "not_allowlisted",
            GuardKind::Unpayable => "unpayable_destination",
            GuardKind::LookAlike => "look_alike_destination",
            GuardKind::NewDestination => "new_destination",
            GuardKind::Large => "large_payout",
            GuardKind::AwaitingTest => "awaiting_test_payout",
        }
    }
}

/// Why a payout is held by guards, and what releases it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardHold {
    /// Every guard holding it, with its reason in words.
    pub reasons: Vec<(GuardKind, String)>,
    /// The time lock: not planned before.
    pub release_at: Option<Timestamp>,
    pub approvals_needed: u8,
    /// Public ids of the treasury keys that approved it, distinct.
    pub approvals: Vec<String>,
    /// The test payout it waits for.
    pub test: Option<PaymentId>,
}

impl GuardHold {
    pub fn kinds(&self) -> u8 {
        self.reasons.iter().fold(0, |bits, (kind, _)| bits | kind.bit())
    }

    /// Whether any reason needs a person (a treasury key) to release it.
    pub fn needs_release(&self) -> bool {
        self.reasons.iter().any(|(kind, _)| !kind.automatic())
    }

    /// One line for the payment's reason: every guard, and who may release it.
    pub fn describe(&self) -> String {
        let reasons: Vec<&str> = self.reasons.iter().map(|(_, reason)| reason.as_str()).collect();
        format!("held by guards: {}; {}", reasons.join("; "), self.release_by())
    }

    /// Who or what releases it, in words.
    pub fn release_by(&self) -> String {
        let mut conditions = Vec::new();
        if self.needs_release() {
            conditions.push("a treasury key releases it (POST /v1/payments/{id}/release) or rejects it".to_owned());
        }
        if let Some(at) = self.release_at {
            conditions.push(format!("not before {} ms (time lock)", at.0));
        }
        if self.approvals_needed > 0 {
            conditions.push(format!(
                "{} of {} approvals by distinct treasury keys",
                self.approvals.len(),
                self.approvals_needed
            ));
        }
        if let Some(test) = self.test {
            conditions.push(format!("released automatically once test payout {test} is final"));
        }
        conditions.join("; ")
    }

    /// Whether its automatic conditions hold now (the manual ones are released by a person).
    pub fn conditions_met(&self, now: Timestamp, test_settled: bool) -> bool {
        self.release_at.is_none_or(|at| now >= at)
            && self.approvals.len() >= usize::from(self.approvals_needed)
            && (self.test.is_none() || test_settled)
    }
}

/// What the history store and the open state know of a payment's destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// The merchant paid this exact destination before.
    pub paid_before: bool,
    /// A destination the merchant paid before with the same fingerprint but not this one.
    pub look_alike: Option<String>,
    /// An open test payout to this destination from this merchant.
    pub test_pending: Option<PaymentId>,
}

/// What the guards say of one payout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Refused at intake (not on an `Only` allowlist): field and message.
    Refuse(String),
    /// Held; `split` is the test payout to make first (intake only).
    Hold {
        hold: GuardHold,
        split: Option<Amount>,
    },
}

/// Judges one payout. `cleared` holds the guard kinds a release already cleared for it (they
/// are not judged again); `at_intake` says whether a test payout may still be split off
/// (before signing, a new destination is held for treasury instead).
pub fn check(
    policy: Option<&GuardPolicy>,
    payment: &Payment,
    known: &Known,
    cleared: u8,
    now: Timestamp,
    at_intake: bool,
) -> Verdict {
    let mut hold =
        GuardHold { reasons: Vec::new(), release_at: None, approvals_needed: 0, approvals: Vec::new(), test: None };
    let mut split = None;
    let add = |hold: &mut GuardHold, kind: GuardKind, reason: String| {
        if cleared & kind.bit() == 0 {
            hold.reasons.push((kind, reason));
        }
    };
    if let Some(why) = unpayable(&payment.destination) {
        add(&mut hold, GuardKind::Unpayable, format!("destination is {why}"));
    }
    if let Some(policy) = policy {
        // Only a merchant with a policy has lists to look the destination up in.
        let key = address_key(&payment.destination);
        let listed = |list: &[String]| list.contains(&key);
        match policy.allow_mode {
            AllowMode::Only if !listed(&policy.allowlist) => {
                if at_intake {
                    return Verdict::Refuse(format!(
                        "destination {} is not on the merchant's allowlist; treasury adds it first",
                        payment.destination
                    ));
                }
                add(&mut hold, GuardKind::NotAllowlisted, "destination is not on the allowlist".to_owned());
            }
            AllowMode::OrHold if !listed(&policy.allowlist) => {
                add(&mut hold, GuardKind::NotAllowlisted, "destination is not on the allowlist".to_owned());
            }
            _ => {}
        }
        if listed(&policy.blocked) {
            add(
                &mut hold,
                GuardKind::Unpayable,
                "destination is on the blocked list (a contract that cannot receive)".to_owned(),
            );
        }
        if policy.poisoning
            && let Some(similar) = &known.look_alike
        {
            let reason = format!(
                "destination {} looks like {similar}, paid before (same first and last {FINGERPRINT_CHARS} characters): possible address poisoning",
                payment.destination
            );
            add(&mut hold, GuardKind::LookAlike, reason);
        }
        if let Some(guard) = policy.asset(payment.asset) {
            if let Some(above) = guard.large_above
                && payment.amount > above
                && cleared & GuardKind::Large.bit() == 0
            {
                hold.reasons.push((GuardKind::Large, format!("amount above the large-payout threshold of {above}")));
                if policy.large_delay_ms > 0 {
                    hold.release_at = Some(now.saturating_add_ms(policy.large_delay_ms));
                }
                hold.approvals_needed = policy.large_approvals;
            }
            if let Some(above) = guard.test_above
                && payment.amount > above
                && !known.paid_before
            {
                match (known.test_pending, at_intake) {
                    (Some(test), _) if cleared & GuardKind::AwaitingTest.bit() == 0 => {
                        hold.reasons.push((
                            GuardKind::AwaitingTest,
                            format!("waits for test payout {test} to this new destination"),
                        ));
                        hold.test = Some(test);
                    }
                    (None, true) => {
                        let reason = format!(
                            "first payout to a new destination above {above}: a test payout of {} goes first",
                            guard.test_amount
                        );
                        hold.reasons.push((GuardKind::AwaitingTest, reason));
                        split = Some(guard.test_amount);
                    }
                    (None, false) => add(
                        &mut hold,
                        GuardKind::NewDestination,
                        format!("first payout to a new destination above {above}, found before signing"),
                    ),
                    _ => {}
                }
            }
        }
    }
    if hold.reasons.is_empty() { Verdict::Pass } else { Verdict::Hold { hold, split } }
}

/// Why a destination can never be paid, if it cannot.
pub fn unpayable(destination: &Address) -> Option<&'static str> {
    // Every listed EVM burn address is zero but for two bytes: only such an address is spelled
    // out to compare (this runs for every payout at intake and before signing).
    let may_burn = match destination {
        Address::Evm(bytes) => bytes.iter().filter(|b| **b != 0).count() <= 2,
        _ => true,
    };
    if may_burn && BURN.iter().any(|burn| burn.eq_ignore_ascii_case(&address_key(destination))) {
        return Some("a burn address");
    }
    if let Address::Evm(bytes) = destination
        && bytes[..18].iter().all(|b| *b == 0)
    {
        return Some("a precompile or system address (0x0000…ffff)");
    }
    None
}

/// The form lists and indexes compare: EVM lowercase hex, Bitcoin its canonical text.
pub fn address_key(address: &Address) -> String {
    match address {
        Address::Evm(bytes) => {
            // Called for every payout the guards judge: no formatting machinery per byte.
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut text = String::with_capacity(2 + 2 * bytes.len());
            text.push_str("0x");
            for byte in bytes {
                text.push(char::from(HEX[usize::from(byte >> 4)]));
                text.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
            text
        }
        Address::Bitcoin { text, .. } => text.clone(),
    }
}

/// `address_key` of an address given as text on any network, if it is one.
pub fn address_key_of_text(text: &str) -> Option<String> {
    use crate::network::{BitcoinNetwork, ChainId, Network};
    let networks = [
        Network::Evm(ChainId(1)),
        Network::Bitcoin(BitcoinNetwork::Mainnet),
        Network::Bitcoin(BitcoinNetwork::Testnet),
        Network::Bitcoin(BitcoinNetwork::Regtest),
    ];
    networks.iter().find_map(|n| Address::parse(text, *n).ok()).map(|a| address_key(&a))
}

/// The characters a person compares: the first and last `FINGERPRINT_CHARS` after the
/// `0x` or bech32 prefix, lowercase.
pub fn fingerprint(address: &Address) -> String {
    let key = address_key(address).to_ascii_lowercase();
    let body = ["0x", "bcrt1", "bc1", "tb1"].iter().find_map(|p| key.strip_prefix(p)).unwrap_or(&key);
    let chars: Vec<char> = body.chars().collect();
    let n = FINGERPRINT_CHARS.min(chars.len() / 2);
    chars[..n].iter().chain(&chars[chars.len() - n..]).collect()
}

/// Guards in force, the guard holds and what releases cleared: part of the engine's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guards {
    pub policies: BTreeMap<MerchantId, GuardPolicy>,
    /// Payouts held by guards (they are `Held` in the book).
    pub held: BTreeMap<PaymentId, GuardHold>,
    /// Guard kinds released for a payout still open: not judged again before signing.
    pub cleared: BTreeMap<PaymentId, u8>,
    /// Open test payouts, and whether each has settled (`Some(true)`), failed (`Some(false)`).
    pub tests: BTreeMap<PaymentId, Option<bool>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BatchId, Name};
    use crate::network::{ChainId, Network};

    fn payment(destination: &str, amount: u128) -> Payment {
        let network = Network::Evm(ChainId(1));
        Payment {
            id: PaymentId(1),
            batch: BatchId(1),
            merchant: MerchantId(1),
            reference: "r".into(),
            amount: Amount::new(amount),
            asset: Asset::ETH,
            destination: Address::parse(destination, network).unwrap(),
            networks: vec![network],
            class: Name::new("standard").unwrap(),
            deadline: None,
            metadata: BTreeMap::new(),
        }
    }

    const A: &str = "0x1111111111111111111111111111111111111111";

    #[test]
    fn burn_and_precompile_hold_without_a_policy() {
        for dest in ["0x000000000000000000000000000000000000dEaD", "0x0000000000000000000000000000000000000009"] {
            let verdict = check(None, &payment(dest, 5), &Known::default(), 0, Timestamp(0), true);
            assert!(
                matches!(verdict, Verdict::Hold { ref hold, .. } if hold.reasons[0].0 == GuardKind::Unpayable),
                "{dest}"
            );
        }
        assert_eq!(check(None, &payment(A, 5), &Known::default(), 0, Timestamp(0), true), Verdict::Pass);
    }

    #[test]
    fn fingerprints_compare_the_ends() {
        let a = Address::parse(A, Network::Evm(ChainId(1))).unwrap();
        assert_eq!(fingerprint(&a), "11111111");
        let b = Address::parse("0x1111222222222222222222222222222222221111", Network::Evm(ChainId(1))).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn a_cleared_kind_is_not_judged_again_but_others_are() {
        let policy = GuardPolicy {
            allow_mode: AllowMode::OrHold,
            allowlist: vec!["0x2222222222222222222222222222222222222222".into()],
            assets: vec![AssetGuard {
                asset: Asset::ETH,
                test_above: None,
                test_amount: Amount::ZERO,
                large_above: Some(Amount::new(10)),
            }],
            large_delay_ms: 1_000,
            ..GuardPolicy::default()
        };
        policy.validate().unwrap();
        let Verdict::Hold { hold, .. } =
            check(Some(&policy), &payment(A, 50), &Known::default(), 0, Timestamp(5), false)
        else {
            panic!("held")
        };
        assert_eq!(hold.reasons.len(), 2);
        assert_eq!(hold.release_at, Some(Timestamp(1_005)));
        let cleared = GuardKind::NotAllowlisted.bit();
        let Verdict::Hold { hold, .. } =
            check(Some(&policy), &payment(A, 50), &Known::default(), cleared, Timestamp(5), false)
        else {
            panic!("held")
        };
        assert_eq!(hold.reasons.iter().map(|r| r.0).collect::<Vec<_>>(), vec![GuardKind::Large]);
        assert!(!hold.needs_release());
        assert!(!hold.conditions_met(Timestamp(1_004), false));
        assert!(hold.conditions_met(Timestamp(1_005), false));
    }

    #[test]
    fn a_bad_policy_names_its_field() {
        let policy = GuardPolicy {
            assets: vec![AssetGuard {
                asset: Asset::ETH,
                test_above: Some(Amount::new(10)),
                test_amount: Amount::new(10),
                large_above: None,
            }],
            ..GuardPolicy::default()
        };
        assert!(policy.validate().unwrap_err().to_string().starts_with("assets[0].test_amount"));
        let policy = GuardPolicy { allowlist: vec![A.to_uppercase()], ..GuardPolicy::default() };
        assert!(policy.validate().unwrap_err().to_string().starts_with("allowlist[0]"));
    }
}
