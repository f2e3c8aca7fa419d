//! Read-model notices: core-NATS hints that a read model moved.
//!
//! A reader that asked for read-your-writes (`GET /v1/bills/{id}?min_version=N`)
//! waits for the bills projection to reach version N of that order. Rather
//! than polling the database, the query API waits for a notice: after every
//! committed batch the bills runner publishes, on core NATS (not JetStream:
//! nothing here needs to be stored), which orders the batch brought to which
//! version. A notice is a hint, never a record: one that is lost (no
//! subscriber, a reconnect, a slow consumer) makes a waiting reader fall back
//! to its slower poll, and the query API's bill cache, which can tell from
//! the numbering below, start again empty; the database stays the answer.
//!
//! The payload is binary, 24 bytes an order: its id (16 bytes) and the
//! version the batch brought it to (8 bytes, big-endian). A batch of a few
//! hundred events is a few kilobytes.
//!
//! Notices are numbered, so that a reader can also tell when it may have
//! missed one: each leadership term of the bills runner picks a random
//! epoch ([`EPOCH_HEADER`]) and numbers its notices from 1 ([`SEQ_HEADER`]);
//! while it has nothing to announce it repeats its last number in an empty
//! notice every [`HEARTBEAT`]. A reader that hears every number of one epoch,
//! recently, has missed nothing: the query API's bill cache relies on that,
//! and on nothing else (a new epoch, a skipped number or silence each make
//! it forget what it holds, or stop using it).

use std::time::Duration;
use uuid::Uuid;

/// Header: the announcing term's epoch, a random `u64` in decimal.
pub const EPOCH_HEADER: &str = "Notice-Epoch";

/// Header: the notice's number within its epoch, from 1, in decimal; a
/// heartbeat repeats the last number sent.
pub const SEQ_HEADER: &str = "Notice-Seq";

/// How often a runner with nothing to announce says so (an empty notice).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Bytes per order in a [`BillsApplied`] payload.
const ENTRY: usize = 24;

/// At most this many orders in one notice (about 240 KB, well under NATS's
/// default 1 MB payload limit); a larger batch is announced in several.
pub const MAX_ORDERS_PER_NOTICE: usize = 10_000;

/// `{prefix}.notices.bills`: where the bills projection announces its batches.
/// No stream captures it (streams take `{prefix}.events.>`, `.work.>`, `.dlq.>`).
pub fn bills_applied_subject(prefix: &str) -> String {
    format!("{prefix}.notices.bills")
}

/// The orders a committed bills batch changed, each with the version it reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillsApplied {
    pub orders: Vec<(Uuid, i64)>,
}

impl BillsApplied {
    /// The payloads announcing this batch, in order, none larger than
    /// [`MAX_ORDERS_PER_NOTICE`] orders; none for an empty batch.
    pub fn encode(&self) -> Vec<Vec<u8>> {
        self.orders
            .chunks(MAX_ORDERS_PER_NOTICE)
            .map(|chunk| {
                let mut out = Vec::with_capacity(chunk.len() * ENTRY);
                for (id, version) in chunk {
                    out.extend_from_slice(id.as_bytes());
                    out.extend_from_slice(&version.to_be_bytes());
                }
                out
            })
            .collect()
    }

    /// Reads one payload; `None` when it is not a whole number of entries.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        if !payload.len().is_multiple_of(ENTRY) {
            return None;
        }
        let orders = payload
            .chunks_exact(ENTRY)
            .map(|entry| {
                let (id, version) = entry.split_at(16);
                let id = Uuid::from_slice(id).ok()?;
                Some((id, i64::from_be_bytes(version.try_into().ok()?)))
            })
            .collect::<Option<_>>()?;
        Some(Self { orders })
    }

    /// Whether this notice brings `order` to `min_version` or beyond.
    pub fn reaches(&self, order: Uuid, min_version: i64) -> bool {
        self.orders.iter().any(|(id, version)| *id == order && *version >= min_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_round_trips_and_says_which_order_reached_which_version() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let notice = BillsApplied { orders: vec![(a, 1), (b, 3), (a, 2)] };
        let payloads = notice.encode();
        assert_eq!(payloads.len(), 1);
        assert_eq!(payloads[0].len(), 3 * ENTRY);
        let back = BillsApplied::decode(&payloads[0]).expect("decodes");
        assert_eq!(back, notice);
        assert!(back.reaches(a, 2));
        assert!(back.reaches(b, 1));
        assert!(!back.reaches(a, 3), "a reached version 2 only");
        assert!(!back.reaches(Uuid::nil(), 1), "an order the batch did not touch");
    }

    #[test]
    fn a_large_batch_is_split_and_an_empty_one_sends_nothing() {
        let orders: Vec<_> = (0..MAX_ORDERS_PER_NOTICE + 1).map(|i| (Uuid::now_v7(), i as i64)).collect();
        let payloads = BillsApplied { orders: orders.clone() }.encode();
        assert_eq!(payloads.len(), 2);
        let back: Vec<_> =
            payloads.iter().flat_map(|p| BillsApplied::decode(p).expect("decodes").orders).collect();
        assert_eq!(back, orders);
        assert!(BillsApplied::default().encode().is_empty());
    }

    #[test]
    fn a_truncated_payload_is_refused() {
        let payload = BillsApplied { orders: vec![(Uuid::now_v7(), 1)] }.encode().remove(0);
        assert_eq!(BillsApplied::decode(&payload[..ENTRY - 1]), None);
        assert_eq!(BillsApplied::decode(&[]), Some(BillsApplied::default()));
    }
}
