//! Rail adapters at their boundary: the sandbox chain with every fault, and the EVM rail
//! against real anvil nodes (two chains, different chain ids, standing for L1 and L2).

#[cfg(feature = "evm")]
mod anvil;
#[cfg(feature = "bitcoin")]
mod bitcoin;
#[cfg(feature = "evm")]
mod evm;
mod sandbox;
