//! Buffer pools: the liquidity railyard holds per (rail, asset), as ledger accounts.
//!
//! Planning a settlement reserves its amount and its fee estimate as pending transfers out of
//! the pool (a linked pair: both or neither); finality posts them (the fee in part: what was
//! actually paid); a rollback voids them. A pool below its minimum raises an alert, and then
//! only the urgent class may reserve from it (down to zero, never below: the ledger's
//! non-negative flag refuses it).

use std::collections::BTreeMap;

use ledger::{AccountFlags, AccountId, Ledger, LinkedError, Op, Owner, Transfer, TransferId};
use model::{Amount, Asset, RailId, SettlementId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub rail: RailId,
    pub asset: Asset,
    pub min: Amount,
    pub target: Amount,
    pub max: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertKind {
    BelowMin,
    AboveMax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAlert {
    pub rail: RailId,
    pub asset: Asset,
    pub available: Amount,
    pub kind: AlertKind,
    /// How much to move to bring the pool back to its target.
    pub to_target: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("no pool is configured for {asset} on rail {rail}")]
    NoPool { rail: RailId, asset: Asset },
    #[error("pool {asset} on {rail} would fall below its minimum; only urgent payments may use the reserve")]
    BelowMin { rail: RailId, asset: Asset },
    #[error("pool {asset} on {rail} holds too little")]
    Short { rail: RailId, asset: Asset },
    #[error("settlement {0} already has a reservation")]
    AlreadyReserved(SettlementId),
    #[error("settlement {0} reserves nothing: a settlement pays more than zero")]
    Empty(SettlementId),
    #[error("settlement {0} has no open reservation")]
    NoReservation(SettlementId),
    #[error("ledger refused: {0}")]
    Ledger(#[from] LinkedError),
    #[error("ledger refused: {0}")]
    Transfer(#[from] ledger::TransferError),
    #[error("pool configuration: {0}")]
    Config(String),
}

/// A reservation request: `amount` of `asset` and `fee` of `fee_asset` from `rail`'s pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserve {
    pub settlement: SettlementId,
    pub rail: RailId,
    pub asset: Asset,
    pub amount: Amount,
    pub fee_asset: Asset,
    pub fee: Amount,
    /// The urgent class may use the reserve below the pool's minimum.
    pub urgent: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Reservation {
    amount: TransferId,
    fee: TransferId,
    fee_reserved: Amount,
    open: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pools {
    ledger: Ledger,
    configs: BTreeMap<(RailId, Asset), PoolConfig>,
    /// Each rail's pool of its fee asset (configured or not).
    fee_pools: std::collections::BTreeSet<(RailId, Asset)>,
    reservations: BTreeMap<SettlementId, Reservation>,
}

/// A stable id for an account or a transfer, from what it is for.
fn derived_id(parts: &[&[u8]]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let bytes: [u8; 16] = hasher.finalize().as_bytes()[..16].try_into().expect("16 bytes");
    u128::from_le_bytes(bytes)
}

/// An account's id: a hash of a fixed byte encoding of its owner (a kind byte, then the id)
/// and its asset, so ids never depend on how a type prints itself.
fn account_id(owner: Owner, asset: Asset) -> AccountId {
    let mut encoded = [0u8; 1 + 16];
    let rail_name = match owner {
        Owner::Pool(rail) | Owner::InFlight(rail) | Owner::Fees(rail) => Some(rail),
        _ => None,
    };
    let name = rail_name.as_ref().map_or("", |r| r.as_str());
    let id = match owner {
        Owner::Merchant(merchant) => {
            encoded[0] = 1;
            u128::from(merchant.0)
        }
        Owner::Pool(_) => {
            encoded[0] = 2;
            0
        }
        Owner::InFlight(_) => {
            encoded[0] = 3;
            0
        }
        Owner::Fees(_) => {
            encoded[0] = 4;
            0
        }
        Owner::PaidOut => {
            encoded[0] = 5;
            0
        }
        Owner::Treasury => {
            encoded[0] = 6;
            0
        }
    };
    encoded[1..].copy_from_slice(&id.to_le_bytes());
    AccountId(derived_id(&[b"account", &encoded, name.as_bytes(), asset.symbol().as_bytes()]))
}

fn transfer_id(settlement: SettlementId, what: &str) -> TransferId {
    TransferId(derived_id(&[b"transfer", &settlement.0.to_le_bytes(), what.as_bytes()]))
}

impl Pools {
    /// The pools of a configuration. Their ledger accounts open with the first fact about
    /// them (a funding, a reservation), not here: the ledger then holds the same accounts
    /// however the state was rebuilt (a full replay under today's configuration, or a
    /// snapshot written under another: a rail removed since left its accounts only in the
    /// snapshot, found by the simulator).
    pub fn new(configs: &[PoolConfig], fee_assets: &[(RailId, Asset)]) -> Result<Pools, PoolError> {
        let mut pools = Pools {
            ledger: Ledger::new(),
            configs: BTreeMap::new(),
            fee_pools: fee_assets.iter().copied().collect(),
            reservations: BTreeMap::new(),
        };
        for config in configs {
            if !(config.min <= config.target && config.target <= config.max) {
                return Err(PoolError::Config(format!(
                    "pool {} on {}: min <= target <= max is required",
                    config.asset, config.rail
                )));
            }
            if pools.configs.insert((config.rail, config.asset), *config).is_some() {
                return Err(PoolError::Config(format!("pool {} on {} is configured twice", config.asset, config.rail)));
            }
        }
        Ok(pools)
    }

    /// Opens the accounts of `rail`'s pool of `asset` if they do not exist yet.
    fn open(&mut self, rail: RailId, asset: Asset) {
        if self.ledger.account(account_id(Owner::Pool(rail), asset)).is_none() {
            self.open_accounts(rail, asset);
        }
    }

    fn open_accounts(&mut self, rail: RailId, asset: Asset) {
        let accounts = [
            (Owner::Treasury, AccountFlags::UNCONSTRAINED),
            (Owner::Pool(rail), AccountFlags::NON_NEGATIVE),
            (Owner::PaidOut, AccountFlags::UNCONSTRAINED),
            (Owner::Fees(rail), AccountFlags::UNCONSTRAINED),
        ];
        for (owner, flags) in accounts {
            self.ledger
                .create_account(account_id(owner, asset), owner, asset, flags)
                .expect("derived accounts are consistent");
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Moves `amount` from the treasury into the pool (a deposit to the rail's hot wallet).
    /// A funding is a fact: its pool's accounts open if they are not (a rail configured
    /// today or not; whether the treasury may fund it is the caller's rule).
    pub fn fund(&mut self, rail: RailId, asset: Asset, amount: Amount, id: TransferId) -> Result<(), PoolError> {
        // A refused funding changes nothing: accounts it opened are taken back (rare: only a
        // pool's first funding opens them).
        let before = self.ledger.account(account_id(Owner::Pool(rail), asset)).is_none().then(|| self.ledger.clone());
        self.open(rail, asset);
        let op = Op::Single {
            debit: account_id(Owner::Treasury, asset),
            credit: account_id(Owner::Pool(rail), asset),
            amount,
        };
        if let Err(error) = self.ledger.apply(&Transfer { id, op }) {
            if let Some(before) = before {
                self.ledger = before;
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// The configured pools, by (rail, asset).
    pub fn configured(&self) -> impl Iterator<Item = (RailId, Asset)> + '_ {
        self.configs.keys().copied()
    }

    /// Whether `rail` has a pool of `asset`: configured, the rail's fee asset, or holding
    /// facts from before a configuration change.
    pub fn has_pool(&self, rail: RailId, asset: Asset) -> bool {
        self.configs.contains_key(&(rail, asset))
            || self.fee_pools.contains(&(rail, asset))
            || self.ledger.account(account_id(Owner::Pool(rail), asset)).is_some()
    }

    /// What the pool can still reserve (posted credits less everything debited or reserved).
    pub fn available(&self, rail: RailId, asset: Asset) -> Amount {
        self.ledger.account(account_id(Owner::Pool(rail), asset)).and_then(|a| a.available()).unwrap_or(Amount::ZERO)
    }

    /// What the pool has reserved for settlements not yet final.
    pub fn reserved(&self, rail: RailId, asset: Asset) -> Amount {
        self.ledger.account(account_id(Owner::Pool(rail), asset)).map_or(Amount::ZERO, |a| a.balance.debits_pending)
    }

    /// The pool's configured min / target / max, if it is configured.
    pub fn config(&self, rail: RailId, asset: Asset) -> Option<&PoolConfig> {
        self.configs.get(&(rail, asset))
    }

    /// What a payment may take from the pool: what it can still reserve, less the pool's
    /// minimum unless the payment is urgent (only urgent payments dip into the reserve).
    pub fn spendable(&self, rail: RailId, asset: Asset, urgent: bool) -> Amount {
        let available = self.available(rail, asset);
        match self.configs.get(&(rail, asset)) {
            Some(config) if !urgent => available.checked_sub(config.min).unwrap_or(Amount::ZERO),
            _ => available,
        }
    }

    /// Whether the engine may decide `request` now: the pool holds the amount and fee, and
    /// what is left stays at or above the pool's minimum unless the settlement is urgent.
    /// Changes nothing.
    pub fn can_reserve(&self, request: &Reserve) -> Result<(), PoolError> {
        let config = self.configs.get(&(request.rail, request.asset));
        let config = config.ok_or(PoolError::NoPool { rail: request.rail, asset: request.asset })?;
        let floor = if request.urgent { Amount::ZERO } else { config.min };
        self.check(request, floor)
    }

    /// Whether the ledger can hold `request` as a fact: not reserved yet, and the pool holds
    /// the amount and fee. No policy: a minimum is a rule for deciding, checked by
    /// `can_reserve` when the engine decides; replaying a decision already journaled must
    /// not re-judge it by today's configuration (raising a minimum made the engine unable to
    /// start, found by the simulator).
    pub fn can_hold(&self, request: &Reserve) -> Result<(), PoolError> {
        self.check(request, Amount::ZERO)
    }

    fn check(&self, request: &Reserve, floor: Amount) -> Result<(), PoolError> {
        let Reserve { settlement, rail, asset, amount, fee_asset, fee, urgent } = *request;
        if self.reservations.contains_key(&settlement) {
            return Err(PoolError::AlreadyReserved(settlement));
        }
        if amount.is_zero() {
            return Err(PoolError::Empty(settlement));
        }
        let fee_pool = (!fee.is_zero()).then_some(fee_asset);
        for asset in std::iter::once(asset).chain(fee_pool) {
            if !self.has_pool(rail, asset) {
                return Err(PoolError::NoPool { rail, asset });
            }
        }
        let same = asset == fee_asset;
        let needed = if same { amount.checked_add(fee) } else { Some(amount) };
        let left = needed.and_then(|n| self.available(rail, asset).checked_sub(n));
        if left.is_none_or(|left| left < floor) {
            return Err(if urgent || floor.is_zero() {
                PoolError::Short { rail, asset }
            } else {
                PoolError::BelowMin { rail, asset }
            });
        }
        if !same && self.available(rail, fee_asset) < fee {
            return Err(PoolError::Short { rail, asset: fee_asset });
        }
        Ok(())
    }

    /// Takes today's pool configuration (minimums, targets, new pools) over what a snapshot
    /// was written with; accounts and reservations stay as they are.
    pub fn reconfigure(&mut self, configs: &[PoolConfig], fee_assets: &[(RailId, Asset)]) -> Result<(), PoolError> {
        let mut next = BTreeMap::new();
        for config in configs {
            if !(config.min <= config.target && config.target <= config.max) {
                return Err(PoolError::Config(format!(
                    "pool {} on {}: min <= target <= max is required",
                    config.asset, config.rail
                )));
            }
            next.insert((config.rail, config.asset), *config);
        }
        self.configs = next;
        self.fee_pools = fee_assets.iter().copied().collect();
        Ok(())
    }

    /// Changes a configured pool's min / target / max (treasury's decision). Reservations and
    /// balances are facts and stay; the new minimum applies to decisions from now on.
    pub fn set_thresholds(&mut self, config: PoolConfig) -> Result<(), PoolError> {
        let key = (config.rail, config.asset);
        if !self.configs.contains_key(&key) {
            return Err(PoolError::Config(format!(
                "no pool of {} on rail {} is configured",
                config.asset, config.rail
            )));
        }
        if !(config.min <= config.target && config.target <= config.max) {
            return Err(PoolError::Config(format!(
                "pool {} on {}: min <= target <= max is required",
                config.asset, config.rail
            )));
        }
        self.configs.insert(key, config);
        Ok(())
    }

    /// Reserves the amount and the fee estimate of a settlement, both or neither.
    pub fn reserve(&mut self, request: &Reserve) -> Result<(), PoolError> {
        self.can_hold(request)?;
        let Reserve { settlement, rail, asset, amount, fee_asset, fee, .. } = *request;
        self.open(rail, asset);
        if !fee.is_zero() {
            self.open(rail, fee_asset);
        }
        let (amount_id, fee_id) = (transfer_id(settlement, "amount"), transfer_id(settlement, "fee"));
        let pool = |asset| account_id(Owner::Pool(rail), asset);
        let mut chain = vec![Transfer {
            id: amount_id,
            op: Op::Pending { debit: pool(asset), credit: account_id(Owner::PaidOut, asset), amount },
        }];
        if !fee.is_zero() {
            let op =
                Op::Pending { debit: pool(fee_asset), credit: account_id(Owner::Fees(rail), fee_asset), amount: fee };
            chain.push(Transfer { id: fee_id, op });
        }
        self.ledger.apply_linked(&chain)?;
        self.reservations
            .insert(settlement, Reservation { amount: amount_id, fee: fee_id, fee_reserved: fee, open: true });
        Ok(())
    }

    fn open_reservation(&self, settlement: SettlementId) -> Result<Reservation, PoolError> {
        match self.reservations.get(&settlement) {
            Some(r) if r.open => Ok(r.clone()),
            _ => Err(PoolError::NoReservation(settlement)),
        }
    }

    /// Finality: posts the amount in full and `fee_paid` of the fee reservation (at most what
    /// was reserved; the rest goes back to the pool).
    pub fn post(&mut self, settlement: SettlementId, fee_paid: Amount) -> Result<(), PoolError> {
        let reservation = self.open_reservation(settlement)?;
        let amount = self.ledger.transfer(reservation.amount).and_then(|t| match t.op {
            Op::Pending { amount, .. } => Some(amount),
            _ => None,
        });
        let amount = amount.ok_or(PoolError::NoReservation(settlement))?;
        let mut chain = vec![Transfer {
            id: transfer_id(settlement, "post-amount"),
            op: Op::Post { pending: reservation.amount, amount },
        }];
        if !reservation.fee_reserved.is_zero() {
            let fee_id = transfer_id(settlement, "post-fee");
            let op = if fee_paid.is_zero() {
                Op::Void { pending: reservation.fee }
            } else {
                Op::Post { pending: reservation.fee, amount: fee_paid.min(reservation.fee_reserved) }
            };
            chain.push(Transfer { id: fee_id, op });
        }
        self.ledger.apply_linked(&chain)?;
        self.close(settlement);
        Ok(())
    }

    /// A resolved reservation leaves memory: settlement ids are never reused.
    fn close(&mut self, settlement: SettlementId) {
        let reservation = self.reservations.remove(&settlement).expect("an open reservation");
        self.ledger.forget_resolved(&[reservation.amount, reservation.fee]);
    }

    /// Rollback: voids both reservations; the money is back in the pool.
    pub fn void(&mut self, settlement: SettlementId) -> Result<(), PoolError> {
        self.void_burning(settlement, Amount::ZERO)
    }

    /// A dead attempt whose own transaction was mined all the same (it reverted, or its
    /// cancel went through): nobody was paid, so the amount goes back to the pool, but the
    /// chain charged that transaction's fee, and `fee_burnt` of the fee reservation (at most
    /// what was reserved) is posted to the fee account.
    pub fn void_burning(&mut self, settlement: SettlementId, fee_burnt: Amount) -> Result<(), PoolError> {
        let reservation = self.open_reservation(settlement)?;
        let mut chain =
            vec![Transfer { id: transfer_id(settlement, "void-amount"), op: Op::Void { pending: reservation.amount } }];
        if !reservation.fee_reserved.is_zero() {
            let op = if fee_burnt.is_zero() {
                Op::Void { pending: reservation.fee }
            } else {
                Op::Post { pending: reservation.fee, amount: fee_burnt.min(reservation.fee_reserved) }
            };
            chain.push(Transfer { id: transfer_id(settlement, "void-fee"), op });
        }
        self.ledger.apply_linked(&chain)?;
        self.close(settlement);
        Ok(())
    }

    /// Pools outside [min, max], with how far they are from their target.
    pub fn alerts(&self) -> Vec<PoolAlert> {
        let mut alerts = Vec::new();
        for config in self.configs.values() {
            let available = self.available(config.rail, config.asset);
            let kind = if available < config.min {
                AlertKind::BelowMin
            } else if available > config.max {
                AlertKind::AboveMax
            } else {
                continue;
            };
            let to_target = available.max(config.target).checked_sub(available.min(config.target)).expect("max - min");
            alerts.push(PoolAlert { rail: config.rail, asset: config.asset, available, kind, to_target });
        }
        alerts
    }

    pub fn open_reservations(&self) -> usize {
        self.reservations.values().filter(|r| r.open).count()
    }
}
