//! A private PostgreSQL cluster on a free port, for tests that stop it.
//!
//! Made with Debian's `initdb` and `pg_ctl`, run as the `postgres` user,
//! trust authentication for the `smartpos` superuser, no fsync.

use std::path::PathBuf;
use std::time::Duration;

pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect("PostgreSQL server binaries under /usr/lib/postgresql")
}

/// Runs a PostgreSQL tool as the `postgres` user.
fn as_postgres(tool: &PathBuf, args: &[&str]) -> std::process::Output {
    let mut cmd = if nix_is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]);
        c
    } else {
        let mut c = std::process::Command::new("sudo");
        c.args(["-u", "postgres"]);
        c
    };
    cmd.arg(tool).args(args).output().expect("PostgreSQL tool runs")
}

fn nix_is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

impl PgServer {
    pub async fn start() -> Self {
        let port = crate::nats_server::free_port();
        let dir = PathBuf::from(format!("/tmp/smartpos-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let _ = std::process::Command::new("chown")
            .args(["postgres:postgres", &dir.display().to_string()])
            .status();
        let bin = bin_dir();
        let data = dir.join("data").display().to_string();
        let out =
            as_postgres(&bin.join("initdb"), &["-D", &data, "-A", "trust", "-U", "smartpos", "--no-sync"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let server = Self { port, dir, bin };
        server.resume().await;
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://smartpos@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn resume(&self) {
        let data = self.dir.join("data").display().to_string();
        let opts =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let log = self.dir.join("log").display().to_string();
        let out =
            as_postgres(&self.bin.join("pg_ctl"), &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"]);
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
        crate::eventually(Duration::from_secs(15), "PostgreSQL to accept connections", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok().map(|_| ())
        })
        .await;
    }

    /// Stops it the hard way: an outage, not a maintenance.
    pub fn kill(&self) {
        let data = self.dir.join("data").display().to_string();
        let _ = as_postgres(&self.bin.join("pg_ctl"), &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
