//! The HTTP API over real HTTP on 127.0.0.1, against a real `railyard serve` process.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Server, address, csv, log};

/// A CSV of 10,000 rows is accepted whole, settles on the sandbox rails, and every row is
/// found settled with its own amount, asset and destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_of_10000_rows_settles_and_checks_row_by_row() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let merchant = server.key("merchant", Some(1)).await;
    let body = csv(10_000, "big");
    let (status, accepted) = server.submit(&merchant, "big-1", "text/csv", body.clone()).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["count"], 10_000);
    let batch = accepted["batch"].as_str().unwrap().to_owned();
    let view = server.wait_final(&merchant, &batch, Duration::from_secs(240)).await;
    assert_eq!(view["states"], json!({ "settled": 10_000 }), "{view}");
    let mut expected: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in body.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        expected.insert(cells[0].to_owned(), (cells[1].to_owned(), cells[3].to_owned()));
    }
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/payments?batch={batch}&limit=500");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = server.get(&path, &merchant).await;
        assert_eq!(status, 200, "{page}");
        for payment in page["payments"].as_array().unwrap() {
            let reference = payment["reference"].as_str().unwrap();
            let (amount, destination) = expected.remove(reference).expect("a row of the file, once");
            let parse = |s: &str| model::Asset::USDC.parse_amount(s).unwrap();
            assert_eq!(parse(payment["amount"].as_str().unwrap()), parse(&amount), "{reference}");
            assert_eq!(payment["destination"].as_str().unwrap().to_lowercase(), destination, "{reference}");
            assert_eq!(payment["state"], "settled");
            assert!(payment["settlement"]["txid"].as_str().unwrap().starts_with("0x"));
            seen += 1;
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, 10_000);
    assert!(expected.is_empty());
}

/// The same key and body replay the first answer; another body is a 409; eight requests racing
/// with one key make exactly one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_replay_and_racing_requests_make_one_batch() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let merchant = server.key("merchant", Some(2)).await;
    let body = csv(5, "idem");
    let (first_status, first) = server.submit(&merchant, "k-1", "text/csv", body.clone()).await;
    assert_eq!(first_status, 202, "{first}");
    let (again_status, again) = server.submit(&merchant, "k-1", "text/csv", body.clone()).await;
    assert_eq!((again_status, &again), (202, &first), "a replay is the original answer");
    let (conflict, problem) = server.submit(&merchant, "k-1", "text/csv", csv(6, "idem")).await;
    assert_eq!(conflict, 409);
    assert_eq!(problem["code"], "idempotency_conflict");

    let racing = csv(3, "race");
    let answers =
        futures::future::join_all((0..8).map(|_| server.submit(&merchant, "k-race", "text/csv", racing.clone()))).await;
    let batches: BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body["batch"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(batches.len(), 1, "one key, one batch: {batches:?}");
    let (_, page) = server.get("/v1/payments?reference=race-0", &merchant).await;
    assert_eq!(page["payments"].as_array().unwrap().len(), 1, "{page}");
}

fn row(reference: &str, amount: &str, asset: &str, destination: &str, network: &str, class: &str) -> Value {
    json!({ "reference": reference, "amount": amount, "asset": asset, "destination": destination, "networks": [network], "class": class })
}

