//! Three `railyard serve` processes sharing one PostgreSQL journal over two real anvil chains
//! (issue 14). The work leases — the coordinator's and one per rail — spread one a node: one
//! node routes and takes commands, each of the others signs, broadcasts and watches on one
//! chain. Every node journals the merchants' batches sent to it itself (in its turn on the
//! journal: an intake needs no lease) and forwards any other change to the coordinator.
//! Faults, in order: the leader killed with SIGKILL; the next leader
//! frozen with SIGSTOP past its lease, then woken; PostgreSQL itself restarted; the first node
//! started again. At the end every recipient holds on chain exactly what was accepted for
//! it, the ledger balances, the hash chain verifies, no frame was appended under a lease token
//! older than one already used for that lease (a woken node appended nothing), and nodes
//! holding only a rail's lease appended (the rails were driven apart from the coordinator).
//! The run prints the longest time no node held the coordinator lease. `RAILYARD_CLUSTER_ROUNDS` repeats the fault rounds
//! (after the first, the node killed is chosen at random: leader or standby), and the kills
//! land at random moments from a printed seed (`RAILYARD_CLUSTER_SEED` repeats a run).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::sol_types::SolCall;
use journal_pg::PgJournal;
use journal_pg::cluster::Cluster;

use super::server::Server;

alloy::sol! {
    function balanceOf(address owner) view returns (uint256);
}

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const HOT_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const TOKEN: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const LEASE_MS: u64 = 1_500;

/// `railyard devnet --chains-only`: both chains, deployed and funded; SIGINT stops them.
struct Chains {
    child: Child,
    urls: Vec<String>,
    config: std::path::PathBuf,
}

