//! Merchants, stores and devices for demos and tests.
//!
//! `seed-demo` is idempotent: fixed ids, upserts, and a demo device secret
//! derived from the active signing key (HMAC), so every run prints the same
//! working credentials without the secret ever being stored in clear.

use anyhow::Context;
use chrono::Utc;
use command_api::auth::{Claims, ISSUER, JwtKeys, Role};
use command_api::routes::devices::token::hash_secret;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::{Uuid, uuid};

pub const DEMO_MERCHANT: Uuid = uuid!("0193a5b0-0000-7000-8000-00000000d001");
pub const DEMO_STORE: Uuid = uuid!("0193a5b0-0000-7000-8000-00000000d002");
pub const DEMO_DEVICES: [Uuid; 2] =
    [uuid!("0193a5b0-0000-7000-8000-00000000d003"), uuid!("0193a5b0-0000-7000-8000-00000000d004")];
/// Portal and operator tokens printed by `seed-demo` live this long.
pub const STAFF_TOKEN_SECS: i64 = 12 * 3600;

/// A merchant with one store, as tests and demos need them.
#[derive(Debug, Clone)]
pub struct MerchantSpec {
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub time_zone: String,
    /// `HH:MM`
    pub close_of_day: String,
    pub currency: String,
    pub tax_rounding: String,
    pub tax_rates_bp: Vec<(String, i32)>,
}

impl MerchantSpec {
    /// A Tokyo store in JPY with the Japanese standard (10%) and reduced (8%) rates.
    pub fn tokyo(merchant_id: Uuid, store_id: Uuid) -> Self {
        Self {
            merchant_id,
            store_id,
            name: "SmartPOS Demo Cafe".into(),
            time_zone: "Asia/Tokyo".into(),
            close_of_day: "04:00".into(),
            currency: "JPY".into(),
            tax_rounding: "down".into(),
            tax_rates_bp: vec![("standard".into(), 1000), ("reduced".into(), 800)],
        }
    }
}

/// Upserts the merchant, its store and its tax rates.
pub async fn upsert_merchant(pg: &PgPool, spec: &MerchantSpec) -> anyhow::Result<()> {
    let mut tx = pg.begin().await?;
    sqlx::query(
        "INSERT INTO merchants (id, name, tax_rounding) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, tax_rounding = EXCLUDED.tax_rounding",
    )
    .bind(spec.merchant_id)
    .bind(&spec.name)
    .bind(&spec.tax_rounding)
    .execute(&mut *tx)
    .await?;
    for (category, rate) in &spec.tax_rates_bp {
        sqlx::query(
            "INSERT INTO tax_rates (merchant_id, category, rate_bp) VALUES ($1, $2, $3)
             ON CONFLICT (merchant_id, category) DO UPDATE SET rate_bp = EXCLUDED.rate_bp",
        )
        .bind(spec.merchant_id)
        .bind(category)
        .bind(rate)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO stores (id, merchant_id, name, time_zone, close_of_day, currency)
         VALUES ($1, $2, $3, $4, $5::time, $6)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, time_zone = EXCLUDED.time_zone,
             close_of_day = EXCLUDED.close_of_day, currency = EXCLUDED.currency",
    )
    .bind(spec.store_id)
    .bind(spec.merchant_id)
    .bind(format!("{} #1", spec.name))
    .bind(&spec.time_zone)
    .bind(&spec.close_of_day)
    .bind(&spec.currency)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Upserts a device with `secret` (stored hashed).
pub async fn upsert_device(
    pg: &PgPool,
    spec: &MerchantSpec,
    device_id: Uuid,
    secret: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO devices (id, merchant_id, store_id, name, secret_hash) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, active = true",
    )
    .bind(device_id)
    .bind(spec.merchant_id)
    .bind(spec.store_id)
    .bind(format!("terminal {}", &device_id.to_string()[..8]))
    .bind(hash_secret(secret))
    .execute(pg)
    .await
    .context("upserting a device")?;
    Ok(())
}

/// The demo device's secret: HMAC-SHA256(active signing key, device id), hex.
pub fn derived_secret(keys: &JwtKeys, device_id: Uuid) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(keys.active_secret()).context("HMAC key")?;
    mac.update(b"smartpos-demo-device:");
    mac.update(device_id.as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

/// A portal (merchant-scoped) or operator token.
pub fn staff_token(
    keys: &JwtKeys,
    role: Role,
    subject: &str,
    merchant: Option<Uuid>,
) -> anyhow::Result<String> {
    let now = Utc::now().timestamp();
    keys.issue(&Claims {
        iss: ISSUER.into(),
        sub: subject.into(),
        role,
        mer: merchant,
        sto: None,
        iat: now,
        exp: now + STAFF_TOKEN_SECS,
    })
}

#[derive(Debug, Serialize)]
pub struct DemoDevice {
    pub device_id: Uuid,
    pub device_secret: String,
}

#[derive(Debug, Serialize)]
pub struct Demo {
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub device_id: Uuid,
    pub device_secret: String,
    pub portal_token: String,
    pub operator_token: String,
    pub devices: Vec<DemoDevice>,
    pub currency: String,
    pub time_zone: String,
}

/// Creates (or refreshes) the demo merchant, store, devices and tokens.
pub async fn demo(pg: &PgPool, keys: &JwtKeys) -> anyhow::Result<Demo> {
    let spec = MerchantSpec::tokyo(DEMO_MERCHANT, DEMO_STORE);
    upsert_merchant(pg, &spec).await?;
    let mut devices = Vec::new();
    for device_id in DEMO_DEVICES {
        let secret = derived_secret(keys, device_id)?;
        upsert_device(pg, &spec, device_id, &secret).await?;
        devices.push(DemoDevice { device_id, device_secret: secret });
    }
    Ok(Demo {
        merchant_id: spec.merchant_id,
        store_id: spec.store_id,
        device_id: devices[0].device_id,
        device_secret: devices[0].device_secret.clone(),
        portal_token: staff_token(keys, Role::Portal, "demo-portal", Some(spec.merchant_id))?,
        operator_token: staff_token(keys, Role::Operator, "demo-operator", None)?,
        devices,
        currency: spec.currency,
        time_zone: spec.time_zone,
    })
}
