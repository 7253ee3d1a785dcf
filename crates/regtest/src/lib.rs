//! A regtest Bitcoin node for railyard's tests, honest about what it is.
//!
//! No package registry this project can reach ships a `bitcoind` binary, so the Bitcoin rail's
//! tests run against this node. Consensus is Bitcoin Core's: every block, whether mined here
//! or handed in by a test, goes through libbitcoinkernel's `process_block` (full validation:
//! proof of work, merkle roots, BIP34, witness commitments, scripts and signatures), and the
//! active chain is the one the kernel chooses, so reorgs follow Core's rules. What is ours:
//! block templates and mining (regtest difficulty), the mempool (double spends refused, BIP 125
//! replacement rules, coinbase maturity, the minimum relay fee, and every input's script run
//! by the kernel's script interpreter), and, in `rpc.rs`, the subset of Core's JSON-RPC the
//! rail uses. The node lives in memory and a temporary directory, and dies with the test.

use std::collections::{BTreeMap, HashMap};

use bitcoin::block::{Header, Version};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut,
    Txid, Witness, absolute, transaction,
};
use bitcoinkernel::{ChainType, ChainstateManager, Context, ProcessBlockResult};

pub mod harness;
mod mempool;
pub mod payee;
pub mod rpc;

pub use mempool::{Entry, Mempool};

/// Confirmations before a coinbase output may be spent.
pub const COINBASE_MATURITY: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The transaction is not accepted (Core's reason string, as `sendrawtransaction` says it).
    #[error("{0}")]
    Rejected(String),
    /// Bitcoin Core's validation engine refused the block (and why).
    #[error("block {0} rejected by consensus: {1}")]
    BlockRejected(BlockHash, String),
    #[error("no block {0}")]
    UnknownBlock(BlockHash),
    #[error("kernel: {0}")]
    Kernel(String),
}

/// Where a transaction is, as the node sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    Mempool,
    /// In the active chain, at `height`, `depth` blocks deep (1 = in the tip).
    Confirmed {
        block: BlockHash,
        height: u32,
        depth: u32,
    },
    Unknown,
}

#[derive(Clone, Debug)]
struct Coin {
    output: TxOut,
    height: u32,
    coinbase: bool,
}

/// The node. Fields drop in order: the chainstate manager before the kernel context.
/// What the kernel's validation said of each block it checked (connecting it), by hash.
type Checked = std::sync::Arc<std::sync::Mutex<HashMap<[u8; 32], Option<String>>>>;

pub struct Node {
    chainman: ChainstateManager,
    checked: Checked,
    _context: Context,
    _dir: tempfile::TempDir,
    /// Every block the kernel accepted, on any branch, with its height.
    blocks: HashMap<BlockHash, (Block, u32)>,
    /// The active chain, by height.
    active: Vec<BlockHash>,
    /// The active chain's unspent outputs.
    coins: HashMap<OutPoint, Coin>,
    /// Where each transaction of the active chain is.
    confirmed: HashMap<Txid, u32>,
    mempool: Mempool,
    /// Makes every coinbase (and so every block) distinct.
    extra_nonce: u64,
    /// What `estimatesmartfee` answers, sat/vB, per confirmation target (the node has no fee
    /// history to estimate from: the test sets it).
    fee_rates: BTreeMap<u64, u64>,
    /// Fee deltas from `prioritisetransaction`, counted by mining only.
    deltas: HashMap<Txid, i64>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("height", &self.height()).field("mempool", &self.mempool.len()).finish()
    }
}

fn kernel(error: impl std::fmt::Display) -> NodeError {
    NodeError::Kernel(error.to_string())
}

