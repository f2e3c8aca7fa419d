//! Domain events: what happened to orders, payments and devices.
//!
//! Each variant has a payload struct (the CloudEvents `data`, raw JSON) and a
//! versioned type. A breaking change to a payload gets a new `...vN` type and
//! a new variant; consumers that meet a type they do not know get
//! [`DecodeError::UnknownType`] and must park the message, never drop it.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;

/// Reverse-DNS prefix of every event type.
pub const TYPE_PREFIX: &str = "com.smartpos";

/// One order line as the server priced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub tax_category: String,
    /// Tax rate in basis points (1000 = 10%).
    pub tax_rate_bp: i32,
    pub line_total: i64,
}

/// Tax of one rate on one order: rounded once per rate, per order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxLine {
    pub tax_category: String,
    pub tax_rate_bp: i32,
    pub taxable: i64,
    pub tax: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub currency: Currency,
    pub lines: Vec<PricedLine>,
    pub taxes: Vec<TaxLine>,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    /// Sales day in the store's time zone and close-of-day, fixed at sale time.
    pub business_date: NaiveDate,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCanceled {
    pub order_id: Uuid,
    pub canceled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub order_id: Uuid,
    pub total: i64,
    pub currency: Currency,
    pub completed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentMethod {
    Card,
    Cash,
    Qr,
    Emoney,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Cash => "cash",
            Self::Qr => "qr",
            Self::Emoney => "emoney",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    Automatic,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCreated {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub method: PaymentMethod,
    pub amount: i64,
    pub tip: i64,
    pub currency: Currency,
    pub capture: CaptureMode,
    pub business_date: NaiveDate,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub method: PaymentMethod,
    pub auth_code: Option<String>,
    pub authorized_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub method: PaymentMethod,
    pub amount: i64,
    pub tip: i64,
    pub currency: Currency,
    /// Sales day the capture counts toward.
    pub business_date: NaiveDate,
    pub captured_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub method: PaymentMethod,
    pub reason: Option<String>,
    pub failed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentVoided {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub method: PaymentMethod,
    pub business_date: NaiveDate,
    pub voided_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub refund_id: Uuid,
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub method: PaymentMethod,
    pub amount: i64,
    pub currency: Currency,
    pub reason: Option<String>,
    /// Sales day the refund is booked on: the day it happens, never the sale's day.
    pub business_date: NaiveDate,
    pub refunded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTokenIssued {
    pub device_id: Uuid,
    /// Tokens issued to this device so far, this one included.
    pub tokens_issued: i64,
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

/// A terminal applied a configuration version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfigApplied {
    pub device_id: Uuid,
    pub version: i64,
    pub applied_at: DateTime<Utc>,
}

/// One payment method's line of a settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementLine {
    pub method: PaymentMethod,
    pub sales_count: i64,
    pub gross: i64,
    pub tips: i64,
    pub refund_count: i64,
    pub refunds: i64,
    pub void_count: i64,
    /// gross + tips − refunds.
    pub net: i64,
    /// Set on lines booking late sales or refunds of an earlier, already settled day.
    pub adjustment_of: Option<NaiveDate>,
}

/// A store's business day was settled (or re-settled: a new version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementCompleted {
    pub settlement_id: Uuid,
    pub store_id: Uuid,
    pub business_date: NaiveDate,
    pub version: i32,
    pub currency: Currency,
    pub lines: Vec<SettlementLine>,
    pub gross: i64,
    pub tips: i64,
    pub refunds: i64,
    pub net: i64,
    pub completed_at: DateTime<Utc>,
}

/// Every domain event the system publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    OrderCreated(OrderCreated),
    OrderCanceled(OrderCanceled),
    OrderCompleted(OrderCompleted),
    PaymentCreated(PaymentCreated),
    PaymentAuthorized(PaymentAuthorized),
    PaymentCaptured(PaymentCaptured),
    PaymentFailed(PaymentFailed),
    PaymentVoided(PaymentVoided),
    PaymentRefunded(PaymentRefunded),
    DeviceTokenIssued(DeviceTokenIssued),
    DeviceConfigApplied(DeviceConfigApplied),
    SettlementCompleted(SettlementCompleted),
}

/// The type of an event without its payload: names its CloudEvents type and subject tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    OrderCreated,
    OrderCanceled,
    OrderCompleted,
    PaymentCreated,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentVoided,
    PaymentRefunded,
    DeviceTokenIssued,
    DeviceConfigApplied,
    SettlementCompleted,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        Self::OrderCreated,
        Self::OrderCanceled,
        Self::OrderCompleted,
        Self::PaymentCreated,
        Self::PaymentAuthorized,
        Self::PaymentCaptured,
        Self::PaymentFailed,
        Self::PaymentVoided,
        Self::PaymentRefunded,
        Self::DeviceTokenIssued,
        Self::DeviceConfigApplied,
        Self::SettlementCompleted,
    ];

    /// `(entity, what happened, version)`: the parts of type and subject.
    fn parts(self) -> (&'static str, &'static str, u32) {
        match self {
            Self::OrderCreated => ("order", "created", 1),
            Self::OrderCanceled => ("order", "canceled", 1),
            Self::OrderCompleted => ("order", "completed", 1),
            Self::PaymentCreated => ("payment", "created", 1),
            Self::PaymentAuthorized => ("payment", "authorized", 1),
            Self::PaymentCaptured => ("payment", "captured", 1),
            Self::PaymentFailed => ("payment", "failed", 1),
            Self::PaymentVoided => ("payment", "voided", 1),
            Self::PaymentRefunded => ("payment", "refunded", 1),
            Self::DeviceTokenIssued => ("device", "token_issued", 1),
            Self::DeviceConfigApplied => ("device", "config_applied", 1),
            Self::SettlementCompleted => ("settlement", "completed", 1),
        }
    }

    /// The CloudEvents `type`, e.g. `com.smartpos.payment.captured.v1`.
    pub fn ce_type(self) -> String {
        let (entity, what, version) = self.parts();
        format!("{TYPE_PREFIX}.{entity}.{what}.v{version}")
    }

    pub fn entity(self) -> &'static str {
        self.parts().0
    }

    pub fn action(self) -> &'static str {
        self.parts().1
    }

    /// The kind whose [`EventKind::ce_type`] is exactly `ty`. Compared part
    /// by part, without formatting a type per kind: every decoded event asks.
    pub fn from_ce_type(ty: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.is_type(ty))
    }

    fn is_type(self, ty: &str) -> bool {
        let (entity, what, version) = self.parts();
        let rest = ty
            .strip_prefix(TYPE_PREFIX)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_prefix(entity))
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_prefix(what))
            .and_then(|r| r.strip_prefix(".v"));
        // The digits as `ce_type` writes them: no sign, no leading zero.
        rest.is_some_and(|v| {
            v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0') && v.parse() == Ok(version)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("payload of `{ty}` does not match its schema: {source}")]
    BadPayload {
        ty: String,
        #[source]
        source: serde_json::Error,
    },
}

impl DomainEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::OrderCreated(_) => EventKind::OrderCreated,
            Self::OrderCanceled(_) => EventKind::OrderCanceled,
            Self::OrderCompleted(_) => EventKind::OrderCompleted,
            Self::PaymentCreated(_) => EventKind::PaymentCreated,
            Self::PaymentAuthorized(_) => EventKind::PaymentAuthorized,
            Self::PaymentCaptured(_) => EventKind::PaymentCaptured,
            Self::PaymentFailed(_) => EventKind::PaymentFailed,
            Self::PaymentVoided(_) => EventKind::PaymentVoided,
            Self::PaymentRefunded(_) => EventKind::PaymentRefunded,
            Self::DeviceTokenIssued(_) => EventKind::DeviceTokenIssued,
            Self::DeviceConfigApplied(_) => EventKind::DeviceConfigApplied,
            Self::SettlementCompleted(_) => EventKind::SettlementCompleted,
        }
    }

    /// The CloudEvents `data`: the payload as raw JSON.
    pub fn to_data(&self) -> Vec<u8> {
        let value = match self {
            Self::OrderCreated(e) => serde_json::to_vec(e),
            Self::OrderCanceled(e) => serde_json::to_vec(e),
            Self::OrderCompleted(e) => serde_json::to_vec(e),
            Self::PaymentCreated(e) => serde_json::to_vec(e),
            Self::PaymentAuthorized(e) => serde_json::to_vec(e),
            Self::PaymentCaptured(e) => serde_json::to_vec(e),
            Self::PaymentFailed(e) => serde_json::to_vec(e),
            Self::PaymentVoided(e) => serde_json::to_vec(e),
            Self::PaymentRefunded(e) => serde_json::to_vec(e),
            Self::DeviceTokenIssued(e) => serde_json::to_vec(e),
            Self::DeviceConfigApplied(e) => serde_json::to_vec(e),
            Self::SettlementCompleted(e) => serde_json::to_vec(e),
        };
        // Plain structs of strings, integers, dates and UUIDs always serialize.
        value.unwrap_or_default()
    }

    /// Decodes a payload by its CloudEvents type; unknown types are an error to park on.
    pub fn from_data(ty: &str, data: &[u8]) -> Result<Self, DecodeError> {
        let kind = EventKind::from_ce_type(ty).ok_or_else(|| DecodeError::UnknownType(ty.into()))?;
        Self::from_kind_data(kind, data)
    }

    /// Decodes a payload of a kind already known (from the envelope's type).
    pub fn from_kind_data(kind: EventKind, data: &[u8]) -> Result<Self, DecodeError> {
        let bad = |source| DecodeError::BadPayload { ty: kind.ce_type(), source };
        Ok(match kind {
            EventKind::OrderCreated => Self::OrderCreated(serde_json::from_slice(data).map_err(bad)?),
            EventKind::OrderCanceled => Self::OrderCanceled(serde_json::from_slice(data).map_err(bad)?),
            EventKind::OrderCompleted => Self::OrderCompleted(serde_json::from_slice(data).map_err(bad)?),
            EventKind::PaymentCreated => Self::PaymentCreated(serde_json::from_slice(data).map_err(bad)?),
            EventKind::PaymentAuthorized => {
                Self::PaymentAuthorized(serde_json::from_slice(data).map_err(bad)?)
            }
            EventKind::PaymentCaptured => Self::PaymentCaptured(serde_json::from_slice(data).map_err(bad)?),
            EventKind::PaymentFailed => Self::PaymentFailed(serde_json::from_slice(data).map_err(bad)?),
            EventKind::PaymentVoided => Self::PaymentVoided(serde_json::from_slice(data).map_err(bad)?),
            EventKind::PaymentRefunded => Self::PaymentRefunded(serde_json::from_slice(data).map_err(bad)?),
            EventKind::DeviceTokenIssued => {
                Self::DeviceTokenIssued(serde_json::from_slice(data).map_err(bad)?)
            }
            EventKind::DeviceConfigApplied => {
                Self::DeviceConfigApplied(serde_json::from_slice(data).map_err(bad)?)
            }
            EventKind::SettlementCompleted => {
                Self::SettlementCompleted(serde_json::from_slice(data).map_err(bad)?)
            }
        })
    }

    /// The id the CloudEvents `subject` names: the order for order and payment
    /// events (the order is the aggregate and orders its payments), the device
    /// for device events.
    pub fn aggregate_id(&self) -> Uuid {
        match self {
            Self::OrderCreated(e) => e.order_id,
            Self::OrderCanceled(e) => e.order_id,
            Self::OrderCompleted(e) => e.order_id,
            Self::PaymentCreated(e) => e.order_id,
            Self::PaymentAuthorized(e) => e.order_id,
            Self::PaymentCaptured(e) => e.order_id,
            Self::PaymentFailed(e) => e.order_id,
            Self::PaymentVoided(e) => e.order_id,
            Self::PaymentRefunded(e) => e.order_id,
            Self::DeviceTokenIssued(e) => e.device_id,
            Self::DeviceConfigApplied(e) => e.device_id,
            Self::SettlementCompleted(e) => e.settlement_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_versioned_type_that_parses_back() {
        let mut seen = std::collections::HashSet::new();
        for kind in EventKind::ALL {
            let ty = kind.ce_type();
            assert!(ty.starts_with("com.smartpos.") && ty.ends_with(".v1"), "{ty}");
            assert!(seen.insert(ty.clone()), "duplicate type {ty}");
            assert_eq!(EventKind::from_ce_type(&ty), Some(kind));
        }
    }

    #[test]
    fn a_type_is_recognised_only_as_written() {
        assert_eq!(
            EventKind::from_ce_type("com.smartpos.payment.captured.v1"),
            Some(EventKind::PaymentCaptured)
        );
        for near in [
            "com.smartpos.payment.captured.v2",
            "com.smartpos.payment.captured.v01",
            "com.smartpos.payment.captured.v+1",
            "com.smartpos.payment.captured.v1 ",
            "com.smartpos.payment.captured.",
            "com.smartpos.payment.captured",
            "com.smartpos.payment.capturedv1",
            "com.smartpos..payment.captured.v1",
            "org.smartpos.payment.captured.v1",
            "com.smartpos.order.captured.v1",
            "",
        ] {
            assert_eq!(EventKind::from_ce_type(near), None, "{near:?}");
        }
    }

    #[test]
    fn unknown_type_or_version_is_reported_not_guessed() {
        let err = DomainEvent::from_data("com.smartpos.order.created.v9", b"{}");
        assert!(matches!(err, Err(DecodeError::UnknownType(t)) if t.ends_with(".v9")));
    }

    #[test]
    fn payload_round_trips_through_raw_json() {
        let voided_at = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let event = DomainEvent::PaymentVoided(PaymentVoided {
            payment_id: Uuid::nil(),
            order_id: Uuid::max(),
            method: PaymentMethod::Cash,
            business_date: voided_at.date_naive(),
            voided_at,
        });
        let data = event.to_data();
        let back = DomainEvent::from_data(&event.kind().ce_type(), &data).expect("decodes");
        assert_eq!(back, event);
        assert_eq!(back.aggregate_id(), Uuid::max());
    }
}
