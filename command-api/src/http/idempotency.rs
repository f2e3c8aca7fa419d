//! Idempotency keys: a retried command changes nothing twice.
//!
//! Semantics (IETF httpapi draft): same key and same body replays the first
//! response, status and body; same key with another body is 422; a key whose
//! first request is still running is 409; no key is 400. Keys are scoped per
//! caller (a device) and kept at least 24 hours.
//!
//! PostgreSQL is the record. Within the command's own transaction the key is
//! claimed with a transaction-scoped advisory lock (held until commit, so a
//! concurrent twin sees "in flight" instead of waiting) and the response is
//! inserted before commit, so "command applied" and "key recorded" are one
//! atomic fact. For the rare commands (configuration, reports, device
//! acknowledgements) Redis fronts completed keys, so that a replay does not
//! touch the database; a Redis failure only costs that shortcut. Order and
//! payment commands skip the front: their replays are answered from the
//! claim in the next group commit (see [`crate::commands`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use redis::AsyncCommands;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

use crate::store::stores::StoreContext;

use super::error::{ApiError, problem_response};

/// A response recorded for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The recorded response for a request with `fingerprint`, or 422 if the body differs.
    pub fn replay(&self, fingerprint: &[u8; 32]) -> Result<Response, ApiError> {
        if self.request_hash != fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = if status.is_success() {
            let mut r = (status, self.body.clone()).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        } else {
            problem_response(status, self.body.clone())
        };
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        Ok(response)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(34 + self.body.len());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.request_hash);
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 34 {
            return None;
        }
        Some(Self {
            status: u16::from_be_bytes([bytes[0], bytes[1]]),
            request_hash: bytes[2..34].to_vec(),
            body: bytes[34..].to_vec(),
        })
    }
}

fn redis_key(scope: &str, key: &str) -> String {
    format!("idem:{scope}:{key}")
}

/// A completed key from the Redis front, if Redis has it and answers.
pub async fn cached(redis: &redis::aio::ConnectionManager, scope: &str, key: &str) -> Option<Recorded> {
    let mut conn = redis.clone();
    match conn.get::<_, Option<Vec<u8>>>(redis_key(scope, key)).await {
        Ok(bytes) => {
            let outcome = if bytes.is_some() { "hit" } else { "miss" };
            metrics::counter!("redis_operations_total", "operation" => "idempotency_get", "outcome" => outcome).increment(1);
            bytes.as_deref().and_then(Recorded::decode)
        }
        Err(e) => {
            metrics::counter!("redis_operations_total", "operation" => "idempotency_get", "outcome" => "error").increment(1);
            tracing::debug!(error = %e, "idempotency cache unavailable");
            None
        }
    }
}

/// Puts a completed key in the Redis front, best effort.
pub async fn remember(
    redis: &redis::aio::ConnectionManager,
    scope: &str,
    key: &str,
    recorded: &Recorded,
    ttl: Duration,
) {
    let mut conn = redis.clone();
    let result: redis::RedisResult<()> =
        conn.set_ex(redis_key(scope, key), recorded.encode(), ttl.as_secs().max(1)).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("redis_operations_total", "operation" => "idempotency_set", "outcome" => outcome)
        .increment(1);
    if let Err(e) = result {
        tracing::debug!(error = %e, "idempotency cache write failed");
    }
}

/// Outcome of claiming a key inside the command's transaction.
pub enum Claim {
    /// First use: run the command, then [`record`] its response.
    Fresh,
    /// Already completed: this is what was answered.
    Done(Recorded),
}

/// The claim statement's answer for one key: lock taken, the completed
/// record if any, and the caller's store settings when asked for.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    locked: bool,
    request_hash: Option<Vec<u8>>,
    status_code: Option<i16>,
    response_body: Option<Vec<u8>>,
    #[sqlx(flatten)]
    store: crate::store::stores::StoreRow,
}

/// One key to claim: the caller's scope, the key, and optionally the
/// (merchant, store) whose settings the command needs.
pub struct ClaimRequest<'a> {
    pub scope: &'a str,
    pub key: &'a str,
    pub store: Option<(Uuid, Uuid)>,
}

/// What claiming one key found.
pub struct Claimed {
    /// The key is being used by another request right now (409).
    pub in_flight: bool,
    pub claim: Claim,
    /// The store's settings; `None` when not asked for or not the merchant's.
    pub store: Option<StoreContext>,
}