impl Node {
    /// A fresh regtest chain holding only the genesis block.
    pub fn new() -> Result<Node, NodeError> {
        let dir = tempfile::tempdir().map_err(kernel)?;
        // A block that passes the header and merkle checks is stored by `process_block` even
        // when connecting it fails (a bad signature): the verdict comes through this callback.
        let checked: Checked = Default::default();
        let sink = std::sync::Arc::clone(&checked);
        let context = Context::builder()
            .chain_type(ChainType::Regtest)
            .with_block_checked_validation(
                move |block: bitcoinkernel::Block, state: bitcoinkernel::BlockValidationStateRef| {
                    use bitcoinkernel::prelude::{BlockHashExt, BlockValidationStateExt};
                    let verdict = match state.mode() {
                        bitcoinkernel::ValidationMode::Valid => None,
                        _ => Some(format!("{:?}", state.result())),
                    };
                    sink.lock().expect("checked lock").insert(block.hash().to_bytes(), verdict);
                },
            )
            .build()
            .map_err(kernel)?;
        let data = dir.path().join("data");
        let blocks_dir = dir.path().join("blocks");
        let chainman = ChainstateManager::new(
            &context,
            data.to_str().expect("a UTF-8 temporary path"),
            blocks_dir.to_str().expect("a UTF-8 temporary path"),
        )
        .map_err(kernel)?;
        let genesis = genesis_block(bitcoin::Network::Regtest);
        let hash = genesis.block_hash();
        let node = Node {
            chainman,
            checked,
            _context: context,
            _dir: dir,
            blocks: HashMap::from([(hash, (genesis, 0))]),
            active: vec![hash],
            coins: HashMap::new(),
            confirmed: HashMap::new(),
            mempool: Mempool::default(),
            extra_nonce: 0,
            fee_rates: BTreeMap::new(),
            deltas: HashMap::new(),
        };
        let tip = node.kernel_tip();
        if tip != hash {
            return Err(NodeError::Kernel(format!("the kernel starts at {tip}, not regtest's genesis {hash}")));
        }
        Ok(node)
    }

    fn kernel_tip(&self) -> BlockHash {
        use bitcoinkernel::prelude::BlockHashExt;
        let bytes = self.chainman.active_chain().tip().block_hash().to_bytes();
        BlockHash::from_byte_array(bytes)
    }

    /// The height of the active chain's tip.
    pub fn height(&self) -> u32 {
        u32::try_from(self.active.len() - 1).expect("a regtest chain fits u32")
    }

    pub fn tip(&self) -> BlockHash {
        *self.active.last().expect("genesis at least")
    }

    pub fn block_hash(&self, height: u32) -> Option<BlockHash> {
        self.active.get(height as usize).copied()
    }

    /// A block the kernel accepted (on any branch) and its height.
    pub fn block(&self, hash: &BlockHash) -> Option<(&Block, u32)> {
        self.blocks.get(hash).map(|(block, height)| (block, *height))
    }

    pub fn is_active(&self, hash: &BlockHash) -> bool {
        self.blocks.get(hash).is_some_and(|(_, height)| self.active.get(*height as usize) == Some(hash))
    }

    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// Mines `count` blocks on the tip, paying their rewards to `payout`, each taking what a
    /// miner would from the mempool (`Mempool::block_template`: packages paying at least
    /// 1 sat/vB with the `prioritise` deltas counted, parents before children).
    pub fn mine(&mut self, count: u32, payout: &ScriptBuf) -> Result<Vec<BlockHash>, NodeError> {
        let mut hashes = Vec::new();
        for _ in 0..count {
            let txs = self.mempool.block_template(&self.deltas);
            hashes.push(self.mine_on(self.tip(), txs, payout)?);
        }
        Ok(hashes)
    }

    /// Builds a block on `parent` with `txs` (no mempool check: a test may hand in anything),
    /// and submits it to the kernel. A block the kernel refuses is `BlockRejected`.
    pub fn mine_on(
        &mut self,
        parent: BlockHash,
        txs: Vec<Transaction>,
        payout: &ScriptBuf,
    ) -> Result<BlockHash, NodeError> {
        let (parent_block, parent_height) = self.blocks.get(&parent).ok_or(NodeError::UnknownBlock(parent))?;
        let height = parent_height + 1;
        let time = parent_block.header.time + 1;
        let fees = self.fees_of(&txs);
        self.extra_nonce += 1;
        let block = build_block(parent, height, time, txs, subsidy(height) + fees, payout, self.extra_nonce);
        self.submit_block(block)
    }

