//! Read-your-writes is pushed, not polled: a read waiting for a version is
//! woken by the projectors' announcement of the batch that applied it. In a
//! test binary of its own, because the metrics it reads are process-wide.

use serde_json::json;
use smartpos_tests::read_side::portal_token;
use smartpos_tests::{ReadSide, TestApp, TestEnv, eventually, metric};
use std::time::Duration;

#[tokio::test]
async fn a_read_waiting_for_a_version_is_answered_when_the_projection_announces_it() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    // No fallback poll within the wait (8 s, under the API's 10 s request
    // timeout): only an announcement can wake the read before its end.
    let wait = Duration::from_secs(8);
    let read = ReadSide::spawn_waiting(&env, &env.nats_url, true, wait, Duration::from_secs(3600)).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    let order_id = app.create_order(&token).await.str("order_id");
    read.bill_at(&portal, &order_id, 1).await;
    let before = read.metrics().await;
    let woken = r#"read_your_writes_wakeups_total{by="notice"}"#;

    // A read for the version the next command will make, waiting before it exists.
    let path = format!("/v1/bills/{order_id}?min_version=2&wait_ms={}", wait.as_millis());
    let (client, url) = (read.client.clone(), format!("{}{path}", read.base));
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let resp = client.get(url).bearer_auth(&portal).send().await.expect("sent");
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().await.unwrap_or_default(), started.elapsed())
    });
    eventually(Duration::from_secs(10), "the read to wait", || async {
        (metric(&read.metrics().await, "read_your_writes_waiting") >= 1.0).then_some(())
    })
    .await;
    let paid = app.pay(&token, &order_id, "cash", 100, "automatic").await;
    assert_eq!(paid.status, 201, "{}", paid.body);

    let (status, bill, took) = waiting.await.expect("the read");
    assert_eq!(status, 200, "{bill}");
    assert_eq!(bill["consistency"], json!({"requested_version": 2, "behind": false}));
    assert!(bill["version"].as_i64() >= Some(2), "{bill}");
    assert_eq!(bill["payments"].as_array().map(Vec::len), Some(1));
    let after = read.metrics().await;
    assert!(
        metric(&after, woken) > metric(&before, woken),
        "the read was not woken by an announcement (answered after {took:?}):\n{after}"
    );
    assert!(took < wait, "answered only at the end of its wait");
    assert_eq!(metric(&after, "read_your_writes_waiting"), 0.0);

    // A reader that gives up mid-wait is not counted as waiting forever.
    let (client, url) =
        (read.client.clone(), format!("{}{path}", read.base).replace("min_version=2", "min_version=9"));
    let portal = portal_token(&env, m.merchant_id);
    let abandoned = tokio::spawn(async move { client.get(url).bearer_auth(&portal).send().await });
    eventually(Duration::from_secs(10), "the second read to wait", || async {
        (metric(&read.metrics().await, "read_your_writes_waiting") >= 1.0).then_some(())
    })
    .await;
    abandoned.abort();
    eventually(Duration::from_secs(5), "the abandoned read to stop waiting", || async {
        (metric(&read.metrics().await, "read_your_writes_waiting") == 0.0).then_some(())
    })
    .await;
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}
