//! `posctl check`: do the read models agree exactly with the write model?
//!
//! First waits (up to `--wait`) until the relay has published every outbox
//! row and every projection has applied the whole event stream, so that
//! what is compared is a settled state. Then compares, row for row:
//! orders ↔ `rm_bills.bills` (status, amounts, version, scope, business
//! date, and paid/tips/refunded recomputed from the write model's payments
//! and refunds), payments ↔ `rm_bills.bill_payments`, refunds ↔
//! `rm_bills.bill_refunds`, captured payments ↔ `rm_sales.captures`, refunds
//! ↔ `rm_sales.refunds`. Any difference is listed (first ids) and the
//! command fails, so scripts and benchmarks can rely on its exit status.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use uuid::Uuid;

/// One comparison and what it found.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub name: &'static str,
    /// Rows on the write side that the comparison covered.
    pub rows: i64,
    pub mismatches: i64,
    /// The first mismatching ids.
    pub examples: Vec<Uuid>,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub settled: bool,
    pub comparisons: Vec<Comparison>,
}

impl CheckReport {
    pub fn agrees(&self) -> bool {
        self.settled && self.comparisons.iter().all(|c| c.mismatches == 0)
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        if !self.settled {
            out.push_str("NOT SETTLED: the outbox or a projection was still behind when the wait ran out\n");
        }
        for c in &self.comparisons {
            out.push_str(&format!(
                "{:<34} {:>9} rows  {:>6} mismatches{}\n",
                c.name,
                c.rows,
                c.mismatches,
                if c.examples.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  e.g. {}",
                        c.examples.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
                    )
                }
            ));
        }
        out.push_str(if self.agrees() {
            "read models agree with the write model\n"
        } else {
            "DISAGREEMENT\n"
        });
        out
    }
}

/// (name, rows covered, mismatching ids) queries. Each mismatch query is a
/// symmetric difference, so a row missing on either side counts.
const COMPARISONS: [(&str, &str, &str); 5] = [
    (
        "orders = rm_bills.bills",
        "SELECT count(*) FROM orders",
        "WITH w AS (
             SELECT o.id, o.merchant_id, o.store_id, o.status, o.currency::text AS currency, o.subtotal, o.tax,
                    o.total, o.business_date, o.version,
                    (SELECT COALESCE(sum(amount), 0) FROM payments p WHERE p.order_id = o.id AND p.status = 'captured') AS paid,
                    (SELECT COALESCE(sum(tip), 0) FROM payments p WHERE p.order_id = o.id AND p.status = 'captured') AS tips,
                    (SELECT COALESCE(sum(amount), 0) FROM refunds r WHERE r.order_id = o.id) AS refunded
               FROM orders o),
         r AS (
             SELECT order_id AS id, merchant_id, store_id, status, currency::text AS currency, subtotal, tax, total,
                    business_date, version, paid, tips, refunded
               FROM rm_bills.bills)
         SELECT id FROM ((SELECT * FROM w EXCEPT SELECT * FROM r) UNION ALL (SELECT * FROM r EXCEPT SELECT * FROM w)) d",
    ),
    (
        "payments = rm_bills.bill_payments",
        "SELECT count(*) FROM payments",
        "WITH w AS (SELECT id, order_id, merchant_id, method, status, capture_mode AS capture, amount, tip, refunded
                      FROM payments),
              r AS (SELECT payment_id AS id, order_id, merchant_id, method, status, capture, amount, tip, refunded
                      FROM rm_bills.bill_payments)
         SELECT id FROM ((SELECT * FROM w EXCEPT SELECT * FROM r) UNION ALL (SELECT * FROM r EXCEPT SELECT * FROM w)) d",
    ),
    (
        "refunds = rm_bills.bill_refunds",
        "SELECT count(*) FROM refunds",
        "WITH w AS (SELECT id, payment_id, order_id, amount FROM refunds),
              r AS (SELECT refund_id AS id, payment_id, order_id, amount FROM rm_bills.bill_refunds)
         SELECT id FROM ((SELECT * FROM w EXCEPT SELECT * FROM r) UNION ALL (SELECT * FROM r EXCEPT SELECT * FROM w)) d",
    ),
    (
        "captured payments = rm_sales.captures",
        "SELECT count(*) FROM payments WHERE status = 'captured'",
        "WITH w AS (SELECT id, merchant_id, store_id, method, currency::text AS currency, amount, tip
                      FROM payments WHERE status = 'captured'),
              r AS (SELECT payment_id AS id, merchant_id, store_id, method, currency::text AS currency, amount, tip
                      FROM rm_sales.captures)
         SELECT id FROM ((SELECT * FROM w EXCEPT SELECT * FROM r) UNION ALL (SELECT * FROM r EXCEPT SELECT * FROM w)) d",
    ),
    (
        "refunds = rm_sales.refunds",
        "SELECT count(*) FROM refunds",
        "WITH w AS (SELECT r.id, r.payment_id, p.merchant_id, p.store_id, p.method, r.amount
                      FROM refunds r JOIN payments p ON p.id = r.payment_id),
              s AS (SELECT refund_id AS id, payment_id, merchant_id, store_id, method, amount FROM rm_sales.refunds)
         SELECT id FROM ((SELECT * FROM w EXCEPT SELECT * FROM s) UNION ALL (SELECT * FROM s EXCEPT SELECT * FROM w)) d",
    ),
];

/// Waits for the system to settle (at most `wait`), then compares.
pub async fn run(infra: &platform::InfraSettings, wait: Duration) -> anyhow::Result<CheckReport> {
    let pg = crate::db::connect(&infra.database_url).await?;
    let settled = settle(&pg, infra, wait).await?;
    let mut comparisons = Vec::new();
    for (name, count, mismatches) in COMPARISONS {
        let rows: i64 = sqlx::query_scalar(count).fetch_one(&pg).await.with_context(|| name)?;
        let ids: Vec<Uuid> = sqlx::query_scalar(mismatches).fetch_all(&pg).await.with_context(|| name)?;
        let mut examples = ids.clone();
        examples.sort();
        examples.dedup();
        let mismatches = examples.len() as i64;
        examples.truncate(5);
        comparisons.push(Comparison { name, rows, mismatches, examples });
    }
    pg.close().await;
    Ok(CheckReport { settled, comparisons })
}

/// Waits (at most `wait`) until the relay has published every outbox row
/// and every projection has applied the whole event stream; `false` if the
/// wait ran out first. The load generator waits on it between steps, so a
/// step never inherits the backlog of the one before.
pub async fn settle(
    pg: &sqlx::PgPool,
    infra: &platform::InfraSettings,
    wait: Duration,
) -> anyhow::Result<bool> {
    let nats = async_nats::connect(&infra.nats_url).await.context("connecting to NATS")?;
    let js = async_nats::jetstream::new(nats);
    let events = format!("{}_EVENTS", infra.stream_prefix);
    let deadline = Instant::now() + wait;
    loop {
        let (backlog, _) = command_api::relay::backlog(pg).await?;
        let lags = projectors::app::lag(pg, &js, &events).await?;
        let behind: i64 = lags.iter().map(|l| l.events).sum();
        if backlog == 0 && behind == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        eprintln!("waiting to settle: {backlog} outbox rows unpublished, projections {behind} events behind");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
