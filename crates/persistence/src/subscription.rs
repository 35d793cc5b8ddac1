//! Subscriptions: rows, queries and the [`SubscriptionRepository`] port.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use tollgate_domain::subscription::{
    Subscription, SubscriptionError, SubscriptionFilter, SubscriptionRepository, SubscriptionStatus,
};
use tollgate_domain::{Page, PageRequest, PlanId, StoreError, SubscriptionId, UserId};

use crate::plan::parse_period;
use crate::plan::plan_grants;
use crate::usage::{rebuild_counters, rebuild_permission_counters, Users};

use crate::cache::Change;
use crate::connection::DbConnection;
use crate::epoch::change_tx;
use crate::error::{is_foreign_key_violation, is_unique_violation, store_error};
use crate::schema::*;
use crate::time::{from_db, to_db};
use crate::{fetch_limit, Database};

#[derive(Debug, Queryable)]
pub(crate) struct SubscriptionRow {
    pub id: i64,
    pub user_id: i64,
    pub plan_id: i64,
    pub status: String,
    pub active_user_id: Option<i64>,
    pub started_at: i64,
    pub canceled_at: Option<i64>,
}

impl SubscriptionRow {
    pub fn into_domain(self, usage_period: &str) -> Subscription {
        Subscription {
            id: SubscriptionId::from_store(self.id),
            user_id: UserId::from_store(self.user_id),
            plan_id: PlanId::from_store(self.plan_id),
            status: if self.active_user_id.is_some() {
                SubscriptionStatus::Active
            } else {
                SubscriptionStatus::parse(&self.status).unwrap_or(SubscriptionStatus::Canceled)
            },
            started_at: from_db(self.started_at),
            canceled_at: self.canceled_at.map(from_db),
            usage_period: parse_period(usage_period),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = subscriptions)]
pub(crate) struct NewSubscriptionRow<'a> {
    pub user_id: i64,
    pub plan_id: i64,
    pub status: &'a str,
    pub active_user_id: Option<i64>,
    pub started_at: i64,
}

fn subscription_db_error(e: DieselError) -> SubscriptionError {
    if is_unique_violation(&e) {
        SubscriptionError::AlreadyActive
    } else if is_foreign_key_violation(&e) {
        SubscriptionError::UnknownPlan
    } else if matches!(e, DieselError::NotFound) {
        SubscriptionError::NoActiveSubscription
    } else {
        SubscriptionError::Store(store_error(e))
    }
}

fn subscription_active(c: &mut DbConnection, user_id: UserId) -> QueryResult<Option<Subscription>> {
    subscriptions::table
        .inner_join(plans::table)
        .filter(subscriptions::active_user_id.eq(user_id.get()))
        .select((subscriptions::all_columns, plans::usage_period))
        .first::<(SubscriptionRow, String)>(c)
        .optional()
        .map(|r| r.map(|(s, period)| s.into_domain(&period)))
}

pub(crate) fn subscription_create(
    c: &mut DbConnection,
    user_id: UserId,
    plan_id: PlanId,
    now: DateTime<Utc>,
) -> Result<Subscription, SubscriptionError> {
    let result = change_tx(c, |c| {
        // Usage is the user's: the new plan's window counts what they
        // consumed in it under any earlier subscription (rebuilt, since the
        // period kind may differ from theirs). Before the insert, which on
        // MariaDB share-locks the user (foreign key) that a batch creating
        // this user's counters would wait for while holding them.
        let period: Option<String> = plans::table
            .find(plan_id.get())
            .select(plans::usage_period)
            .first(c)
            .optional()?;
        if let Some(period) = period {
            rebuild_counters(c, Users::One(user_id.get()), parse_period(&period), now)?;
            rebuild_own_counters(c, user_id, plan_id, now)?;
        }
        diesel::insert_into(subscriptions::table)
            .values(NewSubscriptionRow {
                user_id: user_id.get(),
                plan_id: plan_id.get(),
                status: SubscriptionStatus::Active.as_str(),
                active_user_id: Some(user_id.get()),
                started_at: to_db(now),
            })
            .execute(c)?;
        subscription_active(c, user_id)?.ok_or(DieselError::NotFound)
    });
    match result {
        Err(e) if is_foreign_key_violation(&e) => {
            // Tell which of the two references vanished.
            let user_exists = users::table
                .find(user_id.get())
                .count()
                .get_result::<i64>(c)
                .map_err(subscription_db_error)?;
            Err(if user_exists == 0 {
                SubscriptionError::UserNotFound
            } else {
                SubscriptionError::UnknownPlan
            })
        }
        other => other.map_err(subscription_db_error),
    }
}

