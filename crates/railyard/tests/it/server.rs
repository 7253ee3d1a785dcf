//! A real `railyard serve` process on 127.0.0.1 for the API tests: started on the embedded
//! default with fast sandbox blocks, its address and first admin key read from what it prints,
//! killed with SIGKILL when dropped (or on purpose, to restart it on the same data).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Server {
    child: Child,
    pub url: String,
    /// The admin key printed on first start (`None` on a restart).
    pub admin: Option<String>,
    pub http: reqwest::Client,
}

/// The server's logs (stderr), appended to `data/server.log` across restarts.
pub fn log(data: &Path) -> String {
    std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
}

/// Settings every API test uses: fast blocks and ticks, limits out of the way.
fn command(data: &Path, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .current_dir(data)
        .env("RAILYARD__DATA_DIR", data)
        .env("RAILYARD__TICK_MS", "20")
        .env("RAILYARD__RAILS__0__BLOCK_TIME_MS", "100")
        .env("RAILYARD__RAILS__1__BLOCK_TIME_MS", "100")
        .env("RAILYARD__RAILS__2__BLOCK_TIME_MS", "150")
        .env("RAILYARD__QUEUE__MERCHANT_LIMIT__PER_SECOND", "20000")
        .env("RAILYARD__QUEUE__RAIL_LIMIT__PER_SECOND", "20000")
        .env("RAILYARD__API__REQUESTS_PER_SECOND", "1000")
        .env("RAILYARD__API__REQUESTS_BURST", "1000")
        .env_remove("RUST_LOG")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(data.join("server.log")).expect("log file"));
    for (key, value) in extra {
        command.env(key, value);
    }
    command
}

impl Server {
    pub fn start(data: &Path, extra: &[(&str, &str)]) -> Server {
        Server::spawn(command(data, extra))
    }

    /// Starts `command` (a `railyard serve` with its stdout piped) and reads where it listens
    /// and its first admin key from what it prints.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command.spawn().expect("railyard starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        let mut admin = None;
        for line in lines.by_ref() {
            let line = line.expect("stdout reads");
            if let Some(rest) = line.strip_prefix("railyard listening on ") {
                url = Some(rest.trim().to_owned());
            } else if let Some(key) = line.split("store it now): ").nth(1) {
                admin = Some(key.trim().to_owned());
            } else if line.starts_with("railyard serving") {
                break;
            }
        }
        // Keep reading so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = url.expect("the server prints where it listens");
        Server { child, url, admin, http: reqwest::Client::new() }
    }

    /// kill -9: no shutdown, no flush beyond what the journal made durable.
    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A gauge or counter from /metrics (`None`: the server did not answer or lacks it).
    pub async fn metric(&self, name: &str) -> Option<i64> {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await.ok()?.text().await.ok()?;
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn request(&self, method: reqwest::Method, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends and returns the status and the JSON body (`Null` when empty or not JSON).
    pub async fn call(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call(self.request(reqwest::Method::GET, path, Some(key))).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.call(self.request(reqwest::Method::POST, path, Some(key)).json(&body)).await
    }

    /// Creates a key with the admin key; returns its secret.
    pub async fn key(&self, role: &str, merchant: Option<u64>) -> String {
        let admin = self.admin.as_deref().expect("first start printed an admin key");
        let (status, body) =
            self.post("/v1/keys", admin, json!({ "role": role, "merchant": merchant, "label": "test" })).await;
        assert_eq!(status, 201, "{body}");
        body["secret"].as_str().unwrap().to_owned()
    }

    /// Submits a batch body with a content type and key.
    pub async fn submit(
        &self,
        key: &str,
        idempotency: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let request = self
            .request(reqwest::Method::POST, "/v1/batches", Some(key))
            .header("content-type", content_type)
            .header("idempotency-key", idempotency)
            .body(body);
        self.call(request).await
    }

    /// The journal's record count, from /metrics.
    pub async fn journal_records(&self) -> u64 {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with("railyard_journal_records ")).expect("the gauge is exported");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Polls a batch until every payment is settled or failed, or `within` passes.
    pub async fn wait_final(&self, key: &str, batch: &str, within: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, view) = self.get(&format!("/v1/batches/{batch}"), key).await;
            assert_eq!(status, 200, "{view}");
            if view["finished"] == json!(true) {
                return view;
            }
            assert!(started.elapsed() < within, "batch {batch} not final after {within:?}: {view}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A distinct EIP-55 address per index (lowercase hex is accepted without a checksum).
pub fn address(i: u64) -> String {
    let hash = blake3::hash(&i.to_le_bytes());
    format!("0x{}", hex::encode(&hash.as_bytes()[..20]))
}

/// A CSV batch of `rows` USDC payouts on base/optimism.
pub fn csv(rows: u64, prefix: &str) -> String {
    let mut out = String::from("reference,amount,asset,destination,networks,class\r\n");
    for i in 0..rows {
        out.push_str(&format!(
            "{prefix}-{i},{}.{:02},USDC,{},base|optimism,standard\r\n",
            1 + i % 50,
            i % 100,
            address(i)
        ));
    }
    out
}
