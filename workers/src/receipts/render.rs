//! Rendering a receipt from the write model, with currency-correct amounts.
//!
//! Amounts are formatted by `events::Money` with the currency's ISO 4217
//! minor unit (1314 JPY, 13.14 USD, 1.314 KWD). Names come from terminals,
//! so the HTML escapes everything it interpolates.

use chrono::{DateTime, Utc};
use events::domain::{PricedLine, TaxLine};
use events::{Currency, Money};
use sqlx::PgPool;
use sqlx::types::Json;
use std::fmt::Write;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Receipt {
    pub text: String,
    pub html: String,
}

struct Tender {
    method: String,
    amount: i64,
    tip: i64,
}

/// Renders the receipt of `order_id`, or `None` if there is no such order.
pub async fn render(pg: &PgPool, order_id: Uuid) -> Result<Option<Receipt>, sqlx::Error> {
    type Row =
        (String, String, String, Json<Vec<PricedLine>>, Json<Vec<TaxLine>>, i64, i64, DateTime<Utc>, String);
    let row: Option<Row> = sqlx::query_as(
        "SELECT m.name, s.name, o.currency, o.lines, o.taxes, o.subtotal, o.total, o.created_at, s.time_zone
           FROM orders o JOIN stores s ON s.id = o.store_id JOIN merchants m ON m.id = o.merchant_id
          WHERE o.id = $1",
    )
    .bind(order_id)
    .fetch_optional(pg)
    .await?;
    let Some((merchant, store, currency, lines, taxes, subtotal, total, created_at, tz)) = row else {
        return Ok(None);
    };
    let tenders: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT method, amount, tip FROM payments WHERE order_id = $1 AND status = 'captured' ORDER BY created_at, id",
    )
    .bind(order_id)
    .fetch_all(pg)
    .await?;
    let tenders: Vec<Tender> =
        tenders.into_iter().map(|(method, amount, tip)| Tender { method, amount, tip }).collect();
    let Ok(currency) = Currency::parse(currency.trim()) else { return Ok(None) };
    let when = match tz.parse::<chrono_tz::Tz>() {
        Ok(zone) => created_at.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string(),
        Err(_) => created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
    };
    let doc = Document {
        merchant,
        store,
        order_id,
        when,
        currency,
        lines: lines.0,
        taxes: taxes.0,
        subtotal,
        total,
        tenders,
    };
    Ok(Some(Receipt { text: doc.text(), html: doc.html() }))
}

struct Document {
    merchant: String,
    store: String,
    order_id: Uuid,
    when: String,
    currency: Currency,
    lines: Vec<PricedLine>,
    taxes: Vec<TaxLine>,
    subtotal: i64,
    total: i64,
    tenders: Vec<Tender>,
}

impl Document {
    fn money(&self, amount: i64) -> String {
        Money::new(amount, self.currency).to_string()
    }

    /// `(label, amount)` rows after the lines: subtotal, taxes, total, tenders.
    fn summary(&self) -> Vec<(String, String)> {
        let mut rows = vec![("Subtotal".to_owned(), self.money(self.subtotal))];
        for t in &self.taxes {
            let pct = format!("{}.{}%", t.tax_rate_bp / 100, (t.tax_rate_bp % 100) / 10);
            rows.push((
                format!("Tax {} {pct} on {}", t.tax_category, self.money(t.taxable)),
                self.money(t.tax),
            ));
        }
        rows.push(("Total".to_owned(), self.money(self.total)));
        for t in &self.tenders {
            rows.push((format!("Paid {}", t.method), self.money(t.amount)));
            if t.tip > 0 {
                rows.push((format!("Tip ({})", t.method), self.money(t.tip)));
            }
        }
        rows
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}\n{}\nReceipt for order {}\n{}\n",
            self.merchant, self.store, self.order_id, self.when
        );
        for l in &self.lines {
            let label = format!("{} x {} @ {}", l.quantity, l.name, self.money(l.unit_price));
            let _ = writeln!(out, "{label:<40} {:>16}", self.money(l.line_total));
        }
        let _ = writeln!(out, "{}", "-".repeat(57));
        for (label, amount) in self.summary() {
            let _ = writeln!(out, "{label:<40} {amount:>16}");
        }
        out
    }

    fn html(&self) -> String {
        let e = |s: &str| html_escape::encode_text(s).into_owned();
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Receipt</title></head><body>",
        );
        let _ = write!(
            out,
            "<h1>{}</h1><p>{}<br>Receipt for order {}<br>{}</p><table>",
            e(&self.merchant),
            e(&self.store),
            self.order_id,
            e(&self.when)
        );
        for l in &self.lines {
            let _ = write!(
                out,
                "<tr><td>{} &times; {} @ {}</td><td>{}</td></tr>",
                l.quantity,
                e(&l.name),
                e(&self.money(l.unit_price)),
                e(&self.money(l.line_total))
            );
        }
        for (label, amount) in self.summary() {
            let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", e(&label), e(&amount));
        }
        out.push_str("</table></body></html>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(code: &str, name: &str) -> Document {
        Document {
            merchant: "Cafe".into(),
            store: "Cafe #1".into(),
            order_id: Uuid::nil(),
            when: "2026-11-22 09:00".into(),
            currency: Currency::parse(code).expect("currency"),
            lines: vec![PricedLine {
                sku: "a".into(),
                name: name.into(),
                quantity: 2,
                unit_price: 1250,
                tax_category: "standard".into(),
                tax_rate_bp: 1000,
                line_total: 2500,
            }],
            taxes: vec![TaxLine {
                tax_category: "standard".into(),
                tax_rate_bp: 1000,
                taxable: 2500,
                tax: 250,
            }],
            subtotal: 2500,
            total: 2750,
            tenders: vec![Tender { method: "card".into(), amount: 2750, tip: 300 }],
        }
    }

    #[test]
    fn amounts_use_the_currency_minor_unit() {
        let jpy = doc("JPY", "Coffee").text();
        assert!(jpy.contains("2750 JPY") && jpy.contains("Tax standard 10.0% on 2500 JPY"), "{jpy}");
        let usd = doc("USD", "Coffee").text();
        assert!(usd.contains("27.50 USD") && usd.contains("Tip (card)") && usd.contains("3.00 USD"), "{usd}");
        let kwd = doc("KWD", "Coffee").text();
        assert!(kwd.contains("2.750 KWD"), "{kwd}");
    }

    #[test]
    fn html_escapes_what_terminals_send() {
        let html = doc("JPY", "<script>alert(1)</script> & co").html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;") && html.contains("&amp; co"), "{html}");
    }
}
