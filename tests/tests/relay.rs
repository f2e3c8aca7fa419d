//! The outbox relay: every accepted command's events reach JetStream exactly
//! once and in per-aggregate order, through NATS outages and relay crashes.

use command_api::config::RelayConfig;
use command_api::relay::Relay;
use events::{DomainEvent, EventKind};
use serde_json::json;
use smartpos_tests::nats_server::{NatsServer, free_port};
use smartpos_tests::stream::{self, Stored};
use smartpos_tests::{TestApp, TestEnv, eventually, process};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// Rows still to publish: the relay deletes each once JetStream stored it.
async fn unpublished(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&env.pg).await.expect("count")
}

/// Every event committed so far (see [`TestEnv::record_outbox`]).
async fn outbox_ids(env: &TestEnv) -> HashSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>("SELECT event_id FROM outbox_record")
        .fetch_all(&env.pg)
        .await
        .expect("ids")
        .into_iter()
        .collect()
}

/// Waits until the relay has published every outbox row, then reads the stream.
async fn drained(env: &TestEnv, nats_url: &str) -> Vec<Stored> {
    let expected = outbox_ids(env).await.len() as u64;
    eventually(Duration::from_secs(30), "the outbox to drain onto the stream", || async {
        let done =
            unpublished(env).await == 0 && stream::count(nats_url, &env.events_stream()).await >= expected;
        done.then_some(())
    })
    .await;
    stream::read_all(nats_url, &env.events_stream()).await
}

/// Exactly the outbox's events, each once, and per aggregate in sequence 1, 2, 3, ...
async fn assert_exactly_once_in_order(env: &TestEnv, stored: &[Stored]) {
    let ids: Vec<Uuid> = stored.iter().map(|s| s.envelope.id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "the stream holds duplicates");
    assert_eq!(unique, outbox_ids(env).await, "stream and outbox disagree");
    let mut next: HashMap<Uuid, i64> = HashMap::new();
    for s in stored {
        let expected = next.entry(s.envelope.subject).or_insert(1);
        assert_eq!(
            s.envelope.sequence, *expected,
            "aggregate {} out of order at stream seq {}",
            s.envelope.subject, s.seq
        );
        *expected += 1;
    }
}

/// Rings up and fully pays `n` orders: five events each.
async fn sell(app: &TestApp, token: &str, n: usize) -> Vec<String> {
    let mut orders = Vec::new();
    for _ in 0..n {
        let order = app.create_order(token).await;
        assert_eq!(order.status, 201, "{}", order.body);
        let order_id = order.str("order_id");
        let payment = app.pay(token, &order_id, "card", 819, "automatic").await;
        assert_eq!(payment.status, 201, "{}", payment.body);
        let confirmed = app.approve(token, &payment.str("payment_id")).await;
        assert_eq!(confirmed.str("order_status"), "completed");
        orders.push(order_id);
    }
    orders
}

