//! When a schedule fires: a 5-field cron expression read as wall-clock time in an IANA zone.
//!
//! The fields are matched against the zone's civil time, then each match is placed on the
//! timeline with jiff's "compatible" rule, so daylight saving behaves as people expect of a
//! nightly job: a time the spring-forward skips (02:30 in Berlin on its last Sunday of March)
//! runs once the clock has jumped (03:30 CEST), and a time the fall-back repeats runs once,
//! the first time. (cronexpr alone would skip the whole day in the first case and run twice in
//! the second.)

use chrono::{DateTime, Utc};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::ScheduleError;

/// Occurrences examined in one computation at most: far more than any window below holds, a
/// guard against an expression that matches in civil time but never on the timeline.
const MAX_STEPS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Cron {
    /// The expression evaluated in UTC, i.e. over civil date-times with no transitions.
    civil: cronexpr::Crontab,
    zone: TimeZone,
    /// The expression as stored: the five fields, single-spaced.
    pub expression: String,
    /// The zone's name as stored.
    pub timezone: String,
}

impl Cron {
    /// Parses `cron` (exactly five fields) and `timezone` (an IANA name such as
    /// `Europe/Berlin`; `UTC` when absent), naming the field at fault.
    pub fn parse(cron: &str, timezone: Option<&str>) -> Result<Cron, ScheduleError> {
        let name = timezone.map(str::trim).unwrap_or("UTC");
        let zone = TimeZone::get(name).map_err(|e| ScheduleError::Timezone {
            message: format!(
                "unknown time zone {name:?} (expected an IANA name such as Europe/Berlin): {e}"
            ),
        })?;
        let fields: Vec<&str> = cron.split_ascii_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::Cron {
                message: format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), got {}; \
                     give the zone in `timezone`",
                    fields.len()
                ),
            });
        }
        let expression = fields.join(" ");
        let civil = cronexpr::parse_crontab(&format!("{expression} UTC")).map_err(|e| {
            ScheduleError::Cron {
                message: format!("invalid cron expression {expression:?}: {e}"),
            }
        })?;
        let timezone = zone.iana_name().unwrap_or(name).to_string();
        Ok(Cron {
            civil,
            zone,
            expression,
            timezone,
        })
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        from_jiff(self.next_after_ts(to_jiff(t)?)?)
    }

    /// The latest occurrence in `[since, now]`, or None when there is none. Missed occurrences
    /// collapse into this one. The window ends at `now` and doubles backwards, so a long
    /// downtime costs a few steps, not one per missed occurrence.
    pub fn latest_in(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        let now = to_jiff(now)?;
        // Occurrences are whole minutes, so starting a second early includes `since` itself.
        let floor = earlier(to_jiff(since)?, SignedDuration::from_secs(1))?;
        let mut lookback = SignedDuration::from_hours(1);
        loop {
            let start = earlier(now, lookback)?.max(floor);
            let mut last = None;
            let mut t = start;
            for _ in 0..MAX_STEPS {
                let next = self.next_after_ts(t)?;
                if next > now {
                    break;
                }
                last = Some(next);
                t = next;
            }
            if last.is_some() || start == floor {
                return last.map(from_jiff).transpose();
            }
            lookback = lookback.saturating_mul(2);
        }
    }

    fn next_after_ts(&self, t: Timestamp) -> Result<Timestamp, ScheduleError> {
        let mut civil = t.to_zoned(self.zone.clone()).datetime();
        for _ in 0..MAX_STEPS {
            let as_utc = civil.to_zoned(TimeZone::UTC).map_err(|e| self.never(e))?;
            let next = self
                .civil
                .find_next(as_utc.timestamp())
                .map_err(|e| self.never(e))?
                .datetime();
            // Gap: the later side; fold: the earlier one, and the repeat is skipped because
            // it maps to an instant not after `t`.
            let instant = next
                .to_zoned(self.zone.clone())
                .map_err(|e| self.never(e))?;
            if instant.timestamp() > t {
                return Ok(instant.timestamp());
            }
            civil = next;
        }
        Err(self.never(format!("no occurrence within {MAX_STEPS} steps")))
    }

    fn never(&self, e: impl std::fmt::Display) -> ScheduleError {
        ScheduleError::Cron {
            message: format!(
                "{:?} in {} has no next occurrence: {e}",
                self.expression, self.timezone
            ),
        }
    }
}

fn earlier(t: Timestamp, by: SignedDuration) -> Result<Timestamp, ScheduleError> {
    t.saturating_sub(by)
        .map_err(|e| ScheduleError::Time(format!("{t} - {by}: {e}")))
}

fn to_jiff(t: DateTime<Utc>) -> Result<Timestamp, ScheduleError> {
    Timestamp::from_microsecond(t.timestamp_micros())
        .map_err(|e| ScheduleError::Time(format!("{t} is out of range: {e}")))
}

