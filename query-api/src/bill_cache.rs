//! Hot bills in memory, never staler than the bills projection's announcements.
//!
//! A bill read is one primary-key lookup, but at several thousand reads a
//! second the database round trip is most of its cost. This cache keeps
//! recently read bills, and forgets each one when the bills runner
//! announces that a batch moved its order ([`events::notices`]): the same
//! notices that wake read-your-writes readers.
//!
//! A notice is a hint that core NATS may lose, so the cache trusts them only
//! while they provably arrive all: it serves nothing until it has heard the
//! runner's current epoch, forgets everything when the epoch changes or a
//! number is skipped, and serves nothing while it has heard nothing for
//! [`STALE_AFTER`] (the runner says it is alive every
//! [`events::notices::HEARTBEAT`]). So a cached bill is at most as old as the
//! announcement in flight, or, when announcements stop (a runner killed
//! between its commit and its notice, this process cut off from NATS), at
//! most [`STALE_AFTER`] old. Each entry also ages out after `max_age`, for
//! changes no runner announced (an operator's SQL); a rebuild or replay of
//! the bills projection announces a new epoch itself.
//!
//! Races: a reader loads from the database, then fills. A notice for that
//! order arriving in between leaves a marker with its version, and a fill
//! older than the marker is dropped; a fill is also dropped when the cache
//! was cleared, or a marker evicted, since the reader took its
//! [`Ticket`]. Every operation is a few map steps under one mutex.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Silence after which the cache is not used: three missed heartbeats.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

/// What a reader looked up and did not find, taken before its database read.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    markers_evicted: u64,
}

/// Why a lookup was not answered from memory, for `bill_cache_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    /// The announcements cannot be trusted right now (or the cache is off).
    Bypass,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

enum Slot<V> {
    Value {
        value: Arc<V>,
        version: i64,
        at: Instant,
    },
    /// Announced at this version after the last fill (or with none).
    Marker(i64),
}

impl<V> Slot<V> {
    fn version(&self) -> i64 {
        match self {
            Self::Value { version, .. } => *version,
            Self::Marker(version) => *version,
        }
    }
}

struct Heard {
    epoch: u64,
    seq: u64,
    at: Instant,
}

struct State<V> {
    slots: lru::LruCache<Uuid, Slot<V>>,
    heard: Option<Heard>,
    generation: u64,
    markers_evicted: u64,
}

pub struct BillCache<V> {
    state: Option<Mutex<State<V>>>,
    max_age: Duration,
}

