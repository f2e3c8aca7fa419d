//! Rebuild and replay: read models rebuilt from the stream are identical,
//! row for row, to the live ones; reads are served throughout; one tenant
//! can be rebuilt alone; a replay repairs rows without moving checkpoints.

use projectors::Projection;
use projectors::rebuild::{self, Source};
use projectors::runner::Mode;
use serde_json::json;
use smartpos_tests::nats_server::NatsServer;
use smartpos_tests::read_side::{caught_up, portal_token};
use smartpos_tests::{Merchant, ReadSide, TestApp, TestEnv};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Every row of every read model, as sorted JSON text.
async fn snapshot(env: &TestEnv, merchant: Option<uuid::Uuid>) -> Vec<String> {
    let mut rows = Vec::new();
    for schema in ["rm_bills", "rm_sales", "rm_devices"] {
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
                .bind(schema)
                .fetch_all(&env.pg)
                .await
                .expect("tables");
        for t in tables {
            let filter = merchant.map(|m| format!(" WHERE merchant_id = '{m}'")).unwrap_or_default();
            let mut part: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT '{schema}.{t} ' || to_jsonb(x)::text FROM {schema}.{t} x{filter} ORDER BY 1"
            ))
            .fetch_all(&env.pg)
            .await
            .expect("rows");
            rows.append(&mut part);
        }
    }
    rows
}

/// Asserts two snapshots are equal, showing only the first differences.
fn assert_same(actual: &[String], expected: &[String], what: &str) {
    if actual == expected {
        return;
    }
    let missing: Vec<&String> = expected.iter().filter(|r| !actual.contains(r)).take(3).collect();
    let extra: Vec<&String> = actual.iter().filter(|r| !expected.contains(r)).take(3).collect();
    panic!(
        "{what}: {} rows vs {} expected; missing {missing:#?}; unexpected {extra:#?}",
        actual.len(),
        expected.len()
    );
}

/// Every index of the read models (schema, table, name and definition) and every
/// table's storage parameters (fill factors).
async fn read_model_indexes(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT schemaname || '.' || tablename || '.' || indexname || ' ' || substring(indexdef FROM ' USING .*$')
           FROM pg_indexes WHERE schemaname IN ('rm_bills', 'rm_sales', 'rm_devices')
         UNION ALL
         SELECT n.nspname || '.' || c.relname || ' WITH ' || array_to_string(c.reloptions, ', ')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('rm_bills', 'rm_sales', 'rm_devices') AND c.reloptions IS NOT NULL
         ORDER BY 1",
    )
    .fetch_all(&env.pg)
    .await
    .expect("indexes")
}

