// The queries of every port, written once and compiled once per backend: this
// file is `include!`d into `backend::sqlite` and `backend::mysql`, each of
// which defines `Conn` as its connection type. What differs between the two
// goes through the `Dialect` trait.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use tollgate_domain::api_key::{ApiKey, ApiKeyError, NewApiKey};
use tollgate_domain::permission::{
    NewPermission, Permission, PermissionError, PermissionName, PermissionPatch,
};
use tollgate_domain::plan::{NewPlan, PermissionList, Plan, PlanError, PlanPatch};
use tollgate_domain::subscription::{
    Subscription, SubscriptionError, SubscriptionFilter, SubscriptionStatus,
};
use tollgate_domain::user::{NewUser, User, UserError, UserFilter, UserGuard, UserPatch};
use tollgate_domain::period::{UsagePeriod, Window};
use tollgate_domain::usage::{AccessContext, Consumed, Consumption, EventFilter, UsageEvent};
use tollgate_domain::{ApiKeyId, Page, PageRequest, PermissionId, PlanId, SubscriptionId, UserId};

use crate::connection::Dialect;
use crate::error::{is_foreign_key_violation, is_unique_violation, store_error, TxError};
use crate::rows::*;
use crate::schema::*;
use crate::statements::{AddToCounters, CounterAdd, CounterKey, EventValues, InsertEvents};
use crate::time::to_db;

/// A write transaction that changes what access checks read (keys, users,
/// plans, permissions, subscriptions): it bumps the change epoch in the same
/// transaction, so every instance's read cache learns of it.
fn change_tx<T, E, F>(c: &mut Conn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut Conn) -> Result<T, E>,
    E: From<DieselError>,
{
    c.write_tx(|c| {
        bump_epoch(c)?;
        f(c)
    })
}

/// Inside a write transaction: moves the change epoch, so that every
/// instance's read cache learns of the change. This process's cache learns
/// which epoch is its own, so that it drops only what this change touched
/// (`Database::with_write`).
fn bump_epoch(c: &mut Conn) -> QueryResult<()> {
    diesel::update(change_epoch::table.find(1))
        .set(change_epoch::epoch.eq(change_epoch::epoch + 1))
        .execute(c)?;
    crate::cache::note_bumped(change_epoch_now(c)?);
    Ok(())
}

/// The current change epoch.
pub(crate) fn change_epoch_now(c: &mut Conn) -> QueryResult<i64> {
    change_epoch::table
        .find(1)
        .select(change_epoch::epoch)
        .first(c)
}

fn fetch_limit(page: PageRequest) -> i64 {
    i64::from(page.limit()) + 1
}

// ---------------------------------------------------------------- permissions

fn permission_db_error(e: DieselError) -> PermissionError {
    if is_unique_violation(&e) {
        PermissionError::NameTaken
    } else if is_foreign_key_violation(&e) {
        PermissionError::InUse
    } else if matches!(e, DieselError::NotFound) {
        PermissionError::NotFound
    } else {
        PermissionError::Store(store_error(e))
    }
}

pub(crate) fn permission_create(
    c: &mut Conn,
    new: &NewPermission,
    now: DateTime<Utc>,
) -> Result<Permission, PermissionError> {
    change_tx(c, |c| {
        diesel::insert_into(permissions::table)
            .values(NewPermissionRow {
                name: new.name.as_str(),
                description: new.description.as_str(),
                created_at: to_db(now),
                updated_at: to_db(now),
            })
            .execute(c)?;
        let id = c.last_insert_id()?;
        permissions::table
            .find(id)
            .first::<PermissionRow>(c)
            .map(PermissionRow::into_domain)
    })
    .map_err(permission_db_error)
}

pub(crate) fn permission_get(c: &mut Conn, id: PermissionId) -> Result<Permission, PermissionError> {
    permissions::table
        .find(id.get())
        .first::<PermissionRow>(c)
        .map(PermissionRow::into_domain)
        .map_err(permission_db_error)
}

pub(crate) fn permission_list(
    c: &mut Conn,
    page: PageRequest,
) -> Result<Page<Permission>, PermissionError> {
    let rows = permissions::table
        .filter(permissions::id.gt(page.after()))
        .order(permissions::id.asc())
        .limit(fetch_limit(page))
        .load::<PermissionRow>(c)
        .map_err(permission_db_error)?;
    Ok(page.page_from(rows, |r| r.id).map(PermissionRow::into_domain))
}

pub(crate) fn permission_update(
    c: &mut Conn,
    id: PermissionId,
    patch: &PermissionPatch,
    now: DateTime<Utc>,
) -> Result<Permission, PermissionError> {
    change_tx(c, |c| {
        let changed = diesel::update(permissions::table.find(id.get()))
            .set(PermissionChanges {
                name: patch.name.as_ref().map(PermissionName::as_str),
                description: patch.description.as_ref().map(|d| d.as_str()),
                updated_at: to_db(now),
            })
            .execute(c)?;
        if changed == 0 {
            return Err(DieselError::NotFound);
        }
        permissions::table
            .find(id.get())
            .first::<PermissionRow>(c)
            .map(PermissionRow::into_domain)
    })
    .map_err(permission_db_error)
}

pub(crate) fn permission_delete(c: &mut Conn, id: PermissionId) -> Result<(), PermissionError> {
    // The foreign key from plan_permissions refuses the delete while a plan
    // grants the permission, whatever races with it.
    let deleted = change_tx(c, |c| diesel::delete(permissions::table.find(id.get())).execute(c))
        .map_err(permission_db_error)?;
    if deleted == 0 {
        return Err(PermissionError::NotFound);
    }
    Ok(())
}

