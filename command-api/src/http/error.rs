//! The one HTTP error type and its RFC 9457 problem+json rendering.
//!
//! The status mapping is one exhaustive `match`. Internal causes are logged
//! here, once, and never sent: a 500 says only that something failed.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::{DomainError, FieldError};
pub use platform::problem::{FieldProblem, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedBody(String),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request has invalid fields")]
    Validation(Vec<FieldProblem>),
    #[error("{0}")]
    BadPath(String),
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    #[error("this token may not do that")]
    Forbidden,
    #[error("the {0} does not exist")]
    NotFound(&'static str),
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("the {0} was changed by a concurrent request; reload and retry")]
    ConcurrentChange(&'static str),
    #[error("the {0} already exists")]
    AlreadyExists(&'static str),
    #[error("the Idempotency-Key header is missing or invalid: {0}")]
    IdempotencyKeyMissing(&'static str),
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyKeyInFlight,
    #[error("a dependency is unavailable: {0}")]
    Unavailable(&'static str),
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::Validation(errors.into_iter().map(|e| FieldProblem::new(e.pointer, e.detail)).collect())
    }

    pub fn field(pointer: &str, detail: &str) -> Self {
        Self::Validation(vec![FieldProblem { pointer: pointer.into(), detail: detail.into() }])
    }

    /// Status and problem-type slug of each error; exhaustive on purpose.
    fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed-body"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large"),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            Self::BadPath(_) => (StatusCode::NOT_FOUND, "not-found"),
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            Self::Rule(rule) => classify_rule(rule),
            Self::ConcurrentChange(_) => (StatusCode::CONFLICT, "concurrent-change"),
            Self::AlreadyExists(_) => (StatusCode::CONFLICT, "already-exists"),
            Self::IdempotencyKeyMissing(_) => (StatusCode::BAD_REQUEST, "idempotency-key-missing"),
            Self::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused"),
            Self::IdempotencyKeyInFlight => (StatusCode::CONFLICT, "idempotency-key-in-flight"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "dependency-unavailable"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.classify().0
    }

    /// The problem+json body, as bytes (stored for idempotent replays).
    pub fn body(&self) -> Vec<u8> {
        let (status, slug) = self.classify();
        let detail = match self {
            Self::Internal(_) => "the request could not be completed; it is safe to retry".to_owned(),
            other => other.to_string(),
        };
        let errors = match self {
            Self::Validation(errors) => errors.clone(),
            _ => Vec::new(),
        };
        platform::problem::body(status, slug, detail, errors)
    }
}

fn classify_rule(rule: &DomainError) -> (StatusCode, &'static str) {
    match rule {
        DomainError::OrderNotOpen(_) => (StatusCode::CONFLICT, "order-not-open"),
        DomainError::OrderHasCapturedPayments => (StatusCode::CONFLICT, "order-has-captured-payments"),
        DomainError::PaymentNotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
        DomainError::PaymentExists(_) => (StatusCode::CONFLICT, "already-exists"),
        DomainError::IllegalTransition { .. } => (StatusCode::CONFLICT, "illegal-transition"),
        DomainError::AmountExceedsBalance { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "amount-exceeds-balance")
        }
        DomainError::RefundExceedsCaptured { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "refund-exceeds-captured")
        }
        DomainError::AmountNotPositive => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
        DomainError::TipNegative => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
    }
}

/// Renders a stored or fresh problem body with the right headers.
pub fn problem_response(status: StatusCode, body: Vec<u8>) -> Response {
    platform::problem::response(status, body)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(cause) => tracing::error!(error = format!("{cause:#}"), "request failed"),
            Self::Unavailable(dep) => tracing::warn!(dependency = dep, "dependency unavailable"),
            _ => {}
        }
        let mut response = problem_response(status, self.body());
        if let Self::RateLimited(secs) = self
            && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        response
    }
}

/// Database errors: pool exhaustion and lost connections are "unavailable";
/// everything else is internal.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable("database")
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<sqlx::Error>() {
            Ok(db) => db.into(),
            Err(other) => Self::Internal(other),
        }
    }
}