/// Every class of bad input gets its 4xx with a stable code and changes nothing: the journal
/// has exactly as many records after all of them as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_4xx_and_leaves_the_journal_unchanged() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[("RAILYARD__API__BODY_BYTES_MAX", "65536")]);
    let merchant = server.key("merchant", Some(3)).await;
    let good = json!({ "payments": [row("used-1", "1", "USDC", &address(1), "base", "standard")] });
    let (status, body) = server.submit(&merchant, "good", "application/json", good.to_string()).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Pause the rails' progress out of the picture: count records once the batch settled.
    server.wait_final(&merchant, body["batch"].as_str().unwrap(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.journal_records().await;

    let valid = address(7);
    let mixed_bad_checksum = "0x52908400098527886E0F7030069857D2E4169Ee7";
    let huge = "9".repeat(100_000);
    let json_case = |payment: Value| json!({ "payments": [payment] }).to_string();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("malformed csv", "text/csv", "reference,amount,asset,destination,networks,class\nx,1,USDC\n".into(), 400, "malformed_csv"),
        ("unknown csv column", "text/csv", "reference,amount,asset,destination,networks,klass\n".into(), 400, "unknown_column"),
        ("malformed json", "application/json", "{\"payments\": [".into(), 400, "malformed_json"),
        ("duplicate json key", "application/json", format!("{{\"payments\": [{{\"reference\": \"a\", \"reference\": \"b\", \"amount\": \"1\", \"asset\": \"USDC\", \"destination\": \"{valid}\", \"networks\": [\"base\"], \"class\": \"standard\"}}]}}"), 400, "malformed_json"),
        ("amount as a number", "application/json", json!({ "payments": [{ "reference": "n", "amount": 1, "asset": "USDC", "destination": valid, "networks": ["base"], "class": "standard" }] }).to_string(), 400, "malformed_json"),
        ("bad checksum", "application/json", json_case(row("c", "1", "USDC", mixed_bad_checksum, "base", "standard")), 422, "invalid_batch"),
        ("wrong network", "application/json", json_case(row("w", "1", "USDC", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "base", "standard")), 422, "invalid_batch"),
        ("unknown network", "application/json", json_case(row("u", "1", "USDC", &valid, "mars", "standard")), 422, "invalid_batch"),
        ("negative amount", "application/json", json_case(row("m", "-1", "USDC", &valid, "base", "standard")), 422, "invalid_batch"),
        ("too precise", "application/json", json_case(row("p", "1.0000001", "USDC", &valid, "base", "standard")), 422, "invalid_batch"),
        ("overflowing", "application/json", json_case(row("o", "999999999999999999999999999999999999999", "USDC", &valid, "base", "standard")), 422, "invalid_batch"),
        ("unknown asset", "application/json", json_case(row("a", "1", "DOGE", &valid, "base", "standard")), 422, "invalid_batch"),
        ("unknown class", "application/json", json_case(row("k", "1", "USDC", &valid, "base", "gold")), 422, "invalid_batch"),
        ("duplicate reference in a batch", "application/json", json!({ "payments": [row("d", "1", "USDC", &valid, "base", "standard"), row("d", "2", "USDC", &valid, "base", "standard")] }).to_string(), 422, "invalid_batch"),
        ("reference used by an earlier batch", "application/json", json_case(row("used-1", "1", "USDC", &valid, "base", "standard")), 422, "invalid_batch"),
        ("a 100 KB amount", "application/json", json_case(row("h", &huge[..60_000], "USDC", &valid, "base", "standard")), 422, "invalid_batch"),
        ("body over the limit", "application/json", json_case(row("big", &huge, "USDC", &valid, "base", "standard")), 413, "body_too_large"),
        ("empty batch", "application/json", json!({ "payments": [] }).to_string(), 413, "batch_size"),
        ("no such content type", "text/plain", "hello".into(), 415, "unsupported_media_type"),
    ];
    let mut row_codes = BTreeMap::new();
    for (name, content_type, body, status, code) in cases {
        let size = body.len();
        let response = server
            .request(Method::POST, "/v1/batches", Some(&merchant))
            .header("content-type", content_type)
            .header("idempotency-key", format!("bad-{}", name.replace(' ', "-")))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{name}");
        let text = response.text().await.unwrap();
        assert!(text.len() < 4_096, "{name}: a {size}-byte body must not be echoed back ({} bytes)", text.len());
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["code"], code, "{name}: {problem}");
        if let Some(first) = problem["errors"].as_array().and_then(|e| e.first()) {
            row_codes.insert(
                name,
                (first["field"].as_str().unwrap().to_owned(), first["code"].as_str().unwrap().to_owned()),
            );
        }
    }
    let expect = |name: &str, field: &str, code: &str| {
        assert_eq!(row_codes[name], (field.to_owned(), code.to_owned()), "{name}");
    };
    expect("bad checksum", "destination", "invalid_destination");
    expect("wrong network", "destination", "invalid_destination");
    expect("unknown network", "networks", "unknown_network");
    expect("negative amount", "amount", "amount_malformed");
    expect("too precise", "amount", "amount_too_precise");
    expect("overflowing", "amount", "amount_overflow");
    expect("unknown asset", "asset", "unknown_asset");
    expect("unknown class", "class", "unknown_class");
    expect("duplicate reference in a batch", "reference", "duplicate_reference");
    expect("reference used by an earlier batch", "reference", "reference_used");
    expect("a 100 KB amount", "amount", "too_long");
    let missing_key = server
        .request(Method::POST, "/v1/batches", Some(&merchant))
        .header("content-type", "text/csv")
        .body(csv(1, "nokey"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_key.status().as_u16(), 400);
    assert_eq!(server.journal_records().await, before, "bad input changed the journal");
}

