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
