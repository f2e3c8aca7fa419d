//! The projections: which events each one applies and how.
//!
//! Each projection owns one PostgreSQL schema and writes only there, with
//! unqualified table names; the runner sets `search_path` to the live schema,
//! and a rebuild to a shadow copy of it.

pub mod bills;
pub mod bills_bulk;
pub mod device_status;
pub mod store_daily_sales;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// Orders with lines, tenders, refunds, totals and status; also serves the order list.
    Bills,
    /// Captures and refunds per store, business date and method.
    StoreDailySales,
    /// Last seen, last order and token activity per device.
    DeviceStatus,
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An aggregate's events arrived with a hole: applying would corrupt the model.
    #[error("aggregate {aggregate} expected sequence {expected} but got {got} (stream sequence {seq})")]
    Gap { aggregate: Uuid, expected: i64, got: i64, seq: u64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Projection {
    pub const ALL: [Projection; 3] = [Self::Bills, Self::StoreDailySales, Self::DeviceStatus];

    /// The name operators use (`posctl rebuild bills`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bills => "bills",
            Self::StoreDailySales => "store_daily_sales",
            Self::DeviceStatus => "device_status",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The schema holding its live tables.
    pub fn schema(self) -> &'static str {
        match self {
            Self::Bills => "rm_bills",
            Self::StoreDailySales => "rm_sales",
            Self::DeviceStatus => "rm_devices",
        }
    }

    /// The indexes only the query side uses: applying events never reads
    /// through them, so a rebuild builds them once the shadow is filled (one
    /// sort instead of an index insert per row). A name that no longer
    /// matches a live index fails the rebuild before it starts.
    pub fn query_indexes(self) -> &'static [&'static str] {
        match self {
            Self::Bills => &["bills_by_store", "bills_by_merchant"],
            Self::StoreDailySales => &["captures_by_day", "refunds_by_day"],
            Self::DeviceStatus => &[],
        }
    }

    /// Its durable consumer, as `nats-config/consumers/` names it.
    pub fn consumer(self, stream_prefix: &str) -> String {
        format!("{stream_prefix}_PROJ_{}", self.name().to_uppercase())
    }

    /// Applies `events` in order in the current transaction and `search_path`,
    /// as one folded batch: a handful of multi-row statements, whatever the
    /// batch's size. What the live runner and rebuilds use.
    pub async fn apply_many(self, conn: &mut PgConnection, events: &[&Event]) -> Result<(), ApplyError> {
        match self {
            Self::Bills => bills_bulk::apply_many(conn, events).await,
            Self::StoreDailySales => store_daily_sales::apply_many(conn, events).await,
            Self::DeviceStatus => device_status::apply_many(conn, events).await,
        }
    }

    /// Applies one event in the current transaction and `search_path`: the
    /// reference rules, which tests hold the batch form to.
    pub async fn apply(self, conn: &mut PgConnection, event: &Event) -> Result<(), ApplyError> {
        match self {
            Self::Bills => bills::apply(conn, event).await,
            Self::StoreDailySales => store_daily_sales::apply(conn, event).await,
            Self::DeviceStatus => device_status::apply(conn, event).await,
        }
    }
}
