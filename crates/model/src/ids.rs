//! Identifiers and time: numeric ids for the things railyard tracks, short validated names for
//! the things operators configure (rails, priority classes), and the injected clock's unit.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident($int:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $int);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:x}", self.0)
            }
        }
    };
}

numeric_id!(
    /// One payout requested by a merchant.
    PaymentId(u128)
);
numeric_id!(
    /// What a merchant submits: one or more payments accepted or rejected together.
    BatchId(u128)
);
numeric_id!(
    /// What goes on a rail: one transaction paying one or more payments.
    SettlementId(u128)
);
numeric_id!(
    /// A merchant account.
    MerchantId(u64)
);

/// Milliseconds since the Unix epoch. The core never reads a clock: time is always an input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn saturating_add_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

const NAME_LEN_MAX: usize = 24;

/// A short configured name (`base`, `payroll`): lowercase ASCII letters, digits, `-` and `_`,
/// 1 to 24 characters. `Copy` so that hot paths carry names without allocating; it is encoded
/// and decoded as a string without one either.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name {
    bytes: [u8; NAME_LEN_MAX],
    len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("name {text:?} must be 1 to {NAME_LEN_MAX} characters of a-z, 0-9, '-' and '_'")]
pub struct NameError {
    pub text: String,
}

impl Name {
    pub fn new(text: &str) -> Result<Name, NameError> {
        let valid = !text.is_empty()
            && text.len() <= NAME_LEN_MAX
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(NameError { text: text.to_owned() });
        }
        let mut bytes = [0u8; NAME_LEN_MAX];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        let len = u8::try_from(text.len()).expect("length checked above");
        Ok(Name { bytes, len })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("names are validated as ASCII")
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
                Name::new(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A rail: one network plus one asset family, named in configuration (`bitcoin`, `base`).
pub type RailId = Name;
/// A priority class configured by treasury staff (`urgent`, `payroll`, `standard`, `bulk`).
pub type ClassName = Name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert_eq!(Name::new("payroll").unwrap().as_str(), "payroll");
        assert_eq!(Name::new("base-usdc_2").unwrap().to_string(), "base-usdc_2");
        for bad in ["", "Payroll", "a b", "x".repeat(25).as_str(), "é"] {
            assert!(Name::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_encode_as_strings_and_decode_only_when_valid() {
        let name = Name::new("base-usdc_2").unwrap();
        let bytes = postcard::to_stdvec(&name).unwrap();
        assert_eq!(bytes, postcard::to_stdvec("base-usdc_2").unwrap());
        assert_eq!(postcard::from_bytes::<Name>(&bytes).unwrap(), name);
        let bad = postcard::to_stdvec("Base").unwrap();
        let error = postcard::from_bytes::<Name>(&bad).unwrap_err();
        assert!(matches!(error, postcard::Error::SerdeDeCustom), "{error:?}");
    }
}