/// Tenant isolation: another merchant's batch and payment are a 404, exactly like ids that do
/// not exist. Roles: each endpoint answers 403 to a role it is not for, 401 without a key, with
/// a malformed key, and with a revoked key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_roles_hold_on_every_endpoint() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let admin = server.admin.clone().unwrap();
    let keys: BTreeMap<&str, String> = [
        ("merchant", server.key("merchant", Some(10)).await),
        ("other", server.key("merchant", Some(11)).await),
        ("operator", server.key("operator", None).await),
        ("treasury", server.key("treasury", None).await),
        ("admin", admin.clone()),
    ]
    .into_iter()
    .collect();
    let (_, accepted) = server.submit(&keys["merchant"], "t-1", "text/csv", csv(2, "tenant")).await;
    let batch = accepted["batch"].as_str().unwrap().to_owned();
    let payment = accepted["payments"][0]["id"].as_str().unwrap().to_owned();
    for path in
        [format!("/v1/batches/{batch}"), format!("/v1/payments/{payment}"), format!("/v1/payments?batch={batch}")]
    {
        assert_eq!(server.get(&path, &keys["merchant"]).await.0, 200, "{path}");
        let (status, problem) = server.get(&path, &keys["other"]).await;
        assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")), "{path}: {problem}");
        assert_eq!(server.get(&path, &keys["operator"]).await.0, 200, "staff see every merchant: {path}");
    }
    let (_, page) = server.get("/v1/payments?reference=tenant-0", &keys["other"]).await;
    assert_eq!(page["payments"], json!([]), "a reference is per merchant");
    assert_eq!(server.post(&format!("/v1/payments/{payment}/cancel"), &keys["other"], json!({})).await.0, 404);

    // Which roles each endpoint is for.
    let table: Vec<(Method, String, &[&str], Value)> = vec![
        (Method::GET, "/v1/rails".into(), &["operator", "treasury"], Value::Null),
        (Method::POST, "/v1/rails/sandbox-base/pause".into(), &["operator"], json!({ "reason": "test" })),
        (Method::POST, "/v1/rails/sandbox-base/resume".into(), &["operator"], json!({ "reason": "test" })),
        (Method::POST, "/v1/rails/sandbox-base/drain".into(), &["operator"], json!({ "dry_run": true })),
        (Method::GET, "/v1/queues".into(), &["operator", "treasury"], Value::Null),
        (Method::GET, "/v1/held".into(), &["operator", "treasury"], Value::Null),
        (
            Method::POST,
            format!("/v1/payments/{payment}/resolve"),
            &["operator"],
            json!({ "resolution": "retry", "reason": "test" }),
        ),
        (Method::GET, "/v1/reconciliation".into(), &["operator", "treasury"], Value::Null),
        (Method::POST, "/v1/reconciliation".into(), &["operator"], Value::Null),
        (Method::GET, "/v1/pools".into(), &["operator", "treasury"], Value::Null),
        (Method::POST, "/v1/pools/sandbox-base/USDC/fund".into(), &["treasury"], json!({ "amount": "1" })),
        (
            Method::PUT,
            "/v1/pools/sandbox-base/USDC".into(),
            &["treasury"],
            json!({ "min": "1000", "target": "100000", "max": "1000000", "reason": "test" }),
        ),
        (Method::GET, "/v1/classes".into(), &["operator", "treasury"], Value::Null),
        (Method::GET, "/v1/anomalies".into(), &["operator", "treasury"], Value::Null),
        (Method::GET, "/v1/reports/incident?since=0".into(), &["operator", "treasury"], Value::Null),
        (Method::GET, "/v1/stats".into(), &["operator", "treasury"], Value::Null),
        (
            Method::PUT,
            "/v1/classes/bulk".into(),
            &["treasury"],
            json!({ "weight": 1, "deadline_default_ms": 86_400_000, "urgent": false, "reason": "test" }),
        ),
        (Method::PUT, "/v1/routing/rules".into(), &["treasury"], json!({ "rules": [], "reason": "test" })),
        (Method::GET, "/v1/routing".into(), &["operator", "treasury"], Value::Null),
        (Method::PUT, "/v1/merchants/10/guards".into(), &["treasury"], json!({ "guards": null, "reason": "test" })),
        (Method::POST, format!("/v1/payments/{payment}/approve"), &["treasury"], json!({ "reason": "test" })),
        (Method::POST, format!("/v1/payments/{payment}/release"), &["treasury"], json!({ "reason": "test" })),
        (Method::POST, format!("/v1/payments/{payment}/reject"), &["treasury"], json!({ "reason": "test" })),
        (Method::GET, "/v1/keys".into(), &[], Value::Null),
        (Method::GET, "/v1/audit".into(), &[], Value::Null),
        (Method::POST, "/v1/keys".into(), &[], json!({ "role": "operator", "label": "x" })),
        (Method::POST, "/v1/batches".into(), &["merchant"], Value::Null),
        (Method::GET, "/v1/webhook".into(), &["merchant"], Value::Null),
        (Method::PUT, "/v1/webhook".into(), &["merchant"], json!({ "url": null })),
        (Method::GET, "/v1/webhook/deliveries".into(), &["merchant"], Value::Null),
    ];
    for (method, path, allowed, body) in &table {
        for (role, key) in &keys {
            let role = if *role == "other" { "merchant" } else { role };
            let mut request = server
                .request(method.clone(), path, Some(key))
                .header("idempotency-key", format!("roles-{role}-{path}"));
            if !body.is_null() {
                request = request.json(body);
            }
            let (status, problem) = server.call(request).await;
            // Admin does what every staff role does; acting as a merchant takes a merchant key.
            let permitted = allowed.contains(&role) || (role == "admin" && !allowed.contains(&"merchant"));
            if permitted {
                assert_ne!(status, 403, "{role} {method} {path}: {problem}");
            } else {
                assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")), "{role} {method} {path}");
            }
        }
        let (status, _) = server.call(server.request(method.clone(), path, None)).await;
        assert_eq!(status, 401, "no key: {method} {path}");
        let (status, _) = server.call(server.request(method.clone(), path, Some("ry_nothex"))).await;
        assert_eq!(status, 401, "malformed key: {method} {path}");
    }
    // A revoked key is a 401 from its next request on.
    let (_, keys_list) = server.get("/v1/keys", &admin).await;
    let other_id =
        keys_list.as_array().unwrap().iter().find(|k| k["merchant"] == 11).unwrap()["id"].as_str().unwrap().to_owned();
    let (status, _) = server.post(&format!("/v1/keys/{other_id}/revoke"), &admin, json!({ "reason": "left" })).await;
    assert_eq!(status, 204);
    let (status, problem) = server.get("/v1/webhook", &keys["other"]).await;
    assert_eq!((status, problem["detail"].as_str()), (401, Some("this API key was revoked")));
    let (status, _) = server.post(&format!("/v1/keys/{other_id}/revoke"), &admin, json!({ "reason": "again" })).await;
    assert_eq!(status, 409, "a key is revoked once");
}

