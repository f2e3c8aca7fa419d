//! Request extractors that fail with problem+json, never with axum's plain text.
//!
//! - [`ApiJson`]: a JSON body within the size limit; a syntax error is 400, a
//!   wrong type or missing field is 422 with a JSON pointer to it.
//! - [`IdempotencyKey`]: the required `Idempotency-Key` header.
//! - [`DeviceCaller`]: a verified device bearer token.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::{ApiError, FieldProblem};
use crate::app::AppState;
use crate::auth::Role;

/// A JSON body, with its SHA-256 fingerprint over the canonical form
/// (keys sorted, whitespace dropped) for idempotency checks.
pub struct ApiJson<T> {
    pub value: T,
    pub fingerprint: [u8; 32],
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        let path = req.uri().path().to_owned();
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(inner) if inner.status() == 413 => ApiError::BodyTooLarge(0),
            other => ApiError::MalformedBody(other.body_text()),
        })?;
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse(&path, &bytes)
    }
}

fn parse<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<ApiJson<T>, ApiError> {
    let raw: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    if !raw.is_object() {
        return Err(ApiError::field("", "the body must be a JSON object"));
    }
    let value = serde_path_to_error::deserialize(&raw).map_err(|e| {
        let pointer = pointer_of(e.path());
        ApiError::Validation(vec![FieldProblem { pointer, detail: e.inner().to_string() }])
    })?;
    // serde_json's map is ordered by key, so this is a canonical encoding.
    let canonical = serde_json::to_vec(&raw).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update([0]);
    hasher.update(&canonical);
    Ok(ApiJson { value, fingerprint: hasher.finalize().into() })
}

/// `lines[2].quantity` → `/lines/2/quantity` (RFC 6901).
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        out.push('/');
        match segment {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get("idempotency-key")
            .ok_or(ApiError::IdempotencyKeyMissing("the header is required on this request"))?;
        let key = value
            .to_str()
            .map_err(|_| ApiError::IdempotencyKeyMissing("the key must be visible ASCII"))?
            .trim()
            .trim_matches('"');
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::IdempotencyKeyMissing("the key must be 1 to 255 visible ASCII characters"));
        }
        Ok(Self(key.to_owned()))
    }
}

/// A device authenticated by its bearer token, acting in its own merchant and store.
#[derive(Debug, Clone)]
pub struct DeviceCaller {
    pub device_id: Uuid,
    pub merchant_id: Uuid,
    pub store_id: Uuid,
}

/// Who an idempotency key belongs to: keys are scoped per authenticated caller.
pub trait IdempotencyScope {
    fn scope(&self) -> String;
}

impl IdempotencyScope for DeviceCaller {
    fn scope(&self) -> String {
        format!("device:{}", self.device_id)
    }
}

/// A portal user, acting for one merchant.
#[derive(Debug, Clone)]
pub struct PortalCaller {
    pub subject: String,
    pub merchant_id: Uuid,
}

impl IdempotencyScope for PortalCaller {
    fn scope(&self) -> String {
        format!("portal:{}:{}", self.merchant_id, self.subject)
    }
}

impl FromRequestParts<AppState> for PortalCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = bearer(parts, state)?;
        match (claims.role, claims.mer) {
            (Role::Portal, Some(merchant_id)) => {
                platform::correlation::record_caller("portal", &claims.sub, Some(merchant_id), None);
                Ok(Self { subject: claims.sub, merchant_id })
            }
            (Role::Portal, None) => Err(ApiError::Unauthenticated),
            _ => Err(ApiError::Forbidden),
        }
    }
}

/// The verified claims of the request's bearer token.
fn bearer(parts: &Parts, state: &AppState) -> Result<platform::auth::Claims, ApiError> {
    let token = platform::auth::bearer_token(&parts.headers).ok_or(ApiError::Unauthenticated)?;
    state.jwt.verify(token).map_err(|_| ApiError::Unauthenticated)
}

impl FromRequestParts<AppState> for DeviceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = bearer(parts, state)?;
        if claims.role != Role::Device {
            return Err(ApiError::Forbidden);
        }
        let device_id = Uuid::parse_str(&claims.sub).map_err(|_| ApiError::Unauthenticated)?;
        let (Some(merchant_id), Some(store_id)) = (claims.mer, claims.sto) else {
            return Err(ApiError::Unauthenticated);
        };
        platform::correlation::record_caller("device", &claims.sub, Some(merchant_id), Some(store_id));
        super::rate_limit::check(&state.redis, state.limits, device_id, merchant_id).await?;
        Ok(Self { device_id, merchant_id, store_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        lines: Vec<Line>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Line {
        quantity: i64,
    }

    #[test]
    fn wrong_types_point_at_the_field() {
        let err = parse::<Body>("/x", br#"{"lines":[{"quantity":1},{"quantity":"two"}]}"#);
        match err {
            Err(ApiError::Validation(errors)) => assert_eq!(errors[0].pointer, "/lines/1/quantity"),
            other => panic!("expected a validation error, got {:?}", other.err()),
        }
    }

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace_but_not_values() {
        let a = parse::<Body>("/x", br#"{"lines":[{"quantity":1}]}"#).map(|b| b.fingerprint).ok();
        let b = parse::<Body>("/x", b"{ \"lines\" : [ { \"quantity\" : 1 } ] }").map(|b| b.fingerprint).ok();
        let c = parse::<Body>("/x", br#"{"lines":[{"quantity":2}]}"#).map(|b| b.fingerprint).ok();
        let d = parse::<Body>("/y", br#"{"lines":[{"quantity":1}]}"#).map(|b| b.fingerprint).ok();
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn syntax_errors_and_non_objects_are_refused() {
        assert!(matches!(parse::<Body>("/x", b"{\"lines\":"), Err(ApiError::MalformedBody(_))));
        assert!(matches!(parse::<Body>("/x", b"[1]"), Err(ApiError::Validation(_))));
    }
}