impl Chains {
    fn start(data: &Path) -> Chains {
        let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
            .current_dir(REPO)
            .env_remove("RUST_LOG")
            .args(["devnet", "--chains-only", "--l1-port", "0", "--l2-port", "0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut urls = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("devnet: L1 (chain 31337) at ") {
                let (l1, l2) = rest.split_once(", L2 (chain 31338) at ").unwrap();
                urls = vec![l1.to_owned(), l2.to_owned()];
            } else if line.contains("chains ready") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        assert_eq!(urls.len(), 2, "devnet printed both chains");
        let config = data.join("cluster.toml");
        let written = std::fs::read_to_string(data.join("railyard.toml")).unwrap();
        std::fs::write(
            &config,
            format!(
                "{written}\n[journal]\nkind = \"postgres\"\nurl_env = \"TEST_PG_URL\"\nlease_ttl_ms = {LEASE_MS}\n"
            ),
        )
        .unwrap();
        Chains { child, urls, config }
    }

    /// What `destination` holds in the stablecoin over both chains, in its smallest units.
    async fn usdc(&self, destination: &str) -> U256 {
        let mut total = U256::ZERO;
        for url in &self.urls {
            let provider: RootProvider = RootProvider::new_http(url.parse().unwrap());
            let call = alloy::rpc::types::TransactionRequest::default()
                .to(TOKEN.parse::<Address>().unwrap())
                .input(balanceOfCall { owner: destination.parse().unwrap() }.abi_encode().into());
            total += U256::from_be_slice(&provider.call(call).await.unwrap());
        }
        total
    }
}

impl Drop for Chains {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn node(chains: &Chains, pg: &Cluster, data: &Path) -> Server {
    std::fs::create_dir_all(data).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .current_dir(data)
        .env("RAILYARD_DEVNET_KEY", HOT_KEY)
        .env("TEST_PG_URL", &pg.url)
        .env("RAILYARD__DATA_DIR", data)
        .env("RAILYARD__TICK_MS", "100")
        .env("RUST_LOG", "info")
        .arg("--config")
        .arg(&chains.config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(data.join("server.log")).unwrap());
    Server::spawn(command)
}

fn signal(server: &Server, signal: &str) {
    assert!(Command::new("kill").args([signal, &server.pid().to_string()]).status().unwrap().success());
}

/// Waits until one of `nodes` leads; returns its index and how long it took.
async fn leader(nodes: &[&Server], within: Duration) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        for (i, node) in nodes.iter().enumerate() {
            if node.metric("railyard_node_leader").await == Some(1) {
                return (i, started.elapsed());
            }
        }
        assert!(started.elapsed() < within, "no node took the lease within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until each of `nodes` acts under one work lease: the coordinator's or a rail's.
async fn spread(nodes: &[&Server], within: Duration) {
    let started = Instant::now();
    loop {
        let mut each = Vec::new();
        for node in nodes {
            let leader = node.metric("railyard_node_leader").await.unwrap_or(0);
            each.push(leader + node.metric("railyard_node_rails").await.unwrap_or(0));
        }
        if each.iter().all(|n| *n == 1) {
            return;
        }
        assert!(started.elapsed() < within, "the leases did not spread one a node: {each:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the nodes hold every rail's lease between them (two chains); returns how long
/// since `since` (a fault) that took.
async fn rails_held(nodes: &[&Server], since: Instant, within: Duration) -> Duration {
    loop {
        let mut held = 0;
        for node in nodes {
            held += node.metric("railyard_node_rails").await.unwrap_or(0);
        }
        if held == 2 {
            return since.elapsed();
        }
        assert!(since.elapsed() < within, "the rails' leases were not all taken within {within:?} ({held} of 2)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A batch of `rows` USDC payouts to addresses no other batch uses, allowed on both chains.
fn batch(round: u64, rows: u64) -> (String, Vec<(String, U256)>) {
    let mut csv = String::from("reference,amount,asset,destination,networks,class\n");
    let mut expected = Vec::new();
    for i in 0..rows {
        let destination = super::server::address(round * 1_000 + i);
        let cents = 100 + round * 7 + i;
        csv.push_str(&format!(
            "r{round}-{i},{}.{:02},USDC,{destination},evm:31337|evm:31338,standard\n",
            cents / 100,
            cents % 100
        ));
        expected.push((destination, U256::from(cents) * U256::from(10_000u64)));
    }
    (csv, expected)
}

async fn submit(
    via: &Server,
    key: &str,
    round: u64,
    rows: u64,
    all: &mut Vec<(String, U256)>,
    batches: &mut Vec<String>,
) {
    let (csv, expected) = batch(round, rows);
    // As a client does: a 503 (no leader yet, or the one this node knew is gone) is retried
    // with the same idempotency key after its Retry-After.
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = via.submit(key, &format!("round-{round}"), "text/csv", csv.clone()).await;
        if status != 503 || started.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!((200..=202).contains(&status), "round {round}: {status} {body}");
    batches.push(body["batch"].as_str().unwrap().to_owned());
    all.extend(expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_kill_pause_and_a_database_restart_paying_each_recipient_once() {
    let rounds: u64 = std::env::var("RAILYARD_CLUSTER_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    // When the kills land, and which node dies after the first round: from a seed, printed so
    // that a failing run can be repeated (`RAILYARD_CLUSTER_SEED`).
    let seed: u64 = std::env::var("RAILYARD_CLUSTER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    println!("cluster: seed {seed} (RAILYARD_CLUSTER_SEED={seed} repeats it)");
    let mut state = seed | 1;
    let mut random = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let pg = Cluster::start();
    let data = tempfile::tempdir().unwrap();
    let chains = Chains::start(data.path());
    let dir = |name: &str| data.path().join(name);
    let a = node(&chains, &pg, &dir("a"));
    let admin = a.admin.clone().expect("the first node leads and makes the first admin key");
    assert_eq!(a.metric("railyard_node_leader").await, Some(1));
    let b = node(&chains, &pg, &dir("b"));
    let c = node(&chains, &pg, &dir("c"));
    // The coordinator gives up its rails' leases to the nodes that joined.
    spread(&[&a, &b, &c], Duration::from_secs(30)).await;
    assert_eq!(b.metric("railyard_node_leader").await, Some(0));
    let merchant = {
        // Made through a standby: forwarded to the leader.
        let (status, body) = b
            .post("/v1/keys", &admin, serde_json::json!({ "role": "merchant", "merchant": 1, "label": "cluster" }))
            .await;
        assert_eq!(status, 201, "{body}");
        body["secret"].as_str().unwrap().to_owned()
    };
    // A request a standby already forwarded is not forwarded again (two standbys with stale
    // views cannot pass it back and forth).
    let (status, body) = b
        .call(
            b.request(reqwest::Method::POST, "/v1/keys", Some(&admin))
                .header("x-railyard-forwarded", "1")
                .json(&serde_json::json!({ "role": "merchant", "merchant": 2, "label": "loop" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (503, Some("no_leader")), "{body}");
    // Bad input through a standby: refused, naming the row; nothing changed.
    let records = a.journal_records().await;
    let bad = "reference,amount,asset,destination,networks,class\nx-1,-5,USDC,0x12,evm:31337,standard\n";
    let (status, body) = c.submit(&merchant, "bad-1", "text/csv", bad).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("amount"), "{body}");
    assert_eq!(a.journal_records().await, records, "a refused batch journals nothing");
    let (mut expected, mut batches) = (Vec::new(), Vec::new());
    let mut longest = Duration::ZERO;
    let mut handovers = 0u64;
    let mut longest_rail = Duration::ZERO;
    let mut nodes = vec![(a, "a"), (b, "b"), (c, "c")];
    for round in 0..rounds {
        let r = round * 10;
        let (i, _) = leader(&nodes.iter().map(|(n, _)| n).collect::<Vec<_>>(), Duration::from_secs(30)).await;
        // Sent to a standby: journaled there.
        submit(&nodes[(i + 1) % nodes.len()].0, &merchant, r, 20, &mut expected, &mut batches).await;
        tokio::time::sleep(Duration::from_millis(200 + random(1_800))).await;
        // 1. The leader dies (kill -9): another node takes over after the lease expires. After
        // the first round the victim is any node, the leader or a standby.
        let victim = if round == 0 { i } else { usize::try_from(random(3)).unwrap() };
        // The coordinator's lease changes hands once for its own death and once per freeze.
        handovers += u64::from(victim == i) + 1;
        let (dead, dead_dir) = nodes.remove(victim);
        let fault = Instant::now();
        dead.kill();
        let (j, gap) = leader(&nodes.iter().map(|(n, _)| n).collect::<Vec<_>>(), Duration::from_secs(20)).await;
        longest = longest.max(gap);
        let gap = rails_held(&nodes.iter().map(|(n, _)| n).collect::<Vec<_>>(), fault, Duration::from_secs(20)).await;
        longest_rail = longest_rail.max(gap);
        submit(&nodes[1 - j].0, &merchant, r + 1, 20, &mut expected, &mut batches).await;
        tokio::time::sleep(Duration::from_millis(200 + random(1_800))).await;
        // 2. The new leader freezes past its lease; the third node takes over; the frozen one,
        // woken, must stand by (the frames' tokens show it appended nothing).
        let (j, _) = leader(&nodes.iter().map(|(n, _)| n).collect::<Vec<_>>(), Duration::from_secs(5)).await;
        let (frozen, frozen_dir) = nodes.remove(j);
        let fault = Instant::now();
        signal(&frozen, "-STOP");
        let (_, gap) = leader(&[&nodes[0].0], Duration::from_secs(20)).await;
        longest = longest.max(gap);
        longest_rail = longest_rail.max(rails_held(&[&nodes[0].0], fault, Duration::from_secs(20)).await);
        submit(&nodes[0].0, &merchant, r + 2, 20, &mut expected, &mut batches).await;
        tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
        signal(&frozen, "-CONT");
        tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
        assert_eq!(frozen.metric("railyard_node_leader").await, Some(0), "the woken node stands by");
        nodes.push((frozen, frozen_dir));
        // 3. PostgreSQL restarts: the leader's commits fail, it stops and opens again.
        pg.restart();
        let (j, gap) = leader(&nodes.iter().map(|(n, _)| n).collect::<Vec<_>>(), Duration::from_secs(30)).await;
        longest = longest.max(gap);
        submit(&nodes[1 - j].0, &merchant, r + 3, 20, &mut expected, &mut batches).await;
        // 4. The killed node comes back and joins as a standby.
        nodes.push((node(&chains, &pg, &dir(dead_dir)), dead_dir));
    }
    for batch in &batches {
        nodes[0].0.wait_final(&merchant, batch, Duration::from_secs(120)).await;
    }
    for (destination, amount) in &expected {
        assert_eq!(chains.usdc(destination).await, *amount, "{destination} holds exactly what was accepted for it");
    }
    let url = pg.url.clone();
    let (records, frames, accepted_at) = tokio::task::spawn_blocking(move || {
        let journal = PgJournal::connect(&url).unwrap();
        let accepted_at: Vec<u64> = journal
            .read_range(1, 1 << 20)
            .unwrap()
            .iter()
            .filter(|r| matches!(model::Event::decode(&r.payload), Ok(model::Event::BatchAccepted { .. })))
            .map(|r| r.seq)
            .collect();
        (journal.verify().unwrap(), journal.frame_fences().unwrap(), accepted_at)
    })
    .await
    .unwrap();
    let mut highest: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for (first, fences) in &frames {
        for (lease, token) in fences {
            let last = highest.entry(lease).or_default();
            assert!(*token >= *last, "frame at {first} was appended under {lease} token {token} after token {last}");
            *last = *token;
        }
    }
    let highest = highest.get("coordinator").copied().unwrap_or(0);
    // Nodes without the coordinator's lease journaled the batches sent to them, and drove
    // rails (frames under a rail's lease alone).
    let coordinated = |seq: u64| {
        let frame = frames.iter().rev().find(|(first, _)| *first <= seq).expect("every record is in a frame");
        frame.1.iter().any(|(lease, _)| lease == "coordinator")
    };
    let by_others = accepted_at.iter().filter(|seq| !coordinated(**seq)).count();
    assert!(by_others > 0, "no batch was journaled by a node without the coordinator's lease");
    let by_rails =
        frames.iter().filter(|(_, f)| !f.is_empty() && f.iter().all(|(l, _)| l.starts_with("rail:"))).count();
    assert!(by_rails > 0, "no frame was appended by a node driving a rail alone");
    // A coordinator for the start, and one more for each of its deaths and each freeze (after
    // the database restart the holder may keep its lease, if it renews it in time).
    assert!(highest > i64::try_from(handovers).unwrap(), "holders: {highest} after {handovers} handovers");
    // The ledger balances in the state the journal gives (a node opened on it).
    let text = std::fs::read_to_string(&chains.config).unwrap();
    let file = config::parse(&text, &[]).unwrap();
    let loaded = {
        let mut file = file;
        file.journal = config::JournalFile::Redb;
        config::load(&file).unwrap()
    };
    let store = journal_pg::PgStore::connect(&pg.url).unwrap();
    let shared = journal::Journal::with_store(std::sync::Arc::new(store), loaded.engine.journal.clone()).unwrap();
    let follower = engine::Follower::open(shared, &loaded.engine.state).unwrap();
    follower.state().pools.ledger().verify().unwrap();
    assert_eq!(follower.state().book.payments.len(), 0, "nothing open: every payment finished");
    println!(
        "cluster: {} payments over {} batches, {records} records ({by_others} of the {} batches journaled by nodes that do not coordinate, {by_rails} frames by nodes driving a rail alone), coordinator tokens up to {highest}; longest without a coordinator {longest:?}, with a rail's lease not held {longest_rail:?}",
        expected.len(),
        batches.len(),
        accepted_at.len()
    );
}
