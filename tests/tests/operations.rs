//! Set-up, demo data, the API description and the operational endpoints,
//! through the real `posctl` and `command-api` binaries where an operator uses them.

use serde_json::{Value, json};
use smartpos_tests::nats_server::free_port;
use smartpos_tests::{TestApp, TestEnv, eventually, process};
use std::time::Duration;

fn posctl_env(env: &TestEnv, database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("NATS_URL", env.nats_url.clone()),
        ("REDIS_URL", env.redis_url.clone()),
        ("NATS_SUBJECT_PREFIX", env.subject_prefix.clone()),
        ("NATS_STREAM_PREFIX", env.stream_prefix.clone()),
        ("JWT_KEYS", smartpos_tests::env::JWT_KEYS.to_owned()),
        ("NATS_CONFIG_DIR", posctl::nats_config::default_dir().display().to_string()),
    ]
}

async fn posctl(vars: &[(&'static str, String)], args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(process::binary("posctl"))
        .args(args)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("posctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn setup_creates_everything_once_and_then_changes_nothing() {
    let env = TestEnv::without_streams().await;
    // A database that does not exist yet.
    let fresh = format!("{}x", env.database_name);
    let url = env.database_url.replace(&env.database_name, &fresh);
    let vars = posctl_env(&env, &url);
    let (ok, _, first) = posctl(&vars, &["setup"]).await;
    assert!(ok, "{first}");
    assert!(first.contains("database: created"), "{first}");
    assert!(first.contains(&format!("{}_EVENTS: created", env.stream_prefix)), "{first}");
    assert!(first.contains(&format!("{}_WORK_RECEIPTS: created", env.stream_prefix)), "{first}");
    let (ok, _, second) = posctl(&vars, &["setup"]).await;
    assert!(ok, "{second}");
    assert!(second.contains("database: exists") && second.contains("migrations: 0 applied now"), "{second}");
    let dir = posctl::nats_config::default_dir();
    let defined = ["streams", "consumers"]
        .iter()
        .map(|k| std::fs::read_dir(dir.join(k)).map(|d| d.count()).unwrap_or(0))
        .sum::<usize>();
    assert!(defined >= 11, "nats-config defines only {defined} streams and consumers");
    assert_eq!(second.matches(": unchanged").count(), defined, "{second}");
    assert!(first.contains(&format!("{0}_EVENTS/{0}_PROJ_BILLS: created", env.stream_prefix)), "{first}");

    // A changed definition updates the stream in place.
    let dir = std::env::temp_dir().join(format!("nats-config-{}", env.stream_prefix));
    std::fs::create_dir_all(dir.join("streams")).expect("dir");
    for entry in std::fs::read_dir(posctl::nats_config::default_dir().join("streams")).expect("streams") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text.replace("\"max_age\": 34560000000000000", "\"max_age\": 86400000000000");
        std::fs::write(dir.join("streams").join(path.file_name().expect("name")), text).expect("write");
    }
    let (ok, _, third) = posctl(&vars, &["setup", "--nats-config", &dir.display().to_string()]).await;
    assert!(ok, "{third}");
    assert!(third.contains(&format!("{}_EVENTS: updated", env.stream_prefix)), "{third}");
    let js = async_nats::jetstream::new(async_nats::connect(&env.nats_url).await.expect("nats"));
    let mut stream = js.get_stream(env.events_stream()).await.expect("stream");
    assert_eq!(stream.info().await.expect("info").config.max_age, Duration::from_secs(86_400));
    let _ = std::fs::remove_dir_all(&dir);
    let admin = sqlx::PgPool::connect(&env.database_url).await.expect("pg");
    sqlx::query(&format!("DROP DATABASE \"{fresh}\" WITH (FORCE)")).execute(&admin).await.expect("drop");
    admin.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn seed_demo_prints_the_same_working_credentials_every_time() {
    let env = TestEnv::new().await;
    let vars = posctl_env(&env, &env.database_url);
    let (ok, first, err) = posctl(&vars, &["seed-demo", "--json"]).await;
    assert!(ok, "{err}");
    let (ok, second, err) = posctl(&vars, &["seed-demo", "--json"]).await;
    assert!(ok, "{err}");
    let first: Value = serde_json::from_str(&first).expect("one JSON object");
    let second: Value = serde_json::from_str(&second).expect("one JSON object");
    for key in ["merchant_id", "store_id", "device_id", "device_secret"] {
        assert!(first[key].is_string(), "{key} missing");
        assert_eq!(first[key], second[key], "{key} changed between runs");
    }
    for key in ["portal_token", "operator_token"] {
        assert!(env.keys.verify(first[key].as_str().unwrap_or_default()).is_ok(), "{key} does not verify");
    }
    let merchants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM merchants").fetch_one(&env.pg).await.expect("count");
    assert_eq!(merchants, 1);

    // The printed credentials drive the real command-api binary.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server_vars = vars.clone();
    server_vars.push(("COMMAND_API_ADDR", addr.clone()));
    let mut server = process::spawn("command-api", &server_vars);
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    eventually(Duration::from_secs(20), "command-api to serve /health", || async {
        client.get(format!("{base}/health")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let body = json!({"device_id": first["device_id"], "device_secret": first["device_secret"]});
    let reply = client.post(format!("{base}/v1/devices/token")).json(&body).send().await.expect("token");
    assert_eq!(reply.status(), 200);
    server.kill().await.expect("kill");
    env.cleanup().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_with_schemas_and_errors() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap_or_default().starts_with("3."));
    let paths = &doc.body["paths"];
    for (path, status) in [
        ("/v1/devices/token", "200"),
        ("/v1/orders", "201"),
        ("/v1/orders/{id}/cancel", "200"),
        ("/v1/payments", "201"),
        ("/v1/payments/{id}/confirm", "200"),
        ("/v1/payments/{id}/capture", "200"),
        ("/v1/payments/{id}/void", "200"),
        ("/v1/payments/{id}/refunds", "201"),
    ] {
        let op = &paths[path]["post"];
        assert!(op.is_object(), "{path} is not described");
        assert!(
            op["requestBody"]["content"]["application/json"]["schema"].is_object(),
            "{path} has no request schema"
        );
        assert!(
            op["responses"][status]["content"]["application/json"]["schema"].is_object(),
            "{path} has no {status} schema"
        );
    }
    let problem =
        &paths["/v1/orders"]["post"]["responses"]["422"]["content"]["application/problem+json"]["schema"];
    assert!(problem.is_object(), "the error shape is not described");
    let schemas = &doc.body["components"]["schemas"];
    for name in ["CreateOrder", "OrderBody", "Problem", "CreatePayment", "RefundBody"] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    assert_eq!(doc.body["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn health_ready_and_metrics_are_served() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    app.create_order(&token).await;
    assert_eq!(app.get("/health").await.status, 200);
    let ready = eventually(Duration::from_secs(10), "all dependencies up", || async {
        let r = app.get("/ready").await;
        (r.status == 200 && r.body["status"] == "ready").then_some(r)
    })
    .await;
    assert_eq!(ready.body["checks"], json!({"postgres": "up", "nats": "up", "redis": "up"}));
    let metrics = String::from_utf8(app.get("/metrics").await.raw).expect("text");
    assert!(
        metrics.lines().any(|l| l.starts_with("http_requests_total{")
            && l.contains("endpoint=\"/v1/orders\"")
            && l.contains("status=\"201\"")),
        "{metrics}"
    );
    assert!(metrics.contains("http_request_duration_seconds_bucket{"), "{metrics}");
    let unknown = app.get("/v1/nothing").await;
    unknown.assert_problem(404, "/not-found");
    let wrong_method = app.get("/v1/orders").await;
    assert_eq!((wrong_method.status, wrong_method.content_type()), (405, "application/problem+json"));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_stops_the_command_api_cleanly() {
    let env = TestEnv::new().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut vars = posctl_env(&env, &env.database_url);
    vars.push(("COMMAND_API_ADDR", addr.clone()));
    let mut server = process::spawn("command-api", &vars);
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(20), "command-api to serve /health", || async {
        client.get(format!("http://{addr}/health")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let pid = server.id().expect("running");
    let sent =
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(15), server.wait())
        .await
        .expect("exits in time")
        .expect("status");
    assert!(status.success(), "exit status {status:?}");
    env.cleanup().await;
}

/// An operator's statement that runs past a second (a whole-table check, a
/// rebuild's swap) is the command doing its job: `posctl` does not print it,
/// with its whole SQL text, as a warning. sqlx's default does.
#[tokio::test]
async fn a_slow_operator_statement_is_not_printed_as_a_warning() {
    let env = TestEnv::new().await;
    // The check's comparisons read the bills read model; hold it locked.
    let mut lock = env.pg.begin().await.expect("begin");
    sqlx::query("LOCK TABLE rm_bills.bills IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let check = tokio::spawn(
        tokio::process::Command::new(process::binary("posctl"))
            .args(["check", "--wait", "10"])
            .envs(env.vars())
            .env_remove("RUST_LOG")
            .output(),
    );
    let waiting = "SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND application_name = 'posctl' AND wait_event_type = 'Lock'";
    eventually(Duration::from_secs(20), "posctl's statement to wait on the lock", || async {
        let n: i64 = sqlx::query_scalar(waiting).fetch_one(&env.pg).await.expect("activity");
        (n > 0).then_some(())
    })
    .await;
    // Past sqlx's one-second threshold for a slow statement.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lock.commit().await.expect("unlock");
    let out = check.await.expect("join").expect("posctl runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("orders = rm_bills.bills"), "{stdout}");
    assert!(!stderr.contains("slow statement") && !stderr.contains("WARN"), "{stderr}");
    env.cleanup().await;
}