    /// Mines `depth + 1` blocks on the ancestor `depth` blocks below the tip: the kernel
    /// switches to the longer branch, and the transactions of the blocks it leaves go back to
    /// the mempool when they are still valid. Returns the new branch.
    pub fn reorg(&mut self, depth: u32, payout: &ScriptBuf) -> Result<Vec<BlockHash>, NodeError> {
        let fork = self.block_hash(self.height().saturating_sub(depth)).expect("within the chain");
        let mut parent = fork;
        let mut branch = Vec::new();
        for _ in 0..=depth {
            parent = self.mine_on(parent, Vec::new(), payout)?;
            branch.push(parent);
        }
        Ok(branch)
    }

    /// Hands a block to Bitcoin Core's validation engine; on acceptance, follows its active
    /// chain.
    pub fn submit_block(&mut self, block: Block) -> Result<BlockHash, NodeError> {
        let hash = block.block_hash();
        let kernel_block = bitcoinkernel::Block::new(&serialize(&block)).map_err(kernel)?;
        let outcome = self.chainman.process_block(&kernel_block);
        let verdict = self.checked.lock().expect("checked lock").get(&hash.to_byte_array()).cloned().flatten();
        match (outcome, verdict) {
            (ProcessBlockResult::Rejected, verdict) => {
                return Err(NodeError::BlockRejected(hash, verdict.unwrap_or_else(|| "invalid".into())));
            }
            (_, Some(reason)) => return Err(NodeError::BlockRejected(hash, reason)),
            (ProcessBlockResult::NewBlock | ProcessBlockResult::Duplicate, None) => {}
        }
        let parent_height = self.blocks.get(&block.header.prev_blockhash).map(|(_, h)| *h);
        let height = parent_height.ok_or(NodeError::UnknownBlock(block.header.prev_blockhash))? + 1;
        self.blocks.insert(hash, (block, height));
        self.follow_kernel()?;
        // The kernel may keep a valid block off the active chain (less work): it is stored
        // either way, and `is_active` tells.
        Ok(hash)
    }

    /// Makes the active chain the kernel's, rebuilding the coins, and moves transactions
    /// between the chain and the mempool.
    fn follow_kernel(&mut self) -> Result<(), NodeError> {
        let tip = self.kernel_tip();
        if tip == self.tip() {
            return Ok(());
        }
        let mut chain = Vec::new();
        let mut cursor = tip;
        loop {
            chain.push(cursor);
            let (block, height) = self.blocks.get(&cursor).ok_or(NodeError::UnknownBlock(cursor))?;
            if *height == 0 {
                break;
            }
            cursor = block.header.prev_blockhash;
        }
        chain.reverse();
        let fork = self.active.iter().zip(&chain).take_while(|(a, b)| a == b).count();
        let disconnected: Vec<Transaction> =
            self.active[fork..].iter().flat_map(|h| self.blocks[h].0.txdata.iter().skip(1).cloned()).collect();
        self.active = chain;
        self.rebuild_coins();
        // The mempool is judged again against the new chain: what the abandoned branch held
        // goes back first (as Core does), then what waited; what the chain now confirms, or
        // now conflicts with, or whose inputs are gone, is dropped.
        let waiting = self.mempool.take_all();
        for tx in disconnected.into_iter().chain(waiting) {
            if self.confirmed.contains_key(&tx.compute_txid()) {
                continue;
            }
            // A transaction that no longer fits the chain is simply not in the mempool now.
            if let Err(error) = self.send(tx) {
                eprintln!("regtest: a transaction leaves the mempool after a chain change: {error}");
            }
        }
        Ok(())
    }

    fn rebuild_coins(&mut self) {
        self.coins.clear();
        self.confirmed.clear();
        for (height, hash) in self.active.iter().enumerate() {
            let height = u32::try_from(height).expect("a regtest chain fits u32");
            let block = &self.blocks[hash].0;
            for (i, tx) in block.txdata.iter().enumerate() {
                let txid = tx.compute_txid();
                self.confirmed.insert(txid, height);
                if i > 0 {
                    for input in &tx.input {
                        self.coins.remove(&input.previous_output);
                    }
                }
                for (vout, output) in tx.output.iter().enumerate() {
                    let outpoint = OutPoint { txid, vout: u32::try_from(vout).expect("outputs fit u32") };
                    self.coins.insert(outpoint, Coin { output: output.clone(), height, coinbase: i == 0 });
                }
            }
        }
        // The genesis coinbase is not spendable in Core: leave it out.
        let genesis = &self.blocks[&self.active[0]].0;
        let txid = genesis.txdata[0].compute_txid();
        self.coins.retain(|outpoint, _| outpoint.txid != txid);
    }

