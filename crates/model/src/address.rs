//! `Address`: a payout destination, validated for the network it will be paid on.
//!
//! Bitcoin addresses are parsed by the `bitcoin` crate (checksum, and the network the address
//! encodes). EVM addresses are 20 bytes of hex; a mixed-case address must carry a valid EIP-55
//! checksum, since a mistyped character in a checksummed address is exactly what EIP-55 exists
//! to catch. All-lowercase or all-uppercase hex carries no checksum and is accepted as is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::network::{BitcoinNetwork, Network};

const ADDRESS_LEN_MAX: usize = 128;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A Bitcoin address in its canonical text form, and the network it was checked against.
    Bitcoin { network: BitcoinNetwork, text: String },
    /// An EVM address: the same 20 bytes are valid on every EVM chain.
    Evm([u8; 20]),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than {ADDRESS_LEN_MAX} characters")]
    TooLong,
    #[error("not a valid bitcoin address: {reason}")]
    Bitcoin { reason: String },
    #[error("bitcoin address {text} is not valid on {network}")]
    WrongNetwork { text: String, network: Network },
    #[error("not a valid EVM address: expected 0x followed by 40 hex digits")]
    EvmFormat,
    #[error("EVM address {text} fails its EIP-55 checksum: check it for a typo")]
    EvmChecksum { text: String },
    #[error("EVM address is the zero address; a payout there is burned")]
    EvmZero,
    #[error("address {text} is for a different kind of network than {network}")]
    FamilyMismatch { text: String, network: Network },
}

impl Address {
    /// Parses `text` as a destination on `network`.
    pub fn parse(text: &str, network: Network) -> Result<Address, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.len() > ADDRESS_LEN_MAX {
            return Err(AddressError::TooLong);
        }
        match network {
            Network::Bitcoin(net) => parse_bitcoin(text, net),
            Network::Evm(_) => parse_evm(text),
        }
    }

    /// Parses `text` and checks that it is valid on every one of `networks`.
    pub fn parse_for(text: &str, networks: &[Network]) -> Result<Address, AddressError> {
        let (first, rest) = networks.split_first().ok_or(AddressError::Empty)?;
        let address = Address::parse(text, *first)?;
        for network in rest {
            if !address.is_valid_on(*network) {
                return Err(address.mismatch(*network));
            }
        }
        Ok(address)
    }

    /// Whether this (already validated) address can receive a payout on `network`.
    pub fn is_valid_on(&self, network: Network) -> bool {
        match (self, network) {
            (Address::Evm(_), Network::Evm(_)) => true,
            (Address::Bitcoin { text, .. }, Network::Bitcoin(net)) => parse_bitcoin(text, net).is_ok(),
            _ => false,
        }
    }

    /// The error for this address on a network it is not valid on.
    pub(crate) fn mismatch(&self, network: Network) -> AddressError {
        match (self, network) {
            (Address::Bitcoin { text, .. }, Network::Bitcoin(_)) => {
                AddressError::WrongNetwork { text: text.clone(), network }
            }
            _ => AddressError::FamilyMismatch { text: self.to_string(), network },
        }
    }
}

fn parse_bitcoin(text: &str, network: BitcoinNetwork) -> Result<Address, AddressError> {
    let unchecked =
        bitcoin::Address::from_str(text).map_err(|error| AddressError::Bitcoin { reason: error.to_string() })?;
    if !unchecked.is_valid_for_network(network.to_bitcoin()) {
        return Err(AddressError::WrongNetwork { text: text.to_owned(), network: Network::Bitcoin(network) });
    }
    let checked = unchecked.assume_checked();
    Ok(Address::Bitcoin { network, text: checked.to_string() })
}

