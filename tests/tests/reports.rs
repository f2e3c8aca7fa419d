//! Reports: requested on the command API, produced by the real workers
//! process as streamed CSV, read back on the query API; a report over tens
//! of thousands of rows has correct totals and bounded memory.

use chrono::{Days, Utc};
use serde_json::json;
use smartpos_tests::nats_server::free_port;
use smartpos_tests::read_side::portal_token;
use smartpos_tests::{ReadSide, TestApp, TestEnv, eventually, process};
use std::time::Duration;

const SALES: i64 = 60_000;

/// `SALES` captured payments over ten days, every tenth refunded 50, written straight into the write model.
async fn seed(
    env: &TestEnv,
    merchant: uuid::Uuid,
    store: uuid::Uuid,
    device: uuid::Uuid,
    first_day: chrono::NaiveDate,
) {
    sqlx::query(
        "INSERT INTO orders (id, merchant_id, store_id, device_id, currency, status, lines, taxes, subtotal, tax, total,
                             business_date, version, created_at, updated_at)
         SELECT md5('o' || i)::uuid, $1, $2, $3, 'JPY', 'completed', '[]', '[]', 1000 + i % 500, 0, 1000 + i % 500,
                $4::date + (i % 10)::int, 4, now(), now()
           FROM generate_series(1, $5) AS i",
    )
    .bind(merchant)
    .bind(store)
    .bind(device)
    .bind(first_day)
    .bind(SALES)
    .execute(&env.pg)
    .await
    .expect("orders");
    sqlx::query(
        "INSERT INTO payments (id, order_id, merchant_id, store_id, device_id, method, status, capture_mode, currency,
                               amount, tip, business_date, captured_on, created_at, updated_at)
         SELECT md5('p' || i)::uuid, md5('o' || i)::uuid, $1, $2, $3, (ARRAY['cash','card','qr','emoney'])[1 + i % 4],
                'captured', 'automatic', 'JPY', 1000 + i % 500, i % 3, $4::date + (i % 10)::int, $4::date + (i % 10)::int, now(), now()
           FROM generate_series(1, $5) AS i",
    )
    .bind(merchant)
    .bind(store)
    .bind(device)
    .bind(first_day)
    .bind(SALES)
    .execute(&env.pg)
    .await
    .expect("payments");
    sqlx::query(
        "INSERT INTO refunds (id, payment_id, order_id, amount, status, created_at, business_date)
         SELECT md5('r' || i)::uuid, md5('p' || i)::uuid, md5('o' || i)::uuid, 50, 'succeeded', now(), $1::date + (i % 10)::int
           FROM generate_series(10, $2, 10) AS i",
    )
    .bind(first_day)
    .bind(SALES)
    .execute(&env.pg)
    .await
    .expect("refunds");
}

