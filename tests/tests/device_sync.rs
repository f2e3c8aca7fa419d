//! Device configuration: versioned per merchant, store and device; a
//! long-polling terminal receives a change within a second of its commit,
//! and its acknowledgement shows in the device status.

use serde_json::json;
use smartpos_tests::read_side::{Workers, portal_token};
use smartpos_tests::{ReadSide, TestApp, TestEnv, eventually};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_long_polling_device_gets_config_changes_within_a_second_and_its_ack_shows_in_status() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let workers = Workers::spawn(&env, None, None, 3).await;
    let m = env.merchant(2).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    let device = m.devices[0].0;

    // Nothing configured yet: the poll waits, then answers 204.
    let idle = read.get("/v1/devices/me/config?after=0&timeout_ms=200", &token).await;
    assert_eq!(idle.status, 204);
    read.get("/v1/devices/me/config", &portal).await.assert_problem(403, "/forbidden");

    let changes = [
        (
            json!({"settings": {"footer": "Thank you", "tax_display": "inclusive"}}),
            json!({"footer": "Thank you", "tax_display": "inclusive"}),
        ),
        (
            json!({"store_id": m.store_id, "settings": {"footer": "Ginza store"}}),
            json!({"footer": "Ginza store", "tax_display": "inclusive"}),
        ),
        (
            json!({"device_id": device, "settings": {"printer": "on"}}),
            json!({"footer": "Ginza store", "tax_display": "inclusive", "printer": "on"}),
        ),
    ];
    for (after, (change, expected)) in changes.into_iter().enumerate() {
        // The terminal is already waiting when the change is made.
        let poll = {
            let (client, base, token) = (read.client.clone(), read.base.clone(), token.clone());
            tokio::spawn(async move {
                let r = client
                    .get(format!("{base}/v1/devices/me/config?after={after}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("poll");
                (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default(), Instant::now())
            })
        };
        tokio::task::yield_now().await;
        let set =
            app.post("/v1/config", Some(&portal), Some(&uuid::Uuid::new_v4().to_string()), &change).await;
        assert_eq!(set.status, 200, "{}", set.body);
        let committed = Instant::now();
        let (status, body, answered) = poll.await.expect("poll task");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["config"], expected);
        assert_eq!(body["version"], after + 1);
        let latency = answered.saturating_duration_since(committed);
        assert!(latency < Duration::from_secs(1), "the change reached the terminal after {latency:?}");
    }
    // The other terminal of the store follows the store change but not the device one.
    let other = app.token(&m, 1).await;
    let theirs = read.get("/v1/devices/me/config?after=0&timeout_ms=2000", &other).await;
    assert_eq!(theirs.body["config"], json!({"footer": "Ginza store", "tax_display": "inclusive"}));

    // The terminal applies version 3 and says so.
    let ack = app.command("/v1/devices/me/config/ack", &token, &json!({"version": 3})).await;
    assert_eq!(ack.status, 200, "{}", ack.body);
    app.command("/v1/devices/me/config/ack", &token, &json!({"version": 9}))
        .await
        .assert_problem(422, "/validation");
    let status = eventually(Duration::from_secs(15), "the ack in device status", || async {
        let s = read.get(&format!("/v1/devices/{device}"), &portal).await;
        (s.body["config_version"] == 3).then_some(s)
    })
    .await;
    assert!(status.body["config_applied_at"].is_string());

    // Another merchant cannot configure this store.
    let stranger = env.merchant(1).await;
    let theirs = portal_token(&env, stranger.merchant_id);
    let reply = app
        .post("/v1/config", Some(&theirs), Some("x"), &json!({"store_id": m.store_id, "settings": {}}))
        .await;
    reply.assert_problem(404, "/not-found");
    app.post("/v1/config", Some(&token), Some("y"), &json!({"settings": {}}))
        .await
        .assert_problem(403, "/forbidden");
    workers.stop().await;
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}
