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
        (status = 409, description = "The device changed concurrently too often; retry", body = Problem, content_type = "application/problem+json"),
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
    // Two round trips and no explicit transaction: read the device, then one
    // statement that counts the token (if the device's event sequence is
    // still the one read) and appends its event. A concurrent exchange for
    // the same device moves the sequence; then read again, a moment later.
    // Both on one connection: each trip through the pool costs a round trip
    // of its own (sqlx tests the connection given back; `bench/NOTES.md`, step 50).
    let mut conn = state.pg.acquire().await?;
    for attempt in 0..5u64 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(attempt * 3)).await;
        }
        let row: Option<(Uuid, Uuid, Vec<u8>, bool, i64, i64)> = sqlx::query_as(
            "SELECT merchant_id, store_id, secret_hash, active, token_count, event_seq FROM devices WHERE id = $1",
        )
        .bind(req.device_id)
        .fetch_optional(&mut *conn)
        .await?;
        let given = hash_secret(&req.device_secret);
        let Some((merchant_id, store_id, stored, active, tokens, seq)) = row else {
            return Err(ApiError::Unauthenticated);
        };
        if !bool::from(given.ct_eq(&stored)) || !active {
            return Err(ApiError::Unauthenticated);
        }
        let now = Utc::now();
        let event = DomainEvent::DeviceTokenIssued(DeviceTokenIssued {
            device_id: req.device_id,
            tokens_issued: tokens + 1,
            expires_at: now + chrono::Duration::seconds(DEVICE_TOKEN_SECS),
            issued_at: now,
        });
        // Signed before anything is written: a token that cannot be issued is not counted.
        let token = state.jwt.issue(&device_claims(req.device_id, merchant_id, store_id, now))?;
        let scope = Scope { merchant_id, store_id, device_id: req.device_id };
        let rows = outbox::Rows::events(
            &state.subject_prefix,
            scope,
            seq,
            &[event],
            now,
            &outbox::Context::current(),
        );
        let counted = rows
            .bind(sqlx::query(
                "WITH d AS (
                   UPDATE devices SET token_count = token_count + 1, event_seq = event_seq + 1, last_token_at = $7
                    WHERE id = $5 AND event_seq = $6
                   RETURNING id)
                 INSERT INTO outbox (event_id, subject, headers, payload)
                 SELECT x.id, x.subject, x.headers, x.payload
                   FROM d, UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::bytea[]) AS x(id, subject, headers, payload)",
            ))
            .bind(req.device_id)
            .bind(seq)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        if counted.rows_affected() == 0 {
            continue;
        }
        state.wake.committed();
        return Ok(Json(TokenBody {
            access_token: token,
            token_type: "Bearer",
            expires_in: DEVICE_TOKEN_SECS,
        })
        .into_response());
    }
    Err(ApiError::ConcurrentChange("device"))
}