pub(crate) fn permission_is_granted(c: &mut Conn, id: PermissionId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        plan_permissions::table.filter(plan_permissions::permission_id.eq(id.get())),
    ))
    .get_result(c)
}

pub(crate) fn permission_missing(
    c: &mut Conn,
    names: &[PermissionName],
) -> QueryResult<Vec<PermissionName>> {
    let known: Vec<String> = permissions::table
        .filter(permissions::name.eq_any(names.iter().map(PermissionName::as_str)))
        .select(permissions::name)
        .load(c)?;
    Ok(names
        .iter()
        .filter(|n| !known.iter().any(|k| k == n.as_str()))
        .cloned()
        .collect())
}

// ---------------------------------------------------------------------- plans

fn plan_db_error(e: DieselError) -> PlanError {
    if is_unique_violation(&e) {
        PlanError::NameTaken
    } else if is_foreign_key_violation(&e) {
        PlanError::InUse
    } else if matches!(e, DieselError::NotFound) {
        PlanError::NotFound
    } else {
        PlanError::Store(store_error(e))
    }
}

/// Permission names of the plans, in each plan's order.
fn plan_permission_names(c: &mut Conn, plan_ids: &[i64]) -> QueryResult<HashMap<i64, Vec<String>>> {
    let rows: Vec<(i64, String)> = plan_permissions::table
        .inner_join(permissions::table)
        .filter(plan_permissions::plan_id.eq_any(plan_ids))
        .order((plan_permissions::plan_id, plan_permissions::position))
        .select((plan_permissions::plan_id, permissions::name))
        .load(c)?;
    let mut by_plan: HashMap<i64, Vec<String>> = HashMap::new();
    for (plan_id, name) in rows {
        by_plan.entry(plan_id).or_default().push(name);
    }
    Ok(by_plan)
}

fn plan_load(c: &mut Conn, id: i64) -> QueryResult<Plan> {
    let row = plans::table.find(id).first::<PlanRow>(c)?;
    let mut names = plan_permission_names(c, &[id])?;
    Ok(row.into_domain(names.remove(&id).unwrap_or_default()))
}

/// Replaces the plan's permission list; a name that is not a permission aborts.
fn plan_set_permissions(
    c: &mut Conn,
    plan_id: i64,
    list: &PermissionList,
) -> Result<(), TxError<PlanError>> {
    diesel::delete(plan_permissions::table.filter(plan_permissions::plan_id.eq(plan_id)))
        .execute(c)?;
    if list.names().is_empty() {
        return Ok(());
    }
    let found: Vec<(i64, String)> = permissions::table
        .filter(permissions::name.eq_any(list.names().iter().map(PermissionName::as_str)))
        .select((permissions::id, permissions::name))
        .load(c)?;
    let mut rows = Vec::with_capacity(list.names().len());
    for (position, name) in list.names().iter().enumerate() {
        let Some((permission_id, _)) = found.iter().find(|(_, n)| n == name.as_str()) else {
            return Err(TxError::Rule(PlanError::UnknownPermission(name.clone())));
        };
        rows.push(PlanPermissionRow {
            plan_id,
            permission_id: *permission_id,
            position: position as i32,
        });
    }
    diesel::insert_into(plan_permissions::table)
        .values(&rows)
        .execute(c)?;
    Ok(())
}

pub(crate) fn plan_create(c: &mut Conn, new: &NewPlan, now: DateTime<Utc>) -> Result<Plan, PlanError> {
    change_tx(c, |c| {
        diesel::insert_into(plans::table)
            .values(NewPlanRow {
                name: new.name.as_str(),
                description: new.description.as_str(),
                usage_limit: new.usage_limit.get(),
                usage_period: new.usage_period.as_str(),
                created_at: to_db(now),
                updated_at: to_db(now),
            })
            .execute(c)?;
        let id = c.last_insert_id()?;
        plan_set_permissions(c, id, &new.permissions)?;
        Ok(plan_load(c, id)?)
    })
    .map_err(|e: TxError<PlanError>| e.into_domain(plan_db_error))
}

pub(crate) fn plan_get(c: &mut Conn, id: PlanId) -> Result<Plan, PlanError> {
    plan_load(c, id.get()).map_err(plan_db_error)
}

pub(crate) fn plan_list(c: &mut Conn, page: PageRequest) -> Result<Page<Plan>, PlanError> {
    let rows = plans::table
        .filter(plans::id.gt(page.after()))
        .order(plans::id.asc())
        .limit(fetch_limit(page))
        .load::<PlanRow>(c)
        .map_err(plan_db_error)?;
    let page = page.page_from(rows, |r| r.id);
    let ids: Vec<i64> = page.items.iter().map(|r| r.id).collect();
    let mut names = plan_permission_names(c, &ids).map_err(plan_db_error)?;
    Ok(page.map(|r| {
        let list = names.remove(&r.id).unwrap_or_default();
        r.into_domain(list)
    }))
}

