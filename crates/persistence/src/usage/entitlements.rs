//! A check whose plan gives its permission a quota of its own, or has a
//! rate limit: every quota that applies and the subscriber's token bucket
//! are read, the check decided on all of them, and its cost taken from all
//! of them, in the batch's transaction (SQLite here; MariaDB's batches on
//! locked rows in `mysql.rs`). A denied check writes nothing.
//!
//! - `permission_counters`: one row per (user, permission, kind of window,
//!   window start), created from the user's roll-ups of that permission in
//!   the window when missing, and rebuilt from them wherever a plan's
//!   permission quotas change or a user moves to a plan.
//! - `rate_buckets`: the micro-units each subscriber's bucket held when it
//!   was last written; no row is a full bucket. Refill is computed at each
//!   check from the time since (rounded down), so the bucket never holds
//!   more than the exact refill would give, and a restart refills nothing.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use tollgate_domain::period::{UsagePeriod, Window};
use tollgate_domain::plan::{PermissionLimits, RateLimit};
use tollgate_domain::usage::{Consumed, Consumption, Verdict};

use super::counters::{self, Users};
use super::hours::HoursOf;
use super::statements::{BucketWrite, PermissionCounterAdd, PermissionCounterKey};
use crate::connection::{on_backend, DbConnection};
use crate::time::to_db;

#[derive(QueryableByName)]
struct Seed {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// The counter of `permission` in the window starting at `start`, if any.
fn read_permission_counter(
    c: &mut DbConnection,
    user_id: i64,
    permission: &str,
    period: UsagePeriod,
    start: i64,
) -> QueryResult<Option<i64>> {
    use crate::schema::permission_counters as pc;
    let row = pc::table
        .filter(pc::user_id.eq(user_id))
        .filter(pc::permission.eq(permission))
        .filter(pc::period.eq(period.as_str()))
        .filter(pc::period_start.eq(start))
        .select(pc::used);
    on_backend!(c, |conn| row.get_result::<i64>(conn).optional())
}

/// Creates the counter unless it exists (a concurrent writer made it).
fn insert_permission_counter(
    c: &mut DbConnection,
    user_id: i64,
    permission: &str,
    period: UsagePeriod,
    start: i64,
    used: i64,
) -> QueryResult<()> {
    let sql = match c {
        DbConnection::Sqlite(_) => {
            "INSERT OR IGNORE INTO permission_counters \
             (user_id, permission, period, period_start, used) VALUES (?, ?, ?, ?, ?)"
        }
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => {
            "INSERT INTO permission_counters (user_id, permission, period, period_start, used) \
             VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE used = used"
        }
    };
    diesel::sql_query(sql)
        .bind::<BigInt, _>(user_id)
        .bind::<Text, _>(permission)
        .bind::<Text, _>(period.as_str())
        .bind::<BigInt, _>(start)
        .bind::<BigInt, _>(used)
        .execute(c)
        .map(|_| ())
}

/// The units of `permission` in the roll-ups of `users` in `window`, per user.
fn permission_seeds(
    c: &mut DbConnection,
    users: Users,
    permission: &str,
    window: Window,
) -> QueryResult<Vec<Seed>> {
    let hours = HoursOf::in_window(users, window);
    let select = format!("user_id, CAST(SUM(cost) AS {}) AS total", c.bigint_cast());
    let sql = hours.sql(&select, "WHERE permission = ? GROUP BY user_id");
    hours
        .bind(diesel::sql_query(sql).into_boxed())
        .bind::<Text, _>(permission.to_owned())
        .load::<Seed>(c)
}

/// The user's units of `permission` in its quota's `window`: its counter,
/// created from the user's roll-ups of it in the window when missing (and
/// `create`).
fn permission_used(
    c: &mut DbConnection,
    k: &Consumption,
    period: UsagePeriod,
    window: Window,
    create: bool,
) -> QueryResult<i64> {
    let (user, permission, start) = (k.user_id.get(), k.permission.as_str(), to_db(window.start));
    if let Some(used) = read_permission_counter(c, user, permission, period, start)? {
        return Ok(used);
    }
    if !create {
        return Ok(0);
    }
    let seed = permission_seeds(c, Users::One(user), permission, window)?
        .first()
        .map_or(0, |s| s.total);
    insert_permission_counter(c, user, permission, period, start, seed)?;
    Ok(read_permission_counter(c, user, permission, period, start)?.unwrap_or(seed))
}

/// Creates the check's permission counter of `window` from the user's
/// roll-ups of it, unless it exists.
#[cfg(feature = "mysql")]
pub(super) fn create_permission_counter(
    c: &mut DbConnection,
    k: &Consumption,
    period: UsagePeriod,
    window: Window,
) -> QueryResult<()> {
    let (user, permission) = (k.user_id.get(), k.permission.as_str());
    let seed = permission_seeds(c, Users::One(user), permission, window)?
        .first()
        .map_or(0, |s| s.total);
    insert_permission_counter(c, user, permission, period, to_db(window.start), seed)
}

/// Rebuilds the permission counters of `users` for `limits`, in the
/// caller's transaction: each limited permission's counters are dropped
/// and its current window's created from the users' roll-ups in it, so that
/// usage already consumed in a window counts against a new or changed
/// quota of that window.
pub(crate) fn rebuild_permission_counters(
    c: &mut DbConnection,
    users: Users,
    limits: &PermissionLimits,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    for (name, limit) in limits.iter() {
        diesel::sql_query(format!(
            "DELETE FROM permission_counters WHERE {} AND permission = ?",
            users.sql()
        ))
        .bind::<BigInt, _>(users.id())
        .bind::<Text, _>(name.as_str())
        .execute(c)?;
        let window = limit.usage_period.window_at(now);
        let start = to_db(window.start);
        for seed in permission_seeds(c, users, name.as_str(), window)? {
            insert_permission_counter(
                c,
                seed.user_id,
                name.as_str(),
                limit.usage_period,
                start,
                seed.total,
            )?;
        }
        // Held reservations have no event yet: counted again from their rows.
        crate::reservation::recount_held_of_permission(
            c,
            (users.sql(), users.id()),
            name.as_str(),
            limit.usage_period,
            window,
        )?;
    }
    Ok(())
}

/// Adds `units` to a permission counter, creating it first when missing.
pub(crate) fn add_to_permission_counter(
    c: &mut DbConnection,
    (user, permission, period, start): (i64, &str, UsagePeriod, i64),
    units: i64,
) -> QueryResult<()> {
    insert_permission_counter(c, user, permission, period, start, 0)?;
    diesel::sql_query(
        "UPDATE permission_counters SET used = used + ? \
         WHERE user_id = ? AND permission = ? AND period = ? AND period_start = ?",
    )
    .bind::<BigInt, _>(units)
    .bind::<BigInt, _>(user)
    .bind::<Text, _>(permission)
    .bind::<Text, _>(period.as_str())
    .bind::<BigInt, _>(start)
    .execute(c)
    .map(|_| ())
}

/// A subscriber's bucket as a check finds it: the micro-units it holds at
/// the check's time (refilled since it was written; full when it has no
/// row), the time it counts from, and whether it has a row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    pub(super) tokens: i64,
    pub(super) since: i64,
    stored: bool,
}

