//! `Amount`: money as an unsigned integer in the asset's smallest unit, with checked arithmetic
//! and exact decimal parsing and formatting.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The widest number of decimals an asset may declare: `10^38` is the largest power of ten a
/// u128 holds, so a scale beyond it could not represent even one whole unit.
pub const DECIMALS_MAX: u8 = 38;

/// An amount of money in the asset's smallest unit (sats, wei, 10^-6 USDC).
///
/// There is no float anywhere near it, and arithmetic never wraps: every operation is checked
/// and overflow is an error the caller must handle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(u128);

/// Why a decimal string is not an amount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {text:?} is not a plain decimal number (digits with at most one '.')")]
    Malformed { text: String },
    #[error("amount {text:?} has {found} decimals but the asset allows at most {allowed}")]
    TooManyDecimals { text: String, found: usize, allowed: u8 },
    #[error("amount {text:?} is too large to represent")]
    Overflow { text: String },
    #[error("asset decimals {decimals} exceed the maximum of {DECIMALS_MAX}")]
    DecimalsOutOfRange { decimals: u8 },
    #[error("amount arithmetic overflowed")]
    ArithmeticOverflow,
}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    pub const MAX: Amount = Amount(u128::MAX);

    pub const fn new(units: u128) -> Amount {
        Amount(units)
    }

    /// The amount in the asset's smallest unit.
    pub const fn units(self) -> u128 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn checked_mul(self, factor: u128) -> Option<Amount> {
        self.0.checked_mul(factor).map(Amount)
    }

    /// `checked_add` as a `Result`, for use with `?` in code that treats overflow as an error.
    pub fn try_add(self, other: Amount) -> Result<Amount, AmountError> {
        self.checked_add(other).ok_or(AmountError::ArithmeticOverflow)
    }

    /// Sums amounts, failing on overflow rather than wrapping.
    pub fn try_sum<I: IntoIterator<Item = Amount>>(amounts: I) -> Result<Amount, AmountError> {
        amounts.into_iter().try_fold(Amount::ZERO, Amount::try_add)
    }

    /// Parses an exact decimal string such as `"12.345678"` at the given scale.
    ///
    /// Accepted: ASCII digits, optionally one `.` followed by at least one digit, at most
    /// `decimals` fraction digits. Refused: signs, exponents, whitespace, separators, an empty
    /// integer part, and anything that would need rounding.
    pub fn parse_decimal(text: &str, decimals: u8) -> Result<Amount, AmountError> {
        if decimals > DECIMALS_MAX {
            return Err(AmountError::DecimalsOutOfRange { decimals });
        }
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        let malformed = || AmountError::Malformed { text: text.to_owned() };
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) {
            return Err(malformed());
        }
        let fraction = fraction.unwrap_or("");
        if text.contains('.') && !all_digits(fraction) {
            return Err(malformed());
        }
        if fraction.len() > usize::from(decimals) {
            return Err(AmountError::TooManyDecimals {
                text: text.to_owned(),
                found: fraction.len(),
                allowed: decimals,
            });
        }
        let overflow = || AmountError::Overflow { text: text.to_owned() };
        let mut units: u128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            units = units.checked_mul(10).and_then(|u| u.checked_add(u128::from(digit - b'0'))).ok_or_else(overflow)?;
        }
        let padding = u32::from(decimals) - u32::try_from(fraction.len()).map_err(|_| overflow())?;
        let scale = 10u128.checked_pow(padding).ok_or_else(overflow)?;
        units.checked_mul(scale).map(Amount).ok_or_else(overflow)
    }

    /// Formats exactly at the given scale, without trailing fraction zeros: 12345678 at 6
    /// decimals is `"12.345678"`, 12000000 is `"12"`. `parse_decimal` reads it back unchanged.
    pub fn format_decimal(self, decimals: u8) -> String {
        assert!(decimals <= DECIMALS_MAX, "asset decimals out of range: {decimals}");
        let scale = 10u128.pow(u32::from(decimals));
        let whole = self.0 / scale;
        let fraction = self.0 % scale;
        if fraction == 0 {
            return whole.to_string();
        }
        let digits = format!("{fraction:0width$}", width = usize::from(decimals));
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok: &[(&str, u8, u128)] = &[
            ("12.345678", 6, 12_345_678),
            ("12", 6, 12_000_000),
            ("0.000001", 6, 1),
            ("0", 6, 0),
            ("007.5", 2, 750),
            ("1", 0, 1),
            ("21000000", 8, 2_100_000_000_000_000),
            ("1.000000000000000001", 18, 1_000_000_000_000_000_001),
            ("340282366920938463463374607431768211455", 0, u128::MAX),
        ];
        for &(text, decimals, units) in ok {
            let amount = Amount::parse_decimal(text, decimals).unwrap();
            assert_eq!(amount.units(), units, "{text} at {decimals}");
        }
        let bad: &[(&str, u8, &str)] = &[
            ("", 6, "empty"),
            ("12.3456789", 6, "7 decimals"),
            ("1.5", 0, "1 decimals"),
            ("-1", 6, "plain decimal"),
            ("+1", 6, "plain decimal"),
            ("1e6", 6, "plain decimal"),
            (" 1", 6, "plain decimal"),
            ("1,000", 6, "plain decimal"),
            (".5", 6, "plain decimal"),
            ("5.", 6, "plain decimal"),
            ("1.2.3", 6, "plain decimal"),
            ("١", 6, "plain decimal"),
            ("340282366920938463463374607431768211456", 0, "too large"),
            ("340282366920938463463374607431768211455", 1, "too large"),
            ("1", 39, "exceed the maximum"),
        ];
        for &(text, decimals, reason) in bad {
            let error = Amount::parse_decimal(text, decimals).unwrap_err().to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn format_table() {
        let cases: &[(u128, u8, &str)] = &[
            (12_345_678, 6, "12.345678"),
            (12_000_000, 6, "12"),
            (1, 6, "0.000001"),
            (0, 6, "0"),
            (10, 2, "0.1"),
            (5, 0, "5"),
            (u128::MAX, 18, "340282366920938463463.374607431768211455"),
        ];
        for &(units, decimals, text) in cases {
            assert_eq!(Amount::new(units).format_decimal(decimals), text);
        }
    }

    #[test]
    fn checked_arithmetic_never_wraps() {
        assert_eq!(Amount::MAX.checked_add(Amount::new(1)), None);
        assert_eq!(Amount::ZERO.checked_sub(Amount::new(1)), None);
        assert_eq!(Amount::MAX.checked_mul(2), None);
        assert!(Amount::try_sum([Amount::MAX, Amount::new(1)]).is_err());
        assert_eq!(Amount::try_sum([Amount::new(2), Amount::new(3)]), Ok(Amount::new(5)));
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(units: u128, decimals in 0u8..=38) {
            let text = Amount::new(units).format_decimal(decimals);
            proptest::prop_assert_eq!(Amount::parse_decimal(&text, decimals), Ok(Amount::new(units)));
        }
    }
}
