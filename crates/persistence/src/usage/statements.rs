//! The access check's hot statements, written as Diesel query fragments so
//! that connections prepare each of them once and keep it in their statement
//! cache: SQLite's counter `UPDATE` with a static query id, MariaDB's batch
//! statements by their SQL text (one per batch shape). Diesel never caches
//! its own `UPDATE` builder, `sql_query`, `eq_any` lists nor multi-row
//! `INSERT`s (all mark themselves unsafe to cache), which cost SQLite a parse
//! per check and MariaDB a prepare round trip per statement.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Text};
use diesel::{QueryResult, RunQueryDsl};

/// SQLite's check: `UPDATE usage_counters SET used = used + cost` on the
/// row of the check's (user, window start, permission) while the sum of the
/// user's rows of the window (the plan-wide usage) stays within the limit,
/// `RETURNING` that sum after the update. SQLite evaluates a subquery of
/// `RETURNING` after the row is changed (as it does an `AFTER` trigger), so
/// the check learns the window's new total from the same statement. The sum
/// reads a handful of rows next to the one updated (one B-tree, same leaf).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CounterAdd<'a> {
    user_id: i64,
    period_start: i64,
    permission: &'a str,
    cost: i64,
    limit: i64,
}

impl<'a> CounterAdd<'a> {
    /// No limit is `i64::MAX`: one statement for both kinds of plan (a sum
    /// past it could not be stored anyway).
    pub(crate) fn new(
        user_id: i64,
        period_start: i64,
        permission: &'a str,
        cost: i64,
        limit: Option<i64>,
    ) -> Self {
        Self {
            user_id,
            period_start,
            permission,
            cost,
            limit: limit.unwrap_or(i64::MAX),
        }
    }
}

impl CounterAdd<'_> {
    /// `(SELECT SUM(used) ...)` of the user's rows of the window.
    fn push_window_sum<'b, DB>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()>
    where
        DB: Backend,
        i64: ToSql<BigInt, DB>,
    {
        out.push_sql("(SELECT SUM(used) FROM usage_counters WHERE user_id = ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql(" AND period_start = ");
        out.push_bind_param::<BigInt, _>(&self.period_start)?;
        out.push_sql(")");
        Ok(())
    }
}

impl<DB> QueryFragment<DB> for CounterAdd<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE usage_counters SET used = used + ");
        out.push_bind_param::<BigInt, _>(&self.cost)?;
        out.push_sql(" WHERE user_id = ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql(" AND period_start = ");
        out.push_bind_param::<BigInt, _>(&self.period_start)?;
        out.push_sql(" AND permission = ");
        out.push_bind_param::<Text, _>(self.permission)?;
        out.push_sql(" AND ");
        self.push_window_sum(&mut out)?;
        out.push_sql(" + ");
        out.push_bind_param::<BigInt, _>(&self.cost)?;
        out.push_sql(" <= ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(" RETURNING ");
        self.push_window_sum(&mut out)
    }
}

/// The static query id of [`CounterAdd`] (a type without its lifetime).
pub(crate) struct CounterAddId;

impl QueryId for CounterAdd<'_> {
    type QueryId = CounterAddId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// Yields the window's new total.
impl Query for CounterAdd<'_> {
    type SqlType = BigInt;
}

impl<C> RunQueryDsl<C> for CounterAdd<'_> {}

/// Pushes `?, ?, ...`, one bind per value.
#[cfg(feature = "mysql")]
fn push_list<'b, DB>(out: &mut AstPass<'_, 'b, DB>, values: &'b [i64]) -> QueryResult<()>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    for (n, value) in values.iter().enumerate() {
        if n > 0 {
            out.push_sql(", ");
        }
        out.push_bind_param::<BigInt, _>(value)?;
    }
    Ok(())
}