pub(crate) fn plan_update(
    c: &mut Conn,
    id: PlanId,
    patch: &PlanPatch,
    now: DateTime<Utc>,
) -> Result<Plan, PlanError> {
    change_tx(c, |c| {
        let old_period: Option<String> = plans::table
            .find(id.get())
            .select(plans::usage_period)
            .first(c)
            .optional()?;
        let changed = diesel::update(plans::table.find(id.get()))
            .set(PlanChanges {
                name: patch.name.as_ref().map(|n| n.as_str()),
                description: patch.description.as_ref().map(|d| d.as_str()),
                usage_limit: patch.usage_limit.map(|l| l.get()),
                usage_period: patch.usage_period.map(|p| p.as_str()),
                updated_at: to_db(now),
            })
            .execute(c)?;
        if changed == 0 {
            return Err(TxError::Rule(PlanError::NotFound));
        }
        let period_changed = patch
            .usage_period
            .is_some_and(|p| old_period.as_deref() != Some(p.as_str()));
        if let Some(period) = patch.usage_period.filter(|_| period_changed) {
            // The subscribers' counters follow the new kind of window at
            // once, from their events in it: usage consumed in it carries over.
            rebuild_counters(c, Users::OfPlan(id.get()), period, now)?;
        }
        if let Some(list) = &patch.permissions {
            plan_set_permissions(c, id.get(), list)?;
        }
        Ok(plan_load(c, id.get())?)
    })
    .map_err(|e: TxError<PlanError>| e.into_domain(plan_db_error))
}

pub(crate) fn plan_delete(c: &mut Conn, id: PlanId) -> Result<(), PlanError> {
    change_tx(c, |c| {
        // Canceled subscriptions go with the plan; an active one (even one
        // that raced in) makes the foreign key refuse the delete.
        diesel::delete(
            subscriptions::table.filter(
                subscriptions::plan_id
                    .eq(id.get())
                    .and(subscriptions::active_user_id.is_null()),
            ),
        )
        .execute(c)?;
        let deleted = diesel::delete(plans::table.find(id.get())).execute(c)?;
        if deleted == 0 {
            return Err(TxError::Rule(PlanError::NotFound));
        }
        Ok(())
    })
    .map_err(|e: TxError<PlanError>| e.into_domain(plan_db_error))
}

pub(crate) fn plan_has_active_subscriptions(c: &mut Conn, id: PlanId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        subscriptions::table.filter(
            subscriptions::plan_id
                .eq(id.get())
                .and(subscriptions::active_user_id.is_not_null()),
        ),
    ))
    .get_result(c)
}

// ---------------------------------------------------------------------- users

fn user_db_error(e: DieselError) -> UserError {
    if is_unique_violation(&e) {
        UserError::UsernameTaken
    } else if matches!(e, DieselError::NotFound) {
        UserError::NotFound
    } else {
        UserError::Store(store_error(e))
    }
}

pub(crate) fn user_create(c: &mut Conn, new: &NewUser, now: DateTime<Utc>) -> Result<User, UserError> {
    change_tx(c, |c| {
        diesel::insert_into(users::table)
            .values(NewUserRow {
                username: new.username.as_str(),
                role: new.role.as_str(),
                status: new.status.as_str(),
                created_at: to_db(now),
                updated_at: to_db(now),
            })
            .execute(c)?;
        let id = c.last_insert_id()?;
        users::table
            .find(id)
            .first::<UserRow>(c)
            .map(UserRow::into_domain)
    })
    .map_err(user_db_error)
}

pub(crate) fn user_get(c: &mut Conn, id: UserId) -> Result<User, UserError> {
    users::table
        .find(id.get())
        .first::<UserRow>(c)
        .map(UserRow::into_domain)
        .map_err(user_db_error)
}

pub(crate) fn user_find_by_username(c: &mut Conn, username: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::username.eq(username))
        .first::<UserRow>(c)
        .optional()
        .map(|r| r.map(UserRow::into_domain))
}

pub(crate) fn user_list(
    c: &mut Conn,
    filter: UserFilter,
    page: PageRequest,
) -> Result<Page<User>, UserError> {
    let mut query = users::table
        .filter(users::id.gt(page.after()))
        .order(users::id.asc())
        .limit(fetch_limit(page))
        .into_boxed();
    if let Some(role) = filter.role {
        query = query.filter(users::role.eq(role.as_str()));
    }
    if let Some(status) = filter.status {
        query = query.filter(users::status.eq(status.as_str()));
    }
    let rows = query.load::<UserRow>(c).map_err(user_db_error)?;
    Ok(page.page_from(rows, |r| r.id).map(UserRow::into_domain))
}

/// Reads the user and the active admins in a write transaction and asks the guard.
fn user_guarded(c: &mut Conn, id: UserId, guard: UserGuard<'_>) -> Result<User, TxError<UserError>> {
    let admins = c.count_active_admins_locked()?;
    let current = users::table
        .find(id.get())
        .first::<UserRow>(c)
        .optional()?
        .ok_or(TxError::Rule(UserError::NotFound))?
        .into_domain();
    guard(&current, admins.max(0) as u64).map_err(TxError::Rule)?;
    Ok(current)
}

pub(crate) fn user_update(
    c: &mut Conn,
    id: UserId,
    patch: &UserPatch,
    now: DateTime<Utc>,
    guard: UserGuard<'_>,
) -> Result<User, UserError> {
    change_tx(c, |c| {
        user_guarded(c, id, guard)?;
        diesel::update(users::table.find(id.get()))
            .set(UserChanges {
                username: patch.username.as_ref().map(|u| u.as_str()),
                role: patch.role.map(|r| r.as_str()),
                status: patch.status.map(|s| s.as_str()),
                updated_at: to_db(now),
            })
            .execute(c)?;
        Ok(users::table
            .find(id.get())
            .first::<UserRow>(c)
            .map(UserRow::into_domain)?)
    })
    .map_err(|e: TxError<UserError>| e.into_domain(user_db_error))
}