/// The OpenAPI document is generated from the route table: every documented path and method
/// is served (a request reaches a handler: never the router's own 404 or 405), and the
/// document names every route the tests above use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openapi_path_is_routed() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let admin = server.admin.clone().unwrap();
    let doc: Value =
        server.http.get(format!("{}/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{:?}", paths.keys());
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "ff")
            .replace("{rail}", "sandbox-base")
            .replace("{asset}", "USDC")
            .replace("{event}", "ff")
            .replace("{merchant}", "1");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = server.request(method.clone(), &concrete, Some(&admin)).send().await.unwrap();
            let status = response.status().as_u16();
            if path == "/v1/events" {
                // An event stream does not end: its status and type say it is served.
                let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
                assert_eq!((status, kind.as_str()), (200, "text/event-stream"));
                checked += 1;
                continue;
            }
            let body = response.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(status != 404 || body.contains("\"code\""), "{method} {path} is documented but not routed: {body}");
            checked += 1;
        }
    }
    for expected in
        ["/v1/batches", "/v1/payments/{id}", "/v1/rails/{rail}/drain", "/v1/keys", "/metrics", "/readyz", "/healthz"]
    {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    assert!(checked >= 22, "{checked}");
    // The router's own 404 for something not in the document.
    let (status, _) = server.get("/v1/nothing", &admin).await;
    assert_eq!(status, 404);
}

