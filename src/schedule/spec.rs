//! When a schedule ticks: a cron expression (UTC) or every N seconds.

use std::time::Duration;

use croner::parser::CronParser;
use croner::Cron;

use super::utc::UtcSecond;
use crate::error::{Error, ErrorKind, Result};

/// Longest cron expression accepted, in bytes.
pub const MAX_CRON_LEN: usize = 256;

/// When a schedule ticks. Tick times are whole seconds since the Unix
/// epoch. Built only by [`Spec::cron`] and [`Spec::every`], which
/// validate it.
#[derive(Debug, Clone)]
pub struct Spec(Kind);

#[derive(Debug, Clone)]
enum Kind {
    /// A cron expression with the text it came from.
    Cron { text: String, cron: Box<Cron> },
    /// Every N seconds (N ≥ 1).
    Every(u64),
}

impl Spec {
    /// The cron expression, for a cron schedule.
    pub fn cron_text(&self) -> Option<&str> {
        match &self.0 {
            Kind::Cron { text, .. } => Some(text),
            Kind::Every(_) => None,
        }
    }

    /// The period, for an every-N-seconds schedule.
    pub fn period(&self) -> Option<Duration> {
        match self.0 {
            Kind::Every(n) => Some(Duration::from_secs(n)),
            Kind::Cron { .. } => None,
        }
    }

    /// Parses a cron expression, evaluated in UTC: five fields (minute
    /// hour day-of-month month day-of-week), or six with seconds first,
    /// as the `croner` crate reads them (`L`, `W`, `#`, names like `MON`
    /// and an optional year field included). A clear
    /// [`ErrorKind::InvalidOptions`] error if it does not parse or never
    /// fires.
    pub fn cron(expr: &str) -> Result<Spec> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::InvalidOptions,
                format!("cron expression {expr:?}: {why}"),
            )
        };
        if expr.len() > MAX_CRON_LEN {
            return Err(bad(format!("longer than {MAX_CRON_LEN} bytes")));
        }
        let cron = CronParser::new()
            .parse(expr)
            .map_err(|e| bad(e.to_string()))?;
        let spec = Spec(Kind::Cron {
            text: expr.to_string(),
            cron: Box::new(cron),
        });
        // From the epoch, a pattern that can fire at all fires within a
        // few years (28 years hold every weekday/leap-year pairing).
        if spec.next_after(0).is_none() {
            return Err(bad("it never fires".into()));
        }
        Ok(spec)
    }

    /// Every `period` (whole seconds, at least one), at the multiples of
    /// the period since the Unix epoch: `every(60 s)` ticks on the minute,
    /// and every process computes the same ticks.
    pub fn every(period: Duration) -> Result<Spec> {
        if period.subsec_nanos() != 0 || period.as_secs() == 0 {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!("schedule period {period:?} must be a whole number of seconds, at least 1"),
            ));
        }
        Ok(Spec(Kind::Every(period.as_secs())))
    }

    /// The latest tick at or before `now` (seconds), if any.
    pub(crate) fn latest_at_or_before(&self, now: u64) -> Option<u64> {
        match &self.0 {
            Kind::Every(n) => Some(now - now % n),
            Kind::Cron { cron, .. } => {
                // No cron tick lies past the last year searched: a clock
                // set further ahead is searched from there, not year by
                // year down from where it says (minutes of CPU per call).
                let now = i64::try_from(now.min(CRON_END)).ok()?;
                let t = cron.find_previous_occurrence(&UtcSecond(now), true).ok()?;
                u64::try_from(t.0).ok()
            }
        }
    }

    /// The first tick strictly after `after` (seconds), if any.
    pub(crate) fn next_after(&self, after: u64) -> Option<u64> {
        match &self.0 {
            Kind::Every(n) => (after / n).checked_add(1)?.checked_mul(*n),
            Kind::Cron { cron, .. } => {
                if after >= CRON_END {
                    return None;
                }
                let after = i64::try_from(after).ok()?;
                let t = cron.find_next_occurrence(&UtcSecond(after), false).ok()?;
                u64::try_from(t.0).ok()
            }
        }
    }
}

/// 5000-01-01T00:00:00Z (seconds): cron patterns are searched up to the
/// year 5000 (croner's limit), so no cron tick lies past it.
const CRON_END: u64 = 95_617_584_000;

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z

    #[test]
    fn every_ticks_on_multiples() {
        let s = Spec::every(Duration::from_secs(60)).unwrap();
        assert_eq!(s.latest_at_or_before(T0), Some(T0 - 20));
        assert_eq!(s.next_after(T0), Some(T0 + 40));
        assert_eq!(s.next_after(T0 + 40), Some(T0 + 100));
    }

    #[test]
    fn cron_in_utc() {
        let s = Spec::cron("0 3 * * *").unwrap(); // 03:00 UTC daily
        let next = s.next_after(T0).unwrap();
        assert_eq!(next, 1_700_017_200); // 2023-11-15T03:00:00Z
        assert_eq!(s.latest_at_or_before(next), Some(next));
        assert_eq!(s.latest_at_or_before(next - 1), Some(next - 86_400));
        let secs = Spec::cron("*/15 * * * * *").unwrap();
        assert_eq!(secs.next_after(T0), Some(T0 + 10));
    }

    #[test]
    fn invalid_specs_are_clear_errors() {
        for bad in ["", "not cron", "61 * * * *", "* * * *", "0 0 30 2 *"] {
            let err = Spec::cron(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{bad}");
            assert!(err.to_string().contains("cron expression"), "{err}");
        }
        assert!(Spec::cron(&"* ".repeat(200)).is_err());
        assert!(Spec::every(Duration::ZERO).is_err());
        assert!(Spec::every(Duration::from_millis(1500)).is_err());
    }

    /// Found by review: a clock set far past the year 5000 (near
    /// `u64::MAX` ms) made the search for the latest tick step back one
    /// year at a time, minutes of CPU for one call.
    #[test]
    fn a_clock_past_the_last_year_searched_is_answered_at_once() {
        let spec = Spec::cron("0 0 1 1 *").unwrap();
        let far = u64::MAX / 1000;
        let latest = spec.latest_at_or_before(far).expect("a tick before 5000");
        assert_eq!(
            latest, CRON_END,
            "5000-01-01 00:00 is a tick of the pattern"
        );
        assert_eq!(spec.next_after(far), None);
        assert_eq!(spec.next_after(CRON_END), None);
    }
}
