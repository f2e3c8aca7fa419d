//! Read-your-writes: waiting for the bills projection to reach a version.
//!
//! A reader that asks for `min_version` is answered as soon as the bills
//! projection has applied that version of its order. The projectors announce
//! every committed batch on core NATS ([`events::notices`]); this process
//! forwards the announcements to its waiting readers ([`forward`]), and a
//! reader loads the bill again only when an announcement names its order at
//! that version, or when its fallback poll comes due (a notice is a hint
//! that may be lost; the database is the answer). Under load a reader so
//! costs a load or two instead of a poll every few milliseconds.

use std::sync::Arc;
use std::time::Duration;

use crate::bill_cache::BillCache;
use events::notices::BillsApplied;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

/// The announcements of committed bills batches, to every waiting reader.
pub type Notices = broadcast::Sender<Arc<BillsApplied>>;

/// Announcements kept for a reader that has not looked yet; a reader further
/// behind loads its bill again rather than miss one.
const BACKLOG: usize = 256;

pub fn channel() -> Notices {
    broadcast::channel(BACKLOG).0
}

/// Takes the projectors' announcements, until the subscription ends: each
/// goes to the bill cache (which forgets the orders it names), then to this
/// process's waiting readers.
pub async fn forward<V>(mut from: async_nats::Subscriber, to: Notices, cache: Arc<BillCache<V>>) {
    use events::notices::{EPOCH_HEADER, SEQ_HEADER};
    while let Some(msg) = from.next().await {
        let number = |name: &str| {
            msg.headers.as_ref().and_then(|h| h.get(name)).and_then(|v| v.as_str().parse::<u64>().ok())
        };
        match BillsApplied::decode(&msg.payload) {
            Some(notice) => {
                if cache.announce(number(EPOCH_HEADER), number(SEQ_HEADER), &notice.orders) {
                    metrics::counter!("bill_cache_resets_total").increment(1);
                }
                metrics::gauge!("bill_cache_entries").set(cache.len() as f64);
                // A heartbeat wakes no reader; no reader waiting is no error.
                if !notice.orders.is_empty() {
                    drop(to.send(Arc::new(notice)));
                }
            }
            None => {
                // It may have named orders: the cache cannot know which.
                cache.forget();
                tracing::warn!(bytes = msg.payload.len(), "a bills notice that does not decode");
            }
        }
    }
    cache.forget();
}

/// Why a wait for a version ended: time to load the bill again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A notice says the order reached the version (or readers fell behind
    /// the announcements and may have missed it).
    Notice,
    /// The fallback poll came due.
    Poll,
}

impl Woken {
    pub fn label(self) -> &'static str {
        match self {
            Self::Notice => "notice",
            Self::Poll => "poll",
        }
    }
}

/// Waits until a notice brings `order` to `min_version`, or until `until`.
/// `notices` must have been subscribed before the load this wait follows,
/// so that nothing announced after that load is missed.
pub async fn until_version(
    notices: &mut broadcast::Receiver<Arc<BillsApplied>>,
    order: Uuid,
    min_version: i64,
    until: Instant,
) -> Woken {
    loop {
        match tokio::time::timeout_at(until, notices.recv()).await {
            Ok(Ok(notice)) if notice.reaches(order, min_version) => return Woken::Notice,
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => return Woken::Notice,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                tokio::time::sleep_until(until).await;
                return Woken::Poll;
            }
            Err(_) => return Woken::Poll,
        }
    }
}

/// Counts a read as waiting (`read_your_writes_waiting`) until dropped, so
/// that a read abandoned mid-wait (a client gone, the request timed out) is
/// not counted forever.
pub struct Waiting(());

impl Waiting {
    pub fn start() -> Self {
        metrics::gauge!("read_your_writes_waiting").increment(1);
        Self(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("read_your_writes_waiting").decrement(1);
    }
}

/// The fallback poll's next interval: doubling from `first`, at most `max(first, 1 s)`.
pub fn next_poll(current: Duration, first: Duration) -> Duration {
    (current * 2).min(first.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(orders: &[(Uuid, i64)]) -> Arc<BillsApplied> {
        Arc::new(BillsApplied { orders: orders.to_vec() })
    }

    #[tokio::test]
    async fn a_reader_wakes_for_its_order_at_its_version_and_not_before() {
        let (tx, order, other) = (channel(), Uuid::now_v7(), Uuid::now_v7());
        let mut rx = tx.subscribe();
        tx.send(notice(&[(other, 5), (order, 1)])).expect("a receiver");
        tx.send(notice(&[(order, 2)])).expect("a receiver");
        let far = Instant::now() + Duration::from_secs(30);
        assert_eq!(until_version(&mut rx, order, 2, far).await, Woken::Notice);
        // Nothing more announced: the wait ends when its time is up.
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(until_version(&mut rx, order, 3, soon).await, Woken::Poll);
    }

    #[tokio::test]
    async fn a_reader_that_fell_behind_the_announcements_loads_again() {
        let (tx, order) = (channel(), Uuid::now_v7());
        let mut rx = tx.subscribe();
        for _ in 0..=BACKLOG {
            tx.send(notice(&[(Uuid::now_v7(), 1)])).expect("a receiver");
        }
        let far = Instant::now() + Duration::from_secs(30);
        assert_eq!(until_version(&mut rx, order, 1, far).await, Woken::Notice);
    }

    #[test]
    fn the_fallback_poll_doubles_up_to_a_second_or_its_first_interval() {
        let first = Duration::from_millis(100);
        assert_eq!(next_poll(first, first), Duration::from_millis(200));
        assert_eq!(next_poll(Duration::from_millis(800), first), Duration::from_secs(1));
        let long = Duration::from_secs(60);
        assert_eq!(next_poll(long, long), long);
    }
}
