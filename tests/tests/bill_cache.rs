//! The query API's bill cache serves a bill from memory only while the bills
//! runner's announcements say it has not moved. In a test binary of its own,
//! because the metrics it reads are process-wide.

use smartpos_tests::read_side::portal_token;
use smartpos_tests::{ReadSide, TestApp, TestEnv, eventually, metric};
use std::time::Duration;

const HIT: &str = r#"bill_cache_requests_total{outcome="hit"}"#;
const BYPASS: &str = r#"bill_cache_requests_total{outcome="bypass"}"#;

/// Reads the bill twice without a version and says whether the second read
/// came from memory (the hit counter moved).
async fn second_read_is_a_hit(read: &ReadSide, portal: &str, order_id: &str) -> (serde_json::Value, bool) {
    let path = format!("/v1/bills/{order_id}");
    let first = read.get(&path, portal).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let before = metric(&read.metrics().await, HIT);
    let second = read.get(&path, portal).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(first.body, second.body, "two reads of an unchanged bill differ");
    (second.body, metric(&read.metrics().await, HIT) > before)
}

#[tokio::test]
async fn a_cached_bill_is_forgotten_when_the_projection_moves_its_order() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    let order_id = app.create_order(&token).await.str("order_id");
    read.bill_at(&portal, &order_id, 1).await;
    // The projectors' first heartbeat may come a moment after the bill.
    let bill = eventually(Duration::from_secs(5), "a read from memory", || async {
        let (bill, hit) = second_read_is_a_hit(&read, &portal, &order_id).await;
        hit.then_some(bill)
    })
    .await;
    assert_eq!(bill["version"], 1);

    let paid = app.pay(&token, &order_id, "cash", 100, "automatic").await;
    assert_eq!(paid.status, 201, "{}", paid.body);
    // Plain reads, no version asked: only the announcement can make the
    // cache let go of version 1 before its 60 s maximum age.
    let bill = eventually(Duration::from_secs(10), "the payment in a plain read", || async {
        let reply = read.get(&format!("/v1/bills/{order_id}"), &portal).await;
        (reply.body["version"].as_i64() >= Some(2)).then_some(reply.body)
    })
    .await;
    assert_eq!(bill["payments"].as_array().map(Vec::len), Some(1), "{bill}");
    let (again, hit) = second_read_is_a_hit(&read, &portal, &order_id).await;
    assert!(hit, "the new version is not kept");
    assert_eq!(again["version"], bill["version"]);
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn silence_from_the_projectors_stops_the_cache_and_a_new_term_starts_it_afresh() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    // The projectors (with a query API of their own, unused) and, apart, the
    // query API under test, so that the projectors can stop alone.
    let projectors = ReadSide::spawn(&env).await;
    let read = ReadSide::spawn_with(&env, &env.nats_url, false).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    let order_id = app.create_order(&token).await.str("order_id");
    read.bill_at(&portal, &order_id, 1).await;
    eventually(Duration::from_secs(5), "a read from memory", || async {
        second_read_is_a_hit(&read, &portal, &order_id).await.1.then_some(())
    })
    .await;

    // The projectors stop; then the bill changes without an announcement
    // (as if a runner had died between its commit and its notice).
    projectors.stop().await;
    sqlx::query("UPDATE rm_bills.bills SET updated_at = '2001-01-01T00:00:00Z' WHERE order_id = $1::uuid")
        .bind(&order_id)
        .execute(&env.pg)
        .await
        .expect("change the bill");
    let bypassed = metric(&read.metrics().await, BYPASS);
    let path = format!("/v1/bills/{order_id}");
    eventually(Duration::from_secs(10), "the change, once the announcements fell silent", || async {
        let reply = read.get(&path, &portal).await;
        (reply.body["updated_at"] == "2001-01-01T00:00:00Z").then_some(())
    })
    .await;
    assert!(metric(&read.metrics().await, BYPASS) > bypassed, "not answered around the cache");

    // A new runner's term: the cache is trusted again and fills afresh.
    let projectors = ReadSide::spawn(&env).await;
    let bill = eventually(Duration::from_secs(10), "a read from memory again", || async {
        let (bill, hit) = second_read_is_a_hit(&read, &portal, &order_id).await;
        hit.then_some(bill)
    })
    .await;
    assert_eq!(bill["updated_at"], "2001-01-01T00:00:00Z");
    projectors.stop().await;
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_rebuild_of_the_bills_makes_the_query_api_forget_what_it_held() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    let order_id = app.create_order(&token).await.str("order_id");
    smartpos_tests::read_side::caught_up(&env, &env.nats_url).await;
    // A damaged row, read (and so kept) before the operator repairs it.
    sqlx::query("UPDATE rm_bills.bills SET updated_at = '2001-01-01T00:00:00Z' WHERE order_id = $1::uuid")
        .bind(&order_id)
        .execute(&env.pg)
        .await
        .expect("damage the bill");
    let damaged = eventually(Duration::from_secs(5), "the damaged bill from memory", || async {
        let (bill, hit) = second_read_is_a_hit(&read, &portal, &order_id).await;
        (hit && bill["updated_at"] == "2001-01-01T00:00:00Z").then_some(bill)
    })
    .await;
    assert_eq!(damaged["version"], 1);

    let nats = async_nats::connect(&env.nats_url).await.expect("nats");
    let source = projectors::rebuild::Source {
        pg: env.pg.clone(),
        js: async_nats::jetstream::new(nats),
        stream: env.events_stream(),
        subject_prefix: env.subject_prefix.clone(),
        batch: 500,
        stall_limit: projectors::rebuild::STALL_LIMIT,
    };
    projectors::rebuild::rebuild(&source, projectors::Projection::Bills, None, |_| {})
        .await
        .expect("rebuild");
    let path = format!("/v1/bills/{order_id}");
    // Well within the 60 s maximum age: only the rebuild's reset can do it.
    eventually(Duration::from_secs(5), "the repaired bill", || async {
        let reply = read.get(&path, &portal).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        (reply.body["updated_at"] != "2001-01-01T00:00:00Z").then_some(())
    })
    .await;
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}
