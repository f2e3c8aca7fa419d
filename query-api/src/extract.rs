//! Extractors: the reader behind a token, and query strings that fail as problems.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use platform::auth::Role;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// Who reads: a portal user sees the merchant, a device its store.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    pub merchant_id: Uuid,
    /// `Some` for device tokens: confined to that store.
    pub store_id: Option<Uuid>,
    /// `Some` for device tokens.
    pub device_id: Option<Uuid>,
}

impl Reader {
    /// Whether a row of `merchant_id`/`store_id` is visible to this reader.
    pub fn sees(&self, merchant_id: Uuid, store_id: Uuid) -> bool {
        self.merchant_id == merchant_id && self.store_id.is_none_or(|s| s == store_id)
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = platform::auth::bearer_token(&parts.headers).ok_or(ApiError::Unauthenticated)?;
        let claims = state.jwt.verify(token).map_err(|_| ApiError::Unauthenticated)?;
        let kind = match claims.role {
            Role::Portal => "portal",
            Role::Device => "device",
            Role::Operator => "operator",
        };
        platform::correlation::record_caller(kind, &claims.sub, claims.mer, claims.sto);
        match (claims.role, claims.mer, claims.sto) {
            (Role::Portal, Some(merchant_id), _) => Ok(Self { merchant_id, store_id: None, device_id: None }),
            (Role::Device, Some(merchant_id), Some(store)) => Ok(Self {
                merchant_id,
                store_id: Some(store),
                device_id: Some(Uuid::parse_str(&claims.sub).map_err(|_| ApiError::Unauthenticated)?),
            }),
            (Role::Operator, _, _) => Err(ApiError::Forbidden),
            _ => Err(ApiError::Unauthenticated),
        }
    }
}

/// A typed query string; a bad parameter is a 422 naming it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| ApiError::param("query", e.body_text()))
    }
}
