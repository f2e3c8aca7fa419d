//! A private `redis-server` on a free port, for tests that stop it.

use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct RedisServer {
    pub port: u16,
    pub url: String,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = crate::nats_server::free_port();
        let mut server = Self { port, url: format!("redis://127.0.0.1:{port}"), child: None };
        server.resume().await;
        server
    }

    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        crate::eventually(Duration::from_secs(10), "redis-server to accept connections", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok().map(|_| ())
        })
        .await;
    }

    /// Kills the server: an outage.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
