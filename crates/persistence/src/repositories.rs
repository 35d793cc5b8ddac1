//! The domain's ports, implemented by [`Database`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tollgate_domain::api_key::{
    ApiKey, ApiKeyError, ApiKeyRepository, KeyAndUser, KeyHash, NewApiKey,
};
use tollgate_domain::permission::{
    NewPermission, Permission, PermissionError, PermissionName, PermissionPatch,
    PermissionRepository,
};
use tollgate_domain::plan::{NewPlan, Plan, PlanError, PlanPatch, PlanRepository};
use tollgate_domain::subscription::{
    Subscription, SubscriptionError, SubscriptionFilter, SubscriptionRepository,
};
use tollgate_domain::user::{
    NewUser, User, UserError, UserFilter, UserGuard, UserPatch, UserRepository, Username,
};
use tollgate_domain::{ApiKeyId, Page, PageRequest, PermissionId, PlanId, StoreError, UserId};

use tollgate_domain::period::Window;
use tollgate_domain::usage::{
    AccessContext, Consumed, Consumption, EventFilter, PendingConsumption, UsageEvent,
    UsageRepository,
};

use crate::cache::Change;
use crate::error::store_error;
use crate::{dispatch, Database};

impl PermissionRepository for Database {
    fn create(
        &self,
        new: &NewPermission,
        now: DateTime<Utc>,
    ) -> Result<Permission, PermissionError> {
        self.with_write(Change::NothingCached, |c| {
            dispatch!(c, permission_create(new, now))
        })?
    }

    fn get(&self, id: PermissionId) -> Result<Permission, PermissionError> {
        self.with(|c| dispatch!(c, permission_get(id)))?
    }

    fn list(&self, page: PageRequest) -> Result<Page<Permission>, PermissionError> {
        self.with(|c| dispatch!(c, permission_list(page)))?
    }

    fn update(
        &self,
        id: PermissionId,
        patch: &PermissionPatch,
        now: DateTime<Utc>,
    ) -> Result<Permission, PermissionError> {
        self.with_write(Change::All, |c| {
            dispatch!(c, permission_update(id, patch, now))
        })?
    }

    fn delete(&self, id: PermissionId) -> Result<(), PermissionError> {
        self.with_write(Change::NothingCached, |c| {
            dispatch!(c, permission_delete(id))
        })?
    }

    fn is_granted(&self, id: PermissionId) -> Result<bool, StoreError> {
        self.with(|c| dispatch!(c, permission_is_granted(id)))?
            .map_err(store_error)
    }

    fn missing(&self, names: &[PermissionName]) -> Result<Vec<PermissionName>, StoreError> {
        self.with(|c| dispatch!(c, permission_missing(names)))?
            .map_err(store_error)
    }
}

impl PlanRepository for Database {
    fn create(&self, new: &NewPlan, now: DateTime<Utc>) -> Result<Plan, PlanError> {
        self.with_write(Change::NothingCached, |c| {
            dispatch!(c, plan_create(new, now))
        })?
    }

    fn get(&self, id: PlanId) -> Result<Plan, PlanError> {
        self.with(|c| dispatch!(c, plan_get(id)))?
    }

    fn list(&self, page: PageRequest) -> Result<Page<Plan>, PlanError> {
        self.with(|c| dispatch!(c, plan_list(page)))?
    }

    fn update(&self, id: PlanId, patch: &PlanPatch, now: DateTime<Utc>) -> Result<Plan, PlanError> {
        self.with_write(Change::Plan(id), |c| {
            dispatch!(c, plan_update(id, patch, now))
        })?
    }

    fn delete(&self, id: PlanId) -> Result<(), PlanError> {
        self.with_write(Change::Plan(id), |c| dispatch!(c, plan_delete(id)))?
    }

    fn has_active_subscriptions(&self, id: PlanId) -> Result<bool, StoreError> {
        self.with(|c| dispatch!(c, plan_has_active_subscriptions(id)))?
            .map_err(store_error)
    }
}

impl UserRepository for Database {
    fn create(&self, new: &NewUser, now: DateTime<Utc>) -> Result<User, UserError> {
        self.with_write(Change::NothingCached, |c| {
            dispatch!(c, user_create(new, now))
        })?
    }

    fn get(&self, id: UserId) -> Result<User, UserError> {
        self.with(|c| dispatch!(c, user_get(id)))?
    }

    fn find_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        self.with(|c| dispatch!(c, user_find_by_username(username.as_str())))?
            .map_err(store_error)
    }

    fn list(&self, filter: UserFilter, page: PageRequest) -> Result<Page<User>, UserError> {
        self.with(|c| dispatch!(c, user_list(filter, page)))?
    }

    fn update<'a>(
        &self,
        id: UserId,
        patch: &UserPatch,
        now: DateTime<Utc>,
        guard: UserGuard<'a>,
    ) -> Result<User, UserError> {
        self.with_write(Change::User(id), |c| {
            dispatch!(c, user_update(id, patch, now, guard))
        })?
    }

    fn delete<'a>(&self, id: UserId, guard: UserGuard<'a>) -> Result<(), UserError> {
        self.with_write(Change::User(id), |c| dispatch!(c, user_delete(id, guard)))?
    }
}

