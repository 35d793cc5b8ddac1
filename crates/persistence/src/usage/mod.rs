//! The hot path: access contexts, usage counters and events, and the
//! machinery that serves checks (the batching [`writer`], the cache
//! [`loader`] and its [`cache`], prepared [`statements`]). What differs per
//! backend in consuming a batch is in [`sqlite`] and [`mysql`].

pub(crate) mod cache;
mod counters;
mod entitlements;
pub(crate) mod events;
pub(crate) mod hours;
pub(crate) mod idempotency;
pub(crate) mod liveness;
pub(crate) mod loader;
#[cfg(feature = "mysql")]
mod mysql;
mod sqlite;
pub(crate) mod statements;
pub(crate) mod sweeper;
pub(crate) mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use diesel::prelude::*;
use tollgate_domain::access::Quota;
use tollgate_domain::history::{HistoryFilter, HistoryRow};
use tollgate_domain::idempotency::{IdempotencyKey, Recorded};
use tollgate_domain::pending::{self, Pending};
use tollgate_domain::period::{UsagePeriod, Window};
use tollgate_domain::permission::PermissionName;
use tollgate_domain::plan::UsageLimit;
use tollgate_domain::reservation::{Reservation, SettleFailure, Settled};
use tollgate_domain::usage::{
    AccessContext, Consumed, Consumption, EventFilter, UsageEvent, UsageRepository, UsedAndHeld,
};
use tollgate_domain::{Page, PageRequest, PlanId, StoreError, SubscriptionId, UserId};

use crate::connection::DbConnection;
use crate::error::store_error;
use crate::plan::{parse_period, plan_grants, rate_limit, Grants};
use crate::schema::{plans, subscriptions};
use crate::time::{from_db, to_db};
use crate::Database;
use statements::EventValues;

pub(crate) use counters::{add_to_counter, rebuild_counters, Users};
pub(crate) use entitlements::{add_to_permission_counter, rebuild_permission_counters};

/// The access contexts of the users among `user_ids` who have an active
/// subscription, by user id.
pub(crate) fn access_contexts(
    c: &mut DbConnection,
    user_ids: &[i64],
) -> QueryResult<HashMap<i64, AccessContext>> {
    type PlanTerms = (Option<i64>, String, Option<i64>, Option<i64>);
    // Two single-table reads, not a join: a join lets the planner start
    // from `plans` and walk every subscription of a big plan by
    // `subscriptions_plan_status` (MariaDB did so on statistics taken
    // while the table was small: 100,000 rows read for 31 lookups).
    let found = subscriptions::table
        .filter(subscriptions::active_user_id.eq_any(user_ids))
        .select((
            subscriptions::user_id,
            subscriptions::id,
            subscriptions::plan_id,
            subscriptions::started_at,
        ))
        .load::<(i64, i64, i64, i64)>(c)?;
    let mut plan_ids: Vec<i64> = found.iter().map(|row| row.2).collect();
    plan_ids.sort_unstable();
    plan_ids.dedup();
    let terms: HashMap<i64, PlanTerms> = plans::table
        .filter(plans::id.eq_any(&plan_ids))
        .select((
            plans::id,
            (
                plans::usage_limit,
                plans::usage_period,
                plans::rate_units,
                plans::rate_per_seconds,
            ),
        ))
        .load::<(i64, PlanTerms)>(c)?
        .into_iter()
        .collect();
    let grants = plan_grants(c, &plan_ids)?;
    let none = Grants::default();
    Ok(found
        .into_iter()
        .filter_map(|(user_id, subscription_id, plan_id, started_at)| {
            // A plan deleted between the two reads: no subscription to it
            // is active any more.
            let (limit, period, units, per) = terms.get(&plan_id)?;
            let of_plan = grants.get(&plan_id).unwrap_or(&none);
            let context = AccessContext {
                subscription_id: SubscriptionId::from_store(subscription_id),
                plan_id: PlanId::from_store(plan_id),
                started_at: from_db(started_at),
                permissions: of_plan.permissions(),
                limit: UsageLimit::parse(*limit).unwrap_or_default(),
                period: parse_period(period),
                permission_limits: of_plan.limits(),
                rate_limit: rate_limit(*units, *per),
            };
            Some((user_id, context))
        })
        .collect())
}

/// A settlement's answer.
pub(crate) type Outcome = Result<Settled, SettleFailure>;

