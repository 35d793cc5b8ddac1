//! Users: rows, queries and the [`UserRepository`] port.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use tollgate_domain::user::{
    NewUser, Role, User, UserError, UserFilter, UserGuard, UserPatch, UserRepository, UserStatus,
    Username,
};
use tollgate_domain::{Page, PageRequest, StoreError, UserId};

use crate::cache::Change;
use crate::connection::DbConnection;
use crate::epoch::change_tx;
use crate::error::{is_unique_violation, store_error, TxError};
use crate::schema::*;
use crate::time::{from_db, to_db};
use crate::{fetch_limit, Database};

#[derive(Debug, Clone, Queryable)]
pub(crate) struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRow {
    pub fn into_domain(self) -> User {
        User {
            id: UserId::from_store(self.id),
            username: Username::from_store(self.username),
            role: Role::parse(&self.role).unwrap_or_default(),
            status: UserStatus::parse(&self.status).unwrap_or(UserStatus::Suspended),
            created_at: from_db(self.created_at),
            updated_at: from_db(self.updated_at),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub(crate) struct NewUserRow<'a> {
    pub username: &'a str,
    pub role: &'a str,
    pub status: &'a str,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(AsChangeset)]
#[diesel(table_name = users)]
pub(crate) struct UserChanges<'a> {
    pub username: Option<&'a str>,
    pub role: Option<&'a str>,
    pub status: Option<&'a str>,
    pub updated_at: i64,
}

fn user_db_error(e: DieselError) -> UserError {
    if is_unique_violation(&e) {
        UserError::UsernameTaken
    } else if matches!(e, DieselError::NotFound) {
        UserError::NotFound
    } else {
        UserError::Store(store_error(e))
    }
}

pub(crate) fn user_create(
    c: &mut DbConnection,
    new: &NewUser,
    now: DateTime<Utc>,
) -> Result<User, UserError> {
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

pub(crate) fn user_get(c: &mut DbConnection, id: UserId) -> Result<User, UserError> {
    users::table
        .find(id.get())
        .first::<UserRow>(c)
        .map(UserRow::into_domain)
        .map_err(user_db_error)
}

pub(crate) fn user_find_by_username(
    c: &mut DbConnection,
    username: &str,
) -> QueryResult<Option<User>> {
    users::table
        .filter(users::username.eq(username))
        .first::<UserRow>(c)
        .optional()
        .map(|r| r.map(UserRow::into_domain))
}

pub(crate) fn user_list(
    c: &mut DbConnection,
    filter: UserFilter,
    page: PageRequest,
) -> Result<Page<User>, StoreError> {
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
    let rows = query.load::<UserRow>(c).map_err(store_error)?;
    Ok(page.page_from(rows, |r| r.id).map(UserRow::into_domain))
}

/// Inside a write transaction: the number of active admins, read so that
/// concurrent changes of admins wait until this transaction ends (SQLite's
/// `BEGIN IMMEDIATE` already holds the database's single write lock).
fn count_active_admins_locked(c: &mut DbConnection) -> QueryResult<i64> {
    let admins = users::table.filter(users::role.eq("admin").and(users::status.eq("active")));
    match c {
        DbConnection::Sqlite(c) => admins.count().get_result(c),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(c) => {
            let ids: Vec<i64> = admins.select(users::id).for_update().load(c)?;
            Ok(i64::try_from(ids.len()).unwrap_or(i64::MAX))
        }
    }
}

/// Inside a write transaction: whether the user exists, holding their row
/// so that concurrent writers of that user's keys wait until this
/// transaction ends (on SQLite, the write lock already does).
pub(crate) fn lock_user(c: &mut DbConnection, user_id: i64) -> QueryResult<bool> {
    let user = users::table.find(user_id);
    match c {
        DbConnection::Sqlite(c) => user.count().get_result::<i64>(c).map(|n| n > 0),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(c) => user
            .select(users::id)
            .for_update()
            .first::<i64>(c)
            .optional()
            .map(|found| found.is_some()),
    }
}

/// Reads the user and the active admins in a write transaction and asks the guard.
fn user_guarded(
    c: &mut DbConnection,
    id: UserId,
    guard: UserGuard<'_>,
) -> Result<User, TxError<UserError>> {
    let admins = count_active_admins_locked(c)?;
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
    c: &mut DbConnection,
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

pub(crate) fn user_delete(
    c: &mut DbConnection,
    id: UserId,
    guard: UserGuard<'_>,
) -> Result<(), UserError> {
    change_tx(c, |c| {
        user_guarded(c, id, guard)?;
        // Keys, subscriptions, usage counters and events go by ON DELETE CASCADE.
        diesel::delete(users::table.find(id.get())).execute(c)?;
        Ok(())
    })
    .map_err(|e: TxError<UserError>| e.into_domain(user_db_error))
}

impl UserRepository for Database {
    fn create(&self, new: &NewUser, now: DateTime<Utc>) -> Result<User, UserError> {
        self.with_write(Change::NothingCached, |c| user_create(c, new, now))?
    }

    fn get(&self, id: UserId) -> Result<User, UserError> {
        self.with(|c| user_get(c, id))?
    }

    fn find_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        self.with(|c| user_find_by_username(c, username.as_str()))?
            .map_err(store_error)
    }

    fn list(&self, filter: UserFilter, page: PageRequest) -> Result<Page<User>, StoreError> {
        self.with(|c| user_list(c, filter, page))?
    }

    fn update<'a>(
        &self,
        id: UserId,
        patch: &UserPatch,
        now: DateTime<Utc>,
        guard: UserGuard<'a>,
    ) -> Result<User, UserError> {
        self.with_write(Change::User(id), |c| user_update(c, id, patch, now, guard))?
    }

    fn delete<'a>(&self, id: UserId, guard: UserGuard<'a>) -> Result<(), UserError> {
        self.with_write(Change::User(id), |c| user_delete(c, id, guard))?
    }
}
