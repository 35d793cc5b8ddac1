//! Reservations: made inside the batching writer's transaction with the
//! check that holds their units ([`insert_held`]), then read, committed or
//! released (by their user or by the expiry's sweep) here, each settlement
//! in one transaction that locks the reservation first, so that of a
//! commit and the expiry exactly one applies.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use tollgate_domain::period::{UsagePeriod, Window};
use tollgate_domain::reservation::{
    Hold, Reservation, ReservationId, ReservationRepository, ReservationStatus, Settle,
    SettleFailure, Settled, Settlement,
};
use tollgate_domain::usage::{Consumed, Consumption, Cost, UsedAndHeld};
use tollgate_domain::{Pending, StoreError, UserId};

use crate::connection::{on_backend, DbConnection};
use crate::error::store_error;
use crate::schema::reservations;
use crate::time::{from_db, to_db};
use crate::usage::statements::{EventValues, GiveBack, GiveBackOwn, SettledStatus};
use crate::usage::writer::SettleTask;
use crate::Database;

/// Tries of a settlement that hit a deadlock or a lock timeout.
const TRIES: usize = 3;

/// The reservations of the round's granted holds, in the caller's (the
/// batch's) transaction: each counted under the keys its check consumed on.
pub(crate) fn insert_held(
    c: &mut DbConnection,
    items: &[Consumption],
    decided: &[usize],
    results: &[Consumed],
) -> QueryResult<()> {
    let rows: Vec<_> = decided
        .iter()
        .filter(|&&i| matches!(results[i], Consumed::Granted { .. }))
        .filter_map(|&i| {
            let k = &items[i];
            k.hold.as_ref().map(|hold| {
                (
                    reservations::id.eq(hold.id.as_str()),
                    reservations::user_id.eq(k.user_id.get()),
                    reservations::subscription_id.eq(k.subscription_id.get()),
                    reservations::permission.eq(k.permission.as_str()),
                    reservations::reserved.eq(k.cost.get()),
                    reservations::status.eq(ReservationStatus::Held.as_str()),
                    reservations::created_at.eq(to_db(k.at)),
                    reservations::expires_at.eq(to_db(hold.ttl.expires_at(k.at))),
                    reservations::period_start.eq(to_db(k.window.start)),
                    reservations::own_period.eq(k.permission_quota.map(|q| q.period.as_str())),
                    reservations::own_start.eq(k.permission_quota.map(|q| to_db(q.window.start))),
                )
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    match c {
        // In process: a kept single-row statement per reservation.
        DbConnection::Sqlite(conn) => {
            for row in rows {
                diesel::insert_into(reservations::table)
                    .values(row)
                    .execute(conn)?;
            }
        }
        // One round trip for all of the batch's.
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(conn) => {
            diesel::insert_into(reservations::table)
                .values(&rows)
                .execute(conn)?;
        }
    }
    Ok(())
}

#[derive(Queryable, Selectable, Clone)]
#[diesel(table_name = reservations)]
struct ReservationRow {
    id: String,
    user_id: i64,
    subscription_id: i64,
    permission: String,
    reserved: i64,
    committed: Option<i64>,
    status: String,
    created_at: i64,
    expires_at: i64,
    period_start: Option<i64>,
    own_period: Option<String>,
    own_start: Option<i64>,
}

impl ReservationRow {
    fn into_domain(self) -> QueryResult<Reservation> {
        let status = match (self.status.as_str(), self.committed) {
            ("held", _) => ReservationStatus::Held,
            ("committed", Some(units)) => ReservationStatus::Committed { units },
            ("released", _) => ReservationStatus::Released,
            (other, _) => {
                return Err(diesel::result::Error::DeserializationError(
                    format!("a reservation of status {other:?}").into(),
                ))
            }
        };
        let reserved = Cost::parse(Some(self.reserved))
            .map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))?;
        Ok(Reservation {
            id: ReservationId::parse(&self.id).ok_or_else(|| {
                diesel::result::Error::DeserializationError("a malformed reservation id".into())
            })?,
            user_id: UserId::from_store(self.user_id),
            permission: self.permission,
            hold: Hold {
                reserved,
                created_at: from_db(self.created_at),
                expires_at: from_db(self.expires_at),
                status,
            },
        })
    }
}

/// The reservation's row, locked until the transaction ends on MariaDB
/// (SQLite's write transaction holds the whole database).
fn locked(c: &mut DbConnection, id: &str) -> QueryResult<Option<ReservationRow>> {
    let query = || reservations::table.find(id.to_owned());
    match c {
        DbConnection::Sqlite(conn) => query()
            .select(ReservationRow::as_select())
            .get_result(conn)
            .optional(),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(conn) => query()
            .select(ReservationRow::as_select())
            .for_update()
            .get_result(conn)
            .optional(),
    }
}

/// Settles the reservation in one transaction on `c`: the outer error is
/// the database's, the inner one the reservation's answer.
fn settle_once(
    c: &mut DbConnection,
    id: &ReservationId,
    settle: Settle,
    now: DateTime<Utc>,
) -> QueryResult<Result<Reservation, SettleFailure>> {
    c.write_tx(|c| settle_in(c, id, None, settle, now))
}

/// A settlement decided on its reservation's locked row.
enum Decided {
    /// Refused, or not the caller's: nothing to write.
    Refused(SettleFailure),
    /// Already settled so: answered as it is, nothing to write.
    Repeat(Reservation),
    /// To write: the reservation as it is after it, and its rows' changes.
    Apply(Applied),
}

/// What a settlement writes.
struct Applied {
    reservation: Reservation,
    user: i64,
    subscription: i64,
    /// The `usage_counters` window the held units were counted in.
    start: Option<i64>,
    /// The `permission_counters` (kind of window, start) they were counted in.
    own: Option<(String, i64)>,
    kept: i64,
    returned: i64,
}

impl Applied {
    /// The status and kept units to store.
    fn status(&self) -> (&'static str, Option<i64>) {
        let status = self.reservation.hold.status;
        let committed = match status {
            ReservationStatus::Committed { units } => Some(units),
            ReservationStatus::Held | ReservationStatus::Released => None,
        };
        (status.as_str(), committed)
    }
}

/// Decides `settle` at `now` on the reservation's row as it stands.
fn decide(
    row: ReservationRow,
    by: Option<UserId>,
    settle: Settle,
    now: DateTime<Utc>,
) -> QueryResult<Decided> {
    // Someone else's reservation does not exist for this caller.
    if by.is_some_and(|user| user.get() != row.user_id) {
        return Ok(Decided::Refused(SettleFailure::NotFound));
    }
    let (user, subscription, start) = (row.user_id, row.subscription_id, row.period_start);
    let own = row.own_period.clone().zip(row.own_start);
    let mut reservation = row.into_domain()?;
    let (kept, returned) = match reservation.hold.settle(settle, now) {
        Err(refused) => return Ok(Decided::Refused(refused.into())),
        Ok(Settlement::Repeat) => return Ok(Decided::Repeat(reservation)),
        Ok(Settlement::Apply { kept, returned }) => (kept, returned),
    };
    reservation.hold.status = match settle {
        Settle::Commit(n) => ReservationStatus::Committed { units: n },
        Settle::Release => ReservationStatus::Released,
    };
    Ok(Decided::Apply(Applied {
        reservation,
        user,
        subscription,
        start,
        own,
        kept,
        returned,
    }))
}

/// Settles the reservation inside the caller's transaction (the batching
/// writer's on SQLite, or [`settle_once`]'s), its row locked first: a
/// statement per row changed.
pub(crate) fn settle_in(
    c: &mut DbConnection,
    id: &ReservationId,
    by: Option<UserId>,
    settle: Settle,
    now: DateTime<Utc>,
) -> QueryResult<Result<Reservation, SettleFailure>> {
    let Some(row) = locked(c, id.as_str())? else {
        return Ok(Err(SettleFailure::NotFound));
    };
    let applied = match decide(row, by, settle, now)? {
        Decided::Refused(failure) => return Ok(Err(failure)),
        Decided::Repeat(reservation) => return Ok(Ok(reservation)),
        Decided::Apply(applied) => applied,
    };
    let permission = applied.reservation.permission.as_str();
    if applied.returned > 0 {
        if let Some(start) = applied.start {
            let back = GiveBack {
                user_id: applied.user,
                start,
                permission,
                units: applied.returned,
            };
            on_backend!(c, |conn| back.execute(conn))?;
        }
        if let Some((period, own_start)) = &applied.own {
            let back = GiveBackOwn {
                user_id: applied.user,
                permission,
                period,
                start: *own_start,
                units: applied.returned,
            };
            on_backend!(c, |conn| back.execute(conn))?;
        }
    }
    if applied.kept > 0 {
        let event = EventValues {
            user_id: applied.user,
            subscription_id: applied.subscription,
            permission,
            cost: applied.kept,
            at: to_db(applied.reservation.hold.created_at),
        };
        crate::usage::events::record(c, &[event])?;
    }
    let (status, committed) = applied.status();
    let settled = SettledStatus {
        id: id.as_str(),
        status,
        committed,
    };
    on_backend!(c, |conn| settled.execute(conn))?;
    Ok(Ok(applied.reservation))
}

/// MariaDB: the settlements `tasks` (their reservations' ids in order, so
/// that concurrent batches lock them in the same order) inside the
/// batching writer's transaction, in five statements for all of them: the
/// reservations locked with one read, each settlement decided in order on
/// its row as the ones before it left it, then one `UPDATE` of each kind
/// of counter given back, one `INSERT` of the events and one `UPDATE` of
/// the statuses. Each answer goes to its task's place.
#[cfg(feature = "mysql")]
pub(crate) fn settle_batch(
    c: &mut DbConnection,
    tasks: &[SettleTask],
    order: &[usize],
) -> QueryResult<Vec<Result<Reservation, SettleFailure>>> {
    use crate::usage::statements::{
        AddToCounters, AddToPermissionCounters, CounterKey, EventValues, PermissionCounterKey,
        SetStatuses,
    };
    use std::collections::HashMap;

    let DbConnection::Mysql(conn) = c else {
        return Err(diesel::result::Error::QueryBuilderError(
            "a MariaDB statement on an SQLite connection".into(),
        ));
    };
    let mut ids: Vec<&str> = order.iter().map(|&i| tasks[i].id.as_str()).collect();
    ids.dedup();
    let mut rows: HashMap<String, ReservationRow> = reservations::table
        .filter(reservations::id.eq_any(&ids))
        .select(ReservationRow::as_select())
        .for_update()
        .load::<ReservationRow>(conn)?
        .into_iter()
        .map(|row| (row.id.clone(), row))
        .collect();
    let mut answers: Vec<Result<Reservation, SettleFailure>> = (0..tasks.len())
        .map(|_| Err(SettleFailure::NotFound))
        .collect();
    let mut applied: Vec<Applied> = Vec::new();
    for &i in order {
        let t = &tasks[i];
        let Some(row) = rows.get_mut(t.id.as_str()) else {
            continue;
        };
        answers[i] = match decide(row.clone(), t.by, t.settle, t.now)? {
            Decided::Refused(failure) => Err(failure),
            Decided::Repeat(reservation) => Ok(reservation),
            Decided::Apply(done) => {
                // A later settlement of the same reservation in this batch
                // decides on it as this one leaves it.
                let (status, committed) = done.status();
                row.status = status.to_owned();
                row.committed = committed;
                let reservation = done.reservation.clone();
                applied.push(done);
                Ok(reservation)
            }
        };
    }
    let mut back: Vec<(CounterKey<'_>, i64)> = Vec::new();
    let mut back_own: Vec<(PermissionCounterKey<'_>, i64)> = Vec::new();
    let mut events: Vec<EventValues<'_>> = Vec::new();
    let mut statuses: Vec<(&str, &'static str, Option<i64>)> = Vec::new();
    for a in &applied {
        let permission = a.reservation.permission.as_str();
        if a.returned > 0 {
            if let Some(start) = a.start {
                let key = (a.user, start, permission);
                match back.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, units)) => *units += a.returned,
                    None => back.push((key, a.returned)),
                }
            }
            if let Some((period, own_start)) = &a.own {
                let key = (a.user, permission, period.as_str(), *own_start);
                match back_own.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, units)) => *units += a.returned,
                    None => back_own.push((key, a.returned)),
                }
            }
        }
        if a.kept > 0 {
            events.push(EventValues {
                user_id: a.user,
                subscription_id: a.subscription,
                permission,
                cost: a.kept,
                at: to_db(a.reservation.hold.created_at),
            });
        }
        let (status, committed) = a.status();
        // The last settlement of a reservation says its final state.
        statuses.retain(|(id, _, _)| *id != a.reservation.id.as_str());
        statuses.push((a.reservation.id.as_str(), status, committed));
    }
    if !back.is_empty() {
        AddToCounters::giving_back(&back).execute(conn)?;
    }
    if !back_own.is_empty() {
        AddToPermissionCounters {
            added: &back_own,
            give_back: true,
        }
        .execute(conn)?;
    }
    crate::usage::events::record_mysql(conn, &events)?;
    if !statuses.is_empty() {
        SetStatuses { rows: &statuses }.execute(conn)?;
    }
    Ok(answers)
}

