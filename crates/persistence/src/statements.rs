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

/// `UPDATE usage_counters SET used = used + cost` for one window's counter
/// while `used + cost <= limit`, with `RETURNING used` when `RETURNING`
/// (SQLite; MariaDB has no `UPDATE ... RETURNING`). Each form is its own
/// type, so each has one SQL text under its cache key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CounterAdd<const RETURNING: bool> {
    subscription_id: i64,
    period_start: i64,
    cost: i64,
    limit: i64,
}

impl<const RETURNING: bool> CounterAdd<RETURNING> {
    /// No limit is `i64::MAX`: one statement for both kinds of plan (a sum
    /// past it could not be stored anyway).
    pub(crate) fn new(
        subscription_id: i64,
        period_start: i64,
        cost: i64,
        limit: Option<i64>,
    ) -> Self {
        Self {
            subscription_id,
            period_start,
            cost,
            limit: limit.unwrap_or(i64::MAX),
        }
    }
}

impl<const RETURNING: bool, DB> QueryFragment<DB> for CounterAdd<RETURNING>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE usage_counters SET used = used + ");
        out.push_bind_param::<BigInt, _>(&self.cost)?;
        out.push_sql(" WHERE subscription_id = ");
        out.push_bind_param::<BigInt, _>(&self.subscription_id)?;
        out.push_sql(" AND period_start = ");
        out.push_bind_param::<BigInt, _>(&self.period_start)?;
        out.push_sql(" AND used + ");
        out.push_bind_param::<BigInt, _>(&self.cost)?;
        out.push_sql(" <= ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        if RETURNING {
            out.push_sql(" RETURNING used");
        }
        Ok(())
    }
}

impl<const RETURNING: bool> QueryId for CounterAdd<RETURNING> {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// The `RETURNING` form yields the counter's new value.
impl Query for CounterAdd<true> {
    type SqlType = BigInt;
}

impl<const RETURNING: bool, C> RunQueryDsl<C> for CounterAdd<RETURNING> {}

/// Pushes `?, ?, ...`, one bind per value.
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
/// prepared each of them again for every batch (`Com_stmt_prepare` equal to
/// `Com_stmt_execute`), a round trip and a parse each. These have no static
/// query id, so Diesel keeps them by their SQL text: one prepared statement
/// per shape, a few dozen per connection since batches are capped.
macro_rules! cached_by_sql {
    ($($name:ident),*) => {$(
        impl QueryId for $name<'_> {
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }
        impl<C> RunQueryDsl<C> for $name<'_> {}
    )*};
}
cached_by_sql!(CountersOf, AddToCounters, InsertEvents);

/// `SELECT subscription_id, period_start, used FROM usage_counters` of these
/// subscriptions whose window starts at one of `starts`, `FOR UPDATE` when
/// `lock` (MariaDB).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CountersOf<'a> {
    pub(crate) subscriptions: &'a [i64],
    pub(crate) starts: &'a [i64],
    pub(crate) lock: bool,
}

impl<DB> QueryFragment<DB> for CountersOf<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "SELECT subscription_id, period_start, used FROM usage_counters \
             WHERE subscription_id IN (",
        );
        push_list(&mut out, self.subscriptions)?;
        out.push_sql(") AND period_start IN (");
        push_list(&mut out, self.starts)?;
        out.push_sql(")");
        if self.lock {
            out.push_sql(" FOR UPDATE");
        }
        Ok(())
    }
}

impl Query for CountersOf<'_> {
    type SqlType = (BigInt, BigInt, BigInt);
}

/// `UPDATE usage_counters SET used = used + CASE ... END`: adds to each
/// (subscription, window start) counter its sum.
#[derive(Debug, Clone)]
pub(crate) struct AddToCounters<'a> {
    added: &'a [((i64, i64), i64)],
    subscriptions: Vec<i64>,
    starts: Vec<i64>,
}

impl<'a> AddToCounters<'a> {
    pub(crate) fn new(added: &'a [((i64, i64), i64)]) -> Self {
        Self {
            added,
            subscriptions: added.iter().map(|((sub, _), _)| *sub).collect(),
            starts: added.iter().map(|((_, start), _)| *start).collect(),
        }
    }
}

impl<DB> QueryFragment<DB> for AddToCounters<'_>
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE usage_counters SET used = used + CASE");
        for ((sub, start), sum) in self.added {
            out.push_sql(" WHEN subscription_id = ");
            out.push_bind_param::<BigInt, _>(sub)?;
            out.push_sql(" AND period_start = ");
            out.push_bind_param::<BigInt, _>(start)?;
            out.push_sql(" THEN ");
            out.push_bind_param::<BigInt, _>(sum)?;
        }
        out.push_sql(" ELSE 0 END WHERE subscription_id IN (");
        push_list(&mut out, &self.subscriptions)?;
        out.push_sql(") AND period_start IN (");
        push_list(&mut out, &self.starts)?;
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

/// `INSERT INTO usage_events` of these events, in one statement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InsertEvents<'a> {
    pub(crate) events: &'a [EventValues<'a>],
}

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
