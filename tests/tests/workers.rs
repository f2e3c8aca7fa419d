//! Workers with real transports: an SMTP server and an HTTP endpoint started
//! by the test receive exactly one receipt per completed order, through
//! failures; failing jobs reach the dead letters and a redrive delivers once.

use serde_json::{Value, json};
use smartpos_tests::app::sample_order;
use smartpos_tests::read_side::Workers;
use smartpos_tests::sinks::{SmtpSink, WebhookSink};
use smartpos_tests::{TestApp, TestEnv, eventually, process};
use std::collections::HashSet;
use std::time::Duration;
use workers::dead_letters::{DeadLetters, Filter};

/// Rings up the sample order (819 JPY) with `customer`, paying it in full unless `pay` is false.
async fn order_with(app: &TestApp, token: &str, customer: Value, pay: bool) -> String {
    let mut body = sample_order();
    if !customer.is_null() {
        body["customer"] = customer;
    }
    let order = app.command("/v1/orders", token, &body).await;
    assert_eq!(order.status, 201, "{}", order.body);
    let order_id = order.str("order_id");
    if pay {
        let p = app.pay(token, &order_id, "card", 819, "automatic").await.str("payment_id");
        assert_eq!(app.approve(token, &p).await.str("order_status"), "completed");
    }
    order_id
}

async fn work_pending(env: &TestEnv) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(&env.nats_url).await.expect("nats"));
    let mut s = js.get_stream(format!("{}_WORK_RECEIPTS", env.stream_prefix)).await.expect("stream");
    s.info().await.expect("info").state.messages
}

async fn dead_letters(env: &TestEnv) -> DeadLetters {
    let js = async_nats::jetstream::new(async_nats::connect(&env.nats_url).await.expect("nats"));
    DeadLetters { js, pg: env.pg.clone(), stream_prefix: env.stream_prefix.clone() }
}

