//! Group commit: many commands in one transaction, each with its own answer;
//! one the database refuses fails alone; a SIGKILL mid-burst loses no
//! answered command and a retry applies nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use command_api::commands::Success;
use command_api::commit::{self, Job, Reply, Respond, Work};
use command_api::domain::Command;
use command_api::http::ApiError;
use command_api::routes::orders::create::{CreateOrder, plan};
use command_api::store::orders::{Find, Scope};
use command_api::wake::OutboxWake;
use events::domain::{CaptureMode, PaymentMethod};
use serde_json::{Value, json};
use smartpos_tests::app::sample_order;
use smartpos_tests::nats_server::free_port;
use smartpos_tests::{Merchant, TestEnv, eventually, process, stream};
use uuid::Uuid;

fn scope(m: &Merchant, device: usize) -> Scope {
    Scope { merchant_id: m.merchant_id, store_id: m.store_id, device_id: m.devices[device].0 }
}

fn job(m: &Merchant, device: usize, key: &str, work: Work, respond: Respond) -> Job {
    Job {
        scope: scope(m, device),
        caller: format!("device:{}", m.devices[device].0),
        key: key.to_owned(),
        fingerprint: fingerprint(key),
        work,
        respond,
        context: Default::default(),
    }
}

/// A request fingerprint per key (a batch only stores and compares them).
fn fingerprint(key: &str) -> [u8; 32] {
    let mut f = [0u8; 32];
    for (i, b) in key.bytes().enumerate() {
        f[i % 32] ^= b.wrapping_add(i as u8);
    }
    f
}

fn create(m: &Merchant, device: usize, key: &str, body: Value) -> Job {
    let req: CreateOrder = serde_json::from_value(body).expect("a create-order body");
    let (work, respond) = plan(req);
    job(m, device, key, work, respond)
}

fn change(m: &Merchant, device: usize, key: &str, find: Find, command: Command) -> Job {
    let respond: Respond = Arc::new(|c| {
        Success::json(
            StatusCode::OK,
            &json!({"order_status": c.after.status.as_str(), "version": c.after.version}),
        )
    });
    job(m, device, key, Work::Change { find, command }, respond)
}

fn order_with_id(id: Uuid) -> Value {
    let mut body = sample_order();
    body["order_id"] = json!(id);
    body
}

/// The answer's status and JSON body, for a job that ran.
fn ran(answer: &Result<Reply, ApiError>) -> (u16, Value) {
    match answer {
        Ok(Reply::Ran(r)) => (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null)),
        other => panic!("expected the job to run, got {other:?}"),
    }
}

/// How many orders of `merchant` exist, and in how many transactions they were written.
async fn orders_and_transactions(env: &TestEnv, merchant: Uuid) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT xmin::text) FROM orders WHERE merchant_id = $1")
        .bind(merchant)
        .fetch_one(&env.pg)
        .await
        .expect("orders")
}

