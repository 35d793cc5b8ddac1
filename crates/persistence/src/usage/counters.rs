//! Usage counters: one row per (user, window start, permission) holding the
//! units consumed; a user's plan-wide usage is the sum of their window's
//! rows. Created from the hourly roll-ups (so usage carries over whatever
//! happened to the counters, and never reads raw events) and rebuilt
//! wherever a user's period kind may change.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Text};
use tollgate_domain::period::{UsagePeriod, Window};
use tollgate_domain::usage::Consumption;

use super::hours::HoursOf;
use super::statements::CounterKey;
use crate::connection::{on_backend, DbConnection};
use crate::schema::usage_counters;
use crate::time::to_db;

/// Whose events or counters a statement reads: one user, or the active
/// subscribers of a plan. Either way one bound id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Users {
    One(i64),
    OfPlan(i64),
}

impl Users {
    /// The condition on `user_id`, with one `?`.
    pub(super) fn sql(self) -> &'static str {
        match self {
            Self::One(_) => "user_id = ?",
            Self::OfPlan(_) => {
                "user_id IN (SELECT active_user_id FROM subscriptions WHERE plan_id = ?)"
            }
        }
    }

    pub(super) fn id(self) -> i64 {
        match self {
            Self::One(id) | Self::OfPlan(id) => id,
        }
    }
}

/// A check's counter: (user, window start, permission).
pub(super) fn key(k: &Consumption) -> CounterKey<'_> {
    (
        k.user_id.get(),
        to_db(k.window.start),
        k.permission.as_str(),
    )
}

/// `SUM(cost)` as a BIGINT named `total`.
fn total_select(c: &DbConnection) -> String {
    format!("CAST(SUM(cost) AS {}) AS total", c.bigint_cast())
}

#[derive(QueryableByName)]
struct Seed {
    #[diesel(sql_type = BigInt)]
    part: i64,
    #[diesel(sql_type = Text)]
    permission: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// The units of each (user, window)'s roll-ups per permission, in one
/// statement (`UNION ALL`, one part per window): what its counters start from.
fn window_seeds(
    c: &mut DbConnection,
    windows: &[(i64, Window)],
) -> QueryResult<Vec<Vec<(String, i64)>>> {
    let total = total_select(c);
    let parts: Vec<HoursOf> = windows
        .iter()
        .map(|&(user, window)| HoursOf::in_window(Users::One(user), window))
        .collect();
    let sql = parts
        .iter()
        .enumerate()
        .map(|(part, hours)| {
            hours.sql(
                &format!("{part} AS part, permission, {total}"),
                "GROUP BY permission",
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let query = parts
        .iter()
        .fold(diesel::sql_query(sql).into_boxed(), |query, hours| {
            hours.bind(query)
        });
    let mut seeds = vec![Vec::new(); windows.len()];
    for row in query.load::<Seed>(c)? {
        let slot = usize::try_from(row.part)
            .ok()
            .and_then(|part| seeds.get_mut(part));
        slot.ok_or(DieselError::NotFound)?
            .push((row.permission, row.total));
    }
    Ok(seeds)
}

/// Creates the counters of these (user, window)s that do not exist, each
/// from the user's roll-ups of its permission in the window, and a zero row
/// for each of `needed` (the checks' permissions) without events. All the
/// rows of a window are created together: the plan-wide sum is never taken
/// over part of them.
pub(super) fn create(
    c: &mut DbConnection,
    windows: &[(i64, Window)],
    needed: &[CounterKey<'_>],
) -> QueryResult<()> {
    let seeds = window_seeds(c, windows)?;
    let mut rows: Vec<(CounterKey<'_>, i64)> = Vec::new();
    for (&(user, window), seeds) in windows.iter().zip(&seeds) {
        let start = to_db(window.start);
        rows.extend(
            seeds
                .iter()
                .map(|(permission, total)| ((user, start, permission.as_str()), *total)),
        );
    }
    for &key in needed {
        if !rows.iter().any(|(k, _)| *k == key) {
            rows.push((key, 0));
        }
    }
    insert_if_absent(c, &rows)
}

/// Creates the counter rows ((user, window start, permission), used) that
/// do not exist; never fails on a duplicate (a concurrent check created it).
fn insert_if_absent(c: &mut DbConnection, rows: &[(CounterKey<'_>, i64)]) -> QueryResult<()> {
    match c {
        DbConnection::Sqlite(_) => super::sqlite::insert_counters_if_absent(c, rows),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => super::mysql::insert_counters_if_absent(c, rows),
    }
}

/// Rebuilds the counters of `users` for `period`, in the caller's
/// transaction: drops all of them (a day and a month window can share a
/// start, and a window not touched under another kind is stale) and creates
/// the current window's from the users' roll-ups in it. Run wherever a user's
/// period kind may change (a new subscription, a move to a plan of another
/// period, a plan's new period), so that the counters always hold the
/// current window and reports never need events.
pub(crate) fn rebuild_counters(
    c: &mut DbConnection,
    users: Users,
    period: UsagePeriod,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    #[derive(QueryableByName)]
    struct UserSeed {
        #[diesel(sql_type = BigInt)]
        user_id: i64,
        #[diesel(sql_type = Text)]
        permission: String,
        #[diesel(sql_type = BigInt)]
        total: i64,
    }

    diesel::sql_query(format!("DELETE FROM usage_counters WHERE {}", users.sql()))
        .bind::<BigInt, _>(users.id())
        .execute(c)?;
    let window = period.window_at(now);
    let hours = HoursOf::in_window(users, window);
    let select = format!("user_id, permission, {}", total_select(c));
    let sql = hours.sql(&select, "GROUP BY user_id, permission");
    let seeds = hours
        .bind(diesel::sql_query(sql).into_boxed())
        .load::<UserSeed>(c)?;
    let start = to_db(window.start);
    let rows: Vec<(CounterKey<'_>, i64)> = seeds
        .iter()
        .map(|s| ((s.user_id, start, s.permission.as_str()), s.total))
        .collect();
    // Bounded statements (MariaDB inserts them in one, four values a row).
    for chunk in rows.chunks(1024) {
        insert_if_absent(c, chunk)?;
    }
    // Held reservations have no event yet: counted again from their rows.
    crate::reservation::recount_held(c, (users.sql(), users.id()), window)
}

/// Adds `units` to a counter, creating it first when missing.
pub(crate) fn add_to_counter(
    c: &mut DbConnection,
    key: CounterKey<'_>,
    units: i64,
) -> QueryResult<()> {
    insert_if_absent(c, &[(key, 0)])?;
    let (user, start, permission) = key;
    diesel::sql_query(
        "UPDATE usage_counters SET used = used + ? \
         WHERE user_id = ? AND period_start = ? AND permission = ?",
    )
    .bind::<BigInt, _>(units)
    .bind::<BigInt, _>(user)
    .bind::<BigInt, _>(start)
    .bind::<Text, _>(permission)
    .execute(c)
    .map(|_| ())
}

/// The user's counters of the window starting at `start`, by permission.
pub(super) fn of_window(
    c: &mut DbConnection,
    user_id: i64,
    start: i64,
) -> QueryResult<Vec<(String, i64)>> {
    let rows = usage_counters::table
        .filter(usage_counters::user_id.eq(user_id))
        .filter(usage_counters::period_start.eq(start))
        .order(usage_counters::permission.asc())
        .select((usage_counters::permission, usage_counters::used));
    // On the connection itself: the SQLite writer runs this per check.
    on_backend!(c, |conn| rows.load(conn))
}