pub(crate) fn user_delete(c: &mut Conn, id: UserId, guard: UserGuard<'_>) -> Result<(), UserError> {
    change_tx(c, |c| {
        user_guarded(c, id, guard)?;
        // Keys, subscriptions, usage counters and events go by ON DELETE CASCADE.
        diesel::delete(users::table.find(id.get())).execute(c)?;
        Ok(())
    })
    .map_err(|e: TxError<UserError>| e.into_domain(user_db_error))
}

// ------------------------------------------------------------------- api keys

fn key_db_error(e: DieselError) -> ApiKeyError {
    if is_foreign_key_violation(&e) {
        ApiKeyError::UserNotFound
    } else if matches!(e, DieselError::NotFound) {
        ApiKeyError::NotFound
    } else {
        ApiKeyError::Store(store_error(e))
    }
}

fn key_insert(c: &mut Conn, new: &NewApiKey, now: DateTime<Utc>) -> QueryResult<i64> {
    diesel::insert_into(api_keys::table)
        .values(NewApiKeyRow {
            user_id: new.user_id.get(),
            name: new.name.as_str(),
            prefix: &new.prefix,
            key_hash: new.hash.as_str(),
            created_at: to_db(now),
            expires_at: new.expires_at.map(to_db),
        })
        .execute(c)?;
    c.last_insert_id()
}

/// The user's keys that are neither revoked nor expired at `now`.
fn key_count_live(c: &mut Conn, user_id: UserId, now: DateTime<Utc>) -> QueryResult<i64> {
    api_keys::table
        .filter(api_keys::user_id.eq(user_id.get()))
        .filter(api_keys::revoked_at.is_null())
        .filter(api_keys::expires_at.is_null().or(api_keys::expires_at.gt(to_db(now))))
        .count()
        .get_result(c)
}

pub(crate) fn key_create(
    c: &mut Conn,
    new: &NewApiKey,
    now: DateTime<Utc>,
    max_live: u64,
) -> Result<ApiKey, ApiKeyError> {
    change_tx(c, |c| {
        // The user's row first: concurrent creations for this user queue
        // here, so each counts what the previous ones inserted.
        if !c.lock_user(new.user_id.get())? {
            return Err(TxError::Rule(ApiKeyError::UserNotFound));
        }
        let live = key_count_live(c, new.user_id, now)?;
        if u64::try_from(live).unwrap_or(0) >= max_live {
            return Err(TxError::Rule(ApiKeyError::TooManyKeys));
        }
        let id = key_insert(c, new, now)?;
        Ok(api_keys::table
            .find(id)
            .first::<ApiKeyRow>(c)
            .map(ApiKeyRow::into_domain)?)
    })
    .map_err(|e: TxError<ApiKeyError>| e.into_domain(key_db_error))
}

pub(crate) fn key_get(c: &mut Conn, user_id: UserId, id: ApiKeyId) -> Result<ApiKey, ApiKeyError> {
    api_keys::table
        .filter(api_keys::id.eq(id.get()).and(api_keys::user_id.eq(user_id.get())))
        .first::<ApiKeyRow>(c)
        .map(ApiKeyRow::into_domain)
        .map_err(key_db_error)
}

pub(crate) fn key_list(c: &mut Conn, user_id: UserId, page: PageRequest) -> Result<Page<ApiKey>, ApiKeyError> {
    let rows = api_keys::table
        .filter(api_keys::user_id.eq(user_id.get()))
        .filter(api_keys::id.gt(page.after()))
        .order(api_keys::id.asc())
        .limit(fetch_limit(page))
        .load::<ApiKeyRow>(c)
        .map_err(key_db_error)?;
    Ok(page.page_from(rows, |r| r.id).map(ApiKeyRow::into_domain))
}

pub(crate) fn key_revoke(
    c: &mut Conn,
    user_id: UserId,
    id: ApiKeyId,
    now: DateTime<Utc>,
) -> Result<(), ApiKeyError> {
    let mine = api_keys::table
        .filter(api_keys::id.eq(id.get()).and(api_keys::user_id.eq(user_id.get())));
    let found: i64 = mine.count().get_result(c).map_err(key_db_error)?;
    if found == 0 {
        return Err(ApiKeyError::NotFound);
    }
    // Revoking a revoked key changes nothing: no cache anywhere drops it.
    c.write_tx(|c| {
        let revoked = diesel::update(mine.filter(api_keys::revoked_at.is_null()))
            .set(api_keys::revoked_at.eq(Some(to_db(now))))
            .execute(c)?;
        if revoked > 0 {
            bump_epoch(c)?;
        }
        Ok(())
    })
    .map_err(key_db_error)
}

/// The keys (with their users) whose hashes are among `hashes`, by hash.
pub(crate) fn keys_find_by_hash(
    c: &mut Conn,
    hashes: &[&str],
) -> QueryResult<HashMap<String, (ApiKey, User)>> {
    let rows = api_keys::table
        .inner_join(users::table)
        .filter(api_keys::key_hash.eq_any(hashes))
        .load::<(ApiKeyRow, UserRow)>(c)?;
    Ok(rows
        .into_iter()
        .map(|(k, u)| (k.key_hash.clone(), (k.into_domain(), u.into_domain())))
        .collect())
}

