//! A merchant's batch as it arrives: JSON (`application/json`) or CSV (`text/csv`, with a
//! header row; a UTF-8 byte-order mark, CRLF line ends and quoted fields are fine), turned into
//! the engine's drafts. What cannot be read at all (malformed JSON or CSV, a duplicate key, an
//! unknown column) is a 400 naming where; rows that read but are wrong are collected, every
//! one of them, into a 422 with row, field, code and what to fix. Nothing a caller sends is
//! echoed back longer than `ECHO_MAX` characters.

use std::collections::BTreeMap;

use engine::Draft;
use model::{Amount, AmountError, Asset, ClassName, Network, Timestamp};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::problem::{Problem, RowProblem};

/// The most characters of a caller's text any message repeats.
pub const ECHO_MAX: usize = 80;

/// Cuts `text` to `ECHO_MAX` characters for a message.
pub fn clip(text: &str) -> String {
    if text.chars().count() <= ECHO_MAX {
        return text.to_owned();
    }
    let cut: String = text.chars().take(ECHO_MAX).collect();
    format!("{cut}… ({} characters)", text.chars().count())
}

/// Like `clip`, but keeps the end of a serde message (where it says the line and column).
fn clip_tail(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(at) if text.chars().count() > ECHO_MAX => format!("{}{}", clip(&text[..at]), &text[at..]),
        _ => text.to_owned(),
    }
}

/// One payment as a merchant submits it.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentIn {
    /// The merchant's own id for this payment: unique per merchant, 1 to 128 characters.
    pub reference: String,
    /// A decimal string in the asset's units ("12.50" USDC), never a JSON number.
    pub amount: String,
    /// The asset's symbol: BTC, ETH, USDC, …
    pub asset: String,
    /// The recipient's address (EIP-55 checksummed when mixed case).
    pub destination: String,
    /// The networks the payment may go over, by name: base, optimism, ethereum, …
    pub networks: Vec<String>,
    /// A priority class: urgent, payroll, standard, bulk (as configured).
    pub class: String,
    /// The latest time it should be final, in Unix milliseconds (default: the class's).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    pub payments: Vec<PaymentIn>,
}

/// The columns of a CSV batch; `deadline_ms` may be left out.
pub const CSV_COLUMNS: [&str; 7] = ["reference", "amount", "asset", "destination", "networks", "class", "deadline_ms"];

/// Reads a JSON batch. Structure errors name the path (`payments[3].amount`).
pub fn parse_json(body: &[u8]) -> Result<Vec<PaymentIn>, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let batch: BatchIn = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let at = if path == "." { String::new() } else { format!(" at {path}") };
        Problem::bad_request(
            "malformed_json",
            format!("the body is not a valid batch{at}: {}", clip_tail(&inner.to_string())),
        )
    })?;
    deserializer
        .end()
        .map_err(|_| Problem::bad_request("malformed_json", "the body has data after the batch object"))?;
    Ok(batch.payments)
}

/// Reads a CSV batch with a header row naming the columns (any order).
pub fn parse_csv(body: &[u8]) -> Result<Vec<PaymentIn>, Problem> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(body);
    let headers = reader.headers().map_err(csv_problem)?.clone();
    let mut columns: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, name) in headers.iter().enumerate() {
        let name = name.trim();
        let known = CSV_COLUMNS.iter().find(|c| **c == name).ok_or_else(|| {
            Problem::bad_request(
                "unknown_column",
                format!("column {:?} is not known; the columns are {}", clip(name), CSV_COLUMNS.join(", ")),
            )
        })?;
        if columns.insert(known, index).is_some() {
            return Err(Problem::bad_request("duplicate_column", format!("column {known} appears twice")));
        }
    }
    if let Some(missing) = CSV_COLUMNS[..6].iter().find(|c| !columns.contains_key(*c)) {
        return Err(Problem::bad_request(
            "missing_column",
            format!("the header has no {missing} column; the columns are {}", CSV_COLUMNS.join(", ")),
        ));
    }
    let mut rows = Vec::new();
    let mut deadline_errors = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(csv_problem)?;
        let field = |name: &str| columns.get(name).and_then(|i| record.get(*i)).unwrap_or("").to_owned();
        let deadline = field("deadline_ms");
        let deadline_ms = if deadline.trim().is_empty() {
            None
        } else {
            match deadline.trim().parse::<u64>() {
                Ok(ms) => Some(ms),
                Err(_) => {
                    deadline_errors.push(row_problem(
                        row,
                        "deadline_ms",
                        "invalid_deadline",
                        "deadline_ms is Unix milliseconds (digits only)",
                    ));
                    None
                }
            }
        };
        let networks = field("networks");
        rows.push(PaymentIn {
            reference: field("reference"),
            amount: field("amount").trim().to_owned(),
            asset: field("asset").trim().to_owned(),
            destination: field("destination").trim().to_owned(),
            networks: networks.split(['|', ';', ' ']).filter(|n| !n.is_empty()).map(str::to_owned).collect(),
            class: field("class").trim().to_owned(),
            deadline_ms,
        });
    }
    if !deadline_errors.is_empty() {
        return Err(rejected(deadline_errors));
    }
    Ok(rows)
}