/// Many checks in ONE transaction (the batching writer's unit), so one
/// commit makes all of them, their events and roll-ups (or, for holds,
/// their reservations) and their idempotency records durable. Checks run
/// in (user, window, permission) order, so concurrent
/// batches of other instances lock counters in the same order; keyed checks
/// claim their keys before any counter. A repeat of a key already in the
/// batch is decided in a later round of the same transaction, after its
/// original.
pub(crate) fn consume_batch(
    c: &mut DbConnection,
    items: &[Consumption],
    settles: &[writer::SettleTask],
) -> QueryResult<(Vec<Consumed>, Vec<Outcome>)> {
    c.write_tx(|c| {
        let mut results = vec![
            Consumed::Exhausted {
                used: 0,
                permission_used: None
            };
            items.len()
        ];
        let mut pending: Vec<usize> = (0..items.len()).collect();
        while !pending.is_empty() {
            let (round, later) = idempotency::split_repeats(items, pending);
            let mut recorded = idempotency::claim(c, items, &round)?;
            let mut order = Vec::with_capacity(round.len());
            for i in round {
                match recorded.remove(&i) {
                    Some(record) => results[i] = idempotency::replay(record, &items[i]),
                    None => order.push(i),
                }
            }
            order.sort_by(|&a, &b| counters::key(&items[a]).cmp(&counters::key(&items[b])));
            match c {
                // A round of repeats only.
                _ if order.is_empty() => {}
                DbConnection::Sqlite(_) => sqlite::consume_batch(c, items, &order, &mut results)?,
                #[cfg(feature = "mysql")]
                DbConnection::Mysql(_) => mysql::consume_batch(c, items, &order, &mut results)?,
            }
            let granted: Vec<EventValues<'_>> = order
                .iter()
                // A hold's event waits for its commit.
                .filter(|&&i| {
                    matches!(results[i], Consumed::Granted { .. }) && items[i].hold.is_none()
                })
                .map(|&i| EventValues::of(&items[i]))
                .collect();
            events::record(c, &granted)?;
            crate::reservation::insert_held(c, items, &order, &results)?;
            idempotency::settle(c, items, &order, &results)?;
            pending = later;
        }
        // Then the commits and releases, their reservations locked in id
        // order (concurrent batches lock them in the same order).
        let mut order: Vec<usize> = (0..settles.len()).collect();
        order.sort_by(|&a, &b| settles[a].id.as_str().cmp(settles[b].id.as_str()));
        let decided = match c {
            _ if settles.is_empty() => Vec::new(),
            DbConnection::Sqlite(_) => {
                let mut decided: Vec<_> = (0..settles.len())
                    .map(|_| Err(SettleFailure::NotFound))
                    .collect();
                for i in order {
                    let t = &settles[i];
                    decided[i] = crate::reservation::settle_in(c, &t.id, t.by, t.settle, t.now)?;
                }
                decided
            }
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(_) => crate::reservation::settle_batch(c, settles, &order)?,
        };
        // Answered in the order they came, with their quotas after the batch.
        let probes: Vec<Probe> = settles
            .iter()
            .zip(&decided)
            .map(|(t, outcome)| match outcome {
                Ok(reservation) => probe(reservation, t.context.as_deref(), t.now),
                Err(_) => Probe::Known(None),
            })
            .collect();
        let sums = window_sums(c, &probes)?;
        let mut settled = Vec::with_capacity(settles.len());
        for (outcome, probe) in decided.into_iter().zip(probes) {
            settled.push(match outcome {
                Ok(reservation) => Ok(Settled {
                    quotas: quotas_of(c, probe, &sums)?,
                    reservation,
                }),
                Err(refused) => Err(refused),
            });
        }
        Ok((results, settled))
    })
}

/// What a settled reservation's answer shows of its quotas: known at once
/// (`None` without its user's context, the caller reads them; none when
/// the plan no longer grants the permission), or to be read with this
/// probe, a check of its permission that takes nothing.
enum Probe {
    Known(Option<Vec<Quota>>),
    Read(tollgate_domain::usage::Consumption),
}

fn probe(
    reservation: &Reservation,
    context: Option<&AccessContext>,
    now: chrono::DateTime<chrono::Utc>,
) -> Probe {
    let Some(context) = context else {
        return Probe::Known(None);
    };
    if !context.permissions.contains(&reservation.permission) {
        return Probe::Known(Some(Vec::new()));
    }
    let (Ok(permission), Ok(cost)) = (
        PermissionName::parse(reservation.permission.clone()),
        tollgate_domain::usage::Cost::parse(None),
    ) else {
        return Probe::Known(None);
    };
    Probe::Read(tollgate_domain::usage::Consumption {
        rate_limit: None,
        ..context.consumption(reservation.user_id, permission, cost, now)
    })
}