#[tokio::test]
async fn every_completed_order_with_a_contact_gets_exactly_one_receipt_through_failures() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let smtp = SmtpSink::start().await;
    let sms = WebhookSink::start().await;
    smtp.failures.fail_next(2);
    sms.failures.fail_next(2);
    let workers = Workers::spawn(&env, Some(smtp.url.clone()), Some(sms.url.clone()), 6).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let both = json!({"email": "hanako@example.jp", "phone": "+819012345678"});
    let mut mailed = Vec::new();
    for _ in 0..3 {
        mailed.push(order_with(&app, &token, both.clone(), true).await);
    }
    mailed.push(order_with(&app, &token, json!({"email": "taro@example.jp"}), true).await);
    order_with(&app, &token, Value::Null, true).await; // no contact: no receipt
    order_with(&app, &token, both.clone(), false).await; // not completed: no receipt

    eventually(Duration::from_secs(30), "every receipt job to finish", || async {
        let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs").fetch_one(&env.pg).await.ok()?;
        (runs == 4 && work_pending(&env).await == 0).then_some(())
    })
    .await;
    let messages = smtp.received();
    assert_eq!(messages.len(), 4, "one e-mail per completed order with an e-mail address");
    for order_id in &mailed {
        assert_eq!(messages.iter().filter(|m| m.contains(order_id.as_str())).count(), 1, "order {order_id}");
    }
    assert!(messages.iter().all(|m| m.contains("819 JPY") && m.contains("Message-ID: <")), "{}", messages[0]);
    assert_eq!(
        smtp.refused.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the first two attempts were refused"
    );
    let delivered = sms.delivered();
    assert_eq!(delivered.len(), 3, "one SMS per completed order with a phone");
    let keys: HashSet<&str> = delivered.iter().map(|c| c.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), 3, "each SMS carries its own idempotency key");
    assert!(
        delivered.iter().all(|c| c.body["to"] == "+819012345678"
            && c.body["text"].as_str().is_some_and(|t| t.contains("819 JPY")))
    );
    // The rendered receipts are stored, text and HTML.
    for order_id in &mailed {
        let folder = workers.receipt_dir.join(m.merchant_id.to_string());
        assert!(
            folder.join(format!("{order_id}.txt")).exists()
                && folder.join(format!("{order_id}.html")).exists()
        );
    }
    workers.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_provider_that_always_fails_dead_letters_the_job_and_a_redrive_delivers_once() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let sms = WebhookSink::start().await;
    sms.failures.fail_always();
    let workers = Workers::spawn(&env, None, Some(sms.url.clone()), 3).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    order_with(&app, &token, json!({"phone": "+819012345678"}), true).await;
    let dlq = dead_letters(&env).await;
    let letters = eventually(Duration::from_secs(30), "the job to be dead-lettered", || async {
        let l = dlq.list(&Filter::default()).await.ok()?;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!((letter.kind.as_str(), letter.attempts), ("receipts", 3));
    assert!(letter.error.contains("503"), "{}", letter.error);
    assert_eq!(letter.original_subject, format!("{}.work.receipts.{}", env.subject_prefix, m.merchant_id));
    assert_eq!(letter.merchant, m.merchant_id.to_string());
    assert!(!letter.error.contains("+8190"), "the error must not quote the customer's phone");
    assert_eq!(sms.calls().len(), 3, "three attempts, then no more");
    assert_eq!(work_pending(&env).await, 0, "the failed job left the work queue");

    let vars = [
        ("DATABASE_URL", env.database_url.clone()),
        ("NATS_URL", env.nats_url.clone()),
        ("NATS_SUBJECT_PREFIX", env.subject_prefix.clone()),
        ("NATS_STREAM_PREFIX", env.stream_prefix.clone()),
    ];
    let posctl = |args: Vec<String>| {
        let vars = vars.clone();
        async move {
            let out = tokio::process::Command::new(process::binary("posctl"))
                .args(&args)
                .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
                .output()
                .await
                .expect("posctl runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let seq = letter.seq.to_string();
    let listed = posctl(vec![
        "dlq".into(),
        "list".into(),
        "--kind".into(),
        "receipts".into(),
        "--error".into(),
        "503".into(),
    ])
    .await;
    assert!(listed.lines().any(|l| l.trim_start().starts_with(&seq)), "{listed}");
    let none = posctl(vec!["dlq".into(), "list".into(), "--kind".into(), "settlements".into()]).await;
    assert!(!none.lines().any(|l| l.trim_start().starts_with(&seq)), "{none}");
    let shown: Value =
        serde_json::from_str(&posctl(vec!["dlq".into(), "show".into(), seq.clone()]).await).expect("json");
    assert_eq!(shown["payload"]["phone"], "+819012345678");

    // A dry run republishes nothing.
    let js = async_nats::jetstream::new(async_nats::connect(&env.nats_url).await.expect("nats"));
    let mut work = js.get_stream(format!("{}_WORK_RECEIPTS", env.stream_prefix)).await.expect("stream");
    let before = work.info().await.expect("info").state.last_sequence;
    let dry = posctl(vec!["dlq".into(), "redrive".into(), seq.clone(), "--dry-run".into()]).await;
    assert!(dry.contains("would redrive"), "{dry}");
    assert_eq!(work.info().await.expect("info").state.last_sequence, before);

    sms.failures.recover();
    let done =
        posctl(vec!["dlq".into(), "redrive".into(), seq.clone(), "--operator".into(), "alice".into()]).await;
    assert!(done.contains("redrove"), "{done}");
    eventually(Duration::from_secs(20), "the redriven receipt to be delivered", || async {
        (sms.delivered().len() == 1 && work_pending(&env).await == 0).then_some(())
    })
    .await;
    let who: String = sqlx::query_scalar("SELECT redriven_by FROM dead_letter_redrives WHERE dlq_seq = $1")
        .bind(letter.seq as i64)
        .fetch_one(&env.pg)
        .await
        .expect("recorded");
    assert_eq!(who, "alice");
    assert_eq!(dlq.list(&Filter::default()).await.expect("list")[0].redriven_by.as_deref(), Some("alice"));
    workers.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_without_retrying() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let sms = WebhookSink::start().await;
    sms.fail_status.store(400, std::sync::atomic::Ordering::SeqCst);
    sms.failures.fail_always();
    let workers = Workers::spawn(&env, None, Some(sms.url.clone()), 6).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    order_with(&app, &token, json!({"phone": "+819012345678"}), true).await;
    let dlq = dead_letters(&env).await;
    let letters = eventually(Duration::from_secs(20), "the job to be dead-lettered", || async {
        let l = dlq.list(&Filter::default()).await.ok()?;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(letters[0].attempts, 1);
    assert!(letters[0].error.starts_with("permanent"), "{}", letters[0].error);
    assert_eq!(sms.calls().len(), 1);
    workers.stop().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_mid_job_leaves_it_to_be_redelivered_and_the_effect_happens_once() {
    let env = TestEnv::new().await;
    // Redeliver quickly once the worker stops reporting progress.
    let js = async_nats::jetstream::new(async_nats::connect(&env.nats_url).await.expect("nats"));
    let stream = js.get_stream(format!("{}_WORK_RECEIPTS", env.stream_prefix)).await.expect("stream");
    let name = format!("{}_WORKER_RECEIPTS", env.stream_prefix);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(&name).await.expect("consumer");
    let mut config = consumer.info().await.expect("info").config.clone();
    config.ack_wait = Duration::from_secs(1);
    stream.update_consumer(config).await.expect("shorter ack wait");

    let app = TestApp::spawn(&env).await;
    let sms = WebhookSink::start().await;
    sms.hold_first_ms.store(3_000, std::sync::atomic::Ordering::SeqCst);
    let vars = |port: u16| {
        vec![
            ("DATABASE_URL", env.database_url.clone()),
            ("NATS_URL", env.nats_url.clone()),
            ("REDIS_URL", env.redis_url.clone()),
            ("NATS_SUBJECT_PREFIX", env.subject_prefix.clone()),
            ("NATS_STREAM_PREFIX", env.stream_prefix.clone()),
            ("WORKERS_ADDR", format!("127.0.0.1:{port}")),
            ("RECEIPT_WEBHOOK_URL", sms.url.clone()),
            (
                "RECEIPT_DIR",
                std::env::temp_dir().join(format!("rc-{}", env.stream_prefix)).display().to_string(),
            ),
            ("SETTLEMENT_SCHEDULE_SECS", "0".to_owned()),
            ("JOB_RETRY_FIRST_MS", "50".to_owned()),
        ]
    };
    let mut first = process::spawn("workers", &vars(smartpos_tests::nats_server::free_port()));
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    order_with(&app, &token, json!({"phone": "+819012345678"}), true).await;
    // The worker is inside the delivery, waiting for the gateway: kill it there.
    eventually(Duration::from_secs(20), "the first delivery to reach the gateway", || async {
        (sms.arrivals.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    first.kill().await.expect("SIGKILL");
    let mut second = process::spawn("workers", &vars(smartpos_tests::nats_server::free_port()));
    eventually(Duration::from_secs(30), "the redelivered job to complete", || async {
        let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs").fetch_one(&env.pg).await.ok()?;
        (runs == 1).then_some(())
    })
    .await;
    second.kill().await.expect("kill");
    let calls = sms.calls();
    assert_eq!(calls.len(), 2, "the killed delivery and its redelivery");
    let keys: HashSet<&str> = calls.iter().map(|c| c.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), 1, "every attempt carried the same idempotency key, so the gateway delivers once");
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM receipts").fetch_one(&env.pg).await.expect("count");
    assert_eq!(delivered, 1);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn receipts_can_be_stored_in_an_s3_compatible_object_store() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let s3 = smartpos_tests::sinks::S3Sink::start().await;
    let sms = WebhookSink::start().await;
    let store = workers::receipts::storage::ObjectStoreConfig {
        url: format!("s3://{}/stored", s3.bucket),
        endpoint: Some(s3.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: true,
    };
    let workers = Workers::spawn_full(&env, None, Some(sms.url.clone()), 3, Some(store)).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = order_with(&app, &token, json!({"phone": "+819012345678"}), true).await;
    let stored_at: String = eventually(Duration::from_secs(20), "the receipt to be delivered", || async {
        sqlx::query_scalar("SELECT stored_at FROM receipts").fetch_optional(&env.pg).await.ok().flatten()
    })
    .await;
    let key = format!("stored/{}/{order_id}.txt", m.merchant_id);
    assert_eq!(stored_at, format!("s3://{}/{key}", s3.bucket));
    let text = s3.get(&key).await.expect("the text receipt is in the bucket");
    assert!(text.contains(&order_id) && text.contains("819 JPY"), "{text}");
    let html =
        s3.get(&format!("stored/{}/{order_id}.html", m.merchant_id)).await.expect("the HTML receipt too");
    assert!(html.starts_with("<!doctype html>"));
    workers.stop().await;
    app.stop().await;
    env.cleanup().await;
}