/// The per-key request rate is limited: past the burst, 429 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_rate_limit_get_429_with_retry_after() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(
        data.path(),
        &[("RAILYARD__API__REQUESTS_PER_SECOND", "1"), ("RAILYARD__API__REQUESTS_BURST", "5")],
    );
    let admin = server.admin.clone().unwrap();
    let mut limited = None;
    for _ in 0..20 {
        let response = server.request(Method::GET, "/v1/rails", Some(&admin)).send().await.unwrap();
        if response.status().as_u16() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the limit answers 429 within 20 requests");
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
}

/// Treasury changes a pool's thresholds: validated (refused with the reason, nothing changed),
/// journaled, and still in force after a kill -9 and restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_thresholds_change_validated_journaled_and_kept_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let treasury = server.key("treasury", None).await;
    let put = |body: Value| {
        server.call(server.request(Method::PUT, "/v1/pools/sandbox-base/USDC", Some(&treasury)).json(&body))
    };
    let (status, problem) = put(json!({ "min": "5000", "target": "100", "max": "1000000", "reason": "x" })).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("refused")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("min <= target <= max"), "{problem}");
    let (status, problem) = put(json!({ "min": "1.0000001", "target": "100", "max": "1000000", "reason": "x" })).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_amount")), "{problem}");
    let (status, problem) = put(json!({ "min": "1", "target": "100", "max": "1000000", "reason": "" })).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("reason_required")), "{problem}");
    let (status, _) = server
        .call(
            server
                .request(Method::PUT, "/v1/pools/sandbox-base/USDT", Some(&treasury))
                .json(&json!({ "min": "1", "target": "2", "max": "3", "reason": "x" })),
        )
        .await;
    assert_eq!(status, 422, "no USDT pool on sandbox-base");
    let (status, _) =
        put(json!({ "min": "2000", "target": "150000", "max": "2000000", "reason": "more buffer for payroll" })).await;
    assert_eq!(status, 204);
    let pool = |pools: &Value| {
        pools.as_array().unwrap().iter().find(|p| p["rail"] == "sandbox-base" && p["asset"] == "USDC").unwrap().clone()
    };
    let (_, pools) = server.get("/v1/pools", &treasury).await;
    assert_eq!((pool(&pools)["min"].as_str(), pool(&pools)["max"].as_str()), (Some("2000"), Some("2000000")));
    server.kill();
    let again = Server::start(data.path(), &[]);
    let (_, pools) = again.get("/v1/pools", &treasury).await;
    assert_eq!(
        (pool(&pools)["min"].as_str(), pool(&pools)["target"].as_str()),
        (Some("2000"), Some("150000")),
        "{pools}"
    );
}

/// Keys never appear in logs, even at debug level: not the admin key, not a key created over
/// the API, not a key presented in a request (good or revoked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_the_logs() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[("RUST_LOG", "debug")]);
    let admin = server.admin.clone().unwrap();
    let merchant = server.key("merchant", Some(4)).await;
    let (status, _) = server.submit(&merchant, "log-1", "text/csv", csv(3, "log")).await;
    assert_eq!(status, 202);
    let (status, _) = server.get("/v1/payments?state=queued&cursor=zz", &merchant).await;
    assert_eq!(status, 400);
    server.get("/v1/rails", &admin).await;
    server.get("/v1/rails", "ry_0000000000000000000000000000000000000000000000000000000000000000").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = log(data.path());
    assert!(logged.contains("request"), "the requests were logged at all: {}", &logged[..logged.len().min(2_000)]);
    for secret in [&admin, &merchant] {
        assert!(!logged.contains(secret.as_str()), "a key secret is in the logs");
        assert!(!logged.contains(&secret[3..19]), "part of a key secret is in the logs");
    }
    assert!(!logged.contains("ry_00000000"), "a presented key is in the logs");
}

