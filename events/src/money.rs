//! Money: integer minor units plus an ISO 4217 currency.
//!
//! Amounts never pass through a float. The wire carries the integer number of
//! minor units (`1200` JPY is ¥1,200; `1200` USD is $12.00) and the currency
//! code; the exponent comes from the ISO 4217 table of `iso_currency`, so
//! formatting and validation are right for JPY (0), USD (2) and KWD (3).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A currency that has a minor unit (funds and metals such as XAU are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CurrencyError {
    #[error("`{0}` is not an ISO 4217 currency code")]
    Unknown(String),
    #[error("`{0}` has no minor unit and cannot be used for payments")]
    NoMinorUnit(String),
}

impl Currency {
    /// Parses an upper-case ISO 4217 alphabetic code.
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        let currency =
            iso_currency::Currency::from_code(code).ok_or_else(|| CurrencyError::Unknown(code.to_owned()))?;
        match currency.exponent() {
            Some(_) => Ok(Self(currency)),
            None => Err(CurrencyError::NoMinorUnit(code.to_owned())),
        }
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Number of decimal places of the minor unit (JPY 0, USD 2, KWD 3).
    pub fn minor_unit_exponent(self) -> u32 {
        // `parse` refuses currencies without an exponent.
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount in minor units of a currency, as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }
}

impl fmt::Display for Money {
    /// `12.00 USD`, `1200 JPY`, `1.500 KWD`: the major-unit amount with exactly
    /// the currency's minor digits, computed with integers only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = self.currency.minor_unit_exponent();
        let sign = if self.amount < 0 { "-" } else { "" };
        let abs = self.amount.unsigned_abs();
        if exp == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(exp);
        let (major, minor) = (abs / scale, abs % scale);
        write!(f, "{sign}{major}.{minor:0width$} {}", self.currency, width = exp as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(amount: i64, code: &str) -> Money {
        Money::new(amount, Currency::parse(code).expect("test currency"))
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        assert_eq!(Currency::parse("JPY").map(|c| c.minor_unit_exponent()), Ok(0));
        assert_eq!(Currency::parse("USD").map(|c| c.minor_unit_exponent()), Ok(2));
        assert_eq!(Currency::parse("KWD").map(|c| c.minor_unit_exponent()), Ok(3));
    }

    #[test]
    fn unknown_and_unitless_currencies_are_refused() {
        assert!(matches!(Currency::parse("ABC"), Err(CurrencyError::Unknown(_))));
        assert!(matches!(Currency::parse("jpy"), Err(CurrencyError::Unknown(_))));
        assert!(matches!(Currency::parse("XAU"), Err(CurrencyError::NoMinorUnit(_))));
    }

    #[test]
    fn display_uses_the_currency_exponent() {
        assert_eq!(money(1200, "JPY").to_string(), "1200 JPY");
        assert_eq!(money(1205, "USD").to_string(), "12.05 USD");
        assert_eq!(money(1500, "KWD").to_string(), "1.500 KWD");
        assert_eq!(money(-7, "USD").to_string(), "-0.07 USD");
    }

    #[test]
    fn money_round_trips_as_integer_minor_units() {
        let json = serde_json::to_string(&money(1200, "JPY")).expect("serialize");
        assert_eq!(json, r#"{"amount":1200,"currency":"JPY"}"#);
        let back: Money = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, money(1200, "JPY"));
        assert!(serde_json::from_str::<Money>(r#"{"amount":12.5,"currency":"JPY"}"#).is_err());
    }
}
