//! `Network`: where a payout lands — a Bitcoin network, or an EVM chain named by its chain id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BitcoinNetwork {
    Mainnet,
    Testnet,
    Signet,
    Regtest,
}

impl BitcoinNetwork {
    pub fn to_bitcoin(self) -> bitcoin::Network {
        match self {
            BitcoinNetwork::Mainnet => bitcoin::Network::Bitcoin,
            BitcoinNetwork::Testnet => bitcoin::Network::Testnet,
            BitcoinNetwork::Signet => bitcoin::Network::Signet,
            BitcoinNetwork::Regtest => bitcoin::Network::Regtest,
        }
    }
}

/// An EVM chain id (1 = Ethereum mainnet, 8453 = Base, 10 = Optimism, 42161 = Arbitrum One).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChainId(pub u64);

/// A destination network. The serialized and displayed form is the same string `FromStr`
/// reads: `bitcoin`, `bitcoin-testnet`, `bitcoin-signet`, `bitcoin-regtest`, a known EVM name
/// (`ethereum`, `base`, `optimism`, `arbitrum`, `sepolia`) or `evm:<chain id>` for any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Network {
    Bitcoin(BitcoinNetwork),
    Evm(ChainId),
}

const EVM_NAMES: &[(&str, u64)] =
    &[("ethereum", 1), ("optimism", 10), ("base", 8453), ("arbitrum", 42161), ("sepolia", 11_155_111)];

const BITCOIN_NAMES: &[(&str, BitcoinNetwork)] = &[
    ("bitcoin", BitcoinNetwork::Mainnet),
    ("bitcoin-testnet", BitcoinNetwork::Testnet),
    ("bitcoin-signet", BitcoinNetwork::Signet),
    ("bitcoin-regtest", BitcoinNetwork::Regtest),
];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown network {text:?}: use bitcoin, bitcoin-testnet, bitcoin-signet, bitcoin-regtest, \
     ethereum, base, optimism, arbitrum, sepolia or evm:<chain id>"
)]
pub struct NetworkError {
    pub text: String,
}

impl Network {
    pub const ETHEREUM: Network = Network::Evm(ChainId(1));
    pub const BASE: Network = Network::Evm(ChainId(8453));
    pub const OPTIMISM: Network = Network::Evm(ChainId(10));
    pub const ARBITRUM: Network = Network::Evm(ChainId(42161));

    pub fn is_evm(self) -> bool {
        matches!(self, Network::Evm(_))
    }
}

impl Network {
    /// The network's name, when it has one (`evm:<chain id>` otherwise).
    fn name(self) -> Option<&'static str> {
        match self {
            Network::Bitcoin(net) => BITCOIN_NAMES.iter().find(|(_, n)| *n == net).map(|(name, _)| *name),
            Network::Evm(ChainId(id)) => EVM_NAMES.iter().find(|(_, known)| *known == id).map(|(name, _)| *name),
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self) {
            (Some(name), _) => f.write_str(name),
            (None, Network::Evm(ChainId(id))) => write!(f, "evm:{id}"),
            (None, Network::Bitcoin(_)) => unreachable!("every bitcoin network is named"),
        }
    }
}

impl FromStr for Network {
    type Err = NetworkError;
    fn from_str(text: &str) -> Result<Network, NetworkError> {
        if let Some((_, net)) = BITCOIN_NAMES.iter().find(|(name, _)| *name == text) {
            return Ok(Network::Bitcoin(*net));
        }
        if let Some((_, id)) = EVM_NAMES.iter().find(|(name, _)| *name == text) {
            return Ok(Network::Evm(ChainId(*id)));
        }
        let error = || NetworkError { text: text.to_owned() };
        let digits = text.strip_prefix("evm:").ok_or_else(error)?;
        // Only canonical decimal: no sign, no leading zeros, so the string form is unique.
        if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error());
        }
        digits.parse().map(|id| Network::Evm(ChainId(id))).map_err(|_| error())
    }
}

impl TryFrom<String> for Network {
    type Error = NetworkError;
    fn try_from(text: String) -> Result<Network, NetworkError> {
        text.parse()
    }
}

impl From<Network> for String {
    fn from(network: Network) -> String {
        network.to_string()
    }
}

/// Written as its string form; a named network without building a string (every payment
/// lists its networks).
impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.name(), self) {
            (Some(name), _) => serializer.serialize_str(name),
            // "evm:" and at most 20 digits, formatted on the stack: `collect_str` formatted it
            // twice (postcard counts the length first) and chains without a name are common.
            (None, Network::Evm(ChainId(id))) => {
                let mut buffer = [0u8; 24];
                let mut rest = &mut buffer[..];
                std::io::Write::write_fmt(&mut rest, format_args!("evm:{id}")).expect("24 bytes hold evm:u64::MAX");
                let len = 24 - rest.len();
                serializer.serialize_str(std::str::from_utf8(&buffer[..len]).expect("ASCII"))
            }
            (None, Network::Bitcoin(_)) => serializer.collect_str(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let cases = [
            ("bitcoin", Network::Bitcoin(BitcoinNetwork::Mainnet)),
            ("bitcoin-signet", Network::Bitcoin(BitcoinNetwork::Signet)),
            ("ethereum", Network::ETHEREUM),
            ("base", Network::BASE),
            ("evm:31337", Network::Evm(ChainId(31337))),
            ("evm:18446744073709551615", Network::Evm(ChainId(u64::MAX))),
        ];
        for (text, network) in cases {
            assert_eq!(text.parse::<Network>().unwrap(), network);
            assert_eq!(network.to_string(), text);
            assert_eq!(postcard::to_stdvec(&network).unwrap(), postcard::to_stdvec(text).unwrap());
        }
        assert_eq!("evm:1".parse::<Network>().unwrap(), Network::ETHEREUM);
        for bad in ["", "eth", "evm:", "evm:01", "evm:-1", "evm:x", "Bitcoin", "evm:99999999999999999999"] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }

    /// Written exactly as its string was (journals and history records keep that form).
    #[test]
    fn encoded_as_its_string() {
        for network in [Network::Bitcoin(BitcoinNetwork::Regtest), Network::BASE, Network::Evm(ChainId(31337))] {
            let bytes = postcard::to_stdvec(&network).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(&network.to_string()).unwrap());
            assert_eq!(postcard::from_bytes::<Network>(&bytes).unwrap(), network);
        }
    }
}
