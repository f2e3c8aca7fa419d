//! The read side end to end: commands in, read models out, compared with the
//! write model; exactly-once under redelivery and projector crashes; stalls
//! on events it cannot apply; tenant isolation and pagination.

use chrono::{Duration as ChronoDuration, NaiveTime, Timelike, Utc};
use posctl::seed::MerchantSpec;
use projectors::Projection;
use serde_json::{Value, json};
use smartpos_tests::nats_server::free_port;
use smartpos_tests::read_side::{caught_up, portal_token, sale};
use smartpos_tests::{ReadSide, TestApp, TestEnv, eventually, process, stream};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn bills_show_what_happened_and_match_the_write_model() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);

    let order = app.create_order(&token).await;
    let order_id = order.str("order_id");
    let cash = app.pay(&token, &order_id, "cash", 300, "automatic").await.str("payment_id");
    app.approve(&token, &cash).await;
    let card = app
        .command(
            "/v1/payments",
            &token,
            &json!({"order_id": order_id, "method": "card", "amount": 519, "tip": 50}),
        )
        .await;
    let card = card.str("payment_id");
    app.approve(&token, &card).await;
    let refund = app
        .command(
            &format!("/v1/payments/{card}/refunds"),
            &token,
            &json!({"amount": 100, "reason": "spilled"}),
        )
        .await;
    let version = refund.body["version"].as_i64().unwrap_or_default();

    let bill = read.bill_at(&portal, &order_id, version).await;
    assert_eq!(bill["version"], version);
    assert_eq!((bill["status"].clone(), bill["total"].clone()), (json!("completed"), json!(819)));
    assert_eq!(
        (bill["paid"].clone(), bill["tips"].clone(), bill["refunded"].clone()),
        (json!(819), json!(50), json!(100))
    );
    assert_eq!(bill["balance"], 0);
    assert_eq!(bill["lines"].as_array().map(Vec::len), Some(2));
    let payments = bill["payments"].as_array().cloned().unwrap_or_default();
    assert_eq!(payments.len(), 2);
    assert!(payments.iter().all(|p| p["status"] == "captured"));
    assert_eq!(bill["refunds"][0]["amount"], 100);

    // The write model agrees, field by field.
    let (total, status, version_w): (i64, String, i64) =
        sqlx::query_as("SELECT total, status, version FROM orders WHERE id = $1::uuid")
            .bind(&order_id)
            .fetch_one(&env.pg)
            .await
            .expect("order");
    assert_eq!(
        (json!(total), json!(status), json!(version_w)),
        (bill["total"].clone(), bill["status"].clone(), bill["version"].clone())
    );
    let refunded: i64 =
        sqlx::query_scalar("SELECT sum(refunded)::bigint FROM payments WHERE order_id = $1::uuid")
            .bind(&order_id)
            .fetch_one(&env.pg)
            .await
            .expect("payments");
    assert_eq!(json!(refunded), bill["refunded"]);
    // The terminal that rang it up may read it too.
    assert_eq!(read.get(&format!("/v1/bills/{order_id}"), &token).await.status, 200);
    // Lag is exported per projection, in events and seconds.
    let metrics = eventually(Duration::from_secs(10), "lag metrics", || async {
        let m = read.projector_metrics().await;
        m.contains("projection_lag_seconds{projection=\"store_daily_sales\"}").then_some(m)
    })
    .await;
    for p in ["bills", "store_daily_sales", "device_status"] {
        assert!(metrics.contains(&format!("projection_lag_events{{projection=\"{p}\"}}")), "{metrics}");
    }
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_read_waits_for_the_requested_version_and_says_when_it_is_behind() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    // Query API up, projectors not yet: the bill does not exist on the read side.
    let read = ReadSide::spawn_with(&env, &env.nats_url, false).await;
    let order_id = app.create_order(&token).await.str("order_id");
    let reply = read.get(&format!("/v1/bills/{order_id}?min_version=1&wait_ms=100"), &portal).await;
    reply.assert_problem(404, "/not-found");
    read.stop().await;

    let read = ReadSide::spawn(&env).await;
    let bill = read.bill_at(&portal, &order_id, 1).await;
    assert_eq!(bill["status"], "open");
    // A version that will not arrive: answered after the wait, marked behind.
    let reply = read.get(&format!("/v1/bills/{order_id}?min_version=9&wait_ms=150"), &portal).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["consistency"], json!({"requested_version": 9, "behind": true}));
    read.get(&format!("/v1/bills/{order_id}?min_version=0"), &portal)
        .await
        .assert_problem(422, "/validation");
    read.get(&format!("/v1/bills/{order_id}?min_version=abc"), &portal)
        .await
        .assert_problem(422, "/validation");
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_order_list_pages_newest_first_with_filters_and_bounded_pages() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    let mut created = Vec::new();
    for i in 0..7 {
        let order_id = if i % 3 == 0 {
            sale(&app, &token, 100, "cash").await.0
        } else {
            app.create_order(&token).await.str("order_id")
        };
        created.push(order_id);
    }
    caught_up(&env, &env.nats_url).await;

    let mut seen = Vec::new();
    let mut path = "/v1/orders?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = read.get(&path, &portal).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let items = page.body["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|i| i["order_id"].as_str().unwrap_or_default().to_owned()));
        pages += 1;
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/orders?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "every order once, newest first");

    let completed = read.get("/v1/orders?status=completed", &portal).await;
    let ids: HashSet<&str> = completed.body["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["order_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 3);
    let empty = read.get("/v1/orders?status=canceled", &portal).await;
    assert_eq!((empty.body["items"].clone(), empty.body["next_cursor"].clone()), (json!([]), Value::Null));
    let today =
        read.get(&format!("/v1/orders?business_date={}&limit=200", Utc::now().date_naive()), &portal).await;
    assert!(today.body["items"].as_array().is_some());
    let future = (Utc::now() + ChronoDuration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none = read.get(&format!("/v1/orders?from={future}"), &portal).await;
    assert_eq!(none.body["items"], json!([]));

    read.get("/v1/orders?cursor=garbage", &portal).await.assert_problem(400, "/invalid-cursor");
    read.get("/v1/orders?limit=0", &portal).await.assert_problem(422, "/validation");
    read.get("/v1/orders?limit=201", &portal).await.assert_problem(422, "/validation");
    read.get("/v1/orders?status=lost", &portal).await.assert_problem(422, "/validation");
    read.get("/v1/orders?colour=red", &portal).await.assert_problem(422, "/validation");
    read.get("/v1/orders?business_date=yesterday", &portal).await.assert_problem(422, "/validation");
    read.get(&format!("/v1/orders?from={future}&to={future}"), &portal)
        .await
        .assert_problem(422, "/validation");
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

/// A close-of-day time `minutes` after (or before, if negative) the store's local time now,
/// kept within the same local day, and the business date a sale now must get.
fn close_around_now(tz: chrono_tz::Tz, minutes: i64) -> (String, chrono::NaiveDate) {
    let local = Utc::now().with_timezone(&tz);
    let now_min = i64::from(local.hour() * 60 + local.minute());
    // Stay clear of midnight so the close stays on the same local day.
    let close_min = (now_min + minutes).clamp(1, 23 * 60 + 58);
    let close =
        NaiveTime::from_hms_opt((close_min / 60) as u32, (close_min % 60) as u32, 0).unwrap_or_default();
    let today = local.date_naive();
    let expected = if local.time() < close { today.pred_opt().unwrap_or(today) } else { today };
    (close.format("%H:%M").to_string(), expected)
}

#[tokio::test]
async fn daily_sales_follow_the_close_of_day_and_book_late_refunds_on_their_own_day() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    // A New York store (observes DST) whose day closes 90 minutes from now: sales now belong to the previous day.
    let mut spec = MerchantSpec::tokyo(Uuid::now_v7(), Uuid::now_v7());
    spec.time_zone = "America/New_York".into();
    let (close, sale_day) = close_around_now(chrono_tz::America::New_York, 90);
    spec.close_of_day = close;
    let m = env.merchant_with(spec.clone(), 1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);

    let (cash_order, _) = sale(&app, &token, 1000, "cash").await; // 1100 with tax
    sale(&app, &token, 2000, "card").await; // 2200
    let (_, _) = sale(&app, &token, 500, "card").await; // 550
    let card_payment: Uuid =
        sqlx::query_scalar("SELECT id FROM payments WHERE method = 'card' AND amount = 2200")
            .fetch_one(&env.pg)
            .await
            .expect("card payment");

    // The day closes: move the close to 90 minutes ago, so now is the next sales day.
    let (close, refund_day) = close_around_now(chrono_tz::America::New_York, -90);
    sqlx::query("UPDATE stores SET close_of_day = $2::time WHERE id = $1")
        .bind(m.store_id)
        .bind(&close)
        .execute(&env.pg)
        .await
        .expect("close");
    assert_ne!(sale_day, refund_day, "the test needs the close to move the sales day");
    let refund =
        app.command(&format!("/v1/payments/{card_payment}/refunds"), &token, &json!({"amount": 700})).await;
    assert_eq!(refund.status, 201, "{}", refund.body);
    caught_up(&env, &env.nats_url).await;

    let day = read.get(&format!("/v1/stores/{}/sales?date={sale_day}", m.store_id), &portal).await;
    assert_eq!(day.status, 200, "{}", day.body);
    let rows = day.body["rows"].as_array().cloned().unwrap_or_default();
    let row = |method: &str| rows.iter().find(|r| r["method"] == method).cloned().unwrap_or(Value::Null);
    assert_eq!(
        (row("card")["sales_count"].clone(), row("card")["gross"].clone(), row("card")["refunds"].clone()),
        (json!(2), json!(2750), json!(0))
    );
    assert_eq!((row("cash")["gross"].clone(), row("cash")["net"].clone()), (json!(1100), json!(1100)));
    // The late refund is on the next day, not on the closed one.
    let next =
        read.get(&format!("/v1/stores/{}/sales?from={sale_day}&to={refund_day}", m.store_id), &portal).await;
    let late: Vec<&Value> = next.body["rows"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["business_date"] == json!(refund_day)).collect())
        .unwrap_or_default();
    assert_eq!(late.len(), 1, "{}", next.body);
    assert_eq!(
        (
            late[0]["method"].clone(),
            late[0]["refund_count"].clone(),
            late[0]["refunds"].clone(),
            late[0]["net"].clone()
        ),
        (json!("card"), json!(1), json!(700), json!(-700))
    );

    // Independent check against the write model: captured payments of the store.
    let gross: i64 = sqlx::query_scalar(
        "SELECT sum(amount)::bigint FROM payments WHERE store_id = $1 AND status = 'captured'",
    )
    .bind(m.store_id)
    .fetch_one(&env.pg)
    .await
    .expect("sum");
    let projected: i64 = rows.iter().filter_map(|r| r["gross"].as_i64()).sum();
    assert_eq!(projected, gross);
    let _ = cash_order;
    read.get(&format!("/v1/stores/{}/sales", m.store_id), &portal).await.assert_problem(422, "/validation");
    read.get(&format!("/v1/stores/{}/sales?from=2026-01-01&to=2026-12-31", m.store_id), &portal)
        .await
        .assert_problem(422, "/validation");
    read.get(&format!("/v1/stores/{}/sales?from=2026-02-01&to=2026-01-01", m.store_id), &portal)
        .await
        .assert_problem(422, "/validation");
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn device_status_shows_last_seen_last_order_and_tokens() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let m = env.merchant(1).await;
    let _first = app.token(&m, 0).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    let order_id = app.create_order(&token).await.str("order_id");
    caught_up(&env, &env.nats_url).await;
    let device = m.devices[0].0;
    let status = read.get(&format!("/v1/devices/{device}"), &portal).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["tokens_issued"], 2);
    assert_eq!(status.body["last_order_id"], json!(order_id));
    assert!(status.body["last_seen_at"].is_string() && status.body["last_token_at"].is_string());
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn another_merchants_reads_are_404_and_lists_are_confined() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let owner = env.merchant(1).await;
    let other = env.merchant(1).await;
    let token = app.token(&owner, 0).await;
    let other_token = app.token(&other, 0).await;
    let (order_id, version) = sale(&app, &token, 100, "cash").await;
    sale(&app, &other_token, 100, "cash").await;
    let owner_portal = portal_token(&env, owner.merchant_id);
    read.bill_at(&owner_portal, &order_id, version).await;
    caught_up(&env, &env.nats_url).await;

    let stranger = portal_token(&env, other.merchant_id);
    read.get(&format!("/v1/bills/{order_id}"), &stranger).await.assert_problem(404, "/not-found");
    read.get(&format!("/v1/bills/{order_id}"), &other_token).await.assert_problem(404, "/not-found");
    read.get(&format!("/v1/devices/{}", owner.devices[0].0), &stranger)
        .await
        .assert_problem(404, "/not-found");
    let date = Utc::now().date_naive();
    read.get(&format!("/v1/stores/{}/sales?date={date}", owner.store_id), &stranger)
        .await
        .assert_problem(404, "/not-found");
    read.get(&format!("/v1/stores/{}/sales?date={date}", Uuid::new_v4()), &owner_portal)
        .await
        .assert_problem(404, "/not-found");
    let list = read.get("/v1/orders", &stranger).await;
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["order_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 1);
    assert!(!ids.contains(&order_id.as_str()));
    let unauth = read.client.get(format!("{}/v1/orders", read.base)).send().await.expect("sent");
    assert_eq!(unauth.status(), 401);
    let operator =
        posctl::seed::staff_token(&env.keys, platform::auth::Role::Operator, "op", None).expect("t");
    read.get("/v1/orders", &operator).await.assert_problem(403, "/forbidden");
    read.get("/v1/bills/not-a-uuid", &owner_portal).await.assert_problem(404, "/not-found");
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn events_delivered_twice_count_once() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let (order_id, _) = sale(&app, &token, 1000, "card").await;
    let payment: Uuid = sqlx::query_scalar("SELECT id FROM payments WHERE order_id = $1::uuid")
        .bind(&order_id)
        .fetch_one(&env.pg)
        .await
        .expect("payment");
    app.command(&format!("/v1/payments/{payment}/refunds"), &token, &json!({"amount": 300})).await;
    smartpos_tests::outbox_drained(&env.pg, Duration::from_secs(10)).await;
    let events = stream::events(&env.nats_url, &env.events_stream()).await;
    let snapshot = |env: &TestEnv| {
        let pg = env.pg.clone();
        async move {
            let bills: (i64, i64, i64, i64) =
                sqlx::query_as("SELECT paid, tips, refunded, version FROM rm_bills.bills")
                    .fetch_one(&pg)
                    .await
                    .expect("bill");
            let sales: (i64, Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM rm_sales.captures), (SELECT sum(amount)::bigint FROM rm_sales.captures), (SELECT sum(amount)::bigint FROM rm_sales.refunds)",
            )
            .fetch_one(&pg)
            .await
            .expect("sales");
            (bills, sales)
        }
    };
    for p in Projection::ALL {
        projectors::runner::apply_batch(&env.pg, p, p.schema(), p.name(), &events, 1)
            .await
            .expect("first delivery");
    }
    let once = snapshot(&env).await;
    assert_eq!(once.0, (1100, 0, 300, 6));
    assert_eq!(once.1, (1, Some(1100), Some(300)));
    // Redelivered: below the checkpoint, skipped.
    for p in Projection::ALL {
        let applied = projectors::runner::apply_batch(&env.pg, p, p.schema(), p.name(), &events, 1)
            .await
            .expect("again");
        assert_eq!(applied.applied, 0);
    }
    assert_eq!(snapshot(&env).await, once);
    // Even with the checkpoint lost (a replay), the read models do not move.
    sqlx::query("UPDATE projection_checkpoints SET stream_seq = 0").execute(&env.pg).await.expect("reset");
    for p in Projection::ALL {
        projectors::runner::apply_batch(&env.pg, p, p.schema(), p.name(), &events, 1)
            .await
            .expect("replayed");
    }
    assert_eq!(snapshot(&env).await, once);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_projection_whose_consumer_is_gone_recreates_it_at_its_checkpoint() {
    // Real projector processes: a crash is a process's, and this test's runners
    // must not touch the metrics registry that other tests of this binary read.
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let projectors = || {
        let mut vars = env.vars();
        vars.push(("PROJECTORS_ADDR", format!("127.0.0.1:{}", free_port())));
        process::spawn("projectors", &vars)
    };
    sale(&app, &token, 100, "cash").await;
    let mut first = projectors();
    caught_up(&env, &env.nats_url).await;
    first.kill().await.expect("kill");
    // What a runner killed between deleting and recreating its consumer leaves behind.
    let js = async_nats::jetstream::new(async_nats::connect(&env.nats_url).await.expect("nats"));
    let stream = js.get_stream(env.events_stream()).await.expect("stream");
    let consumer = Projection::Bills.consumer(&env.stream_prefix);
    assert!(stream.delete_consumer(&consumer).await.expect("delete").success);
    let (order_id, _) = sale(&app, &token, 200, "card").await;

    let mut second = projectors();
    caught_up(&env, &env.nats_url).await;
    second.kill().await.expect("kill");
    let status: String = sqlx::query_scalar("SELECT status FROM rm_bills.bills WHERE order_id = $1::uuid")
        .bind(&order_id)
        .fetch_one(&env.pg)
        .await
        .expect("the later sale's bill");
    assert_eq!(status, "completed");
    assert!(stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer).await.is_ok());
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_projector_killed_mid_batch_again_and_again_leaves_sales_exact() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let methods = ["cash", "card", "qr", "emoney"];
    for i in 0..48 {
        sale(&app, &token, 100 + i, methods[i as usize % 4]).await;
    }
    smartpos_tests::outbox_drained(&env.pg, Duration::from_secs(20)).await;
    let total_events = stream::count(&env.nats_url, &env.events_stream()).await as i64;
    let vars = |addr: String| {
        vec![
            ("DATABASE_URL", env.database_url.clone()),
            ("NATS_URL", env.nats_url.clone()),
            ("REDIS_URL", env.redis_url.clone()),
            ("NATS_SUBJECT_PREFIX", env.subject_prefix.clone()),
            ("NATS_STREAM_PREFIX", env.stream_prefix.clone()),
            ("PROJECTORS_ADDR", addr),
            ("PROJECTION_BATCH", "7".to_owned()),
            ("PROJECTION_FETCH_WAIT_MS", "100".to_owned()),
        ]
    };
    let checkpoint = |name: &'static str| {
        let pg = env.pg.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT stream_seq FROM projection_checkpoints WHERE projection = $1",
            )
            .bind(name)
            .fetch_optional(&pg)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
        }
    };
    // Each round kills a fresh projector once every projection has committed
    // a batch in it (so each runner is past taking over and is projecting),
    // plus a few milliseconds, so the kills land at different points: a
    // fixed delay let a fast machine project everything before the first kill.
    let projections = ["store_daily_sales", "bills", "device_status"];
    let mut killed_mid_way = false;
    for round in 0..30u64 {
        let mut before = Vec::new();
        for p in projections {
            before.push(checkpoint(p).await);
        }
        if before.iter().all(|&cp| cp >= total_events) {
            break;
        }
        let mut child = process::spawn("projectors", &vars(format!("127.0.0.1:{}", free_port())));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for (p, at) in projections.into_iter().zip(before) {
            while at < total_events && checkpoint(p).await == at && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis((round * 7) % 25)).await;
        child.kill().await.expect("SIGKILL");
        let sales = checkpoint("store_daily_sales").await;
        killed_mid_way |= sales > 0 && sales < total_events;
    }
    assert!(killed_mid_way, "no kill landed while projecting");
    let mut last = process::spawn("projectors", &vars(format!("127.0.0.1:{}", free_port())));
    caught_up(&env, &env.nats_url).await;
    last.kill().await.expect("kill");

    // Projected sales equal the write model's captured payments, method by method.
    let expected: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT method, count(*), sum(amount)::bigint FROM payments WHERE status = 'captured' GROUP BY method ORDER BY method",
    )
    .fetch_all(&env.pg)
    .await
    .expect("write model");
    let projected: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT method, count(*), sum(amount)::bigint FROM rm_sales.captures GROUP BY method ORDER BY method",
    )
    .fetch_all(&env.pg)
    .await
    .expect("read model");
    assert_eq!(projected, expected);
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders o LEFT JOIN rm_bills.bills b ON b.order_id = o.id
          WHERE b.order_id IS NULL OR b.version <> o.version OR b.status <> o.status OR b.paid <> o.total",
    )
    .fetch_one(&env.pg)
    .await
    .expect("compare");
    assert_eq!(mismatched, 0, "bills differ from orders");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_query_api_describes_its_routes() {
    let env = TestEnv::new().await;
    let read = ReadSide::spawn_with(&env, &env.nats_url, false).await;
    let doc = read.client.get(format!("{}/openapi.json", read.base)).send().await.expect("sent");
    let doc: Value = doc.json().await.expect("json");
    for path in ["/v1/bills/{id}", "/v1/orders", "/v1/stores/{id}/sales", "/v1/devices/{id}"] {
        let op = &doc["paths"][path]["get"];
        assert!(op["responses"]["200"]["content"]["application/json"]["schema"].is_object(), "{path}");
        assert!(
            op["responses"]["404"].is_object() || op["responses"]["422"].is_object(),
            "{path} lists no errors"
        );
    }
    let params: Vec<&str> = doc["paths"]["/v1/orders"]["get"]["parameters"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    for name in ["store_id", "status", "business_date", "from", "to", "limit", "cursor"] {
        assert!(params.contains(&name), "{name} missing from {params:?}");
    }
    read.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn each_projection_keeps_its_own_checkpoint_statements_on_a_shared_connection() {
    // A projection's batch runs under its own search_path, and PostgreSQL
    // re-plans a cached statement whenever the path differs from the one it
    // was planned under: one statement shared by every projection was
    // re-planned at most of its calls.
    let env = TestEnv::new().await;
    let mut conn = env.pg.acquire().await.expect("connection");
    for (schema, name) in [("rm_bills", "bills"), ("rm_sales", "store_daily_sales"), ("rm_bills", "bills")] {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
        sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
            .execute(&mut *tx)
            .await
            .expect("path");
        let at = projectors::checkpoint::lock(&mut tx, name).await.expect("lock");
        projectors::checkpoint::advance(&mut tx, name, at + 1, None).await.expect("advance");
        tx.commit().await.expect("commit");
    }
    let prepared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_prepared_statements
          WHERE (statement LIKE '%public.projection_checkpoints AS c%'
                 OR statement LIKE '%UPDATE public.projection_checkpoints%SET stream_seq%')
            AND statement NOT LIKE '%pg_prepared_statements%'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("prepared statements");
    assert_eq!(prepared, 4, "a lock and an advance per projection");
    let bills: i64 =
        sqlx::query_scalar("SELECT stream_seq FROM projection_checkpoints WHERE projection = 'bills'")
            .fetch_one(&mut *conn)
            .await
            .expect("checkpoint");
    assert_eq!(bills, 2);
    drop(conn);
    env.cleanup().await;
}
