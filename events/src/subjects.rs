//! NATS subjects of events and work items.
//!
//! Subjects carry the merchant, so one tenant can be filtered or replayed,
//! and the entity and action, so a consumer can filter by type; they never
//! carry an order id, so JetStream's per-subject state stays bounded by
//! merchants × event types however many orders there are. Every subject
//! starts with a deployment prefix (`pos` by default) so tests and parallel
//! environments can share one NATS server without seeing each other.

use uuid::Uuid;

use crate::domain::EventKind;

/// `{prefix}.events.{merchant}.{entity}.{action}`, e.g. `pos.events.<uuid>.order.created`.
pub fn event_subject(prefix: &str, merchant_id: Uuid, kind: EventKind) -> String {
    format!("{prefix}.events.{merchant_id}.{}.{}", kind.entity(), kind.action())
}

/// Every domain event of the deployment.
pub fn all_events(prefix: &str) -> String {
    format!("{prefix}.events.>")
}

/// Every domain event of one merchant.
pub fn merchant_events(prefix: &str, merchant_id: Uuid) -> String {
    format!("{prefix}.events.{merchant_id}.>")
}

/// The kinds of work item, each on its own work-queue stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    Receipt,
    Settlement,
    Report,
    DeviceSync,
}

impl WorkKind {
    pub fn token(self) -> &'static str {
        match self {
            Self::Receipt => "receipts",
            Self::Settlement => "settlements",
            Self::Report => "reports",
            Self::DeviceSync => "device_sync",
        }
    }
}

/// `{prefix}.work.{kind}.{merchant}`.
pub fn work_subject(prefix: &str, kind: WorkKind, merchant_id: Uuid) -> String {
    format!("{prefix}.work.{}.{merchant_id}", kind.token())
}

/// A subject prefix must be one or more NATS tokens of `[A-Za-z0-9_-]`.
pub fn is_valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .split('.')
            .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subjects_name_merchant_entity_and_action_but_no_order() {
        let m = Uuid::nil();
        assert_eq!(
            event_subject("pos", m, EventKind::PaymentCaptured),
            format!("pos.events.{m}.payment.captured")
        );
        assert!(event_subject("t1", m, EventKind::OrderCreated).starts_with("t1.events."));
    }

    #[test]
    fn prefixes_are_plain_tokens() {
        assert!(is_valid_prefix("pos"));
        assert!(is_valid_prefix("t_abc.x-1"));
        assert!(!is_valid_prefix(""));
        assert!(!is_valid_prefix("a..b"));
        assert!(!is_valid_prefix("a.*"));
        assert!(!is_valid_prefix("a b"));
    }
}