impl ApiKeyRepository for Database {
    fn create(
        &self,
        new: &NewApiKey,
        now: DateTime<Utc>,
        max_live: u64,
    ) -> Result<ApiKey, ApiKeyError> {
        self.with_write(Change::KeyCreated(new.hash.as_str().to_owned()), |c| {
            dispatch!(c, key_create(new, now, max_live))
        })?
    }

    fn get(&self, user_id: UserId, id: ApiKeyId) -> Result<ApiKey, ApiKeyError> {
        self.with(|c| dispatch!(c, key_get(user_id, id)))?
    }

    fn list(&self, user_id: UserId, page: PageRequest) -> Result<Page<ApiKey>, ApiKeyError> {
        self.with(|c| dispatch!(c, key_list(user_id, page)))?
    }

    fn revoke(&self, user_id: UserId, id: ApiKeyId, now: DateTime<Utc>) -> Result<(), ApiKeyError> {
        self.with_write(Change::Key(id), |c| {
            dispatch!(c, key_revoke(user_id, id, now))
        })?
    }

    fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyAndUser>, StoreError> {
        match self.cache.key(hash.as_str()) {
            Some(cached) => Ok(cached),
            None => self.loader.key(hash.as_str()),
        }
    }

    fn cached_by_hash(&self, hash: &KeyHash) -> Option<Option<KeyAndUser>> {
        self.cache.key(hash.as_str())
    }

    fn replace_named(&self, new: &NewApiKey, now: DateTime<Utc>) -> Result<(), ApiKeyError> {
        self.with_write(Change::User(new.user_id), |c| {
            dispatch!(c, key_replace_named(new, now))
        })?
    }
}

impl SubscriptionRepository for Database {
    fn create(
        &self,
        user_id: UserId,
        plan_id: PlanId,
        now: DateTime<Utc>,
    ) -> Result<Subscription, SubscriptionError> {
        self.with_write(Change::User(user_id), |c| {
            dispatch!(c, subscription_create(user_id, plan_id, now))
        })?
    }

    fn change_plan(
        &self,
        user_id: UserId,
        plan_id: PlanId,
        now: DateTime<Utc>,
    ) -> Result<Subscription, SubscriptionError> {
        self.with_write(Change::User(user_id), |c| {
            dispatch!(c, subscription_change_plan(user_id, plan_id, now))
        })?
    }

    fn find_active(&self, user_id: UserId) -> Result<Option<Subscription>, StoreError> {
        self.with(|c| dispatch!(c, subscription_find_active(user_id)))?
            .map_err(store_error)
    }

    fn cancel(&self, user_id: UserId, now: DateTime<Utc>) -> Result<(), SubscriptionError> {
        self.with_write(Change::User(user_id), |c| {
            dispatch!(c, subscription_cancel(user_id, now))
        })?
    }

    fn list(
        &self,
        filter: SubscriptionFilter,
        page: PageRequest,
    ) -> Result<Page<Subscription>, SubscriptionError> {
        self.with(|c| dispatch!(c, subscription_list(filter, page)))?
    }
}

impl UsageRepository for Database {
    fn access_context(&self, user_id: UserId) -> Result<Option<Arc<AccessContext>>, StoreError> {
        match self.cache.context(user_id.get()) {
            Some(cached) => Ok(cached),
            None => self.loader.context(user_id.get()),
        }
    }

    fn cached_access_context(&self, user_id: UserId) -> Option<Option<Arc<AccessContext>>> {
        self.cache.context(user_id.get())
    }

    fn consume(&self, consumption: &Consumption) -> Result<Consumed, StoreError> {
        self.writer.consume(consumption)
    }

    fn consume_later(&self, consumption: &Consumption) -> PendingConsumption {
        self.writer.consume_later(consumption)
    }

    fn used(&self, user_id: UserId, window: Window) -> Result<i64, StoreError> {
        self.with(|c| dispatch!(c, usage_used(user_id, window)))?
            .map_err(store_error)
    }

    fn used_by_permission(
        &self,
        user_id: UserId,
        window: Window,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|c| dispatch!(c, usage_used_by_permission(user_id, window)))?
            .map_err(store_error)
    }

    fn events(
        &self,
        user_id: UserId,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<UsageEvent>, StoreError> {
        self.with(|c| dispatch!(c, usage_events(user_id, filter, page)))?
            .map_err(store_error)
    }
}
