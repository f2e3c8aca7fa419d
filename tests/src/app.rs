//! The command API run in-process on a free port, with typed helpers.

use command_api::config::{Config, RelayConfig};
use platform::Shutdown;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::env::{Merchant, TestEnv};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Shutdown,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// A response, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts a problem+json body whose `status` member equals the HTTP status.
    pub fn assert_problem(&self, status: u16, type_suffix: &str) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        assert_eq!(self.content_type(), "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["status"], json!(status));
        let ty = self.body["type"].as_str().unwrap_or_default();
        assert!(ty.ends_with(type_suffix), "problem type {ty} does not end with {type_suffix}");
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        self
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_owned()
    }
}

impl TestApp {
    /// Starts the command API (relay included) against `env`, using NATS at `nats_url`.
    pub async fn spawn_with(env: &TestEnv, nats_url: &str, relay: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let config = Config {
            addr: listener.local_addr().expect("addr"),
            infra: env.infra(nats_url),
            jwt: env.keys.clone(),
            body_limit: 64 * 1024,
            relay: RelayConfig {
                enabled: relay,
                batch: 512,
                poll_interval: Duration::from_millis(500),
                linger: Duration::from_millis(5),
            },
            idempotency_ttl: Duration::from_secs(48 * 3600),
            // Off here; the rate-limit tests set their own.
            limits: command_api::http::rate_limit::Limits { per_device: 0, per_merchant: 0 },
            commit: command_api::commit::CommitConfig::default(),
        };
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(command_api::run(config, listener, shutdown.clone()));
        Self { base, client: reqwest::Client::new(), shutdown, handle }
    }

    pub async fn spawn(env: &TestEnv) -> Self {
        Self::spawn_with(env, &env.nats_url, true).await
    }

    /// With its own Redis and rate limits.
    pub async fn spawn_limited(
        env: &TestEnv,
        redis_url: &str,
        limits: command_api::http::rate_limit::Limits,
    ) -> Self {
        let mut infra = env.infra(&env.nats_url);
        infra.redis_url = redis_url.to_owned();
        Self::spawn_infra(env, infra, limits).await
    }

    /// With the given infrastructure settings (own servers) and rate limits.
    pub async fn spawn_infra(
        env: &TestEnv,
        infra: platform::InfraSettings,
        limits: command_api::http::rate_limit::Limits,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let config = Config {
            addr: listener.local_addr().expect("addr"),
            infra,
            jwt: env.keys.clone(),
            body_limit: 64 * 1024,
            relay: RelayConfig {
                enabled: true,
                batch: 512,
                poll_interval: Duration::from_millis(500),
                linger: Duration::from_millis(5),
            },
            idempotency_ttl: Duration::from_secs(48 * 3600),
            limits,
            commit: command_api::commit::CommitConfig::default(),
        };
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(command_api::run(config, listener, shutdown.clone()));
        Self { base, client: reqwest::Client::new(), shutdown, handle }
    }

    /// `GET path` with extra headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }

    pub async fn send(
        &self,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut req =
            self.client.post(format!("{}{path}", self.base)).header("content-type", content_type).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, key: Option<&str>, body: &Value) -> Reply {
        self.send(path, token, key, "application/json", body.to_string().into_bytes()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }

    /// A device token for `merchant`'s device number `n`.
    pub async fn token(&self, merchant: &Merchant, n: usize) -> String {
        let (id, secret) = &merchant.devices[n];
        let reply = self
            .post("/v1/devices/token", None, None, &json!({"device_id": id, "device_secret": secret}))
            .await;
        assert_eq!(reply.status, 200, "token exchange failed: {}", reply.body);
        reply.str("access_token")
    }

    /// Posts a command with a fresh idempotency key.
    pub async fn command(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.post(path, Some(token), Some(&Uuid::new_v4().to_string()), body).await
    }

    /// An order of one coffee (450 JPY, standard) and one bagel (300 JPY, reduced): total 1014 JPY.
    pub async fn create_order(&self, token: &str) -> Reply {
        self.command("/v1/orders", token, &sample_order()).await
    }

    pub async fn pay(&self, token: &str, order_id: &str, method: &str, amount: i64, capture: &str) -> Reply {
        let body = json!({"order_id": order_id, "method": method, "amount": amount, "capture": capture});
        self.command("/v1/payments", token, &body).await
    }

    pub async fn approve(&self, token: &str, payment_id: &str) -> Reply {
        self.command(
            &format!("/v1/payments/{payment_id}/confirm"),
            token,
            &json!({"result": "approved", "auth_code": "A1B2"}),
        )
        .await
    }
}

pub fn sample_order() -> Value {
    json!({
        "currency": "JPY",
        "lines": [
            {"sku": "coffee", "name": "Coffee", "quantity": 1, "unit_price": 450, "tax_category": "standard"},
            {"sku": "bagel", "name": "Bagel", "quantity": 1, "unit_price": 300, "tax_category": "reduced"}
        ]
    })
}
