//! The WAL a run wrote: PostgreSQL's own counters (`pg_stat_wal`,
//! `pg_stat_bgwriter`) read before and after it.
//!
//! After each checkpoint the first change to a page writes the whole page
//! to the WAL (a full-page image), so the same commands write more WAL the
//! more distinct pages they touch: what a large database can cost a run
//! without costing any program more CPU. The counters are the whole
//! cluster's (the benchmark runs nothing else beside the measurement), and
//! each session reports its share at most once a second, so a run's figure
//! is right to within about a second's worth of writes.

use serde::{Deserialize, Serialize};
use sqlx::Connection;

/// WAL counters, or their growth over a run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct WalUse {
    /// Bytes of WAL written.
    pub bytes: f64,
    /// Full-page images written.
    pub full_page_images: f64,
    /// Checkpoints begun (timed or requested).
    pub checkpoints: f64,
}

impl WalUse {
    pub fn since(&self, before: &Self) -> Self {
        Self {
            bytes: self.bytes - before.bytes,
            full_page_images: self.full_page_images - before.full_page_images,
            checkpoints: self.checkpoints - before.checkpoints,
        }
    }

    /// Kilobytes of WAL per unit of work, `units` units in the run.
    pub fn kb_per(&self, units: f64) -> f64 {
        if units > 0.0 { self.bytes / 1024.0 / units } else { 0.0 }
    }

    /// Full-page images per unit of work.
    pub fn images_per(&self, units: f64) -> f64 {
        if units > 0.0 { self.full_page_images / units } else { 0.0 }
    }

    /// `512.0 MB, 12.3 kB and 0.52 full-page images per accepted command, 1 checkpoint begun`.
    /// Without a unit of work done (a read-only run), the totals alone.
    pub fn line(&self, units: f64, unit: &str) -> String {
        let per = if units > 0.0 {
            format!(
                ", {:.1} kB and {:.2} full-page images per {unit}",
                self.kb_per(units),
                self.images_per(units)
            )
        } else {
            format!(", {:.0} full-page images", self.full_page_images)
        };
        format!(
            "{:.1} MB{per}, {:.0} checkpoint{} begun",
            self.bytes / 1024.0 / 1024.0,
            self.checkpoints,
            if self.checkpoints == 1.0 { "" } else { "s" }
        )
    }
}

const COUNTERS: &str = "SELECT w.wal_bytes::float8, w.wal_fpi::float8, \
     (b.checkpoints_timed + b.checkpoints_req)::float8 FROM pg_stat_wal w, pg_stat_bgwriter b";

/// The cluster's WAL counters now; `None` (and a note) when they cannot be read.
pub async fn counters(database_url: &str) -> Option<WalUse> {
    let read = async {
        let mut conn = sqlx::PgConnection::connect(database_url).await?;
        let (bytes, full_page_images, checkpoints): (f64, f64, f64) =
            sqlx::query_as(COUNTERS).fetch_one(&mut conn).await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(WalUse { bytes, full_page_images, checkpoints })
    };
    match read.await {
        Ok(counters) => Some(counters),
        Err(e) => {
            eprintln!("[loadgen] cannot read the WAL counters: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_wal_is_the_growth_of_the_counters() {
        let before = WalUse { bytes: 1_000.0, full_page_images: 10.0, checkpoints: 3.0 };
        let after =
            WalUse { bytes: 1_000.0 + 20.0 * 1024.0 * 1024.0, full_page_images: 1_010.0, checkpoints: 4.0 };
        let run = after.since(&before);
        // 20 MB over 2,000 commands: 10.24 kB and half an image each.
        assert_eq!(
            run.line(2_000.0, "accepted command"),
            "20.0 MB, 10.2 kB and 0.50 full-page images per accepted command, 1 checkpoint begun"
        );
        assert_eq!(
            WalUse { checkpoints: 2.0, ..run }.line(2_000.0, "x").rsplit(", ").next(),
            Some("2 checkpoints begun")
        );
        assert_eq!(run.kb_per(0.0), 0.0);
        // A run that accepted no command (bill reads alone): totals, not a share per nothing.
        assert_eq!(run.line(0.0, "accepted command"), "20.0 MB, 1000 full-page images, 1 checkpoint begun");
    }
}
