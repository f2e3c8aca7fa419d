//! Planner statistics that keep up with young tables.
//!
//! The request paths plan each statement once per connection
//! ([`Plans::KeyedLookups`](crate::connect::Plans)), and PostgreSQL plans it
//! again only when the statistics of a table it reads change. On a fresh
//! database those statistics say the tables are empty, and a plan made then
//! reads the whole table on every call: its cheapest way to join a batch of
//! keys with a table of one row is to walk that table's index from end to
//! end. Autovacuum refreshes the statistics once a table has changed by a
//! tenth, but only at its next round (a minute apart), and a busy store
//! writes tens of thousands of rows in a minute: on a table of 200,000
//! orders such a plan took 380-790 ms a batch, against 0.1 ms planned from
//! the table's real size (`bench/NOTES.md`, step 68).
//!
//! So every [`INTERVAL`], [`refresh`] analyzes each table that takes twice
//! the pages it took when last analyzed (or vacuumed) and holds at least
//! [`MIN_ROWS`]. The new statistics make every session re-plan its
//! statements on that table. Pages, not rows: a table whose rows come and go
//! (the outbox, drained by the relay as fast as it fills) keeps its size, and
//! the server's count of its live rows drifts from what `ANALYZE` finds, so a
//! rule on rows analyzed the outbox every second. A table is analyzed this way
//! about log2 of its size times, all in its youth; after that autovacuum's
//! tenth comes first.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::Shutdown;

/// How often [`keep`] compares the tables' sizes with their statistics.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Below this many rows a plan that reads the whole table costs little.
pub const MIN_ROWS: i64 = 1_000;

/// The tables this role may analyze (the write model's and the read models'
/// schemas alike) that doubled in size since their statistics were taken.
const GROWN: &str = "SELECT format('%I.%I', s.schemaname, s.relname) AS \"table\", s.n_live_tup AS \"rows\",
            c.reltuples::float8 AS planned_rows,
            pg_relation_size(c.oid) / current_setting('block_size')::int8 AS pages, c.relpages::int8 AS planned_pages
       FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
      WHERE pg_has_role(c.relowner, 'MEMBER')
        AND s.n_live_tup >= $1
        AND pg_relation_size(c.oid) / current_setting('block_size')::int8 >= 2 * c.relpages::int8
      ORDER BY 1";

/// A table that outgrew its statistics.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Analyzed {
    /// Schema-qualified and quoted as SQL needs it.
    pub table: String,
    /// Live rows by the server's counters.
    pub rows: i64,
    /// The rows the planner counted before (-1: never counted).
    pub planned_rows: f64,
    /// The table's pages.
    pub pages: i64,
    /// Its pages when its statistics were taken.
    pub planned_pages: i64,
}

/// Runs [`refresh`] every [`INTERVAL`] until `shutdown`.
pub async fn keep(pg: PgPool, shutdown: Shutdown) {
    loop {
        if let Err(e) = refresh(&pg).await {
            tracing::warn!(error = format!("{e:#}"), "refreshing the planner's statistics failed");
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// One pass: analyzes each table that outgrew its statistics, and returns
/// them. One process at a time per database (the others find nothing left to
/// do); a table another session holds locked (a rebuild's swap) waits for the
/// next pass.
pub async fn refresh(pg: &PgPool) -> sqlx::Result<Vec<Analyzed>> {
    // The common case, nothing grown, costs one query and no transaction.
    let grown: Vec<Analyzed> = sqlx::query_as(GROWN).bind(MIN_ROWS).fetch_all(pg).await?;
    if grown.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pg.begin().await?;
    let alone: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended('planner statistics', 0))")
            .fetch_one(&mut *tx)
            .await?;
    if !alone {
        return Ok(Vec::new());
    }
    // Again under the lock: another process may have analyzed them meanwhile.
    let grown: Vec<Analyzed> = sqlx::query_as(GROWN).bind(MIN_ROWS).fetch_all(&mut *tx).await?;
    let mut analyzed = Vec::with_capacity(grown.len());
    for table in grown {
        let started = Instant::now();
        let analyze = format!("ANALYZE (SKIP_LOCKED) {}", table.table);
        sqlx::query(&analyze).persistent(false).execute(&mut *tx).await?;
        // SKIP_LOCKED passes over a table another session holds (a rebuild's
        // swap) with only a warning: the size it recorded tells.
        let recorded: i64 =
            sqlx::query_scalar("SELECT relpages::int8 FROM pg_class WHERE oid = $1::regclass")
                .bind(&table.table)
                .fetch_one(&mut *tx)
                .await?;
        if 2 * recorded < table.pages {
            tracing::debug!(table = table.table, "a table that outgrew its statistics was locked; next pass");
            continue;
        }
        tracing::info!(
            table = table.table,
            rows = table.rows,
            planned_rows = table.planned_rows,
            pages = table.pages,
            planned_pages = table.planned_pages,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "analyzed a table that outgrew its planner statistics"
        );
        metrics::counter!("planner_statistics_refreshes_total", "table" => table.table.clone()).increment(1);
        analyzed.push(table);
    }
    tx.commit().await?;
    Ok(analyzed)
}