impl Bucket {
    /// The bucket at `at` of a subscriber whose row holds `row` (micro-units,
    /// written at), on either backend.
    pub(super) fn at(rate: RateLimit, row: Option<(i64, i64)>, at: i64) -> Self {
        match row {
            None => Self {
                tokens: rate.capacity_micros(),
                since: at,
                stored: false,
            },
            // A check stamped before the last write (another instance's
            // clock, or a batch's order) refills nothing and does not move
            // time back.
            Some((tokens, updated_at)) => Self {
                tokens: rate.refilled(tokens, at - updated_at),
                since: at.max(updated_at),
                stored: true,
            },
        }
    }
}

/// The bucket of `user_id` at `at`.
fn bucket(c: &mut DbConnection, user_id: i64, rate: RateLimit, at: i64) -> QueryResult<Bucket> {
    use crate::schema::rate_buckets as rb;
    let row = rb::table.find(user_id).select((rb::tokens, rb::updated_at));
    let found = on_backend!(c, |conn| row.get_result::<(i64, i64)>(conn).optional())?;
    Ok(Bucket::at(rate, found, at))
}

/// Writes the bucket's state: what it holds now, and since when. An
/// `UPDATE` of a stored row (no foreign-key check, no delete and insert as
/// a `REPLACE` would), an `INSERT` of the first. The row was read in this
/// transaction, so anything but one row written is a bug, never a bucket
/// silently left full.
fn write_bucket(c: &mut DbConnection, user_id: i64, was: Bucket, tokens: i64) -> QueryResult<()> {
    let c = super::sqlite::sqlite(c)?;
    let since = was.since;
    let written = if was.stored {
        BucketWrite::<true> {
            user_id,
            tokens,
            since,
        }
        .execute(c)?
    } else {
        BucketWrite::<false> {
            user_id,
            tokens,
            since,
        }
        .execute(c)?
    };
    if written != 1 {
        return Err(diesel::result::Error::NotFound);
    }
    Ok(())
}

/// What [`take`] would answer for `k` now, writing nothing (a preview, on
/// either backend): the rate limit first, then the quotas, with the usage
/// as it stands (the plan-wide part `window_sum` when the caller read it).
pub(super) fn peek(
    c: &mut DbConnection,
    k: &Consumption,
    window_sum: Option<i64>,
) -> QueryResult<Consumed> {
    let user = k.user_id.get();
    let used: i64 = match window_sum {
        Some(sum) => sum,
        None => counters::of_window(c, user, to_db(k.window.start))?
            .iter()
            .map(|(_, u)| u)
            .sum(),
    };
    let permission_used = match k.permission_quota {
        Some(q) => Some(permission_used(c, k, q.period, q.window, false)?),
        None => None,
    };
    let tokens = match k.rate_limit {
        Some(rate) => Some(bucket(c, user, rate, to_db(k.at))?.tokens),
        None => None,
    };
    Ok(match k.verdict(used, permission_used, tokens) {
        Verdict::Fits => Consumed::Granted {
            used,
            permission_used,
        },
        Verdict::RateLimited(tokens) => Consumed::RateLimited {
            used,
            permission_used,
            tokens,
        },
        Verdict::Exhausted => Consumed::Exhausted {
            used,
            permission_used,
        },
    })
}