    /// Every outpoint the active chain spends, and by which transaction.
    fn spent_in_chain(&self) -> HashMap<OutPoint, Txid> {
        let mut spent = HashMap::new();
        for hash in &self.active[1..] {
            for tx in self.blocks[hash].0.txdata.iter().skip(1) {
                let txid = tx.compute_txid();
                for input in &tx.input {
                    spent.insert(input.previous_output, txid);
                }
            }
        }
        spent
    }

    /// The fees `txs` pay, from the coins and the mempool (0 for what cannot be valued: the
    /// kernel refuses such a block anyway).
    fn fees_of(&self, txs: &[Transaction]) -> Amount {
        let mut outputs: HashMap<OutPoint, Amount> = self.coins.iter().map(|(o, c)| (*o, c.output.value)).collect();
        let mut total = Amount::ZERO;
        for tx in txs {
            let inputs: Option<Amount> = tx.input.iter().map(|i| outputs.get(&i.previous_output).copied()).sum();
            let paid: Amount = tx.output.iter().map(|o| o.value).sum();
            total += inputs.and_then(|i| i.checked_sub(paid)).unwrap_or(Amount::ZERO);
            let txid = tx.compute_txid();
            for (vout, output) in tx.output.iter().enumerate() {
                outputs.insert(OutPoint { txid, vout: u32::try_from(vout).expect("outputs fit u32") }, output.value);
            }
        }
        total
    }

    /// Where `txid` is now.
    pub fn status(&self, txid: &Txid) -> TxStatus {
        if let Some(height) = self.confirmed.get(txid) {
            let block = self.active[*height as usize];
            return TxStatus::Confirmed { block, height: *height, depth: self.height() - height + 1 };
        }
        if self.mempool.get(txid).is_some() { TxStatus::Mempool } else { TxStatus::Unknown }
    }

    /// A transaction in the mempool or the active chain.
    pub fn transaction(&self, txid: &Txid) -> Option<Transaction> {
        if let Some(entry) = self.mempool.get(txid) {
            return Some(entry.tx.clone());
        }
        let height = self.confirmed.get(txid)?;
        let block = &self.blocks[&self.active[*height as usize]].0;
        block.txdata.iter().find(|tx| tx.compute_txid() == *txid).cloned()
    }

    /// Which transaction, in the mempool or the active chain, spends `outpoint`.
    pub fn spender(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.mempool.spender(outpoint).or_else(|| self.spent_in_chain().get(outpoint).copied())
    }

    /// The active chain's unspent outputs paying `script` (mature ones only).
    pub fn unspent(&self, script: &ScriptBuf) -> BTreeMap<OutPoint, TxOut> {
        let next = self.height() + 1;
        self.coins
            .iter()
            .filter(|(_, c)| c.output.script_pubkey == *script)
            .filter(|(_, c)| !c.coinbase || next - c.height >= COINBASE_MATURITY)
            .map(|(o, c)| (*o, c.output.clone()))
            .collect()
    }

    /// Sets what `estimatesmartfee` answers (sat/vB) for targets from `target` blocks on.
    /// Adds `delta` satoshis to what mining counts as `txid`'s fee (Core's
    /// `prioritisetransaction`): a large negative delta keeps a transaction out of blocks, as
    /// if miners wanted more than it pays.
    pub fn prioritise(&mut self, txid: Txid, delta: i64) {
        *self.deltas.entry(txid).or_insert(0) += delta;
    }

    pub fn set_fee_rate(&mut self, target: u64, sat_per_vb: u64) {
        self.fee_rates.insert(target, sat_per_vb);
    }