pub(crate) fn subscription_change_plan(
    c: &mut DbConnection,
    user_id: UserId,
    plan_id: PlanId,
    now: DateTime<Utc>,
) -> Result<Subscription, SubscriptionError> {
    change_tx(c, |c| {
        let before = subscription_active(c, user_id)?.ok_or(DieselError::NotFound)?;
        diesel::update(subscriptions::table.find(before.id.get()))
            .set(subscriptions::plan_id.eq(plan_id.get()))
            .execute(c)?;
        let after = subscription_active(c, user_id)?.ok_or(DieselError::NotFound)?;
        if after.usage_period != before.usage_period {
            // The new kind's window is rebuilt from the user's events, so
            // usage consumed in it carries over.
            rebuild_counters(c, Users::One(user_id.get()), after.usage_period, now)?;
        }
        // The new plan's permission quotas count what the user consumed in
        // their windows.
        rebuild_own_counters(c, user_id, plan_id, now)?;
        Ok(after)
    })
    .map_err(subscription_db_error)
}

/// Rebuilds the user's permission counters for the quotas of `plan_id`, so
/// that what they consumed in those windows counts against them.
fn rebuild_own_counters(
    c: &mut DbConnection,
    user_id: UserId,
    plan_id: PlanId,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    let limits = plan_grants(c, &[plan_id.get()])?
        .remove(&plan_id.get())
        .unwrap_or_default()
        .limits();
    rebuild_permission_counters(c, Users::One(user_id.get()), &limits, now)
}

pub(crate) fn subscription_find_active(
    c: &mut DbConnection,
    user_id: UserId,
) -> QueryResult<Option<Subscription>> {
    subscription_active(c, user_id)
}

pub(crate) fn subscription_cancel(
    c: &mut DbConnection,
    user_id: UserId,
    now: DateTime<Utc>,
) -> Result<(), SubscriptionError> {
    let changed = change_tx(c, |c| {
        diesel::update(subscriptions::table.filter(subscriptions::active_user_id.eq(user_id.get())))
            .set((
                subscriptions::status.eq(SubscriptionStatus::Canceled.as_str()),
                subscriptions::active_user_id.eq(None::<i64>),
                subscriptions::canceled_at.eq(Some(to_db(now))),
            ))
            .execute(c)
    })
    .map_err(subscription_db_error)?;
    if changed == 0 {
        return Err(SubscriptionError::NoActiveSubscription);
    }
    Ok(())
}

pub(crate) fn subscription_list(
    c: &mut DbConnection,
    filter: SubscriptionFilter,
    page: PageRequest,
) -> Result<Page<Subscription>, StoreError> {
    let mut query = subscriptions::table
        .inner_join(plans::table)
        .filter(subscriptions::id.gt(page.after()))
        .order(subscriptions::id.asc())
        .limit(fetch_limit(page))
        .select((subscriptions::all_columns, plans::usage_period))
        .into_boxed();
    if let Some(plan_id) = filter.plan_id {
        query = query.filter(subscriptions::plan_id.eq(plan_id.get()));
    }
    match filter.status {
        Some(SubscriptionStatus::Active) => {
            query = query.filter(subscriptions::active_user_id.is_not_null());
        }
        Some(SubscriptionStatus::Canceled) => {
            query = query.filter(subscriptions::active_user_id.is_null());
        }
        None => {}
    }
    let rows = query
        .load::<(SubscriptionRow, String)>(c)
        .map_err(store_error)?;
    Ok(page
        .page_from(rows, |(r, _)| r.id)
        .map(|(r, period)| r.into_domain(&period)))
}

impl SubscriptionRepository for Database {
    fn create(
        &self,
        user_id: UserId,
        plan_id: PlanId,
        now: DateTime<Utc>,
    ) -> Result<Subscription, SubscriptionError> {
        self.with_write(Change::User(user_id), |c| {
            subscription_create(c, user_id, plan_id, now)
        })?
    }

    fn change_plan(
        &self,
        user_id: UserId,
        plan_id: PlanId,
        now: DateTime<Utc>,
    ) -> Result<Subscription, SubscriptionError> {
        self.with_write(Change::User(user_id), |c| {
            subscription_change_plan(c, user_id, plan_id, now)
        })?
    }

    fn find_active(&self, user_id: UserId) -> Result<Option<Subscription>, StoreError> {
        self.with(|c| subscription_find_active(c, user_id))?
            .map_err(store_error)
    }

    fn cancel(&self, user_id: UserId, now: DateTime<Utc>) -> Result<(), SubscriptionError> {
        self.with_write(Change::User(user_id), |c| {
            subscription_cancel(c, user_id, now)
        })?
    }

    fn list(
        &self,
        filter: SubscriptionFilter,
        page: PageRequest,
    ) -> Result<Page<Subscription>, StoreError> {
        self.with(|c| subscription_list(c, filter, page))?
    }
}
