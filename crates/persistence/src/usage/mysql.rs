//! MariaDB's side of the hot path. A statement costs a round trip and there
//! is no `UPDATE ... RETURNING`: every counter of the batch's users in its
//! windows is read and locked in ONE statement (`FOR UPDATE`), every check
//! decided in order on its window's sum, then ONE `UPDATE` adds what was
//! granted to each permission's row; the caller then writes the events
//! and their roll-ups with one `INSERT` each (`events::record`).
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
use tollgate_domain::usage::{Consumed, Consumption, Verdict};

use super::statements::{
    AddToCounters, AddToPermissionCounters, BucketsOf, CounterKey, CountersOf,
    PermissionCounterKey, PermissionCountersOf, UpsertBuckets,
};
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

/// The checks of `order`, in that order, inside the caller's transaction:
/// the counters locked and read in one statement and the grants added in
/// one more (more when a window's counters are created first); the
/// caller writes the events. Each check's result goes to its place in
/// `results`.
pub(super) fn consume_batch(
    c: &mut DbConnection,
    items: &[Consumption],
    order: &[usize],
    results: &mut [Consumed],
) -> QueryResult<()> {
    decide_locked(c, items, order, results)
}

/// Locks the batch's counters (creating the missing ones), decides every
/// check on its window's sum, and adds what was granted.
fn decide_locked(
    c: &mut DbConnection,
    items: &[Consumption],
    order: &[usize],
    results: &mut [Consumed],
) -> QueryResult<()> {
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
    let mut own = lock_entitlements(c, &checks)?;
    let mut sums: HashMap<(i64, i64), i64> = used
        .iter()
        .map(|(window, rows)| (*window, rows.values().sum()))
        .collect();
    let mut added: Vec<(CounterKey<'_>, i64)> = Vec::new();
    let mut own_added: Vec<(PermissionCounterKey<'_>, i64)> = Vec::new();
    let mut buckets_written: Vec<i64> = Vec::new();
    for &i in order {
        let k = &items[i];
        let key = counters::key(k);
        let cost = k.cost.get();
        let at = to_db(k.at);
        let current = *sums.get(&window_key(k)).ok_or(DieselError::NotFound)?;
        let own_key = k.permission_quota.map(|q| {
            (
                k.user_id.get(),
                k.permission.as_str(),
                q.period.as_str(),
                to_db(q.window.start),
            )
        });
        let own_used = own_key.map(|key| own.counters.get(&owned(key)).copied().unwrap_or(0));
        let bucket = k.rate_limit.map(|rate| {
            let b = entitlements::Bucket::at(rate, own.buckets.get(&k.user_id.get()).copied(), at);
            (b.tokens, b.since)
        });
        match k.verdict(current, own_used, bucket.map(|(tokens, _)| tokens)) {
            Verdict::Fits => {}
            Verdict::RateLimited(tokens) => {
                results[i] = Consumed::RateLimited {
                    used: current,
                    permission_used: own_used,
                    tokens,
                };
                continue;
            }
            Verdict::Exhausted => {
                results[i] = Consumed::Exhausted {
                    used: current,
                    permission_used: own_used,
                };
                continue;
            }
        }
        if let Some(sum) = sums.get_mut(&window_key(k)) {
            *sum += cost;
        }
        match added.last_mut() {
            Some((row, sum)) if *row == key => *sum += cost,
            _ => added.push((key, cost)),
        }
        if let Some(key) = own_key {
            *own.counters.entry(owned(key)).or_insert(0) += cost;
            match own_added.iter_mut().find(|(row, _)| *row == key) {
                Some((_, sum)) => *sum += cost,
                None => own_added.push((key, cost)),
            }
        }
        if let Some((rate, (tokens, since))) = k.rate_limit.zip(bucket) {
            own.buckets
                .insert(k.user_id.get(), (rate.take(tokens, cost), since));
            if !buckets_written.contains(&k.user_id.get()) {
                buckets_written.push(k.user_id.get());
            }
        }
        results[i] = Consumed::Granted {
            used: current + cost,
            permission_used: own_used.map(|u| u + cost),
        };
    }
    // Every counter was locked above, so each row matches.
    if !added.is_empty() && AddToCounters::new(&added).execute(mysql(c)?)? < added.len() {
        return Err(DieselError::NotFound);
    }
    if !own_added.is_empty()
        && (AddToPermissionCounters {
            added: &own_added,
            give_back: false,
        })
        .execute(mysql(c)?)?
            < own_added.len()
    {
        return Err(DieselError::NotFound);
    }
    if !buckets_written.is_empty() {
        let rows: Vec<(i64, i64, i64)> = buckets_written
            .iter()
            .filter_map(|user| own.buckets.get(user).map(|(t, since)| (*user, *t, *since)))
            .collect();
        UpsertBuckets { rows: &rows }.execute(mysql(c)?)?;
    }
    Ok(())
}

/// A permission counter's key, owned.
type OwnedKey = (i64, String, String, i64);

fn owned((user, permission, period, start): PermissionCounterKey<'_>) -> OwnedKey {
    (user, permission.to_owned(), period.to_owned(), start)
}

/// The batch's permission counters and buckets, locked.
struct Entitlements {
    counters: HashMap<OwnedKey, i64>,
    /// (micro-units, since) by user; no entry: a full bucket.
    buckets: HashMap<i64, (i64, i64)>,
}

/// Locks the permission counters of the checks' quotas (creating the
/// missing ones from the users' events, the users locked first so that
/// concurrent creators wait) and the buckets of their rate limits (a
/// missing bucket is full: its user is locked, so that only one writer
/// creates it). Two or three statements for a whole batch.
fn lock_entitlements(c: &mut DbConnection, checks: &[&Consumption]) -> QueryResult<Entitlements> {
    let mut counters = HashMap::new();
    let mut buckets = HashMap::new();
    let quotas: Vec<(&Consumption, PermissionCounterKey<'_>)> = checks
        .iter()
        .filter_map(|k| {
            k.permission_quota.map(|q| {
                let key = (
                    k.user_id.get(),
                    k.permission.as_str(),
                    q.period.as_str(),
                    to_db(q.window.start),
                );
                (*k, key)
            })
        })
        .collect();
    let rated: Vec<i64> = distinct(
        checks
            .iter()
            .filter(|k| k.rate_limit.is_some())
            .map(|k| k.user_id.get())
            .collect(),
    );
    if quotas.is_empty() && rated.is_empty() {
        return Ok(Entitlements { counters, buckets });
    }
    let read_counters = |c: &mut DbConnection, counters: &mut HashMap<OwnedKey, i64>| {
        let users = distinct(quotas.iter().map(|(_, key)| key.0).collect());
        let starts = distinct(quotas.iter().map(|(_, key)| key.3).collect());
        let rows: Vec<(i64, String, String, i64, i64)> = PermissionCountersOf {
            users: &users,
            starts: &starts,
        }
        .load(mysql(c)?)?;
        counters.extend(
            rows.into_iter()
                .map(|(u, p, k, s, used)| ((u, p, k, s), used)),
        );
        QueryResult::Ok(())
    };
    if !quotas.is_empty() {
        read_counters(c, &mut counters)?;
        let missing: Vec<&(&Consumption, PermissionCounterKey<'_>)> = quotas
            .iter()
            .filter(|(_, key)| !counters.contains_key(&owned(*key)))
            .collect();
        if !missing.is_empty() {
            lock_users(c, &distinct(missing.iter().map(|(_, key)| key.0).collect()))?;
            for (k, _) in &missing {
                if let Some(q) = k.permission_quota {
                    entitlements::create_permission_counter(c, k, q.period, q.window)?;
                }
            }
            read_counters(c, &mut counters)?;
        }
    }
    if !rated.is_empty() {
        let read = |c: &mut DbConnection, buckets: &mut HashMap<i64, (i64, i64)>| {
            let rows: Vec<(i64, i64, i64)> = BucketsOf { users: &rated }.load(mysql(c)?)?;
            buckets.extend(rows.into_iter().map(|(u, t, since)| (u, (t, since))));
            QueryResult::Ok(())
        };
        read(c, &mut buckets)?;
        let missing: Vec<i64> = rated
            .iter()
            .copied()
            .filter(|u| !buckets.contains_key(u))
            .collect();
        if !missing.is_empty() {
            // A first check of a bucket: its user's row makes every other
            // writer of it wait, and the bucket is read again behind it.
            lock_users(c, &missing)?;
            read(c, &mut buckets)?;
        }
    }
    Ok(Entitlements { counters, buckets })
}

fn distinct(mut values: Vec<i64>) -> Vec<i64> {
    values.sort_unstable();
    values.dedup();
    values
}

/// The sums of these (user, window start) windows' counters, read with one
/// statement; a window without counters sums to 0.
pub(super) fn window_sums(
    c: &mut DbConnection,
    windows: &[(i64, i64)],
) -> QueryResult<HashMap<(i64, i64), i64>> {
    let users = distinct(windows.iter().map(|w| w.0).collect());
    let starts = distinct(windows.iter().map(|w| w.1).collect());
    let mut sums: HashMap<(i64, i64), i64> = windows.iter().map(|&w| (w, 0)).collect();
    let rows: Vec<(i64, i64, String, i64)> = CountersOf {
        users: &users,
        starts: &starts,
        lock: false,
    }
    .load(mysql(c)?)?;
    for (user, start, _, used) in rows {
        // Only the windows asked for (the lists' product may hold others).
        if let Some(sum) = sums.get_mut(&(user, start)) {
            *sum += used;
        }
    }
    Ok(sums)
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