#[tokio::test]
async fn every_event_reaches_the_stream_once_in_order_as_a_binary_cloudevent() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = app.create_order(&token).await.str("order_id");
    let cash = app.pay(&token, &order_id, "cash", 300, "automatic").await.str("payment_id");
    let card = app.pay(&token, &order_id, "card", 519, "manual").await.str("payment_id");
    app.approve(&token, &cash).await;
    app.approve(&token, &card).await;
    app.command(&format!("/v1/payments/{card}/capture"), &token, &json!({})).await;

    let stored = drained(&env, &env.nats_url).await;
    assert_exactly_once_in_order(&env, &stored).await;
    let order = Uuid::parse_str(&order_id).expect("uuid");
    let of_order: Vec<&Stored> = stored.iter().filter(|s| s.envelope.subject == order).collect();
    let kinds: Vec<EventKind> = of_order.iter().map(|s| s.envelope.kind).collect();
    use EventKind::*;
    assert_eq!(
        kinds,
        [
            OrderCreated,
            PaymentCreated,
            PaymentCreated,
            PaymentAuthorized,
            PaymentCaptured,
            PaymentAuthorized,
            PaymentCaptured,
            OrderCompleted
        ]
    );
    let (device, _) = &m.devices[0];
    for s in &of_order {
        let header = |name: &str| s.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(header("Nats-Msg-Id"), Some(s.envelope.id.to_string()), "message id is the event id");
        assert_eq!(
            header("ce-source"),
            Some(format!("/merchants/{}/stores/{}/devices/{device}", m.merchant_id, m.store_id))
        );
        assert!(
            s.headers.iter().all(|(k, _)| k == "Nats-Msg-Id" || k == &k.to_lowercase()),
            "{:?}",
            s.headers
        );
        let kind = s.envelope.kind;
        assert_eq!(
            s.subject,
            format!("{}.events.{}.{}.{}", env.subject_prefix, m.merchant_id, kind.entity(), kind.action())
        );
        let event = DomainEvent::from_data(&kind.ce_type(), &s.payload).expect("payload matches its type");
        assert_eq!(event.aggregate_id(), order);
    }
    let created = DomainEvent::from_data(&OrderCreated.ce_type(), &of_order[0].payload).expect("decodes");
    let DomainEvent::OrderCreated(created) = created else { panic!("not an order.created") };
    assert_eq!((created.total, created.currency.code()), (819, "JPY"));
    // The token exchange is an event too, on the device's own sequence.
    assert!(stored.iter().any(|s| s.envelope.kind == DeviceTokenIssued && s.envelope.subject == *device));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn commands_are_accepted_while_nats_is_down_and_the_backlog_drains_once_in_order() {
    let env = TestEnv::without_streams().await;
    env.record_outbox().await;
    let mut nats = NatsServer::start().await;
    env.apply_streams(&nats.url).await;
    let app = TestApp::spawn_with(&env, &nats.url, true).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    sell(&app, &token, 3).await;
    drained(&env, &nats.url).await;

    nats.kill().await;
    let during_outage = sell(&app, &token, 5).await;
    assert_eq!(during_outage.len(), 5, "every command was accepted during the outage");
    assert!(unpublished(&env).await >= 25, "the outage's events wait in the outbox");
    let ready = app.get("/ready").await;
    assert_eq!((ready.status, ready.body["checks"]["nats"].clone()), (200, json!("down")), "{}", ready.body);

    nats.resume().await;
    let stored = drained(&env, &nats.url).await;
    assert_exactly_once_in_order(&env, &stored).await;
    for order in during_outage {
        let id = Uuid::parse_str(&order).expect("uuid");
        assert_eq!(stored.iter().filter(|s| s.envelope.subject == id).count(), 5);
    }
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_relay_that_dies_between_publish_and_delete_publishes_no_duplicate() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn_with(&env, &env.nats_url, false).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    sell(&app, &token, 4).await;
    let total = outbox_ids(&env).await.len();

    let nats = async_nats::connect(&env.nats_url).await.expect("nats");
    let cfg = RelayConfig {
        enabled: true,
        batch: 512,
        poll_interval: Duration::from_millis(100),
        linger: Duration::from_millis(5),
    };
    let relay = Relay::new(env.pg.clone(), async_nats::jetstream::new(nats), cfg);
    // The first relay publishes everything, then "dies" before deleting anything.
    let mut conn = env.pg.acquire().await.expect("connection");
    let rows = relay.fetch(&mut conn).await.expect("rows");
    assert_eq!(rows.len(), total);
    let (acked, failure) = relay.publish(&rows).await;
    assert!(failure.is_none() && acked.len() == total);
    assert_eq!(unpublished(&env).await as usize, total, "nothing was deleted");
    // Its successor publishes the same rows again and deletes them.
    assert_eq!(relay.drain_once(&mut conn).await.expect("drain"), total);
    assert_eq!(unpublished(&env).await, 0);
    let stored = stream::read_all(&env.nats_url, &env.events_stream()).await;
    assert_eq!(stored.len(), total, "the republished rows were deduplicated by Nats-Msg-Id");
    assert_exactly_once_in_order(&env, &stored).await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_command_api_killed_again_and_again_while_relaying_loses_and_duplicates_nothing() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    // Build a backlog with the relay off, then let a real process drain it while we SIGKILL it.
    let app = TestApp::spawn_with(&env, &env.nats_url, false).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    sell(&app, &token, 60).await;
    app.stop().await;
    let vars = vec![
        ("DATABASE_URL", env.database_url.clone()),
        ("NATS_URL", env.nats_url.clone()),
        ("REDIS_URL", env.redis_url.clone()),
        ("NATS_SUBJECT_PREFIX", env.subject_prefix.clone()),
        ("NATS_STREAM_PREFIX", env.stream_prefix.clone()),
        ("JWT_KEYS", smartpos_tests::env::JWT_KEYS.to_owned()),
        ("RELAY_BATCH", "5".to_owned()),
        ("RELAY_POLL_MS", "50".to_owned()),
    ];
    let total = unpublished(&env).await;
    let mut kills = 0;
    let mut killed_mid_drain = false;
    for round in 0..40u64 {
        let left = unpublished(&env).await;
        killed_mid_drain |= kills > 0 && left > 0 && left < total;
        if left == 0 {
            break;
        }
        let mut env_vars = vars.clone();
        env_vars.push(("COMMAND_API_ADDR", format!("127.0.0.1:{}", free_port())));
        let mut child = process::spawn("command-api", &env_vars);
        tokio::time::sleep(Duration::from_millis(40 + (round * 37) % 160)).await;
        child.kill().await.expect("SIGKILL");
        kills += 1;
    }
    assert!(killed_mid_drain, "no kill landed while the relay was draining ({kills} kills)");
    let mut env_vars = vars.clone();
    env_vars.push(("COMMAND_API_ADDR", format!("127.0.0.1:{}", free_port())));
    let mut last = process::spawn("command-api", &env_vars);
    let stored = drained(&env, &env.nats_url).await;
    last.kill().await.expect("kill");
    assert_eq!(stored.len(), outbox_ids(&env).await.len());
    assert_exactly_once_in_order(&env, &stored).await;
    env.cleanup().await;
}

#[tokio::test]
async fn published_rows_leave_the_outbox_and_the_janitor_deletes_expired_idempotency_records() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    sell(&app, &token, 2).await;
    let stored = drained(&env, &env.nats_url).await;
    assert_exactly_once_in_order(&env, &stored).await;
    assert_eq!(unpublished(&env).await, 0, "published rows stay behind");
    // Idempotency records past their lifetime go; younger ones stay.
    let keys = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&env.pg)
            .await
            .expect("n")
    };
    let before = keys().await;
    assert!(before >= 6, "{before} keys");
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '49 hours'
          WHERE ctid IN (SELECT ctid FROM idempotency_keys LIMIT 3)",
    )
    .execute(&env.pg)
    .await
    .expect("age keys");
    let deleted = command_api::janitor::sweep(&env.pg, Duration::from_secs(48 * 3600)).await.expect("sweep");
    assert_eq!((deleted, keys().await), (3, before - 3));
    app.stop().await;
    env.cleanup().await;
}
