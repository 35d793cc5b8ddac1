//! Idempotency keys inside the batching writer's transaction: a keyed check
//! first finds its key's record (a repeat is answered from it), and a
//! granted one records its key before the commit, so that the record and the
//! grant are durable together. The key is unique per user in the table
//! (`idempotency_keys`' primary key): on MariaDB, where several instances'
//! transactions run at once, each keyed check first inserts a placeholder
//! row, and a concurrent repeat's insert waits on it until the original is
//! decided; SQLite's transactions take the write lock up front, so one
//! reads and writes the record alone.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use serde::{Deserialize, Serialize};
use tollgate_domain::access::{Quota, QuotaScope};
use tollgate_domain::idempotency::Recorded;
use tollgate_domain::period::UsagePeriod;
use tollgate_domain::reservation::ReservationId;
use tollgate_domain::usage::{Consumed, Consumption};

use crate::connection::{on_backend, DbConnection};
use crate::schema::idempotency_keys;
use crate::time::{from_db, to_db};
#[cfg(feature = "mysql")]
use crate::usage::statements::{ClaimKeys, KeyRow, RecordKeys};

/// A quota as a record keeps it, in the record's JSON (short names: a
/// record is written with every keyed grant).
#[derive(Serialize, Deserialize)]
struct StoredQuota {
    #[serde(rename = "s")]
    scope: String,
    #[serde(rename = "l")]
    limit: i64,
    #[serde(rename = "r")]
    remaining: i64,
    #[serde(rename = "p")]
    period: String,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    reset_at: Option<i64>,
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    reset_in: Option<i64>,
}

/// A record's `response`: the quotas after the original as it answered,
/// and for a reservation its hold and id.
#[derive(Serialize, Deserialize)]
struct StoredResponse {
    #[serde(rename = "q")]
    quotas: Vec<StoredQuota>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    reservation: Option<String>,
}

fn encode(record: &Recorded) -> QueryResult<String> {
    let quotas: Vec<StoredQuota> = record
        .quotas
        .iter()
        .map(|q| StoredQuota {
            scope: q.scope.as_str().to_owned(),
            limit: q.limit,
            remaining: q.remaining,
            period: q.usage_period.as_str().to_owned(),
            reset_at: q.reset_at.map(to_db),
            reset_in: q.reset_in_seconds,
        })
        .collect();
    let stored = StoredResponse {
        quotas,
        ttl: record.ttl,
        reservation: record.reservation.as_ref().map(|id| id.as_str().to_owned()),
    };
    serde_json::to_string(&stored).map_err(|e| DieselError::SerializationError(Box::new(e)))
}

fn decode(response: &str) -> QueryResult<StoredResponse> {
    serde_json::from_str(response).map_err(|e| DieselError::DeserializationError(Box::new(e)))
}

fn quotas(stored: Vec<StoredQuota>) -> QueryResult<Vec<Quota>> {
    stored
        .into_iter()
        .map(|q| {
            let scope = match q.scope.as_str() {
                "plan" => QuotaScope::Plan,
                "permission" => QuotaScope::Permission,
                other => {
                    return Err(DieselError::DeserializationError(
                        format!("a recorded quota of scope {other:?}").into(),
                    ))
                }
            };
            let usage_period = UsagePeriod::parse(&q.period)
                .map_err(|e| DieselError::DeserializationError(Box::new(e)))?;
            Ok(Quota {
                scope,
                limit: q.limit,
                remaining: q.remaining,
                usage_period,
                reset_at: q.reset_at.map(from_db),
                reset_in_seconds: q.reset_in,
            })
        })
        .collect()
}

/// A stored record's row: (permission, cost, created_at, response).
type RecordRow = (String, i64, i64, Option<String>);

fn recorded((permission, cost, created_at, response): RecordRow) -> QueryResult<Option<Recorded>> {
    let Some(response) = response else {
        return Ok(None);
    };
    let stored = decode(&response)?;
    let reservation = match stored.reservation {
        Some(id) => Some(ReservationId::parse(&id).ok_or_else(|| {
            DieselError::DeserializationError("a malformed reservation id".into())
        })?),
        None => None,
    };
    Ok(Some(Recorded {
        at: from_db(created_at),
        permission,
        cost,
        ttl: stored.ttl,
        reservation,
        quotas: quotas(stored.quotas)?,
    }))
}

