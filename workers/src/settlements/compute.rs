//! Settling one store day from the write model.
//!
//! In one transaction (serialised per store and day by an advisory lock):
//! 1. a scheduled run books onto day D every capture, void and refund of the
//!    store dated D or earlier that no settlement booked yet: those of D are
//!    D's own, earlier ones arrived after their day was settled and become
//!    adjustments of D pointing at their original date. A closed day is never
//!    changed. A second scheduled run of D finds D settled and does nothing;
//! 2. a re-run recomputes from the rows D booked before and writes the next
//!    version; earlier versions stay as they were;
//! 3. the settlement row, its CSV file and a `settlement.completed` event (to
//!    the outbox) are written with the booking marks.

use anyhow::{Context, anyhow};
use chrono::{NaiveDate, Utc};
use events::domain::{PaymentMethod, SettlementCompleted, SettlementLine};
use events::{Currency, DomainEvent, Envelope, EventKind};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

use super::Reason;

#[derive(Debug, Clone)]
pub struct Settled {
    pub settlement_id: Uuid,
    pub version: i32,
    pub csv_path: PathBuf,
    pub event: SettlementCompleted,
}

/// Settles `store_id`'s `date`; `None` when a scheduled run finds it settled already.
pub async fn settle(
    pg: &PgPool,
    subject_prefix: &str,
    dir: &Path,
    store_id: Uuid,
    date: NaiveDate,
    reason: Reason,
) -> anyhow::Result<Option<Settled>> {
    let mut tx = pg.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 13))")
        .bind(format!("settle:{store_id}:{date}"))
        .execute(&mut *tx)
        .await?;
    let (merchant_id, currency): (Uuid, String) =
        sqlx::query_as("SELECT merchant_id, currency FROM stores WHERE id = $1")
            .bind(store_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| anyhow!("store {store_id} does not exist"))?;
    let currency = Currency::parse(currency.trim()).map_err(|e| anyhow!("store currency: {e}"))?;
    let latest: Option<i32> =
        sqlx::query_scalar("SELECT max(version) FROM settlements WHERE store_id = $1 AND business_date = $2")
            .bind(store_id)
            .bind(date)
            .fetch_one(&mut *tx)
            .await?;
    match (reason, latest) {
        (Reason::Scheduled, Some(_)) => return Ok(None),
        (Reason::Rerun, None) => {
            return Err(anyhow!("{date} of store {store_id} was never settled; nothing to re-run"));
        }
        (Reason::Scheduled, None) => book(&mut tx, store_id, date).await?,
        (Reason::Rerun, Some(_)) => {}
    }
    let version = latest.unwrap_or(0) + 1;
    let lines = lines(&mut tx, store_id, date).await?;
    let sum = |f: fn(&SettlementLine) -> i64| lines.iter().map(f).sum::<i64>();
    let settlement_id = Uuid::now_v7();
    let event = SettlementCompleted {
        settlement_id,
        store_id,
        business_date: date,
        version,
        currency,
        gross: sum(|l| l.gross),
        tips: sum(|l| l.tips),
        refunds: sum(|l| l.refunds),
        net: sum(|l| l.net),
        lines,
        completed_at: Utc::now(),
    };
    let csv_path = write_csv(dir, merchant_id, &event).await?;
    sqlx::query(
        "INSERT INTO settlements (id, merchant_id, store_id, business_date, version, reason, currency, lines,
                                  gross, tips, refunds, net, csv_path)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(settlement_id)
    .bind(merchant_id)
    .bind(store_id)
    .bind(date)
    .bind(version)
    .bind(reason.as_str())
    .bind(currency.code())
    .bind(sqlx::types::Json(&event.lines))
    .bind(event.gross)
    .bind(event.tips)
    .bind(event.refunds)
    .bind(event.net)
    .bind(csv_path.display().to_string())
    .execute(&mut *tx)
    .await?;
    publish(&mut tx, subject_prefix, merchant_id, &event).await?;
    tx.commit().await.context("committing the settlement")?;
    Ok(Some(Settled { settlement_id, version, csv_path, event }))
}

