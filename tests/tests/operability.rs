//! Operability: correlation ids end to end, the platform's metric names,
//! rate limits that fail open when Redis is down, structured logs without secrets.

use serde_json::{Value, json};
use smartpos_tests::app::sample_order;
use smartpos_tests::nats_server::free_port;
use smartpos_tests::redis_server::RedisServer;
use smartpos_tests::{TestApp, TestEnv, eventually, process, stream};
use std::time::Duration;

#[tokio::test]
async fn a_correlation_id_is_echoed_and_travels_with_the_events_and_jobs_it_caused() {
    let env = TestEnv::new().await;
    env.record_outbox().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let mut body = sample_order();
    body["customer"] = json!({"email": "a@example.jp"});
    let resp = app
        .client
        .post(format!("{}/v1/orders", app.base))
        .bearer_auth(&token)
        .header("idempotency-key", "corr-1")
        .header("x-correlation-id", "till-7-sale-42")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.headers().get("x-correlation-id").and_then(|v| v.to_str().ok()), Some("till-7-sale-42"));
    let order_id =
        resp.json::<Value>().await.expect("json")["order_id"].as_str().unwrap_or_default().to_owned();
    // Without one, the API makes one and says which.
    let generated = app.get_with("/health", &[]).await;
    let id = generated.headers.get("x-correlation-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(uuid::Uuid::parse_str(id).map(|u| u.get_version_num()), Ok(7));
    let invalid = app.get_with("/health", &[("x-correlation-id", &"x".repeat(200))]).await;
    assert_ne!(
        invalid.headers.get("x-correlation-id").and_then(|v| v.to_str().ok()),
        Some("x".repeat(200).as_str())
    );

    // The completion's receipt job carries it too.
    let payment = app
        .client
        .post(format!("{}/v1/payments", app.base))
        .bearer_auth(&token)
        .header("idempotency-key", "corr-2")
        .header("x-correlation-id", "till-7-sale-42")
        .json(&json!({"order_id": order_id, "method": "cash", "amount": 819}))
        .send()
        .await
        .expect("sent")
        .json::<Value>()
        .await
        .expect("json");
    let confirm = app
        .client
        .post(format!(
            "{}/v1/payments/{}/confirm",
            app.base,
            payment["payment_id"].as_str().unwrap_or_default()
        ))
        .bearer_auth(&token)
        .header("idempotency-key", "corr-3")
        .header("x-correlation-id", "till-7-sale-42")
        .json(&json!({"result": "approved"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(confirm.status(), 200);
    let stored = eventually(Duration::from_secs(10), "the order's events on the stream", || async {
        let s = stream::read_all(&env.nats_url, &env.events_stream()).await;
        (s.iter().filter(|e| e.envelope.subject.to_string() == order_id).count() == 5).then_some(s)
    })
    .await;
    for e in stored.iter().filter(|e| e.envelope.subject.to_string() == order_id) {
        assert_eq!(e.envelope.correlation_id.as_deref(), Some("till-7-sale-42"), "{:?}", e.envelope.kind);
    }
    let headers: Vec<(String, String)> = sqlx::query_scalar::<_, sqlx::types::Json<Vec<(String, String)>>>(
        "SELECT headers FROM outbox_record WHERE subject LIKE '%.work.receipts.%'",
    )
    .fetch_one(&env.pg)
    .await
    .expect("receipt job")
    .0;
    assert!(headers.contains(&("correlation-id".to_owned(), "till-7-sale-42".to_owned())), "{headers:?}");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_platforms_metric_names_are_exported_with_their_labels() {
    let env = TestEnv::new().await;
    // Rate limits on, so that commands make their Redis round trip.
    let limits = command_api::http::rate_limit::Limits { per_device: 1_000, per_merchant: 0 };
    let app = TestApp::spawn_limited(&env, &env.redis_url, limits).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let order_id = app.create_order(&token).await.str("order_id");
    let p = app.pay(&token, &order_id, "card", 819, "automatic").await.str("payment_id");
    app.approve(&token, &p).await;
    let metrics =
        eventually(Duration::from_secs(10), "payment metrics after the relay published", || async {
            let text = String::from_utf8(app.get("/metrics").await.raw).unwrap_or_default();
            text.contains("payments_total{payment_method=\"card\",status=\"captured\"}").then_some(text)
        })
        .await;
    for needle in [
        "http_requests_total{method=\"POST\",endpoint=\"/v1/orders\",status=\"201\"}",
        "http_request_duration_seconds_bucket{",
        "payments_total{payment_method=\"card\",status=\"pending\"}",
        "payment_amount_total{currency=\"JPY\"}",
        "db_connection_pool_size ",
        "db_connection_pool_available ",
        "db_query_duration_seconds_bucket{operation=\"command_transaction\"",
        "redis_operations_total{operation=\"rate_limit\"",
        "devices_online ",
        "outbox_backlog ",
        "relay_published_total ",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    // The registry is per process and other tests in it sell too: at least this sale's 819 JPY.
    let captured: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("payment_amount_total{currency=\"JPY\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(captured >= 819.0, "{metrics}");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn rate_limits_answer_429_and_fail_open_while_redis_is_down() {
    let env = TestEnv::new().await;
    let mut redis = RedisServer::start().await;
    let limits = command_api::http::rate_limit::Limits { per_device: 5, per_merchant: 0 };
    let app = TestApp::spawn_limited(&env, &redis.url, limits).await;
    let m = env.merchant(2).await;
    let token = app.token(&m, 0).await;
    // Limits count per fixed minute window: of 11 requests at most 10 pass even when
    // the minute turns between them (5 before, 5 after), so some are refused.
    let mut statuses = Vec::new();
    for i in 0..11 {
        statuses.push(app.post("/v1/orders", Some(&token), Some(&format!("rl-{i}")), &sample_order()).await);
    }
    let refused: Vec<_> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(
        !refused.is_empty(),
        "no request was limited: {:?}",
        statuses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    refused[0].assert_problem(429, "/rate-limited");
    let retry: u64 = refused[0]
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Another device of the same merchant has its own budget.
    let other = app.token(&m, 1).await;
    assert_eq!(app.post("/v1/orders", Some(&other), Some("other-1"), &sample_order()).await.status, 201);

    // Redis goes away: requests still go through (and are counted as failing open).
    redis.kill().await;
    for i in 0..8 {
        let r = app.post("/v1/orders", Some(&other), Some(&format!("down-{i}")), &sample_order()).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let ready = app.get("/ready").await;
    assert_eq!(
        (ready.status, ready.body["checks"]["redis"].clone(), ready.body["status"].clone()),
        (200, json!("down"), json!("degraded"))
    );
    let text = String::from_utf8(app.get("/metrics").await.raw).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.starts_with("rate_limit_fail_open_total ") && !l.ends_with(" 0")),
        "{text}"
    );
    // A replay still works without Redis: PostgreSQL is the record.
    let replay = app.post("/v1/orders", Some(&other), Some("down-0"), &sample_order()).await;
    assert_eq!(replay.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));

    // Redis is back: the limit applies again.
    redis.resume().await;
    let limited = eventually(Duration::from_secs(15), "limits to apply again", || async {
        let r = app
            .post("/v1/orders", Some(&token), Some(&uuid::Uuid::new_v4().to_string()), &sample_order())
            .await;
        (r.status == 429).then_some(r)
    })
    .await;
    limited.assert_problem(429, "/rate-limited");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn json_logs_carry_the_correlation_id_and_caller_but_never_tokens_or_secrets() {
    let env = TestEnv::new().await;
    let m = env.merchant(1).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::env::temp_dir().join(format!("command-api-{}.log", env.stream_prefix));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = tokio::process::Command::new(process::binary("command-api"))
        .envs([
            ("DATABASE_URL", env.database_url.clone()),
            ("NATS_URL", env.nats_url.clone()),
            ("REDIS_URL", env.redis_url.clone()),
            ("NATS_SUBJECT_PREFIX", env.subject_prefix.clone()),
            ("NATS_STREAM_PREFIX", env.stream_prefix.clone()),
            ("JWT_KEYS", smartpos_tests::env::JWT_KEYS.to_owned()),
            ("COMMAND_API_ADDR", addr.clone()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "debug,sqlx=warn,async_nats=info,hyper=info,h2=info,tower=info".to_owned()),
        ])
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("command-api starts");
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    eventually(Duration::from_secs(20), "command-api to serve", || async {
        client.get(format!("{base}/health")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let (device, secret) = &m.devices[0];
    let token = process::device_token(&client, &base, *device, secret).await;
    let mut body = sample_order();
    body["customer"] = json!({"email": "secret.customer@example.jp", "phone": "+819011112222"});
    let r = client
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "log-1")
        .header("x-correlation-id", "log-test-corr")
        .json(&body)
        .send()
        .await
        .expect("order");
    assert_eq!(r.status(), 201);
    let text = eventually(Duration::from_secs(10), "the request's log line", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("log-test-corr").then_some(text)
    })
    .await;
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().unwrap_or(0).to_string()]).status();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty() && lines.len() == text.lines().count(), "every line is JSON");
    let served = lines
        .iter()
        .find(|l| l["message"] == "request served" && l["span"]["correlation_id"] == "log-test-corr")
        .unwrap_or_else(|| panic!("no request line with the correlation id in\n{text}"));
    assert!(served["timestamp"].is_string() && served["level"] == "INFO");
    assert!(lines.iter().all(|l| l["service"] == "command-api"), "every line names its service");
    assert_eq!(served["span"]["caller_id"], json!(device.to_string()));
    assert_eq!(served["span"]["merchant_id"], json!(m.merchant_id.to_string()));
    for secret_text in [
        token.as_str(),
        secret.as_str(),
        "secret.customer@example.jp",
        "+819011112222",
        smartpos_tests::env::JWT_KEYS,
    ] {
        assert!(!text.contains(secret_text), "a secret reached the logs");
    }
    let _ = std::fs::remove_file(&log);
    env.cleanup().await;
}

#[tokio::test]
async fn while_postgresql_is_down_commands_fail_fast_with_503_and_everything_recovers() {
    let env = TestEnv::new().await;
    let pg = smartpos_tests::pg_server::PgServer::start().await;
    let url = pg.url("smartpos_outage");
    posctl::setup::create_database(&url).await.expect("database");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    posctl::setup::migrate(&pool).await.expect("migrate");
    let spec = posctl::seed::MerchantSpec::tokyo(uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    posctl::seed::upsert_merchant(&pool, &spec).await.expect("merchant");
    let (device, secret) = (uuid::Uuid::now_v7(), "s".repeat(64));
    posctl::seed::upsert_device(&pool, &spec, device, &secret).await.expect("device");
    pool.close().await;
    let mut infra = env.infra(&env.nats_url);
    infra.database_url = url.clone();
    let app = TestApp::spawn_infra(
        &env,
        infra,
        command_api::http::rate_limit::Limits { per_device: 0, per_merchant: 0 },
    )
    .await;
    let m = smartpos_tests::Merchant {
        merchant_id: spec.merchant_id,
        store_id: spec.store_id,
        devices: vec![(device, secret)],
    };
    let token = app.token(&m, 0).await;
    assert_eq!(app.create_order(&token).await.status, 201);

    pg.kill();
    let started = std::time::Instant::now();
    let down = app.create_order(&token).await;
    let waited = started.elapsed();
    down.assert_problem(503, "/dependency-unavailable");
    assert!(down.headers.get("retry-after").is_some());
    assert!(waited < Duration::from_secs(5), "the request queued for {waited:?} instead of failing fast");
    let ready = app.get("/ready").await;
    assert_eq!((ready.status, ready.body["checks"]["postgres"].clone()), (503, json!("down")));
    assert!(app.get("/health").await.status == 200, "the process itself is alive");

    pg.resume().await;
    let back = eventually(Duration::from_secs(20), "commands to succeed again", || async {
        let r = app.create_order(&token).await;
        (r.status == 201).then_some(r)
    })
    .await;
    assert_eq!(back.body["status"], "open");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&pool).await.expect("count");
    assert_eq!(orders, 2, "exactly the two accepted orders exist");
    pool.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_during_steady_traffic_fails_no_accepted_request_and_loses_nothing() {
    let env = TestEnv::new().await;
    let m = env.merchant(4).await;
    let vars = |port: u16| {
        vec![
            ("DATABASE_URL", env.database_url.clone()),
            ("NATS_URL", env.nats_url.clone()),
            ("REDIS_URL", env.redis_url.clone()),
            ("NATS_SUBJECT_PREFIX", env.subject_prefix.clone()),
            ("NATS_STREAM_PREFIX", env.stream_prefix.clone()),
            ("JWT_KEYS", smartpos_tests::env::JWT_KEYS.to_owned()),
            ("COMMAND_API_ADDR", format!("127.0.0.1:{port}")),
        ]
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = process::serving("command-api", &vars(port), &client, &base).await;
    let tokens = process::device_tokens(&client, &base, &m.devices).await;
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut drivers = Vec::new();
    for token in tokens {
        let (client, base, accepted) = (client.clone(), base.clone(), accepted.clone());
        drivers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..500 {
                let sent = client
                    .post(format!("{base}/v1/orders"))
                    .bearer_auth(&token)
                    .header("idempotency-key", format!("steady-{i}"))
                    .json(&sample_order())
                    .send()
                    .await;
                match sent {
                    Ok(r) => {
                        if r.status() == 201 {
                            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        statuses.push(r.status().as_u16());
                    }
                    // The server stopped accepting: this request never reached a handler.
                    Err(_) => break,
                }
            }
            statuses
        }));
    }
    eventually(Duration::from_secs(20), "steady traffic", || async {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) >= 40).then_some(())
    })
    .await;
    let pid = server.id().expect("running");
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status =
        tokio::time::timeout(Duration::from_secs(20), server.wait()).await.expect("exits").expect("status");
    assert!(status.success(), "exit status {status:?}");
    let mut answered = Vec::new();
    for d in drivers {
        answered.extend(d.await.expect("driver"));
    }
    assert!(answered.iter().all(|s| *s == 201), "an answered request failed: {answered:?}");
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&env.pg).await.expect("count");
    assert_eq!(orders as usize, answered.len(), "every accepted order was answered, and only those exist");

    // After a restart the relay publishes whatever was committed, once.
    let port = free_port();
    let mut again = process::spawn("command-api", &vars(port));
    let stored = eventually(Duration::from_secs(20), "the outbox to drain", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&env.pg).await.ok()?;
        let s = stream::read_all(&env.nats_url, &env.events_stream()).await;
        (left == 0).then_some(s)
    })
    .await;
    again.kill().await.expect("kill");
    let created = stored.iter().filter(|s| s.envelope.kind == events::EventKind::OrderCreated).count();
    let ids: std::collections::HashSet<_> = stored.iter().map(|s| s.envelope.id).collect();
    assert_eq!((created, ids.len()), (answered.len(), stored.len()));
    env.cleanup().await;
}

