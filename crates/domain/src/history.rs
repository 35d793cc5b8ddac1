//! Usage history: a user's (or everyone's) units per UTC hour, day or month
//! over a range, from the store's hourly roll-ups.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

use crate::{PlanId, UserId, ValidationError};

/// The most buckets one history query covers.
pub const MAX_BUCKETS: i64 = 1_000;

/// Buckets a query covers when it gives no `from`.
pub const DEFAULT_BUCKETS: i64 = 30;

/// The size of a history bucket: a UTC calendar hour, day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bucket {
    /// From a full hour to the next.
    Hour,
    /// 00:00 UTC to the next 00:00 UTC.
    #[default]
    Day,
    /// The 1st 00:00 UTC to the next month's 1st.
    Month,
}

impl Bucket {
    /// Parses `hour`, `day` or `month`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            _ => Err(ValidationError::new(
                "bucket",
                "must be one of hour, day, month",
            )),
        }
    }

    /// The bucket as the contract names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The store's grain that this bucket is made of: hours, or whole days
    /// (a month is a run of days).
    pub fn grain(self) -> HistoryGrain {
        match self {
            Self::Hour => HistoryGrain::Hour,
            Self::Day | Self::Month => HistoryGrain::Day,
        }
    }

    /// The start of the bucket that holds `at`.
    pub fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        match self {
            Self::Hour => midnight(day) + Duration::hours(i64::from(at.hour())),
            Self::Day => midnight(day),
            Self::Month => midnight(day.with_day(1).unwrap_or(day)),
        }
    }

    /// The start of the bucket after the one starting at `start`; `None`
    /// past the calendar's end.
    pub fn next(self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Hour => start.checked_add_signed(Duration::hours(1)),
            Self::Day => start.checked_add_signed(Duration::days(1)),
            Self::Month => {
                let day = start.date_naive();
                let (year, month) = if day.month() == 12 {
                    (day.year() + 1, 1)
                } else {
                    (day.year(), day.month() + 1)
                };
                NaiveDate::from_ymd_opt(year, month, 1).map(midnight)
            }
        }
    }

    /// The start of the bucket `n` before the one starting at `start`.
    fn back(self, start: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
        match self {
            Self::Hour => start.checked_sub_signed(Duration::hours(n)),
            Self::Day => start.checked_sub_signed(Duration::days(n)),
            Self::Month => {
                let months = i64::from(start.year()) * 12 + i64::from(start.month0()) - n;
                let year = i32::try_from(months.div_euclid(12)).ok()?;
                let month = u32::try_from(months.rem_euclid(12)).ok()? + 1;
                NaiveDate::from_ymd_opt(year, month, 1).map(midnight)
            }
        }
    }

    /// `at` if a bucket starts there, else the start of the next bucket.
    pub fn ceil(self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let floor = self.floor(at);
        if floor == at {
            Some(at)
        } else {
            self.next(floor)
        }
    }

    /// How many buckets `[from, to)` covers, both on bucket starts.
    pub fn count(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        match self {
            Self::Hour => (to - from).num_hours(),
            Self::Day => (to - from).num_days(),
            Self::Month => {
                let months = |t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0());
                months(to) - months(from)
            }
        }
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// The store's unit of a history read: sums per UTC hour or per UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryGrain {
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

/// Whose usage a history sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    /// One user's.
    User(UserId),
    /// The users with an active subscription of the plan.
    Plan(PlanId),
    /// Every user's.
    Everyone,
}

/// What a store reads for a history: the units of `whose` per grain and
/// permission in `[from, to)`, optionally of one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Whose usage.
    pub whose: Whose,
    /// Hours or days.
    pub grain: HistoryGrain,
    /// The first instant (a bucket start).
    pub from: DateTime<Utc>,
    /// The first instant after the range (a bucket start).
    pub to: DateTime<Utc>,
    /// Only this permission's units, if given.
    pub permission: Option<String>,
}

/// One sum the store read: the units of a permission in the grain starting
/// at `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The hour's or day's start.
    pub start: DateTime<Utc>,
    /// The permission's name.
    pub permission: String,
    /// Its units there.
    pub used: i64,
}