pub(crate) fn key_replace_named(c: &mut Conn, new: &NewApiKey, now: DateTime<Utc>) -> Result<(), ApiKeyError> {
    change_tx(c, |c| {
        let exists: i64 = api_keys::table
            .filter(api_keys::key_hash.eq(new.hash.as_str()))
            .count()
            .get_result(c)?;
        diesel::update(
            api_keys::table.filter(
                api_keys::user_id
                    .eq(new.user_id.get())
                    .and(api_keys::name.eq(new.name.as_str()))
                    .and(api_keys::key_hash.ne(new.hash.as_str()))
                    .and(api_keys::revoked_at.is_null()),
            ),
        )
        .set(api_keys::revoked_at.eq(Some(to_db(now))))
        .execute(c)?;
        if exists == 0 {
            key_insert(c, new, now)?;
        }
        Ok(())
    })
    .map_err(key_db_error)
}

// -------------------------------------------------------------- subscriptions

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

fn subscription_active(c: &mut Conn, user_id: UserId) -> QueryResult<Option<Subscription>> {
    subscriptions::table
        .inner_join(plans::table)
        .filter(subscriptions::active_user_id.eq(user_id.get()))
        .select((subscriptions::all_columns, plans::usage_period))
        .first::<(SubscriptionRow, String)>(c)
        .optional()
        .map(|r| r.map(|(s, period)| s.into_domain(&period)))
}

pub(crate) fn subscription_create(
    c: &mut Conn,
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
    c: &mut Conn,
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
        Ok(after)
    })
    .map_err(subscription_db_error)
}

pub(crate) fn subscription_find_active(c: &mut Conn, user_id: UserId) -> QueryResult<Option<Subscription>> {
    subscription_active(c, user_id)
}

