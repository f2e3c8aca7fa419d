//! The order aggregate: an order, its tenders (payments) and their refunds.
//!
//! Lifecycles:
//! - order: `open` → `completed` (captured tenders, tips excluded, equal the
//!   total) or `canceled` (only while nothing is captured; open tenders are
//!   voided with it).
//! - payment: `pending` → `authorized` (manual capture) → `captured`;
//!   `pending` → `captured` (automatic capture, via authorized);
//!   `pending` → `failed` (declined); `pending | authorized` → `voided`.
//!   Refunds are records against a captured payment, partial or full, and
//!   their sum never exceeds what was captured (amount plus tip).
//!
//! Every event raises the order's version by one; that version is the
//! CloudEvents `sequence` and the optimistic-concurrency token.

use chrono::{DateTime, NaiveDate, Utc};
use events::DomainEvent;
use events::domain::{
    CaptureMode, OrderCanceled, OrderCompleted, OrderCreated, PaymentAuthorized, PaymentCaptured,
    PaymentCreated, PaymentFailed, PaymentMethod, PaymentRefunded, PaymentVoided, PricedLine, TaxLine,
};
use events::money::Currency;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Open,
    Completed,
    Canceled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "completed" => Some(Self::Completed),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Pending,
    Authorized,
    Captured,
    Failed,
    Voided,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::Failed => "failed",
            Self::Voided => "voided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "authorized" => Some(Self::Authorized),
            "captured" => Some(Self::Captured),
            "failed" => Some(Self::Failed),
            "voided" => Some(Self::Voided),
            _ => None,
        }
    }

    /// Still counts against the order's balance.
    fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Authorized | Self::Captured)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub method: PaymentMethod,
    pub status: PaymentStatus,
    pub capture: CaptureMode,
    pub amount: i64,
    pub tip: i64,
    pub refunded: i64,
    pub auth_code: Option<String>,
    pub failure_reason: Option<String>,
    pub business_date: NaiveDate,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub currency: Currency,
    pub status: OrderStatus,
    pub lines: Vec<PricedLine>,
    pub taxes: Vec<TaxLine>,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    pub business_date: NaiveDate,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub payments: Vec<Payment>,
}

/// When a command happens: the instant and the store's business date at that instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub now: DateTime<Utc>,
    pub business_date: NaiveDate,
}

/// A change requested of an existing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Cancel,
    CreatePayment { payment_id: Uuid, method: PaymentMethod, amount: i64, tip: i64, capture: CaptureMode },
    Approve { payment_id: Uuid, auth_code: Option<String> },
    Decline { payment_id: Uuid, reason: Option<String> },
    Capture { payment_id: Uuid },
    Void { payment_id: Uuid },
    Refund { refund_id: Uuid, payment_id: Uuid, amount: i64, reason: Option<String> },
}

/// Why a command is refused; each variant maps to one problem type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the order is {0} and accepts no more changes of this kind")]
    OrderNotOpen(&'static str),
    #[error("the order has captured payments; refund them instead of canceling")]
    OrderHasCapturedPayments,
    #[error("payment {0} does not belong to this order")]
    PaymentNotFound(Uuid),
    #[error("payment {0} already exists")]
    PaymentExists(Uuid),
    #[error("a payment that is {from} cannot be {action}")]
    IllegalTransition { from: &'static str, action: &'static str },
    #[error("amount {amount} exceeds the order's open balance of {balance}")]
    AmountExceedsBalance { amount: i64, balance: i64 },
    #[error("refund of {amount} exceeds the refundable {refundable}")]
    RefundExceedsCaptured { amount: i64, refundable: i64 },
    #[error("amount must be greater than zero")]
    AmountNotPositive,
    #[error("tip must not be negative")]
    TipNegative,
}

