//! Errors as RFC 9457 problem details (`application/problem+json`) with a stable `code` a
//! program can match, a `detail` that says what to fix, and for a rejected batch the rows.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One invalid row of a batch: the row (from 0, the header of a CSV file not counted), the
/// field, a stable code and what to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RowProblem {
    pub row: usize,
    pub field: String,
    pub code: String,
    pub message: String,
}

/// An RFC 9457 problem (boxed: it travels in every handler's `Err`).
#[derive(Clone, Debug)]
pub struct Problem(pub Box<ProblemBody>);

/// The body of an RFC 9457 problem.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// A URI naming the kind of problem (`about:blank` plus `code` here).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[schema(value_type = u16)]
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable: clients match on it, never on `detail`.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RowProblem>,
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
}

/// Most row problems one answer carries (the count says how many there were).
pub const ROW_PROBLEMS_MAX: usize = 1_000;

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem(Box::new(ProblemBody {
            kind: format!("https://railyard.dev/problems/{code}"),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            errors: Vec::new(),
            retry_after_s: None,
        }))
    }

    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.0.retry_after_s = Some(seconds.max(1));
        self
    }

    pub fn rows(mut self, mut rows: Vec<RowProblem>) -> Problem {
        rows.truncate(ROW_PROBLEMS_MAX);
        self.0.errors = rows;
        self
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} with this id"))
    }

    pub fn internal(error: impl std::fmt::Display) -> Problem {
        tracing::error!(%error, "request failed");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed to answer; retry later")
    }
}

impl From<engine::service::ServiceError> for Problem {
    fn from(error: engine::service::ServiceError) -> Problem {
        match error {
            engine::service::ServiceError::Busy(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", error.to_string()).retry_after(1)
            }
            engine::service::ServiceError::Unavailable => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string()).retry_after(5)
            }
        }
    }
}

impl From<engine::EngineError> for Problem {
    fn from(error: engine::EngineError) -> Problem {
        match error {
            engine::EngineError::Refused(reason) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", reason),
            engine::EngineError::Stopped(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopped",
                "the engine stopped; an operator must restart it",
            )
            .retry_after(30),
            engine::EngineError::Standby => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "standby",
                "this node does not coordinate; retry shortly (a change is forwarded to the coordinator once one is known)",
            )
            .retry_after(1),
            // The database behind a shared journal went away (or the journal is closing): a
            // transient failure, nothing was changed.
            engine::EngineError::Journal(
                error @ (journal::JournalError::Storage(_)
                | journal::JournalError::Poisoned
                | journal::JournalError::Closed
                | journal::JournalError::Busy),
            ) => {
                tracing::warn!(%error, "journal unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "journal_unavailable",
                    "the journal is unavailable for a moment; retry (with the same idempotency key)",
                )
                .retry_after(2)
            }
            other => Problem::internal(other),
        }
    }
}

impl From<engine::OperatorError> for Problem {
    fn from(error: engine::OperatorError) -> Problem {
        use engine::OperatorError as E;
        let (status, code) = match &error {
            E::UnknownRail(_) => (StatusCode::NOT_FOUND, "unknown_rail"),
            E::UnknownPayment(_) => return Problem::not_found("payment"),
            E::AlreadyPaused(_) => (StatusCode::CONFLICT, "already_paused"),
            E::NotPaused(_) => (StatusCode::CONFLICT, "not_paused"),
            E::CannotResolve { .. } => (StatusCode::CONFLICT, "cannot_resolve"),
            E::NotCancellable { .. } => (StatusCode::CONFLICT, "not_cancellable"),
            E::Guarded(_) => (StatusCode::CONFLICT, "held_by_guards"),
            E::Engine(_) => {
                let E::Engine(inner) = error else { unreachable!() };
                return inner.into();
            }
        };
        Problem::new(status, code, error.to_string())
    }
}

impl From<engine::guards::GuardActionError> for Problem {
    fn from(error: engine::guards::GuardActionError) -> Problem {
        use engine::guards::GuardActionError as E;
        let (status, code) = match &error {
            E::NotGuarded(_) => (StatusCode::CONFLICT, "not_guarded"),
            E::Role(_) => (StatusCode::FORBIDDEN, "forbidden"),
            E::Automatic { .. } => (StatusCode::CONFLICT, "released_automatically"),
            E::UnknownMerchant(_) => (StatusCode::NOT_FOUND, "unknown_merchant"),
            E::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_guards"),
            E::Engine(_) => {
                let E::Engine(inner) = error else { unreachable!() };
                return inner.into();
            }
        };
        Problem::new(status, code, error.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.0.retry_after_s;
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
