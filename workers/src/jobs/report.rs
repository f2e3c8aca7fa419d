//! The report job: stream rows from the write model into a CSV file.
//!
//! Rows go from a PostgreSQL cursor to the file in 64 KiB chunks, so a report
//! of millions of rows never sits in memory. The file is written under a
//! temporary name and renamed when complete; the report row then says
//! `done` with its row count. A report already done is not produced again.

use anyhow::anyhow;
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use sqlx::PgPool;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::runtime::{Handler, Job, JobError};
use events::subjects::WorkKind;
use events::work::ReportJob;

const CHUNK: usize = 64 * 1024;

pub struct ReportHandler {
    pub pg: PgPool,
    pub dir: PathBuf,
}

impl Handler for ReportHandler {
    fn kind(&self) -> WorkKind {
        WorkKind::Report
    }

    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let item: ReportJob = serde_json::from_slice(&job.payload)
                .map_err(|e| JobError::Permanent(anyhow!("the report job does not parse: {e}")))?;
            match self.produce(item.report_id).await {
                Ok(()) => Ok(()),
                Err(Failure::Permanent(e)) => {
                    let _ = sqlx::query("UPDATE reports SET status = 'failed', error = $2, completed_at = now() WHERE id = $1")
                        .bind(item.report_id)
                        .bind(e.to_string())
                        .execute(&self.pg)
                        .await;
                    Err(JobError::Permanent(e))
                }
                Err(Failure::Transient(e)) => Err(JobError::Transient(e)),
            }
        })
    }
}

enum Failure {
    Transient(anyhow::Error),
    Permanent(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Transient(e.into())
    }
}

type Spec = (Uuid, Option<Uuid>, String, NaiveDate, NaiveDate, String);

type TransactionRow = (String, Uuid, Uuid, Uuid, String, String, NaiveDate, i64, i64, DateTime<Utc>);

type DailyRow = (Uuid, NaiveDate, String, String, i64, i64, i64, i64, i64);