#[tokio::test]
async fn a_batch_commits_its_jobs_in_one_transaction_and_answers_each_on_its_own() {
    let env = TestEnv::new().await;
    let m = env.merchant(3).await;
    let ids: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let mut jobs: Vec<Job> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| create(&m, i % 3, &format!("create-{i}"), order_with_id(*id)))
        .collect();
    // Refused before it starts: the store sells in JPY.
    let mut usd = sample_order();
    usd["currency"] = json!("USD");
    jobs.push(create(&m, 0, "usd", usd));
    // The same key again in the same batch: in flight.
    jobs.push(create(&m, 0, "create-0", order_with_id(Uuid::now_v7())));
    // A tender on an order created earlier in this very batch, then its approval.
    let payment = Uuid::now_v7();
    let pay = Command::CreatePayment {
        payment_id: payment,
        method: PaymentMethod::Card,
        amount: 819, // the sample order's total
        tip: 0,
        capture: CaptureMode::Automatic,
    };
    jobs.push(change(&m, 1, "pay", Find::Order(ids[1]), pay));
    jobs.push(change(
        &m,
        1,
        "approve",
        Find::Payment(payment),
        Command::Approve { payment_id: payment, auth_code: None },
    ));
    // A rule violation: a second tender on the now completed order. Recorded, changes nothing.
    let late = Command::CreatePayment {
        payment_id: Uuid::now_v7(),
        method: PaymentMethod::Cash,
        amount: 1,
        tip: 0,
        capture: CaptureMode::Automatic,
    };
    jobs.push(change(&m, 1, "late", Find::Order(ids[1]), late));

    let answers = commit::run(&env.pg, &env.subject_prefix, &OutboxWake::default(), jobs).await;

    for (i, id) in ids.iter().enumerate() {
        let (status, body) = ran(&answers[i]);
        assert_eq!((status, body["order_id"].clone()), (201, json!(id)), "create {i}");
    }
    assert!(matches!(answers[30], Err(ApiError::Validation(_))), "{:?}", answers[30]);
    assert!(matches!(answers[31], Err(ApiError::IdempotencyKeyInFlight)), "{:?}", answers[31]);
    assert_eq!(ran(&answers[32]).0, 200);
    assert_eq!(ran(&answers[33]), (200, json!({"order_status": "completed", "version": 5})));
    assert_eq!(ran(&answers[34]).0, 409, "a tender on a completed order is refused");

    // Thirty orders, one transaction.
    assert_eq!(orders_and_transactions(&env, m.merchant_id).await, (30, 1));
    let (status, captured_on): (String, Option<chrono::NaiveDate>) =
        sqlx::query_as("SELECT status, captured_on FROM payments WHERE id = $1")
            .bind(payment)
            .fetch_one(&env.pg)
            .await
            .expect("the payment");
    assert_eq!(status, "captured");
    assert!(captured_on.is_some(), "the capture's sales day is kept");
    // Every answered key is recorded, the refused ones are not; the rule violation is.
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys ORDER BY key")
        .fetch_all(&env.pg)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 33, "{keys:?}");
    assert!(!keys.contains(&"usd".to_owned()) && keys.contains(&"late".to_owned()));
    // The paid order's events are in the outbox in version order.
    let sequences: Vec<String> = sqlx::query_scalar(
        "SELECT h->>1 FROM outbox, jsonb_array_elements(headers) h
          WHERE h->>0 = 'ce-sequence' AND headers @> $1::jsonb ORDER BY id",
    )
    .bind(json!([["ce-subject", ids[1].to_string()]]))
    .fetch_all(&env.pg)
    .await
    .expect("outbox");
    assert_eq!(sequences, ["1", "2", "3", "4", "5"]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_the_database_refuses_fails_alone_and_the_rest_of_its_batch_commits() {
    let env = TestEnv::new().await;
    let m = env.merchant(2).await;
    let taken = Uuid::now_v7();
    let first = commit::run(
        &env.pg,
        &env.subject_prefix,
        &OutboxWake::default(),
        vec![create(&m, 0, "first", order_with_id(taken))],
    )
    .await;
    assert_eq!(ran(&first[0]).0, 201);

    // An offline terminal's retry under a new key reuses the order id: the
    // batch's single write fails on the primary key and rolls back whole.
    let mut jobs: Vec<Job> =
        (0..20).map(|i| create(&m, i % 2, &format!("good-{i}"), order_with_id(Uuid::now_v7()))).collect();
    jobs.insert(7, create(&m, 1, "reused-id", order_with_id(taken)));
    let answers = commit::run(&env.pg, &env.subject_prefix, &OutboxWake::default(), jobs).await;

    assert!(matches!(answers[7], Err(ApiError::AlreadyExists("order"))), "{:?}", answers[7]);
    let created =
        answers.iter().enumerate().filter(|(i, _)| *i != 7).filter(|(_, a)| ran(a).0 == 201).count();
    assert_eq!(created, 20, "every other job of the batch was created");
    // 21 orders: the first, and twenty committed one per transaction after the rollback.
    assert_eq!(orders_and_transactions(&env, m.merchant_id).await, (21, 21));
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = 'reused-id'")
        .fetch_one(&env.pg)
        .await
        .expect("keys");
    assert_eq!(recorded, 0, "a refused command records nothing, so a corrected retry may reuse its key");
    env.cleanup().await;
}

#[tokio::test]
async fn a_sigkill_mid_burst_loses_no_answered_command_and_retries_apply_nothing_twice() {
    let env = TestEnv::new().await;
    let m = env.merchant(8).await;
    let vars = |port: u16| {
        let mut v = env.vars();
        v.push(("COMMAND_API_ADDR", format!("127.0.0.1:{port}")));
        v
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = process::serving("command-api", &vars(port), &client, &base).await;
    let tokens = process::device_tokens(&client, &base, &m.devices).await;
    // 64 senders (8 per terminal), each posting orders one after another under its own keys.
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut senders = Vec::new();
    for (d, token) in tokens.iter().enumerate() {
        for s in 0..8 {
            let (client, base, token, accepted) =
                (client.clone(), base.clone(), token.clone(), accepted.clone());
            senders.push(tokio::spawn(async move {
                let mut answered: Vec<(String, u16, Option<String>)> = Vec::new();
                for i in 0..200 {
                    let key = format!("burst-{d}-{s}-{i}");
                    let sent = client
                        .post(format!("{base}/v1/orders"))
                        .bearer_auth(&token)
                        .header("idempotency-key", &key)
                        .json(&sample_order())
                        .send()
                        .await;
                    let Ok(reply) = sent else {
                        // Killed: this key's fate is unknown to the terminal.
                        answered.push((key, 0, None));
                        break;
                    };
                    let status = reply.status().as_u16();
                    let body: Value = reply.json().await.unwrap_or(Value::Null);
                    if status == 201 {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    answered.push((key, status, body["order_id"].as_str().map(str::to_owned)));
                }
                (token, answered)
            }));
        }
    }
    eventually(Duration::from_secs(30), "a burst under way", || async {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) >= 300).then_some(())
    })
    .await;
    server.start_kill().expect("SIGKILL");
    server.wait().await.expect("killed");
    let mut outcomes = Vec::new();
    for s in senders {
        outcomes.push(s.await.expect("sender"));
    }

    // Every answered order is committed.
    let answered: HashMap<String, String> = outcomes
        .iter()
        .flat_map(|(_, a)| a.iter())
        .filter(|(_, status, _)| *status == 201)
        .filter_map(|(key, _, id)| id.clone().map(|id| (key.clone(), id)))
        .collect();
    assert!(answered.len() >= 300);
    let stored: HashSet<String> = sqlx::query_scalar("SELECT id::text FROM orders")
        .fetch_all(&env.pg)
        .await
        .expect("orders")
        .into_iter()
        .collect();
    let lost: Vec<&String> = answered.values().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "answered but not committed: {lost:?}");
    let (_, in_transactions) = orders_and_transactions(&env, m.merchant_id).await;
    assert!((in_transactions as usize) < stored.len(), "no two orders shared a transaction");

    // The terminals retry what was cut off, on a restarted server: each key
    // ends with exactly one order, whether it had committed or not.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut again = process::serving("command-api", &vars(port), &client, &base).await;
    let mut keys = answered.len();
    for (token, sent) in &outcomes {
        for (key, status, _) in sent.iter().filter(|(_, status, _)| *status != 201) {
            let retry = client
                .post(format!("{base}/v1/orders"))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&sample_order())
                .send()
                .await
                .expect("retry");
            assert_eq!(retry.status().as_u16(), 201, "retry of {key} (first answer {status})");
            keys += 1;
        }
    }
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&env.pg).await.expect("count");
    assert_eq!(orders as usize, keys, "one order per key, none twice");
    let events = eventually(Duration::from_secs(30), "the outbox to drain", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&env.pg).await.ok()?;
        (left == 0).then_some(())?;
        Some(stream::read_all(&env.nats_url, &env.events_stream()).await)
    })
    .await;
    again.kill().await.expect("stop");
    let created: HashSet<Uuid> = events
        .iter()
        .filter(|e| e.envelope.kind == events::EventKind::OrderCreated)
        .map(|e| e.envelope.subject)
        .collect();
    let created_events = events.iter().filter(|e| e.envelope.kind == events::EventKind::OrderCreated).count();
    assert_eq!((created.len(), created_events), (keys, keys), "one order.created per order, published once");
    env.cleanup().await;
}
