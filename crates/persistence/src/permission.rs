//! Permissions: their rows, queries and the [`PermissionRepository`] port.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use tollgate_domain::permission::{
    NewPermission, Permission, PermissionDescription, PermissionError, PermissionName,
    PermissionPatch, PermissionRepository,
};
use tollgate_domain::{Page, PageRequest, PermissionId, StoreError};

use crate::cache::Change;
use crate::connection::DbConnection;
use crate::epoch::change_tx;
use crate::error::{is_foreign_key_violation, is_unique_violation, store_error};
use crate::schema::*;
use crate::time::{from_db, to_db};
use crate::{fetch_limit, Database};

#[derive(Debug, Queryable)]
pub(crate) struct PermissionRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl PermissionRow {
    pub fn into_domain(self) -> Permission {
        Permission {
            id: PermissionId::from_store(self.id),
            name: PermissionName::from_store(self.name),
            description: PermissionDescription::from_store(self.description),
            created_at: from_db(self.created_at),
            updated_at: from_db(self.updated_at),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = permissions)]
pub(crate) struct NewPermissionRow<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(AsChangeset)]
#[diesel(table_name = permissions)]
pub(crate) struct PermissionChanges<'a> {
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub updated_at: i64,
}

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
    c: &mut DbConnection,
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

pub(crate) fn permission_get(
    c: &mut DbConnection,
    id: PermissionId,
) -> Result<Permission, PermissionError> {
    permissions::table
        .find(id.get())
        .first::<PermissionRow>(c)
        .map(PermissionRow::into_domain)
        .map_err(permission_db_error)
}

pub(crate) fn permission_list(
    c: &mut DbConnection,
    page: PageRequest,
) -> Result<Page<Permission>, StoreError> {
    let rows = permissions::table
        .filter(permissions::id.gt(page.after()))
        .order(permissions::id.asc())
        .limit(fetch_limit(page))
        .load::<PermissionRow>(c)
        .map_err(store_error)?;
    Ok(page
        .page_from(rows, |r| r.id)
        .map(PermissionRow::into_domain))
}

pub(crate) fn permission_update(
    c: &mut DbConnection,
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

pub(crate) fn permission_delete(
    c: &mut DbConnection,
    id: PermissionId,
) -> Result<(), PermissionError> {
    // The foreign key from plan_permissions refuses the delete while a plan
    // grants the permission, whatever races with it.
    let deleted = change_tx(c, |c| {
        diesel::delete(permissions::table.find(id.get())).execute(c)
    })
    .map_err(permission_db_error)?;
    if deleted == 0 {
        return Err(PermissionError::NotFound);
    }
    Ok(())
}

pub(crate) fn permission_is_granted(c: &mut DbConnection, id: PermissionId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        plan_permissions::table.filter(plan_permissions::permission_id.eq(id.get())),
    ))
    .get_result(c)
}

pub(crate) fn permission_missing(
    c: &mut DbConnection,
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

impl PermissionRepository for Database {
    fn create(
        &self,
        new: &NewPermission,
        now: DateTime<Utc>,
    ) -> Result<Permission, PermissionError> {
        self.with_write(Change::NothingCached, |c| permission_create(c, new, now))?
    }

    fn get(&self, id: PermissionId) -> Result<Permission, PermissionError> {
        self.with(|c| permission_get(c, id))?
    }

    fn list(&self, page: PageRequest) -> Result<Page<Permission>, StoreError> {
        self.with(|c| permission_list(c, page))?
    }

    fn update(
        &self,
        id: PermissionId,
        patch: &PermissionPatch,
        now: DateTime<Utc>,
    ) -> Result<Permission, PermissionError> {
        self.with_write(Change::All, |c| permission_update(c, id, patch, now))?
    }

    fn delete(&self, id: PermissionId) -> Result<(), PermissionError> {
        self.with_write(Change::NothingCached, |c| permission_delete(c, id))?
    }

    fn is_granted(&self, id: PermissionId) -> Result<bool, StoreError> {
        self.with(|c| permission_is_granted(c, id))?
            .map_err(store_error)
    }

    fn missing(&self, names: &[PermissionName]) -> Result<Vec<PermissionName>, StoreError> {
        self.with(|c| permission_missing(c, names))?
            .map_err(store_error)
    }
}
