//! Plans and the permissions they grant: rows, queries and the
//! [`PlanRepository`] port.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use std::collections::HashMap;

use tollgate_domain::period::UsagePeriod;
use tollgate_domain::permission::PermissionName;
use tollgate_domain::plan::{
    NewPlan, PermissionLimit, PermissionLimits, PermissionList, Plan, PlanDescription, PlanError,
    PlanName, PlanPatch, PlanRepository, RateLimit, UsageLimit,
};
use tollgate_domain::{Page, PageRequest, PlanId, StoreError};

use crate::usage::{rebuild_counters, rebuild_permission_counters, Users};

use crate::cache::Change;
use crate::connection::{on_backend, DbConnection};
use crate::epoch::change_tx;
use crate::error::{is_foreign_key_violation, is_unique_violation, store_error, TxError};
use crate::schema::*;
use crate::time::{from_db, to_db};
use crate::{fetch_limit, Database};

#[derive(Debug, Queryable)]
pub(crate) struct PlanRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub usage_limit: Option<i64>,
    pub usage_period: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub rate_units: Option<i64>,
    pub rate_per_seconds: Option<i64>,
}

impl PlanRow {
    pub fn into_domain(self, grants: Grants) -> Plan {
        Plan {
            id: PlanId::from_store(self.id),
            name: PlanName::from_store(self.name),
            description: PlanDescription::from_store(self.description),
            permissions: grants.permissions(),
            usage_limit: UsageLimit::parse(self.usage_limit).unwrap_or_default(),
            usage_period: parse_period(&self.usage_period),
            permission_limits: grants.limits(),
            rate_limit: rate_limit(self.rate_units, self.rate_per_seconds),
            created_at: from_db(self.created_at),
            updated_at: from_db(self.updated_at),
        }
    }
}

/// The rate limit of a plan row's two columns (both set, or none).
pub(crate) fn rate_limit(units: Option<i64>, per_seconds: Option<i64>) -> Option<RateLimit> {
    RateLimit::parse(units?, per_seconds?).ok()
}

/// A plan's permissions in the plan's order, each with its own quota if it
/// has one: what its `plan_permissions` rows hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grants(Vec<(String, Option<i64>, Option<String>)>);

impl Grants {
    pub(crate) fn permissions(&self) -> PermissionList {
        PermissionList::new(
            self.0
                .iter()
                .map(|(name, _, _)| PermissionName::from_store(name.clone())),
        )
    }

    pub(crate) fn limits(&self) -> PermissionLimits {
        PermissionLimits::new(self.0.iter().filter_map(|(name, units, period)| {
            let limit = PermissionLimit::parse(
                (*units)?,
                parse_period(period.as_deref().unwrap_or("month")),
            )
            .ok()?;
            Some((PermissionName::from_store(name.clone()), limit))
        }))
    }
}

pub(crate) fn parse_period(s: &str) -> UsagePeriod {
    UsagePeriod::parse(s).unwrap_or_default()
}

#[derive(Insertable)]
#[diesel(table_name = plans)]
pub(crate) struct NewPlanRow<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub usage_limit: Option<i64>,
    pub usage_period: &'a str,
    pub created_at: i64,
    pub updated_at: i64,
    pub rate_units: Option<i64>,
    pub rate_per_seconds: Option<i64>,
}

#[derive(AsChangeset)]
#[diesel(table_name = plans)]
pub(crate) struct PlanChanges<'a> {
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub usage_limit: Option<Option<i64>>,
    pub usage_period: Option<&'a str>,
    pub updated_at: i64,
    pub rate_units: Option<Option<i64>>,
    pub rate_per_seconds: Option<Option<i64>>,
}

#[derive(Insertable)]
#[diesel(table_name = plan_permissions)]
pub(crate) struct PlanPermissionRow {
    pub plan_id: i64,
    pub permission_id: i64,
    pub position: i32,
    pub limit_units: Option<i64>,
    pub limit_period: Option<&'static str>,
}

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

/// The permissions (with their quotas) of the plans, in each plan's order.
pub(crate) fn plan_grants(
    c: &mut DbConnection,
    plan_ids: &[i64],
) -> QueryResult<HashMap<i64, Grants>> {
    type Row = (i64, String, Option<i64>, Option<String>);
    let rows: Vec<Row> = plan_permissions::table
        .inner_join(permissions::table)
        .filter(plan_permissions::plan_id.eq_any(plan_ids))
        .order((plan_permissions::plan_id, plan_permissions::position))
        .select((
            plan_permissions::plan_id,
            permissions::name,
            plan_permissions::limit_units,
            plan_permissions::limit_period,
        ))
        .load(c)?;
    let mut by_plan: HashMap<i64, Grants> = HashMap::new();
    for (plan_id, name, units, period) in rows {
        by_plan
            .entry(plan_id)
            .or_default()
            .0
            .push((name, units, period));
    }
    Ok(by_plan)
}

fn plan_load(c: &mut DbConnection, id: i64) -> QueryResult<Plan> {
    let row = plans::table.find(id).first::<PlanRow>(c)?;
    let mut grants = plan_grants(c, &[id])?;
    Ok(row.into_domain(grants.remove(&id).unwrap_or_default()))
}

/// Replaces the plan's permission list and their quotas; a name that is not
/// a permission aborts.
fn plan_set_permissions(
    c: &mut DbConnection,
    plan_id: i64,
    list: &PermissionList,
    limits: &PermissionLimits,
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
        let own = limits.get(name.as_str());
        rows.push(PlanPermissionRow {
            plan_id,
            permission_id: *permission_id,
            position: position as i32,
            limit_units: own.map(|l| l.usage_limit),
            limit_period: own.map(|l| l.usage_period.as_str()),
        });
    }
    // A multi-row INSERT, which Diesel builds per backend.
    let insert = diesel::insert_into(plan_permissions::table).values(&rows);
    on_backend!(c, |conn| insert.execute(conn))?;
    Ok(())
}

