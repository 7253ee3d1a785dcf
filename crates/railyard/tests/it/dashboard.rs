//! The operator dashboard in a real headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` over WebDriver; both installed by `scripts/install-tools`) against a real
//! `railyard serve`: the page renders the server's rails and pools, a live update arrives over
//! the event stream when a batch settles, the drain button performs a dry run (nothing is
//! journaled), and pause / resume act with the reason typed in. Screenshots are kept in
//! `target/tmp/dashboard-*.png`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::server::{Server, csv};

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Already gone is fine: the goal is that it is not left running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs: scripts/install-tools installs Debian's chromium and chromium-driver");
    Driver { child, url: format!("http://127.0.0.1:{port}") }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let options = json!({
        "binary": "/usr/bin/chromium",
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1400,1900",
            format!("--user-data-dir={}", profile.display()),
        ]
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&driver.url).await {
            Ok(client) => return client,
            Err(error) if Instant::now() < deadline => {
                eprintln!("chromedriver not ready yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("no browser session: {error}"),
        }
    }
}

/// The text of the first element matching `css`, once `ready` accepts it (within 30 s).
async fn wait_text(client: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
            && ready(&text)
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{css} never showed what was expected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the first element matching `css`. The page re-renders its tables on every update, so
/// an element found may be replaced before the click lands: find it again and retry.
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outcome = match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => return,
            Err(error) => {
                assert!(Instant::now() < deadline, "cannot click {css}: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn screenshot(client: &Client, name: &str) -> std::path::PathBuf {
    let png = client.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_live_data_and_drains_dry_in_chromium() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let operator = server.key("operator", None).await;
    let merchant = server.key("merchant", Some(41)).await;
    let driver = chromedriver();
    let client = browser(&driver, &data.path().join("chromium")).await;

    client.goto(&format!("{}/", server.url)).await.unwrap();
    client.find(Locator::Css("#key")).await.unwrap().send_keys(&operator).await.unwrap();
    click(&client, "#connect").await;

    // The server's rails and pools are on the page.
    let row = wait_text(&client, "#rails tr[data-rail='sandbox-base']", |t| t.contains("up")).await;
    assert!(row.contains("sandbox-base") && row.contains("closed"), "{row}");
    let pool = wait_text(&client, "#pools tr[data-pool='sandbox-base/USDC']", |t| !t.is_empty()).await;
    assert!(pool.contains("USDC") && pool.contains("ok"), "{pool}");
    wait_text(&client, "#status", |t| t == "live").await;

    // A live update: a batch settles, and the page learns it from the event stream alone.
    let (status, accepted) = server.submit(&merchant, "dash-1", "text/csv", csv(25, "dash")).await;
    assert_eq!(status, 202, "{accepted}");
    let settled = wait_text(&client, "#counts [data-state='settled']", |t| t == "settled 25").await;
    assert_eq!(settled, "settled 25");
    let updates: u64 = client
        .find(Locator::Css("#updates"))
        .await
        .unwrap()
        .attr("data-count")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!(updates >= 2, "the stream delivered {updates} updates");
    screenshot(&client, "live").await;
    // The same statistics in /metrics: payouts settled per rail and asset, pool balances.
    let metrics = server.http.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    let settled: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("railyard_settled_payouts{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(settled, 25, "{metrics}");
    assert!(metrics.contains("railyard_pool_available{rail=\"sandbox-base\",asset=\"USDC\"}"), "{metrics}");

    // The drain button performs a dry run: the report shows, nothing is journaled.
    click(&client, "#rails tr[data-rail='sandbox-base'] button.drain-dry").await;
    let report = wait_text(&client, "#drain-result", |t| t.starts_with("Dry run")).await;
    assert!(report.contains("would move") && report.contains("sandbox-base"), "{report}");
    let (_, audit) = server.get("/v1/audit", server.admin.as_ref().unwrap()).await;
    assert!(!audit.to_string().contains("RailDrained"), "a dry run journals nothing: {audit}");
    screenshot(&client, "drain-dry-run").await;

    // Pause without a reason is refused on the page; with one, the rail shows paused, and the
    // action is journaled with the key and the reason.
    click(&client, "#rails tr[data-rail='sandbox-ethereum'] button.pause").await;
    wait_text(&client, "#error", |t| t.contains("type a reason")).await;
    client.find(Locator::Css("#reason")).await.unwrap().send_keys("provider incident 412").await.unwrap();
    click(&client, "#rails tr[data-rail='sandbox-ethereum'] button.pause").await;
    wait_text(&client, "#rails tr[data-rail='sandbox-ethereum'] td.health", |t| t == "paused").await;
    let (_, audit) = server.get("/v1/audit", server.admin.as_ref().unwrap()).await;
    assert!(audit.to_string().contains("provider incident 412"), "{audit}");
    click(&client, "#rails tr[data-rail='sandbox-ethereum'] button.resume").await;
    wait_text(&client, "#rails tr[data-rail='sandbox-ethereum'] td.health", |t| t == "up").await;
    screenshot(&client, "after-actions").await;

    client.close().await.unwrap();
}
