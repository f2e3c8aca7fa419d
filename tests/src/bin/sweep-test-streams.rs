//! Deletes the JetStream streams earlier test runs left behind on the NATS
//! server at `NATS_URL`: a test that fails never reaches its cleanup. Only
//! streams named with a test's prefix go ([`smartpos_tests::env::is_test_stream`]).
//! `scripts/test.sh` runs it before the suite, as it drops leftover test
//! databases; never run it while tests are running.

use futures_util::TryStreamExt;
use smartpos_tests::env::is_test_stream;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let names: Vec<String> = js.stream_names().try_collect().await?;
    let mut deleted = 0;
    for name in names.iter().filter(|n| is_test_stream(n)) {
        js.delete_stream(name).await?;
        deleted += 1;
    }
    if deleted > 0 {
        eprintln!("[test] deleted {deleted} streams left by earlier test runs");
    }
    Ok(())
}
