//! The hourly roll-ups (`usage_hours`): a user's units per permission and
//! UTC hour, written with the events ([`super::events::record`]). New
//! windows' counters start from them ([`HoursOf`]) and history reads them
//! ([`history`]); they stay when retention deletes the raw events.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use tollgate_domain::history::{HistoryFilter, HistoryGrain, HistoryRow, Whose};
use tollgate_domain::period::Window;

use super::events::Statement;
use super::Users;
use crate::connection::DbConnection;
use crate::time::{from_db, to_db};

/// Microseconds in an hour.
const HOUR: i64 = 3_600_000_000;

/// Microseconds in a day.
const DAY: i64 = 24 * HOUR;

/// The start of the UTC hour of `at` (database microseconds).
pub(crate) fn hour_of(at: i64) -> i64 {
    at.div_euclid(HOUR) * HOUR
}

/// The roll-ups of some users in the hours of `[from, to)`: a table
/// expression with the columns `user_id`, `permission` and `cost` (an
/// hour's units), the shape the counters' seeds sum. Every window starts
/// and ends on an hour, so its hours hold exactly its events' units.
#[derive(Debug, Clone, Copy)]
pub(super) struct HoursOf {
    users: Users,
    from: i64,
    to: i64,
}

impl HoursOf {
    pub(super) fn in_window(users: Users, window: Window) -> Self {
        Self {
            users,
            from: to_db(window.start),
            to: window.end.map(to_db).unwrap_or(i64::MAX),
        }
    }

    /// `SELECT <select> FROM <the hours> AS e <rest>`; [`Self::bind`] binds
    /// the hours' values, then the caller those of `rest`.
    pub(super) fn sql(&self, select: &str, rest: &str) -> String {
        format!(
            "SELECT {select} FROM (SELECT user_id, permission, used AS cost FROM usage_hours \
             WHERE {} AND hour_start >= ? AND hour_start < ?) AS e {rest}",
            self.users.sql()
        )
    }

    /// Binds the values of [`Self::sql`]'s hours.
    pub(super) fn bind<'a>(&self, query: Statement<'a>) -> Statement<'a> {
        query
            .bind::<BigInt, _>(self.users.id())
            .bind::<BigInt, _>(self.from)
            .bind::<BigInt, _>(self.to)
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    start: i64,
    #[diesel(sql_type = Text)]
    permission: String,
    #[diesel(sql_type = BigInt)]
    used: i64,
}

/// The units of the filter's users per (hour or day, permission) in its
/// range, ascending: what history folds into its buckets.
pub(crate) fn history(
    c: &mut DbConnection,
    filter: &HistoryFilter,
) -> QueryResult<Vec<HistoryRow>> {
    let start = match filter.grain {
        HistoryGrain::Hour => "hour_start".to_owned(),
        // Whole days: the hours of a day share their day's start.
        HistoryGrain::Day => format!("hour_start - (hour_start % {DAY})"),
    };
    let users = match filter.whose {
        Whose::User(user) => Some(Users::One(user.get())),
        Whose::Plan(plan) => Some(Users::OfPlan(plan.get())),
        Whose::Everyone => None,
    };
    let mut conditions = vec!["hour_start >= ?", "hour_start < ?"];
    if let Some(users) = users {
        conditions.push(users.sql());
    }
    if filter.permission.is_some() {
        conditions.push("permission = ?");
    }
    let sql = format!(
        "SELECT {start} AS start, permission, CAST(SUM(used) AS {}) AS used \
         FROM usage_hours WHERE {} GROUP BY 1, permission ORDER BY 1, permission",
        c.bigint_cast(),
        conditions.join(" AND ")
    );
    let mut query = diesel::sql_query(sql)
        .into_boxed()
        .bind::<BigInt, _>(to_db(filter.from))
        .bind::<BigInt, _>(to_db(filter.to));
    if let Some(users) = users {
        query = query.bind::<BigInt, _>(users.id());
    }
    if let Some(permission) = &filter.permission {
        query = query.bind::<Text, _>(permission.clone());
    }
    Ok(query
        .load::<Row>(c)?
        .into_iter()
        .map(|r| HistoryRow {
            start: from_db(r.start),
            permission: r.permission,
            used: r.used,
        })
        .collect())
}