/// `n` fully paid sales (five events each) and a refund on every fifth; on
/// the way, every payment event: declined and voided tenders, manual captures,
/// canceled orders.
async fn trade(app: &TestApp, token: &str, n: usize) {
    for i in 0..n {
        let order = app.create_order(token).await;
        let order_id = order.str("order_id");
        let method = ["cash", "card", "qr", "emoney"][i % 4];
        if i % 7 == 3 {
            let declined = app.pay(token, &order_id, "card", 819, "automatic").await.str("payment_id");
            let r = app
                .command(
                    &format!("/v1/payments/{declined}/confirm"),
                    token,
                    &json!({"result": "declined", "reason": "insufficient funds"}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        if i % 11 == 5 {
            let voided = app.pay(token, &order_id, "card", 100, "manual").await.str("payment_id");
            app.approve(token, &voided).await;
            let r = app.command(&format!("/v1/payments/{voided}/void"), token, &json!({})).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        if i % 13 == 6 {
            let r = app.command(&format!("/v1/orders/{order_id}/cancel"), token, &json!({})).await;
            assert_eq!(r.status, 200, "{}", r.body);
            continue;
        }
        let capture = if i % 3 == 1 { "manual" } else { "automatic" };
        let payment = app.pay(token, &order_id, method, 819, capture).await.str("payment_id");
        app.approve(token, &payment).await;
        if capture == "manual" {
            let r = app.command(&format!("/v1/payments/{payment}/capture"), token, &json!({})).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        if i % 5 == 0 {
            let r =
                app.command(&format!("/v1/payments/{payment}/refunds"), token, &json!({"amount": 19})).await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
    }
}

async fn populate(env: &TestEnv, app: &TestApp, merchants: &[&Merchant], per_merchant: usize) {
    let mut tasks = Vec::new();
    for m in merchants {
        for d in 0..m.devices.len() {
            let token = app.token(m, d).await;
            tasks.push(async move { trade(app, &token, per_merchant / m.devices.len()).await });
        }
    }
    futures_util::future::join_all(tasks).await;
    caught_up(env, &env.nats_url).await;
}

async fn source(env: &TestEnv) -> Source {
    let nats = async_nats::connect(&env.nats_url).await.expect("nats");
    Source {
        pg: env.pg.clone(),
        js: async_nats::jetstream::new(nats),
        stream: env.events_stream(),
        subject_prefix: env.subject_prefix.clone(),
        batch: 500,
        stall_limit: rebuild::STALL_LIMIT,
    }
}

/// Damages every projection: deleted bills, a wrong capture, a wrong device row.
async fn corrupt(env: &TestEnv, merchant: uuid::Uuid) {
    for sql in [
        "DELETE FROM rm_bills.bills WHERE order_id IN (SELECT order_id FROM rm_bills.bills WHERE merchant_id = $1 ORDER BY order_id LIMIT 5)",
        "UPDATE rm_sales.captures SET amount = amount + 1 WHERE merchant_id = $1",
        "UPDATE rm_devices.device_status SET tokens_issued = 0 WHERE merchant_id = $1",
    ] {
        sqlx::query(sql).bind(merchant).execute(&env.pg).await.expect("corrupt");
    }
}

#[tokio::test]
async fn a_rebuild_reproduces_every_read_model_row_for_row_while_reads_are_served() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let a = env.merchant(3).await;
    let b = env.merchant(2).await;
    populate(&env, &app, &[&a, &b], 240).await;
    let events = smartpos_tests::stream::count(&env.nats_url, &env.events_stream()).await;
    assert!(events >= 2000, "only {events} events");
    let original = snapshot(&env, None).await;
    let original_indexes = read_model_indexes(&env).await;
    assert!(
        original_indexes.iter().any(|i| i.starts_with("rm_bills.bills.bills_by_store ")),
        "{original_indexes:?}"
    );
    assert!(
        original_indexes.contains(&"rm_bills.bills WITH fillfactor=70".to_owned()),
        "{original_indexes:?}"
    );
    corrupt(&env, a.merchant_id).await;
    corrupt(&env, b.merchant_id).await;
    assert_ne!(snapshot(&env, None).await, original);

    // Readers hammer the query API during the rebuilds; every answer must be a 200.
    let portal = portal_token(&env, a.merchant_id);
    let known: String =
        sqlx::query_scalar("SELECT order_id::text FROM rm_bills.bills WHERE merchant_id = $1 LIMIT 1")
            .bind(a.merchant_id)
            .fetch_one(&env.pg)
            .await
            .expect("a bill");
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        let (client, base, portal, store) =
            (read.client.clone(), read.base.clone(), portal.clone(), a.store_id);
        let date = chrono::Utc::now().date_naive();
        tokio::spawn(async move {
            let paths = [
                format!("/v1/bills/{known}"),
                "/v1/orders?limit=20".to_owned(),
                format!("/v1/stores/{store}/sales?from={}&to={}", date.pred_opt().unwrap_or(date), date),
            ];
            while !stop.load(Ordering::Relaxed) {
                for p in &paths {
                    let ok = client
                        .get(format!("{base}{p}"))
                        .bearer_auth(&portal)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if ok {
                        served.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                }
            }
        })
    };
    let source = source(&env).await;
    let mut lines = Vec::new();
    for p in [Projection::Bills, Projection::StoreDailySales] {
        let done = rebuild::rebuild(&source, p, None, |progress| lines.push(progress.line()))
            .await
            .expect("rebuild");
        assert!(done.applied >= 1000, "{} applied only {}", p.name(), done.applied);
    }
    assert!(lines.iter().any(|l| l.contains("ev/s") && l.contains("ETA")), "{lines:?}");
    // The operator's way, through the real binary, with progress on stderr.
    let out = env.posctl(&["rebuild", "device_status"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("rebuild device_status: done") && stderr.contains("ev/s"), "{stderr}");
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("reader");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "reads failed during the rebuild");
    assert!(served.load(Ordering::Relaxed) >= 3, "the reader never ran");

    caught_up(&env, &env.nats_url).await;
    let rebuilt = snapshot(&env, None).await;
    assert_same(&rebuilt, &original, "the rebuilt read models differ from the live ones");
    // Every constraint and index is back under its own name (a migration may name it).
    assert_eq!(read_model_indexes(&env).await, original_indexes);
    // The live projection carries on from the swapped-in position.
    let token = app.token(&a, 0).await;
    let order_id = app.create_order(&token).await.str("order_id");
    caught_up(&env, &env.nats_url).await;
    read.bill_at(&portal, &order_id, 1).await;
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_merchant_rebuild_replaces_only_that_merchants_rows() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let a = env.merchant(1).await;
    let b = env.merchant(1).await;
    populate(&env, &app, &[&a, &b], 20).await;
    let a_before = snapshot(&env, Some(a.merchant_id)).await;
    corrupt(&env, a.merchant_id).await;
    corrupt(&env, b.merchant_id).await;
    let b_corrupted = snapshot(&env, Some(b.merchant_id)).await;
    let source = source(&env).await;
    for p in Projection::ALL {
        rebuild::rebuild(&source, p, Some(a.merchant_id), |_| {}).await.expect("merchant rebuild");
    }
    assert_same(&snapshot(&env, Some(a.merchant_id)).await, &a_before, "merchant A was not restored");
    assert_same(&snapshot(&env, Some(b.merchant_id)).await, &b_corrupted, "merchant B was touched");
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_replay_repairs_rows_without_moving_the_checkpoint() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let a = env.merchant(1).await;
    populate(&env, &app, &[&a], 15).await;
    let before = snapshot(&env, None).await;
    let checkpoints: Vec<(String, i64)> =
        sqlx::query_as("SELECT projection, stream_seq FROM projection_checkpoints ORDER BY 1")
            .fetch_all(&env.pg)
            .await
            .expect("cp");
    sqlx::query("DELETE FROM rm_bills.bills WHERE order_id IN (SELECT order_id FROM rm_bills.bills LIMIT 4)")
        .execute(&env.pg)
        .await
        .expect("delete");
    sqlx::query("DELETE FROM rm_sales.captures WHERE payment_id IN (SELECT payment_id FROM rm_sales.captures LIMIT 4)")
        .execute(&env.pg)
        .await
        .expect("delete");
    assert_ne!(snapshot(&env, None).await, before);
    for p in ["bills", "store_daily_sales"] {
        let out = env.posctl(&["replay", p, "--from-seq", "1"]).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_same(&snapshot(&env, None).await, &before, "replay did not repair the rows exactly");
    let after: Vec<(String, i64)> =
        sqlx::query_as("SELECT projection, stream_seq FROM projection_checkpoints ORDER BY 1")
            .fetch_all(&env.pg)
            .await
            .expect("cp");
    assert_eq!(after, checkpoints);
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn posctl_check_confirms_agreement_and_names_every_difference() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let m = env.merchant(2).await;
    populate(&env, &app, &[&m], 20).await;

    let out = env.posctl(&["check", "--wait", "30", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["settled"], true);
    let comparisons = report["comparisons"].as_array().expect("comparisons");
    assert_eq!(comparisons.len(), 5);
    for c in comparisons {
        assert!(c["rows"].as_i64().unwrap_or(0) > 0, "nothing compared: {c}");
        assert_eq!(c["mismatches"], 0, "{c}");
    }

    // Damage two read models; the check fails and names the rows.
    let damaged: uuid::Uuid = sqlx::query_scalar(
        "UPDATE rm_bills.bills SET refunded = refunded + 1
          WHERE order_id = (SELECT order_id FROM rm_bills.bills ORDER BY order_id LIMIT 1) RETURNING order_id",
    )
    .fetch_one(&env.pg)
    .await
    .expect("damage a bill");
    let lost: uuid::Uuid = sqlx::query_scalar(
        "DELETE FROM rm_sales.refunds WHERE refund_id = (SELECT min(refund_id::text)::uuid FROM rm_sales.refunds)
         RETURNING refund_id",
    )
    .fetch_one(&env.pg)
    .await
    .expect("lose a refund");
    let out = env.posctl(&["check", "--wait", "5"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let line = |name: &str| stdout.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert!(
        line("orders = rm_bills.bills").contains(" 1 mismatches") && stdout.contains(&damaged.to_string()),
        "{stdout}"
    );
    assert!(
        line("refunds = rm_sales.refunds").contains(" 1 mismatches") && stdout.contains(&lost.to_string()),
        "{stdout}"
    );
    assert!(line("payments = rm_bills.bill_payments").contains(" 0 mismatches"), "{stdout}");
    assert!(stdout.contains("DISAGREEMENT"), "{stdout}");

    // A command the projections have not seen: not settled, so no verdict of agreement.
    read.stop().await;
    let token = app.token(&m, 0).await;
    app.create_order(&token).await;
    let out = env.posctl(&["check", "--wait", "1"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && stdout.contains("NOT SETTLED"), "{stdout}");
    app.stop().await;
    env.cleanup().await;
}

/// A progress callback that freezes the broker for `d` at its first call (the
/// first batch applied), and notes that it did.
fn freeze_once<'a>(
    nats: &'a NatsServer,
    d: std::time::Duration,
    froze: &'a Cell<bool>,
) -> impl FnMut(&rebuild::Progress) + 'a {
    move |_| {
        if !froze.replace(true) {
            nats.freeze_for(d);
        }
    }
}

/// A broker that stops delivering for a while in the middle of a rebuild and
/// of a replay (frozen with SIGSTOP, as a slow disk once stalled one): both
/// wait it out and take the whole stream. Taking the pause for the end once
/// swapped in a bills read model built from 47,000 of a million events.
#[tokio::test]
async fn a_rebuild_and_a_replay_wait_out_a_stalled_broker_and_miss_nothing() {
    let env = TestEnv::without_streams().await;
    let nats = NatsServer::start().await;
    env.apply_streams(&nats.url).await;
    let app = TestApp::spawn_with(&env, &nats.url, true).await;
    let read = ReadSide::spawn_with(&env, &nats.url, true).await;
    let m = env.merchant(4).await;
    let mut tokens = Vec::new();
    for d in 0..m.devices.len() {
        tokens.push(app.token(&m, d).await);
    }
    futures_util::future::join_all(tokens.iter().map(|t| trade(&app, t, 90))).await;
    caught_up(&env, &nats.url).await;
    let events = smartpos_tests::stream::count(&nats.url, &env.events_stream()).await;
    // Well beyond what the reader buffers (two batches ahead and the consumer's own pull).
    assert!(events >= 1500, "only {events} events");
    let original = snapshot(&env, None).await;
    let source = Source {
        pg: env.pg.clone(),
        js: async_nats::jetstream::new(async_nats::connect(&nats.url).await.expect("nats")),
        stream: env.events_stream(),
        subject_prefix: env.subject_prefix.clone(),
        batch: 100,
        stall_limit: std::time::Duration::from_secs(30),
    };
    let stall = std::time::Duration::from_secs(3);

    let froze = Cell::new(false);
    let done = rebuild::rebuild(&source, Projection::Bills, None, freeze_once(&nats, stall, &froze))
        .await
        .expect("rebuild");
    assert!(froze.get(), "the broker was never frozen");
    assert_eq!(done.applied, events, "the rebuild applied part of the stream");
    caught_up(&env, &nats.url).await;
    assert_same(&snapshot(&env, None).await, &original, "the rebuild after a stall");

    // The last orders' bills lost: only the end of the stream restores them.
    let lost: Vec<uuid::Uuid> = sqlx::query_scalar(
        "DELETE FROM rm_bills.bills WHERE order_id IN
           (SELECT order_id FROM rm_bills.bills ORDER BY created_at DESC LIMIT 5) RETURNING order_id",
    )
    .fetch_all(&env.pg)
    .await
    .expect("delete");
    assert_eq!(lost.len(), 5);
    let froze = Cell::new(false);
    let from = rebuild::From::Seq(1);
    let replayed = rebuild::replay(&source, Projection::Bills, from, freeze_once(&nats, stall, &froze))
        .await
        .expect("replay");
    assert!(froze.get(), "the broker was never frozen");
    assert_eq!(replayed.applied, events, "the replay applied part of the stream");
    assert_same(&snapshot(&env, None).await, &original, "the replay after a stall");

    // A stall longer than the limit fails the rebuild, and the live read model stays as it was.
    let impatient = Source { stall_limit: std::time::Duration::from_secs(1), ..source.clone() };
    let long = std::time::Duration::from_secs(8);
    let failed =
        rebuild::rebuild(&impatient, Projection::Bills, None, freeze_once(&nats, long, &Cell::new(false)))
            .await
            .expect_err("a rebuild through a stall beyond its limit fails");
    let why = format!("{failed:#}");
    assert!(why.contains("live read model is unchanged") && why.contains("stalled"), "{why}");
    smartpos_tests::eventually(std::time::Duration::from_secs(30), "the broker to thaw", || async {
        async_nats::connect(&nats.url).await.ok().map(|_| ())
    })
    .await;
    caught_up(&env, &nats.url).await;
    assert_same(&snapshot(&env, None).await, &original, "a failed rebuild changed the live read model");
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

/// Applies `events` to every projection's live schema, `batch` at a time.
async fn apply_stream(env: &TestEnv, events: &[projectors::event::Event], batch: usize, mode: Mode) {
    let mut conn = env.pg.acquire().await.expect("connection");
    for p in Projection::ALL {
        for chunk in events.chunks(batch) {
            let applied = projectors::runner::apply_batch_mode(
                &mut conn,
                p,
                p.schema(),
                p.name(),
                chunk,
                Some(1),
                mode,
            )
            .await
            .expect("the batch applies");
            assert_eq!(applied.last_index, Some(chunk.len() - 1), "{} left part of a batch", p.name());
        }
    }
}

#[tokio::test]
async fn batches_give_the_same_rows_as_the_event_by_event_rules() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await; // no projectors: this test applies the stream itself
    let m = env.merchant(2).await;
    let tokens = [app.token(&m, 0).await, app.token(&m, 1).await];
    futures_util::future::join_all(tokens.iter().map(|t| trade(&app, t, 40))).await;
    smartpos_tests::outbox_drained(&env.pg, std::time::Duration::from_secs(30)).await;
    let events = smartpos_tests::stream::events(&env.nats_url, &env.events_stream()).await;
    assert!(events.len() > 300, "only {} events", events.len());

    let reset = || async {
        for sql in [
            "TRUNCATE rm_bills.bills, rm_bills.bill_payments, rm_bills.bill_refunds, rm_sales.captures, rm_sales.refunds, rm_devices.device_status",
            "UPDATE projection_checkpoints SET stream_seq = 0",
        ] {
            sqlx::query(sql).execute(&env.pg).await.expect("reset");
        }
    };
    // The reference: every event on its own, by the one-event rules.
    apply_stream(&env, &events, 1, Mode::OneByOne).await;
    let reference = snapshot(&env, None).await;
    assert!(reference.iter().any(|r| r.starts_with("rm_sales.refunds ")), "the trade has refunds");
    assert!(reference.iter().any(|r| r.starts_with("rm_devices.device_status ")), "and devices");
    // Batches of odd sizes (an order's events split across batches) and one
    // batch of all; and as a rebuild's shadow applies them.
    for (size, mode) in [(7, Mode::Bulk), (events.len(), Mode::Bulk), (500, Mode::Shadow)] {
        reset().await;
        apply_stream(&env, &events, size, mode).await;
        assert_same(&snapshot(&env, None).await, &reference, &format!("{mode:?} batches of {size}"));
    }
    app.stop().await;
    env.cleanup().await;
}
