//! `railyard guards …`: a merchant's guards (show, set from a JSON file, clear) and treasury's
//! decisions on the payouts they hold (approve, release, reject).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Client, PAYMENT_COLUMNS, show};

#[derive(Subcommand, Debug)]
pub enum GuardsCommand {
    /// A merchant's guards, as JSON.
    Show { merchant: u64 },
    /// Sets a merchant's guards from a JSON file (the `guards` object of
    /// PUT /v1/merchants/{merchant}/guards).
    Set {
        merchant: u64,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// Removes a merchant's guards.
    Clear {
        merchant: u64,
        #[arg(long)]
        reason: String,
    },
    /// Approves a large payout held by guards.
    Approve {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Releases what needs a person in a guard hold (allowlist, look-alike, unpayable, new destination).
    Release {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Rejects a payout held by guards: it fails and the merchant is told.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

pub(super) async fn execute(client: &Client, json: bool, command: GuardsCommand) -> anyhow::Result<()> {
    let put = |merchant: u64, guards: Value, reason: String| {
        let path = format!("/v1/merchants/{merchant}/guards");
        client.request(reqwest::Method::PUT, &path).json(&json!({ "guards": guards, "reason": reason }))
    };
    let answer = match command {
        GuardsCommand::Show { merchant } => client.get(&format!("/v1/merchants/{merchant}/guards")).await?,
        GuardsCommand::Set { merchant, file, reason } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let guards: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            client.send(put(merchant, guards, reason)).await?
        }
        GuardsCommand::Clear { merchant, reason } => client.send(put(merchant, Value::Null, reason)).await?,
        GuardsCommand::Approve { id, reason } => decide(client, &id, "approve", reason, json).await?,
        GuardsCommand::Release { id, reason } => decide(client, &id, "release", reason, json).await?,
        GuardsCommand::Reject { id, reason } => decide(client, &id, "reject", reason, json).await?,
    };
    if !answer.is_null() {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
}

/// A decision on a held payout; prints the payment and returns nothing more to print.
async fn decide(client: &Client, id: &str, action: &str, reason: String, json: bool) -> anyhow::Result<Value> {
    let payment = client.post(&format!("/v1/payments/{id}/{action}"), json!({ "reason": reason })).await?;
    show(json, &payment, &PAYMENT_COLUMNS);
    Ok(Value::Null)
}
