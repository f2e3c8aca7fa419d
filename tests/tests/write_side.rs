//! Orders, payments, refunds, idempotency, auth and input validation, end to end
//! through the HTTP API against real PostgreSQL, NATS and Redis.

use posctl::seed::MerchantSpec;
use serde_json::{Value, json};
use smartpos_tests::app::sample_order;
use smartpos_tests::{Reply, TestApp, TestEnv};
use uuid::Uuid;

/// Rows in every table a command can write (the outbox as committed, see
/// [`TestEnv::record_outbox`]: the relay deletes what it published).
async fn footprint(env: &TestEnv) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in ["orders", "payments", "refunds", "outbox_record", "idempotency_keys"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&env.pg)
            .await
            .expect("count");
        counts.push(n);
    }
    counts
}

fn id(reply: &Reply, field: &str) -> String {
    let value = reply.str(field);
    assert!(!value.is_empty(), "no {field} in {}", reply.body);
    value
}

#[tokio::test]
async fn an_order_is_priced_with_tax_rounded_once_per_rate() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let body = json!({"currency": "JPY", "lines": [
        {"sku": "a", "name": "Onigiri", "quantity": 3, "unit_price": 105, "tax_category": "reduced"},
        {"sku": "b", "name": "Beer", "quantity": 2, "unit_price": 333, "tax_category": "standard"}
    ]});
    let reply = app.command("/v1/orders", &token, &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    // Reduced: 315 x 8% = 25.2 -> 25 (per line it would be 3 x 8 = 24); standard: 666 x 10% = 66.6 -> 66.
    assert_eq!(reply.body["subtotal"], 981);
    assert_eq!(reply.body["tax"], 91);
    assert_eq!(reply.body["total"], 1072);
    assert_eq!(reply.body["status"], "open");
    assert_eq!(reply.body["currency"], "JPY");
    assert_eq!(reply.body["version"], 1);
    let stored: (i64, String) = sqlx::query_as("SELECT total, status FROM orders WHERE id = $1::uuid")
        .bind(id(&reply, "order_id"))
        .fetch_one(&env.pg)
        .await
        .expect("order row");
    assert_eq!(stored, (1072, "open".to_owned()));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn currencies_use_their_own_minor_units_and_the_merchants_rounding() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let mut usd = MerchantSpec::tokyo(Uuid::now_v7(), Uuid::now_v7());
    usd.currency = "USD".into();
    usd.time_zone = "America/New_York".into();
    usd.tax_rounding = "half_up".into();
    let usd = env.merchant_with(usd, 1).await;
    let mut kwd = MerchantSpec::tokyo(Uuid::now_v7(), Uuid::now_v7());
    kwd.currency = "KWD".into();
    kwd.tax_rounding = "up".into();
    let kwd = env.merchant_with(kwd, 1).await;

    let token = app.token(&usd, 0).await;
    // 12.25 USD at 10% = 1.225 -> half up 1.23 (banker's would give 1.22).
    let line = json!({"sku": "x", "name": "Sandwich", "quantity": 1, "unit_price": 1225, "tax_category": "standard"});
    let reply = app.command("/v1/orders", &token, &json!({"currency": "USD", "lines": [line]})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!((reply.body["tax"].clone(), reply.body["total"].clone()), (json!(123), json!(1348)));
    // The store sells in USD: a JPY order is refused, pointing at the field.
    let reply = app.command("/v1/orders", &token, &sample_order()).await;
    reply.assert_problem(422, "/validation");
    assert_eq!(reply.body["errors"][0]["pointer"], "/currency");

    let token = app.token(&kwd, 0).await;
    // 1.001 KWD at 8% = 0.08008 -> up 0.081 (81 fils).
    let line =
        json!({"sku": "y", "name": "Tea", "quantity": 1, "unit_price": 1001, "tax_category": "reduced"});
    let reply = app.command("/v1/orders", &token, &json!({"currency": "KWD", "lines": [line]})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!((reply.body["tax"].clone(), reply.body["total"].clone()), (json!(81), json!(1082)));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_order_paid_with_two_tenders_completes_on_the_second_capture() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order = app.create_order(&token).await;
    let order_id = id(&order, "order_id");
    assert_eq!(order.body["total"], 819);

    let cash = app.pay(&token, &order_id, "cash", 500, "automatic").await;
    assert_eq!(cash.status, 201, "{}", cash.body);
    assert_eq!(cash.body["status"], "pending");
    let confirmed = app.approve(&token, &id(&cash, "payment_id")).await;
    assert_eq!(
        (confirmed.status, confirmed.str("status"), confirmed.str("order_status")),
        (200, "captured".into(), "open".into())
    );

    // More than the open balance (319) is refused.
    let too_much = app.pay(&token, &order_id, "card", 320, "manual").await;
    too_much.assert_problem(422, "/amount-exceeds-balance");

    let card = app.pay(&token, &order_id, "card", 319, "manual").await;
    let card_id = id(&card, "payment_id");
    let authorized = app.approve(&token, &card_id).await;
    assert_eq!(
        (authorized.str("status"), authorized.str("order_status")),
        ("authorized".into(), "open".into())
    );
    let captured = app.command(&format!("/v1/payments/{card_id}/capture"), &token, &json!({})).await;
    assert_eq!(captured.status, 200, "{}", captured.body);
    assert_eq!(
        (captured.str("status"), captured.str("order_status")),
        ("captured".into(), "completed".into())
    );

    // A completed order takes no new tenders and cannot be canceled.
    app.pay(&token, &order_id, "cash", 1, "automatic").await.assert_problem(409, "/order-not-open");
    app.command(&format!("/v1/orders/{order_id}/cancel"), &token, &json!({}))
        .await
        .assert_problem(409, "/order-not-open");
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1::uuid")
        .bind(&order_id)
        .fetch_one(&env.pg)
        .await
        .expect("order");
    assert_eq!(status, "completed");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn illegal_payment_transitions_are_409_problems_never_500() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = id(&app.create_order(&token).await, "order_id");
    let p = id(&app.pay(&token, &order_id, "qr", 819, "automatic").await, "payment_id");
    let path = |action: &str| format!("/v1/payments/{p}/{action}");
    app.command(&path("capture"), &token, &json!({})).await.assert_problem(409, "/illegal-transition");
    app.command(&path("refunds"), &token, &json!({"amount": 1}))
        .await
        .assert_problem(409, "/illegal-transition");
    let declined = app
        .command(&path("confirm"), &token, &json!({"result": "declined", "reason": "insufficient funds"}))
        .await;
    assert_eq!((declined.status, declined.str("status")), (200, "failed".into()));
    app.approve(&token, &p).await.assert_problem(409, "/illegal-transition");
    app.command(&path("void"), &token, &json!({})).await.assert_problem(409, "/illegal-transition");
    // A declined tender frees the balance for another one.
    let again = app.pay(&token, &order_id, "emoney", 819, "automatic").await;
    assert_eq!(again.status, 201, "{}", again.body);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn canceling_voids_open_tenders_and_is_refused_once_something_is_captured() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = id(&app.create_order(&token).await, "order_id");
    let p = id(&app.pay(&token, &order_id, "card", 500, "manual").await, "payment_id");
    app.approve(&token, &p).await;
    let canceled = app.command(&format!("/v1/orders/{order_id}/cancel"), &token, &json!({})).await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");
    assert_eq!(canceled.body["voided_payments"], json!([p]));
    let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE id = $1::uuid")
        .bind(&p)
        .fetch_one(&env.pg)
        .await
        .expect("payment");
    assert_eq!(status, "voided");

    let paid = id(&app.create_order(&token).await, "order_id");
    let cash = id(&app.pay(&token, &paid, "cash", 100, "automatic").await, "payment_id");
    app.approve(&token, &cash).await;
    app.command(&format!("/v1/orders/{paid}/cancel"), &token, &json!({}))
        .await
        .assert_problem(409, "/order-has-captured-payments");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn refunds_are_partial_or_full_and_never_exceed_the_captured_amount() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = id(&app.create_order(&token).await, "order_id");
    let body = json!({"order_id": order_id, "method": "card", "amount": 819, "tip": 86});
    let p = id(&app.command("/v1/payments", &token, &body).await, "payment_id");
    app.approve(&token, &p).await;
    let refunds = format!("/v1/payments/{p}/refunds");
    let partial = app.command(&refunds, &token, &json!({"amount": 600, "reason": "cold coffee"})).await;
    assert_eq!(partial.status, 201, "{}", partial.body);
    assert_eq!(
        (partial.body["refunded_total"].clone(), partial.body["currency"].clone()),
        (json!(600), json!("JPY"))
    );
    app.command(&refunds, &token, &json!({"amount": 306}))
        .await
        .assert_problem(422, "/refund-exceeds-captured");
    app.command(&refunds, &token, &json!({"amount": 0})).await.assert_problem(422, "/validation");
    let rest = app.command(&refunds, &token, &json!({"amount": 305})).await;
    assert_eq!(rest.body["refunded_total"], 905, "amount plus tip is refundable: {}", rest.body);
    app.command(&refunds, &token, &json!({"amount": 1}))
        .await
        .assert_problem(422, "/refund-exceeds-captured");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_captured_amount() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let line =
        json!({"sku": "w", "name": "Wine", "quantity": 1, "unit_price": 1000, "tax_category": "standard"});
    let order = app.command("/v1/orders", &token, &json!({"currency": "JPY", "lines": [line]})).await;
    let order_id = id(&order, "order_id");
    let p = id(&app.pay(&token, &order_id, "card", 1000, "automatic").await, "payment_id");
    app.approve(&token, &p).await;

    // Twelve refunds of 300 race for 1000; each retries its own key while it gets 409.
    let path = format!("/v1/payments/{p}/refunds");
    let attempts = (0..12).map(|_| {
        let (app, token, path) = (&app, &token, &path);
        async move {
            let key = Uuid::new_v4().to_string();
            loop {
                let reply = app.post(path, Some(token), Some(&key), &json!({"amount": 300})).await;
                if reply.status != 409 {
                    return reply.status;
                }
            }
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let succeeded = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 422).count();
    assert_eq!((succeeded, refused), (3, 9), "statuses: {statuses:?}");
    let (refunded, summed): (i64, Option<i64>) = sqlx::query_as(
        "SELECT p.refunded, (SELECT sum(amount)::bigint FROM refunds r WHERE r.payment_id = p.id) FROM payments p WHERE p.id = $1::uuid",
    )
    .bind(&p)
    .fetch_one(&env.pg)
    .await
    .expect("payment");
    assert_eq!((refunded, summed), (900, Some(900)));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn another_merchants_or_stores_order_is_404_not_403() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn(&env).await;
    let owner = env.merchant(1).await;
    let stranger = env.merchant(1).await;
    let owner_token = app.token(&owner, 0).await;
    let stranger_token = app.token(&stranger, 0).await;
    let order_id = id(&app.create_order(&owner_token).await, "order_id");
    let p = id(&app.pay(&owner_token, &order_id, "cash", 100, "automatic").await, "payment_id");
    let mut sibling = MerchantSpec::tokyo(owner.merchant_id, Uuid::now_v7());
    sibling.name = "Second store".into();
    let sibling = env.merchant_with(sibling, 1).await;
    let sibling_token = app.token(&sibling, 0).await;
    let before = footprint(&env).await;

    app.command(&format!("/v1/orders/{order_id}/cancel"), &stranger_token, &json!({}))
        .await
        .assert_problem(404, "/not-found");
    app.pay(&stranger_token, &order_id, "cash", 100, "automatic").await.assert_problem(404, "/not-found");
    app.approve(&stranger_token, &p).await.assert_problem(404, "/not-found");
    app.command(&format!("/v1/payments/{p}/refunds"), &stranger_token, &json!({"amount": 1}))
        .await
        .assert_problem(404, "/not-found");
    // Another store of the same merchant is just as foreign.
    app.approve(&sibling_token, &p).await.assert_problem(404, "/not-found");
    assert_eq!(footprint(&env).await, before, "a foreign request wrote something");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn client_generated_ids_are_kept_and_a_reused_order_id_is_409() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = Uuid::new_v4();
    let mut body = sample_order();
    body["order_id"] = json!(order_id);
    let first = app.command("/v1/orders", &token, &body).await;
    assert_eq!(first.str("order_id"), order_id.to_string());
    // An offline terminal retrying after its key expired: the order id still protects it.
    app.command("/v1/orders", &token, &body).await.assert_problem(409, "/already-exists");
    let payment_id = Uuid::new_v4();
    let pay = json!({"payment_id": payment_id, "order_id": order_id, "method": "cash", "amount": 10});
    assert_eq!(app.command("/v1/payments", &token, &pay).await.str("payment_id"), payment_id.to_string());
    app.command("/v1/payments", &token, &pay).await.assert_problem(409, "/already-exists");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_replayed_key_returns_the_identical_response_and_writes_nothing() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let first = app.post("/v1/orders", Some(&token), Some("order-1"), &sample_order()).await;
    assert_eq!(first.status, 201);
    let after_first = footprint(&env).await;
    let replay = app.post("/v1/orders", Some(&token), Some("order-1"), &sample_order()).await;
    assert_eq!((replay.status, &replay.raw), (201, &first.raw), "replay differs");
    assert_eq!(replay.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    // Key order and whitespace do not make a different request.
    let reordered = r#"{ "lines": [{"tax_category":"standard","unit_price":450,"quantity":1,"name":"Coffee","sku":"coffee"},
        {"sku":"bagel","name":"Bagel","quantity":1,"unit_price":300,"tax_category":"reduced"}], "currency": "JPY" }"#;
    let replay =
        app.send("/v1/orders", Some(&token), Some("order-1"), "application/json", reordered.into()).await;
    assert_eq!((replay.status, &replay.raw), (201, &first.raw));
    assert_eq!(footprint(&env).await, after_first, "a replay wrote something");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_422_and_a_missing_key_is_400() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    app.post("/v1/orders", Some(&token), Some("k"), &sample_order()).await;
    let before = footprint(&env).await;
    let mut other = sample_order();
    other["lines"][0]["quantity"] = json!(2);
    app.post("/v1/orders", Some(&token), Some("k"), &other)
        .await
        .assert_problem(422, "/idempotency-key-reused");
    app.post("/v1/orders", Some(&token), None, &sample_order())
        .await
        .assert_problem(400, "/idempotency-key-missing");
    app.post("/v1/orders", Some(&token), Some(""), &sample_order())
        .await
        .assert_problem(400, "/idempotency-key-missing");
    app.post("/v1/orders", Some(&token), Some(&"x".repeat(256)), &sample_order())
        .await
        .assert_problem(400, "/idempotency-key-missing");
    assert_eq!(footprint(&env).await, before);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_key_still_in_flight_is_409_and_keys_are_scoped_per_caller() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(2).await;
    let token = app.token(&m, 0).await;
    let other_device = app.token(&m, 1).await;
    // Hold the key's claim, as a first request still running would.
    let device = m.devices[0].0;
    let mut holder = env.pg.begin().await.expect("tx");
    let _: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(format!("device:{device}\nsame-key"))
        .fetch_one(&mut *holder)
        .await
        .expect("lock");
    app.post("/v1/orders", Some(&token), Some("same-key"), &sample_order())
        .await
        .assert_problem(409, "/idempotency-key-in-flight");
    // The same key from another device is another key.
    let other = app.post("/v1/orders", Some(&other_device), Some("same-key"), &sample_order()).await;
    assert_eq!(other.status, 201, "{}", other.body);
    holder.rollback().await.expect("release");
    let first = app.post("/v1/orders", Some(&token), Some("same-key"), &sample_order()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_ne!(first.str("order_id"), other.str("order_id"));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_refused_command_replays_its_refusal() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = id(&app.create_order(&token).await, "order_id");
    let body = json!({"order_id": order_id, "method": "cash", "amount": 5000});
    let first = app.post("/v1/payments", Some(&token), Some("too-much"), &body).await;
    first.assert_problem(422, "/amount-exceeds-balance");
    let replay = app.post("/v1/payments", Some(&token), Some("too-much"), &body).await;
    assert_eq!((replay.status, &replay.raw), (422, &first.raw));
    assert_eq!(replay.content_type(), "application/problem+json");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_a_problem_and_writes_nothing() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = id(&app.create_order(&token).await, "order_id");
    let before = footprint(&env).await;
    let t = Some(token.as_str());
    let key = || Some("bad-input");

    let malformed =
        app.send("/v1/orders", t, key(), "application/json", b"{\"currency\": \"JPY\", ".to_vec()).await;
    malformed.assert_problem(400, "/malformed-body");
    let huge = json!({"currency": "JPY", "lines": [{"sku": "a", "name": "x".repeat(70 * 1024), "quantity": 1, "unit_price": 1, "tax_category": "standard"}]});
    app.post("/v1/orders", t, key(), &huge).await.assert_problem(413, "/body-too-large");
    app.send("/v1/orders", t, key(), "text/plain", sample_order().to_string().into())
        .await
        .assert_problem(415, "/unsupported-media-type");

    let mut wrong_type = sample_order();
    wrong_type["lines"][1]["quantity"] = json!("two");
    let reply = app.post("/v1/orders", t, key(), &wrong_type).await;
    reply.assert_problem(422, "/validation");
    assert_eq!(reply.body["errors"][0]["pointer"], "/lines/1/quantity");

    let mut out_of_range = sample_order();
    out_of_range["lines"][0]["quantity"] = json!(0);
    out_of_range["lines"][1]["unit_price"] = json!(-300);
    out_of_range["lines"][1]["tax_category"] = json!("luxury");
    let reply = app.post("/v1/orders", t, key(), &out_of_range).await;
    reply.assert_problem(422, "/validation");
    let pointers: Vec<&str> = reply.body["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["pointer"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(pointers, ["/lines/0/quantity", "/lines/1/unit_price", "/lines/1/tax_category"]);

    let mut unknown_field = sample_order();
    unknown_field["discount"] = json!(100);
    app.post("/v1/orders", t, key(), &unknown_field).await.assert_problem(422, "/validation");
    app.post("/v1/orders", t, key(), &json!({"currency": "JPY", "lines": []}))
        .await
        .assert_problem(422, "/validation");
    app.post("/v1/orders", t, key(), &json!({"currency": "XYZ", "lines": sample_order()["lines"]}))
        .await
        .assert_problem(422, "/validation");

    let negative = json!({"order_id": order_id, "method": "cash", "amount": -100});
    let reply = app.post("/v1/payments", t, key(), &negative).await;
    reply.assert_problem(422, "/validation");
    assert_eq!(reply.body["errors"][0]["pointer"], "/amount");
    let float = json!({"order_id": order_id, "method": "cash", "amount": 10.5});
    app.post("/v1/payments", t, key(), &float).await.assert_problem(422, "/validation");
    let method = json!({"order_id": order_id, "method": "cheque", "amount": 10});
    app.post("/v1/payments", t, key(), &method).await.assert_problem(422, "/validation");
    let negative_tip = json!({"order_id": order_id, "method": "cash", "amount": 10, "tip": -1});
    app.post("/v1/payments", t, key(), &negative_tip).await.assert_problem(422, "/validation");
    app.post("/v1/payments/not-a-uuid/confirm", t, key(), &json!({"result": "approved"}))
        .await
        .assert_problem(404, "/not-found");
    let p = Uuid::new_v4();
    app.post(&format!("/v1/payments/{p}/confirm"), t, key(), &json!({"result": "maybe"}))
        .await
        .assert_problem(422, "/validation");

    assert_eq!(footprint(&env).await, before, "bad input wrote something");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn commands_need_a_valid_device_token() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let before = footprint(&env).await;
    let key = Some("auth");
    let reply = app.post("/v1/orders", None, key, &sample_order()).await;
    reply.assert_problem(401, "/unauthenticated");
    assert_eq!(reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    app.post("/v1/orders", Some("garbage"), key, &sample_order())
        .await
        .assert_problem(401, "/unauthenticated");
    // Expired, and signed by an unknown key.
    let mut claims =
        command_api::auth::device_claims(m.devices[0].0, m.merchant_id, m.store_id, chrono::Utc::now());
    claims.exp = chrono::Utc::now().timestamp() - 60;
    let expired = env.keys.issue(&claims).expect("token");
    app.post("/v1/orders", Some(&expired), key, &sample_order())
        .await
        .assert_problem(401, "/unauthenticated");
    let foreign = command_api::auth::JwtKeys::parse("other:another-signing-key-that-is-long-enough", None)
        .expect("keys");
    let forged = foreign
        .issue(&command_api::auth::device_claims(
            m.devices[0].0,
            m.merchant_id,
            m.store_id,
            chrono::Utc::now(),
        ))
        .expect("t");
    app.post("/v1/orders", Some(&forged), key, &sample_order()).await.assert_problem(401, "/unauthenticated");
    // A portal token may not ring up orders.
    let portal =
        posctl::seed::staff_token(&env.keys, command_api::auth::Role::Portal, "portal", Some(m.merchant_id))
            .expect("t");
    app.post("/v1/orders", Some(&portal), key, &sample_order()).await.assert_problem(403, "/forbidden");
    // Wrong secrets and unknown devices look the same.
    let (device, _) = &m.devices[0];
    let wrong = app
        .post("/v1/devices/token", None, None, &json!({"device_id": device, "device_secret": "nope"}))
        .await;
    wrong.assert_problem(401, "/unauthenticated");
    let unknown = app
        .post("/v1/devices/token", None, None, &json!({"device_id": Uuid::new_v4(), "device_secret": "nope"}))
        .await;
    assert_eq!(unknown.raw, wrong.raw);
    assert_eq!(footprint(&env).await, before);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_device_token_lives_90_seconds_and_names_merchant_store_and_device() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let (device, secret) = &m.devices[0];
    let reply = app
        .post("/v1/devices/token", None, None, &json!({"device_id": device, "device_secret": secret}))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        (reply.body["token_type"].clone(), reply.body["expires_in"].clone()),
        (json!("Bearer"), json!(90))
    );
    let claims = env.keys.verify(&reply.str("access_token")).expect("valid token");
    assert_eq!(claims.exp - claims.iat, 90);
    assert_eq!(
        (claims.sub, claims.mer, claims.sto),
        (device.to_string(), Some(m.merchant_id), Some(m.store_id))
    );
    let stored: Value = sqlx::query_scalar("SELECT to_jsonb(secret_hash) FROM devices WHERE id = $1")
        .bind(device)
        .fetch_one(&env.pg)
        .await
        .expect("device");
    assert!(!stored.to_string().contains(secret.as_str()), "the secret is stored in clear");
    app.stop().await;
    env.cleanup().await;
}
