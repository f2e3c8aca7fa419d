//! Deletes the JetStream streams earlier test runs left behind on the NATS
//! server at `NATS_URL`: a test that fails never reaches its cleanup. Only
//! streams named with a test's prefix (`T` and eight upper-case hex digits,
//! see `TestEnv`) go. `scripts/test.sh` runs it before the suite, as it
//! drops leftover test databases; never run it while tests are running.

use futures_util::TryStreamExt;

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

/// A test's stream: `T` and eight upper-case hex digits, then `_` and the stream's own name.
fn is_test_stream(name: &str) -> bool {
    let Some((prefix, rest)) = name.split_once('_') else { return false };
    !rest.is_empty()
        && prefix.len() == 9
        && prefix.starts_with('T')
        && prefix[1..].chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::is_test_stream;

    #[test]
    fn only_streams_with_a_test_prefix_are_swept() {
        assert!(is_test_stream("TBF184C62_WORK_RECEIPTS"));
        assert!(is_test_stream("T81582110_EVENTS"));
        for kept in
            ["SMARTPOS_EVENTS", "BENCH_EVENTS", "AB_DLQ", "TBF184C6_EVENTS", "Tbf184c62_EVENTS", "T81582110"]
        {
            assert!(!is_test_stream(kept), "{kept}");
        }
    }
}
