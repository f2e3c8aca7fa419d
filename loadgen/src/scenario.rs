//! Scenario 1 of the platform: what terminals and the portal do, in its mix.
//!
//! Every arrival is one operation, chosen in a fixed interleaved cycle of ten:
//! 4 order creations, 3 payment confirmations, 2 bill retrievals and 1 device
//! token request. A payment confirmation is what a terminal does to take
//! payment for an open order: `POST /v1/payments` for the order's total, then
//! `POST /v1/payments/{id}/confirm` with the approval, which completes the
//! order (both are measured, as `payment_create` and `payment_confirm`). Bills
//! are read through the query API with the merchant's portal token. One order
//! creation in every `lag_every` cycles is followed until the projection
//! shows it: command answered → bill visible, asked of the query API with
//! `min_version`, which answers as soon as the projection has it (so the probe
//! costs a request per sample; polling every few milliseconds from here, it
//! once read more bills than the scenario did). Orders go to
//! random devices of the fleet, so per-device and per-merchant rate limits
//! see a realistic spread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde::Deserialize;
use uuid::Uuid;

use crate::fleet::Fleet;
use crate::stats::{Category, Recorder};

const CYCLE: [Op; 10] = [
    Op::Order,
    Op::Payment,
    Op::Bill,
    Op::Order,
    Op::Payment,
    Op::Token,
    Op::Order,
    Op::Bill,
    Op::Payment,
    Op::Order,
];
const ORDER_BODY: &str = r#"{"currency":"JPY","lines":[{"sku":"coffee","name":"Coffee","quantity":2,"unit_price":450,"tax_category":"standard"},{"sku":"bagel","name":"Bagel","quantity":1,"unit_price":300,"tax_category":"reduced"}]}"#;
const KNOWN_ORDERS: usize = 20_000;
const OPEN_ORDERS: usize = 20_000;

/// What the arrivals do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// The platform's scenario 1 (4 orders, 3 payments, 2 bill reads, 1 token in ten).
    Scenario1,
    /// Bill reads only, over orders written beforehand: the read side's own capacity.
    Reads,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Order,
    Payment,
    Bill,
    Token,
}

struct OpenOrder {
    device: usize,
    order_id: Uuid,
    total: i64,
}

struct Known {
    order_id: Uuid,
    merchant: usize,
    at: Instant,
}

pub struct Scenario {
    client: Client,
    command_url: String,
    query_url: String,
    fleet: Fleet,
    tokens: Vec<RwLock<(String, Instant)>>,
    open: Mutex<VecDeque<OpenOrder>>,
    known: Mutex<VecDeque<Known>>,
    next_op: AtomicU64,
    next_token_device: AtomicUsize,
    rng: AtomicU64,
    lag_every: u64,
    mix: Mix,
}

#[derive(Deserialize)]
struct OrderAnswer {
    order_id: Uuid,
    total: i64,
    version: i64,
}

