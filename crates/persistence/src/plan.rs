//! Plans and the permissions they grant: rows, queries and the
//! [`PlanRepository`] port.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use std::collections::HashMap;

use tollgate_domain::period::UsagePeriod;
use tollgate_domain::permission::PermissionName;
use tollgate_domain::plan::{
    NewPlan, PermissionList, Plan, PlanDescription, PlanError, PlanName, PlanPatch, PlanRepository,
    UsageLimit,
};
use tollgate_domain::{Page, PageRequest, PlanId, StoreError};

use crate::usage::{rebuild_counters, Users};

use crate::cache::Change;
use crate::connection::DbConnection;
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
}

impl PlanRow {
    pub fn into_domain(self, permission_names: Vec<String>) -> Plan {
        Plan {
            id: PlanId::from_store(self.id),
            name: PlanName::from_store(self.name),
            description: PlanDescription::from_store(self.description),
            permissions: PermissionList::new(
                permission_names.into_iter().map(PermissionName::from_store),
            ),
            usage_limit: UsageLimit::parse(self.usage_limit).unwrap_or_default(),
            usage_period: parse_period(&self.usage_period),
            created_at: from_db(self.created_at),
            updated_at: from_db(self.updated_at),
        }
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
}

#[derive(AsChangeset)]
#[diesel(table_name = plans)]
pub(crate) struct PlanChanges<'a> {
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub usage_limit: Option<Option<i64>>,
    pub usage_period: Option<&'a str>,
    pub updated_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = plan_permissions)]
pub(crate) struct PlanPermissionRow {
    pub plan_id: i64,
    pub permission_id: i64,
    pub position: i32,
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

/// Permission names of the plans, in each plan's order.
pub(crate) fn plan_permission_names(
    c: &mut DbConnection,
    plan_ids: &[i64],
) -> QueryResult<HashMap<i64, Vec<String>>> {
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

fn plan_load(c: &mut DbConnection, id: i64) -> QueryResult<Plan> {
    let row = plans::table.find(id).first::<PlanRow>(c)?;
    let mut names = plan_permission_names(c, &[id])?;
    Ok(row.into_domain(names.remove(&id).unwrap_or_default()))
}

/// Replaces the plan's permission list; a name that is not a permission aborts.
fn plan_set_permissions(
    c: &mut DbConnection,
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
    // A multi-row INSERT, which Diesel builds per backend.
    let insert = diesel::insert_into(plan_permissions::table).values(&rows);
    match c {
        DbConnection::Sqlite(c) => insert.execute(c)?,
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(c) => insert.execute(c)?,
    };
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
            })
            .execute(c)?;
        let id = c.last_insert_id()?;
        plan_set_permissions(c, id, &new.permissions)?;
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
    let mut names = plan_permission_names(c, &ids).map_err(store_error)?;
    Ok(page.map(|r| {
        let list = names.remove(&r.id).unwrap_or_default();
        r.into_domain(list)
    }))
}

pub(crate) fn plan_update(
    c: &mut DbConnection,
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