/// A memory figure of process `pid` from `/proc/<pid>/status` (`VmRSS:` now, `VmHWM:` its peak), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_report_over_tens_of_thousands_of_orders_streams_with_bounded_memory_and_exact_totals() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn_with(&env, &env.nats_url, false).await;
    let m = env.merchant(1).await;
    let portal = portal_token(&env, m.merchant_id);
    let first = Utc::now().date_naive().checked_sub_days(Days::new(20)).expect("date");
    let last = first.checked_add_days(Days::new(9)).expect("date");
    seed(&env, m.merchant_id, m.store_id, m.devices[0].0, first).await;

    let dir = std::env::temp_dir().join(format!("reports-{}", env.stream_prefix));
    let workers_port = free_port();
    let mut workers = process::spawn(
        "workers",
        &[
            ("DATABASE_URL", env.database_url.clone()),
            ("NATS_URL", env.nats_url.clone()),
            ("REDIS_URL", env.redis_url.clone()),
            ("NATS_SUBJECT_PREFIX", env.subject_prefix.clone()),
            ("NATS_STREAM_PREFIX", env.stream_prefix.clone()),
            ("WORKERS_ADDR", format!("127.0.0.1:{workers_port}")),
            ("REPORT_DIR", dir.display().to_string()),
            ("SETTLEMENT_SCHEDULE_SECS", "0".to_owned()),
        ],
    );
    let pid = workers.id().expect("running");
    eventually(Duration::from_secs(20), "the workers to be ready", || async {
        let r = read.client.get(format!("http://127.0.0.1:{workers_port}/ready")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let idle = status_kib(pid, "VmRSS:");

    let request = json!({"kind": "transactions", "store_id": m.store_id, "from": first, "to": last});
    let accepted = app.post("/v1/reports", Some(&portal), Some("report-1"), &request).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = accepted.str("report_id");
    let status = eventually(Duration::from_secs(60), "the report to be produced", || async {
        let r = read.get(&format!("/v1/reports/{id}"), &portal).await;
        (r.body["status"] == "done").then_some(r)
    })
    .await;
    let refunds = SALES / 10;
    assert_eq!(status.body["rows"], SALES + refunds);
    let peak = status_kib(pid, "VmHWM:");
    eprintln!("workers RSS ready {idle} KiB, peak after a {} row report {peak} KiB", SALES + SALES / 10);

    let download = read
        .client
        .get(format!("{}/v1/reports/{id}/download", read.base))
        .bearer_auth(&portal)
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), 200);
    assert!(download.headers()["content-type"].to_str().unwrap_or_default().starts_with("text/csv"));
    let body = download.bytes().await.expect("body");
    let mut csv = csv::Reader::from_reader(body.as_ref());
    let (mut rows, mut amount) = (0i64, 0i64);
    for record in csv.records() {
        let record = record.expect("a CSV row");
        amount += record[7].parse::<i64>().expect("amount");
        rows += 1;
    }
    let expected: i64 = sqlx::query_scalar(
        "SELECT (SELECT sum(amount) FROM payments WHERE store_id = $1)::bigint - (SELECT sum(amount) FROM refunds)::bigint",
    )
    .bind(m.store_id)
    .fetch_one(&env.pg)
    .await
    .expect("sum");
    assert_eq!((rows, amount), (SALES + refunds, expected));
    // Streaming keeps the worker small: the whole report is several MiB of CSV.
    assert!(body.len() > 6 * 1024 * 1024, "the report is only {} bytes", body.len());
    // Measured as growth over the ready worker's own size, so that the
    // allocator's baseline (mimalloc keeps arenas) does not count: holding the
    // report's rows or its CSV would add tens of MiB.
    assert!(idle > 0 && peak < idle + 12 * 1024, "the worker grew from {idle} to {peak} KiB");

    // Daily sales: one row per day and method, adding up to the same money.
    let daily = app
        .post(
            "/v1/reports",
            Some(&portal),
            Some("report-2"),
            &json!({"kind": "daily_sales", "from": first, "to": last}),
        )
        .await;
    let daily_id = daily.str("report_id");
    eventually(Duration::from_secs(30), "the daily report", || async {
        (read.get(&format!("/v1/reports/{daily_id}"), &portal).await.body["status"] == "done").then_some(())
    })
    .await;
    let text = read
        .client
        .get(format!("{}/v1/reports/{daily_id}/download", read.base))
        .bearer_auth(&portal)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let mut csv = csv::Reader::from_reader(text.as_bytes());
    let (mut lines, mut net) = (0, 0i64);
    for record in csv.records() {
        let record = record.expect("row");
        net += record[9].parse::<i64>().expect("net");
        lines += 1;
    }
    let tips: i64 =
        sqlx::query_scalar("SELECT sum(tip)::bigint FROM payments").fetch_one(&env.pg).await.expect("tips");
    // Days cycle with i % 10 and methods with i % 4: 20 (day, method) pairs occur.
    assert_eq!((lines, net), (20, expected + tips));

    // Not another merchant's; bad requests are problems.
    let stranger = env.merchant(1).await;
    let theirs = portal_token(&env, stranger.merchant_id);
    read.get(&format!("/v1/reports/{id}"), &theirs).await.assert_problem(404, "/not-found");
    app.post(
        "/v1/reports",
        Some(&theirs),
        Some("r"),
        &json!({"kind": "transactions", "store_id": m.store_id, "from": first, "to": last}),
    )
    .await
    .assert_problem(404, "/not-found");
    app.post(
        "/v1/reports",
        Some(&portal),
        Some("r3"),
        &json!({"kind": "everything", "from": first, "to": last}),
    )
    .await
    .assert_problem(422, "/validation");
    app.post(
        "/v1/reports",
        Some(&portal),
        Some("r4"),
        &json!({"kind": "transactions", "from": last, "to": first}),
    )
    .await
    .assert_problem(422, "/validation");
    workers.kill().await.expect("kill");
    let _ = std::fs::remove_dir_all(&dir);
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}
