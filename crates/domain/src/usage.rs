//! Usage: counters per user, window and permission, and the events of
//! granted checks.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::access::{Quota, QuotaScope};
use crate::history::{HistoryFilter, HistoryRow};
use crate::idempotency::{IdempotencyKey, Recorded};
use crate::period::{UsagePeriod, Window};
use crate::permission::PermissionName;
use crate::plan::{PermissionLimits, PermissionList, RateLimit, UsageLimit};
use crate::reservation::NewHold;
use crate::{
    Page, PageRequest, Pending, PlanId, StoreError, SubscriptionId, UserId, ValidationError,
};

/// Units one check consumes: 1..=1,000,000 (default 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost(i64);

impl Cost {
    /// The largest cost of one check.
    pub const MAX: i64 = 1_000_000;

    /// Parses a client's cost: 1 when absent, else 1..=1,000,000.
    pub fn parse(value: Option<i64>) -> Result<Self, ValidationError> {
        match value {
            None => Ok(Self(1)),
            Some(v) if (1..=Self::MAX).contains(&v) => Ok(Self(v)),
            Some(_) => Err(ValidationError::new(
                "cost",
                "must be between 1 and 1000000",
            )),
        }
    }

    /// The units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// What a check needs to know of the user's active subscription and plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessContext {
    /// The active subscription.
    pub subscription_id: SubscriptionId,
    /// Its plan.
    pub plan_id: PlanId,
    /// When the subscription started (a lifetime window starts there).
    pub started_at: DateTime<Utc>,
    /// The permissions the plan grants.
    pub permissions: PermissionList,
    /// Units per period.
    pub limit: UsageLimit,
    /// How often the usage resets.
    pub period: UsagePeriod,
    /// Quotas of single permissions, on top of the plan-wide one.
    pub permission_limits: PermissionLimits,
    /// The subscriber's rate limit, if any.
    pub rate_limit: Option<RateLimit>,
}

impl AccessContext {
    /// What a check of `permission` for `cost` units by `user_id` at `now`
    /// consumes under this context: the plan's window of now, the
    /// permission's own quota and the rate limit when the plan has them.
    pub fn consumption(
        &self,
        user_id: UserId,
        permission: PermissionName,
        cost: Cost,
        now: DateTime<Utc>,
    ) -> Consumption {
        let permission_quota =
            self.permission_limits
                .get(permission.as_str())
                .map(|own| PermissionQuota {
                    limit: own.usage_limit,
                    period: own.usage_period,
                    window: own.usage_period.window_at(now),
                });
        Consumption {
            subscription_id: self.subscription_id,
            user_id,
            permission,
            cost,
            limit: self.limit.get(),
            period: self.period,
            // A lifetime counter is keyed at the epoch.
            window: self.period.window_at(now),
            at: now,
            permission_quota,
            rate_limit: self.rate_limit,
            idempotency_key: None,
            hold: None,
        }
    }
}

/// One atomic consumption attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumption {
    /// The subscription consumed under.
    pub subscription_id: SubscriptionId,
    /// The user consuming.
    pub user_id: UserId,
    /// The permission checked.
    pub permission: PermissionName,
    /// Units to consume.
    pub cost: Cost,
    /// The plan-wide limit; `None`: unlimited (always granted, still counted).
    pub limit: Option<i64>,
    /// The kind of the plan-wide window.
    pub period: UsagePeriod,
    /// The counter's window; its start is the counter's key.
    pub window: Window,
    /// When the check happened (its window and event time).
    pub at: DateTime<Utc>,
    /// The permission's own quota, when the plan gives it one.
    pub permission_quota: Option<PermissionQuota>,
    /// The plan's rate limit, when it has one.
    pub rate_limit: Option<RateLimit>,
    /// The client's name for this request: a granted one is recorded under
    /// it, and its repeats are answered from the record.
    pub idempotency_key: Option<IdempotencyKey>,
    /// A reservation to make instead of a usage event: the units count as
    /// used at once, and a later commit writes the event.
    pub hold: Option<NewHold>,
}

/// Whether a consumption fits, on usage and a bucket as they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The rate limit and every quota have room for the cost.
    Fits,
    /// The bucket (this many micro-units) holds less than the cost.
    RateLimited(i64),
    /// A quota has no room for the cost.
    Exhausted,
}

impl Consumption {
    /// The rule every store applies to a check, in the contract's order:
    /// the rate limit first (a bucket of `tokens` micro-units, when the plan
    /// has one), then the plan-wide quota at `used` and the permission's own
    /// at `permission_used`.
    pub fn verdict(&self, used: i64, permission_used: Option<i64>, tokens: Option<i64>) -> Verdict {
        let cost = self.cost.get();
        if let (Some(rate), Some(tokens)) = (self.rate_limit, tokens) {
            if !rate.holds(tokens, cost) {
                return Verdict::RateLimited(tokens);
            }
        }
        let fits = |current: i64, limit: i64| current.checked_add(cost).is_some_and(|n| n <= limit);
        let own_fits = match (self.permission_quota, permission_used) {
            (Some(q), Some(current)) => fits(current, q.limit),
            _ => true,
        };
        if fits(used, self.limit.unwrap_or(i64::MAX)) && own_fits {
            Verdict::Fits
        } else {
            Verdict::Exhausted
        }
    }