/// The batch statements below vary in shape with the batch (how many
/// counters, how many events), which Diesel's own `eq_any`, multi-row
/// `INSERT` and `sql_query` take for unbounded and so never keep: MariaDB
/// would prepare each of them again for every batch, a round trip and a
/// parse each. These have no static
/// query id, so Diesel keeps them by their SQL text: one prepared statement
/// per shape, a few dozen per connection since batches are capped.
#[cfg(feature = "mysql")]
macro_rules! cached_by_sql {
    ($($name:ident),*) => {$(
        impl QueryId for $name<'_> {
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }
        impl<C> RunQueryDsl<C> for $name<'_> {}
    )*};
}
#[cfg(feature = "mysql")]
cached_by_sql!(
    CountersOf,
    AddToCounters,
    InsertEvents,
    SetStatuses,
    ClaimKeys,
    RecordKeys,
    AddToHours
);

/// `SELECT user_id, period_start, permission, used FROM usage_counters` of
/// these users whose window starts at one of `starts` (every permission's
/// row), `FOR UPDATE` when `lock` (MariaDB).
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct CountersOf<'a> {
    pub(crate) users: &'a [i64],
    pub(crate) starts: &'a [i64],
    pub(crate) lock: bool,
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for CountersOf<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "SELECT user_id, period_start, permission, used FROM usage_counters \
             WHERE user_id IN (",
        );
        push_list(&mut out, self.users)?;
        out.push_sql(") AND period_start IN (");
        push_list(&mut out, self.starts)?;
        out.push_sql(")");
        if self.lock {
            out.push_sql(" FOR UPDATE");
        }
        Ok(())
    }
}

#[cfg(feature = "mysql")]
impl Query for CountersOf<'_> {
    type SqlType = (BigInt, BigInt, Text, BigInt);
}

/// A counter row's identity: (user, window start, permission).
pub(crate) type CounterKey<'a> = (i64, i64, &'a str);

/// `UPDATE usage_counters SET used = used + CASE ... END`: adds to each
/// (user, window start, permission) row its sum.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone)]
pub(crate) struct AddToCounters<'a> {
    added: &'a [(CounterKey<'a>, i64)],
    users: Vec<i64>,
    starts: Vec<i64>,
    /// Subtracts the sums instead, never below zero (a settlement's units
    /// given back to a row that a rebuild from events may have lowered).
    give_back: bool,
}

#[cfg(feature = "mysql")]
impl<'a> AddToCounters<'a> {
    pub(crate) fn new(added: &'a [(CounterKey<'a>, i64)]) -> Self {
        Self {
            added,
            users: added.iter().map(|((user, _, _), _)| *user).collect(),
            starts: added.iter().map(|((_, start, _), _)| *start).collect(),
            give_back: false,
        }
    }

    /// `used = GREATEST(used - CASE ... END, 0)`: gives back each row's sum.
    pub(crate) fn giving_back(given: &'a [(CounterKey<'a>, i64)]) -> Self {
        Self {
            give_back: true,
            ..Self::new(given)
        }
    }
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for AddToCounters<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(if self.give_back {
            "UPDATE usage_counters SET used = GREATEST(used - CASE"
        } else {
            "UPDATE usage_counters SET used = used + CASE"
        });
        for ((user, start, permission), sum) in self.added {
            out.push_sql(" WHEN user_id = ");
            out.push_bind_param::<BigInt, _>(user)?;
            out.push_sql(" AND period_start = ");
            out.push_bind_param::<BigInt, _>(start)?;
            out.push_sql(" AND permission = ");
            out.push_bind_param::<Text, _>(*permission)?;
            out.push_sql(" THEN ");
            out.push_bind_param::<BigInt, _>(sum)?;
        }
        out.push_sql(if self.give_back {
            " ELSE 0 END, 0) WHERE user_id IN ("
        } else {
            " ELSE 0 END WHERE user_id IN ("
        });
        push_list(&mut out, &self.users)?;
        out.push_sql(") AND period_start IN (");
        push_list(&mut out, &self.starts)?;
        out.push_sql(") AND permission IN (");
        for (n, ((_, _, permission), _)) in self.added.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<Text, _>(*permission)?;
        }
        out.push_sql(")");
        Ok(())
    }
}

/// One usage event's values.
#[derive(Debug, Clone)]
pub(crate) struct EventValues<'a> {
    pub(crate) user_id: i64,
    pub(crate) subscription_id: i64,
    pub(crate) permission: &'a str,
    pub(crate) cost: i64,
    pub(crate) at: i64,
}

