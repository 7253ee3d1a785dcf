//! A payee with a key: spends a P2WPKH output it was paid, as a payee who moves funds at once
//! (or pins a payer's transaction on purpose) does.

use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness, absolute, transaction};

/// Spends output `vout` of `parent` (a P2WPKH output of `key`'s) to `to`, paying `fee` sat.
/// Panics when the output is not `key`'s or smaller than the fee: a test's own mistake.
pub fn spend_p2wpkh(parent: &Transaction, vout: u32, key: &SecretKey, to: ScriptBuf, fee: u64) -> Transaction {
    let secp = Secp256k1::new();
    let spent = &parent.output[vout as usize];
    let public = bitcoin::CompressedPublicKey(key.public_key(&secp));
    assert_eq!(spent.script_pubkey, ScriptBuf::new_p2wpkh(&public.wpubkey_hash()), "output {vout} is not the key's");
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: parent.compute_txid(), vout },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: spent.value.checked_sub(Amount::from_sat(fee)).expect("the output pays the fee"),
            script_pubkey: to,
        }],
    };
    let sighash = SighashCache::new(&tx)
        .p2wpkh_signature_hash(0, &spent.script_pubkey, spent.value, EcdsaSighashType::All)
        .expect("input 0 exists");
    let signature = bitcoin::ecdsa::Signature::sighash_all(secp.sign_ecdsa(&Message::from(sighash), key));
    tx.input[0].witness = Witness::p2wpkh(&signature, &public.0);
    tx
}
