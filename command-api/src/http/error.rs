//! The one HTTP error type and its RFC 9457 problem+json rendering.
//!
//! The status mapping is one exhaustive `match`. Internal causes are logged
//! here, once, and never sent: a 500 says only that something failed.

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use problem_details::ProblemDetails;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{DomainError, FieldError};

/// One invalid field of a request body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    /// JSON pointer (RFC 6901) to the field.
    pub pointer: String,
    pub detail: String,
}

#[derive(Serialize)]
struct Extensions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldProblem>,
}

/// The shape of every error body, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// URI identifying the problem type.
    #[schema(example = "https://smartpos.example/problems/validation")]
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    /// Field errors, for validation problems.
    errors: Option<Vec<FieldProblem>>,
}

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
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<FieldError> for FieldProblem {
    fn from(e: FieldError) -> Self {
        Self { pointer: e.pointer, detail: e.detail }
    }
}

impl ApiError {
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::Validation(errors.into_iter().map(Into::into).collect())
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
        let uri: Uri = format!("https://smartpos.example/problems/{slug}")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("about:blank"));
        let problem = ProblemDetails::from_status_code(status)
            .with_type(uri)
            .with_title(title_of(slug))
            .with_detail(detail)
            .with_extensions(Extensions { errors });
        serde_json::to_vec(&problem).unwrap_or_default()
    }
}

/// A short, human title per problem type: `amount-exceeds-balance` → `Amount exceeds balance`.
fn title_of(slug: &str) -> String {
    let mut title = slug.replace('-', " ");
    if let Some(first) = title.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    title
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
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
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