impl<'a> EventValues<'a> {
    /// The event of a granted check.
    pub(crate) fn of(k: &'a tollgate_domain::usage::Consumption) -> Self {
        Self {
            user_id: k.user_id.get(),
            subscription_id: k.subscription_id.get(),
            permission: k.permission.as_str(),
            cost: k.cost.get(),
            at: crate::time::to_db(k.at),
        }
    }
}

/// `INSERT INTO usage_events` of these events, in one statement.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct InsertEvents<'a> {
    pub(crate) events: &'a [EventValues<'a>],
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for InsertEvents<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO usage_events (user_id, subscription_id, permission, cost, at) VALUES ",
        );
        for (n, event) in self.events.iter().enumerate() {
            out.push_sql(if n > 0 { ", (" } else { "(" });
            out.push_bind_param::<BigInt, _>(&event.user_id)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&event.subscription_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(event.permission)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&event.cost)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&event.at)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

/// SQLite's check of a permission's own quota: `UPDATE permission_counters
/// SET used = used + cost` on its row while `used + cost <= limit`,
/// `RETURNING used`: the decision and the write in one statement, prepared
/// once (a static query id). With `limit` `i64::MAX` and a negative cost it
/// undoes an add.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PermissionCounterAdd<'a> {
    pub(crate) key: PermissionCounterKey<'a>,
    pub(crate) cost: i64,
    pub(crate) limit: i64,
}

impl<DB> QueryFragment<DB> for PermissionCounterAdd<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let (user, permission, period, start) = &self.key;
        out.push_sql("UPDATE permission_counters SET used = used + ");
        out.push_bind_param::<BigInt, _>(&self.cost)?;
        out.push_sql(" WHERE user_id = ");
        out.push_bind_param::<BigInt, _>(user)?;
        out.push_sql(" AND permission = ");
        out.push_bind_param::<Text, _>(*permission)?;
        out.push_sql(" AND period = ");
        out.push_bind_param::<Text, _>(*period)?;
        out.push_sql(" AND period_start = ");
        out.push_bind_param::<BigInt, _>(start)?;
        out.push_sql(" AND used + ");
        out.push_bind_param::<BigInt, _>(&self.cost)?;
        out.push_sql(" <= ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(" RETURNING used");
        Ok(())
    }
}

/// The static query id of [`PermissionCounterAdd`].
pub(crate) struct PermissionCounterAddId;

impl QueryId for PermissionCounterAdd<'_> {
    type QueryId = PermissionCounterAddId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// Yields the counter's new value.
impl Query for PermissionCounterAdd<'_> {
    type SqlType = BigInt;
}

impl<C> RunQueryDsl<C> for PermissionCounterAdd<'_> {}

/// SQLite's write of a subscriber's bucket: `UPDATE` its row when it has
/// one (`STORED`), else `INSERT` it. Two statements with static query ids,
/// each prepared once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BucketWrite<const STORED: bool> {
    pub(crate) user_id: i64,
    pub(crate) tokens: i64,
    pub(crate) since: i64,
}

impl<DB, const STORED: bool> QueryFragment<DB> for BucketWrite<STORED>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(if STORED {
            "UPDATE rate_buckets SET tokens = "
        } else {
            "INSERT INTO rate_buckets (tokens, updated_at, user_id) VALUES ("
        });
        out.push_bind_param::<BigInt, _>(&self.tokens)?;
        out.push_sql(if STORED { ", updated_at = " } else { ", " });
        out.push_bind_param::<BigInt, _>(&self.since)?;
        out.push_sql(if STORED { " WHERE user_id = " } else { ", " });
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        if !STORED {
            out.push_sql(")");
        }
        Ok(())
    }
}

/// The static query id of [`BucketWrite`].
pub(crate) struct BucketWriteId<const STORED: bool>;

