//! The real binaries, started as processes (built by `cargo build --bins`).

use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// `target/<profile>/<name>`, beside the test executable's `deps/` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target profile dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` (scripts/test.sh does)", path.display());
    path
}

/// Starts `name` with `env`, its output discarded unless SMARTPOS_TEST_LOGS is set.
pub fn spawn(name: &str, env: &[(&str, String)]) -> Child {
    let verbose = std::env::var_os("SMARTPOS_TEST_LOGS").is_some();
    let mut cmd = Command::new(binary(name));
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(if verbose { Stdio::inherit() } else { Stdio::null() })
        .stderr(if verbose { Stdio::inherit() } else { Stdio::null() })
        .kill_on_drop(true);
    cmd.spawn().expect("binary starts")
}

/// Starts `name` with `env` and waits (20 s at most) until `{base}/health` answers.
pub async fn serving(name: &str, env: &[(&str, String)], client: &reqwest::Client, base: &str) -> Child {
    let child = spawn(name, env);
    crate::eventually(std::time::Duration::from_secs(20), &format!("{name} to serve"), || async {
        client.get(format!("{base}/health")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    child
}

/// A device token for each of `devices` from a real `command-api` at `base`.
pub async fn device_tokens(
    client: &reqwest::Client,
    base: &str,
    devices: &[(uuid::Uuid, String)],
) -> Vec<String> {
    let mut tokens = Vec::with_capacity(devices.len());
    for (device, secret) in devices {
        tokens.push(device_token(client, base, *device, secret).await);
    }
    tokens
}

/// A device token from a real `command-api` at `base`.
pub async fn device_token(client: &reqwest::Client, base: &str, device: uuid::Uuid, secret: &str) -> String {
    let reply: serde_json::Value = client
        .post(format!("{base}/v1/devices/token"))
        .json(&serde_json::json!({"device_id": device, "device_secret": secret}))
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token JSON");
    let token = reply["access_token"].as_str().unwrap_or_default().to_owned();
    assert!(!token.is_empty(), "no token in {reply}");
    token
}