impl ReportHandler {
    async fn produce(&self, report_id: Uuid) -> Result<(), Failure> {
        let spec: Option<Spec> = sqlx::query_as(
            "SELECT merchant_id, store_id, kind, date_from, date_to, status FROM reports WHERE id = $1",
        )
        .bind(report_id)
        .fetch_optional(&self.pg)
        .await?;
        let Some((merchant, store, kind, from, to, status)) = spec else {
            return Err(Failure::Permanent(anyhow!("report {report_id} does not exist")));
        };
        if status == "done" {
            return Ok(());
        }
        sqlx::query("UPDATE reports SET status = 'running' WHERE id = $1")
            .bind(report_id)
            .execute(&self.pg)
            .await?;
        // Absolute, so the query API (another process) can serve it.
        let folder = std::path::absolute(self.dir.join(merchant.to_string()))?;
        tokio::fs::create_dir_all(&folder).await?;
        let path = folder.join(format!("{report_id}.csv"));
        let tmp = folder.join(format!(".{report_id}.{}.tmp", Uuid::new_v4().simple()));
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut csv = csv::Writer::from_writer(Vec::with_capacity(CHUNK * 2));
        let mut rows: i64 = 0;
        match kind.as_str() {
            "transactions" => {
                csv.write_record([
                    "type",
                    "order_id",
                    "payment_id",
                    "store_id",
                    "method",
                    "currency",
                    "business_date",
                    "amount",
                    "tip",
                    "at",
                ])?;
                let mut stream = sqlx::query_as::<_, TransactionRow>(
                    "SELECT 'sale', p.order_id, p.id, p.store_id, p.method, p.currency::text, p.captured_on, p.amount, p.tip, p.updated_at
                       FROM payments p
                      WHERE p.merchant_id = $1 AND ($2::uuid IS NULL OR p.store_id = $2)
                        AND p.status = 'captured' AND p.captured_on BETWEEN $3 AND $4
                     UNION ALL
                     SELECT 'refund', r.order_id, r.payment_id, p.store_id, p.method, p.currency::text, r.business_date, -r.amount, 0, r.created_at
                       FROM refunds r JOIN payments p ON p.id = r.payment_id
                      WHERE p.merchant_id = $1 AND ($2::uuid IS NULL OR p.store_id = $2) AND r.business_date BETWEEN $3 AND $4
                     ORDER BY 7, 10",
                )
                .bind(merchant)
                .bind(store)
                .bind(from)
                .bind(to)
                .fetch(&self.pg);
                while let Some(row) = stream.next().await {
                    let (ty, order, payment, store, method, currency, date, amount, tip, at) = row?;
                    csv.write_record([
                        ty,
                        order.to_string(),
                        payment.to_string(),
                        store.to_string(),
                        method,
                        currency,
                        date.to_string(),
                        amount.to_string(),
                        tip.to_string(),
                        at.to_rfc3339(),
                    ])?;
                    rows += 1;
                    spill(&mut csv, &mut file, CHUNK).await?;
                }
            }
            "daily_sales" => {
                csv.write_record([
                    "store_id",
                    "business_date",
                    "method",
                    "currency",
                    "sales_count",
                    "gross",
                    "tips",
                    "refund_count",
                    "refunds",
                    "net",
                ])?;
                let mut stream = sqlx::query_as::<_, DailyRow>(
                    "WITH c AS (SELECT store_id, captured_on AS d, method, currency, count(*) AS n, sum(amount) AS gross, sum(tip) AS tips
                                  FROM payments WHERE merchant_id = $1 AND ($2::uuid IS NULL OR store_id = $2)
                                   AND status = 'captured' AND captured_on BETWEEN $3 AND $4 GROUP BY 1, 2, 3, 4),
                          r AS (SELECT p.store_id, r.business_date AS d, p.method, p.currency, count(*) AS n, sum(r.amount) AS refunds
                                  FROM refunds r JOIN payments p ON p.id = r.payment_id
                                 WHERE p.merchant_id = $1 AND ($2::uuid IS NULL OR p.store_id = $2) AND r.business_date BETWEEN $3 AND $4
                                 GROUP BY 1, 2, 3, 4)
                     SELECT COALESCE(c.store_id, r.store_id), COALESCE(c.d, r.d), COALESCE(c.method, r.method),
                            COALESCE(c.currency, r.currency)::text, COALESCE(c.n, 0), COALESCE(c.gross, 0)::bigint,
                            COALESCE(c.tips, 0)::bigint, COALESCE(r.n, 0), COALESCE(r.refunds, 0)::bigint
                       FROM c FULL JOIN r ON c.store_id = r.store_id AND c.d = r.d AND c.method = r.method AND c.currency = r.currency
                      ORDER BY 1, 2, 3",
                )
                .bind(merchant)
                .bind(store)
                .bind(from)
                .bind(to)
                .fetch(&self.pg);
                while let Some(row) = stream.next().await {
                    let (store, date, method, currency, n, gross, tips, rn, refunds) = row?;
                    csv.write_record([
                        store.to_string(),
                        date.to_string(),
                        method,
                        currency,
                        n.to_string(),
                        gross.to_string(),
                        tips.to_string(),
                        rn.to_string(),
                        refunds.to_string(),
                        (gross + tips - refunds).to_string(),
                    ])?;
                    rows += 1;
                    spill(&mut csv, &mut file, CHUNK).await?;
                }
            }
            other => return Err(Failure::Permanent(anyhow!("unknown report kind {other}"))),
        }
        spill(&mut csv, &mut file, 0).await?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, &path).await?;
        sqlx::query("UPDATE reports SET status = 'done', rows = $2, file_path = $3, completed_at = now() WHERE id = $1")
            .bind(report_id)
            .bind(rows)
            .bind(path.display().to_string())
            .execute(&self.pg)
            .await?;
        metrics::counter!("report_rows_total").increment(rows as u64);
        Ok(())
    }
}

/// Moves the CSV buffer to the file once it holds at least `threshold` bytes.
async fn spill(
    csv: &mut csv::Writer<Vec<u8>>,
    file: &mut tokio::fs::File,
    threshold: usize,
) -> anyhow::Result<()> {
    csv.flush()?;
    if csv.get_ref().len() >= threshold {
        let full = std::mem::replace(csv, csv::Writer::from_writer(Vec::with_capacity(CHUNK * 2)));
        let bytes = full.into_inner().map_err(|e| anyhow!("CSV buffer: {e}"))?;
        file.write_all(&bytes).await?;
    }
    Ok(())
}
