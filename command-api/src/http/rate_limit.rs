//! Per-device and per-merchant rate limits, held in Redis.
//!
//! Fixed one-minute windows: one pipelined round trip increments the
//! device's and the merchant's counters for the current minute (and sets
//! their expiry). Over either limit: 429 with `Retry-After` = seconds to the
//! next window. Redis is a guard, not a dependency: when it does not answer
//! the request goes through (fail open), which is logged and counted as
//! `rate_limit_fail_open_total`, because PostgreSQL holds the records.

use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

use super::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests per device per minute (0: no limit).
    pub per_device: u64,
    /// Requests per merchant per minute (0: no limit).
    pub per_merchant: u64,
}

/// Counts this request against `device` and `merchant`; 429 when over a limit.
pub async fn check(
    redis: &redis::aio::ConnectionManager,
    limits: Limits,
    device: Uuid,
    merchant: Uuid,
) -> Result<(), ApiError> {
    if limits.per_device == 0 && limits.per_merchant == 0 {
        return Ok(());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let window = now / 60;
    let retry_after = 60 - now % 60;
    let device_key = format!("rl:d:{device}:{window}");
    let merchant_key = format!("rl:m:{merchant}:{window}");
    let mut conn = redis.clone();
    let counts: redis::RedisResult<(u64, u64)> = redis::pipe()
        .incr(&device_key, 1)
        .expire(&device_key, 120)
        .ignore()
        .incr(&merchant_key, 1)
        .expire(&merchant_key, 120)
        .ignore()
        .query_async(&mut conn)
        .await;
    match counts {
        Ok((d, m)) => {
            metrics::counter!("redis_operations_total", "operation" => "rate_limit", "outcome" => "ok")
                .increment(1);
            let over = (limits.per_device > 0 && d > limits.per_device)
                || (limits.per_merchant > 0 && m > limits.per_merchant);
            if over {
                metrics::counter!("rate_limited_total").increment(1);
                return Err(ApiError::RateLimited(retry_after));
            }
            Ok(())
        }
        Err(e) => {
            metrics::counter!("redis_operations_total", "operation" => "rate_limit", "outcome" => "error")
                .increment(1);
            metrics::counter!("rate_limit_fail_open_total").increment(1);
            tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
            Ok(())
        }
    }
}
