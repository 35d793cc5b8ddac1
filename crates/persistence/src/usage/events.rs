//! Every read of usage events goes through [`EventsOf`], which hides how
//! each backend finds a user's events in a time range. MariaDB indexes
//! `usage_events (user_id, at)` as it writes them. SQLite keys them in bulk
//! instead (one random index leaf per event was most of what a commit
//! wrote): the batching writer copies `(user_id, at, id)` of the events into
//! `usage_event_keys` up to `usage_events_keyed.upto` (see
//! [`super::sqlite::key_events`]), and the events above `upto`, the tail, are
//! read by id.
//!
//! Every write of usage events goes through [`record`], which adds their
//! units to the hourly roll-ups (`usage_hours`) in the same transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Text};
use tollgate_domain::usage::{EventFilter, UsageEvent};
use tollgate_domain::{Page, PageRequest, UserId};

use super::hours::hour_of;
use super::statements::{EventValues, HourAdd};
use super::Users;
use crate::connection::DbConnection;
use crate::fetch_limit;
use crate::schema::usage_events;
use crate::time::{from_db, to_db};

/// A raw statement with its binds, on either backend.
pub(super) type Statement<'a> = BoxedSqlQuery<'a, <DbConnection as Connection>::Backend, SqlQuery>;

/// The usage events of some users in `[from, to)`: a table expression for
/// `FROM` and its binds.
#[derive(Debug, Clone, Copy)]
pub(super) struct EventsOf {
    users: Users,
    from: i64,
    to: i64,
    keyed_in_bulk: bool,
}

impl EventsOf {
    pub(super) fn new(
        c: &DbConnection,
        users: Users,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            users,
            from: from.map(to_db).unwrap_or(i64::MIN),
            to: to.map(to_db).unwrap_or(i64::MAX),
            keyed_in_bulk: matches!(c, DbConnection::Sqlite(_)),
        }
    }

    /// `SELECT <select> FROM <the events> AS e <rest>`; [`Self::bind`] binds
    /// the events' values, then the caller those of `rest`.
    pub(super) fn sql(&self, select: &str, rest: &str) -> String {
        const COLUMNS: &str = "id, user_id, permission, cost, at";
        let users = self.users.sql();
        let events = if self.keyed_in_bulk {
            // The keyed events by their keys, then the tail by id: every
            // keyed id is at most `upto` and every tail id above it.
            format!(
                "SELECT {COLUMNS} FROM usage_events \
                 WHERE id IN (SELECT id FROM usage_event_keys WHERE {users} AND at >= ? AND at < ?) \
                 AND id <= (SELECT upto FROM usage_events_keyed) \
                 UNION ALL SELECT {COLUMNS} FROM usage_events \
                 WHERE id > (SELECT upto FROM usage_events_keyed) AND {users} AND at >= ? AND at < ?"
            )
        } else {
            format!("SELECT {COLUMNS} FROM usage_events WHERE {users} AND at >= ? AND at < ?")
        };
        format!("SELECT {select} FROM ({events}) AS e {rest}")
    }

    /// Binds the values of [`Self::sql`]'s events.
    pub(super) fn bind<'a>(&self, query: Statement<'a>) -> Statement<'a> {
        let parts = if self.keyed_in_bulk { 2 } else { 1 };
        (0..parts).fold(query, |query, _| {
            query
                .bind::<BigInt, _>(self.users.id())
                .bind::<BigInt, _>(self.from)
                .bind::<BigInt, _>(self.to)
        })
    }
}

#[derive(QueryableByName)]
struct EventRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    permission: String,
    #[diesel(sql_type = BigInt)]
    cost: i64,
    #[diesel(sql_type = BigInt)]
    at: i64,
}

