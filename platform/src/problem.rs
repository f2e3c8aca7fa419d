//! RFC 9457 problem details, rendered the same way by every HTTP API.
//!
//! `type` is `https://smartpos.example/problems/<slug>`, `title` is derived
//! from the slug, `status` equals the HTTP status, and validation problems
//! carry an `errors` array of JSON pointers.

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use problem_details::ProblemDetails;
use serde::Serialize;
use utoipa::ToSchema;

/// One invalid field (body or query), located by a JSON pointer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    /// JSON pointer (RFC 6901) to the field; query parameters are `/<name>`.
    pub pointer: String,
    pub detail: String,
}

impl FieldProblem {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { pointer: pointer.into(), detail: detail.into() }
    }
}

/// The shape of every error body, for OpenAPI documents.
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

#[derive(Serialize)]
struct Extensions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldProblem>,
}

/// The problem+json body for `status`, problem `slug`, `detail` and field errors.
pub fn body(status: StatusCode, slug: &str, detail: String, errors: Vec<FieldProblem>) -> Vec<u8> {
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

/// A response carrying a problem body, with `Retry-After` on 503 and
/// `WWW-Authenticate` on 401.
pub fn response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// `amount-exceeds-balance` → `Amount exceeds balance`.
fn title_of(slug: &str) -> String {
    let mut title = slug.replace('-', " ");
    if let Some(first) = title.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    title
}

/// 405 for a route that exists with another method.
pub fn method_not_allowed() -> Response {
    response(
        StatusCode::METHOD_NOT_ALLOWED,
        body(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "this route does not accept that method".into(),
            vec![],
        ),
    )
}
