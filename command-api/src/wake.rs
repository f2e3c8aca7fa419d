//! Waking the outbox relay when a command commits, without a NOTIFY per commit.
//!
//! A `NOTIFY` inside every command's transaction serializes all committing
//! transactions on PostgreSQL's notification-queue lock (it halved pgbench's
//! rate for a command's writes on a 2-core machine). Instead, a committed
//! command calls [`OutboxWake::committed`]: the relay in this process wakes
//! at once, and, unless this process's relay is the leader, one background
//! task sends a single `NOTIFY outbox` for however many commits happened
//! while it was busy, so a leading relay in another process wakes too. The
//! relay's poll interval remains the safety net.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct OutboxWake {
    local: Arc<Notify>,
    remote: Arc<Notify>,
    /// Set while this process's relay holds the leader lock.
    leading: Arc<AtomicBool>,
}

impl OutboxWake {
    /// A command that appended to the outbox has committed.
    pub fn committed(&self) {
        self.local.notify_one();
        if !self.leading.load(Ordering::Relaxed) {
            self.remote.notify_one();
        }
    }

    /// Resolves when a local commit happened since the last call.
    pub async fn local(&self) {
        self.local.notified().await;
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }

    /// Sends one coalesced `NOTIFY outbox` per burst of commits, until `shutdown`.
    pub async fn notify_remote(self, pg: sqlx::PgPool, shutdown: platform::Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = self.remote.notified() => {}
            }
            if let Err(e) = sqlx::query("SELECT pg_notify('outbox', '')").execute(&pg).await {
                tracing::debug!(error = %e, "outbox NOTIFY failed; the relay's poll picks the rows up");
            }
        }
    }
}