/// A merchant cancels a payment still queued (every rail paused, so it stays queued): it
/// fails with the reason; a second cancel, or a cancel of a settled payment, is a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_payment_can_be_cancelled_once_and_a_settled_one_never() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let merchant = server.key("merchant", Some(6)).await;
    let operator = server.key("operator", None).await;
    let (_, settled) = server.submit(&merchant, "c-0", "text/csv", csv(1, "settles")).await;
    server.wait_final(&merchant, settled["batch"].as_str().unwrap(), Duration::from_secs(60)).await;
    for rail in ["sandbox-base", "sandbox-optimism", "sandbox-ethereum"] {
        let (status, body) =
            server.post(&format!("/v1/rails/{rail}/pause"), &operator, json!({ "reason": "cancel test" })).await;
        assert_eq!(status, 204, "{body}");
    }
    let (_, accepted) = server.submit(&merchant, "c-1", "text/csv", csv(2, "cancel")).await;
    let payment = accepted["payments"][0]["id"].as_str().unwrap().to_owned();
    let (status, view) = server.post(&format!("/v1/payments/{payment}/cancel"), &merchant, json!({})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "failed");
    assert!(view["reason"].as_str().unwrap().contains("cancelled by the merchant"), "{view}");
    let (status, problem) = server.post(&format!("/v1/payments/{payment}/cancel"), &merchant, json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("not_cancellable")));
    let done = settled["payments"][0]["id"].as_str().unwrap();
    let (status, problem) = server.post(&format!("/v1/payments/{done}/cancel"), &merchant, json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("not_cancellable")));
    // The other waits, and says why: every rail is paused.
    let other = accepted["payments"][1]["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let routing = loop {
        let (_, view) = server.get(&format!("/v1/payments/{other}"), &merchant).await;
        if let Some(routing) = view["routing"].as_str() {
            break routing.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(routing.starts_with("no rail can take it now") && routing.contains("sandbox-base: "), "{routing}");
    // The other payment of the batch is untouched and settles once a rail resumes.
    let (status, _) = server.post("/v1/rails/sandbox-base/resume", &operator, json!({ "reason": "done" })).await;
    assert_eq!(status, 204);
    let view = server.wait_final(&merchant, accepted["batch"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(view["states"], json!({ "failed": 1, "settled": 1 }), "{view}");
}

/// Treasury changes a class and the routing rules: journaled (kept across a kill -9), and
/// refused with the reason when they would break queued payments (an age limit they already
/// passed; rules leaving them no rail) or name what does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_and_rules_change_and_are_refused_when_they_would_break_queued_payments() {
    let data = tempfile::tempdir().unwrap();
    // One payout a second per rail: a batch waits in the rails' queues.
    let slow = [("RAILYARD__QUEUE__RAIL_LIMIT__PER_SECOND", "1"), ("RAILYARD__QUEUE__RAIL_LIMIT__BURST", "1")];
    let server = Server::start(data.path(), &slow);
    let treasury = server.key("treasury", None).await;
    let merchant = server.key("merchant", Some(12)).await;
    let put = |path: &str, body: Value| server.call(server.request(Method::PUT, path, Some(&treasury)).json(&body));

    let (_, classes) = server.get("/v1/classes", &treasury).await;
    let urgent = classes.as_array().unwrap().iter().find(|c| c["name"] == "urgent").unwrap();
    assert_eq!(urgent["urgent"], true);
    let (status, _) = put("/v1/classes/bulk", json!({ "weight": 3, "deadline_default_ms": 86_400_000, "age_max_ms": null, "urgent": false, "reason": "more share for bulk" })).await;
    assert_eq!(status, 204);
    let (status, problem) =
        put("/v1/classes/gold", json!({ "weight": 3, "deadline_default_ms": 1, "urgent": false, "reason": "x" })).await;
    assert_eq!(status, 422);
    assert!(
        problem["detail"].as_str().unwrap().contains("classes are added or removed in the configuration"),
        "{problem}"
    );
    let (status, _) =
        put("/v1/classes/bulk", json!({ "weight": 0, "deadline_default_ms": 1, "urgent": false, "reason": "x" })).await;
    assert_eq!(status, 422, "weight 0 is refused");

    let (status, _) = server.submit(&merchant, "slow", "text/csv", csv(40, "slow")).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, problem) = put("/v1/classes/standard", json!({ "weight": 2, "deadline_default_ms": 14_400_000, "age_max_ms": 500, "urgent": false, "reason": "tighter" })).await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("would hold them at once"), "{problem}");

    let rules = |rules: Value| json!({ "rules": rules, "reason": "treasury test" });
    let (status, problem) =
        put("/v1/routing/rules", rules(json!([{ "kind": "merchant_only", "merchant": 12, "rails": ["nowhere"] }])))
            .await;
    assert_eq!(status, 422);
    assert!(problem["detail"].as_str().unwrap().contains("names rail nowhere"), "{problem}");
    // Ethereum is not among the payments' networks: they would have no rail.
    let (status, problem) = put(
        "/v1/routing/rules",
        rules(json!([{ "kind": "merchant_only", "merchant": 12, "rails": ["sandbox-ethereum"] }])),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("would have no rail"), "{problem}");
    let (status, problem) = put("/v1/routing/rules", rules(json!([{ "kind": "sideways" }]))).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("malformed_json")));
    let prefer = json!([{ "kind": "asset_prefers", "asset": "USDC", "rails": ["sandbox-optimism"] }]);
    let (status, problem) = put("/v1/routing/rules", rules(prefer.clone())).await;
    assert_eq!(status, 204, "{problem}");

    server.kill();
    let again = Server::start(data.path(), &slow);
    let (_, routing) = again.get("/v1/routing", &treasury).await;
    assert_eq!(routing["rules"], prefer, "{routing}");
    let (_, classes) = again.get("/v1/classes", &treasury).await;
    let bulk = classes.as_array().unwrap().iter().find(|c| c["name"] == "bulk").unwrap().clone();
    assert_eq!((bulk["weight"].as_u64(), bulk["age_max_ms"].is_null()), (Some(3), true), "{bulk}");
}

