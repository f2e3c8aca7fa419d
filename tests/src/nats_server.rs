//! A private `nats-server` with JetStream on a free port, for tests that stop it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct NatsServer {
    pub port: u16,
    pub url: String,
    store: PathBuf,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn binary() -> String {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server")
        .to_owned()
}

impl NatsServer {
    pub async fn start() -> Self {
        let port = free_port();
        let store = std::env::temp_dir().join(format!("smartpos-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store).expect("store dir");
        let mut server = Self { port, url: format!("nats://127.0.0.1:{port}"), store, child: None };
        server.resume().await;
        server
    }

    /// (Re)starts the server on the same port and store.
    pub async fn resume(&mut self) {
        let child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        crate::eventually(Duration::from_secs(10), "nats-server to accept connections", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok().map(|_| ())
        })
        .await;
    }

    /// Freezes the server (SIGSTOP) for `d`, then lets it go on (SIGCONT):
    /// connections stay open, nothing is delivered or answered meanwhile,
    /// as when a slow disk stalls a broker. Returns at once; callable from
    /// synchronous code such as a progress callback.
    pub fn freeze_for(&self, d: Duration) {
        let Some(pid) = self.child.as_ref().and_then(|c| c.id()) else { return };
        let signal = move |sig: &str| {
            let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
            assert!(status.is_ok_and(|s| s.success()), "kill {sig} {pid}");
        };
        signal("-STOP");
        std::thread::spawn(move || {
            std::thread::sleep(d);
            signal("-CONT");
        });
    }

    /// Kills the server (SIGKILL): an outage, not a shutdown.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