/// A page of the user's events that match `filter`, oldest first.
pub(super) fn list(
    c: &mut DbConnection,
    user_id: UserId,
    filter: &EventFilter,
    page: PageRequest,
) -> QueryResult<Page<UsageEvent>> {
    let events = EventsOf::new(c, Users::One(user_id.get()), filter.from, filter.to);
    let permission = if filter.permission.is_some() {
        " AND permission = ?"
    } else {
        ""
    };
    let sql = events.sql(
        "id, user_id, permission, cost, at",
        &format!("WHERE id > ?{permission} ORDER BY id LIMIT ?"),
    );
    let mut query = events
        .bind(diesel::sql_query(sql).into_boxed())
        .bind::<BigInt, _>(page.after());
    if let Some(permission) = &filter.permission {
        query = query.bind::<Text, _>(permission.clone());
    }
    let rows = query
        .bind::<BigInt, _>(fetch_limit(page))
        .load::<EventRow>(c)?;
    Ok(page.page_from(rows, |r| r.id).map(|r| UsageEvent {
        id: r.id,
        user_id: UserId::from_store(r.user_id),
        permission: r.permission,
        cost: r.cost,
        at: from_db(r.at),
    }))
}

/// Writes these usage events and adds their units to their hours' roll-ups,
/// inside the caller's transaction: the roll-ups are exact by construction.
pub(crate) fn record(c: &mut DbConnection, events: &[EventValues<'_>]) -> QueryResult<()> {
    match c {
        _ if events.is_empty() => Ok(()),
        DbConnection::Sqlite(conn) => record_sqlite(conn, events),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(conn) => record_mysql(conn, events),
    }
}

/// SQLite: a cached single-row statement per event and per roll-up (in
/// process, a statement costs no round trip).
fn record_sqlite(
    conn: &mut diesel::sqlite::SqliteConnection,
    events: &[EventValues<'_>],
) -> QueryResult<()> {
    for e in events {
        diesel::insert_into(usage_events::table)
            .values((
                usage_events::user_id.eq(e.user_id),
                usage_events::subscription_id.eq(e.subscription_id),
                usage_events::permission.eq(e.permission),
                usage_events::cost.eq(e.cost),
                usage_events::at.eq(e.at),
            ))
            .execute(conn)?;
        HourAdd {
            row: ((e.user_id, hour_of(e.at), e.permission), e.cost),
        }
        .execute(conn)?;
    }
    Ok(())
}

/// MariaDB: one `INSERT` of the events and one of their roll-ups, summed
/// per hour and in key order.
#[cfg(feature = "mysql")]
pub(crate) fn record_mysql(
    conn: &mut diesel::mysql::MysqlConnection,
    events: &[EventValues<'_>],
) -> QueryResult<()> {
    use super::statements::{AddToHours, HourRow, InsertEvents};
    if events.is_empty() {
        // Called directly by the settlements' batch.
        return Ok(());
    }
    InsertEvents { events }.execute(conn)?;
    let mut hours = std::collections::BTreeMap::new();
    for e in events {
        *hours
            .entry((e.user_id, hour_of(e.at), e.permission))
            .or_insert(0) += e.cost;
    }
    let rows: Vec<HourRow<'_>> = hours.into_iter().collect();
    AddToHours { rows: &rows }.execute(conn).map(|_| ())
}

/// Deletes the usage events older than `before` among the `step` oldest
/// (on SQLite, with their keys); how many went. An event is in id order of
/// its writing, dated at most a reservation's lifetime earlier, so a head
/// of old events is what a purge finds: it stops at the first newer one,
/// and an older one behind it goes once the horizon passes that. (On
/// SQLite, a keying pass that read an event before it went writes a key
/// that points at nothing: the list skips it.)
pub(crate) fn purge_step(c: &mut DbConnection, before: i64, step: i64) -> QueryResult<usize> {
    use crate::schema::usage_event_keys;
    let head = usage_events::table
        .order(usage_events::id.asc())
        .limit(step)
        .select((usage_events::id, usage_events::user_id, usage_events::at));
    let old: Vec<(i64, i64, i64)> = head
        .load::<(i64, i64, i64)>(c)?
        .into_iter()
        .take_while(|&(_, _, at)| at < before)
        .collect();
    if old.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = old.iter().map(|&(id, _, _)| id).collect();
    diesel::delete(usage_events::table.filter(usage_events::id.eq_any(&ids))).execute(c)?;
    if matches!(c, DbConnection::Sqlite(_)) {
        for &(id, user_id, at) in &old {
            diesel::delete(
                usage_event_keys::table
                    .filter(usage_event_keys::user_id.eq(user_id))
                    .filter(usage_event_keys::at.eq(at))
                    .filter(usage_event_keys::id.eq(id)),
            )
            .execute(c)?;
        }
    }
    Ok(old.len())
}
