//! The projectors and the query API, run in-process on free ports.

use platform::Shutdown;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinHandle;

use crate::app::{Reply, TestApp};
use crate::env::TestEnv;

pub struct ReadSide {
    pub base: String,
    pub projectors_base: String,
    pub client: reqwest::Client,
    shutdown: Shutdown,
    handles: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl ReadSide {
    /// Starts projectors (unless `projectors` is false) and the query API.
    pub async fn spawn_with(env: &TestEnv, nats_url: &str, projectors: bool) -> Self {
        Self::spawn_waiting(env, nats_url, projectors, Duration::from_secs(5), Duration::from_millis(100))
            .await
    }

    /// As [`ReadSide::spawn_with`], with the query API's longest wait for a
    /// version (`READ_MAX_WAIT_MS`) and fallback poll (`READ_POLL_MS`).
    pub async fn spawn_waiting(
        env: &TestEnv,
        nats_url: &str,
        projectors: bool,
        max_wait: Duration,
        poll: Duration,
    ) -> Self {
        let shutdown = Shutdown::new();
        let mut handles = Vec::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let projectors_base = format!("http://{}", listener.local_addr().expect("addr"));
        if projectors {
            let config = projectors::config::Config {
                addr: listener.local_addr().expect("addr"),
                infra: env.infra(nats_url),
                batch: 200,
                fetch_wait: Duration::from_millis(200),
                linger: Duration::from_millis(10),
            };
            handles.push(tokio::spawn(projectors::app::run(config, listener, shutdown.clone())));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let config = query_api::Config {
            addr: listener.local_addr().expect("addr"),
            infra: env.infra(nats_url),
            jwt: env.keys.clone(),
            max_wait,
            poll,
            bill_cache_entries: 10_000,
            bill_cache_max_age: Duration::from_secs(60),
        };
        handles.push(tokio::spawn(query_api::run(config, listener, shutdown.clone())));
        Self { base, projectors_base, client: reqwest::Client::new(), shutdown, handles }
    }

    pub async fn spawn(env: &TestEnv) -> Self {
        Self::spawn_with(env, &env.nats_url, true).await
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        for h in self.handles {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }

    /// `GET path` on the query API with `token`.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        let resp =
            self.client.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.expect("sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.bytes().await.expect("body").to_vec();
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }

    /// The bill once it reflects `version` (read-your-writes), asserting it caught up.
    pub async fn bill_at(&self, token: &str, order_id: &str, version: i64) -> Value {
        let reply =
            self.get(&format!("/v1/bills/{order_id}?min_version={version}&wait_ms=5000"), token).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["consistency"]["behind"], false, "bill still behind: {}", reply.body);
        reply.body
    }

    /// The query API's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = self.client.get(format!("{}/metrics", self.base)).send().await.expect("sent");
        resp.text().await.unwrap_or_default()
    }

    /// The projectors' `/metrics` text.
    pub async fn projector_metrics(&self) -> String {
        let resp = self.client.get(format!("{}/metrics", self.projectors_base)).send().await.expect("sent");
        resp.text().await.unwrap_or_default()
    }
}

/// A portal token for `merchant_id`.
pub fn portal_token(env: &TestEnv, merchant_id: uuid::Uuid) -> String {
    posctl::seed::staff_token(&env.keys, platform::auth::Role::Portal, "portal-user", Some(merchant_id))
        .expect("portal token")
}

/// Waits until every projection has applied the whole event stream (and the outbox is drained).
pub async fn caught_up(env: &TestEnv, nats_url: &str) {
    let nats = async_nats::connect(nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let stream = env.events_stream();
    crate::eventually(Duration::from_secs(30), "projections to catch up", || async {
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&env.pg).await.ok()?;
        let lags = projectors::app::lag(&env.pg, &js, &stream).await.ok()?;
        let stalled: Vec<_> = lags.iter().filter_map(|l| l.stalled.clone()).collect();
        assert!(stalled.is_empty(), "a projection stalled: {stalled:?}");
        (unpublished == 0 && lags.iter().all(|l| l.events == 0)).then_some(())
    })
    .await;
}

/// The workers process, in-process, delivering receipts to the given transports.
pub struct Workers {
    shutdown: Shutdown,
    handle: JoinHandle<anyhow::Result<()>>,
    pub receipt_dir: std::path::PathBuf,
}

impl Workers {
    pub async fn spawn(
        env: &TestEnv,
        smtp_url: Option<String>,
        webhook_url: Option<String>,
        max_attempts: u32,
    ) -> Self {
        Self::spawn_full(env, smtp_url, webhook_url, max_attempts, None).await
    }

    /// As [`Workers::spawn`], storing receipts in an S3-compatible store.
    pub async fn spawn_full(
        env: &TestEnv,
        smtp_url: Option<String>,
        webhook_url: Option<String>,
        max_attempts: u32,
        object_store: Option<workers::receipts::storage::ObjectStoreConfig>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let receipt_dir = std::env::temp_dir().join(format!("receipts-{}", env.stream_prefix));
        let config = workers::config::Config {
            addr: listener.local_addr().expect("addr"),
            infra: env.infra(&env.nats_url),
            retry: workers::config::RetryPolicy {
                max_attempts,
                first_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
            },
            receipts: workers::config::ReceiptsConfig {
                smtp_url,
                from: "SmartPOS <receipts@smartpos.example>".into(),
                webhook_url,
                dir: receipt_dir.clone(),
                object_store,
                timeout: Duration::from_secs(2),
            },
            settlements: workers::config::SettlementsConfig {
                dir: receipt_dir.join("settlements"),
                grace: Duration::ZERO,
                // Tests drive the scheduler with their own clock.
                every: Duration::ZERO,
            },
            reports_dir: receipt_dir.join("reports"),
        };
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(workers::app::run(config, listener, shutdown.clone()));
        Self { shutdown, handle, receipt_dir }
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
        let _ = std::fs::remove_dir_all(&self.receipt_dir);
    }
}

/// Creates an order of `unit_price` (standard rate) and pays it with `method`; returns (order id, version).
pub async fn sale(app: &TestApp, token: &str, unit_price: i64, method: &str) -> (String, i64) {
    let line = json!({"sku": "s", "name": "Set menu", "quantity": 1, "unit_price": unit_price, "tax_category": "standard"});
    let order = app.command("/v1/orders", token, &json!({"currency": "JPY", "lines": [line]})).await;
    assert_eq!(order.status, 201, "{}", order.body);
    let total = order.body["total"].as_i64().unwrap_or_default();
    let order_id = order.str("order_id");
    let payment = app.pay(token, &order_id, method, total, "automatic").await;
    let confirmed = app.approve(token, &payment.str("payment_id")).await;
    assert_eq!(confirmed.str("order_status"), "completed", "{}", confirmed.body);
    (order_id, confirmed.body["version"].as_i64().unwrap_or_default())
}