impl Order {
    /// A new order and its creation event (plus completion, for a zero total).
    pub fn create(created: OrderCreated) -> (Order, Vec<DomainEvent>) {
        let mut events = vec![DomainEvent::OrderCreated(created.clone())];
        if created.total == 0 {
            events.push(DomainEvent::OrderCompleted(OrderCompleted {
                order_id: created.order_id,
                total: 0,
                currency: created.currency,
                completed_at: created.created_at,
            }));
        }
        let mut order = Order {
            id: created.order_id,
            currency: created.currency,
            status: OrderStatus::Open,
            lines: created.lines,
            taxes: created.taxes,
            subtotal: created.subtotal,
            tax: created.tax,
            total: created.total,
            business_date: created.business_date,
            version: 0,
            created_at: created.created_at,
            payments: Vec::new(),
        };
        for event in &events {
            order.apply(event);
        }
        (order, events)
    }

    pub fn payment(&self, id: Uuid) -> Option<&Payment> {
        self.payments.iter().find(|p| p.id == id)
    }

    /// Total minus every live tender: what a new tender may still cover.
    pub fn open_balance(&self) -> i64 {
        let committed: i64 = self.payments.iter().filter(|p| p.status.is_live()).map(|p| p.amount).sum();
        self.total - committed
    }

    fn captured_amount(&self) -> i64 {
        self.payments.iter().filter(|p| p.status == PaymentStatus::Captured).map(|p| p.amount).sum()
    }