impl<V> BillCache<V> {
    /// Holds up to `entries` orders (values and markers); 0 turns it off.
    pub fn new(entries: usize, max_age: Duration) -> Self {
        let state = NonZeroUsize::new(entries).map(|cap| {
            Mutex::new(State {
                slots: lru::LruCache::new(cap),
                heard: None,
                generation: 0,
                markers_evicted: 0,
            })
        });
        Self { state, max_age }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, State<V>>> {
        // A panic under the lock cannot leave the map half-changed in a way
        // that serves a wrong bill, but start again empty to be sure.
        self.state.as_ref().map(|m| {
            m.lock().unwrap_or_else(|poisoned| {
                let mut state = poisoned.into_inner();
                state.forget();
                state
            })
        })
    }

    /// The cached value of `order` at `min_version` or later, and why not.
    pub fn get(&self, order: Uuid, min_version: i64) -> (Option<Arc<V>>, Outcome) {
        let Some(mut state) = self.lock() else { return (None, Outcome::Bypass) };
        if !state.trusted(Instant::now()) {
            return (None, Outcome::Bypass);
        }
        let max_age = self.max_age;
        match state.slots.get(&order) {
            Some(Slot::Value { value, version, at }) if *version >= min_version && at.elapsed() < max_age => {
                (Some(value.clone()), Outcome::Hit)
            }
            _ => (None, Outcome::Miss),
        }
    }

    /// Taken before a database read whose result may be [`BillCache::fill`]ed.
    pub fn ticket(&self) -> Option<Ticket> {
        let state = self.lock()?;
        Some(Ticket { generation: state.generation, markers_evicted: state.markers_evicted })
    }

    /// Keeps what a reader loaded at `version`, unless something newer was
    /// announced, or the cache forgot or evicted a marker, since `ticket`.
    pub fn fill(&self, order: Uuid, value: Arc<V>, version: i64, ticket: Ticket) {
        let Some(mut state) = self.lock() else { return };
        if ticket.generation != state.generation
            || ticket.markers_evicted != state.markers_evicted
            || !state.trusted(Instant::now())
            || state.slots.peek(&order).is_some_and(|slot| slot.version() > version)
        {
            return;
        }
        state.push(order, Slot::Value { value, version, at: Instant::now() });
    }

    /// Takes one notice: its epoch and number, and the orders it moved.
    /// Returns whether the cache had to forget everything.
    pub fn announce(&self, epoch: Option<u64>, seq: Option<u64>, orders: &[(Uuid, i64)]) -> bool {
        let Some(mut state) = self.lock() else { return false };
        let now = Instant::now();
        let (Some(epoch), Some(seq)) = (epoch, seq) else {
            // An announcer that does not number its notices: never trusted.
            state.heard = None;
            state.forget();
            return true;
        };
        let continuous = state.heard.as_ref().is_some_and(|h| {
            h.epoch == epoch && (seq == h.seq || seq == h.seq + 1) && now.duration_since(h.at) < STALE_AFTER
        });
        if !continuous {
            state.forget();
        }
        state.heard = Some(Heard { epoch, seq, at: now });
        for &(order, version) in orders {
            match state.slots.peek_mut(&order) {
                Some(slot) if slot.version() >= version => {}
                Some(slot) => *slot = Slot::Marker(version),
                None => state.push(order, Slot::Marker(version)),
            }
        }
        !continuous
    }

    /// Forgets everything (this process lost its NATS subscription).
    pub fn forget(&self) {
        if let Some(mut state) = self.lock() {
            state.heard = None;
            state.forget();
        }
    }

    /// Orders held, values and markers.
    pub fn len(&self) -> usize {
        self.lock().map_or(0, |s| s.slots.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> State<V> {
    fn trusted(&self, now: Instant) -> bool {
        self.heard.as_ref().is_some_and(|h| now.duration_since(h.at) < STALE_AFTER)
    }

    fn forget(&mut self) {
        self.slots.clear();
        self.generation += 1;
    }

    fn push(&mut self, order: Uuid, slot: Slot<V>) {
        if let Some((evicted, Slot::Marker(_))) = self.slots.push(order, slot)
            && evicted != order
        {
            self.markers_evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(60);

    fn heard(cache: &BillCache<&'static str>) {
        assert!(cache.announce(Some(7), Some(0), &[]), "a first epoch starts the cache afresh");
    }

    fn fill(cache: &BillCache<&'static str>, order: Uuid, value: &'static str, version: i64) {
        let ticket = cache.ticket().expect("on");
        cache.fill(order, Arc::new(value), version, ticket);
    }

    fn got(cache: &BillCache<&'static str>, order: Uuid, min: i64) -> (Option<&'static str>, Outcome) {
        let (value, outcome) = cache.get(order, min);
        (value.map(|v| *v), outcome)
    }

    #[test]
    fn nothing_is_served_before_an_announcer_is_heard() {
        let cache = BillCache::new(10, AGE);
        let order = Uuid::now_v7();
        fill(&cache, order, "v1", 1);
        assert_eq!(got(&cache, order, 0), (None, Outcome::Bypass));
        heard(&cache);
        assert_eq!(got(&cache, order, 0), (None, Outcome::Miss), "the fill before was not kept");
        fill(&cache, order, "v1", 1);
        assert_eq!(got(&cache, order, 0), (Some("v1"), Outcome::Hit));
        assert_eq!(got(&cache, order, 2), (None, Outcome::Miss), "older than asked for");
    }

    #[test]
    fn an_announced_order_is_forgotten_and_an_older_fill_is_refused() {
        let cache = BillCache::new(10, AGE);
        heard(&cache);
        let order = Uuid::now_v7();
        fill(&cache, order, "v1", 1);
        // A reader loads version 1 while the runner announces version 2.
        let ticket = cache.ticket().expect("on");
        assert!(!cache.announce(Some(7), Some(1), &[(order, 2)]));
        assert_eq!(got(&cache, order, 0), (None, Outcome::Miss));
        cache.fill(order, Arc::new("v1"), 1, ticket);
        assert_eq!(got(&cache, order, 0), (None, Outcome::Miss), "the stale fill was kept");
        fill(&cache, order, "v2", 2);
        assert_eq!(got(&cache, order, 0), (Some("v2"), Outcome::Hit));
        // A marker for an order never cached stops an older fill too.
        let other = Uuid::now_v7();
        let ticket = cache.ticket().expect("on");
        cache.announce(Some(7), Some(2), &[(other, 3)]);
        cache.fill(other, Arc::new("v2"), 2, ticket);
        assert_eq!(got(&cache, other, 0), (None, Outcome::Miss));
    }

    #[test]
    fn a_skipped_number_or_a_new_epoch_forgets_everything() {
        let cache = BillCache::new(10, AGE);
        heard(&cache);
        let order = Uuid::now_v7();
        fill(&cache, order, "v1", 1);
        assert!(!cache.announce(Some(7), Some(0), &[]), "a heartbeat repeats the last number");
        assert!(!cache.announce(Some(7), Some(1), &[]));
        assert_eq!(got(&cache, order, 0).1, Outcome::Hit);
        assert!(cache.announce(Some(7), Some(3), &[]), "number 2 was lost");
        assert_eq!(got(&cache, order, 0), (None, Outcome::Miss));
        fill(&cache, order, "v1", 1);
        let ticket = cache.ticket().expect("on");
        assert!(cache.announce(Some(8), Some(1), &[]), "a new term, or a rebuild's reset");
        assert_eq!(got(&cache, order, 0), (None, Outcome::Miss));
        cache.fill(order, Arc::new("v1"), 1, ticket);
        assert_eq!(got(&cache, order, 0), (None, Outcome::Miss), "a fill from before the reset");
        assert!(cache.announce(None, None, &[]), "an unnumbered notice");
        assert_eq!(got(&cache, order, 0), (None, Outcome::Bypass));
    }

    #[test]
    fn an_evicted_marker_refuses_fills_that_began_before_it() {
        let cache = BillCache::new(2, AGE);
        heard(&cache);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.ticket().expect("on");
        cache.announce(Some(7), Some(1), &[(a, 2), (b, 1), (c, 1)]);
        assert_eq!(cache.len(), 2, "a's marker was evicted");
        cache.fill(a, Arc::new("v1"), 1, ticket);
        assert_eq!(got(&cache, a, 0), (None, Outcome::Miss));
        fill(&cache, a, "v2", 2);
        assert_eq!(got(&cache, a, 0), (Some("v2"), Outcome::Hit));
    }

    #[test]
    fn silence_stops_the_cache_and_entries_age_out() {
        let cache = BillCache::new(10, Duration::ZERO);
        heard(&cache);
        let order = Uuid::now_v7();
        fill(&cache, order, "v1", 1);
        assert_eq!(got(&cache, order, 0), (None, Outcome::Miss), "older than the maximum age");
        let cache = BillCache::new(10, AGE);
        heard(&cache);
        fill(&cache, order, "v1", 1);
        if let Some(mut state) = cache.lock() {
            state.heard.as_mut().expect("heard").at -= STALE_AFTER;
        }
        assert_eq!(got(&cache, order, 0), (None, Outcome::Bypass));
        assert!(cache.announce(Some(7), Some(0), &[]), "heard again after silence: start afresh");
        assert_eq!(got(&cache, order, 0), (None, Outcome::Miss));
        let off = BillCache::<&'static str>::new(0, AGE);
        assert!(off.ticket().is_none());
        assert_eq!(off.get(order, 0).1, Outcome::Bypass);
    }
}