/// The key of item `i` when it has one: (user, key).
fn key_of(items: &[Consumption], i: usize) -> Option<(i64, &str)> {
    let k = &items[i];
    k.idempotency_key
        .as_ref()
        .map(|key| (k.user_id.get(), key.as_str()))
}

/// The items of `pending` to decide in this round, and those to decide
/// after it: a repeat of a key already in the round waits for the next one,
/// where it finds the original's record (or, the original denied, is
/// decided itself).
pub(super) fn split_repeats(
    items: &[Consumption],
    pending: Vec<usize>,
) -> (Vec<usize>, Vec<usize>) {
    let mut round = Vec::with_capacity(pending.len());
    let mut later = Vec::new();
    let mut seen: HashSet<(i64, &str)> = HashSet::new();
    for i in pending {
        match key_of(items, i) {
            Some(key) if !seen.insert(key) => later.push(i),
            Some(_) | None => round.push(i),
        }
    }
    (round, later)
}

/// Claims the keys of the round's keyed items (sorted, so that concurrent
/// transactions claim in one order): the records of those already granted,
/// by item. Every other key is this transaction's until it commits.
pub(super) fn claim(
    c: &mut DbConnection,
    items: &[Consumption],
    round: &[usize],
) -> QueryResult<HashMap<usize, Recorded>> {
    let mut keyed: Vec<(usize, (i64, &str))> = round
        .iter()
        .filter_map(|&i| key_of(items, i).map(|key| (i, key)))
        .collect();
    let mut found = HashMap::new();
    if keyed.is_empty() {
        return Ok(found);
    }
    keyed.sort_by(|a, b| a.1.cmp(&b.1));
    match c {
        DbConnection::Sqlite(_) => {
            for (i, (user, key)) in keyed {
                if let Some(record) = find(c, user, key)? {
                    found.insert(i, record);
                }
            }
        }
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(conn) => {
            // The placeholders: a key another transaction holds makes this
            // insert wait until that one commits (or rolls back).
            let placeholders: Vec<KeyRow<'_>> = keyed
                .iter()
                .map(|&(i, (user, key))| {
                    let k = &items[i];
                    (user, key, k.permission.as_str(), k.cost.get(), to_db(k.at))
                })
                .collect();
            let inserted = ClaimKeys {
                rows: &placeholders,
            }
            .execute(conn)?;
            // Every key new (the usual case): none has a record to read.
            if inserted == keyed.len() {
                return Ok(found);
            }
            let users: Vec<i64> = keyed.iter().map(|(_, (user, _))| *user).collect();
            let keys: Vec<&str> = keyed.iter().map(|(_, (_, key))| *key).collect();
            let rows: Vec<(i64, String, String, i64, i64, Option<String>)> =
                idempotency_keys::table
                    .filter(idempotency_keys::user_id.eq_any(&users))
                    .filter(idempotency_keys::idem_key.eq_any(&keys))
                    .select((
                        idempotency_keys::user_id,
                        idempotency_keys::idem_key,
                        idempotency_keys::permission,
                        idempotency_keys::cost,
                        idempotency_keys::created_at,
                        idempotency_keys::response,
                    ))
                    .load(conn)?;
            let mut by_key: HashMap<(i64, String), RecordRow> = rows
                .into_iter()
                .map(|(u, k, p, cost, at, response)| ((u, k), (p, cost, at, response)))
                .collect();
            for (i, (user, key)) in keyed {
                // A NULL response is this transaction's own placeholder.
                if let Some(row) = by_key.remove(&(user, key.to_owned())) {
                    if let Some(record) = recorded(row)? {
                        found.insert(i, record);
                    }
                }
            }
        }
    }
    Ok(found)
}

fn record_columns() -> (
    idempotency_keys::permission,
    idempotency_keys::cost,
    idempotency_keys::created_at,
    idempotency_keys::response,
) {
    (
        idempotency_keys::permission,
        idempotency_keys::cost,
        idempotency_keys::created_at,
        idempotency_keys::response,
    )
}

/// How a repeat is answered from its original's record.
pub(super) fn replay(record: Recorded, k: &Consumption) -> Consumed {
    let ttl = k.hold.as_ref().map(|h| h.ttl.get());
    if record.same_request(k.permission.as_str(), k.cost.get(), ttl) {
        Consumed::Replayed(Box::new(record))
    } else {
        Consumed::KeyReused
    }
}

