//! Settlements: a closed day settles once, to totals the test computes
//! itself; a refund after the day closed adjusts the next day; a duplicate
//! job changes nothing; a re-run makes a new version.

use chrono::{Days, NaiveDate, NaiveTime, TimeZone, Utc};
use serde_json::{Value, json};
use smartpos_tests::read_side::Workers;
use smartpos_tests::{TestApp, TestEnv, eventually, stream};
use std::time::Duration;
use uuid::Uuid;
use workers::settlements::{self, Reason, SettlementJob};

const TOKYO: chrono_tz::Tz = chrono_tz::Asia::Tokyo;

fn four() -> NaiveTime {
    NaiveTime::from_hms_opt(4, 0, 0).unwrap_or_default()
}

/// One minute after `day` closed (04:00 the next morning in Tokyo).
fn after_close(day: NaiveDate) -> chrono::DateTime<Utc> {
    let next = day.checked_add_days(Days::new(1)).unwrap_or(day);
    TOKYO
        .from_local_datetime(&next.and_time(four()))
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
        + chrono::Duration::minutes(1)
}

/// Sells one line of `unit_price` (10% tax) paid by `method`; returns the payment id.
async fn sell(app: &TestApp, token: &str, unit_price: i64, method: &str, tip: i64, capture: &str) -> String {
    let line = json!({"sku": "x", "name": "Item", "quantity": 1, "unit_price": unit_price, "tax_category": "standard"});
    let order = app.command("/v1/orders", token, &json!({"currency": "JPY", "lines": [line]})).await;
    let (order_id, total) = (order.str("order_id"), order.body["total"].as_i64().unwrap_or_default());
    let body =
        json!({"order_id": order_id, "method": method, "amount": total, "tip": tip, "capture": capture});
    let payment = app.command("/v1/payments", token, &body).await.str("payment_id");
    app.approve(token, &payment).await;
    payment
}

async fn settlement(
    env: &TestEnv,
    store: Uuid,
    day: NaiveDate,
    version: i32,
) -> Option<(Value, i64, String)> {
    sqlx::query_as::<_, (sqlx::types::Json<Value>, i64, String)>(
        "SELECT lines, net, csv_path FROM settlements WHERE store_id = $1 AND business_date = $2 AND version = $3",
    )
    .bind(store)
    .bind(day)
    .bind(version)
    .fetch_optional(&env.pg)
    .await
    .ok()
    .flatten()
    .map(|(l, n, p)| (l.0, n, p))
}

