//! The CLI against a running server: submit a file and wait for it, list it, drain dry-run,
//! keys; a refusal exits 1 with the server's reason.

use std::process::Command;

use crate::server::{Server, csv};

fn cli(server: &Server, key: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .env("RAILYARD_URL", &server.url)
        .env("RAILYARD_API_KEY", key)
        .args(args)
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_and_the_staff_commands_against_a_running_server() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let merchant = server.key("merchant", Some(9)).await;
    let operator = server.key("operator", None).await;
    let file = data.path().join("payouts.csv");
    std::fs::write(&file, csv(50, "cli")).unwrap();
    let file = file.to_str().unwrap();

    let (ok, out, err) = tokio::task::block_in_place(|| cli(&server, &merchant, &["submit", file, "--wait"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("accepted: 50 payments"), "{out}");
    assert!(out.contains("settled 50, failed 0, held 0 of 50"), "{out}");
    let batch = out.split_whitespace().nth(1).unwrap().to_owned();

    // The same file again is a replay, never a second batch.
    let (ok, again, _) = tokio::task::block_in_place(|| cli(&server, &merchant, &["submit", file]));
    assert!(ok);
    assert!(again.contains(&format!("batch {batch} accepted")), "{again}");

    let (ok, listed, err) =
        tokio::task::block_in_place(|| cli(&server, &merchant, &["payments", "--batch", &batch, "--json"]));
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 50);
    assert!(listed.as_array().unwrap().iter().all(|p| p["state"] == "settled"));

    let (ok, table, _) = tokio::task::block_in_place(|| cli(&server, &operator, &["rails"]));
    assert!(ok && table.starts_with("RAIL") && table.contains("sandbox-base"), "{table}");
    let (ok, drained, err) =
        tokio::task::block_in_place(|| cli(&server, &operator, &["drain", "sandbox-base", "--dry-run"]));
    assert!(ok, "{err}");
    assert!(drained.contains("would move 0 payment(s) off sandbox-base"), "{drained}");

    // The statistics count the 50 settled payouts.
    let (ok, stats, err) = tokio::task::block_in_place(|| cli(&server, &operator, &["stats", "--since", "1h"]));
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let settled: u64 = stats["settled"].as_array().unwrap().iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert_eq!((settled, stats["accepted"].as_u64()), (50, Some(50)), "{stats}");
    // An outage declared by the operator shows in the incident report, with who and why.
    let (ok, _, err) = tokio::task::block_in_place(|| {
        cli(&server, &operator, &["pause", "sandbox-optimism", "--reason", "provider incident"])
    });
    assert!(ok, "{err}");
    let (ok, report, err) =
        tokio::task::block_in_place(|| cli(&server, &operator, &["report", "incident", "--since", "1h"]));
    assert!(ok, "{err}");
    assert!(report.starts_with("# Incident report"), "{report}");
    assert!(report.contains("**sandbox-optimism**: paused at") && report.contains("provider incident"), "{report}");
    assert!(report.contains("paused sandbox-optimism — provider incident"), "{report}");
    // A merchant key cannot pause a rail: exit 1, the server's reason on stderr.
    let (ok, _, err) =
        tokio::task::block_in_place(|| cli(&server, &merchant, &["pause", "sandbox-base", "--reason", "x"]));
    assert!(!ok);
    assert!(err.contains("403") && err.contains("needs a key with role operator"), "{err}");
    // A bad file: the rows and what to fix.
    let bad = data.path().join("bad.csv");
    std::fs::write(&bad, "reference,amount,asset,destination,networks,class\nz,1.0000001,USDC,0x00,base,standard\n")
        .unwrap();
    let (ok, _, err) = tokio::task::block_in_place(|| cli(&server, &merchant, &["submit", bad.to_str().unwrap()]));
    assert!(!ok);
    assert!(err.contains("422") && err.contains("row 0: amount [amount_too_precise]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn treasury_sets_guards_and_releases_a_held_payout_from_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let merchant = server.key("merchant", Some(31)).await;
    let treasury = server.key("treasury", None).await;
    let policy = data.path().join("guards.json");
    std::fs::write(
        &policy,
        r#"{ "allow_mode": "or_hold", "allowlist": ["0x1111111111111111111111111111111111111111"] }"#,
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        cli(&server, &treasury, &["guards", "set", "31", "--file", policy, "--reason", "vendors only"])
    });
    assert!(ok && out.contains("or_hold"), "{out}{err}");
    let file = data.path().join("payouts.csv");
    std::fs::write(&file, csv(1, "guarded")).unwrap();
    let (ok, out, err) = tokio::task::block_in_place(|| cli(&server, &merchant, &["submit", file.to_str().unwrap()]));
    assert!(ok, "{out}{err}");
    let (ok, held, _) = tokio::task::block_in_place(|| cli(&server, &treasury, &["held", "--json"]));
    assert!(ok);
    let held: serde_json::Value = serde_json::from_str(&held).unwrap();
    let id = held[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(held[0]["guard"]["reasons"][0]["code"], "not_allowlisted", "{held}");
    // A merchant key cannot release it; treasury can.
    let (ok, _, err) =
        tokio::task::block_in_place(|| cli(&server, &merchant, &["guards", "release", &id, "--reason", "mine"]));
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, out, err) =
        tokio::task::block_in_place(|| cli(&server, &treasury, &["guards", "release", &id, "--reason", "checked"]));
    assert!(ok && out.contains(&id), "{out}{err}");
}
