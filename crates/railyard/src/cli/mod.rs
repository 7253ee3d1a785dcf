//! The client commands: the same binary against a running server, over its HTTP API. Human
//! tables by default, `--json` for scripts; the server and key from flags or the environment
//! (`RAILYARD_URL`, `RAILYARD_API_KEY`). A refusal prints the server's problem and exits 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

mod guards;

#[derive(Args, Debug)]
pub struct Server {
    /// The server's base URL.
    #[arg(long, global = true, env = "RAILYARD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The API key (`ry_…`).
    #[arg(long, global = true, env = "RAILYARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Submits a batch file (.csv or .json); with --wait, follows it until every payment is final.
    Submit {
        file: PathBuf,
        /// Follow the batch until every payment is settled or failed (or held).
        #[arg(long)]
        wait: bool,
        /// The batch's idempotency key (default: derived from the file's bytes, so submitting
        /// the same file again is a replay, never a second batch).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 3_600)]
        timeout_s: u64,
    },
    /// Shows batches with their payments counted by state.
    Batches { ids: Vec<String> },
    /// Shows a payment, or lists payments by batch, state or reference.
    Payments {
        /// One payment's id.
        id: Option<String>,
        #[arg(long)]
        batch: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        reference: Option<String>,
    },
    /// Cancels a payment still queued.
    Cancel { id: String },
    /// Rails with health, breaker state and backlog.
    Rails,
    /// Stops new planning on a rail.
    Pause {
        rail: String,
        #[arg(long)]
        reason: String,
    },
    /// Lets a paused rail take new work again.
    Resume {
        rail: String,
        #[arg(long)]
        reason: String,
    },
    /// Moves a rail's queued payments to other rails (--dry-run lists the moves, changes nothing).
    Drain {
        rail: String,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Queue depths by rail, class and merchant.
    Queues,
    /// Pools against min / target / max.
    Pools,
    /// Changes a pool's min / target / max (treasury; journaled with the reason).
    PoolThresholds {
        rail: String,
        asset: String,
        #[arg(long)]
        min: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        max: String,
        #[arg(long)]
        reason: String,
    },
    /// The priority classes.
    Classes,
    /// Held payments and why.
    Held,
    /// Resolves a held payment: retry, fail or resume.
    Resolve {
        id: String,
        resolution: String,
        #[arg(long)]
        reason: String,
    },
    /// The audit export: actions as JSON lines with their place in the journal's hash chain,
    /// then the chain's head (admin).
    Audit {
        /// Every record's hash, not only the actions (to recompute the chain).
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// Statistics over a window (`--since 1h`, or Unix milliseconds), as JSON.
    Stats {
        #[arg(long, default_value = "1h")]
        since: String,
    },
    /// Reports: `report incident --since 2h` (or Unix milliseconds).
    #[command(subcommand)]
    Report(ReportCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The merchant's webhook endpoint and deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Mis-transfer guards: a merchant's policy, and the payouts they hold (treasury).
    #[command(subcommand)]
    Guards(guards::GuardsCommand),
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// The incident report from a time to now, in Markdown (`--json` for the data).
    Incident {
        /// Where the window starts: a duration ago (`90m`, `2h`) or Unix milliseconds.
        #[arg(long)]
        since: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    List,
    /// Creates a key; its secret is printed once.
    Create {
        /// merchant, treasury, operator or admin.
        role: String,
        #[arg(long)]
        merchant: Option<u64>,
        #[arg(long, default_value = "cli")]
        label: String,
    },
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    Show,
    /// Sets the endpoint (`none` removes it).
    Set {
        url: String,
    },
    Deliveries,
    Resend {
        event: String,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base.trim_end_matches('/')));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            return Ok(body);
        }
        let detail = body.get("detail").and_then(Value::as_str).unwrap_or("");
        let code = body.get("code").and_then(Value::as_str).unwrap_or("");
        let mut message = format!("the server answered {status}: {detail} ({code})");
        if let Some(rows) = body.get("errors").and_then(Value::as_array) {
            for row in rows.iter().take(20) {
                message.push_str(&format!(
                    "\n  row {}: {} [{}] {}",
                    row["row"],
                    row["field"].as_str().unwrap_or(""),
                    row["code"].as_str().unwrap_or(""),
                    row["message"].as_str().unwrap_or("")
                ));
            }
            if rows.len() > 20 {
                message.push_str(&format!("\n  … and {} more", rows.len() - 20));
            }
        }
        bail!(message)
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::POST, path).json(&body)).await
    }
}

