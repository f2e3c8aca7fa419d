//! Planner statistics that keep up with young tables.
//!
//! The request paths plan each statement once per connection
//! ([`Plans::KeyedLookups`](crate::connect::Plans)), and PostgreSQL plans it
//! again only when the statistics of a table it reads change. On a fresh
//! database those statistics say the tables are empty, and a plan made then
//! reads the whole table on every call: its cheapest way to join a batch of
//! keys with a table of one row is to walk that table's index from end to
//! end. Autovacuum refreshes the statistics once a table has changed by a
//! tenth, but only at its next round (a minute apart), and a busy system
//! writes tens of thousands of rows in a minute: on a table of 200,000
//! orders such a plan took 380-790 ms a batch, against 0.1 ms planned from
//! the table's real size (`bench/NOTES.md`, step 68).
//!
//! So every [`INTERVAL`], [`refresh`] analyzes each table that takes twice
//! the pages it took when last analyzed (or vacuumed) and holds at least
//! [`MIN_ROWS`]. The new statistics make every session re-plan its
//! statements on that table. A table is analyzed this way about log2 of its
//! size times, all in its youth; after that autovacuum's tenth comes first.
//!
//! Pages, not rows: the server's count of live rows drifts from what
//! `ANALYZE` finds in a table whose rows come and go, and a rule on rows
//! analyzed the outbox every second. Nor queues: a table that has had at
//! least half the rows ever inserted into it deleted (the outbox, drained by
//! the relay as fast as it fills) is left to autovacuum, whose vacuum cuts its
//! empty pages off so that it doubles again within a minute; a rule on pages
//! alone analyzed the outbox 144 times in a 33-minute benchmark, 100-170 ms
//! each. Its statements find rows by key whatever its size.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::Shutdown;

/// How often [`keep`] compares the tables' sizes with their statistics.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Below this many rows a plan that reads the whole table costs little.
pub const MIN_ROWS: i64 = 1_000;

/// The tables this role may analyze (the write model's and the read models'
/// schemas alike, no temporary ones; `$2`, if given, names the one table) that doubled in size
/// since their statistics were taken, queues left out.
const GROWN: &str = "SELECT format('%I.%I', s.schemaname, s.relname) AS \"table\", s.n_live_tup AS \"rows\",
            c.reltuples::float8 AS planned_rows,
            pg_relation_size(c.oid) / current_setting('block_size')::int8 AS pages, c.relpages::int8 AS planned_pages
       FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
      WHERE pg_has_role(c.relowner, 'USAGE')
        AND c.relpersistence <> 't'
        AND ($2::text IS NULL OR c.oid = to_regclass($2))
        AND s.n_live_tup >= $1
        AND s.n_tup_del * 2 < s.n_tup_ins
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

/// How long the keeper waits for a lock before it leaves the table to the
/// next pass: even reading a table's size waits behind a migration, a
/// `TRUNCATE` or a rebuild's `DROP`, and the keeper holds a connection of
/// the request paths' pool.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '50ms'";

/// One pass: analyzes each table that outgrew its statistics, and returns
/// them. One process at a time per database, each table in a transaction of
/// its own (so that its lock is held no longer than its `ANALYZE`); a table
/// that another session holds locked, or whose turn fails, waits for the
/// next pass, and the other tables do not wait for it.
pub async fn refresh(pg: &PgPool) -> sqlx::Result<Vec<Analyzed>> {
    let mut tx = pg.begin().await?;
    sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
    let grown: Vec<Analyzed> =
        match sqlx::query_as(GROWN).bind(MIN_ROWS).bind(None::<&str>).fetch_all(&mut *tx).await {
            Err(e) if locked(&e) => Vec::new(),
            grown => grown?,
        };
    tx.commit().await?;
    let mut analyzed = Vec::with_capacity(grown.len());
    for table in grown {
        // A lock not granted in time is the same as one ANALYZE passed over.
        let turn =
            analyze(pg, &table.table).await.or_else(|e| if locked(&e) { Ok(Turn::Locked) } else { Err(e) });
        match turn {
            Ok(Turn::Analyzed(table, ms)) => {
                tracing::info!(
                    table = table.table,
                    rows = table.rows,
                    planned_rows = table.planned_rows,
                    pages = table.pages,
                    planned_pages = table.planned_pages,
                    ms,
                    "analyzed a table that outgrew its planner statistics"
                );
                metrics::counter!("planner_statistics_refreshes_total", "table" => table.table.clone())
                    .increment(1);
                analyzed.push(*table);
            }
            // Another process is at work; it will find the rest.
            Ok(Turn::Busy) => break,
            Ok(Turn::NotGrown) => {}
            Ok(Turn::Locked) => {
                tracing::debug!(
                    table = table.table,
                    "a table that outgrew its statistics was locked; next pass"
                )
            }
            Err(e) => tracing::warn!(
                table = table.table,
                error = format!("{e:#}"),
                "analyzing a table that outgrew its planner statistics failed"
            ),
        }
    }
    Ok(analyzed)
}

/// What one table's turn came to.
enum Turn {
    /// Analyzed, in so many milliseconds.
    Analyzed(Box<Analyzed>, f64),
    /// Another process holds the keeper's lock.
    Busy,
    /// Analyzed meanwhile by another process, or gone.
    NotGrown,
    /// Another session held the table (`SKIP_LOCKED` passed over it).
    Locked,
}

async fn analyze(pg: &PgPool, table: &str) -> sqlx::Result<Turn> {
    let mut tx = pg.begin().await?;
    sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
    let alone: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended('planner statistics', 0))")
            .fetch_one(&mut *tx)
            .await?;
    if !alone {
        tx.rollback().await?;
        return Ok(Turn::Busy);
    }
    // Again under the lock: another process may have analyzed it meanwhile.
    let Some(table) =
        sqlx::query_as::<_, Analyzed>(GROWN).bind(MIN_ROWS).bind(table).fetch_optional(&mut *tx).await?
    else {
        tx.rollback().await?;
        return Ok(Turn::NotGrown);
    };
    let started = Instant::now();
    let analyze = format!("ANALYZE (SKIP_LOCKED) {}", table.table);
    sqlx::query(&analyze).persistent(false).execute(&mut *tx).await?;
    // SKIP_LOCKED passes over a table another session holds with only a
    // warning: the size it recorded tells.
    let recorded: i64 = sqlx::query_scalar("SELECT relpages::int8 FROM pg_class WHERE oid = to_regclass($1)")
        .bind(&table.table)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(0);
    tx.commit().await?;
    Ok(if 2 * recorded < table.pages {
        Turn::Locked
    } else {
        Turn::Analyzed(Box::new(table), started.elapsed().as_secs_f64() * 1e3)
    })
}

/// A lock not granted within [`LOCK_TIMEOUT`].
fn locked(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03")
}
