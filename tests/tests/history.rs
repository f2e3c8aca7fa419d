//! The benchmark's bulk history (`loadgen history`) is what the live system
//! would have left behind: whole sales, read models equal to the write model.

use smartpos_tests::{TestEnv, process};

#[tokio::test]
async fn bulk_history_rows_are_whole_sales_and_the_read_models_agree() {
    let env = TestEnv::new().await;
    let out = tokio::process::Command::new(process::binary("loadgen"))
        .args(["history", "--events", "5000", "--merchants", "2", "--devices-per-store", "3"])
        .envs(env.vars())
        .output()
        .await
        .expect("loadgen runs");
    assert!(out.status.success(), "loadgen history failed: {}", String::from_utf8_lossy(&out.stderr));
    let counts: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders WHERE status = 'completed'),
                (SELECT count(*) FROM payments WHERE status = 'captured' AND captured_on IS NOT NULL),
                (SELECT count(*) FROM idempotency_keys WHERE created_at > now() - interval '48 hours'),
                (SELECT count(*) FROM rm_bills.bills WHERE paid = total),
                (SELECT count(*) FROM rm_bills.bill_payments),
                (SELECT count(*) FROM rm_sales.captures)",
    )
    .fetch_one(&env.pg)
    .await
    .expect("counts");
    assert_eq!(counts, (1000, 1000, 3000, 1000, 1000, 1000));
    let spread: (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT store_id), count(DISTINCT device_id) FROM orders WHERE created_at < now()",
    )
    .fetch_one(&env.pg)
    .await
    .expect("spread");
    assert_eq!(spread, (2, 6), "sales spread over every store and terminal, all in the past");
    let check = env.posctl(&["check", "--wait", "10"]).await;
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "posctl check: {report}{}", String::from_utf8_lossy(&check.stderr));
    assert!(report.contains("read models agree with the write model"), "{report}");
    env.cleanup().await;
}
