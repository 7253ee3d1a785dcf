//! Starts real anvil nodes (npm package `@foundry-rs/anvil`, installed by
//! `scripts/install-tools`) on 127.0.0.1 and free ports, with their cache in a temp dir; kills
//! them when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::providers::{Provider, RootProvider};

pub struct Anvil {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RAILYARD_ANVIL") {
        return PathBuf::from(path);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(path.exists(), "anvil is not installed at {}: run scripts/install-tools", path.display());
    path
}

impl Anvil {
    pub async fn start(chain_id: u64) -> Anvil {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--chain-id", &chain_id.to_string()])
            .arg("--cache-path")
            .arg(dir.path())
            .args(["--accounts", "3", "--balance", "1000000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start anvil");
        let anvil = Anvil { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let provider = anvil.provider();
        let deadline = Instant::now() + Duration::from_secs(30);
        while provider.get_chain_id().await.is_err() {
            assert!(Instant::now() < deadline, "anvil did not answer on {} within 30 s", anvil.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anvil
    }

    pub fn provider(&self) -> RootProvider {
        RootProvider::new_http(self.url.parse().unwrap())
    }

    pub async fn rpc(&self, method: &'static str, params: serde_json::Value) -> serde_json::Value {
        self.provider()
            .raw_request::<_, serde_json::Value>(method.into(), params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    pub async fn automine(&self, on: bool) {
        self.rpc("evm_setAutomine", serde_json::json!([on])).await;
    }

    pub async fn mine(&self) {
        self.rpc("evm_mine", serde_json::json!([])).await;
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
