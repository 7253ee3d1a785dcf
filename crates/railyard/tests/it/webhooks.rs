//! Webhooks end to end: a receiver on 127.0.0.1 checks every signature and records what it
//! gets; the server is killed with SIGKILL mid-delivery and restarted on the same journal.
//! Every payment's terminal state arrives under exactly one event id (a crash may repeat a
//! delivery, never invent or lose one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::server::{Server, csv};

#[derive(Clone, Default)]
struct Received {
    /// (event id, payment, type) of every delivery, repeats included.
    deliveries: Vec<(String, String, String)>,
    bad_signatures: usize,
    /// Event ids refused once on purpose (the sender must retry them).
    refused: BTreeSet<String>,
}

async fn receiver(secret: Arc<Mutex<String>>, received: Arc<Mutex<Received>>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (secret, received) = (secret.clone(), received.clone());
            async move {
                let signature =
                    headers.get(api::webhooks::SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                let secret = secret.lock().unwrap().clone();
                let mut received = received.lock().unwrap();
                if api::webhooks::verify(&secret, signature, &body, now, 300).is_err() {
                    received.bad_signatures += 1;
                    return StatusCode::BAD_REQUEST;
                }
                let event: Value = serde_json::from_slice(&body).unwrap();
                let id = event["id"].as_str().unwrap().to_owned();
                assert_eq!(headers[api::webhooks::EVENT_HEADER].to_str().unwrap(), id);
                // One event in seven is refused the first time: the sender retries it.
                if id.ends_with('7') && received.refused.insert(id.clone()) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let payment = event["payment"]["id"].as_str().unwrap().to_owned();
                received.deliveries.push((id, payment, event["type"].as_str().unwrap().to_owned()));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_terminal_state_arrives_under_one_event_id_across_a_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let secret = Arc::new(Mutex::new(String::new()));
    let received = Arc::new(Mutex::new(Received::default()));
    let url = receiver(secret.clone(), received.clone()).await;

    // The sandbox chains live in the server process and die with it: reconciliation after the
    // restart would find every earlier settlement gone and report lost finality (held, then
    // settled again when the bytes sent again are mined: notices under new ids). That is the
    // lost-finality path, tested elsewhere; here reconciliation is left to on-demand runs.
    let settings = [("RAILYARD__RECONCILE_INTERVAL_MS", "0")];
    let first = Server::start(data.path(), &settings);
    let merchant = first.key("merchant", Some(5)).await;
    let request = first.request(reqwest::Method::PUT, "/v1/webhook", Some(&merchant)).json(&json!({ "url": url }));
    let (status, endpoint) = first.call(request).await;
    assert_eq!(status, 200, "{endpoint}");
    *secret.lock().unwrap() = endpoint["signing_secret"].as_str().unwrap().to_owned();
    let (status, accepted) = first.submit(&merchant, "hooks", "text/csv", csv(300, "hook")).await;
    assert_eq!(status, 202, "{accepted}");
    let batch = accepted["batch"].as_str().unwrap().to_owned();
    let payments: BTreeSet<String> =
        accepted["payments"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();

    // Kill it once some notices went out and others are still owed.
    let started = Instant::now();
    while received.lock().unwrap().deliveries.len() < 30 {
        assert!(started.elapsed() < Duration::from_secs(60), "no deliveries before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let before_restart = received.lock().unwrap().deliveries.len();
    assert!(before_restart < 300, "the kill came too late to test anything ({before_restart})");

    let second = Server::start(data.path(), &settings);
    assert!(second.admin.is_none(), "the admin key is created once");
    second.wait_final(&merchant, &batch, Duration::from_secs(120)).await;
    let started = Instant::now();
    loop {
        let distinct: BTreeSet<String> = received.lock().unwrap().deliveries.iter().map(|d| d.1.clone()).collect();
        if distinct.len() == payments.len()
            && second
                .get("/v1/webhook/deliveries", &merchant)
                .await
                .1
                .as_array()
                .is_some_and(|d| d.iter().all(|d| d["status"] == "delivered"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {} payments notified",
            distinct.len(),
            payments.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received.lock().unwrap().clone();
    assert_eq!(received.bad_signatures, 0);
    assert!(!received.refused.is_empty(), "some first attempts were refused and retried");
    // Per payment and state, one event id (repeats of it are at-least-once, and fine).
    let mut ids: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for (id, payment, kind) in &received.deliveries {
        assert!(payments.contains(payment), "a notice for a payment never submitted: {payment}");
        ids.entry((payment, kind)).or_default().insert(id);
    }
    for ((payment, kind), ids) in &ids {
        assert_eq!(*kind, "payment.settled", "{payment}");
        assert_eq!(ids.len(), 1, "payment {payment} was notified settled under several event ids: {ids:?}");
    }
    for payment in &payments {
        assert!(ids.contains_key(&(payment.as_str(), "payment.settled")), "{payment} never notified settled");
    }
    for refused in &received.refused {
        assert!(received.deliveries.iter().any(|d| &d.0 == refused), "refused event {refused} was never retried");
    }
    let outbox = second.http.get(format!("{}/metrics", second.url)).send().await.unwrap().text().await.unwrap();
    assert!(outbox.lines().any(|l| l == "railyard_outbox 0"), "the outbox is empty once all is delivered");
}

/// Signatures: the receiver's check refuses a changed body, a wrong secret, a stale timestamp
/// (a replay) and a malformed header.
#[test]
fn signatures_refuse_changes_replays_and_garbage() {
    use api::webhooks::{VerifyError, sign, verify};
    let header = sign("whsec_a", 1_000, b"{\"x\":1}");
    assert_eq!(verify("whsec_a", &header, b"{\"x\":1}", 1_100, 300), Ok(()));
    assert_eq!(verify("whsec_a", &header, b"{\"x\":2}", 1_100, 300), Err(VerifyError::Mismatch));
    assert_eq!(verify("whsec_b", &header, b"{\"x\":1}", 1_100, 300), Err(VerifyError::Mismatch));
    assert_eq!(verify("whsec_a", &header, b"{\"x\":1}", 1_301, 300), Err(VerifyError::Stale));
    assert_eq!(verify("whsec_a", "v1=00", b"{}", 1_000, 300), Err(VerifyError::Malformed));
}

/// A delivery can be sent again on request: the receiver gets the same event id again; another
/// merchant cannot see or re-send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_resent_on_request_under_the_same_event_id() {
    let data = tempfile::tempdir().unwrap();
    let secret = Arc::new(Mutex::new(String::new()));
    let received = Arc::new(Mutex::new(Received::default()));
    let url = receiver(secret.clone(), received.clone()).await;
    let server = Server::start(data.path(), &[]);
    let merchant = server.key("merchant", Some(8)).await;
    let other = server.key("merchant", Some(9)).await;
    let (_, endpoint) = server
        .call(server.request(reqwest::Method::PUT, "/v1/webhook", Some(&merchant)).json(&json!({ "url": url })))
        .await;
    *secret.lock().unwrap() = endpoint["signing_secret"].as_str().unwrap().to_owned();
    let (_, accepted) = server.submit(&merchant, "resend", "text/csv", csv(1, "resend")).await;
    server.wait_final(&merchant, accepted["batch"].as_str().unwrap(), Duration::from_secs(60)).await;
    let started = Instant::now();
    let event = loop {
        let (_, deliveries) = server.get("/v1/webhook/deliveries", &merchant).await;
        if let Some(d) = deliveries.as_array().and_then(|d| d.iter().find(|d| d["status"] == "delivered")) {
            break d["event"].as_str().unwrap().to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{deliveries}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(server.get("/v1/webhook/deliveries", &other).await.1, json!([]));
    let (status, _) = server.post(&format!("/v1/webhook/deliveries/{event}/resend"), &other, json!({})).await;
    assert_eq!(status, 404);
    let (status, view) = server.post(&format!("/v1/webhook/deliveries/{event}/resend"), &merchant, json!({})).await;
    assert_eq!((status, view["status"].as_str()), (202, Some("pending")), "{view}");
    let started = Instant::now();
    while received.lock().unwrap().deliveries.iter().filter(|d| d.0 == event).count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "the re-send never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