fn line<'a>(lines: &'a Value, method: &str, adjustment_of: Option<NaiveDate>) -> &'a Value {
    lines
        .as_array()
        .and_then(|a| a.iter().find(|l| l["method"] == method && l["adjustment_of"] == json!(adjustment_of)))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_closed_day_settles_once_and_a_late_refund_adjusts_the_next_day() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let workers = Workers::spawn(&env, None, None, 3).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let day = events::calendar::business_date(Utc::now(), TOKYO, four());

    sell(&app, &token, 1000, "cash", 0, "automatic").await; // 1100
    let card = sell(&app, &token, 2000, "card", 150, "automatic").await; // 2200 + 150 tip
    let emoney = sell(&app, &token, 300, "emoney", 0, "automatic").await; // 330
    app.command(&format!("/v1/payments/{emoney}/refunds"), &token, &json!({"amount": 100})).await;
    let qr = sell(&app, &token, 500, "qr", 0, "manual").await; // authorized only
    app.command(&format!("/v1/payments/{qr}/void"), &token, &json!({})).await;

    // The day closes.
    let due =
        settlements::schedule::enqueue_due(&env.pg, &env.subject_prefix, after_close(day), Duration::ZERO)
            .await
            .expect("schedule");
    assert_eq!(due, vec![(m.store_id, day)]);
    let (lines, net, csv_path) =
        eventually(Duration::from_secs(20), "the day's settlement", || settlement(&env, m.store_id, day, 1))
            .await;
    let expect = |method: &str, sales: i64, gross: i64, tips: i64, refunds: (i64, i64), voids: i64| {
        let l = line(&lines, method, None);
        assert_eq!(
            (
                l["sales_count"].clone(),
                l["gross"].clone(),
                l["tips"].clone(),
                l["refund_count"].clone(),
                l["refunds"].clone(),
                l["void_count"].clone(),
                l["net"].clone()
            ),
            (
                json!(sales),
                json!(gross),
                json!(tips),
                json!(refunds.0),
                json!(refunds.1),
                json!(voids),
                json!(gross + tips - refunds.1)
            ),
            "{method}: {l}"
        );
    };
    expect("cash", 1, 1100, 0, (0, 0), 0);
    expect("card", 1, 2200, 150, (0, 0), 0);
    expect("emoney", 1, 330, 0, (1, 100), 0);
    expect("qr", 0, 0, 0, (0, 0), 1);
    assert_eq!(net, 1100 + 2350 + 230);
    let csv = std::fs::read_to_string(&csv_path).expect("the CSV exists");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("store_id,business_date,version,method,adjustment_of,currency,"), "{csv}");

    // Nightly consumers hear about it on the event stream.
    eventually(Duration::from_secs(10), "settlement.completed on the stream", || async {
        let stored = stream::read_all(&env.nats_url, &env.events_stream()).await;
        stored.iter().any(|s| s.envelope.kind == events::EventKind::SettlementCompleted).then_some(())
    })
    .await;

    // The scheduler does not enqueue it twice; a duplicate job changes nothing.
    let again =
        settlements::schedule::enqueue_due(&env.pg, &env.subject_prefix, after_close(day), Duration::ZERO)
            .await
            .expect("again");
    assert!(again.is_empty());
    let duplicate = SettlementJob {
        job_id: Uuid::now_v7(),
        merchant_id: m.merchant_id,
        store_id: m.store_id,
        business_date: day,
        reason: Reason::Scheduled,
    };
    let mut tx = env.pg.begin().await.expect("tx");
    settlements::enqueue(&mut tx, &env.subject_prefix, &duplicate).await.expect("enqueue");
    tx.commit().await.expect("commit");
    eventually(Duration::from_secs(20), "the duplicate job to run", || async {
        let done: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM job_runs WHERE job_id = $1)")
            .bind(duplicate.job_id)
            .fetch_one(&env.pg)
            .await
            .ok()?;
        done.then_some(())
    })
    .await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM settlements WHERE store_id = $1")
        .bind(m.store_id)
        .fetch_one(&env.pg)
        .await
        .expect("count");
    assert_eq!(count, 1);

    // A refund after the day closed (it is still `day` on the clock) is booked on the next day.
    let late = app.command(&format!("/v1/payments/{card}/refunds"), &token, &json!({"amount": 500})).await;
    assert_eq!(late.status, 201, "{}", late.body);
    let next = day.checked_add_days(Days::new(1)).expect("next day");
    let due =
        settlements::schedule::enqueue_due(&env.pg, &env.subject_prefix, after_close(next), Duration::ZERO)
            .await
            .expect("schedule");
    assert_eq!(due, vec![(m.store_id, next)]);
    let (next_lines, next_net, _) = eventually(Duration::from_secs(20), "the next day's settlement", || {
        settlement(&env, m.store_id, next, 1)
    })
    .await;
    let adjustment = line(&next_lines, "card", Some(day));
    assert_eq!(
        (adjustment["refunds"].clone(), adjustment["net"].clone()),
        (json!(500), json!(-500)),
        "{next_lines}"
    );
    assert_eq!(next_net, -500);
    let (_, unchanged_net, _) = settlement(&env, m.store_id, day, 1).await.expect("still there");
    assert_eq!(unchanged_net, net, "a closed day never changes");

    // An operator re-runs the day: a new version, the old one kept.
    let out = env.posctl(&["resettle", "--store", &m.store_id.to_string(), "--date", &day.to_string()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (v2_lines, v2_net, v2_csv) =
        eventually(Duration::from_secs(20), "version 2", || settlement(&env, m.store_id, day, 2)).await;
    assert_eq!((v2_lines, v2_net), (lines.clone(), net));
    assert_ne!(v2_csv, csv_path);
    assert!(settlement(&env, m.store_id, day, 1).await.is_some());
    workers.stop().await;
    app.stop().await;
    env.cleanup().await;
}