/// [`settle_once`], tried again after a deadlock or a lock timeout.
pub(crate) fn settle_on(
    c: &mut DbConnection,
    id: &ReservationId,
    settle: Settle,
    now: DateTime<Utc>,
) -> Result<Reservation, SettleFailure> {
    let mut tries = 0;
    loop {
        tries += 1;
        match settle_once(c, id, settle, now) {
            Ok(answer) => return answer,
            Err(e) if tries < TRIES && c.is_retryable(&e) => {
                log::warn!("a reservation's settlement is tried again: {e}");
            }
            Err(e) => return Err(SettleFailure::Store(store_error(e))),
        }
    }
}

#[derive(QueryableByName)]
struct HeldRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    permission: String,
    #[diesel(sql_type = BigInt)]
    reserved: i64,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
}

/// The held reservations of `users` (a condition on `user_id` with one
/// `?`, bound to `id`), and, of those, `permission`'s only if given.
fn held_of(
    c: &mut DbConnection,
    users: (&str, i64),
    permission: Option<&str>,
) -> QueryResult<Vec<HeldRow>> {
    let (condition, id) = users;
    let only = if permission.is_some() {
        " AND permission = ?"
    } else {
        ""
    };
    let query = diesel::sql_query(format!(
        "SELECT id, user_id, permission, reserved, created_at FROM reservations \
         WHERE status = 'held' AND {condition}{only}"
    ))
    .into_boxed()
    .bind::<BigInt, _>(id);
    match permission {
        Some(p) => query.bind::<Text, _>(p.to_owned()).load(c),
        None => query.load(c),
    }
}