pub(crate) fn plan_create(
    c: &mut DbConnection,
    new: &NewPlan,
    now: DateTime<Utc>,
) -> Result<Plan, PlanError> {
    change_tx(c, |c| {
        diesel::insert_into(plans::table)
            .values(NewPlanRow {
                name: new.name.as_str(),
                description: new.description.as_str(),
                usage_limit: new.usage_limit.get(),
                usage_period: new.usage_period.as_str(),
                created_at: to_db(now),
                updated_at: to_db(now),
                rate_units: new.rate_limit.map(RateLimit::units),
                rate_per_seconds: new.rate_limit.map(RateLimit::per_seconds),
            })
            .execute(c)?;
        let id = c.last_insert_id()?;
        plan_set_permissions(c, id, &new.permissions, &new.permission_limits)?;
        Ok(plan_load(c, id)?)
    })
    .map_err(|e: TxError<PlanError>| e.into_domain(plan_db_error))
}

pub(crate) fn plan_get(c: &mut DbConnection, id: PlanId) -> Result<Plan, PlanError> {
    plan_load(c, id.get()).map_err(plan_db_error)
}

pub(crate) fn plan_list(c: &mut DbConnection, page: PageRequest) -> Result<Page<Plan>, StoreError> {
    let rows = plans::table
        .filter(plans::id.gt(page.after()))
        .order(plans::id.asc())
        .limit(fetch_limit(page))
        .load::<PlanRow>(c)
        .map_err(store_error)?;
    let page = page.page_from(rows, |r| r.id);
    let ids: Vec<i64> = page.items.iter().map(|r| r.id).collect();
    let mut grants = plan_grants(c, &ids).map_err(store_error)?;
    Ok(page.map(|r| {
        let of_plan = grants.remove(&r.id).unwrap_or_default();
        r.into_domain(of_plan)
    }))
}

pub(crate) fn plan_update(
    c: &mut DbConnection,
    id: PlanId,
    patch: &PlanPatch,
    now: DateTime<Utc>,
) -> Result<Plan, PlanError> {
    change_tx(c, |c| {
        let before = plan_load(c, id.get()).optional()?;
        let old_period = before.as_ref().map(|p| p.usage_period.as_str().to_owned());
        let changed = diesel::update(plans::table.find(id.get()))
            .set(PlanChanges {
                name: patch.name.as_ref().map(|n| n.as_str()),
                description: patch.description.as_ref().map(|d| d.as_str()),
                usage_limit: patch.usage_limit.map(|l| l.get()),
                usage_period: patch.usage_period.map(|p| p.as_str()),
                updated_at: to_db(now),
                rate_units: patch.rate_limit.map(|r| r.map(RateLimit::units)),
                rate_per_seconds: patch.rate_limit.map(|r| r.map(RateLimit::per_seconds)),
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
        if patch.permissions.is_some() || patch.permission_limits.is_some() {
            let before = before.ok_or(TxError::Rule(PlanError::NotFound))?;
            let list = patch.permissions.as_ref().unwrap_or(&before.permissions);
            let limits = patch
                .permission_limits
                .as_ref()
                .unwrap_or(&before.permission_limits);
            // A limit can only stay on a permission the plan keeps.
            let kept = PermissionLimits::new(
                limits
                    .iter()
                    .filter(|(name, _)| list.contains(name.as_str()))
                    .map(|(name, limit)| (name.clone(), *limit)),
            );
            plan_set_permissions(c, id.get(), list, &kept)?;
            if kept != before.permission_limits {
                // The subscribers' permission counters start from their
                // events in the windows of the new quotas.
                rebuild_permission_counters(c, Users::OfPlan(id.get()), &kept, now)?;
            }
        }
        Ok(plan_load(c, id.get())?)
    })
    .map_err(|e: TxError<PlanError>| e.into_domain(plan_db_error))
}

pub(crate) fn plan_delete(c: &mut DbConnection, id: PlanId) -> Result<(), PlanError> {
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

pub(crate) fn plan_has_active_subscriptions(c: &mut DbConnection, id: PlanId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        subscriptions::table.filter(
            subscriptions::plan_id
                .eq(id.get())
                .and(subscriptions::active_user_id.is_not_null()),
        ),
    ))
    .get_result(c)
}

impl PlanRepository for Database {
    fn create(&self, new: &NewPlan, now: DateTime<Utc>) -> Result<Plan, PlanError> {
        self.with_write(Change::NothingCached, |c| plan_create(c, new, now))?
    }

    fn get(&self, id: PlanId) -> Result<Plan, PlanError> {
        self.with(|c| plan_get(c, id))?
    }

    fn list(&self, page: PageRequest) -> Result<Page<Plan>, StoreError> {
        self.with(|c| plan_list(c, page))?
    }

    fn update(&self, id: PlanId, patch: &PlanPatch, now: DateTime<Utc>) -> Result<Plan, PlanError> {
        self.with_write(Change::Plan(id), |c| plan_update(c, id, patch, now))?
    }

    fn delete(&self, id: PlanId) -> Result<(), PlanError> {
        self.with_write(Change::Plan(id), |c| plan_delete(c, id))?
    }

    fn has_active_subscriptions(&self, id: PlanId) -> Result<bool, StoreError> {
        self.with(|c| plan_has_active_subscriptions(c, id))?
            .map_err(store_error)
    }
}
