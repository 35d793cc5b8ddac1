//! API keys: rows, queries and the [`ApiKeyRepository`] port.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use std::collections::HashMap;
use std::sync::Arc;

use tollgate_domain::api_key::{
    ApiKey, ApiKeyError, ApiKeyName, ApiKeyRepository, KeyAndUser, KeyHash, NewApiKey,
};
use tollgate_domain::pending::{self, Pending};
use tollgate_domain::{ApiKeyId, Page, PageRequest, StoreError, UserId};

use crate::user::UserRow;

use crate::cache::Change;
use crate::connection::DbConnection;
use crate::epoch::{bump_epoch, change_tx};
use crate::error::{is_foreign_key_violation, store_error, TxError};
use crate::schema::*;
use crate::time::{from_db, to_db};
use crate::{fetch_limit, Database};

/// No `Debug`: the row holds a key hash, which must never reach a log.
#[derive(Queryable)]
pub(crate) struct ApiKeyRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl ApiKeyRow {
    pub fn into_domain(self) -> ApiKey {
        ApiKey {
            id: ApiKeyId::from_store(self.id),
            user_id: UserId::from_store(self.user_id),
            name: ApiKeyName::from_store(self.name),
            prefix: self.prefix,
            created_at: from_db(self.created_at),
            expires_at: self.expires_at.map(from_db),
            revoked_at: self.revoked_at.map(from_db),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
pub(crate) struct NewApiKeyRow<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a str,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

fn key_db_error(e: DieselError) -> ApiKeyError {
    if is_foreign_key_violation(&e) {
        ApiKeyError::UserNotFound
    } else if matches!(e, DieselError::NotFound) {
        ApiKeyError::NotFound
    } else {
        ApiKeyError::Store(store_error(e))
    }
}

fn key_insert(c: &mut DbConnection, new: &NewApiKey, now: DateTime<Utc>) -> QueryResult<i64> {
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
fn key_count_live(c: &mut DbConnection, user_id: UserId, now: DateTime<Utc>) -> QueryResult<i64> {
    api_keys::table
        .filter(api_keys::user_id.eq(user_id.get()))
        .filter(api_keys::revoked_at.is_null())
        .filter(
            api_keys::expires_at
                .is_null()
                .or(api_keys::expires_at.gt(to_db(now))),
        )
        .count()
        .get_result(c)
}

pub(crate) fn key_create(
    c: &mut DbConnection,
    new: &NewApiKey,
    now: DateTime<Utc>,
    max_live: u64,
) -> Result<ApiKey, ApiKeyError> {
    change_tx(c, |c| {
        // The user's row first: concurrent creations for this user queue
        // here, so each counts what the previous ones inserted.
        if !crate::user::lock_user(c, new.user_id.get())? {
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

pub(crate) fn key_get(
    c: &mut DbConnection,
    user_id: UserId,
    id: ApiKeyId,
) -> Result<ApiKey, ApiKeyError> {
    api_keys::table
        .filter(
            api_keys::id
                .eq(id.get())
                .and(api_keys::user_id.eq(user_id.get())),
        )
        .first::<ApiKeyRow>(c)
        .map(ApiKeyRow::into_domain)
        .map_err(key_db_error)
}

pub(crate) fn key_list(
    c: &mut DbConnection,
    user_id: UserId,
    page: PageRequest,
) -> Result<Page<ApiKey>, StoreError> {
    let rows = api_keys::table
        .filter(api_keys::user_id.eq(user_id.get()))
        .filter(api_keys::id.gt(page.after()))
        .order(api_keys::id.asc())
        .limit(fetch_limit(page))
        .load::<ApiKeyRow>(c)
        .map_err(store_error)?;
    Ok(page.page_from(rows, |r| r.id).map(ApiKeyRow::into_domain))
}

pub(crate) fn key_revoke(
    c: &mut DbConnection,
    user_id: UserId,
    id: ApiKeyId,
    now: DateTime<Utc>,
) -> Result<(), ApiKeyError> {
    let mine = api_keys::table.filter(
        api_keys::id
            .eq(id.get())
            .and(api_keys::user_id.eq(user_id.get())),
    );
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
    c: &mut DbConnection,
    hashes: &[&str],
) -> QueryResult<HashMap<String, KeyAndUser>> {
    let rows = api_keys::table
        .inner_join(users::table)
        .filter(api_keys::key_hash.eq_any(hashes))
        .load::<(ApiKeyRow, UserRow)>(c)?;
    Ok(rows
        .into_iter()
        .map(|(k, u)| {
            let hash = k.key_hash.clone();
            let found = KeyAndUser {
                key: k.into_domain(),
                user: u.into_domain(),
            };
            (hash, found)
        })
        .collect())
}

pub(crate) fn key_replace_named(
    c: &mut DbConnection,
    new: &NewApiKey,
    now: DateTime<Utc>,
) -> Result<(), ApiKeyError> {
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

impl ApiKeyRepository for Database {
    fn create(
        &self,
        new: &NewApiKey,
        now: DateTime<Utc>,
        max_live: u64,
    ) -> Result<ApiKey, ApiKeyError> {
        self.with_write(Change::KeyCreated(new.hash.as_str().to_owned()), |c| {
            key_create(c, new, now, max_live)
        })?
    }

    fn get(&self, user_id: UserId, id: ApiKeyId) -> Result<ApiKey, ApiKeyError> {
        self.with(|c| key_get(c, user_id, id))?
    }

    fn list(&self, user_id: UserId, page: PageRequest) -> Result<Page<ApiKey>, StoreError> {
        self.with(|c| key_list(c, user_id, page))?
    }

    fn revoke(&self, user_id: UserId, id: ApiKeyId, now: DateTime<Utc>) -> Result<(), ApiKeyError> {
        self.with_write(Change::Key(id), |c| key_revoke(c, user_id, id, now))?
    }

    fn find_by_hash(&self, hash: &KeyHash) -> Pending<Result<Option<Arc<KeyAndUser>>, StoreError>> {
        match self.cache.key(hash.as_str()) {
            Some(cached) => pending::ready(Ok(cached)),
            None => self.loader.key(hash.as_str()),
        }
    }

    fn replace_named(&self, new: &NewApiKey, now: DateTime<Utc>) -> Result<(), ApiKeyError> {
        self.with_write(Change::User(new.user_id), |c| {
            key_replace_named(c, new, now)
        })?
    }
}
