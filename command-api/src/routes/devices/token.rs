//! `POST /v1/devices/token`: a terminal trades its id and secret for a 90-second token.
//!
//! Device secrets are 256-bit random values, stored as SHA-256 digests and
//! compared in constant time. A slow password hash would add nothing against
//! guessing a 256-bit secret and would cost milliseconds on 10% of traffic.
//! Unknown device, wrong secret and disabled device all answer the same 401.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use events::DomainEvent;
use events::domain::DeviceTokenIssued;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{DEVICE_TOKEN_SECS, device_claims};
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::ApiJson;
use crate::store::orders::Scope;
use crate::store::outbox;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub device_id: Uuid,
    pub device_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    #[schema(example = 90)]
    pub expires_in: i64,
}

/// SHA-256 of a device secret, as stored.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

#[utoipa::path(
    post, path = "/v1/devices/token", tag = "devices",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A device token", body = TokenBody),
        (status = 401, description = "Unknown device, wrong secret or disabled device", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn issue_token(
    State(state): State<AppState>,
    body: ApiJson<TokenRequest>,
) -> Result<Response, ApiError> {
    let req = body.value;
    if req.device_secret.is_empty() || req.device_secret.len() > 256 {
        return Err(ApiError::Unauthenticated);
    }
    let mut tx = state.pg.begin().await?;
    let row: Option<(Uuid, Uuid, Vec<u8>, bool)> =
        sqlx::query_as("SELECT merchant_id, store_id, secret_hash, active FROM devices WHERE id = $1")
            .bind(req.device_id)
            .fetch_optional(&mut *tx)
            .await?;
    let given = hash_secret(&req.device_secret);
    let Some((merchant_id, store_id, stored, active)) = row else {
        return Err(ApiError::Unauthenticated);
    };
    if !bool::from(given.ct_eq(&stored)) || !active {
        return Err(ApiError::Unauthenticated);
    }
    let now = Utc::now();
    let token = state.jwt.issue(&device_claims(req.device_id, merchant_id, store_id, now))?;
    let (tokens, seq): (i64, i64) = sqlx::query_as(
        "UPDATE devices SET token_count = token_count + 1, event_seq = event_seq + 1, last_token_at = $2
          WHERE id = $1 RETURNING token_count, event_seq",
    )
    .bind(req.device_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let event = DomainEvent::DeviceTokenIssued(DeviceTokenIssued {
        device_id: req.device_id,
        tokens_issued: tokens,
        expires_at: now + chrono::Duration::seconds(DEVICE_TOKEN_SECS),
        issued_at: now,
    });
    let scope = Scope { merchant_id, store_id, device_id: req.device_id };
    outbox::append(&mut tx, &state.subject_prefix, scope, seq - 1, &[event], now).await?;
    tx.commit().await?;
    state.wake.committed();
    Ok(Json(TokenBody { access_token: token, token_type: "Bearer", expires_in: DEVICE_TOKEN_SECS })
        .into_response())
}