/// A history query, checked: `[from, to)` on the bucket's boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The buckets' size.
    pub bucket: Bucket,
    /// The first bucket's start.
    pub from: DateTime<Utc>,
    /// The end of the last bucket.
    pub to: DateTime<Utc>,
    /// Only this permission, if given.
    pub permission: Option<String>,
}

impl HistoryQuery {
    /// The query over `[from, to)` widened to whole buckets: `from` down to
    /// its bucket's start, `to` up to the next bucket's start. Without `to`,
    /// up to the end of the bucket holding `now`; without `from`, the
    /// [`DEFAULT_BUCKETS`] buckets before `to`. `from` after `to`, or more
    /// than [`MAX_BUCKETS`] buckets, is an error.
    pub fn new(
        bucket: Bucket,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        permission: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        let out_of_range = |field| ValidationError::new(field, "is out of range");
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                return Err(ValidationError::new("from", "must not be after to"));
            }
        }
        let to = match to {
            Some(to) => bucket.ceil(to).ok_or_else(|| out_of_range("to"))?,
            None => bucket
                .next(bucket.floor(now))
                .ok_or_else(|| out_of_range("to"))?,
        };
        let from = match from {
            Some(from) => bucket.floor(from),
            None => bucket
                .back(to, DEFAULT_BUCKETS)
                .ok_or_else(|| out_of_range("from"))?,
        };
        if from > to {
            return Err(ValidationError::new("from", "must not be after to"));
        }
        if bucket.count(from, to) > MAX_BUCKETS {
            return Err(ValidationError::new(
                "from",
                "the range covers more than 1000 buckets",
            ));
        }
        Ok(Self {
            bucket,
            from,
            to,
            permission,
        })
    }

    /// What the store reads for this query about `whose`.
    pub fn filter(&self, whose: Whose) -> HistoryFilter {
        HistoryFilter {
            whose,
            grain: self.bucket.grain(),
            from: self.from,
            to: self.to,
            permission: self.permission.clone(),
        }
    }

    /// The store's rows folded into this query's buckets: one item per
    /// bucket with units, ascending.
    pub fn fold(&self, rows: Vec<HistoryRow>) -> History {
        let mut buckets: BTreeMap<DateTime<Utc>, BTreeMap<String, i64>> = BTreeMap::new();
        for row in rows {
            if row.used == 0 {
                continue;
            }
            *buckets
                .entry(self.bucket.floor(row.start))
                .or_default()
                .entry(row.permission)
                .or_insert(0) += row.used;
        }
        History {
            bucket: self.bucket,
            from: self.from,
            to: self.to,
            items: buckets
                .into_iter()
                .map(|(start, by_permission)| HistoryItem {
                    start,
                    used: by_permission.values().sum(),
                    by_permission,
                })
                .collect(),
        }
    }
}

/// A history's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The buckets' size.
    pub bucket: Bucket,
    /// The first bucket's start.
    pub from: DateTime<Utc>,
    /// The end of the last bucket.
    pub to: DateTime<Utc>,
    /// The buckets with units, ascending.
    pub items: Vec<HistoryItem>,
}