fn from_jiff(t: Timestamp) -> Result<DateTime<Utc>, ScheduleError> {
    DateTime::from_timestamp_micros(t.as_microsecond())
        .ok_or_else(|| ScheduleError::Time(format!("{t} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamp")
    }

    fn field(e: ScheduleError) -> &'static str {
        match e {
            ScheduleError::Cron { .. } => "cron",
            ScheduleError::Timezone { .. } => "timezone",
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn schedule_zone_defaults_to_utc() {
        let c = Cron::parse("0 3 * * *", None).expect("valid");
        assert_eq!(c.timezone, "UTC");
        assert_eq!(
            c.next_after(at("2026-11-25T03:00:00Z")).expect("next"),
            at("2026-11-26T03:00:00Z")
        );
        assert_eq!(
            c.next_after(at("2026-11-25T02:59:59.5Z")).expect("next"),
            at("2026-11-25T03:00:00Z")
        );
    }

    #[test]
    fn schedule_reads_fields_in_the_zone() {
        let c = Cron::parse("  0   3 * * *  ", Some("Europe/Berlin")).expect("valid");
        assert_eq!(c.expression, "0 3 * * *");
        assert_eq!(c.timezone, "Europe/Berlin");
        // CET in winter (UTC+1), CEST in summer (UTC+2).
        assert_eq!(
            c.next_after(at("2026-11-25T12:00:00Z")).expect("next"),
            at("2026-11-26T02:00:00Z")
        );
        assert_eq!(
            c.next_after(at("2026-07-01T12:00:00Z")).expect("next"),
            at("2026-07-02T01:00:00Z")
        );
    }

    #[test]
    fn schedule_dst_gap_runs_once_the_clock_has_jumped() {
        // 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST, so 02:30 does not exist.
        let c = Cron::parse("30 2 * * *", Some("Europe/Berlin")).expect("valid");
        let before = at("2026-03-28T12:00:00Z");
        let first = c.next_after(before).expect("next");
        // 03:30 CEST, on the day of the gap (not skipped to the 30th).
        assert_eq!(first, at("2026-03-29T01:30:00Z"));
        // The next day's 02:30 CEST.
        assert_eq!(
            c.next_after(first).expect("next"),
            at("2026-03-30T00:30:00Z")
        );
        // Every minute across the gap: no minute twice, none lost but the skipped hour.
        let m = Cron::parse("* * * * *", Some("Europe/Berlin")).expect("valid");
        let t = at("2026-03-29T00:59:00Z"); // 01:59 CET
        let n = m.next_after(t).expect("next");
        assert_eq!(n, at("2026-03-29T01:00:00Z")); // 03:00 CEST
        assert_eq!(m.next_after(n).expect("next"), at("2026-03-29T01:01:00Z"));
    }

    #[test]
    fn schedule_dst_fold_runs_once() {
        // 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice.
        let c = Cron::parse("30 2 * * *", Some("Europe/Berlin")).expect("valid");
        let first = c.next_after(at("2026-10-24T12:00:00Z")).expect("next");
        assert_eq!(first, at("2026-10-25T00:30:00Z")); // 02:30 CEST
        assert_eq!(
            c.next_after(first).expect("next"),
            at("2026-10-26T01:30:00Z") // 02:30 CET the next day, not 02:30 CET today
        );
    }

    #[test]
    fn schedule_missed_occurrences_collapse_into_the_latest() {
        let c = Cron::parse("*/5 * * * *", None).expect("valid");
        let now = at("2026-11-25T12:03:10Z");
        let since = at("2026-11-25T09:05:00Z");
        assert_eq!(
            c.latest_in(since, now).expect("latest"),
            Some(at("2026-11-25T12:00:00Z"))
        );
        // `since` itself counts when it is the only one.
        assert_eq!(
            c.latest_in(at("2026-11-25T12:00:00Z"), now)
                .expect("latest"),
            Some(at("2026-11-25T12:00:00Z"))
        );
        // A rare expression far back: found by widening the window.
        let yearly = Cron::parse("0 0 1 1 *", None).expect("valid");
        assert_eq!(
            yearly
                .latest_in(at("2026-01-01T00:00:00Z"), now)
                .expect("latest"),
            Some(at("2026-01-01T00:00:00Z"))
        );
        // None in the window: nothing to run.
        assert_eq!(
            yearly
                .latest_in(at("2026-02-01T00:00:00Z"), now)
                .expect("latest"),
            None
        );
    }

    #[test]
    fn schedule_parse_names_the_field() {
        assert_eq!(field(Cron::parse("0 3 * *", None).unwrap_err()), "cron");
        assert_eq!(
            field(Cron::parse("0 3 * * * Europe/Berlin", None).unwrap_err()),
            "cron"
        );
        assert_eq!(field(Cron::parse("61 3 * * *", None).unwrap_err()), "cron");
        assert_eq!(
            field(Cron::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err()),
            "timezone"
        );
        // Valid syntax that never happens (30 February).
        let never = Cron::parse("0 0 30 2 *", None).expect("parses");
        assert_eq!(
            field(never.next_after(at("2026-01-01T00:00:00Z")).unwrap_err()),
            "cron"
        );
    }
}