fn in_window(window: Window, micros: i64) -> bool {
    let t = from_db(micros);
    t >= window.start && window.end.is_none_or(|end| t < end)
}

/// After a rebuild of the users' counters for `window` (which dropped
/// every counter of theirs): the held reservations made in the window are
/// counted again in its counters and keyed to them; the others' units went
/// with their window's counters, and their keys are cleared.
pub(crate) fn recount_held(
    c: &mut DbConnection,
    users: (&str, i64),
    window: Window,
) -> QueryResult<()> {
    let start = to_db(window.start);
    for held in held_of(c, users, None)? {
        let key = in_window(window, held.created_at).then_some(start);
        if key.is_some() {
            crate::usage::add_to_counter(
                c,
                (held.user_id, start, &held.permission),
                held.reserved,
            )?;
        }
        diesel::update(reservations::table.find(&held.id))
            .set(reservations::period_start.eq(key))
            .execute(c)?;
    }
    Ok(())
}

/// [`recount_held`] for one permission's quota counters of `period`.
pub(crate) fn recount_held_of_permission(
    c: &mut DbConnection,
    users: (&str, i64),
    permission: &str,
    period: UsagePeriod,
    window: Window,
) -> QueryResult<()> {
    let start = to_db(window.start);
    for held in held_of(c, users, Some(permission))? {
        let key = in_window(window, held.created_at);
        if key {
            let counter = (held.user_id, permission, period, start);
            crate::usage::add_to_permission_counter(c, counter, held.reserved)?;
        }
        diesel::update(reservations::table.find(&held.id))
            .set((
                reservations::own_period.eq(key.then_some(period.as_str())),
                reservations::own_start.eq(key.then_some(start)),
            ))
            .execute(c)?;
    }
    Ok(())
}