#[derive(Deserialize)]
struct PaymentAnswer {
    payment_id: Uuid,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

#[derive(Deserialize)]
struct BillAnswer {
    version: i64,
}

/// The status of an answer (0 for a transport error) and, when it is
/// `expected`, its decoded body; any other body is read and dropped.
async fn answer<T: serde::de::DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
    expected: u16,
) -> (u16, Option<T>) {
    let Ok(a) = sent else { return (0, None) };
    let status = a.status().as_u16();
    if status == expected {
        (status, a.json::<T>().await.ok())
    } else {
        let _ = a.bytes().await;
        (status, None)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scenario {
    /// The query API's bill cache counters, if its `/metrics` has them.
    pub async fn bill_cache_counts(&self) -> Option<crate::stats::BillCacheCounts> {
        let resp = self.client.get(format!("{}/metrics", self.query_url)).send().await.ok()?;
        crate::stats::BillCacheCounts::parse(&resp.text().await.ok()?)
    }

    pub fn new(
        client: Client,
        command_url: &str,
        query_url: &str,
        fleet: Fleet,
        lag_every: u64,
        mix: Mix,
    ) -> Self {
        let stale = Instant::now().checked_sub(Duration::from_secs(3600)).unwrap_or_else(Instant::now);
        Self {
            tokens: fleet.devices.iter().map(|_| RwLock::new((String::new(), stale))).collect(),
            client,
            command_url: command_url.trim_end_matches('/').to_owned(),
            query_url: query_url.trim_end_matches('/').to_owned(),
            fleet,
            open: Mutex::new(VecDeque::new()),
            known: Mutex::new(VecDeque::new()),
            next_op: AtomicU64::new(0),
            next_token_device: AtomicUsize::new(0),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            lag_every: lag_every.max(1),
            mix,
        }
    }

    /// splitmix64 over a shared counter: cheap, good enough to pick devices and orders.
    fn random(&self) -> u64 {
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn token(&self, device: usize) -> String {
        self.tokens[device].read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// Exchanges the secret of every device whose token is older than `max_age`
    /// (not measured: set-up and upkeep, so 90-second tokens never expire mid-run).
    pub async fn refresh_stale_tokens(&self, max_age: Duration) -> anyhow::Result<()> {
        let stale: Vec<usize> = (0..self.fleet.devices.len())
            .filter(|&i| self.tokens[i].read().unwrap_or_else(|p| p.into_inner()).1.elapsed() > max_age)
            .collect();
        for chunk in stale.chunks(32) {
            let results = futures_util::future::join_all(chunk.iter().map(|&i| self.exchange(i))).await;
            for (i, status) in chunk.iter().zip(results) {
                anyhow::ensure!(
                    status == 200,
                    "device {} token exchange answered {status}",
                    self.fleet.devices[*i].id
                );
            }
        }
        Ok(())
    }

    /// Trades the device's secret for a token and keeps it; the answer's status.
    async fn exchange(&self, device: usize) -> u16 {
        let d = &self.fleet.devices[device];
        let body = serde_json::json!({ "device_id": d.id, "device_secret": d.secret });
        let sent =
            self.client.post(format!("{}/v1/devices/token", self.command_url)).json(&body).send().await;
        match answer::<TokenAnswer>(sent, 200).await {
            (200, Some(t)) => {
                *self.tokens[device].write().unwrap_or_else(|p| p.into_inner()) =
                    (t.access_token, Instant::now());
                200
            }
            // A 200 whose body does not decode is a failure too.
            (200, None) => 0,
            (status, _) => status,
        }
    }

    /// Runs the next operation of the cycle, scheduled at `scheduled`.
    pub async fn run_one(self: Arc<Self>, recorder: Arc<Recorder>, scheduled: Instant) {
        let n = self.next_op.fetch_add(1, Ordering::Relaxed);
        let op = match self.mix {
            Mix::Scenario1 => CYCLE[(n % CYCLE.len() as u64) as usize],
            Mix::Reads => Op::Bill,
        };
        match op {
            Op::Order => self.create_order(&recorder, scheduled, n).await,
            Op::Payment => {
                let next = lock(&self.open).pop_front();
                match next {
                    Some(order) => self.pay(&recorder, scheduled, order).await,
                    // Nothing to pay yet (first instants of a run): the terminal rings up an order.
                    None => self.create_order(&recorder, scheduled, n).await,
                }
            }
            Op::Bill => {
                if !self.read_bill(&recorder, scheduled).await {
                    // No order answered yet (first instants of a run): ring one up instead.
                    self.create_order(&recorder, scheduled, n).await;
                }
            }
            Op::Token => {
                let device =
                    self.next_token_device.fetch_add(1, Ordering::Relaxed) % self.fleet.devices.len();
                let status = self.exchange(device).await;
                recorder.record(Category::DeviceToken, status, scheduled.elapsed());
            }
        }
    }

    async fn create_order(self: &Arc<Self>, recorder: &Arc<Recorder>, scheduled: Instant, n: u64) {
        let device = (self.random() % self.fleet.devices.len() as u64) as usize;
        let sent = self
            .client
            .post(format!("{}/v1/orders", self.command_url))
            .bearer_auth(self.token(device))
            .header("idempotency-key", Uuid::new_v4().to_string())
            .header("content-type", "application/json")
            .body(ORDER_BODY)
            .send()
            .await;
        let (status, order) = answer::<OrderAnswer>(sent, 201).await;
        recorder.record(Category::OrderCreate, status, scheduled.elapsed());
        let Some(order) = order else { return };
        let merchant = self.fleet.devices[device].merchant;
        {
            let mut known = lock(&self.known);
            if known.len() >= KNOWN_ORDERS {
                known.pop_front();
            }
            known.push_back(Known { order_id: order.order_id, merchant, at: Instant::now() });
        }
        {
            let mut open = lock(&self.open);
            if open.len() < OPEN_ORDERS {
                open.push_back(OpenOrder { device, order_id: order.order_id, total: order.total });
            }
        }
        if n.is_multiple_of(self.lag_every * CYCLE.len() as u64) {
            let (this, recorder) = (self.clone(), recorder.clone());
            tokio::spawn(async move {
                this.watch_projection(&recorder, order.order_id, merchant, order.version).await;
            });
        }
    }

    /// Writes `orders` orders (unmeasured) for a read-only mix to read, and waits for them to be projected.
    pub async fn prime(self: &Arc<Self>, orders: usize) {
        let recorder = Arc::new(Recorder::default());
        for chunk in 0..orders.div_ceil(32) {
            let batch =
                (0..32.min(orders - chunk * 32)).map(|_| self.create_order(&recorder, Instant::now(), 1));
            futures_util::future::join_all(batch).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    /// Asks for the bill at `version` and lets the query API wait for it
    /// (`min_version`: it answers once the projection announces the order at
    /// that version, up to its own time limit), asking again until 5 s have
    /// passed. One request per sample at any lag below the server's limit:
    /// the probe adds next to nothing to the load it measures (polling from
    /// here, it read more bills than the scenario did).
    async fn watch_projection(&self, recorder: &Recorder, order_id: Uuid, merchant: usize, version: i64) {
        let answered = Instant::now();
        let deadline = answered + Duration::from_secs(5);
        let token = &self.fleet.merchants[merchant].portal_token;
        loop {
            let asked = Instant::now();
            let Some(left) = deadline.checked_duration_since(asked).filter(|d| !d.is_zero()) else { break };
            let url = format!(
                "{}/v1/bills/{order_id}?min_version={version}&wait_ms={}",
                self.query_url,
                left.as_millis().max(1)
            );
            if let Ok(a) = self.client.get(&url).bearer_auth(token).send().await
                && a.status().as_u16() == 200
                && a.json::<BillAnswer>().await.is_ok_and(|b| b.version >= version)
            {
                recorder.lag(Some(answered.elapsed()));
                return;
            }
            // Not there within the server's wait: ask again, never faster than every 50 ms.
            tokio::time::sleep_until((asked + Duration::from_millis(50)).into()).await;
        }
        recorder.lag(None);
    }

    async fn pay(&self, recorder: &Recorder, scheduled: Instant, order: OpenOrder) {
        let token = self.token(order.device);
        let body = serde_json::json!({ "order_id": order.order_id, "method": "card", "amount": order.total });
        let sent = self
            .client
            .post(format!("{}/v1/payments", self.command_url))
            .bearer_auth(&token)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await;
        let (status, payment) = answer::<PaymentAnswer>(sent, 201).await;
        recorder.record(Category::PaymentCreate, status, scheduled.elapsed());
        let Some(payment) = payment else { return };
        let started = Instant::now();
        let sent = self
            .client
            .post(format!("{}/v1/payments/{}/confirm", self.command_url, payment.payment_id))
            .bearer_auth(&token)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .header("content-type", "application/json")
            .body(r#"{"result":"approved","auth_code":"LOADGEN"}"#)
            .send()
            .await;
        let (status, _) = answer::<serde::de::IgnoredAny>(sent, 0).await;
        recorder.record(Category::PaymentConfirm, status, started.elapsed());
    }

    /// Reads a known bill; false when no order is known yet.
    async fn read_bill(&self, recorder: &Recorder, scheduled: Instant) -> bool {
        let pick = {
            let known = lock(&self.known);
            if known.is_empty() {
                None
            } else {
                // Orders answered at least a second ago: the projection has them.
                let settled = known.partition_point(|k| k.at.elapsed() > Duration::from_secs(1)).max(1);
                let k = &known[(self.random() % settled as u64) as usize];
                Some((k.order_id, k.merchant))
            }
        };
        let Some((order_id, merchant)) = pick else { return false };
        let sent = self
            .client
            .get(format!("{}/v1/bills/{order_id}", self.query_url))
            .bearer_auth(&self.fleet.merchants[merchant].portal_token)
            .send()
            .await;
        let (status, _) = answer::<serde::de::IgnoredAny>(sent, 0).await;
        recorder.record(Category::BillGet, status, scheduled.elapsed());
        true
    }
}