fn csv_problem(error: csv::Error) -> Problem {
    let line = error.position().map(|p| format!(" (line {})", p.line())).unwrap_or_default();
    let what = match error.kind() {
        csv::ErrorKind::Utf8 { .. } => "a field is not valid UTF-8".to_owned(),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("a row has {len} fields where the header has {expected_len}")
        }
        _ => clip(&error.to_string()),
    };
    Problem::bad_request("malformed_csv", format!("the body is not a valid CSV batch{line}: {what}"))
}

fn row_problem(row: usize, field: &str, code: &str, message: impl Into<String>) -> RowProblem {
    RowProblem { row, field: field.to_owned(), code: code.to_owned(), message: message.into() }
}

/// The 422 for a batch rejected whole.
pub fn rejected(rows: Vec<RowProblem>) -> Problem {
    let count = rows.len();
    Problem::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_batch",
        format!("the batch is rejected whole: {count} row(s) are invalid; fix them and submit it again"),
    )
    .rows(rows)
}

/// Turns read rows into drafts, checking what the wire format alone can (lengths, asset,
/// amount, networks, class name); every row is checked, and any problem rejects the batch.
pub fn drafts(rows: Vec<PaymentIn>, assets: &[Asset]) -> Result<Vec<Draft>, Problem> {
    let mut drafts = Vec::with_capacity(rows.len());
    let mut problems = Vec::new();
    for (row, input) in rows.into_iter().enumerate() {
        match draft(row, input, assets) {
            Ok(draft) => drafts.push(draft),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() { Ok(drafts) } else { Err(rejected(problems)) }
}

fn draft(row: usize, input: PaymentIn, assets: &[Asset]) -> Result<Draft, RowProblem> {
    let fail = |field: &str, code: &str, message: String| row_problem(row, field, code, message);
    for (field, value, max) in [
        ("reference", &input.reference, 128),
        ("destination", &input.destination, 128),
        ("amount", &input.amount, 64),
        ("asset", &input.asset, 16),
        ("class", &input.class, 32),
    ] {
        if value.chars().count() > max {
            return Err(fail(field, "too_long", format!("{field} is longer than {max} characters")));
        }
    }
    let asset = assets.iter().find(|a| a.symbol() == input.asset).copied().ok_or_else(|| {
        let known: Vec<&str> = assets.iter().map(Asset::symbol).collect();
        fail(
            "asset",
            "unknown_asset",
            format!("asset {:?} is not carried here; use one of {}", input.asset, known.join(", ")),
        )
    })?;
    let amount = Amount::parse_decimal(&input.amount, asset.decimals()).map_err(|error| {
        let code = match error {
            AmountError::TooManyDecimals { .. } => "amount_too_precise",
            AmountError::Overflow { .. } => "amount_overflow",
            _ => "amount_malformed",
        };
        let hint = if input.amount.starts_with('-') { "; a payout is a positive amount" } else { "" };
        fail("amount", code, format!("{error}{hint}"))
    })?;
    if input.networks.len() > 8 {
        return Err(fail("networks", "invalid_networks", "at most 8 networks per payment".to_owned()));
    }
    let mut networks = Vec::with_capacity(input.networks.len());
    for name in &input.networks {
        let network: Network = name.parse().map_err(|_| {
            fail(
                "networks",
                "unknown_network",
                format!(
                    "network {:?} is not known (base, optimism, ethereum, arbitrum, bitcoin, evm:<chain id>, …)",
                    clip(name)
                ),
            )
        })?;
        networks.push(network);
    }
    let class = ClassName::new(&input.class)
        .map_err(|_| fail("class", "unknown_class", format!("class {:?} is not a valid class name", input.class)))?;
    Ok(Draft {
        reference: input.reference,
        amount,
        asset,
        destination: input.destination,
        networks,
        class,
        deadline: input.deadline_ms.map(Timestamp),
    })
}