fn parse_evm(text: &str) -> Result<Address, AddressError> {
    let hex = text.strip_prefix("0x").ok_or(AddressError::EvmFormat)?;
    // One pass over the digits (intake parses every row's destination).
    let (mut digits, mut has_lower, mut has_upper) = (hex.len() == 40, false, false);
    for b in hex.bytes() {
        digits &= b.is_ascii_hexdigit();
        has_lower |= b.is_ascii_lowercase();
        has_upper |= b.is_ascii_uppercase();
    }
    if !digits {
        return Err(AddressError::EvmFormat);
    }
    let parsed = if has_lower && has_upper {
        alloy_primitives::Address::parse_checksummed(text, None)
            .map_err(|_| AddressError::EvmChecksum { text: text.to_owned() })?
    } else {
        let bytes: [u8; 20] = alloy_primitives::hex::decode_to_array(hex).map_err(|_| AddressError::EvmFormat)?;
        alloy_primitives::Address::from(bytes)
    };
    if parsed.is_zero() {
        return Err(AddressError::EvmZero);
    }
    Ok(Address::Evm(parsed.into_array()))
}

impl fmt::Display for Address {
    /// Bitcoin in canonical form; EVM with its EIP-55 checksum.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Bitcoin { text, .. } => f.write_str(text),
            Address::Evm(bytes) => f.write_str(&alloy_primitives::Address::from(*bytes).to_checksum(None)),
        }
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ChainId;

    const MAIN: Network = Network::Bitcoin(BitcoinNetwork::Mainnet);
    const TEST: Network = Network::Bitcoin(BitcoinNetwork::Testnet);
    const REGTEST: Network = Network::Bitcoin(BitcoinNetwork::Regtest);

    #[test]
    fn parse_table() {
        // (text, network, Ok(display) or Err(part of the message))
        let cases: &[(&str, Network, Result<&str, &str>)] = &[
            ("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", MAIN, Ok("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")),
            ("BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ", MAIN, Ok("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")),
            ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", MAIN, Ok("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2")),
            ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", MAIN, Ok("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy")),
            ("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", TEST, Err("not valid on bitcoin-testnet")),
            ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", TEST, Ok("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx")),
            ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", MAIN, Err("not valid on bitcoin")),
            ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", REGTEST, Err("not valid on bitcoin-regtest")),
            // one character changed: the bech32 checksum catches it
            ("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdp", MAIN, Err("not a valid bitcoin address")),
            ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", MAIN, Err("not a valid bitcoin address")),
            ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", MAIN, Err("not a valid bitcoin address")),
            (
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                Network::ETHEREUM,
                Ok("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            ),
            (
                "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
                Network::BASE,
                Ok("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            ),
            (
                "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED",
                Network::BASE,
                Ok("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            ),
            ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", Network::ETHEREUM, Err("EIP-55")),
            ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", Network::ETHEREUM, Err("40 hex digits")),
            ("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", Network::ETHEREUM, Err("40 hex digits")),
            ("0xZaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", Network::ETHEREUM, Err("40 hex digits")),
            ("0x0000000000000000000000000000000000000000", Network::ETHEREUM, Err("zero address")),
            ("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", Network::ETHEREUM, Err("40 hex digits")),
            ("", Network::ETHEREUM, Err("empty")),
        ];
        for (text, network, expected) in cases {
            let got = Address::parse(text, *network).map(|a| a.to_string()).map_err(|e| e.to_string());
            match (expected, got) {
                (Ok(want), Ok(got)) => assert_eq!(&got, want, "{text} on {network}"),
                (Err(part), Err(got)) => assert!(got.contains(part), "{text} on {network}: {got}"),
                (expected, got) => panic!("{text} on {network}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn several_networks() {
        let evm = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let chains = [Network::ETHEREUM, Network::BASE, Network::Evm(ChainId(31337))];
        assert!(Address::parse_for(evm, &chains).is_ok());
        let err = Address::parse_for(evm, &[Network::ETHEREUM, MAIN]).unwrap_err();
        assert!(matches!(err, AddressError::FamilyMismatch { .. }), "{err}");
        assert!(Address::parse_for(evm, &[]).is_err());
    }
}
