//! `loadgen run` against the real system (command API, query API and
//! projectors as processes, real PostgreSQL, NATS and Redis): what the
//! benchmark's report is written from.

use smartpos_tests::nats_server::free_port;
use smartpos_tests::{TestEnv, process};

#[tokio::test]
async fn a_load_run_reports_its_answers_cpu_and_the_wal_it_caused() {
    let env = TestEnv::new().await;
    let client = reqwest::Client::new();
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for (program, variable) in [
        ("command-api", "COMMAND_API_ADDR"),
        ("query-api", "QUERY_API_ADDR"),
        ("projectors", "PROJECTORS_ADDR"),
    ] {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut vars = env.vars();
        vars.push((variable, addr.clone()));
        let base = format!("http://{addr}");
        children.push(process::serving(program, &vars, &client, &base).await);
        urls.push(base);
    }
    let json = std::env::temp_dir().join(format!("loadgen-run-{}.json", env.stream_prefix));
    let out = tokio::process::Command::new(process::binary("loadgen"))
        .args(["run", "--rate", "40", "--seconds", "3", "--warmup", "0"])
        .args(["--merchants", "1", "--devices-per-store", "2", "--json"])
        .arg(&json)
        .envs(env.vars())
        .env("LOADGEN_COMMAND_URL", &urls[0])
        .env("LOADGEN_QUERY_URL", &urls[1])
        .output()
        .await
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "loadgen run failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the run's JSON")).expect("JSON");
    let _ = std::fs::remove_file(&json);
    let figure = |path: &[&str]| {
        path.iter().fold(&summary, |v, k| &v[*k]).as_f64().unwrap_or_else(|| panic!("{path:?} in {summary}"))
    };
    assert!(figure(&["accepted_commands_per_sec"]) > 0.0, "{stdout}");
    assert_eq!(figure(&["error_rate"]), 0.0, "{stdout}");
    assert!(figure(&["requests"]) >= 100.0, "3 s at 40 operations/s: {stdout}");
    // Every program's CPU, and the WAL PostgreSQL wrote while the run's commands committed.
    assert!(summary["cpu"]["cores_by_program"]["command-api"].as_f64().is_some_and(|c| c > 0.0), "{summary}");
    assert!(figure(&["wal", "bytes"]) > 0.0, "{summary}");
    assert!(figure(&["wal", "full_page_images"]) >= 0.0, "{summary}");
    assert!(
        stdout.contains("  wal: ") && stdout.contains("full-page images per accepted command"),
        "{stdout}"
    );
    drop(children);
    env.cleanup().await;
}
