//! `Asset`: what is being paid (BTC, ETH, a stablecoin), named by its symbol and scaled by its
//! decimals.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::amount::{Amount, AmountError, DECIMALS_MAX};

const SYMBOL_LEN_MAX: usize = 10;

/// An asset: an uppercase ticker and the number of decimals of its smallest unit.
///
/// `Copy` and fixed-size on purpose: it is carried by every payment, queue entry and ledger
/// account, so it must not allocate.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "AssetRepr")]
pub struct Asset {
    symbol: [u8; SYMBOL_LEN_MAX],
    symbol_len: u8,
    decimals: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssetError {
    #[error("asset symbol {symbol:?} must be 1 to {SYMBOL_LEN_MAX} characters of A-Z and 0-9")]
    BadSymbol { symbol: String },
    #[error("asset {symbol} declares {decimals} decimals; at most {DECIMALS_MAX} are supported")]
    BadDecimals { symbol: String, decimals: u8 },
}

impl Asset {
    pub const BTC: Asset = Asset::known(b"BTC", 8);
    pub const ETH: Asset = Asset::known(b"ETH", 18);
    pub const USDC: Asset = Asset::known(b"USDC", 6);
    pub const USDT: Asset = Asset::known(b"USDT", 6);

    const fn known(symbol: &[u8], decimals: u8) -> Asset {
        let mut bytes = [0u8; SYMBOL_LEN_MAX];
        let mut i = 0;
        while i < symbol.len() {
            bytes[i] = symbol[i];
            i += 1;
        }
        #[allow(clippy::cast_possible_truncation)] // symbols above are all shorter than 10
        Asset { symbol: bytes, symbol_len: symbol.len() as u8, decimals }
    }

    /// An asset from configuration (for example a stablecoin registry entry).
    pub fn new(symbol: &str, decimals: u8) -> Result<Asset, AssetError> {
        let valid = !symbol.is_empty()
            && symbol.len() <= SYMBOL_LEN_MAX
            && symbol.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !valid {
            return Err(AssetError::BadSymbol { symbol: symbol.to_owned() });
        }
        if decimals > DECIMALS_MAX {
            return Err(AssetError::BadDecimals { symbol: symbol.to_owned(), decimals });
        }
        Ok(Asset::known(symbol.as_bytes(), decimals))
    }

    pub fn symbol(&self) -> &str {
        let bytes = &self.symbol[..usize::from(self.symbol_len)];
        std::str::from_utf8(bytes).expect("asset symbols are validated as ASCII")
    }

    pub const fn decimals(&self) -> u8 {
        self.decimals
    }

    /// Parses a decimal amount of this asset: `"12.5"` USDC is 12_500_000 units.
    pub fn parse_amount(&self, text: &str) -> Result<Amount, AmountError> {
        Amount::parse_decimal(text, self.decimals)
    }

    pub fn format_amount(&self, amount: Amount) -> String {
        amount.format_decimal(self.decimals)
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

impl fmt::Debug for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.symbol(), self.decimals)
    }
}

#[derive(Deserialize)]
struct AssetRepr {
    symbol: String,
    decimals: u8,
}

impl TryFrom<AssetRepr> for Asset {
    type Error = AssetError;
    fn try_from(repr: AssetRepr) -> Result<Asset, AssetError> {
        Asset::new(&repr.symbol, repr.decimals)
    }
}

/// `AssetRepr` as it is written, borrowing the symbol: every payment carries an asset, and
/// writing one must not allocate.
#[derive(Serialize)]
#[serde(rename = "AssetRepr")]
struct AssetReprRef<'a> {
    symbol: &'a str,
    decimals: u8,
}

impl Serialize for Asset {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AssetReprRef { symbol: self.symbol(), decimals: self.decimals }.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_validated() {
        assert_eq!(Asset::new("USDC", 6).unwrap(), Asset::USDC);
        assert_eq!(Asset::USDC.symbol(), "USDC");
        for bad in ["", "usdc", "US DC", "ABCDEFGHIJK", "€"] {
            assert!(Asset::new(bad, 6).is_err(), "{bad:?}");
        }
        assert!(Asset::new("X", 39).is_err());
    }

    /// Written exactly as the owned form it is read back from.
    #[test]
    fn encoded_as_its_repr() {
        for asset in [Asset::USDC, Asset::BTC, Asset::new("XYZ1", 12).unwrap()] {
            let bytes = postcard::to_stdvec(&asset).unwrap();
            // A struct is its fields in order: the owned symbol, then the decimals.
            let owned = (asset.symbol().to_owned(), asset.decimals());
            assert_eq!(bytes, postcard::to_stdvec(&owned).unwrap());
            assert_eq!(postcard::from_bytes::<Asset>(&bytes).unwrap(), asset);
        }
    }

    #[test]
    fn amounts_use_the_asset_scale() {
        assert_eq!(Asset::USDC.parse_amount("12.345678").unwrap().units(), 12_345_678);
        assert!(Asset::USDC.parse_amount("12.3456789").is_err());
        assert_eq!(Asset::BTC.format_amount(Amount::new(150_000_000)), "1.5");
    }
}
