//! Unix seconds as a calendar date in UTC, for the cron parser and for
//! showing times as text.
//!
//! Schedules are evaluated in UTC on whole seconds: this type connects
//! `croner` to walq's clock without a date library (the conversions are
//! Howard Hinnant's `days_from_civil` / `civil_from_days`). The same
//! conversion writes times as RFC 3339 text for `walq::inspect` users, the
//! command line and the JetStream backend.

use std::cmp::Ordering;

use croner::errors::CronError;
use croner::time::{CivilDate, CivilDateTime, CivilTime, CronDateTime, Resolution, Weekday};

const DAY: i64 = 86_400;

/// Seconds since the Unix epoch, read as a UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UtcSecond(pub i64);

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12).
    (year, day as u32, month as u32)
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS` in UTC (no zone
/// designator: the caller adds fractions and the `Z`).
pub(crate) fn civil_text(secs: i64) -> String {
    let (year, day, month) = civil_from_days(secs.div_euclid(DAY));
    let rem = secs.rem_euclid(DAY);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Milliseconds since the Unix epoch as RFC 3339 text in UTC with
/// milliseconds, `YYYY-MM-DDTHH:MM:SS.mmmZ`: how the `walq` command line
/// shows the `_ms` times of a [`Snapshot`](crate::inspect::Snapshot) or a
/// dead letter.
///
/// ```
/// assert_eq!(walq::inspect::utc_time(951_782_400_123), "2000-02-29T00:00:00.123Z");
/// ```
pub fn utc_time(ms: u64) -> String {
    // `u64::MAX / 1000` is below `i64::MAX`: the fallback is never taken.
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    format!("{}.{:03}Z", civil_text(secs), ms % 1000)
}

impl CronDateTime for UtcSecond {
    fn to_civil(&self) -> CivilDateTime {
        let days = self.0.div_euclid(DAY);
        let secs = self.0.rem_euclid(DAY);
        let (year, day, month) = civil_from_days(days);
        let year = i32::try_from(year).unwrap_or(i32::MAX);
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        CivilDateTime::new(
            CivilDate::from_parts_unchecked(year, month, day),
            CivilTime::from_parts_unchecked(h as u32, m as u32, s as u32),
        )
    }

    fn civil_weekday(&self) -> Weekday {
        // 1970-01-01 was a Thursday (4 days from Sunday).
        let days = self.0.div_euclid(DAY);
        Weekday::from_days_from_sunday((days + 4).rem_euclid(7) as u32)
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let date = civil.date();
        let time = civil.time();
        let days = days_from_civil(
            i64::from(date.year()),
            i64::from(date.month()),
            i64::from(date.day()),
        );
        let secs = i64::from(time.hour()) * 3600
            + i64::from(time.minute()) * 60
            + i64::from(time.second());
        Ok(Resolution::Single(UtcSecond(days * DAY + secs)))
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0.checked_add(seconds).map(UtcSecond)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_time(1_798_761_599_000), "2026-12-31T23:59:59.000Z");
        assert_eq!(utc_time(1_700_000_000_999), "2023-11-14T22:13:20.999Z");
        assert_eq!(civil_text(-1), "1969-12-31T23:59:59");
    }

    #[test]
    fn round_trips_days_across_eras() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, d, m) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }

    #[test]
    fn known_dates() {
        // 2023-11-14T22:13:20Z, a Tuesday.
        let t = UtcSecond(1_700_000_000);
        let c = t.to_civil();
        assert_eq!(
            (c.date().year(), c.date().month(), c.date().day()),
            (2023, 11, 14)
        );
        assert_eq!(
            (c.time().hour(), c.time().minute(), c.time().second()),
            (22, 13, 20)
        );
        assert_eq!(t.civil_weekday(), Weekday::Tuesday);
        // 2000-02-29 exists (leap year divisible by 400).
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        assert_eq!(UtcSecond(0).civil_weekday(), Weekday::Thursday);
    }
}
