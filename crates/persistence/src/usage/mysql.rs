//! MariaDB's side of the hot path. A statement costs a round trip and there
//! is no `UPDATE ... RETURNING`: every counter of the batch's users in its
//! windows is read and locked in ONE statement (`FOR UPDATE`), every check
//! decided in order on its window's sum, then ONE `UPDATE` adds what was
//! granted to each permission's row and ONE `INSERT` writes the events.
//! The locks hold until the commit, so no other writer (of this or another
//! instance) moves a counter between the read and the write: the decisions
//! are as exact as one conditional `UPDATE` per check, for four statements
//! a batch instead of one or two per check.

use std::collections::HashMap;

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Text};
use tollgate_domain::period::Window;
use tollgate_domain::usage::{Consumed, Consumption};

use super::statements::{AddToCounters, CounterKey, CountersOf, EventValues, InsertEvents};
use super::{counters, entitlements};
use crate::connection::DbConnection;
use crate::schema::users;
use crate::time::to_db;

/// The MariaDB connection inside `c`.
fn mysql(c: &mut DbConnection) -> QueryResult<&mut MysqlConnection> {
    match c {
        DbConnection::Mysql(c) => Ok(c),
        DbConnection::Sqlite(_) => Err(DieselError::QueryBuilderError(
            "a MariaDB statement on an SQLite connection".into(),
        )),
    }
}

/// A window's identity: (user, window start).
fn window_key(k: &Consumption) -> (i64, i64) {
    (k.user_id.get(), to_db(k.window.start))
}

/// The distinct users and the distinct window starts of the checks, sorted:
/// what [`lock_counters`] takes.
fn users_and_starts(checks: &[&Consumption]) -> (Vec<i64>, Vec<i64>) {
    let distinct = |mut values: Vec<i64>| {
        values.sort_unstable();
        values.dedup();
        values
    };
    (
        distinct(checks.iter().map(|k| k.user_id.get()).collect()),
        distinct(checks.iter().map(|k| to_db(k.window.start)).collect()),
    )
}

/// Inside a write transaction: the counters of these users whose window
/// starts at one of `starts`, as (user, start, permission, used), locked
/// until the transaction ends.
fn lock_counters(
    c: &mut DbConnection,
    users: &[i64],
    starts: &[i64],
) -> QueryResult<Vec<(i64, i64, String, i64)>> {
    CountersOf {
        users,
        starts,
        lock: true,
    }
    .load(mysql(c)?)
}

/// Inside a write transaction: the user's counters of the window starting
/// at `start`, by permission, locked until the transaction ends.
pub(super) fn locked_window(
    c: &mut DbConnection,
    user_id: i64,
    start: i64,
) -> QueryResult<Vec<(String, i64)>> {
    let rows = lock_counters(c, &[user_id], &[start])?;
    Ok(rows
        .into_iter()
        .map(|(_, _, permission, used)| (permission, used))
        .collect())
}

/// Inside a write transaction: makes concurrent creators of these users'
/// counters wait for this transaction.
fn lock_users(c: &mut DbConnection, user_ids: &[i64]) -> QueryResult<()> {
    users::table
        .filter(users::id.eq_any(user_ids))
        .select(users::id)
        .for_update()
        .load::<i64>(mysql(c)?)
        .map(|_| ())
}

/// The batch, in `order`, in one transaction of four statements (six when
/// a window's counters are created first).
pub(super) fn consume_batch(
    c: &mut DbConnection,
    items: &[Consumption],
    order: &[usize],
) -> QueryResult<Vec<Consumed>> {
    c.write_tx(|c| {
        let results = if items.iter().any(entitlements::needs_entitlements) {
            // Each check on its own locked rows, in the batch's order.
            let mut results = vec![
                Consumed::Exhausted {
                    used: 0,
                    permission_used: None
                };
                items.len()
            ];
            for &i in order {
                results[i] = entitlements::decide(c, &items[i], true)?;
            }
            results
        } else {
            decide_locked(c, items, order)?
        };
        let events: Vec<EventValues<'_>> = order
            .iter()
            .filter(|&&i| matches!(results[i], Consumed::Granted { .. }))
            .map(|&i| {
                let k = &items[i];
                EventValues {
                    user_id: k.user_id.get(),
                    subscription_id: k.subscription_id.get(),
                    permission: k.permission.as_str(),
                    cost: k.cost.get(),
                    at: to_db(k.at),
                }
            })
            .collect();
        if !events.is_empty() {
            InsertEvents { events: &events }.execute(mysql(c)?)?;
        }
        Ok(results)
    })
}