    /// The fee rate for a confirmation target: the one set for the largest target not above
    /// it, else the smallest set; `None` when none is (Core on a fresh regtest chain has no
    /// estimate either).
    pub fn fee_rate(&self, target: u64) -> Option<u64> {
        let below = self.fee_rates.range(..=target).next_back();
        below.or_else(|| self.fee_rates.iter().next()).map(|(_, rate)| *rate)
    }

    /// An unspent output and its confirmations (0 in the mempool), as `gettxout` sees it: with
    /// `include_mempool`, what a mempool transaction spends is spent and its outputs exist.
    pub fn coin(&self, outpoint: &OutPoint, include_mempool: bool) -> Option<(TxOut, u32)> {
        if include_mempool && self.mempool.spender(outpoint).is_some() {
            return None;
        }
        if let Some(coin) = self.coins.get(outpoint) {
            return Some((coin.output.clone(), self.height() - coin.height + 1));
        }
        let entry = self.mempool.get(&outpoint.txid).filter(|_| include_mempool)?;
        entry.tx.output.get(outpoint.vout as usize).map(|o| (o.clone(), 0))
    }

    /// The balance of `script` in the active chain.
    pub fn balance(&self, script: &ScriptBuf) -> Amount {
        self.coins.values().filter(|c| c.output.script_pubkey == *script).map(|c| c.output.value).sum()
    }

    /// Accepts a transaction into the mempool, or says why not (Core's reason strings).
    pub fn send(&mut self, tx: Transaction) -> Result<Txid, NodeError> {
        let next = self.height() + 1;
        let coins = &self.coins;
        let lookup = |outpoint: &OutPoint| -> Option<(TxOut, bool)> {
            coins.get(outpoint).map(|c| (c.output.clone(), !c.coinbase || next - c.height >= COINBASE_MATURITY))
        };
        let confirmed = self.confirmed.contains_key(&tx.compute_txid());
        if confirmed {
            return Err(NodeError::Rejected("transaction already in block chain".into()));
        }
        self.mempool.accept(tx, &lookup)
    }
}

/// Regtest's block subsidy: 50 BTC, halved every 150 blocks.
pub fn subsidy(height: u32) -> Amount {
    let halvings = height / 150;
    if halvings >= 64 { Amount::ZERO } else { Amount::from_sat((50 * 100_000_000) >> halvings) }
}

/// A block on `parent` (at `height`, with timestamp `time`) holding a coinbase paying `value`
/// to `payout` and then `txs`, with its witness commitment and merkle root, its proof of work
/// ground at regtest's difficulty. `extra_nonce` makes its coinbase distinct.
#[allow(clippy::too_many_arguments)]
pub fn build_block(
    parent: BlockHash,
    height: u32,
    time: u32,
    txs: Vec<Transaction>,
    value: Amount,
    payout: &ScriptBuf,
    extra_nonce: u64,
) -> Block {
    let coinbase = coinbase(height, extra_nonce, value, payout);
    let mut block = Block {
        header: Header {
            version: Version::from_consensus(0x2000_0000),
            prev_blockhash: parent,
            merkle_root: TxMerkleNode::all_zeros(),
            time,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
        },
        txdata: std::iter::once(coinbase).chain(txs).collect(),
    };
    commit_witness(&mut block);
    block.header.merkle_root = block.compute_merkle_root().expect("a block has a coinbase");
    let target = block.header.target();
    while block.header.validate_pow(target).is_err() {
        block.header.nonce += 1;
    }
    block
}

fn coinbase(height: u32, extra_nonce: u64, value: Amount, payout: &ScriptBuf) -> Transaction {
    // BIP34: the height first; then a tag that makes every coinbase distinct.
    let script_sig =
        bitcoin::script::Builder::new().push_int(i64::from(height)).push_slice(extra_nonce.to_le_bytes()).into_script();
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[0u8; 32]]),
        }],
        output: vec![TxOut { value, script_pubkey: payout.clone() }],
    }
}

/// Adds the BIP141 witness commitment to the coinbase (the reserved value is 32 zero bytes).
fn commit_witness(block: &mut Block) {
    let root = block.witness_root().expect("a block has a coinbase");
    let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(commitment.as_byte_array());
    block.txdata[0].output.push(TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(script) });
}