impl<const STORED: bool> QueryId for BucketWrite<STORED> {
    type QueryId = BucketWriteId<STORED>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C, const STORED: bool> RunQueryDsl<C> for BucketWrite<STORED> {}

/// A permission counter's identity: (user, permission, kind of window,
/// window start).
pub(crate) type PermissionCounterKey<'a> = (i64, &'a str, &'a str, i64);

#[cfg(feature = "mysql")]
cached_by_sql!(
    PermissionCountersOf,
    BucketsOf,
    AddToPermissionCounters,
    UpsertBuckets
);

/// `SELECT user_id, permission, period, period_start, used FROM
/// permission_counters` of these users whose window starts at one of
/// `starts`, `FOR UPDATE`.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PermissionCountersOf<'a> {
    pub(crate) users: &'a [i64],
    pub(crate) starts: &'a [i64],
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for PermissionCountersOf<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "SELECT user_id, permission, period, period_start, used FROM permission_counters \
             WHERE user_id IN (",
        );
        push_list(&mut out, self.users)?;
        out.push_sql(") AND period_start IN (");
        push_list(&mut out, self.starts)?;
        out.push_sql(") FOR UPDATE");
        Ok(())
    }
}

#[cfg(feature = "mysql")]
impl Query for PermissionCountersOf<'_> {
    type SqlType = (BigInt, Text, Text, BigInt, BigInt);
}

/// `SELECT user_id, tokens, updated_at FROM rate_buckets` of these users,
/// `FOR UPDATE`.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct BucketsOf<'a> {
    pub(crate) users: &'a [i64],
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for BucketsOf<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("SELECT user_id, tokens, updated_at FROM rate_buckets WHERE user_id IN (");
        push_list(&mut out, self.users)?;
        out.push_sql(") FOR UPDATE");
        Ok(())
    }
}

#[cfg(feature = "mysql")]
impl Query for BucketsOf<'_> {
    type SqlType = (BigInt, BigInt, BigInt);
}

/// `UPDATE permission_counters SET used = used + CASE ... END`: adds to each
/// permission counter its sum, in one statement.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddToPermissionCounters<'a> {
    pub(crate) added: &'a [(PermissionCounterKey<'a>, i64)],
    /// Subtracts the sums instead, never below zero (as [`AddToCounters`]).
    pub(crate) give_back: bool,
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for AddToPermissionCounters<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(if self.give_back {
            "UPDATE permission_counters SET used = GREATEST(used - CASE"
        } else {
            "UPDATE permission_counters SET used = used + CASE"
        });
        for ((user, permission, period, start), sum) in self.added {
            out.push_sql(" WHEN user_id = ");
            out.push_bind_param::<BigInt, _>(user)?;
            out.push_sql(" AND permission = ");
            out.push_bind_param::<Text, _>(*permission)?;
            out.push_sql(" AND period = ");
            out.push_bind_param::<Text, _>(*period)?;
            out.push_sql(" AND period_start = ");
            out.push_bind_param::<BigInt, _>(start)?;
            out.push_sql(" THEN ");
            out.push_bind_param::<BigInt, _>(sum)?;
        }
        out.push_sql(if self.give_back {
            " ELSE 0 END, 0) WHERE user_id IN ("
        } else {
            " ELSE 0 END WHERE user_id IN ("
        });
        for (n, ((user, _, _, _), _)) in self.added.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<BigInt, _>(user)?;
        }
        out.push_sql(")");
        Ok(())
    }
}

/// `INSERT INTO rate_buckets ... ON DUPLICATE KEY UPDATE`: each bucket's
/// new state, in one statement.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpsertBuckets<'a> {
    /// (user, micro-units, since).
    pub(crate) rows: &'a [(i64, i64, i64)],
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for UpsertBuckets<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("INSERT INTO rate_buckets (user_id, tokens, updated_at) VALUES ");
        for (n, (user, tokens, at)) in self.rows.iter().enumerate() {
            out.push_sql(if n > 0 { ", (" } else { "(" });
            out.push_bind_param::<BigInt, _>(user)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(tokens)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(at)?;
            out.push_sql(")");
        }
        out.push_sql(
            " ON DUPLICATE KEY UPDATE tokens = VALUES(tokens), updated_at = VALUES(updated_at)",
        );
        Ok(())
    }
}