pub(crate) fn subscription_cancel(c: &mut Conn, user_id: UserId, now: DateTime<Utc>) -> Result<(), SubscriptionError> {
    let changed = change_tx(c, |c| {
        diesel::update(
            subscriptions::table.filter(subscriptions::active_user_id.eq(user_id.get())),
        )
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
    c: &mut Conn,
    filter: SubscriptionFilter,
    page: PageRequest,
) -> Result<Page<Subscription>, SubscriptionError> {
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
        .map_err(subscription_db_error)?;
    Ok(page
        .page_from(rows, |(r, _)| r.id)
        .map(|(r, period)| r.into_domain(&period)))
}

// ---------------------------------------------------------------------- usage

fn window_bounds(window: Window) -> (i64, i64) {
    (to_db(window.start), window.end.map(to_db).unwrap_or(i64::MAX))
}

/// The access contexts of the users among `user_ids` who have an active
/// subscription, by user id.
pub(crate) fn usage_access_contexts(
    c: &mut Conn,
    user_ids: &[i64],
) -> QueryResult<HashMap<i64, AccessContext>> {
    let found = subscriptions::table
        .inner_join(plans::table)
        .filter(subscriptions::active_user_id.eq_any(user_ids))
        .select((
            subscriptions::user_id,
            subscriptions::id,
            subscriptions::plan_id,
            subscriptions::started_at,
            plans::usage_limit,
            plans::usage_period,
        ))
        .load::<(i64, i64, i64, i64, Option<i64>, String)>(c)?;
    let mut plan_ids: Vec<i64> = found.iter().map(|row| row.2).collect();
    plan_ids.sort_unstable();
    plan_ids.dedup();
    let names = plan_permission_names(c, &plan_ids)?;
    Ok(found
        .into_iter()
        .map(|(user_id, subscription_id, plan_id, started_at, limit, period)| {
            let context = AccessContext {
                subscription_id: SubscriptionId::from_store(subscription_id),
                plan_id: PlanId::from_store(plan_id),
                started_at: crate::time::from_db(started_at),
                permissions: PermissionList::new(
                    names
                        .get(&plan_id)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .map(PermissionName::from_store),
                ),
                limit: tollgate_domain::plan::UsageLimit::parse(limit).unwrap_or_default(),
                period: parse_period(&period),
            };
            (user_id, context)
        })
        .collect())
}

/// Whose events or counters a statement reads: one user, or the active
/// subscribers of a plan. Either way one bound id.
#[derive(Debug, Clone, Copy)]
enum Users {
    One(i64),
    OfPlan(i64),
}

impl Users {
    /// The condition on `user_id`, with one `?`.
    fn sql(self) -> &'static str {
        match self {
            Self::One(_) => "user_id = ?",
            Self::OfPlan(_) => {
                "user_id IN (SELECT active_user_id FROM subscriptions WHERE plan_id = ?)"
            }
        }
    }

    fn id(self) -> i64 {
        match self {
            Self::One(id) | Self::OfPlan(id) => id,
        }
    }
}

type BoxedQuery<'a> =
    diesel::query_builder::BoxedSqlQuery<'a, <Conn as Connection>::Backend, diesel::query_builder::SqlQuery>;

/// `SELECT <select> FROM` the events of `users` in a window `<suffix>`;
/// [`bind_window`] binds its values. Where events are keyed in bulk
/// ([`Dialect::EVENTS_KEYED_IN_BULK`]) they must also be keyed (through
/// `usage_event_keys`) or in the tail above `upto` (read by id).
fn window_events_sql(select: &str, users: Users, suffix: &str) -> String {
    let users = users.sql();
    let keyed = if Conn::EVENTS_KEYED_IN_BULK {
        format!(
            " AND (id > (SELECT upto FROM usage_events_keyed) \
             OR id IN (SELECT id FROM usage_event_keys WHERE {users} AND at >= ? AND at < ?))"
        )
    } else {
        String::new()
    };
    format!("SELECT {select} FROM usage_events WHERE {users} AND at >= ? AND at < ?{keyed}{suffix}")
}

/// Binds the values of one [`window_events_sql`].
fn bind_window(query: BoxedQuery<'_>, users: Users, window: Window) -> BoxedQuery<'_> {
    use diesel::sql_types::BigInt;
    let (from, to) = window_bounds(window);
    let query = query
        .bind::<BigInt, _>(users.id())
        .bind::<BigInt, _>(from)
        .bind::<BigInt, _>(to);
    if Conn::EVENTS_KEYED_IN_BULK {
        query.bind::<BigInt, _>(users.id()).bind::<BigInt, _>(from).bind::<BigInt, _>(to)
    } else {
        query
    }
}

/// `SUM(cost)` as a BIGINT named `total`.
fn total_select() -> String {
    format!("CAST(SUM(cost) AS {}) AS total", Conn::BIGINT_CAST)
}

#[derive(QueryableByName)]
struct Seed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    part: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    permission: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    total: i64,
}

/// The units of each (user, window)'s events per permission, in one
/// statement (`UNION ALL`, one part per window): what its counters start from.
fn window_seeds(c: &mut Conn, windows: &[(i64, Window)]) -> QueryResult<Vec<Vec<(String, i64)>>> {
    let total = total_select();
    let sql = (0..windows.len())
        .map(|part| {
            let select = format!("{part} AS part, permission, {total}");
            window_events_sql(&select, Users::One(0), " GROUP BY permission")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let query = windows.iter().fold(diesel::sql_query(sql).into_boxed(), |query, &(user, window)| {
        bind_window(query, Users::One(user), window)
    });
    let mut seeds = vec![Vec::new(); windows.len()];
    for row in query.load::<Seed>(c)? {
        let slot = usize::try_from(row.part).ok().and_then(|part| seeds.get_mut(part));
        slot.ok_or(DieselError::NotFound)?.push((row.permission, row.total));
    }
    Ok(seeds)
}

/// Creates the counters of these (user, window)s that do not exist, each
/// from the user's events of its permission in the window (so usage carries
/// over whatever happened to the counters: a new window, a period-kind
/// change, a migration), and a zero row for each of `needed` (the checks'
/// permissions) without events. All the rows of a window are created
/// together: the plan-wide sum is never taken over part of them.
fn create_counters(c: &mut Conn, windows: &[(i64, Window)], needed: &[CounterKey<'_>]) -> QueryResult<()> {
    let seeds = window_seeds(c, windows)?;
    let mut rows: Vec<(CounterKey<'_>, i64)> = Vec::new();
    for (&(user, window), seeds) in windows.iter().zip(&seeds) {
        let start = to_db(window.start);
        rows.extend(seeds.iter().map(|(permission, total)| ((user, start, permission.as_str()), *total)));
    }
    for &key in needed {
        if !rows.iter().any(|(k, _)| *k == key) {
            rows.push((key, 0));
        }
    }
    c.insert_counters_if_absent(&rows)?;
    Ok(())
}

/// Rebuilds the counters of `users` for `period`, in the caller's
/// transaction: drops all of them (a day and a month window can share a
/// start, and a window not touched under another kind is stale) and creates
/// the current window's from the users' events in it. Run wherever a user's
/// period kind may change (a new subscription, a move to a plan of another
/// period, a plan's new period), so that the counters always hold the
/// current window and reports never need events.
fn rebuild_counters(c: &mut Conn, users: Users, period: UsagePeriod, now: DateTime<Utc>) -> QueryResult<()> {
    use diesel::sql_types::BigInt;

    #[derive(QueryableByName)]
    struct UserSeed {
        #[diesel(sql_type = BigInt)]
        user_id: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        permission: String,
        #[diesel(sql_type = BigInt)]
        total: i64,
    }

    diesel::sql_query(format!("DELETE FROM usage_counters WHERE {}", users.sql()))
        .bind::<BigInt, _>(users.id())
        .execute(c)?;
    let window = period.window_at(now);
    let select = format!("user_id, permission, {}", total_select());
    let sql = window_events_sql(&select, users, " GROUP BY user_id, permission");
    let seeds = bind_window(diesel::sql_query(sql).into_boxed(), users, window).load::<UserSeed>(c)?;
    let start = to_db(window.start);
    let rows: Vec<(CounterKey<'_>, i64)> = seeds
        .iter()
        .map(|s| ((s.user_id, start, s.permission.as_str()), s.total))
        .collect();
    // Bounded statements (MariaDB inserts them in one, four values a row).
    for chunk in rows.chunks(1024) {
        c.insert_counters_if_absent(chunk)?;
    }
    Ok(())
}

/// The user's counters of the window starting at `start`, by permission.
fn window_counters(c: &mut Conn, user_id: i64, start: i64) -> QueryResult<Vec<(String, i64)>> {
    usage_counters::table
        .filter(usage_counters::user_id.eq(user_id))
        .filter(usage_counters::period_start.eq(start))
        .order(usage_counters::permission.asc())
        .select((usage_counters::permission, usage_counters::used))
        .load(c)
}

/// Adds `cost` to the check's counter while the window's sum plus `cost`
/// is within `limit`; the window's new sum when it added.
fn counter_add_returning(c: &mut Conn, key: CounterKey<'_>, cost: i64, limit: Option<i64>) -> QueryResult<Option<i64>> {
    let (user, start, permission) = key;
    CounterAdd::new(user, start, permission, cost, limit).get_result::<i64>(c).optional()
}

/// Units the user consumed in the window: the sum of their counters of it.
pub(crate) fn usage_used(c: &mut Conn, user_id: UserId, window: Window) -> QueryResult<i64> {
    let rows = window_counters(c, user_id.get(), to_db(window.start))?;
    Ok(rows.iter().map(|(_, used)| used).sum())
}

/// The user's counters of the window that hold units, by permission name.
pub(crate) fn usage_used_by_permission(
    c: &mut Conn,
    user_id: UserId,
    window: Window,
) -> QueryResult<Vec<(String, i64)>> {
    let mut rows = window_counters(c, user_id.get(), to_db(window.start))?;
    rows.retain(|(_, used)| *used > 0);
    Ok(rows)
}

/// An event as the list reads it: id, user, permission, cost, at.
type EventRow = (i64, i64, String, i64, i64);

pub(crate) fn usage_events(
    c: &mut Conn,
    user_id: UserId,
    filter: &EventFilter,
    page: PageRequest,
) -> QueryResult<Page<UsageEvent>> {
    let user = user_id.get();
    let events_after = |after: i64| {
        let mut query = usage_events::table
            .filter(usage_events::user_id.eq(user))
            .filter(usage_events::id.gt(after))
            .order(usage_events::id.asc())
            .limit(fetch_limit(page))
            .select((
                usage_events::id,
                usage_events::user_id,
                usage_events::permission,
                usage_events::cost,
                usage_events::at,
            ))
            .into_boxed();
        if let Some(from) = filter.from {
            query = query.filter(usage_events::at.ge(to_db(from)));
        }
        if let Some(to) = filter.to {
            query = query.filter(usage_events::at.lt(to_db(to)));
        }
        if let Some(permission) = &filter.permission {
            query = query.filter(usage_events::permission.eq(permission.clone()));
        }
        query
    };
    let rows = if Conn::EVENTS_KEYED_IN_BULK {
        // The keyed events through their keys, then the tail by id: every
        // keyed id is at most `upto` and every tail id above it.
        c.transaction(|c| {
            let upto: i64 = usage_events_keyed::table
                .find(1)
                .select(usage_events_keyed::upto)
                .first(c)?;
            let mut keys = usage_event_keys::table
                .filter(usage_event_keys::user_id.eq(user))
                .select(usage_event_keys::id)
                .into_boxed();
            if let Some(from) = filter.from {
                keys = keys.filter(usage_event_keys::at.ge(to_db(from)));
            }
            if let Some(to) = filter.to {
                keys = keys.filter(usage_event_keys::at.lt(to_db(to)));
            }
            let mut rows = events_after(page.after())
                .filter(usage_events::id.le(upto))
                .filter(usage_events::id.eq_any(keys))
                .load::<EventRow>(c)?;
            // A full page from the keyed events needs nothing from the tail.
            if rows.len() <= page.limit() as usize {
                rows.extend(events_after(page.after().max(upto)).load::<EventRow>(c)?);
            }
            Ok::<_, DieselError>(rows)
        })?
    } else {
        events_after(page.after()).load::<EventRow>(c)?
    };
    Ok(page.page_from(rows, |r| r.0).map(|(id, user, permission, cost, at)| UsageEvent {
        id,
        user_id: UserId::from_store(user),
        permission,
        cost,
        at: crate::time::from_db(at),
    }))
}

/// Many checks in ONE transaction (the batching writer's unit): each keeps
/// its own conditional `UPDATE`, so the database decides every grant, and one
/// commit makes all of them and their events durable. Checks run in
/// (user, window, permission) order, so concurrent batches of other
/// instances lock counters in the same order.
pub(crate) fn usage_consume_batch(c: &mut Conn, items: &[Consumption]) -> QueryResult<Vec<Consumed>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| counter_key(&items[a]).cmp(&counter_key(&items[b])));
    c.write_tx(|c| {
        let results = if Conn::IN_PROCESS {
            consume_one_by_one(c, items, &order)?
        } else {
            consume_locked(c, items, &order)?
        };
        let event = |k: &Consumption| {
            (
                usage_events::user_id.eq(k.user_id.get()),
                usage_events::subscription_id.eq(k.subscription_id.get()),
                usage_events::permission.eq(k.permission.as_str().to_owned()),
                usage_events::cost.eq(k.cost.get()),
                usage_events::at.eq(to_db(k.at)),
            )
        };
        let granted = order
            .iter()
            .filter(|&&i| matches!(results[i], Consumed::Granted { .. }))
            .map(|&i| &items[i]);
        if Conn::IN_PROCESS {
            // One cached single-row statement per event beats a multi-row
            // statement of a new shape (and a new parse) per batch size.
            for k in granted {
                diesel::insert_into(usage_events::table).values(event(k)).execute(c)?;
            }
        } else {
            let events: Vec<EventValues<'_>> = granted
                .map(|k| EventValues {
                    user_id: k.user_id.get(),
                    subscription_id: k.subscription_id.get(),
                    permission: k.permission.as_str(),
                    cost: k.cost.get(),
                    at: to_db(k.at),
                })
                .collect();
            if !events.is_empty() {
                InsertEvents { events: &events }.execute(c)?;
            }
        }
        Ok(results)
    })
}

/// The events not keyed yet ([`Dialect::EVENTS_KEYED_IN_BULK`]), oldest
/// first, at most `limit`: what the batching writer keys next.
pub(crate) fn event_tail(c: &mut Conn, limit: i64) -> QueryResult<EventTail> {
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
    Ok(EventTail { upto, generation, keys })
}

/// Writes `keys` (sorted, so that each leaf of the keys takes many) in one
/// transaction; with `done`, moves `upto` past the tail they came from,
/// unless an event was deleted or another writer moved it since the tail
/// was read. A key already there is left as it is, so a pass that stopped
/// halfway (a crash, another instance keying the same tail) does no harm.
pub(crate) fn key_events(c: &mut Conn, keys: &[EventKey], done: Option<&EventTail>) -> QueryResult<()> {
    c.write_tx(|c| {
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

/// A check's counter: (user, window start, permission).
fn counter_key(k: &Consumption) -> CounterKey<'_> {
    (k.user_id.get(), to_db(k.window.start), k.permission.as_str())
}

/// A window's identity: (user, window start).
fn window_key(k: &Consumption) -> (i64, i64) {
    (k.user_id.get(), to_db(k.window.start))
}

/// The distinct users and the distinct window starts of the checks, sorted:
/// what `lock_counters` takes.
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

/// SQLite (in process, statements cost no round trip): each check's
/// `UPDATE ... RETURNING` answers its own result at once.
fn consume_one_by_one(c: &mut Conn, items: &[Consumption], order: &[usize]) -> QueryResult<Vec<Consumed>> {
    let mut results = vec![Consumed::Exhausted { used: 0 }; items.len()];
    for &i in order {
        let k = &items[i];
        let key = counter_key(k);
        let (user, start, permission) = key;
        let (cost, limit) = (k.cost.get(), k.limit);
        let mut added = counter_add_returning(c, key, cost, limit)?;
        if added.is_none() {
            let rows = window_counters(c, user, start)?;
            if rows.iter().any(|(p, _)| p == permission) {
                results[i] = Consumed::Exhausted { used: rows.iter().map(|(_, u)| u).sum() };
                continue;
            }
            create_counters(c, &[(user, k.window)], &[key])?;
            added = counter_add_returning(c, key, cost, limit)?;
        }
        results[i] = match added {
            Some(used) => Consumed::Granted { used },
            None => Consumed::Exhausted {
                used: window_counters(c, user, start)?.iter().map(|(_, u)| u).sum(),
            },
        };
    }
    Ok(results)
}

/// MariaDB (a round trip per statement, no `UPDATE ... RETURNING`): every
/// counter of the batch's users in its windows read and locked in ONE
/// statement (`FOR UPDATE`), every check decided in order on its window's
/// sum, then ONE `UPDATE` adds what was granted to each permission's row.
/// The locks hold until the commit, so no other writer (of this or another
/// instance) moves a counter between the read and the write: the decisions
/// are as exact as one conditional `UPDATE` per check, for four statements
/// a batch instead of one or two per check.
fn consume_locked(c: &mut Conn, items: &[Consumption], order: &[usize]) -> QueryResult<Vec<Consumed>> {
    let checks: Vec<&Consumption> = order.iter().map(|&i| &items[i]).collect();
    let (users, starts) = users_and_starts(&checks);
    type Windows = HashMap<(i64, i64), HashMap<String, i64>>;
    fn keep(rows: Vec<(i64, i64, String, i64)>, used: &mut Windows) {
        for (user, start, permission, value) in rows {
            used.entry((user, start)).or_default().entry(permission).or_insert(value);
        }
    }
    let mut used = Windows::new();
    keep(c.lock_counters(&users, &starts)?, &mut used);
    // Checks whose permission has no counter yet (all of a window's right
    // after a start or a period boundary): their windows' counters are
    // created together, the users locked first so that concurrent creators
    // wait, then locked with one statement.
    let mut missing: Vec<&Consumption> = checks
        .iter()
        .copied()
        .filter(|k| !used.get(&window_key(k)).is_some_and(|rows| rows.contains_key(k.permission.as_str())))
        .collect();
    if !missing.is_empty() {
        missing.dedup_by_key(|k| counter_key(k));
        let (users, starts) = users_and_starts(&missing);
        c.lock_users(&users)?;
        let mut windows: Vec<(i64, Window)> = missing.iter().map(|k| (k.user_id.get(), k.window)).collect();
        windows.dedup_by_key(|(user, window)| (*user, window.start));
        let needed: Vec<CounterKey<'_>> = missing.iter().map(|k| counter_key(k)).collect();
        create_counters(c, &windows, &needed)?;
        keep(c.lock_counters(&users, &starts)?, &mut used);
    }
    let mut sums: HashMap<(i64, i64), i64> = used
        .iter()
        .map(|(window, rows)| (*window, rows.values().sum()))
        .collect();
    let mut results = vec![Consumed::Exhausted { used: 0 }; items.len()];
    let mut added: Vec<(CounterKey<'_>, i64)> = Vec::new();
    for &i in order {
        let k = &items[i];
        let key = counter_key(k);
        let current = sums.get_mut(&window_key(k)).ok_or(DieselError::NotFound)?;
        let limit = k.limit.unwrap_or(i64::MAX);
        results[i] = match current.checked_add(k.cost.get()).filter(|&n| n <= limit) {
            Some(n) => {
                *current = n;
                match added.last_mut() {
                    Some((row, sum)) if *row == key => *sum += k.cost.get(),
                    _ => added.push((key, k.cost.get())),
                }
                Consumed::Granted { used: n }
            }
            None => Consumed::Exhausted { used: *current },
        };
    }
    if !added.is_empty() {
        // Every counter was locked above, so each row matches.
        if AddToCounters::new(&added).execute(c)? < added.len() {
            return Err(DieselError::NotFound);
        }
    }
    Ok(results)
}

/// Whether a failed batch may be run again as it is.
pub(crate) fn batch_is_retryable(e: &DieselError) -> bool {
    <Conn as Dialect>::is_retryable(e)
}
