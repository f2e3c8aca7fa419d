//! The query API's error type: problem+json, one exhaustive status mapping.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::problem::{self, FieldProblem};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the query has invalid parameters")]
    Validation(Vec<FieldProblem>),
    #[error("{0}")]
    BadCursor(&'static str),
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    #[error("this token may not read that")]
    Forbidden,
    #[error("the {0} does not exist")]
    NotFound(&'static str),
    #[error("{0}")]
    NotReady(&'static str),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(&'static str),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn param(name: &str, detail: impl Into<String>) -> Self {
        Self::Validation(vec![FieldProblem::new(format!("/{name}"), detail)])
    }

    fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            Self::BadCursor(_) => (StatusCode::BAD_REQUEST, "invalid-cursor"),
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            Self::NotReady(_) => (StatusCode::CONFLICT, "not-ready"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "dependency-unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug) = self.classify();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let detail = match &self {
            Self::Internal(_) => "the request could not be completed; it is safe to retry".to_owned(),
            other => other.to_string(),
        };
        let errors = match self {
            Self::Validation(errors) => errors,
            _ => Vec::new(),
        };
        problem::response(status, problem::body(status, slug, detail, errors))
    }
}

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