/// A settlement's statements (below), each with a static query id so that
/// both backends keep it prepared.
macro_rules! static_id {
    ($($statement:ident => $id:ident),* $(,)?) => {
        $(
            /// The static query id of the statement of the same name.
            pub(crate) struct $id;

            impl QueryId for $statement<'_> {
                type QueryId = $id;
                const HAS_STATIC_QUERY_ID: bool = true;
            }

            impl<C> RunQueryDsl<C> for $statement<'_> {}
        )*
    };
}

static_id!(GiveBack => GiveBackId, GiveBackOwn => GiveBackOwnId, SettledStatus => SettledStatusId);

/// Units a settlement gives back to `usage_counters` of (user, window
/// start, permission), never below zero (a row rebuilt from events since
/// may hold fewer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GiveBack<'a> {
    pub(crate) user_id: i64,
    pub(crate) start: i64,
    pub(crate) permission: &'a str,
    pub(crate) units: i64,
}

impl<DB> QueryFragment<DB> for GiveBack<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE usage_counters SET used = CASE WHEN used >= ");
        out.push_bind_param::<BigInt, _>(&self.units)?;
        out.push_sql(" THEN used - ");
        out.push_bind_param::<BigInt, _>(&self.units)?;
        out.push_sql(" ELSE 0 END WHERE user_id = ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql(" AND period_start = ");
        out.push_bind_param::<BigInt, _>(&self.start)?;
        out.push_sql(" AND permission = ");
        out.push_bind_param::<Text, _>(self.permission)?;
        Ok(())
    }
}

/// [`GiveBack`] for `permission_counters` of (user, permission, kind of
/// window, start).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GiveBackOwn<'a> {
    pub(crate) user_id: i64,
    pub(crate) permission: &'a str,
    pub(crate) period: &'a str,
    pub(crate) start: i64,
    pub(crate) units: i64,
}

impl<DB> QueryFragment<DB> for GiveBackOwn<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE permission_counters SET used = CASE WHEN used >= ");
        out.push_bind_param::<BigInt, _>(&self.units)?;
        out.push_sql(" THEN used - ");
        out.push_bind_param::<BigInt, _>(&self.units)?;
        out.push_sql(" ELSE 0 END WHERE user_id = ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql(" AND permission = ");
        out.push_bind_param::<Text, _>(self.permission)?;
        out.push_sql(" AND period = ");
        out.push_bind_param::<Text, _>(self.period)?;
        out.push_sql(" AND period_start = ");
        out.push_bind_param::<BigInt, _>(&self.start)?;
        Ok(())
    }
}

/// A settled reservation's status and kept units.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettledStatus<'a> {
    pub(crate) id: &'a str,
    pub(crate) status: &'a str,
    pub(crate) committed: Option<i64>,
}

impl<DB> QueryFragment<DB> for SettledStatus<'_>
where
    DB: Backend,
    str: ToSql<Text, DB>,
    Option<i64>: ToSql<diesel::sql_types::Nullable<BigInt>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE reservations SET status = ");
        out.push_bind_param::<Text, _>(self.status)?;
        out.push_sql(", committed = ");
        out.push_bind_param::<diesel::sql_types::Nullable<BigInt>, _>(&self.committed)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, _>(self.id)?;
        Ok(())
    }
}

/// MariaDB: `UPDATE reservations SET status = CASE id ... END, committed =
/// CASE id ... END` of these (id, status, committed units), in one statement.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SetStatuses<'a> {
    pub(crate) rows: &'a [(&'a str, &'static str, Option<i64>)],
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for SetStatuses<'_>
where
    DB: Backend,
    str: ToSql<Text, DB>,
    Option<i64>: ToSql<diesel::sql_types::Nullable<BigInt>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE reservations SET status = CASE id");
        for (id, status, _) in self.rows {
            out.push_sql(" WHEN ");
            out.push_bind_param::<Text, _>(*id)?;
            out.push_sql(" THEN ");
            out.push_bind_param::<Text, _>(*status)?;
        }
        out.push_sql(" END, committed = CASE id");
        for (id, _, committed) in self.rows {
            out.push_sql(" WHEN ");
            out.push_bind_param::<Text, _>(*id)?;
            out.push_sql(" THEN ");
            out.push_bind_param::<diesel::sql_types::Nullable<BigInt>, _>(committed)?;
        }
        out.push_sql(" END WHERE id IN (");
        for (n, (id, _, _)) in self.rows.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<Text, _>(*id)?;
        }
        out.push_sql(")");
        Ok(())
    }
}