/// SQLite's writer, inside its `BEGIN IMMEDIATE` batch: decides `k` on the
/// rate limit and every quota that applies and takes its cost, with each quota's decision and write
/// in one conditional `UPDATE ... RETURNING` (the rate limit first, then
/// the permission's own quota, then the plan-wide one); when the plan-wide
/// one refuses, the permission's add is undone, so a denied check takes
/// nothing. Five statements for a granted check with both, two denied.
pub(super) fn take(c: &mut DbConnection, k: &Consumption) -> QueryResult<Consumed> {
    let user = k.user_id.get();
    let key = counters::key(k);
    let (_, start, permission) = key;
    let cost = k.cost.get();
    let at = to_db(k.at);
    let plan_used = |c: &mut DbConnection| -> QueryResult<i64> {
        Ok(counters::of_window(c, user, start)?
            .iter()
            .map(|(_, u)| u)
            .sum())
    };
    let bucket = match k.rate_limit {
        Some(rate) => Some(bucket(c, user, rate, at)?),
        None => None,
    };
    if let Some((rate, b)) = k.rate_limit.zip(bucket) {
        if !rate.holds(b.tokens, cost) {
            let permission_used = match k.permission_quota {
                Some(q) => Some(permission_used(c, k, q.period, q.window, false)?),
                None => None,
            };
            return Ok(Consumed::RateLimited {
                used: plan_used(c)?,
                permission_used,
                tokens: b.tokens,
            });
        }
    }
    let own = k.permission_quota.map(|q| {
        (
            q,
            (user, permission, q.period.as_str(), to_db(q.window.start)),
        )
    });
    let mut own_used = None;
    if let Some((q, own_key)) = own {
        let add = |c: &mut DbConnection| permission_counter_add(c, own_key, cost, q.limit);
        let mut added = add(c)?;
        if added.is_none()
            && read_permission_counter(c, user, permission, q.period, own_key.3)?.is_none()
        {
            // The window's first check of it: its counter from the roll-ups.
            permission_used(c, k, q.period, q.window, true)?;
            added = add(c)?;
        }
        match added {
            Some(n) => own_used = Some(n),
            None => {
                let current = read_permission_counter(c, user, permission, q.period, own_key.3)?;
                return Ok(Consumed::Exhausted {
                    used: plan_used(c)?,
                    permission_used: Some(current.unwrap_or(0)),
                });
            }
        }
    }
    let mut added = super::sqlite::counter_add(c, key, cost, k.limit)?;
    if added.is_none()
        && !counters::of_window(c, user, start)?
            .iter()
            .any(|(p, _)| p == permission)
    {
        counters::create(c, &[(user, k.window)], &[key])?;
        added = super::sqlite::counter_add(c, key, cost, k.limit)?;
    }
    let Some(used) = added else {
        if let Some((_, own_key)) = own {
            // The undo of the permission's add, which no limit stops.
            permission_counter_add(c, own_key, -cost, i64::MAX)?;
        }
        return Ok(Consumed::Exhausted {
            used: plan_used(c)?,
            permission_used: own_used.map(|u| u - cost),
        });
    };
    if let Some((rate, b)) = k.rate_limit.zip(bucket) {
        write_bucket(c, user, b, rate.take(b.tokens, cost))?;
    }
    Ok(Consumed::Granted {
        used,
        permission_used: own_used,
    })
}

/// Adds `cost` to the permission counter `key` while `used + cost <=
/// limit`; its new value when it added. On the connection itself: the
/// SQLite writer runs it per check.
fn permission_counter_add(
    c: &mut DbConnection,
    key: PermissionCounterKey<'_>,
    cost: i64,
    limit: i64,
) -> QueryResult<Option<i64>> {
    let add = PermissionCounterAdd { key, cost, limit };
    on_backend!(c, |conn| add.get_result::<i64>(conn).optional())
}

/// Whether `k` needs more than the plan-wide quota.
pub(super) fn needs_entitlements(k: &Consumption) -> bool {
    k.permission_quota.is_some() || k.rate_limit.is_some()
}

/// The user's units of `permission` in its quota's window, from its
/// counter (none yet: nothing consumed in the window since it applies).
pub(super) fn reported_permission_used(
    c: &mut DbConnection,
    user_id: i64,
    permission: &str,
    period: UsagePeriod,
    window: Window,
) -> QueryResult<i64> {
    Ok(read_permission_counter(c, user_id, permission, period, to_db(window.start))?.unwrap_or(0))
}
