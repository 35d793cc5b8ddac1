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

/// `UPDATE usage_counters SET used = used + cost` for one window's counter,
/// only while `used + cost <= limit` when `LIMITED`, and with
/// `RETURNING used` when `RETURNING` (SQLite; MariaDB has no `UPDATE ...
/// RETURNING`). Each combination is its own type, so each has one SQL text
/// under its cache key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CounterAdd<const LIMITED: bool, const RETURNING: bool> {
    pub(crate) subscription_id: i64,
    pub(crate) period_start: i64,
    pub(crate) cost: i64,
    /// Ignored unless `LIMITED`.
    pub(crate) limit: i64,
}

impl<const LIMITED: bool, const RETURNING: bool, DB> QueryFragment<DB>
    for CounterAdd<LIMITED, RETURNING>
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
        if LIMITED {
            out.push_sql(" AND used + ");
            out.push_bind_param::<BigInt, _>(&self.cost)?;
            out.push_sql(" <= ");
            out.push_bind_param::<BigInt, _>(&self.limit)?;
        }
        if RETURNING {
            out.push_sql(" RETURNING used");
        }
        Ok(())
    }
}

impl<const LIMITED: bool, const RETURNING: bool> QueryId for CounterAdd<LIMITED, RETURNING> {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// The `RETURNING` form yields the counter's new value.
impl<const LIMITED: bool> Query for CounterAdd<LIMITED, true> {
    type SqlType = BigInt;
}

impl<const LIMITED: bool, const RETURNING: bool, C> RunQueryDsl<C>
    for CounterAdd<LIMITED, RETURNING>
{
}