    /// The events `command` produces against this order, or why it is refused.
    pub fn decide(&self, command: &Command, at: At) -> Result<Vec<DomainEvent>, DomainError> {
        let order_id = self.id;
        let (now, business_date) = (at.now, at.business_date);
        match command {
            Command::Cancel => {
                self.require_open()?;
                if self.payments.iter().any(|p| p.status == PaymentStatus::Captured) {
                    return Err(DomainError::OrderHasCapturedPayments);
                }
                let mut events: Vec<DomainEvent> = self
                    .payments
                    .iter()
                    .filter(|p| matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized))
                    .map(|p| {
                        DomainEvent::PaymentVoided(PaymentVoided {
                            payment_id: p.id,
                            order_id,
                            method: p.method,
                            business_date,
                            voided_at: now,
                        })
                    })
                    .collect();
                events.push(DomainEvent::OrderCanceled(OrderCanceled { order_id, canceled_at: now }));
                Ok(events)
            }
            Command::CreatePayment { payment_id, method, amount, tip, capture } => {
                self.require_open()?;
                if *amount <= 0 {
                    return Err(DomainError::AmountNotPositive);
                }
                if *tip < 0 {
                    return Err(DomainError::TipNegative);
                }
                if self.payment(*payment_id).is_some() {
                    return Err(DomainError::PaymentExists(*payment_id));
                }
                let balance = self.open_balance();
                if *amount > balance {
                    return Err(DomainError::AmountExceedsBalance { amount: *amount, balance });
                }
                Ok(vec![DomainEvent::PaymentCreated(PaymentCreated {
                    payment_id: *payment_id,
                    order_id,
                    method: *method,
                    amount: *amount,
                    tip: *tip,
                    currency: self.currency,
                    capture: *capture,
                    business_date,
                    created_at: now,
                })])
            }
            Command::Approve { payment_id, auth_code } => {
                let p = self.payment_in(*payment_id, &[PaymentStatus::Pending], "approved")?;
                let mut events = vec![DomainEvent::PaymentAuthorized(PaymentAuthorized {
                    payment_id: p.id,
                    order_id,
                    method: p.method,
                    auth_code: auth_code.clone(),
                    authorized_at: now,
                })];
                if p.capture == CaptureMode::Automatic {
                    events.extend(self.capture_events(p, at));
                }
                Ok(events)
            }
            Command::Decline { payment_id, reason } => {
                let p = self.payment_in(*payment_id, &[PaymentStatus::Pending], "declined")?;
                Ok(vec![DomainEvent::PaymentFailed(PaymentFailed {
                    payment_id: p.id,
                    order_id,
                    method: p.method,
                    reason: reason.clone(),
                    failed_at: now,
                })])
            }
            Command::Capture { payment_id } => {
                let p = self.payment_in(*payment_id, &[PaymentStatus::Authorized], "captured")?;
                Ok(self.capture_events(p, at))
            }
            Command::Void { payment_id } => {
                let allowed = [PaymentStatus::Pending, PaymentStatus::Authorized];
                let p = self.payment_in(*payment_id, &allowed, "voided")?;
                Ok(vec![DomainEvent::PaymentVoided(PaymentVoided {
                    payment_id: p.id,
                    order_id,
                    method: p.method,
                    business_date,
                    voided_at: now,
                })])
            }
            Command::Refund { refund_id, payment_id, amount, reason } => {
                let p = self.payment_in(*payment_id, &[PaymentStatus::Captured], "refunded")?;
                if *amount <= 0 {
                    return Err(DomainError::AmountNotPositive);
                }
                let refundable = p.amount + p.tip - p.refunded;
                if *amount > refundable {
                    return Err(DomainError::RefundExceedsCaptured { amount: *amount, refundable });
                }
                Ok(vec![DomainEvent::PaymentRefunded(PaymentRefunded {
                    refund_id: *refund_id,
                    payment_id: p.id,
                    order_id,
                    method: p.method,
                    amount: *amount,
                    currency: self.currency,
                    reason: reason.clone(),
                    business_date,
                    refunded_at: now,
                })])
            }
        }
    }

    /// Capturing `p`, and completing the order when that covers its total.
    fn capture_events(&self, p: &Payment, at: At) -> Vec<DomainEvent> {
        let now = at.now;
        let mut events = vec![DomainEvent::PaymentCaptured(PaymentCaptured {
            payment_id: p.id,
            order_id: self.id,
            method: p.method,
            amount: p.amount,
            tip: p.tip,
            currency: self.currency,
            business_date: at.business_date,
            captured_at: now,
        })];
        if self.status == OrderStatus::Open && self.captured_amount() + p.amount == self.total {
            events.push(DomainEvent::OrderCompleted(OrderCompleted {
                order_id: self.id,
                total: self.total,
                currency: self.currency,
                completed_at: now,
            }));
        }
        events
    }

    fn require_open(&self) -> Result<(), DomainError> {
        match self.status {
            OrderStatus::Open => Ok(()),
            other => Err(DomainError::OrderNotOpen(other.as_str())),
        }
    }

    fn payment_in(
        &self,
        id: Uuid,
        allowed: &[PaymentStatus],
        action: &'static str,
    ) -> Result<&Payment, DomainError> {
        let p = self.payment(id).ok_or(DomainError::PaymentNotFound(id))?;
        if allowed.contains(&p.status) {
            Ok(p)
        } else {
            Err(DomainError::IllegalTransition { from: p.status.as_str(), action })
        }
    }

    /// Folds one event into the state; each event raises the version by one.
    pub fn apply(&mut self, event: &DomainEvent) {
        self.version += 1;
        match event {
            DomainEvent::OrderCreated(_)
            | DomainEvent::DeviceTokenIssued(_)
            | DomainEvent::DeviceConfigApplied(_)
            | DomainEvent::SettlementCompleted(_) => {}
            DomainEvent::OrderCanceled(_) => self.status = OrderStatus::Canceled,
            DomainEvent::OrderCompleted(_) => self.status = OrderStatus::Completed,
            DomainEvent::PaymentCreated(e) => self.payments.push(Payment {
                id: e.payment_id,
                method: e.method,
                status: PaymentStatus::Pending,
                capture: e.capture,
                amount: e.amount,
                tip: e.tip,
                refunded: 0,
                auth_code: None,
                failure_reason: None,
                business_date: e.business_date,
                created_at: e.created_at,
            }),
            DomainEvent::PaymentAuthorized(e) => self.update(e.payment_id, |p| {
                p.status = PaymentStatus::Authorized;
                p.auth_code = e.auth_code.clone();
            }),
            DomainEvent::PaymentCaptured(e) => {
                self.update(e.payment_id, |p| p.status = PaymentStatus::Captured)
            }
            DomainEvent::PaymentFailed(e) => self.update(e.payment_id, |p| {
                p.status = PaymentStatus::Failed;
                p.failure_reason = e.reason.clone();
            }),
            DomainEvent::PaymentVoided(e) => self.update(e.payment_id, |p| p.status = PaymentStatus::Voided),
            DomainEvent::PaymentRefunded(e) => self.update(e.payment_id, |p| p.refunded += e.amount),
        }
    }

    fn update(&mut self, payment_id: Uuid, f: impl FnOnce(&mut Payment)) {
        if let Some(p) = self.payments.iter_mut().find(|p| p.id == payment_id) {
            f(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_763_769_600, 0).unwrap_or_default()
    }

    fn jpy() -> Currency {
        Currency::parse("JPY").expect("JPY")
    }

    /// Given an open order of `total` JPY.
    fn given_order(total: i64) -> Order {
        let (order, _) = Order::create(OrderCreated {
            order_id: Uuid::new_v4(),
            currency: jpy(),
            lines: vec![],
            taxes: vec![],
            subtotal: total,
            tax: 0,
            total,
            business_date: now().date_naive(),
            created_at: now(),
        });
        order
    }

    /// When `command` is decided and its events applied.
    fn when(order: &mut Order, command: Command) -> Result<Vec<DomainEvent>, DomainError> {
        let events = order.decide(&command, At { now: now(), business_date: now().date_naive() })?;
        for e in &events {
            order.apply(e);
        }
        Ok(events)
    }

    fn pay(order: &mut Order, amount: i64, capture: CaptureMode) -> Uuid {
        let payment_id = Uuid::new_v4();
        when(
            order,
            Command::CreatePayment { payment_id, method: PaymentMethod::Card, amount, tip: 0, capture },
        )
        .expect("payment created");
        payment_id
    }

    fn approve(order: &mut Order, payment_id: Uuid) -> Vec<DomainEvent> {
        when(order, Command::Approve { payment_id, auth_code: Some("A1".into()) }).expect("approved")
    }

    fn kinds(events: &[DomainEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind().action()).collect()
    }

    #[test]
    fn given_two_tenders_when_both_captured_then_order_completes_on_the_second() {
        let mut order = given_order(1000);
        let cash = pay(&mut order, 400, CaptureMode::Automatic);
        let card = pay(&mut order, 600, CaptureMode::Automatic);
        assert_eq!(kinds(&approve(&mut order, cash)), ["authorized", "captured"]);
        assert_eq!(order.status, OrderStatus::Open);
        assert_eq!(kinds(&approve(&mut order, card)), ["authorized", "captured", "completed"]);
        assert_eq!(order.status, OrderStatus::Completed);
        assert_eq!(order.version, 8);
    }

    #[test]
    fn tips_do_not_count_toward_completion() {
        let mut order = given_order(1000);
        let payment_id = Uuid::new_v4();
        when(
            &mut order,
            Command::CreatePayment {
                payment_id,
                method: PaymentMethod::Card,
                amount: 900,
                tip: 100,
                capture: CaptureMode::Automatic,
            },
        )
        .expect("created");
        approve(&mut order, payment_id);
        assert_eq!(order.status, OrderStatus::Open);
    }

    #[test]
    fn a_tender_may_not_exceed_the_open_balance() {
        let mut order = given_order(1000);
        pay(&mut order, 700, CaptureMode::Manual);
        let err = when(
            &mut order,
            Command::CreatePayment {
                payment_id: Uuid::new_v4(),
                method: PaymentMethod::Cash,
                amount: 301,
                tip: 0,
                capture: CaptureMode::Automatic,
            },
        );
        assert_eq!(err, Err(DomainError::AmountExceedsBalance { amount: 301, balance: 300 }));
    }

    #[test]
    fn declined_and_voided_tenders_free_the_balance() {
        let mut order = given_order(1000);
        let first = pay(&mut order, 1000, CaptureMode::Manual);
        when(&mut order, Command::Decline { payment_id: first, reason: None }).expect("declined");
        assert_eq!(order.open_balance(), 1000);
        let second = pay(&mut order, 1000, CaptureMode::Manual);
        when(&mut order, Command::Void { payment_id: second }).expect("voided");
        assert_eq!(order.open_balance(), 1000);
    }

    #[test]
    fn manual_capture_authorizes_first_and_captures_on_request() {
        let mut order = given_order(500);
        let p = pay(&mut order, 500, CaptureMode::Manual);
        assert_eq!(kinds(&approve(&mut order, p)), ["authorized"]);
        assert_eq!(order.payment(p).map(|p| p.status), Some(PaymentStatus::Authorized));
        let events = when(&mut order, Command::Capture { payment_id: p }).expect("captured");
        assert_eq!(kinds(&events), ["captured", "completed"]);
    }

    #[test]
    fn illegal_transitions_are_refused() {
        let mut order = given_order(500);
        let p = pay(&mut order, 500, CaptureMode::Automatic);
        assert_eq!(
            when(&mut order, Command::Capture { payment_id: p }),
            Err(DomainError::IllegalTransition { from: "pending", action: "captured" })
        );
        approve(&mut order, p);
        assert_eq!(
            when(&mut order, Command::Void { payment_id: p }),
            Err(DomainError::IllegalTransition { from: "captured", action: "voided" })
        );
        assert_eq!(
            when(&mut order, Command::Approve { payment_id: p, auth_code: None }),
            Err(DomainError::IllegalTransition { from: "captured", action: "approved" })
        );
        let unknown = Uuid::new_v4();
        assert_eq!(
            when(&mut order, Command::Capture { payment_id: unknown }),
            Err(DomainError::PaymentNotFound(unknown))
        );
    }

    #[test]
    fn refunds_never_exceed_what_was_captured_including_tip() {
        let mut order = given_order(1000);
        let payment_id = Uuid::new_v4();
        when(
            &mut order,
            Command::CreatePayment {
                payment_id,
                method: PaymentMethod::Card,
                amount: 1000,
                tip: 50,
                capture: CaptureMode::Automatic,
            },
        )
        .expect("created");
        approve(&mut order, payment_id);
        let refund = |amount| Command::Refund { refund_id: Uuid::new_v4(), payment_id, amount, reason: None };
        when(&mut order, refund(600)).expect("partial refund");
        assert_eq!(
            when(&mut order, refund(451)),
            Err(DomainError::RefundExceedsCaptured { amount: 451, refundable: 450 })
        );
        when(&mut order, refund(450)).expect("rest refunded");
        assert_eq!(when(&mut order, refund(0)), Err(DomainError::AmountNotPositive));
        assert_eq!(order.payment(payment_id).map(|p| p.refunded), Some(1050));
    }

    #[test]
    fn cancel_voids_open_tenders_but_not_when_something_was_captured() {
        let mut order = given_order(1000);
        let a = pay(&mut order, 400, CaptureMode::Manual);
        approve(&mut order, a);
        let b = pay(&mut order, 600, CaptureMode::Manual);
        let events = when(&mut order, Command::Cancel).expect("canceled");
        assert_eq!(kinds(&events), ["voided", "voided", "canceled"]);
        assert_eq!(order.payment(b).map(|p| p.status), Some(PaymentStatus::Voided));
        assert_eq!(when(&mut order, Command::Cancel), Err(DomainError::OrderNotOpen("canceled")));

        let mut paid = given_order(300);
        let p = pay(&mut paid, 100, CaptureMode::Automatic);
        approve(&mut paid, p);
        assert_eq!(when(&mut paid, Command::Cancel), Err(DomainError::OrderHasCapturedPayments));
    }

    #[test]
    fn a_zero_total_order_completes_at_creation() {
        let order = given_order(0);
        assert_eq!(order.status, OrderStatus::Completed);
        assert_eq!(order.version, 2);
    }
}
