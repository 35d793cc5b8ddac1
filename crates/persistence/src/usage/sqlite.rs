//! SQLite's side of the hot path. SQLite runs in process, so a statement
//! costs no round trip: each check keeps its own conditional `UPDATE ...
//! RETURNING`, and many small statements, each prepared once and cached,
//! beat one large statement of a new shape per batch. The per-check
//! statements run on the `SqliteConnection` itself, without the
//! multi-backend's translation of each statement and its binds.

use diesel::prelude::*;
#[cfg(feature = "mysql")]
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::SqliteConnection;
use tollgate_domain::usage::{Consumed, Consumption};

use super::statements::{CounterAdd, CounterKey};
use super::{counters, entitlements};
use crate::connection::DbConnection;
use crate::schema::{usage_event_keys, usage_events, usage_events_keyed};

/// The SQLite connection inside `c`.
pub(super) fn sqlite(c: &mut DbConnection) -> QueryResult<&mut SqliteConnection> {
    match c {
        DbConnection::Sqlite(c) => Ok(c),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => Err(DieselError::QueryBuilderError(
            "an SQLite statement on a MariaDB connection".into(),
        )),
    }
}

/// Adds `cost` to the check's counter while the window's sum plus `cost`
/// is within `limit`; the window's new sum when it added.
pub(super) fn counter_add(
    c: &mut DbConnection,
    key: CounterKey<'_>,
    cost: i64,
    limit: Option<i64>,
) -> QueryResult<Option<i64>> {
    let (user, start, permission) = key;
    CounterAdd::new(user, start, permission, cost, limit)
        .get_result::<i64>(sqlite(c)?)
        .optional()
}

/// The checks of `order`, in that order, inside the caller's `BEGIN
/// IMMEDIATE` transaction: each check's `UPDATE ... RETURNING` answers its
/// own result at once; a check whose window has no counter of its
/// permission yet creates the window's counters first. Each check's
/// result goes to its place in `results`.
pub(super) fn consume_batch(
    c: &mut DbConnection,
    items: &[Consumption],
    order: &[usize],
    results: &mut [Consumed],
) -> QueryResult<()> {
    for &i in order {
        let k = &items[i];
        if entitlements::needs_entitlements(k) {
            results[i] = entitlements::take(c, k)?;
            continue;
        }
        let key = counters::key(k);
        let (user, start, permission) = key;
        let (cost, limit) = (k.cost.get(), k.limit);
        let mut added = counter_add(c, key, cost, limit)?;
        if added.is_none() {
            let rows = counters::of_window(c, user, start)?;
            if rows.iter().any(|(p, _)| p == permission) {
                results[i] = Consumed::Exhausted {
                    used: rows.iter().map(|(_, u)| u).sum(),
                    permission_used: None,
                };
                continue;
            }
            counters::create(c, &[(user, k.window)], &[key])?;
            added = counter_add(c, key, cost, limit)?;
        }
        results[i] = match added {
            Some(used) => Consumed::Granted {
                used,
                permission_used: None,
            },
            None => Consumed::Exhausted {
                used: counters::of_window(c, user, start)?
                    .iter()
                    .map(|(_, u)| u)
                    .sum(),
                permission_used: None,
            },
        };
    }
    Ok(())
}

/// Creates the counter rows that do not exist, a statement per row (in
/// process, a statement costs no round trip). Diesel prepares a
/// `sql_query` anew each time; this runs only at a window's first check.
pub(super) fn insert_counters_if_absent(
    c: &mut DbConnection,
    rows: &[(CounterKey<'_>, i64)],
) -> QueryResult<()> {
    let conn = sqlite(c)?;
    for &((user_id, period_start, permission), used) in rows {
        diesel::sql_query(
            "INSERT OR IGNORE INTO usage_counters (user_id, period_start, permission, used) \
             VALUES (?, ?, ?, ?)",
        )
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(period_start)
        .bind::<Text, _>(permission)
        .bind::<BigInt, _>(used)
        .execute(conn)?;
    }
    Ok(())
}

/// A usage event's key, in the order `usage_event_keys` keeps: (user, at, id).
pub(crate) type EventKey = (i64, i64, i64);

/// The events not keyed yet, as read at `usage_events_keyed`'s `upto` and
/// `generation`.
pub(crate) struct EventTail {
    pub(crate) upto: i64,
    pub(crate) generation: i64,
    pub(crate) keys: Vec<EventKey>,
}

/// The events not keyed yet, oldest first, at most `limit`: what the
/// batching writer keys next.
pub(crate) fn event_tail(c: &mut DbConnection, limit: i64) -> QueryResult<EventTail> {
    let c = sqlite(c)?;
    let (upto, generation) = usage_events_keyed::table
        .find(1)
        .select((usage_events_keyed::upto, usage_events_keyed::generation))
        .first::<(i64, i64)>(c)?;
    let keys = usage_events::table
        .filter(usage_events::id.gt(upto))
        .order(usage_events::id.asc())
        .limit(limit)
        .select((usage_events::user_id, usage_events::at, usage_events::id))
        .load::<EventKey>(c)?;
    Ok(EventTail {
        upto,
        generation,
        keys,
    })
}

/// Writes `keys` (sorted, so that each leaf of the keys takes many) in one
/// transaction; with `done`, moves `upto` past the tail they came from,
/// unless an event was deleted or another writer moved it since the tail
/// was read. A key already there is left as it is, so a pass that stopped
/// halfway (a crash, another instance keying the same tail) does no harm.
pub(crate) fn key_events(
    c: &mut DbConnection,
    keys: &[EventKey],
    done: Option<&EventTail>,
) -> QueryResult<()> {
    sqlite(c)?.immediate_transaction(|c| {
        for &(user_id, at, id) in keys {
            diesel::insert_or_ignore_into(usage_event_keys::table)
                .values((
                    usage_event_keys::user_id.eq(user_id),
                    usage_event_keys::at.eq(at),
                    usage_event_keys::id.eq(id),
                ))
                .execute(c)?;
        }
        if let Some(tail) = done {
            if let Some(newest) = tail.keys.iter().map(|k| k.2).max() {
                diesel::update(
                    usage_events_keyed::table
                        .find(1)
                        .filter(usage_events_keyed::upto.eq(tail.upto))
                        .filter(usage_events_keyed::generation.eq(tail.generation)),
                )
                .set(usage_events_keyed::upto.eq(newest))
                .execute(c)?;
            }
        }
        Ok(())
    })
}
