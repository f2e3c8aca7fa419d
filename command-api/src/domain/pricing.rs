//! Pricing an order: line totals, consumption tax and total, in minor units.
//!
//! Prices are tax-exclusive. Tax is computed once per tax rate per order on
//! the sum of that rate's line totals (as Japanese qualified invoices
//! require) and rounded with the merchant's named strategy. Arithmetic is
//! checked integer arithmetic; the tax multiplication goes through
//! `rust_decimal` so the rounding strategy is explicit, never banker's by
//! accident.

use events::domain::{PricedLine, TaxLine};
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::{BTreeMap, HashMap};

pub const MAX_LINES: usize = 200;
pub const MAX_QUANTITY: i64 = 9_999;
/// 10^12 minor units: far above any real basket, far below i64 overflow.
pub const MAX_UNIT_PRICE: i64 = 1_000_000_000_000;

/// A line as the terminal sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInput {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub tax_category: String,
}

/// How tax of one rate is rounded to the minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    Down,
    Up,
    HalfUp,
}

impl Rounding {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "down" => Some(Self::Down),
            "up" => Some(Self::Up),
            "half_up" => Some(Self::HalfUp),
            _ => None,
        }
    }

    fn strategy(self) -> RoundingStrategy {
        match self {
            // Amounts are never negative here, so toward zero is down.
            Self::Down => RoundingStrategy::ToZero,
            Self::Up => RoundingStrategy::AwayFromZero,
            Self::HalfUp => RoundingStrategy::MidpointAwayFromZero,
        }
    }
}

/// A merchant's tax rates (basis points by category) and rounding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxTable {
    pub rates_bp: HashMap<String, i32>,
    pub rounding: Rounding,
}

/// One invalid field, located by a JSON pointer into the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub pointer: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { pointer: pointer.into(), detail: detail.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub lines: Vec<PricedLine>,
    pub taxes: Vec<TaxLine>,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
}

