//! Diesel rows: private to this crate, converted to domain entities here.

use diesel::prelude::*;
use tollgate_domain::api_key::{ApiKey, ApiKeyName};
use tollgate_domain::period::UsagePeriod;
use tollgate_domain::permission::{Permission, PermissionDescription, PermissionName};
use tollgate_domain::plan::{PermissionList, Plan, PlanDescription, PlanName, UsageLimit};
use tollgate_domain::subscription::{Subscription, SubscriptionStatus};
use tollgate_domain::user::{Role, User, UserStatus, Username};
use tollgate_domain::{ApiKeyId, PermissionId, PlanId, SubscriptionId, UserId};

use crate::schema::*;
use crate::time::from_db;

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

/// A usage event's key, in the order `usage_event_keys` keeps: (user, at, id).
pub(crate) type EventKey = (i64, i64, i64);

/// The events not keyed yet (SQLite), as read at `usage_events_keyed`'s
/// `upto` and `generation`.
pub(crate) struct EventTail {
    pub(crate) upto: i64,
    pub(crate) generation: i64,
    pub(crate) keys: Vec<EventKey>,
}
