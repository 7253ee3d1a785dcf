//! A client for the part of Bitcoin Core's JSON-RPC the Bitcoin rail uses, over reqwest, with
//! the node's credentials: its cookie file (read again on every call, since Core writes a new
//! one when it restarts) or a user and password. Every call has a timeout; nothing retries.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::RailError;

/// How railyard proves itself to the node.
#[derive(Clone)]
pub enum RpcAuth {
    /// Core's `.cookie` file (`__cookie__:<password>`), read on every call.
    Cookie(PathBuf),
    /// `rpcuser` / `rpcpassword` (or `rpcauth`).
    Password { user: String, password: Zeroizing<String> },
}

impl fmt::Debug for RpcAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcAuth::Cookie(path) => f.debug_tuple("Cookie").field(path).finish(),
            RpcAuth::Password { user, .. } => f.debug_struct("Password").field("user", user).finish_non_exhaustive(),
        }
    }
}

/// Core's error codes the rail tells apart.
pub(super) const INVALID_ADDRESS_OR_KEY: i64 = -5;
pub(super) const VERIFY_ERROR: i64 = -25;
pub(super) const VERIFY_ALREADY_IN_CHAIN: i64 = -27;

/// A failed call: the node answered with an error, or did not answer usably.
#[derive(Debug)]
pub(super) enum RpcFailure {
    Error { code: i64, message: String },
    Unavailable(String),
    Auth(String),
}

impl From<RpcFailure> for RailError {
    fn from(failure: RpcFailure) -> RailError {
        match failure {
            RpcFailure::Error { code, message } => RailError::Rejected(format!("{message} (code {code})")),
            RpcFailure::Unavailable(why) => RailError::Unavailable(why),
            RpcFailure::Auth(why) => RailError::Config(why),
        }
    }
}

#[derive(Debug)]
pub(super) struct CoreRpc {
    url: String,
    auth: RpcAuth,
    client: reqwest::Client,
    timeout: Duration,
    next_id: AtomicU64,
}

impl CoreRpc {
    pub(super) fn new(url: &str, auth: RpcAuth, timeout: Duration) -> Result<CoreRpc, RailError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| RailError::Config(format!("rpc_url {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RailError::Config(format!("rpc_url {url:?}: the scheme must be http or https")));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| RailError::Config(format!("http client: {e}")))?;
        Ok(CoreRpc { url: url.to_owned(), auth, client, timeout, next_id: AtomicU64::new(1) })
    }

    fn credentials(&self) -> Result<(String, Zeroizing<String>), RpcFailure> {
        match &self.auth {
            RpcAuth::Password { user, password } => Ok((user.clone(), password.clone())),
            RpcAuth::Cookie(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    RpcFailure::Unavailable(format!("cannot read the node's cookie file {}: {e}", path.display()))
                })?);
                let (user, password) = text.trim().split_once(':').ok_or_else(|| {
                    RpcFailure::Auth(format!("the cookie file {} is not user:password", path.display()))
                })?;
                Ok((user.to_owned(), Zeroizing::new(password.to_owned())))
            }
        }
    }

    /// Calls `method` and decodes its result.
    pub(super) async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, RpcFailure> {
        let value = self.call_value(method, params).await?;
        serde_json::from_value(value)
            .map_err(|e| RpcFailure::Unavailable(format!("{method}: the node's answer does not parse: {e}")))
    }

    pub(super) async fn call_value(&self, method: &str, params: Value) -> Result<Value, RpcFailure> {
        let (user, password) = self.credentials()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "1.0", "id": id, "method": method, "params": params });
        let response =
            self.client.post(&self.url).basic_auth(user, Some(password.as_str())).json(&body).send().await.map_err(
                |e| {
                    if e.is_timeout() {
                        RpcFailure::Unavailable(format!("{method}: no answer within {:?}", self.timeout))
                    } else {
                        RpcFailure::Unavailable(format!("{method}: {e}"))
                    }
                },
            )?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RpcFailure::Auth(format!("the node refused railyard's credentials ({status})")));
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|e| RpcFailure::Unavailable(format!("{method}: HTTP {status} without a JSON-RPC answer: {e}")))?;
        match answer.get("error") {
            Some(error) if !error.is_null() => {
                let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
                let message = error.get("message").and_then(Value::as_str).unwrap_or("(no message)");
                // A node's message is short; cut it all the same, so no answer floods a log.
                let message: String = message.chars().take(300).collect();
                Err(RpcFailure::Error { code, message })
            }
            _ => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
        }
    }
}
