//! How engine answers become HTTP: a busy engine is a 503 with Retry-After, a stopped one a
//! 503 that says an operator must restart it, a refusal a 422 with the engine's reason; every
//! problem is application/problem+json with a stable code.

use api::problem::Problem;
use axum::response::IntoResponse;
use engine::service::ServiceError;

async fn answer(problem: Problem) -> (u16, Option<String>, serde_json::Value) {
    let response = problem.into_response();
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (status, retry, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn engine_answers_map_to_statuses_with_stable_codes() {
    let (status, retry, body) = answer(ServiceError::Busy(1024).into()).await;
    assert_eq!((status, retry.as_deref(), body["code"].as_str()), (503, Some("1"), Some("busy")));
    let (status, retry, body) = answer(ServiceError::Unavailable.into()).await;
    assert_eq!((status, retry.as_deref(), body["code"].as_str()), (503, Some("5"), Some("unavailable")));
    let (status, _, body) = answer(engine::EngineError::Stopped("journal commit failed".into()).into()).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("stopped")));
    assert!(!body["detail"].as_str().unwrap().contains("journal commit failed"), "internal reasons stay in the logs");
    let (status, _, body) = answer(engine::EngineError::Refused("no pool of USDT".into()).into()).await;
    assert_eq!(
        (status, body["code"].as_str(), body["detail"].as_str()),
        (422, Some("refused"), Some("no pool of USDT"))
    );
    let (status, _, body) = answer(engine::OperatorError::NotPaused(model::Name::new("base").unwrap()).into()).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("not_paused")));
    let (_, _, body) = answer(Problem::not_found("payment")).await;
    assert_eq!(body["type"], "https://railyard.dev/problems/not_found");
    assert_eq!(body["title"], "Not Found");
    assert!(body.get("errors").is_none(), "no empty row list");
}