/// Starts a real process with JSON logs and trace export, its stdout in a file.
fn traced(
    env: &TestEnv,
    name: &str,
    extra: Vec<(&'static str, String)>,
    otlp: &str,
    log: &std::path::Path,
) -> tokio::process::Child {
    let mut vars = env.vars();
    vars.extend(extra);
    vars.push(("LOG_FORMAT", "json".to_owned()));
    vars.push(("RUST_LOG", "info,projectors=debug,sqlx=warn".to_owned()));
    vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.to_owned()));
    vars.push(("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()));
    tokio::process::Command::new(process::binary(name))
        .envs(vars)
        .stdout(std::fs::File::create(log).expect("log file"))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("process starts")
}

fn trace_ids(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["span"]["trace_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn one_command_and_everything_it_caused_form_one_trace_exported_over_otlp() {
    let env = TestEnv::new().await;
    // An OTLP/HTTP receiver that counts the trace exports it gets.
    let exports = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let otlp = format!("http://{}", listener.local_addr().expect("addr"));
    let counter = exports.clone();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                if !body.is_empty() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });
    let sms = smartpos_tests::sinks::WebhookSink::start().await;
    let dir = std::env::temp_dir().join(format!("traces-{}", env.stream_prefix));
    std::fs::create_dir_all(&dir).expect("dir");
    let (api_port, proj_port, work_port) = (free_port(), free_port(), free_port());
    let mut api = traced(
        &env,
        "command-api",
        vec![("COMMAND_API_ADDR", format!("127.0.0.1:{api_port}"))],
        &otlp,
        &dir.join("api.log"),
    );
    let mut proj = traced(
        &env,
        "projectors",
        vec![("PROJECTORS_ADDR", format!("127.0.0.1:{proj_port}"))],
        &otlp,
        &dir.join("proj.log"),
    );
    let mut work = traced(
        &env,
        "workers",
        vec![
            ("WORKERS_ADDR", format!("127.0.0.1:{work_port}")),
            ("RECEIPT_WEBHOOK_URL", sms.url.clone()),
            ("RECEIPT_DIR", dir.join("receipts").display().to_string()),
            ("SETTLEMENT_SCHEDULE_SECS", "0".to_owned()),
        ],
        &otlp,
        &dir.join("work.log"),
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api_port}");
    eventually(Duration::from_secs(20), "command-api to serve", || async {
        client.get(format!("{base}/health")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let m = env.merchant(1).await;
    let (device, secret) = &m.devices[0];
    let token = process::device_token(&client, &base, *device, secret).await;
    let mut body = sample_order();
    body["customer"] = json!({"phone": "+819012345678"});
    let order: Value = client
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "t-1")
        .json(&body)
        .send()
        .await
        .expect("order")
        .json()
        .await
        .expect("json");
    let pay: Value = client
        .post(format!("{base}/v1/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "t-2")
        .json(&json!({"order_id": order["order_id"], "method": "card", "amount": 819}))
        .send()
        .await
        .expect("pay")
        .json()
        .await
        .expect("json");
    // The command under test comes from a caller that is itself traced.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let confirm = client
        .post(format!("{base}/v1/payments/{}/confirm", pay["payment_id"].as_str().unwrap_or_default()))
        .bearer_auth(&token)
        .header("idempotency-key", "t-3")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"result": "approved"}))
        .send()
        .await
        .expect("confirm");
    assert_eq!(confirm.status(), 200);
    eventually(Duration::from_secs(30), "the trace in every process's logs", || async {
        let found = ["api.log", "proj.log", "work.log"]
            .iter()
            .all(|f| trace_ids(&dir.join(f)).iter().any(|t| t == trace));
        found.then_some(())
    })
    .await;
    for child in [&mut api, &mut proj, &mut work] {
        let _ =
            std::process::Command::new("kill").args(["-TERM", &child.id().unwrap_or(0).to_string()]).status();
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    assert!(exports.load(std::sync::atomic::Ordering::SeqCst) > 0, "no spans were exported over OTLP");
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

#[tokio::test]
async fn request_path_sessions_name_their_program_and_never_jit_compile_a_scan() {
    let env = TestEnv::new().await;
    let pg = platform::connect::postgres(&env.database_url, 1, platform::connect::Plans::KeyedLookups)
        .await
        .expect("pool");
    let (jit, app): (String, String) =
        sqlx::query_as("SELECT current_setting('jit'), current_setting('application_name')")
            .fetch_one(&pg)
            .await
            .expect("settings");
    assert_eq!(jit, "off");
    let exe = std::env::current_exe().expect("exe");
    assert_eq!(app, exe.file_stem().expect("stem").to_string_lossy());
    // enable_seqscan = off costs the scan a count needs ten billion, far past
    // jit_above_cost: the janitor's gauges were compiled at every call.
    let gauge = "SELECT count(*) FROM devices WHERE last_token_at > now() - interval '180 seconds'";
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {gauge}"))
        .fetch_one(&pg)
        .await
        .expect("explain");
    assert!(plan[0].get("JIT").is_none(), "JIT compiled a count: {plan}");
    // A URL that names the application keeps its name.
    let named = platform::connect::postgres(
        &format!("{}?application_name=portal-report", env.database_url),
        1,
        platform::connect::Plans::Default,
    )
    .await
    .expect("pool");
    let app: String = sqlx::query_scalar("SELECT current_setting('application_name')")
        .fetch_one(&named)
        .await
        .expect("name");
    assert_eq!(app, "portal-report");
    pg.close().await;
    named.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_held_connection_keeps_its_session_and_replaces_one_the_server_closed() {
    use platform::connect::{HeldConnection, PING_IDLE_AFTER};
    let env = TestEnv::new().await;
    let pool = platform::connect::postgres(&env.database_url, 4, platform::connect::Plans::KeyedLookups)
        .await
        .expect("pool");
    let mut held = HeldConnection::new(pool.clone());
    let first = pid(held.get().await.expect("connection")).await.expect("pid");
    assert_eq!(pid(held.get().await.expect("connection")).await.expect("pid"), first, "the session is kept");

    // A session the server closed, used at once: the error is the caller's
    // (57P01, the server's own answer), and after release() the next get is
    // a new, working session.
    let killer = |victim: i32| {
        let pool = pool.clone();
        async move {
            let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
                .bind(victim)
                .fetch_one(&pool)
                .await
                .expect("terminate");
            assert!(ended, "backend {victim} did not end");
        }
    };
    killer(first).await;
    let broken = pid(held.get().await.expect("connection")).await.expect_err("the session is gone");
    assert!(broken.as_database_error().is_some_and(|e| e.code().as_deref() == Some("57P01")), "{broken}");
    held.release();
    let second = pid(held.get().await.expect("connection")).await.expect("a new session works");
    assert_ne!(second, first);

    // Closed while idle longer than PING_IDLE_AFTER: get() notices and the caller never sees it.
    killer(second).await;
    tokio::time::sleep(PING_IDLE_AFTER + Duration::from_millis(100)).await;
    let third = pid(held.get().await.expect("connection")).await.expect("replaced before use");
    assert_ne!(third, second);
    drop(held);
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_pool_replaces_an_idle_connection_the_server_closed_before_handing_it_out() {
    use sqlx::Connection;
    let env = TestEnv::new().await;
    let pool = platform::connect::postgres(&env.database_url, 1, platform::connect::Plans::KeyedLookups)
        .await
        .expect("pool");
    let first = pid(&mut pool.acquire().await.expect("connection")).await.expect("pid");
    // The pool's only connection, ended by the server while it sits idle.
    let mut killer = sqlx::PgConnection::connect(&env.database_url).await.expect("connect");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(first)
        .fetch_one(&mut killer)
        .await
        .expect("terminate");
    assert!(ended, "backend {first} did not end");
    // Idle past PING_IDLE_AFTER: tested before it is handed out, and replaced.
    tokio::time::sleep(platform::connect::PING_IDLE_AFTER + Duration::from_millis(100)).await;
    let second = pid(&mut pool.acquire().await.expect("connection")).await.expect("a live session");
    assert_ne!(second, first);
    killer.close().await.expect("close");
    pool.close().await;
    env.cleanup().await;
}

async fn pid(conn: &mut sqlx::PgConnection) -> sqlx::Result<i32> {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await
}

/// The index entries read from `orders` so far, and the scans that read them.
async fn orders_index_reads(pg: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT sum(idx_scan)::int8, sum(idx_tup_read)::int8 FROM pg_stat_user_indexes WHERE relname = 'orders'",
    )
    .fetch_one(pg)
    .await
    .expect("index statistics")
}

#[tokio::test]
async fn statements_planned_while_the_tables_were_empty_look_orders_up_by_key_once_they_grow() {
    let env = TestEnv::new().await;
    // As on a fresh database: statistics that say the tables are empty. With
    // autovacuum off on them, only the command API's keeper can refresh them.
    for table in ["orders", "payments", "idempotency_keys"] {
        sqlx::query(&format!("ALTER TABLE {table} SET (autovacuum_enabled = off)"))
            .execute(&env.pg)
            .await
            .expect("autovacuum off");
        sqlx::query(&format!("VACUUM (ANALYZE) {table}")).execute(&env.pg).await.expect("analyze");
    }
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let sale = || async {
        let order = app.create_order(&token).await;
        assert_eq!(order.status, 201, "{}", order.body);
        let total = order.body["total"].as_i64().expect("total");
        let paid = app.pay(&token, &order.str("order_id"), "cash", total, "automatic").await;
        assert_eq!(paid.status, 201, "{}", paid.body);
    };
    // Each statement is planned now, once per connection, for empty tables.
    for _ in 0..3 {
        sale().await;
    }
    // A busy first minute: the table grows far past its statistics.
    sqlx::query(
        "INSERT INTO orders (id, merchant_id, store_id, device_id, currency, status, lines, taxes, subtotal,
                             tax, total, business_date, version, created_at, updated_at)
         SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'JPY',
                'completed', '[]', '[]', 0, 0, 0, current_date, 1, now(), now()
           FROM generate_series(1, 20000)",
    )
    .execute(&env.pg)
    .await
    .expect("20,000 orders");
    // What the planner counts once the keeper has analyzed the table (not
    // autovacuum, off here; the setup's own ANALYZE counted none).
    eventually(Duration::from_secs(30), "the keeper to analyze orders", || async {
        let planned: f32 =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'orders'::regclass")
                .fetch_one(&env.pg)
                .await
                .ok()?;
        (planned >= 20_000.0).then_some(())
    })
    .await;
    // Twenty sales: each payment finds its order and updates it, two lookups.
    let (scans, read) = orders_index_reads(&env.pg).await;
    for _ in 0..20 {
        sale().await;
    }
    let (scans_after, read_after) =
        eventually(Duration::from_secs(30), "the sales' index scans to be counted", || async {
            let now = orders_index_reads(&env.pg).await;
            (now.0 - scans >= 40).then_some(now)
        })
        .await;
    // A plan made for an empty table walks all 20,000 entries of an index at each call.
    assert!(
        read_after - read < 1_000,
        "{} index entries read from orders in {} scans for 20 sales",
        read_after - read,
        scans_after - scans
    );
    let metrics = String::from_utf8(app.get("/metrics").await.raw).unwrap_or_default();
    assert!(metrics.contains("planner_statistics_refreshes_total{table=\"public.orders\"}"), "{metrics}");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_statistics_keeper_analyzes_tables_that_doubled_and_leaves_queues_alone() {
    let env = TestEnv::new().await;
    let pg = platform::connect::postgres(&env.database_url, 2, platform::connect::Plans::KeyedLookups)
        .await
        .expect("pool");
    let run_with = |sql: String| {
        let pg = env.pg.clone();
        async move { sqlx::query(&sql).execute(&pg).await.unwrap_or_else(|e| panic!("{sql}: {e}")) }
    };
    let run = |sql: &'static str| run_with(sql.to_owned());
    // The server counts a transaction's rows a moment after it ends: (inserted, deleted).
    let counted = |table: &'static str, rows: (i64, i64)| {
        let pg = env.pg.clone();
        eventually(Duration::from_secs(10), "the server to count the rows", move || {
            let pg = pg.clone();
            async move {
                let n: (i64, i64) =
                    sqlx::query_as("SELECT n_tup_ins, n_tup_del FROM pg_stat_user_tables WHERE relname = $1")
                        .bind(table)
                        .fetch_one(&pg)
                        .await
                        .ok()?;
                (n == rows).then_some(())
            }
        })
    };
    let refreshed = || async {
        let tables = platform::statistics::refresh(&pg).await.expect("refresh");
        tables.into_iter().map(|t| t.table).collect::<Vec<_>>()
    };
    run("CREATE TABLE grows (id int8 PRIMARY KEY, pad text) WITH (autovacuum_enabled = off)").await;
    run("CREATE TABLE churns (id int8 PRIMARY KEY, pad text) WITH (autovacuum_enabled = off)").await;
    run("INSERT INTO grows SELECT i, repeat('x', 100) FROM generate_series(1, 500) i").await;
    counted("grows", (500, 0)).await;
    assert_eq!(refreshed().await, Vec::<String>::new(), "below the floor of rows");
    run("INSERT INTO grows SELECT i, repeat('x', 100) FROM generate_series(501, 4000) i").await;
    counted("grows", (4000, 0)).await;
    assert_eq!(refreshed().await, ["public.grows"]);
    let planned: f32 = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'grows'::regclass")
        .fetch_one(&env.pg)
        .await
        .expect("reltuples");
    assert_eq!(planned, 4000.0);
    assert_eq!(refreshed().await, Vec::<String>::new(), "its statistics are its size now");
    // A queue, as the outbox is while the relay keeps up: its rows come and
    // go, and it takes many times the pages its statistics say (a vacuum that
    // found it empty cut them off; here, none has counted them yet).
    for first in [1, 4001, 8001] {
        run_with(format!(
            "INSERT INTO churns SELECT i, repeat('x', 100) FROM generate_series({first}, {}) i",
            first + 3999
        ))
        .await;
        if first < 8001 {
            run_with(format!("DELETE FROM churns WHERE id < {}", first + 4000)).await;
        }
    }
    counted("churns", (12000, 8000)).await;
    let (pages, planned): (i64, i32) = sqlx::query_as(
        "SELECT pg_relation_size('churns') / current_setting('block_size')::int8, relpages
           FROM pg_class WHERE oid = 'churns'::regclass",
    )
    .fetch_one(&env.pg)
    .await
    .expect("pages");
    assert!(pages > 2 * i64::from(planned), "{pages} pages against {planned}");
    assert_eq!(refreshed().await, Vec::<String>::new(), "a queue is left to autovacuum");
    run("INSERT INTO grows SELECT i, repeat('x', 100) FROM generate_series(4001, 10000) i").await;
    // Held by another session: passed over, and analyzed once free.
    let mut holder = env.pg.begin().await.expect("begin");
    sqlx::query("LOCK TABLE grows IN SHARE UPDATE EXCLUSIVE MODE").execute(&mut *holder).await.expect("lock");
    assert_eq!(refreshed().await, Vec::<String>::new(), "another session holds it");
    // A lock that even reading its size waits for (a migration, a rebuild's
    // DROP): the pass leaves it, rather than wait with a pooled connection.
    sqlx::query("LOCK TABLE grows IN ACCESS EXCLUSIVE MODE").execute(&mut *holder).await.expect("lock");
    let pass = tokio::time::timeout(Duration::from_secs(20), refreshed()).await;
    assert_eq!(pass.expect("a pass that waits for the lock"), Vec::<String>::new());
    holder.rollback().await.expect("release");
    assert_eq!(refreshed().await, ["public.grows"], "more than doubled again");
    pg.close().await;
    env.cleanup().await;
}