/// Marks every unbooked capture, void and refund of the store dated `date` or earlier as booked on `date`.
async fn book(conn: &mut PgConnection, store_id: Uuid, date: NaiveDate) -> Result<(), sqlx::Error> {
    for sql in [
        "UPDATE payments SET settled_on = $2
          WHERE store_id = $1 AND status = 'captured' AND captured_on <= $2 AND settled_on IS NULL",
        "UPDATE payments SET void_settled_on = $2
          WHERE store_id = $1 AND voided_on <= $2 AND void_settled_on IS NULL",
        "UPDATE refunds r SET settled_on = $2 FROM payments p
          WHERE p.id = r.payment_id AND p.store_id = $1 AND r.business_date <= $2 AND r.settled_on IS NULL",
    ] {
        sqlx::query(sql).bind(store_id).bind(date).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The settlement lines of what `date` booked: one per method, plus one per method and earlier date adjusted.
async fn lines(
    conn: &mut PgConnection,
    store_id: Uuid,
    date: NaiveDate,
) -> anyhow::Result<Vec<SettlementLine>> {
    let captures: Vec<(String, NaiveDate, i64, i64, i64)> = sqlx::query_as(
        "SELECT method, captured_on, count(*), sum(amount)::bigint, sum(tip)::bigint FROM payments
          WHERE store_id = $1 AND settled_on = $2 GROUP BY 1, 2",
    )
    .bind(store_id)
    .bind(date)
    .fetch_all(&mut *conn)
    .await?;
    let refunds: Vec<(String, NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT p.method, r.business_date, count(*), sum(r.amount)::bigint FROM refunds r JOIN payments p ON p.id = r.payment_id
          WHERE p.store_id = $1 AND r.settled_on = $2 GROUP BY 1, 2",
    )
    .bind(store_id)
    .bind(date)
    .fetch_all(&mut *conn)
    .await?;
    let voids: Vec<(String, NaiveDate, i64)> = sqlx::query_as(
        "SELECT method, voided_on, count(*) FROM payments WHERE store_id = $1 AND void_settled_on = $2 GROUP BY 1, 2",
    )
    .bind(store_id)
    .bind(date)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_key: Lines = BTreeMap::new();
    for (m, day, n, gross, tips) in captures {
        let l = line_for(&mut by_key, &m, day, date)?;
        (l.sales_count, l.gross, l.tips) = (n, gross, tips);
    }
    for (m, day, n, amount) in refunds {
        let l = line_for(&mut by_key, &m, day, date)?;
        (l.refund_count, l.refunds) = (n, amount);
    }
    for (m, day, n) in voids {
        line_for(&mut by_key, &m, day, date)?.void_count = n;
    }
    Ok(by_key
        .into_values()
        .map(|mut l| {
            l.net = l.gross + l.tips - l.refunds;
            l
        })
        .collect())
}

type Lines = BTreeMap<(Option<NaiveDate>, String), SettlementLine>;

/// The line of method `m` for rows dated `day`, booked on `date` (an adjustment when they differ).
fn line_for<'a>(
    lines: &'a mut Lines,
    m: &str,
    day: NaiveDate,
    date: NaiveDate,
) -> anyhow::Result<&'a mut SettlementLine> {
    let method: PaymentMethod = serde_json::from_value(serde_json::Value::String(m.to_owned()))
        .map_err(|_| anyhow!("unknown method {m}"))?;
    let adjustment_of = (day != date).then_some(day);
    Ok(lines.entry((adjustment_of, m.to_owned())).or_insert(SettlementLine {
        method,
        sales_count: 0,
        gross: 0,
        tips: 0,
        refund_count: 0,
        refunds: 0,
        void_count: 0,
        net: 0,
        adjustment_of,
    }))
}

/// `<dir>/<merchant>/<store>/<date>-v<version>.csv`, written whole then renamed into place.
async fn write_csv(dir: &Path, merchant_id: Uuid, s: &SettlementCompleted) -> anyhow::Result<PathBuf> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "store_id",
        "business_date",
        "version",
        "method",
        "adjustment_of",
        "currency",
        "sales_count",
        "gross",
        "tips",
        "refund_count",
        "refunds",
        "void_count",
        "net",
    ])?;
    for l in &s.lines {
        writer.write_record([
            s.store_id.to_string(),
            s.business_date.to_string(),
            s.version.to_string(),
            l.method.as_str().to_owned(),
            l.adjustment_of.map(|d| d.to_string()).unwrap_or_default(),
            s.currency.code().to_owned(),
            l.sales_count.to_string(),
            l.gross.to_string(),
            l.tips.to_string(),
            l.refund_count.to_string(),
            l.refunds.to_string(),
            l.void_count.to_string(),
            l.net.to_string(),
        ])?;
    }
    let bytes = writer.into_inner().map_err(|e| anyhow!("writing CSV: {e}"))?;
    let folder = dir.join(merchant_id.to_string()).join(s.store_id.to_string());
    tokio::fs::create_dir_all(&folder).await?;
    let path = folder.join(format!("{}-v{}.csv", s.business_date, s.version));
    let tmp = folder.join(format!(".{}.tmp", Uuid::new_v4().simple()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

async fn publish(
    conn: &mut PgConnection,
    prefix: &str,
    merchant_id: Uuid,
    s: &SettlementCompleted,
) -> anyhow::Result<()> {
    let event = DomainEvent::SettlementCompleted(s.clone());
    let envelope = Envelope {
        id: Uuid::now_v7(),
        kind: EventKind::SettlementCompleted,
        merchant_id,
        store_id: Some(s.store_id),
        device_id: None,
        subject: s.settlement_id,
        sequence: i64::from(s.version),
        time: s.completed_at,
        correlation_id: None,
        traceparent: None,
    };
    sqlx::query("INSERT INTO outbox (event_id, subject, headers, payload) VALUES ($1, $2, $3, $4)")
        .bind(envelope.id)
        .bind(events::subjects::event_subject(prefix, merchant_id, EventKind::SettlementCompleted))
        .bind(sqlx::types::Json(envelope.to_headers()))
        .bind(event.to_data())
        .execute(&mut *conn)
        .await?;
    // Wakes the relay at commit (rare writes: no trigger on the hot path).
    sqlx::query("SELECT pg_notify('outbox', '')").execute(&mut *conn).await?;
    Ok(())
}
