//! Timestamps are stored as microseconds since the Unix epoch.

use chrono::{DateTime, Utc};

pub(crate) fn to_db(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_db(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::UNIX_EPOCH)
}
