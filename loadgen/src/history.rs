//! History for the flat-cost measurement: the rows ten million events leave
//! behind, bulk-loaded into the benchmark fleet's tables.
//!
//! Sending ten million events through the API at this machine's rate would
//! take hours, so the rows are written directly, as the live system would
//! have left them: per sale (five events: order created, payment created,
//! authorized, captured, order completed) one completed order, one captured
//! card payment, three idempotency records (order, payment, confirmation),
//! the bill, its tender and the sales fact. Sales are spread over the 30
//! days before now, over every merchant, store and terminal of the fleet,
//! with time-ordered ids like the live ones (UUIDv7), so new orders land at
//! the indexes' right edges as they would. Idempotency records are dated
//! within their 48-hour lifetime (the janitor would delete older ones), and
//! published outbox rows are left out (the relay deletes each once it is on the stream).
//! None of it is on the event stream: a rebuild after this would drop it.

use std::time::Instant;

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

/// Events per sale: order created, payment created, authorized, captured, order completed.
pub const EVENTS_PER_SALE: u64 = 5;
const CHUNK: i64 = 50_000;
/// The tables the history fills.
const TABLES: [&str; 6] = [
    "orders",
    "payments",
    "idempotency_keys",
    "rm_bills.bills",
    "rm_bills.bill_payments",
    "rm_sales.captures",
];

const LINES: &str = r#"[{"sku":"coffee","name":"Coffee","quantity":2,"unit_price":450,"tax_category":"standard","tax_rate_bp":1000,"line_total":900},{"sku":"bagel","name":"Bagel","quantity":1,"unit_price":300,"tax_category":"reduced","tax_rate_bp":800,"line_total":300}]"#;
const TAXES: &str = r#"[{"tax_category":"reduced","tax_rate_bp":800,"taxable":300,"tax":24},{"tax_category":"standard","tax_rate_bp":1000,"taxable":900,"tax":90}]"#;

/// The fleet the history belongs to: merchants (one store each) and their terminals.
pub struct Owners {
    pub merchants: Vec<Uuid>,
    pub stores: Vec<Uuid>,
    /// Terminal `d` of merchant `m` is `devices[m * per_store + d]`.
    pub devices: Vec<Uuid>,
    pub per_store: usize,
}

/// Loads `events` worth of sales (rounded down to whole sales), showing progress.
pub async fn load(pg: &PgPool, owners: &Owners, events: u64) -> anyhow::Result<u64> {
    let sales = (events / EVENTS_PER_SALE) as i64;
    let started = Instant::now();
    let mut done = 0i64;
    while done < sales {
        let upto = (done + CHUNK).min(sales);
        chunk(pg, owners, done, upto, sales)
            .await
            .with_context(|| format!("loading sales {done}..{upto}"))?;
        done = upto;
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "[loadgen] history: {done}/{sales} sales ({:.0}%), {} events, {rate:.0} sales/s, ETA {:.0}s",
            done as f64 * 100.0 / sales as f64,
            done as u64 * EVENTS_PER_SALE,
            (sales - done) as f64 / rate.max(1.0)
        );
    }
    // A database that grew over months has been vacuumed and analyzed along
    // the way; one loaded in minutes has not, and autovacuum's insert-driven
    // passes over gigabytes would otherwise run during the measurement.
    for table in TABLES {
        eprintln!("[loadgen] history: vacuuming and analyzing {table} ...");
        sqlx::query(&format!("VACUUM (ANALYZE) {table}")).execute(pg).await?;
    }
    Ok(sales as u64 * EVENTS_PER_SALE)
}