    /// Every quota that applies to this consumption, at the usage given
    /// (the plan window's `used`, the permission window's), as of `at`.
    pub fn quotas_at(&self, used: i64, permission_used: Option<i64>) -> Vec<Quota> {
        let mut quotas = Vec::new();
        if let Some(limit) = self.limit {
            quotas.push(Quota::of(
                QuotaScope::Plan,
                limit,
                used,
                self.period,
                self.window,
                self.at,
            ));
        }
        if let Some(own) = self.permission_quota {
            quotas.push(Quota::of(
                QuotaScope::Permission,
                own.limit,
                permission_used.unwrap_or(0),
                own.period,
                own.window,
                self.at,
            ));
        }
        quotas
    }

    /// What a store records of this consumption once granted at `used` /
    /// `permission_used`: what its repeats are answered with.
    pub fn record(&self, used: i64, permission_used: Option<i64>) -> Recorded {
        Recorded {
            at: self.at,
            permission: self.permission.as_str().to_owned(),
            cost: self.cost.get(),
            ttl: self.hold.as_ref().map(|h| h.ttl.get()),
            reservation: self.hold.as_ref().map(|h| h.id.clone()),
            quotas: self.quotas_at(used, permission_used),
        }
    }
}

/// A permission's own quota as a check meets it: its limit, the kind of
/// its window and the window now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionQuota {
    /// Units per window.
    pub limit: i64,
    /// The kind of window.
    pub period: UsagePeriod,
    /// The window the check counts in.
    pub window: Window,
}

/// The result of a consumption attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// Every quota and the rate limit had room: all took the cost.
    Granted {
        /// The plan window's usage after this consumption.
        used: i64,
        /// The permission window's usage after it, when it has a quota.
        permission_used: Option<i64>,
    },
    /// A quota had no room: nothing was taken.
    Exhausted {
        /// The plan window's usage, unchanged.
        used: i64,
        /// The permission window's usage, unchanged.
        permission_used: Option<i64>,
    },
    /// The rate limit held fewer units than the cost: nothing was taken.
    RateLimited {
        /// The plan window's usage, unchanged.
        used: i64,
        /// The permission window's usage, unchanged.
        permission_used: Option<i64>,
        /// What the bucket holds, in micro-units.
        tokens: i64,
    },
    /// A repeat of a granted request's idempotency key with the same
    /// request: answered from its record, nothing taken.
    Replayed(Box<Recorded>),
    /// A repeat of a granted request's idempotency key with another
    /// permission or cost: nothing taken.
    KeyReused,
}

/// A granted check, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    /// The event's id (the order of the list).
    pub id: i64,
    /// The user who consumed.
    pub user_id: UserId,
    /// The permission's name at the time.
    pub permission: String,
    /// Units consumed.
    pub cost: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// Filters of the event list: `from <= at < to`, and one permission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events at or after this instant, if given.
    pub from: Option<DateTime<Utc>>,
    /// Only events before this instant, if given.
    pub to: Option<DateTime<Utc>>,
    /// Only events of this permission name, if given.
    pub permission: Option<String>,
}

/// A window's counters and its held units, each by permission name.
pub type UsedAndHeld = (Vec<(String, i64)>, Vec<(String, i64)>);

/// Where usage is counted and recorded.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait UsageRepository: Send + Sync {
    /// The user's active subscription with its plan's rules, read together;
    /// `None` without an active subscription. Ready at once when the
    /// adapter holds it in memory; never blocks the caller's thread.
    fn access_context(
        &self,
        user_id: UserId,
    ) -> Pending<Result<Option<Arc<AccessContext>>, StoreError>>;

    /// In ONE transaction: adds `cost` to the user's counter of the window
    /// and permission only while `used + cost <= limit`, `used` being the
    /// user's usage of the window over all permissions (decided on counters
    /// no concurrent transaction can change, exact under any concurrency and
    /// any number of processes) and, when it did, records the usage event.
    /// A window's counters, when missing, are created from the user's usage
    /// already recorded in it (the hourly roll-ups of its events). Both are
    /// durable when this returns. Denied: nothing is written. `used` in the answer is the window's total.
    /// Never blocks the caller's thread; a caller that drops the future
    /// before the store started on it consumes nothing.
    fn consume(&self, consumption: &Consumption) -> Pending<Result<Consumed, StoreError>>;

    /// What [`Self::consume`] would answer now, consuming nothing (a
    /// concurrent check may change it). Blocks on the store.
    fn peek(&self, consumption: &Consumption) -> Result<Consumed, StoreError>;

    /// Units the user consumed of `permission` in its quota's window.
    fn permission_used(
        &self,
        user_id: UserId,
        permission: &PermissionName,
        period: UsagePeriod,
        window: Window,
    ) -> Result<i64, StoreError>;

    /// The record of the user's granted request under `key`, if there is
    /// one (committed: a request still being decided is not seen). Blocks
    /// on the store.
    fn recorded(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Recorded>, StoreError>;

    /// In ONE read (one snapshot): the user's counters of the window per
    /// permission name (those with units; held reservations' units
    /// included), and the units of their held reservations made in the
    /// window, per permission name.
    fn used_and_held(&self, user_id: UserId, window: Window) -> Result<UsedAndHeld, StoreError>;

    /// Units the user consumed in the window per permission name (those
    /// with units, by name), from the counters only (held reservations
    /// included); they add up to `used`.
    fn used_by_permission(
        &self,
        user_id: UserId,
        window: Window,
    ) -> Result<Vec<(String, i64)>, StoreError>;

    /// The units of the filter's users per hour or day and permission in
    /// its range, from the roll-ups (never the raw events), ascending.
    fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryRow>, StoreError>;

    /// The user's events in id order ("newest last"), from the retention
    /// horizon on.
    fn events(
        &self,
        user_id: UserId,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<UsageEvent>, StoreError>;
}