/// After the round's decisions: records the keys of the granted keyed
/// items (the quotas they were answered with), and gives up the claims of
/// the denied ones, so that their repeats are decided again.
pub(super) fn settle(
    c: &mut DbConnection,
    items: &[Consumption],
    decided: &[usize],
    results: &[Consumed],
) -> QueryResult<()> {
    let mut granted: Vec<(i64, &str, &Consumption, String)> = Vec::new();
    let mut denied: Vec<(i64, &str)> = Vec::new();
    for &i in decided {
        let Some((user, key)) = key_of(items, i) else {
            continue;
        };
        match &results[i] {
            Consumed::Granted {
                used,
                permission_used,
            } => {
                let record = items[i].record(*used, *permission_used);
                granted.push((user, key, &items[i], encode(&record)?));
            }
            _ => denied.push((user, key)),
        }
    }
    match c {
        DbConnection::Sqlite(conn) => {
            for (user, key, k, response) in granted {
                diesel::insert_into(idempotency_keys::table)
                    .values((
                        idempotency_keys::user_id.eq(user),
                        idempotency_keys::idem_key.eq(key),
                        idempotency_keys::permission.eq(k.permission.as_str()),
                        idempotency_keys::cost.eq(k.cost.get()),
                        idempotency_keys::created_at.eq(to_db(k.at)),
                        idempotency_keys::response.eq(response),
                    ))
                    .execute(conn)?;
            }
        }
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(conn) => {
            use diesel::sql_types::{BigInt, Text};
            if !granted.is_empty() {
                let rows: Vec<(KeyRow<'_>, &str)> = granted
                    .iter()
                    .map(|(user, key, k, response)| {
                        let row = (
                            *user,
                            *key,
                            k.permission.as_str(),
                            k.cost.get(),
                            to_db(k.at),
                        );
                        (row, response.as_str())
                    })
                    .collect();
                let written = RecordKeys { rows: &rows }.execute(conn)?;
                // Each row was this transaction's placeholder: an update
                // counts two.
                if written != 2 * granted.len() {
                    return Err(DieselError::NotFound);
                }
            }
            if !denied.is_empty() {
                let rows = vec!["(user_id = ? AND idem_key = ?)"; denied.len()].join(" OR ");
                let query = diesel::sql_query(format!("DELETE FROM idempotency_keys WHERE {rows}"))
                    .into_boxed();
                let query = denied.iter().fold(query, |q, (user, key)| {
                    q.bind::<BigInt, _>(*user).bind::<Text, _>(*key)
                });
                query.execute(conn)?;
            }
        }
    }
    Ok(())
}

/// The committed record of the user's request under `key`, if any.
/// On the connection itself: SQLite's writer claims keys with it.
pub(crate) fn find(c: &mut DbConnection, user: i64, key: &str) -> QueryResult<Option<Recorded>> {
    let row = idempotency_keys::table
        .filter(idempotency_keys::user_id.eq(user))
        .filter(idempotency_keys::idem_key.eq(key))
        .select(record_columns());
    let row = on_backend!(c, |conn| row.get_result::<RecordRow>(conn).optional())?;
    Ok(row.map(recorded).transpose()?.flatten())
}

/// Removes at most `limit` records older than `before`; how many it removed.
pub(crate) fn remove_older_than(
    c: &mut DbConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    let before = to_db(before);
    match c {
        // Rows are in the order of their creation: the oldest `limit` are
        // looked at, and those of them older than `before` go.
        DbConnection::Sqlite(conn) => diesel::sql_query(
            "DELETE FROM idempotency_keys WHERE created_at < ? AND id <= \
             (SELECT max(id) FROM (SELECT id FROM idempotency_keys ORDER BY id LIMIT ?))",
        )
        .bind::<diesel::sql_types::BigInt, _>(before)
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .execute(conn),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(conn) => {
            diesel::sql_query("DELETE FROM idempotency_keys WHERE created_at < ? LIMIT ?")
                .bind::<diesel::sql_types::BigInt, _>(before)
                .bind::<diesel::sql_types::BigInt, _>(limit)
                .execute(conn)
        }
    }
}
