//! Quota periods: calendar windows in UTC.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use crate::ValidationError;

/// How often a plan's usage resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UsagePeriod {
    /// Never resets.
    Lifetime,
    /// 00:00 UTC to the next 00:00 UTC.
    Day,
    /// The 1st 00:00 UTC to the next month's 1st 00:00 UTC.
    #[default]
    Month,
}

/// One window of a period: `[start, end)`, `end` absent for `lifetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first instant of the window.
    pub start: DateTime<Utc>,
    /// The first instant after the window; `None` for a lifetime window.
    pub end: Option<DateTime<Utc>>,
}

impl Window {
    /// Whole seconds from `now` until the window ends (rounded up), if it ends.
    pub fn seconds_until_end(&self, now: DateTime<Utc>) -> Option<i64> {
        self.end.map(|end| {
            let ms = (end - now).num_milliseconds().max(0);
            (ms + 999) / 1000
        })
    }
}

impl UsagePeriod {
    /// Parses `lifetime`, `day` or `month`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "lifetime" => Ok(Self::Lifetime),
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            _ => Err(ValidationError::new(
                "usage_period",
                "must be one of lifetime, day, month",
            )),
        }
    }

    /// The period as the contract names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lifetime => "lifetime",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The window shown to clients for a subscription that started at
    /// `started_at`: [`Self::window_at`], except that a lifetime window is
    /// shown from the subscription's start rather than the epoch.
    pub fn shown_window(self, at: DateTime<Utc>, started_at: DateTime<Utc>) -> Window {
        match self {
            Self::Lifetime => Window {
                start: started_at,
                end: None,
            },
            _ => self.window_at(at),
        }
    }

    /// The window that contains `at`. The lifetime window starts at the Unix
    /// epoch, so every lifetime counter has the same key.
    pub fn window_at(self, at: DateTime<Utc>) -> Window {
        match self {
            Self::Lifetime => Window {
                start: DateTime::UNIX_EPOCH,
                end: None,
            },
            Self::Day => {
                let day = at.date_naive();
                Window {
                    start: midnight(day),
                    end: day.succ_opt().map(midnight),
                }
            }
            Self::Month => {
                let first = NaiveDate::from_ymd_opt(at.year(), at.month(), 1)
                    .unwrap_or_else(|| at.date_naive());
                let next = if at.month() == 12 {
                    NaiveDate::from_ymd_opt(at.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(at.year(), at.month() + 1, 1)
                };
                Window {
                    start: midnight(first),
                    end: next.map(midnight),
                }
            }
        }
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid timestamp")
            .with_timezone(&Utc)
    }

    #[test]
    fn last_second_of_a_day_is_still_that_day() {
        let w = UsagePeriod::Day.window_at(t("2026-11-26T23:59:59Z"));
        assert_eq!(w.start, t("2026-11-26T00:00:00Z"));
        assert_eq!(w.end, Some(t("2026-11-27T00:00:00Z")));
        assert_eq!(w.seconds_until_end(t("2026-11-26T23:59:59Z")), Some(1));
        let next = UsagePeriod::Day.window_at(t("2026-11-27T00:00:00Z"));
        assert_eq!(next.start, t("2026-11-27T00:00:00Z"));
    }

    #[test]
    fn december_rolls_over_to_january() {
        let w = UsagePeriod::Month.window_at(t("2026-12-31T23:59:59Z"));
        assert_eq!(w.start, t("2026-12-01T00:00:00Z"));
        assert_eq!(w.end, Some(t("2027-01-01T00:00:00Z")));
        let d = UsagePeriod::Day.window_at(t("2026-12-31T12:00:00Z"));
        assert_eq!(d.end, Some(t("2027-01-01T00:00:00Z")));
    }

    #[test]
    fn february_has_28_or_29_days() {
        let w = UsagePeriod::Month.window_at(t("2027-02-28T10:00:00Z"));
        assert_eq!(w.end, Some(t("2027-03-01T00:00:00Z")));
        let leap = UsagePeriod::Day.window_at(t("2028-02-28T10:00:00Z"));
        assert_eq!(leap.end, Some(t("2028-02-29T00:00:00Z")));
        let leap_month = UsagePeriod::Month.window_at(t("2028-02-29T23:00:00Z"));
        assert_eq!(leap_month.start, t("2028-02-01T00:00:00Z"));
        assert_eq!(leap_month.end, Some(t("2028-03-01T00:00:00Z")));
    }

    #[test]
    fn lifetime_never_ends() {
        let w = UsagePeriod::Lifetime.window_at(t("2026-11-26T12:00:00Z"));
        assert_eq!(w.start, DateTime::UNIX_EPOCH);
        assert_eq!(w.end, None);
        assert_eq!(w.seconds_until_end(t("2026-11-26T12:00:00Z")), None);
    }

    #[test]
    fn period_names_parse() {
        assert_eq!(UsagePeriod::parse("day"), Ok(UsagePeriod::Day));
        assert!(UsagePeriod::parse("Day").is_err());
        assert!(UsagePeriod::parse("week").is_err());
    }
}