/// The window sums (by user and window start) of the probes to read, in
/// one statement on MariaDB (a round trip saved per settlement); SQLite's
/// in-process reads are each probe's own ([`quotas_of`]).
fn window_sums(c: &mut DbConnection, probes: &[Probe]) -> QueryResult<HashMap<(i64, i64), i64>> {
    let windows: Vec<(i64, i64)> = probes
        .iter()
        .filter_map(|p| match p {
            Probe::Read(k) => Some((k.user_id.get(), to_db(k.window.start))),
            Probe::Known(_) => None,
        })
        .collect();
    match c {
        _ if windows.is_empty() => Ok(HashMap::new()),
        DbConnection::Sqlite(_) => Ok(HashMap::new()),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => mysql::window_sums(c, &windows),
    }
}

/// The quotas of a settled reservation's permission as they stand in the
/// settlement's transaction, the plan-wide usage from `sums` when read
/// there.
fn quotas_of(
    c: &mut DbConnection,
    probe: Probe,
    sums: &HashMap<(i64, i64), i64>,
) -> QueryResult<Option<Vec<Quota>>> {
    let probe = match probe {
        Probe::Known(quotas) => return Ok(quotas),
        Probe::Read(probe) => probe,
    };
    let summed = sums
        .get(&(probe.user_id.get(), to_db(probe.window.start)))
        .copied();
    Ok(match entitlements::peek(c, &probe, summed)? {
        Consumed::Granted {
            used,
            permission_used,
        }
        | Consumed::Exhausted {
            used,
            permission_used,
        }
        | Consumed::RateLimited {
            used,
            permission_used,
            ..
        } => Some(probe.quotas_at(used, permission_used)),
        Consumed::Replayed(_) | Consumed::KeyReused => None,
    })
}

/// The user's counters of the window that hold units, by permission name.
fn used_by_permission(
    c: &mut DbConnection,
    user_id: UserId,
    window: Window,
) -> QueryResult<Vec<(String, i64)>> {
    let mut rows = counters::of_window(c, user_id.get(), to_db(window.start))?;
    rows.retain(|(_, used)| *used > 0);
    Ok(rows)
}

impl UsageRepository for Database {
    fn access_context(
        &self,
        user_id: UserId,
    ) -> Pending<Result<Option<Arc<AccessContext>>, StoreError>> {
        match self.cache.context(user_id.get()) {
            Some(cached) => pending::ready(Ok(cached)),
            None => self.loader.context(user_id.get()),
        }
    }

    fn consume(&self, consumption: &Consumption) -> Pending<Result<Consumed, StoreError>> {
        self.writer.consume(consumption)
    }

    fn peek(&self, consumption: &Consumption) -> Result<Consumed, StoreError> {
        self.with(|c| entitlements::peek(c, consumption, None))?
            .map_err(store_error)
    }

    fn permission_used(
        &self,
        user_id: UserId,
        permission: &PermissionName,
        period: UsagePeriod,
        window: Window,
    ) -> Result<i64, StoreError> {
        self.with(|c| {
            entitlements::reported_permission_used(
                c,
                user_id.get(),
                permission.as_str(),
                period,
                window,
            )
        })?
        .map_err(store_error)
    }

    fn recorded(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Recorded>, StoreError> {
        self.with(|c| idempotency::find(c, user_id.get(), key.as_str()))?
            .map_err(store_error)
    }

    fn used_and_held(&self, user_id: UserId, window: Window) -> Result<UsedAndHeld, StoreError> {
        self.with(|c| crate::reservation::counted_and_held(c, user_id.get(), to_db(window.start)))?
            .map_err(store_error)
    }

    fn used_by_permission(
        &self,
        user_id: UserId,
        window: Window,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|c| used_by_permission(c, user_id, window))?
            .map_err(store_error)
    }

    fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryRow>, StoreError> {
        self.with(|c| hours::history(c, filter))?
            .map_err(store_error)
    }

    fn events(
        &self,
        user_id: UserId,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<UsageEvent>, StoreError> {
        // The list starts at the retention horizon, whether or not the
        // sweep has deleted everything before it yet.
        let mut filter = filter.clone();
        if let Some(horizon) = self.retention_horizon(chrono::Utc::now()) {
            filter.from = Some(filter.from.map_or(horizon, |from| from.max(horizon)));
        }
        self.with(|c| events::list(c, user_id, &filter, page))?
            .map_err(store_error)
    }
}
