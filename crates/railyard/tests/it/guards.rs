//! Guards over real HTTP against a real `railyard serve`: treasury sets them, a payout they
//! hold shows why and who may release it, a merchant key cannot release it, the same treasury
//! key cannot approve twice, and a bad policy is refused naming its field with nothing changed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Server, address};

fn batch(rows: &[(&str, &str, &str)]) -> Value {
    let payments: Vec<Value> = rows
        .iter()
        .map(|(reference, amount, destination)| {
            json!({ "reference": reference, "amount": amount, "asset": "USDC", "destination": destination,
                    "networks": ["base"], "class": "standard" })
        })
        .collect();
    json!({ "payments": payments })
}

async fn wait_state(server: &Server, key: &str, id: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, view) = server.get(&format!("/v1/payments/{id}"), key).await;
        if view["state"] == state || std::time::Instant::now() > deadline {
            assert_eq!(view["state"], state, "{view}");
            return view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_hold_explain_and_release_only_by_treasury() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let merchant = server.key("merchant", Some(21)).await;
    let treasury = server.key("treasury", None).await;
    let treasury2 = server.key("treasury", None).await;
    let operator = server.key("operator", None).await;
    let listed = address(1);

    // A bad policy names its field; nothing is set.
    let bad =
        json!({ "guards": { "allow_mode": "or_hold", "allowlist": [listed, "0xnot-an-address"] }, "reason": "x" });
    let request = server.request(reqwest::Method::PUT, "/v1/merchants/21/guards", Some(&treasury)).json(&bad);
    let (status, problem) = server.call(request).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_guards")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().starts_with("allowlist[1]"), "{problem}");
    assert_eq!(server.get("/v1/merchants/21/guards", &merchant).await.1["guards"], Value::Null);

    let policy = json!({ "guards": {
        "allow_mode": "or_hold", "allowlist": [listed],
        "assets": [{ "asset": "USDC", "large_above": "100" }], "large_approvals": 2
    }, "reason": "four eyes on large payouts" });
    let request = server.request(reqwest::Method::PUT, "/v1/merchants/21/guards", Some(&treasury)).json(&policy);
    let (status, set) = server.call(request).await;
    assert_eq!(status, 200, "{set}");
    let (status, seen) = server.get("/v1/merchants/21/guards", &merchant).await;
    assert_eq!((status, &seen["guards"]["allow_mode"]), (200, &json!("or_hold")), "{seen}");
    let request =
        server.request(reqwest::Method::POST, "/v1/batches", Some(&merchant)).header("idempotency-key", "g-1");
    let (status, accepted) = server
        .call(request.json(&batch(&[("g-1", "5", &listed), ("g-2", "5", &address(2)), ("g-3", "150", &listed)])))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let ids: Vec<String> =
        accepted["payments"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();

    let view = wait_state(&server, &merchant, &ids[1], "held").await;
    assert_eq!(view["guard"]["reasons"][0]["code"], "not_allowlisted", "{view}");
    assert!(view["guard"]["release_by"].as_str().unwrap().contains("treasury key"), "{view}");
    let large = wait_state(&server, &merchant, &ids[2], "held").await;
    assert_eq!(large["guard"]["approvals_needed"], 2, "{large}");

    // A merchant key and an operator key cannot release; an operator's resolve is refused.
    let reason = json!({ "reason": "mine" });
    assert_eq!(server.post(&format!("/v1/payments/{}/release", ids[1]), &merchant, reason.clone()).await.0, 403);
    assert_eq!(server.post(&format!("/v1/payments/{}/release", ids[1]), &operator, reason.clone()).await.0, 403);
    let resolve = json!({ "resolution": "retry", "reason": "looks fine" });
    let (status, problem) = server.post(&format!("/v1/payments/{}/resolve", ids[1]), &operator, resolve).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("held_by_guards")), "{problem}");

    // Approvals: the same treasury key twice is refused; a second key completes it.
    let path = format!("/v1/payments/{}/approve", ids[2]);
    let checked = json!({ "reason": "checked" });
    assert_eq!(server.post(&path, &treasury, checked.clone()).await.0, 200);
    let (status, problem) = server.post(&path, &treasury, checked.clone()).await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("different treasury key"), "{problem}");
    let (status, view) = server.post(&path, &treasury2, checked).await;
    assert_eq!(status, 200, "{view}");
    wait_state(&server, &merchant, &ids[2], "settled").await;

    // Treasury releases the other one; it settles.
    let (status, view) = server
        .post(&format!("/v1/payments/{}/release", ids[1]), &treasury, json!({ "reason": "called the vendor" }))
        .await;
    assert_eq!(status, 200, "{view}");
    wait_state(&server, &merchant, &ids[1], "settled").await;
    wait_state(&server, &merchant, &ids[0], "settled").await;
}