/// Locks the batch's counters (creating the missing ones), decides every
/// check on its window's sum, and adds what was granted.
fn decide_locked(
    c: &mut DbConnection,
    items: &[Consumption],
    order: &[usize],
) -> QueryResult<Vec<Consumed>> {
    type Windows = HashMap<(i64, i64), HashMap<String, i64>>;
    fn keep(rows: Vec<(i64, i64, String, i64)>, used: &mut Windows) {
        for (user, start, permission, value) in rows {
            used.entry((user, start))
                .or_default()
                .entry(permission)
                .or_insert(value);
        }
    }
    let checks: Vec<&Consumption> = order.iter().map(|&i| &items[i]).collect();
    let (users, starts) = users_and_starts(&checks);
    let mut used = Windows::new();
    keep(lock_counters(c, &users, &starts)?, &mut used);
    // Checks whose permission has no counter yet (all of a window's right
    // after a start or a period boundary): their windows' counters are
    // created together, the users locked first so that concurrent creators
    // wait, then locked with one statement.
    let mut missing: Vec<&Consumption> = checks
        .iter()
        .copied()
        .filter(|k| {
            !used
                .get(&window_key(k))
                .is_some_and(|rows| rows.contains_key(k.permission.as_str()))
        })
        .collect();
    if !missing.is_empty() {
        missing.dedup_by_key(|k| counters::key(k));
        let (users, starts) = users_and_starts(&missing);
        lock_users(c, &users)?;
        let mut windows: Vec<(i64, Window)> = missing
            .iter()
            .map(|k| (k.user_id.get(), k.window))
            .collect();
        windows.dedup_by_key(|(user, window)| (*user, window.start));
        let needed: Vec<CounterKey<'_>> = missing.iter().map(|k| counters::key(k)).collect();
        counters::create(c, &windows, &needed)?;
        keep(lock_counters(c, &users, &starts)?, &mut used);
    }
    let mut sums: HashMap<(i64, i64), i64> = used
        .iter()
        .map(|(window, rows)| (*window, rows.values().sum()))
        .collect();
    let mut results = vec![
        Consumed::Exhausted {
            used: 0,
            permission_used: None
        };
        items.len()
    ];
    let mut added: Vec<(CounterKey<'_>, i64)> = Vec::new();
    for &i in order {
        let k = &items[i];
        let key = counters::key(k);
        let current = sums.get_mut(&window_key(k)).ok_or(DieselError::NotFound)?;
        let limit = k.limit.unwrap_or(i64::MAX);
        results[i] = match current.checked_add(k.cost.get()).filter(|&n| n <= limit) {
            Some(n) => {
                *current = n;
                match added.last_mut() {
                    Some((row, sum)) if *row == key => *sum += k.cost.get(),
                    _ => added.push((key, k.cost.get())),
                }
                Consumed::Granted {
                    used: n,
                    permission_used: None,
                }
            }
            None => Consumed::Exhausted {
                used: *current,
                permission_used: None,
            },
        };
    }
    // Every counter was locked above, so each row matches.
    if !added.is_empty() && AddToCounters::new(&added).execute(mysql(c)?)? < added.len() {
        return Err(DieselError::NotFound);
    }
    Ok(results)
}

/// Creates the counter rows that do not exist, in one statement (one round
/// trip). Unlike `INSERT IGNORE`, this still fails on a foreign-key
/// violation.
pub(super) fn insert_counters_if_absent(
    c: &mut DbConnection,
    rows: &[(CounterKey<'_>, i64)],
) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let values = vec!["(?, ?, ?, ?)"; rows.len()].join(", ");
    let query = diesel::sql_query(format!(
        "INSERT INTO usage_counters (user_id, period_start, permission, used) VALUES {values} \
         ON DUPLICATE KEY UPDATE used = used"
    ))
    .into_boxed();
    let query = rows.iter().fold(
        query,
        |query, &((user_id, period_start, permission), used)| {
            query
                .bind::<BigInt, _>(user_id)
                .bind::<BigInt, _>(period_start)
                .bind::<Text, _>(permission)
                .bind::<BigInt, _>(used)
        },
    );
    query.execute(mysql(c)?).map(|_| ())
}
