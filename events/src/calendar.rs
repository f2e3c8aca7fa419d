//! Business dates: a store's sales day, fixed when a sale happens.
//!
//! Pure time arithmetic shared by the command API (dating sales) and the
//! workers (knowing which days have closed).
//!
//! A sales day runs in the store's IANA time zone and ends at the store's
//! close-of-day time (04:00 for a late bar): a sale at 02:30 local time on
//! the 23rd belongs to the 22nd. The date is computed once, at sale time,
//! and stored, so later time-zone changes never move past sales.

use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;

pub fn business_date(at: DateTime<Utc>, tz: Tz, close_of_day: NaiveTime) -> NaiveDate {
    let local = at.with_timezone(&tz).naive_local();
    let offset = chrono::Duration::seconds(i64::from(close_of_day.num_seconds_from_midnight()));
    (local - offset).date()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc)).unwrap_or_default()
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn midnight_close_uses_the_local_calendar_day() {
        // 15:30 UTC on the 22nd is 00:30 on the 23rd in Tokyo.
        let d = business_date(utc("2026-11-22T15:30:00Z"), chrono_tz::Asia::Tokyo, NaiveTime::MIN);
        assert_eq!(d, date("2026-11-23"));
    }

    #[test]
    fn sales_before_close_of_day_belong_to_the_previous_day() {
        let four = NaiveTime::from_hms_opt(4, 0, 0).unwrap_or_default();
        // 02:30 JST on the 23rd, before a 04:00 close: still the 22nd.
        let d = business_date(utc("2026-11-22T17:30:00Z"), chrono_tz::Asia::Tokyo, four);
        assert_eq!(d, date("2026-11-22"));
        // 04:00 JST exactly opens the 23rd.
        let d = business_date(utc("2026-11-22T19:00:00Z"), chrono_tz::Asia::Tokyo, four);
        assert_eq!(d, date("2026-11-23"));
    }

    #[test]
    fn daylight_saving_shifts_are_followed() {
        // New York: 2026-03-08 clocks jump 02:00 -> 03:00 (UTC-5 -> UTC-4).
        let ny = chrono_tz::America::New_York;
        let d = business_date(utc("2026-03-08T04:30:00Z"), ny, NaiveTime::MIN); // 23:30 EST on the 7th
        assert_eq!(d, date("2026-03-07"));
        let d = business_date(utc("2026-03-09T03:30:00Z"), ny, NaiveTime::MIN); // 23:30 EDT on the 8th
        assert_eq!(d, date("2026-03-08"));
    }
}