/// The held reservations due at `now`, at most `limit`, oldest first.
pub(crate) fn due(
    c: &mut DbConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<ReservationId>> {
    // A literal, so that SQLite can use its index of the held ones alone.
    let held = diesel::dsl::sql::<diesel::sql_types::Bool>("status = 'held'");
    let ids: Vec<String> = reservations::table
        .filter(held)
        .filter(reservations::expires_at.le(to_db(now)))
        .order(reservations::expires_at.asc())
        .limit(limit)
        .select(reservations::id)
        .load(c)?;
    Ok(ids
        .iter()
        .filter_map(|id| ReservationId::parse(id))
        .collect())
}

/// Removes at most `limit` settled reservations that expired before
/// `before`; how many it removed.
pub(crate) fn remove_settled_before(
    c: &mut DbConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    let sql = match c {
        DbConnection::Sqlite(_) => {
            "DELETE FROM reservations WHERE id IN (SELECT id FROM reservations \
             WHERE status IN ('committed', 'released') AND expires_at < ? LIMIT ?)"
        }
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => {
            "DELETE FROM reservations WHERE status IN ('committed', 'released') \
             AND expires_at < ? LIMIT ?"
        }
    };
    diesel::sql_query(sql)
        .bind::<BigInt, _>(to_db(before))
        .bind::<BigInt, _>(limit)
        .execute(c)
}

/// The user's counters of the window starting at `start` that hold units,
/// and their held reservations' units in it, both by permission, read by
/// ONE statement (one snapshot on either backend: a reservation made or
/// settled meanwhile is in both or in neither).
pub(crate) fn counted_and_held(
    c: &mut DbConnection,
    user_id: i64,
    start: i64,
) -> QueryResult<UsedAndHeld> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        held: i64,
        #[diesel(sql_type = Text)]
        permission: String,
        #[diesel(sql_type = BigInt)]
        units: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT 0 AS held, permission, used AS units FROM usage_counters \
         WHERE user_id = ? AND period_start = ? AND used > 0 \
         UNION ALL SELECT 1 AS held, permission, reserved AS units FROM reservations \
         WHERE user_id = ? AND status = 'held' AND period_start = ?",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<BigInt, _>(start)
    .bind::<BigInt, _>(user_id)
    .bind::<BigInt, _>(start)
    .load(c)?;
    let mut counted: Vec<(String, i64)> = Vec::new();
    let mut held: Vec<(String, i64)> = Vec::new();
    for row in rows {
        let into = if row.held == 1 {
            &mut held
        } else {
            &mut counted
        };
        match into.iter_mut().find(|(p, _)| *p == row.permission) {
            Some((_, sum)) => *sum += row.units,
            None => into.push((row.permission, row.units)),
        }
    }
    Ok((counted, held))
}

impl ReservationRepository for Database {
    fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>, StoreError> {
        self.with(|c| {
            reservations::table
                .find(id.as_str().to_owned())
                .select(ReservationRow::as_select())
                .get_result::<ReservationRow>(c)
                .optional()?
                .map(ReservationRow::into_domain)
                .transpose()
        })?
        .map_err(store_error)
    }

    fn settle(
        &self,
        id: &ReservationId,
        by: Option<UserId>,
        settle: Settle,
        now: DateTime<Utc>,
    ) -> Pending<Result<Settled, SettleFailure>> {
        self.writer.settle(SettleTask {
            id: id.clone(),
            by,
            context: by.and_then(|user| self.cache.context(user.get())).flatten(),
            settle,
            now,
        })
    }
}
