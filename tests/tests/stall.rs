//! A projection that meets an event it cannot read stalls, and says so:
//! logs, the `projection_stalled` gauge, `posctl status`. In a test binary of
//! its own, because the gauge is process-wide: a runner of another test
//! starting in the same process would set it back to 0.

use chrono::Utc;
use smartpos_tests::read_side::{portal_token, sale};
use smartpos_tests::{ReadSide, TestApp, TestEnv, eventually};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn an_unknown_event_version_stalls_the_projection_and_is_reported() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let read = ReadSide::spawn(&env).await;
    let m = env.merchant(1).await;
    let token = app.token(&m, 0).await;
    let portal = portal_token(&env, m.merchant_id);
    let (first, version) = sale(&app, &token, 100, "cash").await;
    read.bill_at(&portal, &first, version).await;

    // A producer from the future publishes order.created.v9.
    let nats = async_nats::connect(&env.nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let envelope = events::Envelope {
        id: Uuid::now_v7(),
        kind: events::EventKind::OrderCreated,
        merchant_id: m.merchant_id,
        store_id: Some(m.store_id),
        device_id: Some(m.devices[0].0),
        subject: Uuid::now_v7(),
        sequence: 1,
        time: Utc::now(),
        correlation_id: None,
        traceparent: None,
    };
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in envelope.to_headers() {
        let v = if k == "ce-type" { "com.smartpos.order.created.v9".to_owned() } else { v };
        headers.insert(k.as_str(), v.as_str());
    }
    let subject = format!("{}.events.{}.order.created", env.subject_prefix, m.merchant_id);
    js.publish_with_headers(subject, headers, "{}".into()).await.expect("publish").await.expect("ack");
    let (after, after_version) = sale(&app, &token, 200, "card").await;

    let nats_url = env.nats_url.clone();
    let stream_name = env.events_stream();
    let lags = eventually(Duration::from_secs(15), "the bills projection to report a stall", || async {
        let nats = async_nats::connect(&nats_url).await.ok()?;
        let lags =
            projectors::app::lag(&env.pg, &async_nats::jetstream::new(nats), &stream_name).await.ok()?;
        lags.iter().all(|l| l.stalled.is_some()).then_some(lags)
    })
    .await;
    for l in &lags {
        let reason = l.stalled.clone().unwrap_or_default();
        assert!(reason.contains("order.created.v9"), "{reason}");
        assert!(l.events > 0, "the events after the unknown one are still pending");
    }
    // Nothing after it was applied: the later order is not on the read side.
    let reply =
        read.get(&format!("/v1/bills/{after}?min_version={after_version}&wait_ms=300"), &portal).await;
    reply.assert_problem(404, "/not-found");
    let metrics = read.projector_metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("projection_stalled{projection=\"bills\"} 1")),
        "{metrics}"
    );
    // The operator sees it in `posctl status`.
    let out = env.posctl(&["status"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        table.lines().any(|l| l.starts_with("bills") && l.contains("STALLED") && l.contains("v9")),
        "{table}"
    );
    assert!(table.contains(&format!("consumer {}_PROJ_BILLS", env.stream_prefix)), "{table}");
    read.stop().await;
    app.stop().await;
    env.cleanup().await;
}
