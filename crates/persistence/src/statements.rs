//! The access check's hot statements, written as Diesel query fragments with
//! a static query id so that both connections prepare each of them once and
//! keep it in their statement cache. Diesel never caches its own `UPDATE`
//! builder nor `sql_query` (both mark themselves unsafe to cache), which
//! cost SQLite a parse per check and MariaDB a prepare round trip per check.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::BigInt;
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