/// One bucket of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    /// The bucket's start.
    pub start: DateTime<Utc>,
    /// Units in it.
    pub used: i64,
    /// Units in it per permission name.
    pub by_permission: BTreeMap<String, i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn row(start: &str, permission: &str, used: i64) -> HistoryRow {
        HistoryRow {
            start: t(start),
            permission: permission.into(),
            used,
        }
    }

    #[test]
    fn buckets_floor_at_their_calendar_edges() {
        assert_eq!(
            Bucket::Hour.floor(t("2026-03-01T10:59:59.999999Z")),
            t("2026-03-01T10:00:00Z")
        );
        assert_eq!(
            Bucket::Hour.floor(t("2026-03-01T11:00:00Z")),
            t("2026-03-01T11:00:00Z")
        );
        assert_eq!(
            Bucket::Day.floor(t("2026-12-31T23:59:59Z")),
            t("2026-12-31T00:00:00Z")
        );
        assert_eq!(
            Bucket::Day.floor(t("2027-01-01T00:00:00Z")),
            t("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            Bucket::Month.floor(t("2028-02-29T23:59:59Z")),
            t("2028-02-01T00:00:00Z")
        );
        assert_eq!(
            Bucket::Month.next(t("2026-12-01T00:00:00Z")),
            Some(t("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn february_has_28_or_29_days_of_buckets() {
        let days = |y: &str, n: &str| {
            Bucket::Day.count(
                t(&format!("{y}-02-01T00:00:00Z")),
                t(&format!("{n}-03-01T00:00:00Z")),
            )
        };
        assert_eq!(days("2027", "2027"), 28);
        assert_eq!(days("2028", "2028"), 29);
        assert_eq!(
            Bucket::Day.next(t("2028-02-28T00:00:00Z")),
            Some(t("2028-02-29T00:00:00Z"))
        );
        assert_eq!(
            Bucket::Day.next(t("2027-02-28T00:00:00Z")),
            Some(t("2027-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_range_widens_to_whole_buckets() {
        let now = t("2026-06-15T12:00:00Z");
        let q = HistoryQuery::new(
            Bucket::Hour,
            Some(t("2026-06-15T10:30:00Z")),
            Some(t("2026-06-15T11:00:00.000001Z")),
            None,
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.from, t("2026-06-15T10:00:00Z"));
        assert_eq!(q.to, t("2026-06-15T12:00:00Z"));
        // An end on a boundary stays.
        let q = HistoryQuery::new(
            Bucket::Day,
            None,
            Some(t("2027-01-01T00:00:00Z")),
            None,
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.to, t("2027-01-01T00:00:00Z"));
        assert_eq!(q.from, t("2026-12-02T00:00:00Z"));
    }

    #[test]
    fn the_default_is_the_last_30_buckets_up_to_now() {
        let now = t("2026-03-15T12:34:56Z");
        let q = HistoryQuery::new(Bucket::Month, None, None, None, now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.to, t("2026-04-01T00:00:00Z"));
        assert_eq!(q.from, t("2023-10-01T00:00:00Z"));
        assert_eq!(Bucket::Month.count(q.from, q.to), 30);
        let q =
            HistoryQuery::new(Bucket::Day, None, None, None, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.to, t("2026-03-16T00:00:00Z"));
        assert_eq!(Bucket::Day.count(q.from, q.to), 30);
    }

    #[test]
    fn bad_ranges_are_refused() {
        let now = t("2026-03-15T12:00:00Z");
        let after = HistoryQuery::new(
            Bucket::Day,
            Some(t("2026-03-10T00:00:01Z")),
            Some(t("2026-03-10T00:00:00Z")),
            None,
            now,
        );
        assert!(after.is_err());
        let exactly_1000 = HistoryQuery::new(
            Bucket::Hour,
            Some(t("2026-01-01T00:00:00Z")),
            Some(t("2026-01-01T00:00:00Z") + Duration::hours(1000)),
            None,
            now,
        );
        assert!(exactly_1000.is_ok());
        let over = HistoryQuery::new(
            Bucket::Hour,
            Some(t("2026-01-01T00:00:00Z")),
            Some(t("2026-01-01T00:00:01Z") + Duration::hours(1000)),
            None,
            now,
        );
        assert!(over.is_err());
        assert!(Bucket::parse("week").is_err());
    }

    #[test]
    fn rows_fold_into_their_buckets() {
        let q = HistoryQuery::new(
            Bucket::Month,
            Some(t("2026-12-01T00:00:00Z")),
            Some(t("2027-03-01T00:00:00Z")),
            None,
            t("2027-03-01T00:00:00Z"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let history = q.fold(vec![
            row("2026-12-31T00:00:00Z", "reports", 2),
            row("2026-12-31T00:00:00Z", "exports", 1),
            row("2027-01-01T00:00:00Z", "reports", 5),
            row("2027-02-28T00:00:00Z", "reports", 0),
        ]);
        assert_eq!(history.items.len(), 2);
        assert_eq!(history.items[0].start, t("2026-12-01T00:00:00Z"));
        assert_eq!(history.items[0].used, 3);
        assert_eq!(history.items[0].by_permission.get("exports"), Some(&1));
        assert_eq!(history.items[1].start, t("2027-01-01T00:00:00Z"));
        assert_eq!(history.items[1].used, 5);
    }
}