pub async fn run(server: &Server, command: ClientCommand) -> ExitCode {
    let client = Client { http: reqwest::Client::new(), base: server.url.clone(), key: server.api_key.clone() };
    match execute(&client, server.json, command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("railyard: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Prints rows of `value` (an array of objects) as a table of `columns`.
fn table(value: &Value, columns: &[&str]) {
    let rows: Vec<Vec<String>> = value
        .as_array()
        .map(|items| items.iter().map(|item| columns.iter().map(|c| text(&item[*c])).collect()).collect())
        .unwrap_or_default();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| rows.iter().map(|r| r[i].chars().count()).chain([c.len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

pub(crate) fn show(json: bool, value: &Value, columns: &[&str]) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else if value.is_array() {
        table(value, columns);
    } else {
        table(&Value::Array(vec![value.clone()]), columns);
    }
}

pub(crate) const PAYMENT_COLUMNS: [&str; 7] = ["id", "reference", "amount", "asset", "state", "attempt", "reason"];

async fn execute(client: &Client, json: bool, command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Submit { file, wait, idempotency_key, timeout_s } => {
            return submit(client, json, &file, wait, idempotency_key, Duration::from_secs(timeout_s)).await;
        }
        ClientCommand::Batches { ids } => {
            let mut batches = Vec::new();
            for id in ids {
                batches.push(client.get(&format!("/v1/batches/{id}")).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&batches)?);
            } else {
                for batch in batches {
                    println!(
                        "batch {} ({} payments, merchant {}): {}",
                        text(&batch["id"]),
                        batch["count"],
                        batch["merchant"],
                        batch["states"]
                    );
                }
            }
        }
        ClientCommand::Payments { id, batch, state, reference } => {
            if let Some(id) = id {
                let payment = client.get(&format!("/v1/payments/{id}")).await?;
                show(json, &payment, &PAYMENT_COLUMNS);
                if !json && let Some(s) = payment.get("settlement").filter(|s| !s.is_null()) {
                    println!(
                        "settlement {} on {} ({}): {} tx {}",
                        text(&s["id"]),
                        text(&s["rail"]),
                        text(&s["network"]),
                        text(&s["state"]),
                        text(&s["txid"])
                    );
                }
            } else {
                let mut query = Vec::new();
                for (name, value) in [("batch", batch), ("state", state), ("reference", reference)] {
                    if let Some(value) = value {
                        query.push((name, value));
                    }
                }
                let mut cursor: Option<String> = None;
                let mut all = Vec::new();
                loop {
                    let mut request = client.request(reqwest::Method::GET, "/v1/payments").query(&query);
                    if let Some(c) = &cursor {
                        request = request.query(&[("cursor", c)]);
                    }
                    let page = client.send(request).await?;
                    all.extend(page["payments"].as_array().cloned().unwrap_or_default());
                    cursor = page["next_cursor"].as_str().map(str::to_owned);
                    if cursor.is_none() || all.len() >= 100_000 {
                        break;
                    }
                }
                show(json, &Value::Array(all), &PAYMENT_COLUMNS);
            }
        }
        ClientCommand::Cancel { id } => {
            show(json, &client.post(&format!("/v1/payments/{id}/cancel"), json!({})).await?, &PAYMENT_COLUMNS)
        }
        ClientCommand::Rails => show(
            json,
            &client.get("/v1/rails").await?,
            &["rail", "network", "paused", "breaker", "success_permille", "queued"],
        ),
        ClientCommand::Pause { rail, reason } => {
            client.post(&format!("/v1/rails/{rail}/pause"), json!({ "reason": reason })).await?;
            println!("rail {rail} paused");
        }
        ClientCommand::Resume { rail, reason } => {
            client.post(&format!("/v1/rails/{rail}/resume"), json!({ "reason": reason })).await?;
            println!("rail {rail} resumed");
        }
        ClientCommand::Drain { rail, dry_run, reason } => {
            let report = client
                .post(&format!("/v1/rails/{rail}/drain"), json!({ "dry_run": dry_run, "reason": reason }))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let moves = report["moves"].as_array().map_or(0, Vec::len);
                let stay = report["unmovable"].as_array().map_or(0, Vec::len);
                let verb = if dry_run { "would move" } else { "moved" };
                println!("{verb} {moves} payment(s) off {rail}; {stay} have no other rail and stay");
                table(&report["moves"], &["payment", "from", "to"]);
            }
        }
        ClientCommand::Queues => {
            let queues = client.get("/v1/queues").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&queues)?);
            } else {
                for part in ["rails", "classes", "merchants"] {
                    println!("{part}:");
                    if let Some(map) = queues[part].as_object() {
                        for (name, depth) in map {
                            println!(
                                "  {name:<24} {:>8} queued, oldest {} ms",
                                depth["queued"], depth["oldest_age_ms"]
                            );
                        }
                    }
                }
            }
        }
        ClientCommand::Pools => show(
            json,
            &client.get("/v1/pools").await?,
            &["rail", "asset", "available", "reserved", "min", "target", "max", "status"],
        ),
        ClientCommand::PoolThresholds { rail, asset, min, target, max, reason } => {
            let body = json!({ "min": min, "target": target, "max": max, "reason": reason });
            client.send(client.request(reqwest::Method::PUT, &format!("/v1/pools/{rail}/{asset}")).json(&body)).await?;
            println!("pool {asset} on {rail}: min {min}, target {target}, max {max}");
        }
        ClientCommand::Classes => {
            show(
                json,
                &client.get("/v1/classes").await?,
                &["name", "weight", "deadline_default_ms", "age_max_ms", "urgent"],
            );
        }
        ClientCommand::Held => show(json, &client.get("/v1/held").await?["payments"], &PAYMENT_COLUMNS),
        ClientCommand::Resolve { id, resolution, reason } => {
            let payment = client
                .post(&format!("/v1/payments/{id}/resolve"), json!({ "resolution": resolution, "reason": reason }))
                .await?;
            show(json, &payment, &PAYMENT_COLUMNS);
        }
        ClientCommand::Stats { since } => {
            let since = since_ms(&since)?;
            let stats = client.get(&format!("/v1/stats?since={since}")).await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        ClientCommand::Report(ReportCommand::Incident { since }) => {
            let since = since_ms(&since)?;
            let format = if json { "json" } else { "markdown" };
            let request = client
                .request(reqwest::Method::GET, "/v1/reports/incident")
                .query(&[("since", since.to_string()), ("format", format.to_owned())]);
            let response =
                request.send().await.with_context(|| format!("cannot reach the server at {}", client.base))?;
            let status = response.status();
            let text = response.text().await?;
            if !status.is_success() {
                bail!("the server answered {status}: {text}");
            }
            println!("{text}");
        }
        ClientCommand::Audit { all, from } => {
            let mut from = Some(from);
            while let Some(start) = from {
                let page = client.get(&format!("/v1/audit?from={start}&all={all}&limit=10000")).await?;
                for line in page["lines"].as_array().into_iter().flatten() {
                    println!("{line}");
                }
                from = page["next"].as_u64();
                if from.is_none() {
                    println!("{}", json!({ "head": page["head"] }));
                }
            }
        }
        ClientCommand::Keys(KeysCommand::List) => {
            show(json, &client.get("/v1/keys").await?, &["id", "role", "merchant", "label", "created_by", "revoked_at"])
        }
        ClientCommand::Keys(KeysCommand::Create { role, merchant, label }) => {
            let created =
                client.post("/v1/keys", json!({ "role": role, "merchant": merchant, "label": label })).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!(
                    "key {} ({role}) created; its secret, shown once:\n{}",
                    text(&created["id"]),
                    text(&created["secret"])
                );
            }
        }
        ClientCommand::Keys(KeysCommand::Revoke { id, reason }) => {
            client.post(&format!("/v1/keys/{id}/revoke"), json!({ "reason": reason })).await?;
            println!("key {id} revoked");
        }
        ClientCommand::Webhooks(WebhooksCommand::Show) => {
            show(json, &client.get("/v1/webhook").await?, &["merchant", "url", "signing_secret"])
        }
        ClientCommand::Webhooks(WebhooksCommand::Set { url }) => {
            let url = if url == "none" { Value::Null } else { Value::String(url) };
            let request = client.request(reqwest::Method::PUT, "/v1/webhook").json(&json!({ "url": url }));
            show(json, &client.send(request).await?, &["merchant", "url", "signing_secret"]);
        }
        ClientCommand::Webhooks(WebhooksCommand::Deliveries) => {
            show(
                json,
                &client.get("/v1/webhook/deliveries").await?,
                &["event", "payment", "state", "status", "attempts", "last_error"],
            );
        }
        ClientCommand::Guards(command) => guards::execute(client, json, command).await?,
        ClientCommand::Webhooks(WebhooksCommand::Resend { event }) => {
            show(
                json,
                &client.post(&format!("/v1/webhook/deliveries/{event}/resend"), json!({})).await?,
                &["event", "status"],
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: a duration ago (`90m`, `2h`) or Unix milliseconds.
fn since_ms(since: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = since.parse::<u64>() {
        return Ok(ms);
    }
    let ago = humantime::parse_duration(since)
        .with_context(|| format!("--since {since:?} is a duration (90m, 2h) or Unix milliseconds"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(u64::try_from(now.saturating_sub(ago).as_millis())?)
}

async fn submit(
    client: &Client,
    json: bool,
    file: &PathBuf,
    wait: bool,
    key: Option<String>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        _ => bail!("{}: the file must end in .csv or .json", file.display()),
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let key = key.unwrap_or_else(|| format!("file-{}", &blake3::hash(&bytes).to_hex()[..32]));
    let total = bytes.len() as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let progress = bar.clone();
    let stream = futures_lite_stream(chunks, move |n| progress.inc(n));
    let request = client
        .request(reqwest::Method::POST, "/v1/batches")
        .header("content-type", content_type)
        .header("idempotency-key", &key)
        .header("content-length", total)
        .body(reqwest::Body::wrap_stream(stream));
    let accepted = client.send(request).await;
    bar.finish_and_clear();
    let accepted = accepted?;
    let batch = text(&accepted["batch"]);
    if json && !wait {
        println!("{}", serde_json::to_string_pretty(&accepted)?);
    } else if !json {
        println!("batch {batch} accepted: {} payments (idempotency key {key})", accepted["count"]);
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let count = accepted["count"].as_u64().unwrap_or(0);
    let bar = ProgressBar::new(count).with_style(
        ProgressStyle::with_template("{spinner} final {pos}/{len} {bar:30} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = std::time::Instant::now();
    loop {
        let view = client.get(&format!("/v1/batches/{batch}")).await?;
        let states = &view["states"];
        let n = |s: &str| states[s].as_u64().unwrap_or(0);
        let (settled, failed, held) = (n("settled"), n("failed"), n("held"));
        bar.set_position(settled + failed);
        bar.set_message(format!("settled {settled}, failed {failed}, held {held}"));
        if settled + failed + held >= count {
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("batch {batch}: settled {settled}, failed {failed}, held {held} of {count}");
            }
            return Ok(if settled == count { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        if started.elapsed() > timeout {
            bar.finish_and_clear();
            bail!("batch {batch} is not final after {timeout:?}: {states}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A stream over the chunks that reports each chunk's size as it is taken.
fn futures_lite_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
    on_chunk: impl Fn(u64) + Send + Sync + 'static,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + Sync + 'static {
    futures::stream::iter(chunks).inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            on_chunk(bytes.len() as u64);
        }
    })
}

use futures::StreamExt;