/// Sales `from..upto` of `total`, in one transaction.
async fn chunk(pg: &PgPool, owners: &Owners, from: i64, upto: i64, total: i64) -> anyhow::Result<()> {
    let mut tx = pg.begin().await?;
    // g(i, m, d, ts, day, oid, pid): sale i by terminal d of merchant m at ts.
    let sale = format!(
        "WITH g AS (
           SELECT i, m, d, ts, (ts AT TIME ZONE 'Asia/Tokyo')::date AS day,
                  (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7a008a00' || lpad(to_hex(i), 12, '0'))::uuid AS oid,
                  (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7b008b00' || lpad(to_hex(i), 12, '0'))::uuid AS pid
             FROM (SELECT i, i % {merchants} AS m, (i / {merchants}) % {per_store} AS d,
                          now() - interval '30 days' + (i::float8 / {total}) * interval '30 days' - interval '1 minute' AS ts
                     FROM generate_series($1::bigint, $2::bigint - 1) AS i) s)",
        merchants = owners.merchants.len(),
        per_store = owners.per_store,
    );
    let who = "($3::uuid[])[1 + m] AS merchant_id, ($4::uuid[])[1 + m] AS store_id, \
               ($5::uuid[])[1 + m * $6::int + d] AS device_id";
    let statements = [
        format!(
            "{sale}, w AS (SELECT g.*, {who} FROM g)
             INSERT INTO orders (id, merchant_id, store_id, device_id, currency, status, lines, taxes, subtotal, tax,
                                 total, business_date, version, created_at, updated_at)
             SELECT oid, merchant_id, store_id, device_id, 'JPY', 'completed', $7::jsonb, $8::jsonb, 1200, 114, 1314,
                    day, 5, ts, ts FROM w"
        ),
        format!(
            "{sale}, w AS (SELECT g.*, {who} FROM g)
             INSERT INTO payments (id, order_id, merchant_id, store_id, device_id, method, status, capture_mode,
                                   currency, amount, tip, business_date, created_at, updated_at, captured_on, settled_on)
             SELECT pid, oid, merchant_id, store_id, device_id, 'card', 'captured', 'automatic', 'JPY', 1314, 0,
                    day, ts, ts, day, day FROM w"
        ),
        format!(
            "{sale}, w AS (SELECT g.*, {who} FROM g)
             INSERT INTO idempotency_keys (caller, key, request_hash, status_code, response_body, created_at)
             SELECT 'device:' || device_id, 'history-' || i || '-' || step, sha256(('history-' || i || step)::bytea),
                    201, convert_to(repeat('x', 300), 'UTF8'),
                    now() - interval '47 hours' + (i::float8 / {total}) * interval '47 hours'
               FROM w, (VALUES ('order'), ('payment'), ('confirm')) AS s(step)"
        ),
        format!(
            "{sale}, w AS (SELECT g.*, {who} FROM g)
             INSERT INTO rm_bills.bills (order_id, merchant_id, store_id, device_id, currency, status, lines, taxes,
                                         subtotal, tax, total, paid, tips, refunded, business_date, created_at,
                                         updated_at, version)
             SELECT oid, merchant_id, store_id, device_id, 'JPY', 'completed', $7::jsonb, $8::jsonb, 1200, 114, 1314,
                    1314, 0, 0, day, ts, ts, 5 FROM w"
        ),
        format!(
            "{sale}, w AS (SELECT g.*, {who} FROM g)
             INSERT INTO rm_bills.bill_payments (payment_id, order_id, merchant_id, method, status, capture, amount,
                                                 tip, refunded, created_at, updated_at)
             SELECT pid, oid, merchant_id, 'card', 'captured', 'automatic', 1314, 0, 0, ts, ts FROM w"
        ),
        format!(
            "{sale}, w AS (SELECT g.*, {who} FROM g)
             INSERT INTO rm_sales.captures (payment_id, merchant_id, store_id, method, currency, business_date,
                                            amount, tip, captured_at)
             SELECT pid, merchant_id, store_id, 'card', 'JPY', day, 1314, 0, ts FROM w"
        ),
    ];
    for sql in &statements {
        let query = sqlx::query(sql)
            .bind(from)
            .bind(upto)
            .bind(&owners.merchants)
            .bind(&owners.stores)
            .bind(&owners.devices)
            .bind(owners.per_store as i32);
        // Only orders and bills carry the lines and taxes ($7, $8).
        let query = if sql.contains("$7") { query.bind(LINES).bind(TAXES) } else { query };
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