/// The audit export lists the staff actions with who and why, and a full export lets anyone
/// recompute the chain's head: dropping a record from it changes the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_export_lists_actions_and_its_chain_checks_out() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let admin = server.admin.clone().unwrap();
    let operator = server.key("operator", None).await;
    let merchant = server.key("merchant", Some(13)).await;
    server.submit(&merchant, "audit", "text/csv", csv(3, "audit")).await;
    let (status, _) =
        server.post("/v1/rails/sandbox-ethereum/pause", &operator, json!({ "reason": "node upgrade" })).await;
    assert_eq!(status, 204);
    assert_eq!(server.get("/v1/audit", &operator).await.0, 403, "the export is for admins");

    let (status, export) = server.get("/v1/audit", &admin).await;
    assert_eq!(status, 200, "{export}");
    let lines = export["lines"].as_array().unwrap();
    let paused = lines.iter().find_map(|l| l["action"].get("RailPaused")).expect("the pause is listed");
    assert_eq!(paused["reason"], "node upgrade");
    assert!(paused["operator"].as_str().unwrap().starts_with("operator key "), "{paused}");
    assert!(
        lines.iter().filter(|l| l["action"].get("ApiKeyCreated").is_some()).count() >= 3,
        "the keys created are listed"
    );
    assert!(lines.iter().all(|l| l["action"].get("BatchAccepted").is_none()), "only actions");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let (_, full) = server.get("/v1/audit?all=true&limit=10000", &admin).await;
    let records = full["lines"].as_array().unwrap();
    let recompute = |records: &[Value]| {
        let mut chain = [0u8; 32];
        for (i, record) in records.iter().enumerate() {
            let seq = record["seq"].as_u64().unwrap();
            assert_eq!(seq, i as u64 + 1, "a full export lists every record");
            let payload: [u8; 32] = hex::decode(record["payload_hash"].as_str().unwrap()).unwrap().try_into().unwrap();
            chain = engine::audit::link(&chain, seq, &payload);
        }
        hex::encode(chain)
    };
    let head = full["head"]["chain"].as_str().unwrap();
    assert_eq!(full["head"]["seq"].as_u64().unwrap(), records.len() as u64);
    assert_eq!(recompute(records), head);
    // The head at each action agrees with the full chain.
    let action_seq = usize::try_from(seqs[0]).unwrap();
    assert_eq!(records[action_seq - 1]["chain"], lines[0]["chain"]);
    let mut tampered = records.clone();
    tampered.remove(1);
    for (i, record) in tampered.iter_mut().enumerate().skip(1) {
        record["seq"] = json!(i as u64 + 1);
    }
    assert_ne!(recompute(&tampered), head, "a removed record changes the head");
}