/// Prices `lines` with `table`, or lists every invalid field.
pub fn price(lines: &[LineInput], table: &TaxTable) -> Result<Priced, Vec<FieldError>> {
    let mut errors = Vec::new();
    if lines.is_empty() || lines.len() > MAX_LINES {
        errors.push(FieldError::new("/lines", format!("must hold 1 to {MAX_LINES} lines")));
    }
    let mut priced = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match price_line(i, line, table) {
            Ok(p) => priced.push(p),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let too_large = || vec![FieldError::new("/lines", "order total is too large")];
    let mut by_rate: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut subtotal: i64 = 0;
    for line in &priced {
        subtotal = subtotal.checked_add(line.line_total).ok_or_else(too_large)?;
        let taxable = by_rate.entry((line.tax_category.clone(), line.tax_rate_bp)).or_default();
        *taxable = taxable.checked_add(line.line_total).ok_or_else(too_large)?;
    }
    let mut taxes = Vec::with_capacity(by_rate.len());
    let mut tax_sum: i64 = 0;
    for ((category, rate_bp), taxable) in by_rate {
        let tax = tax_on(taxable, rate_bp, table.rounding).ok_or_else(too_large)?;
        tax_sum = tax_sum.checked_add(tax).ok_or_else(too_large)?;
        taxes.push(TaxLine { tax_category: category, tax_rate_bp: rate_bp, taxable, tax });
    }
    let total = subtotal.checked_add(tax_sum).ok_or_else(too_large)?;
    Ok(Priced { lines: priced, taxes, subtotal, tax: tax_sum, total })
}

fn price_line(i: usize, line: &LineInput, table: &TaxTable) -> Result<PricedLine, Vec<FieldError>> {
    let at = |field: &str| format!("/lines/{i}/{field}");
    let mut errors = Vec::new();
    if line.sku.trim().is_empty() || line.sku.chars().count() > 64 {
        errors.push(FieldError::new(at("sku"), "must be 1 to 64 characters"));
    }
    if line.name.trim().is_empty() || line.name.chars().count() > 200 {
        errors.push(FieldError::new(at("name"), "must be 1 to 200 characters"));
    }
    if !(1..=MAX_QUANTITY).contains(&line.quantity) {
        errors.push(FieldError::new(at("quantity"), format!("must be 1 to {MAX_QUANTITY}")));
    }
    if !(0..=MAX_UNIT_PRICE).contains(&line.unit_price) {
        errors.push(FieldError::new(at("unit_price"), format!("must be 0 to {MAX_UNIT_PRICE} minor units")));
    }
    let rate = table.rates_bp.get(&line.tax_category).copied();
    if rate.is_none() {
        let mut known: Vec<&str> = table.rates_bp.keys().map(String::as_str).collect();
        known.sort_unstable();
        errors.push(FieldError::new(
            at("tax_category"),
            format!("unknown tax category; this merchant has {}", known.join(", ")),
        ));
    }
    let line_total = line.quantity.checked_mul(line.unit_price);
    match (rate, line_total) {
        (Some(tax_rate_bp), Some(line_total)) if errors.is_empty() => Ok(PricedLine {
            sku: line.sku.clone(),
            name: line.name.clone(),
            quantity: line.quantity,
            unit_price: line.unit_price,
            tax_category: line.tax_category.clone(),
            tax_rate_bp,
            line_total,
        }),
        _ => Err(errors),
    }
}

/// `taxable × rate`, rounded to a whole minor unit with the named strategy.
pub fn tax_on(taxable: i64, rate_bp: i32, rounding: Rounding) -> Option<i64> {
    let exact = Decimal::from(taxable).checked_mul(Decimal::new(i64::from(rate_bp), 4))?;
    let rounded = exact.round_dp_with_strategy(0, rounding.strategy());
    i64::try_from(rounded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rounding: Rounding) -> TaxTable {
        TaxTable { rates_bp: HashMap::from([("standard".into(), 1000), ("reduced".into(), 800)]), rounding }
    }

    fn line(sku: &str, quantity: i64, unit_price: i64, cat: &str) -> LineInput {
        LineInput {
            sku: sku.into(),
            name: format!("item {sku}"),
            quantity,
            unit_price,
            tax_category: cat.into(),
        }
    }

    #[test]
    fn given_mixed_rates_when_priced_then_tax_is_rounded_once_per_rate() {
        // Three reduced lines of 105 each: per line 8.4 -> 8 (x3 = 24); per rate 315 * 8% = 25.2 -> 25.
        let lines = vec![
            line("a", 1, 105, "reduced"),
            line("b", 1, 105, "reduced"),
            line("c", 1, 105, "reduced"),
            line("d", 2, 333, "standard"),
        ];
        let priced = price(&lines, &table(Rounding::Down)).expect("valid");
        assert_eq!(priced.subtotal, 315 + 666);
        let reduced = priced.taxes.iter().find(|t| t.tax_category == "reduced").expect("reduced");
        assert_eq!((reduced.taxable, reduced.tax), (315, 25));
        let standard = priced.taxes.iter().find(|t| t.tax_category == "standard").expect("std");
        assert_eq!((standard.taxable, standard.tax), (666, 66));
        assert_eq!(priced.tax, 91);
        assert_eq!(priced.total, 981 + 91);
    }

    #[test]
    fn rounding_mode_is_the_merchants_choice() {
        assert_eq!(tax_on(315, 800, Rounding::Down), Some(25));
        assert_eq!(tax_on(315, 800, Rounding::Up), Some(26));
        assert_eq!(tax_on(315, 800, Rounding::HalfUp), Some(25));
        // Exactly half: 25 * 10% = 2.5 rounds up under half_up (not to even).
        assert_eq!(tax_on(25, 1000, Rounding::HalfUp), Some(3));
        assert_eq!(tax_on(25, 1000, Rounding::Down), Some(2));
        assert_eq!(tax_on(45, 1000, Rounding::HalfUp), Some(5));
        assert_eq!(tax_on(0, 1000, Rounding::Up), Some(0));
    }

    #[test]
    fn amounts_are_minor_units_whatever_the_currency_exponent() {
        // 12.34 USD x 3 at 10%: 3702 cents, tax 370.2 -> 370 cents.
        let priced = price(&[line("x", 3, 1234, "standard")], &table(Rounding::Down)).expect("ok");
        assert_eq!((priced.subtotal, priced.tax, priced.total), (3702, 370, 4072));
        // 1.250 KWD at 8%: 1250 fils, tax 100 fils exactly.
        let priced = price(&[line("y", 1, 1250, "reduced")], &table(Rounding::Up)).expect("ok");
        assert_eq!((priced.tax, priced.total), (100, 1350));
    }

    #[test]
    fn every_invalid_field_is_reported_with_its_pointer() {
        let lines = vec![line("", 0, -5, "luxury"), line("ok", 1, 100, "standard")];
        let errors = price(&lines, &table(Rounding::Down)).expect_err("invalid");
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/lines/0/sku", "/lines/0/quantity", "/lines/0/unit_price", "/lines/0/tax_category"]
        );
        let empty = price(&[], &table(Rounding::Down)).expect_err("empty");
        assert_eq!(empty[0].pointer, "/lines");
    }

    #[test]
    fn the_largest_allowed_order_is_priced_exactly_within_i64() {
        let lines: Vec<LineInput> =
            (0..MAX_LINES).map(|i| line(&i.to_string(), MAX_QUANTITY, MAX_UNIT_PRICE, "standard")).collect();
        let priced = price(&lines, &table(Rounding::Down)).expect("the limits keep totals in range");
        assert_eq!(priced.subtotal, 1_999_800_000_000_000_000);
        assert_eq!(priced.tax, 199_980_000_000_000_000);
        assert_eq!(priced.total, 2_199_780_000_000_000_000);
        let one_more = line("x", 1, MAX_UNIT_PRICE + 1, "standard");
        let errors = price(&[one_more], &table(Rounding::Down)).expect_err("over the price limit");
        assert_eq!(errors[0].pointer, "/lines/0/unit_price");
    }
}