/// Claims every key in the open transaction: one round trip for all.
///
/// Per key: a transaction-scoped advisory lock (a *try*: a twin in flight
/// is reported, not waited for), the lookup of a completed record, and the
/// store's settings. The lookup's snapshot may predate a twin that committed
/// while this statement ran; such a twin's record makes this command's own
/// record fail on the primary key, which rolls everything back, so a
/// command is never applied twice. Advisory locks are re-entrant within a
/// session: the same key twice in one call must be caught by the caller.
pub async fn claim_many(
    conn: &mut PgConnection,
    requests: &[ClaimRequest<'_>],
) -> Result<Vec<Claimed>, ApiError> {
    let scopes: Vec<&str> = requests.iter().map(|r| r.scope).collect();
    let keys: Vec<&str> = requests.iter().map(|r| r.key).collect();
    let merchants: Vec<Option<Uuid>> = requests.iter().map(|r| r.store.map(|s| s.0)).collect();
    let stores: Vec<Option<Uuid>> = requests.iter().map(|r| r.store.map(|s| s.1)).collect();
    let rows: Vec<ClaimRow> = sqlx::query_as(&format!(
        "SELECT l.locked, k.request_hash, k.status_code, k.response_body, st.*
           FROM (SELECT u.*, pg_try_advisory_xact_lock(hashtextextended(u.caller || E'\\n' || u.key, 7)) AS locked
                   FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::uuid[]) WITH ORDINALITY
                        AS u(caller, key, merchant_id, store_id, n)) l
           LEFT JOIN idempotency_keys k ON l.locked AND k.caller = l.caller AND k.key = l.key
           LEFT JOIN LATERAL ({}) st ON true
          ORDER BY l.n",
        crate::store::stores::settings_sql("l.store_id", "l.merchant_id")
    ))
    .bind(&scopes)
    .bind(&keys)
    .bind(&merchants)
    .bind(&stores)
    .fetch_all(&mut *conn)
    .await?;
    requests
        .iter()
        .zip(rows)
        .map(|(request, row)| {
            let claim = match (row.request_hash, row.status_code, row.response_body) {
                (Some(request_hash), Some(status), Some(body)) => {
                    Claim::Done(Recorded { request_hash, status: u16::try_from(status).unwrap_or(500), body })
                }
                _ => Claim::Fresh,
            };
            let store = match request.store {
                Some((_, store_id)) => row.store.into_context(store_id)?,
                None => None,
            };
            Ok(Claimed { in_flight: !row.locked, claim, store })
        })
        .collect()
}

/// Claims one key (see [`claim_many`]); a key in flight is a 409.
pub async fn claim(conn: &mut PgConnection, scope: &str, key: &str) -> Result<Claim, ApiError> {
    let mut claimed = claim_many(conn, &[ClaimRequest { scope, key, store: None }]).await?;
    match claimed.pop() {
        Some(c) if c.in_flight => Err(ApiError::IdempotencyKeyInFlight),
        Some(c) => Ok(c.claim),
        None => Err(ApiError::Internal(anyhow::anyhow!("the claim returned no row"))),
    }
}

/// Records the response of a fresh key in the command's transaction.
pub async fn record(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    recorded: &Recorded,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO idempotency_keys (caller, key, request_hash, status_code, response_body) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(scope)
    .bind(key)
    .bind(&recorded.request_hash)
    .bind(i16::try_from(recorded.status).unwrap_or(500))
    .bind(&recorded.body)
    .execute(&mut *conn)
    .await
    .map_err(|e| match e.as_database_error() {
        Some(db) if db.is_unique_violation() => ApiError::IdempotencyKeyInFlight,
        _ => e.into(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_encoding_round_trips() {
        let r = Recorded { request_hash: vec![7; 32], status: 201, body: b"{\"a\":1}".to_vec() };
        assert_eq!(Recorded::decode(&r.encode()), Some(r));
        assert_eq!(Recorded::decode(b"short"), None);
    }

    #[test]
    fn a_different_body_is_refused_not_replayed() {
        let r = Recorded { request_hash: vec![1; 32], status: 201, body: b"{}".to_vec() };
        assert!(matches!(r.replay(&[2; 32]), Err(ApiError::IdempotencyKeyReused)));
        let replayed = r.replay(&[1; 32]).expect("same body replays");
        assert_eq!(replayed.status(), StatusCode::CREATED);
        assert_eq!(replayed.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    }
}
