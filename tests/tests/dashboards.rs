//! Alerts and dashboards as code: the rule file passes `promtool check rules`,
//! the processes' output passes `promtool check metrics`, and every metric a
//! rule or a panel uses is produced by the processes.

use regex_lite::Regex;
use serde_json::{Value, json};
use smartpos_tests::app::sample_order;
use smartpos_tests::read_side::{Workers, caught_up, portal_token};
use smartpos_tests::redis_server::RedisServer;
use smartpos_tests::sinks::WebhookSink;
use smartpos_tests::{ReadSide, TestApp, TestEnv, eventually};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

fn ops(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../ops")).join(path)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs Debian's prometheus package)");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        let _ = input.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().expect("promtool runs");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// Metric names a PromQL expression selects (`name{...}`), `up` aside (Prometheus makes it).
fn selected(expr: &str) -> BTreeSet<String> {
    let re = Regex::new(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{").expect("regex");
    re.captures_iter(expr).map(|c| c[1].to_owned()).filter(|n| n != "up").collect()
}

#[test]
fn the_alert_rules_pass_promtool() {
    let (ok, out) = promtool(&["check", "rules", &ops("prometheus/alerts.yml").display().to_string()], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 10 rules found"), "{out}");
}

#[tokio::test]
async fn every_metric_in_rules_and_dashboards_is_produced_and_the_output_passes_promtool() {
    let env = TestEnv::new().await;
    let mut redis = RedisServer::start().await;
    let limits = command_api::http::rate_limit::Limits { per_device: 3, per_merchant: 0 };
    let app = TestApp::spawn_limited(&env, &redis.url, limits).await;
    let read = ReadSide::spawn(&env).await;
    let sms = WebhookSink::start().await;
    let workers = Workers::spawn(&env, None, Some(sms.url.clone()), 2).await;
    let m = env.merchant(4).await;
    let token = app.token(&m, 0).await;

    // Traffic that touches every metric: a sale with an SMS receipt, one with an
    // e-mail receipt (no SMTP configured: a dead letter), a refund, a rate limit, a Redis outage.
    let mut order = sample_order();
    order["customer"] = json!({"phone": "+819012345678"});
    let id = app.post("/v1/orders", Some(&token), Some("m-1"), &order).await.str("order_id");
    let p = app
        .post(
            "/v1/payments",
            Some(&token),
            Some("m-2"),
            &json!({"order_id": id, "method": "card", "amount": 819}),
        )
        .await
        .str("payment_id");
    let other = app.token(&m, 1).await;
    app.post(&format!("/v1/payments/{p}/confirm"), Some(&other), Some("m-3"), &json!({"result": "approved"}))
        .await;
    app.post(&format!("/v1/payments/{p}/refunds"), Some(&other), Some("m-4"), &json!({"amount": 10})).await;
    let mut mailed = sample_order();
    mailed["customer"] = json!({"email": "a@example.jp"});
    let id2 = app.post("/v1/orders", Some(&token), Some("m-5"), &mailed).await.str("order_id");
    // A device over its limit of 3 a minute. Windows are fixed minutes: 7 requests
    // meet a refusal even when the minute turns between them.
    let fourth = app.token(&m, 3).await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        let r = app.post("/v1/orders", Some(&fourth), Some(&format!("rl-{i}")), &sample_order()).await;
        statuses.push(r.status);
        if r.status == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "no request was limited: {statuses:?}");
    let third = app.token(&m, 2).await;
    let p2 = app
        .post(
            "/v1/payments",
            Some(&third),
            Some("m-7"),
            &json!({"order_id": id2, "method": "cash", "amount": 819}),
        )
        .await
        .str("payment_id");
    let confirmed = app
        .post(
            &format!("/v1/payments/{p2}/confirm"),
            Some(&third),
            Some("m-8"),
            &json!({"result": "approved"}),
        )
        .await;
    assert_eq!(confirmed.str("order_status"), "completed", "{}", confirmed.body);
    redis.kill().await;
    app.create_order(&other).await;
    caught_up(&env, &env.nats_url).await;
    let portal = portal_token(&env, m.merchant_id);
    read.get("/v1/orders", &portal).await;

    let rules = std::fs::read_to_string(ops("prometheus/alerts.yml")).expect("rules");
    let mut used = selected(&rules);
    for entry in std::fs::read_dir(ops("grafana")).expect("dashboards") {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.expect("file").path()).expect("read"))
                .expect("JSON");
        for panel in dashboard["panels"].as_array().cloned().unwrap_or_default() {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                used.extend(selected(target["expr"].as_str().unwrap_or_default()));
            }
        }
    }
    assert!(used.len() >= 20, "only {} metrics used: {used:?}", used.len());

    // Jobs and the janitor's gauges come from background tasks: wait for their first results.
    let output = eventually(Duration::from_secs(20), "every metric a rule or a panel uses", || async {
        let text = String::from_utf8(app.get("/metrics").await.raw).unwrap_or_default();
        let projectors = read.projector_metrics().await;
        let produced: BTreeSet<String> = [text.as_str(), projectors.as_str()]
            .iter()
            .flat_map(|t| t.lines())
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .flat_map(|name| {
                let base =
                    name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
                [name.to_owned(), base.to_owned()]
            })
            .collect();
        let missing: Vec<&String> = used.iter().filter(|n| !produced.contains(*n)).collect();
        if !missing.is_empty() {
            eprintln!("used but not produced yet: {missing:?}; sms calls {}", sms.calls().len());
        }
        missing.is_empty().then_some(text)
    })
    .await;

    let (ok, out) = promtool(&["check", "metrics"], Some(&output));
    assert!(ok, "promtool check metrics: {out}");
    workers.stop().await;
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}
