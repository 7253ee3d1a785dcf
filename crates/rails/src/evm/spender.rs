//! Who spent a settlement's nonce: the block it was spent in, found by a binary search over
//! the sender's nonce in recent blocks' state (an ordinary node keeps no older state), and the
//! transaction in that block.

use alloy::consensus::Transaction as _;
use alloy::providers::Provider;
use alloy::rpc::types::BlockNumberOrTag;

use super::{EvmRail, unavailable};
use crate::RailError;

impl EvmRail {
    /// The first block whose state has the sender's nonce past `nonce`: a binary search over
    /// the sender's nonce in the last `nonce_search_blocks` blocks (at most ~2·log2(window)
    /// calls). `Ok(Err(why))` when the node cannot tell: the nonce was spent before the
    /// window, or the node refuses to answer for an old block (it keeps no such state).
    pub(super) async fn block_spending(&self, nonce: u64, head: u64) -> Result<Result<u64, String>, RailError> {
        let window = self.config.nonce_search_blocks.max(1);
        let (mut low, mut high) = (head.saturating_sub(window), head);
        match self.nonce_at(low).await? {
            Err(why) => return Ok(Err(why)),
            Ok(count) if count > nonce && low > 0 => {
                return Ok(Err(format!(
                    "nonce {nonce} was spent before block {low}, further back than the {window} blocks searched"
                )));
            }
            Ok(count) if count > nonce => return Ok(Ok(0)),
            Ok(_) => {}
        }
        while low < high {
            let mid = low + (high - low) / 2;
            match self.nonce_at(mid).await? {
                Err(why) => return Ok(Err(why)),
                Ok(count) if count > nonce => high = mid,
                Ok(_) => low = mid + 1,
            }
        }
        Ok(Ok(low))
    }

    /// The sender's nonce in the state of block `number`; `Ok(Err(why))` when the node
    /// answers that it has no such state (an error response, not a timeout).
    async fn nonce_at(&self, number: u64) -> Result<Result<u64, String>, RailError> {
        let call = self.provider.get_transaction_count(self.signer.address()).block_id(number.into());
        match tokio::time::timeout(self.config.request_timeout, call.into_future()).await {
            Err(_) => Err(RailError::Unavailable(format!("no answer within {:?}", self.config.request_timeout))),
            Ok(Ok(count)) => Ok(Ok(count)),
            Ok(Err(error)) if error.is_error_resp() => {
                Ok(Err(format!("the node has no state for block {number}: {error}")))
            }
            Ok(Err(error)) => Err(unavailable(error)),
        }
    }

    /// The hash of the sender's transaction with `nonce` in block `number`.
    pub(super) async fn spender_in(&self, number: u64, nonce: u64) -> Result<[u8; 32], RailError> {
        let block = self
            .timed(self.provider.get_block_by_number(BlockNumberOrTag::Number(number)).full())
            .await?
            .ok_or_else(|| RailError::Unavailable(format!("block {number} vanished")))?;
        let sender = self.signer.address();
        let found = block
            .transactions
            .into_transactions()
            .find(|tx| tx.inner.signer() == sender && tx.inner.nonce() == nonce)
            .map(|tx| tx.inner.tx_hash().0);
        found.ok_or_else(|| RailError::Unavailable(format!("no transaction with nonce {nonce} in block {number}")))
    }
}