/// An idempotency key's row: (user, key, permission, cost, created at).
#[cfg(feature = "mysql")]
pub(crate) type KeyRow<'a> = (i64, &'a str, &'a str, i64, i64);

/// Pushes `(?, ?, ?, ?, ?)` of a key's row.
#[cfg(feature = "mysql")]
fn push_key_row<'b, DB>(out: &mut AstPass<'_, 'b, DB>, row: &'b KeyRow<'_>) -> QueryResult<()>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    let (user, key, permission, cost, at) = row;
    out.push_sql("(");
    out.push_bind_param::<BigInt, _>(user)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, _>(*key)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, _>(*permission)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(cost)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(at)?;
    Ok(())
}

/// MariaDB: `INSERT IGNORE` of the keys' placeholders (no response yet), in
/// one statement.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimKeys<'a> {
    pub(crate) rows: &'a [KeyRow<'a>],
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for ClaimKeys<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "INSERT IGNORE INTO idempotency_keys (user_id, idem_key, permission, cost, created_at) \
             VALUES ",
        );
        for (n, row) in self.rows.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            push_key_row(&mut out, row)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

/// MariaDB: the granted keys' records over their placeholders, in one
/// statement.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordKeys<'a> {
    /// Each key's row and its response.
    pub(crate) rows: &'a [(KeyRow<'a>, &'a str)],
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for RecordKeys<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO idempotency_keys \
             (user_id, idem_key, permission, cost, created_at, response) VALUES ",
        );
        for (n, (row, response)) in self.rows.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            push_key_row(&mut out, row)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(*response)?;
            out.push_sql(")");
        }
        out.push_sql(" ON DUPLICATE KEY UPDATE response = VALUES(response)");
        Ok(())
    }
}

/// An hour's roll-up row: (user, hour start, permission) and its units.
pub(crate) type HourRow<'a> = ((i64, i64, &'a str), i64);

/// Pushes a roll-up row's `(?, ?, ?, ?)`.
fn push_hour_row<'b, DB>(out: &mut AstPass<'_, 'b, DB>, row: &'b HourRow<'_>) -> QueryResult<()>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    let ((user_id, hour_start, permission), used) = row;
    out.push_sql("(");
    out.push_bind_param::<BigInt, _>(user_id)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(hour_start)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, _>(*permission)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(used)?;
    out.push_sql(")");
    Ok(())
}

/// SQLite: adds one event's units to its hour's roll-up, creating the row
/// (`INSERT ... ON CONFLICT DO UPDATE`), prepared once (a static query id).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HourAdd<'a> {
    pub(crate) row: HourRow<'a>,
}

impl<DB> QueryFragment<DB> for HourAdd<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("INSERT INTO usage_hours (user_id, hour_start, permission, used) VALUES ");
        push_hour_row(&mut out, &self.row)?;
        out.push_sql(
            " ON CONFLICT (user_id, hour_start, permission) \
             DO UPDATE SET used = used + excluded.used",
        );
        Ok(())
    }
}

/// The static query id of [`HourAdd`].
pub(crate) struct HourAddId;

impl QueryId for HourAdd<'_> {
    type QueryId = HourAddId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C> RunQueryDsl<C> for HourAdd<'_> {}

/// MariaDB: adds each row's units to its hour's roll-up in one statement
/// (`INSERT ... ON DUPLICATE KEY UPDATE`); the rows in key order, so that
/// concurrent batches lock them in the same order.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddToHours<'a> {
    pub(crate) rows: &'a [HourRow<'a>],
}

#[cfg(feature = "mysql")]
impl<DB> QueryFragment<DB> for AddToHours<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("INSERT INTO usage_hours (user_id, hour_start, permission, used) VALUES ");
        for (n, row) in self.rows.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            push_hour_row(&mut out, row)?;
        }
        out.push_sql(" ON DUPLICATE KEY UPDATE used = used + VALUES(used)");
        Ok(())
    }
}
