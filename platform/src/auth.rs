//! Bearer tokens: issuing and verifying JWTs with rotatable keys.
//!
//! Tokens are HS256 JWTs whose header names the key id (`kid`). The keys come
//! from `JWT_KEYS` (`kid:secret,kid:secret`); new tokens are signed with
//! `JWT_ACTIVE_KID` and any listed key verifies, so a key is rotated by adding
//! the new one, making it active, and removing the old one once its tokens
//! have expired. Device tokens live 90 seconds.

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

pub const ISSUER: &str = "smartpos";
pub const DEVICE_TOKEN_SECS: i64 = 90;
/// Used when `JWT_KEYS` is unset: development only, and logged as such at start-up.
const DEV_KEYS: &str = "dev-1:smartpos-development-signing-key-do-not-use-in-production";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Device,
    Portal,
    Operator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// Device id, portal user or operator name.
    pub sub: String,
    pub role: Role,
    /// Merchant the token acts for (absent for operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mer: Option<Uuid>,
    /// Store the token acts for (devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sto: Option<Uuid>,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct JwtKeys {
    active_kid: String,
    keys: Arc<HashMap<String, (EncodingKey, DecodingKey)>>,
    raw: Arc<HashMap<String, Vec<u8>>>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("JwtKeys").field("active_kid", &self.active_kid).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token names an unknown key")]
    UnknownKey,
    #[error("the token is invalid or expired")]
    Invalid,
}

impl JwtKeys {
    pub fn from_env() -> anyhow::Result<Self> {
        let spec = std::env::var("JWT_KEYS").ok().filter(|s| !s.trim().is_empty());
        if spec.is_none() {
            tracing::warn!("JWT_KEYS is unset: using the development signing key");
        }
        let spec = spec.unwrap_or_else(|| DEV_KEYS.to_owned());
        let active = std::env::var("JWT_ACTIVE_KID").ok().filter(|s| !s.trim().is_empty());
        Self::parse(&spec, active.as_deref()).context("JWT_KEYS / JWT_ACTIVE_KID")
    }

    /// `kid:secret[,kid:secret...]`; the active key defaults to the first.
    pub fn parse(spec: &str, active_kid: Option<&str>) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        let mut raw = HashMap::new();
        let mut first = None;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, secret) = part.split_once(':').ok_or_else(|| anyhow!("entry without `kid:`"))?;
            anyhow::ensure!(!kid.is_empty(), "empty key id");
            anyhow::ensure!(secret.len() >= 32, "key `{kid}` is shorter than 32 bytes");
            first.get_or_insert_with(|| kid.to_owned());
            let bytes = secret.as_bytes();
            keys.insert(kid.to_owned(), (EncodingKey::from_secret(bytes), DecodingKey::from_secret(bytes)));
            raw.insert(kid.to_owned(), bytes.to_vec());
        }
        let active_kid = active_kid.map(str::to_owned).or(first).ok_or_else(|| anyhow!("no keys"))?;
        anyhow::ensure!(keys.contains_key(&active_kid), "active key `{active_kid}` is not among the keys");
        Ok(Self { active_kid, keys: Arc::new(keys), raw: Arc::new(raw) })
    }

    pub fn active_kid(&self) -> &str {
        &self.active_kid
    }

    /// The active key's bytes, for deriving other secrets (demo device secrets).
    pub fn active_secret(&self) -> &[u8] {
        self.raw.get(&self.active_kid).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn issue(&self, claims: &Claims) -> anyhow::Result<String> {
        let (enc, _) = self.keys.get(&self.active_kid).ok_or_else(|| anyhow!("active key missing"))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.active_kid.clone());
        jsonwebtoken::encode(&header, claims, enc).context("signing a token")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let (_, dec) = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<Claims>(token, dec, &validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// Claims for a device token of `DEVICE_TOKEN_SECS`.
pub fn device_claims(device_id: Uuid, merchant_id: Uuid, store_id: Uuid, now: DateTime<Utc>) -> Claims {
    Claims {
        iss: ISSUER.into(),
        sub: device_id.to_string(),
        role: Role::Device,
        mer: Some(merchant_id),
        sto: Some(store_id),
        iat: now.timestamp(),
        exp: now.timestamp() + DEVICE_TOKEN_SECS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "b:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn claims(exp_in: i64) -> Claims {
        let mut c = device_claims(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Utc::now());
        c.exp = Utc::now().timestamp() + exp_in;
        c
    }

    #[test]
    fn a_token_signed_with_the_old_key_verifies_during_rotation() {
        let old = JwtKeys::parse(A, None).expect("keys");
        let token = old.issue(&claims(60)).expect("token");
        let rotated = JwtKeys::parse(&format!("{A},{B}"), Some("b")).expect("keys");
        assert_eq!(rotated.verify(&token).map(|c| c.role), Ok(Role::Device));
        let new_token = rotated.issue(&claims(60)).expect("token");
        assert_eq!(jsonwebtoken::decode_header(&new_token).ok().and_then(|h| h.kid).as_deref(), Some("b"));
        let retired = JwtKeys::parse(B, None).expect("keys");
        assert_eq!(retired.verify(&token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn expired_tampered_and_garbage_tokens_are_refused() {
        let keys = JwtKeys::parse(A, None).expect("keys");
        assert_eq!(keys.verify(&keys.issue(&claims(-60)).expect("t")), Err(TokenError::Invalid));
        let token = keys.issue(&claims(60)).expect("t");
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(keys.verify(&tampered), Err(TokenError::Invalid));
        assert_eq!(keys.verify("not-a-jwt"), Err(TokenError::Malformed));
    }

    #[test]
    fn short_or_missing_keys_fail_start_up() {
        assert!(JwtKeys::parse("a:short", None).is_err());
        assert!(JwtKeys::parse(A, Some("zzz")).is_err());
        assert!(JwtKeys::parse("", None).is_err());
    }
}
