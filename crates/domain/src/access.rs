//! The access check: may this user use this permission now? Counting the
//! call against the plan's quota, exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::history::{Bucket, History, HistoryQuery, Whose};
use crate::idempotency::{IdempotencyKey, Recorded};
use crate::period::{UsagePeriod, Window};
use crate::permission::PermissionName;
use crate::reservation::{NewHold, Reservation, TtlSeconds};
use crate::usage::{
    AccessContext, Consumed, Consumption, Cost, EventFilter, UsageEvent, UsageRepository,
};
use crate::user::{User, UserStatus};
use crate::{Page, PageRequest, Pending, PlanId, StoreError, UserId, ValidationError};

/// Why a check was denied, in the order they are tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The user is suspended (HTTP 403).
    UserSuspended,
    /// The user has no active subscription (HTTP 403).
    NoSubscription,
    /// The plan does not grant the permission (HTTP 403).
    PermissionDenied,
    /// The plan's rate limit holds fewer units than the cost (HTTP 429).
    RateLimited,
    /// The check's cost would pass a quota that applies this period: the
    /// permission's own or the plan-wide one (HTTP 429).
    QuotaExhausted,
}

impl DenyReason {
    /// Whether the rule denied before the store was asked (a repeat of an
    /// idempotency key is then looked up on its own).
    pub fn before_quota(self) -> bool {
        matches!(
            self,
            Self::UserSuspended | Self::NoSubscription | Self::PermissionDenied
        )
    }

    /// The reason as the contract names it (`user_suspended`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserSuspended => "user_suspended",
            Self::NoSubscription => "no_subscription",
            Self::PermissionDenied => "permission_denied",
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
        }
    }

    /// One sentence for a client on why the check was denied.
    pub fn explain(self) -> &'static str {
        match self {
            Self::UserSuspended => "the user is suspended",
            Self::NoSubscription => "the user has no active subscription",
            Self::PermissionDenied => "the plan does not grant this permission",
            Self::RateLimited => "the plan's rate limit is reached; retry later",
            Self::QuotaExhausted => "a usage limit for this period is reached",
        }
    }
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The user the check was for.
    pub user_id: UserId,
    /// The permission asked for.
    pub permission: PermissionName,
    /// `None` when allowed.
    pub denied: Option<DenyReason>,
    /// Seconds after which the same check could succeed, when denied by
    /// the rate limit or a quota that resets.
    pub retry_after: Option<i64>,
    /// Every quota that applies to the permission, after this check.
    pub quotas: Vec<Quota>,
    /// The answer of an earlier request with the same idempotency key,
    /// repeated: this request consumed nothing.
    pub replayed: bool,
    /// The reservation an allowed reservation request made.
    pub reservation: Option<Reservation>,
}

/// Whose units a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    /// Every permission of the plan together.
    Plan,
    /// One permission alone.
    Permission,
}

impl QuotaScope {
    /// The scope as the contract names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Permission => "permission",
        }
    }
}

/// A quota's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Plan-wide or one permission's.
    pub scope: QuotaScope,
    /// Units per period.
    pub limit: i64,
    /// Units left in the period.
    pub remaining: i64,
    /// The kind of period.
    pub usage_period: UsagePeriod,
    /// When the period resets (`None` for lifetime).
    pub reset_at: Option<DateTime<Utc>>,
    /// Whole seconds until `reset_at`.
    pub reset_in_seconds: Option<i64>,
}

impl Quota {
    pub(crate) fn of(
        scope: QuotaScope,
        limit: i64,
        used: i64,
        period: UsagePeriod,
        window: Window,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            scope,
            limit,
            remaining: (limit - used).max(0),
            usage_period: period,
            reset_at: window.end,
            reset_in_seconds: window.seconds_until_end(now),
        }
    }
}

/// The binding quota: the one with the fewest units left; on a tie, the
/// permission's own.
pub fn binding(quotas: &[Quota]) -> Option<&Quota> {
    quotas
        .iter()
        .min_by_key(|q| (q.remaining, q.scope == QuotaScope::Plan))
}

impl Decision {
    /// Whether the check was allowed (and its cost consumed).
    pub fn allowed(&self) -> bool {
        self.denied.is_none()
    }

    /// The binding quota's limit, when a quota applies.
    pub fn limit(&self) -> Option<i64> {
        binding(&self.quotas).map(|q| q.limit)
    }

    /// Units left in the binding quota's period after this check.
    pub fn remaining(&self) -> Option<i64> {
        binding(&self.quotas).map(|q| q.remaining)
    }

    /// When the binding quota's period resets (not for lifetime).
    pub fn reset_at(&self) -> Option<DateTime<Utc>> {
        binding(&self.quotas).and_then(|q| q.reset_at)
    }

    /// Whole seconds until [`Self::reset_at`].
    pub fn reset_in_seconds(&self) -> Option<i64> {
        binding(&self.quotas).and_then(|q| q.reset_in_seconds)
    }

    fn deny(user_id: UserId, permission: PermissionName, reason: DenyReason) -> Self {
        Self {
            user_id,
            permission,
            denied: Some(reason),
            retry_after: None,
            quotas: Vec::new(),
            replayed: false,
            reservation: None,
        }
    }
}

/// The usage of the current period (`GET /v1/users/{id}/usage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// The user reported on.
    pub user_id: UserId,
    /// The plan of the user's active subscription.
    pub plan_id: PlanId,
    /// The subscription and plan rules the report was computed from.
    pub context: AccessContext,
    /// The window shown to clients (a lifetime one starts at the subscription).
    pub period: Window,
    /// The plan's limit per period; `None` is unlimited.
    pub limit: Option<i64>,
    /// Units consumed in the period, over all permissions (checks and
    /// committed reservations).
    pub used: i64,
    /// Units of held reservations made in the period.
    pub reserved: i64,
    /// Units left in the period, net of held ones; `None` when unlimited.
    pub remaining: Option<i64>,
    /// Units consumed in the period per permission name.
    pub by_permission: BTreeMap<String, i64>,
    /// Every quota of the plan: the plan-wide one and each permission's.
    pub quotas: Vec<Quota>,
}

/// Why a usage report or event list could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The user has no active subscription (HTTP 404).
    #[error("no active subscription")]
    NoActiveSubscription,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The decision once the store said whether `consumption` fit.
fn after_consuming(consumption: Consumption, consumed: Consumed) -> Result<Decision, CheckError> {
    let (denied, used, permission_used, tokens) = match consumed {
        Consumed::Replayed(recorded) => {
            return Ok(replayed(
                consumption.user_id,
                consumption.permission,
                *recorded,
            ))
        }
        Consumed::KeyReused => return Err(CheckError::KeyReused),
        Consumed::Granted {
            used,
            permission_used,
        } => (None, used, permission_used, None),
        Consumed::Exhausted {
            used,
            permission_used,
        } => (
            Some(DenyReason::QuotaExhausted),
            used,
            permission_used,
            None,
        ),
        Consumed::RateLimited {
            used,
            permission_used,
            tokens,
        } => (
            Some(DenyReason::RateLimited),
            used,
            permission_used,
            Some(tokens),
        ),
    };
    let quotas = consumption.quotas_at(used, permission_used);
    let retry_after = match denied {
        Some(DenyReason::RateLimited) => consumption
            .rate_limit
            .zip(tokens)
            .map(|(rate, tokens)| rate.seconds_until(tokens, consumption.cost.get())),
        Some(_) => binding(&quotas)
            .and_then(|q| q.reset_in_seconds)
            .map(|s| s.max(1)),
        None => None,
    };
    let reservation = match denied {
        None => made(&consumption),
        Some(_) => None,
    };
    Ok(Decision {
        user_id: consumption.user_id,
        permission: consumption.permission,
        denied,
        retry_after,
        quotas,
        replayed: false,
        reservation,
    })
}

/// The original's answer to a repeat of its key: its quotas as answered,
/// and the reservation it made, if it was one.
fn replayed(user_id: UserId, permission: PermissionName, recorded: Recorded) -> Decision {
    let hold = recorded
        .ttl
        .and_then(|ttl| TtlSeconds::parse(Some(ttl)).ok());
    let reserved = Cost::parse(Some(recorded.cost)).ok();
    let reservation = match (recorded.reservation, hold, reserved) {
        (Some(id), Some(ttl), Some(reserved)) => Some(Reservation::held(
            id,
            user_id,
            recorded.permission,
            reserved,
            recorded.at,
            ttl,
        )),
        _ => None,
    };
    Decision {
        user_id,
        permission,
        denied: None,
        retry_after: None,
        quotas: recorded.quotas,
        replayed: true,
        reservation,
    }
}

/// The reservation a granted consumption with a hold made.
fn made(consumption: &Consumption) -> Option<Reservation> {
    consumption.hold.as_ref().map(|hold| {
        Reservation::held(
            hold.id.clone(),
            consumption.user_id,
            consumption.permission.as_str().to_owned(),
            consumption.cost,
            consumption.at,
            hold.ttl,
        )
    })
}

/// Why a check has no decision.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The idempotency key was recorded for another request (another
    /// permission or cost): HTTP 422, nothing consumed.
    #[error("this Idempotency-Key was used for another request")]
    KeyReused,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The access-check and usage use cases.
#[derive(Clone)]
pub struct AccessService {
    usage: Arc<dyn UsageRepository>,
    clock: Arc<dyn Clock>,
}

impl AccessService {
    /// The use cases on `usage`, with `clock` for the period windows.
    pub fn new(usage: Arc<dyn UsageRepository>, clock: Arc<dyn Clock>) -> Self {
        Self { usage, clock }
    }

    /// The user's access context, whatever their status (reports and
    /// previews). Ready at once when the store holds it in memory.
    pub fn context_of(
        &self,
        user_id: UserId,
    ) -> Pending<Result<Option<Arc<AccessContext>>, StoreError>> {
        self.usage.access_context(user_id)
    }

    /// Decides, in the contract's order: suspended user, no subscription,
    /// permission not in the plan, quota exhausted; otherwise consumes `cost`
    /// and records the event, durably, before answering. With `key`, a
    /// repeat of a granted request is answered as the original was,
    /// consuming nothing. Never blocks the caller's thread; a suspended
    /// user's check asks the store nothing.
    pub async fn check(
        &self,
        subject: &User,
        permission: PermissionName,
        cost: Cost,
        key: Option<IdempotencyKey>,
    ) -> Result<Decision, CheckError> {
        self.decide(subject, permission, cost, key, None).await
    }

    /// A reservation of `cost` units: decided as [`Self::check`], and when
    /// allowed the units are held (counted as used, taken from the rate
    /// limit) under `hold.id` instead of recorded as an event; the
    /// decision carries the reservation.
    pub async fn reserve(
        &self,
        subject: &User,
        permission: PermissionName,
        cost: Cost,
        hold: NewHold,
        key: Option<IdempotencyKey>,
    ) -> Result<Decision, CheckError> {
        self.decide(subject, permission, cost, key, Some(hold))
            .await
    }

    async fn decide(
        &self,
        subject: &User,
        permission: PermissionName,
        cost: Cost,
        key: Option<IdempotencyKey>,
        hold: Option<NewHold>,
    ) -> Result<Decision, CheckError> {
        let context = if subject.status == UserStatus::Suspended {
            None
        } else {
            self.usage.access_context(subject.id).await?
        };
        match self.before_consuming(subject, permission, cost, context.as_deref()) {
            Err(denied) => Ok(*denied),
            Ok(mut consumption) => {
                consumption.idempotency_key = key;
                consumption.hold = hold;
                let consumed = self.usage.consume(&consumption).await?;
                after_consuming(consumption, consumed)
            }
        }
    }

    /// A repeat of a granted request that a rule before the quota now
    /// denies (the user suspended since, the subscription or the permission
    /// gone): the original's answer when `key` has a record for the same
    /// request, `KeyReused` for another one, `None` without a record.
    /// `ttl` is a reservation's. Blocks on the store.
    pub fn replay(
        &self,
        subject: &User,
        permission: PermissionName,
        cost: Cost,
        ttl: Option<i64>,
        key: &IdempotencyKey,
    ) -> Result<Option<Decision>, CheckError> {
        let Some(recorded) = self.usage.recorded(subject.id, key)? else {
            return Ok(None);
        };
        if !recorded.same_request(permission.as_str(), cost.get(), ttl) {
            return Err(CheckError::KeyReused);
        }
        Ok(Some(replayed(subject.id, permission, recorded)))
    }

    /// The decision a check would get now, consuming nothing: no unit, no
    /// event (forward-auth's `HEAD` and `OPTIONS`). The quota part reads the
    /// window's usage, so a concurrent check may change the answer. Blocks
    /// on the store.
    pub fn preview(
        &self,
        subject: &User,
        permission: PermissionName,
        cost: Cost,
        context: Option<Arc<AccessContext>>,
    ) -> Result<Decision, StoreError> {
        match self.before_consuming(subject, permission, cost, context.as_deref()) {
            Err(denied) => Ok(*denied),
            Ok(would) => {
                let outcome = self.usage.peek(&would)?;
                after_consuming(would, outcome).map_err(|e| match e {
                    CheckError::Store(e) => e,
                    CheckError::KeyReused => {
                        StoreError::Unexpected("a preview carries no idempotency key".into())
                    }
                })
            }
        }
    }

    /// The rules before the quota: a denial, or what to consume.
    fn before_consuming(
        &self,
        subject: &User,
        permission: PermissionName,
        cost: Cost,
        context: Option<&AccessContext>,
    ) -> Result<Consumption, Box<Decision>> {
        let user_id = subject.id;
        if subject.status == UserStatus::Suspended {
            return Err(Box::new(Decision::deny(
                user_id,
                permission,
                DenyReason::UserSuspended,
            )));
        }
        let Some(context) = context else {
            return Err(Box::new(Decision::deny(
                user_id,
                permission,
                DenyReason::NoSubscription,
            )));
        };
        if !context.permissions.contains(permission.as_str()) {
            return Err(Box::new(Decision::deny(
                user_id,
                permission,
                DenyReason::PermissionDenied,
            )));
        }
        Ok(context.consumption(user_id, permission, cost, self.clock.now()))
    }

    /// The current period's usage of the user under their active
    /// subscription's plan: the user's counters of the window (whatever
    /// subscription consumed it), read once, so `used` is the sum of
    /// `by_permission`. Never sums events. `context` is the user's (see
    /// [`Self::context_of`]). Blocks on the store.
    pub fn report(
        &self,
        user_id: UserId,
        context: Option<Arc<AccessContext>>,
    ) -> Result<UsageReport, AccessError> {
        let context = context.ok_or(AccessError::NoActiveSubscription)?;
        let now = self.clock.now();
        let window = context.period.window_at(now);
        // The counters hold consumed and held units together.
        let (counters, held) = self.usage.used_and_held(user_id, window)?;
        let mut by_permission: BTreeMap<String, i64> = counters.into_iter().collect();
        let counted: i64 = by_permission.values().sum();
        let mut reserved = 0;
        for (name, held) in held {
            reserved += held;
            if let Some(used) = by_permission.get_mut(&name) {
                *used -= held;
            }
        }
        by_permission.retain(|_, used| *used > 0);
        let used = counted - reserved;
        let limit = context.limit.get();
        let period = context.period.shown_window(now, context.started_at);
        let quotas = self.quotas_of(user_id, &context, None, counted, now)?;
        Ok(UsageReport {
            user_id,
            plan_id: context.plan_id,
            period,
            limit,
            used,
            reserved,
            remaining: limit.map(|l| (l - counted).max(0)),
            by_permission,
            quotas,
            context: Arc::unwrap_or_clone(context),
        })
    }

    /// The quotas of the user's plan as they stand at `now` (`counted`: the
    /// plan window's units, held ones included): the plan-wide one and each
    /// permission's, or, given `only`, those that apply to that permission.
    fn quotas_of(
        &self,
        user_id: UserId,
        context: &AccessContext,
        only: Option<&str>,
        counted: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Quota>, StoreError> {
        let window = context.period.window_at(now);
        let mut quotas = Vec::new();
        if let Some(limit) = context.limit.get() {
            quotas.push(Quota::of(
                QuotaScope::Plan,
                limit,
                counted,
                context.period,
                window,
                now,
            ));
        }
        for (name, own) in context.permission_limits.iter() {
            if only.is_some_and(|p| p != name.as_str()) {
                continue;
            }
            let own_window = own.usage_period.window_at(now);
            let own_used =
                self.usage
                    .permission_used(user_id, name, own.usage_period, own_window)?;
            quotas.push(Quota::of(
                QuotaScope::Permission,
                own.usage_limit,
                own_used,
                own.usage_period,
                own_window,
                now,
            ));
        }
        Ok(quotas)
    }

    /// The quotas that apply to `permission` for the user now (a
    /// reservation's body); none without an active subscription. Blocks on
    /// the store.
    pub fn quotas_now(
        &self,
        user_id: UserId,
        permission: &str,
        context: Option<Arc<AccessContext>>,
    ) -> Result<Vec<Quota>, StoreError> {
        let Some(context) = context else {
            return Ok(Vec::new());
        };
        if !context.permissions.contains(permission) {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let window = context.period.window_at(now);
        let counted = match context.limit.get() {
            Some(_) => self
                .usage
                .used_by_permission(user_id, window)?
                .iter()
                .map(|(_, used)| used)
                .sum(),
            None => 0,
        };
        self.quotas_of(user_id, &context, Some(permission), counted, now)
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A history query at the clock's now: see [`HistoryQuery::new`].
    pub fn history_query(
        &self,
        bucket: Bucket,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        permission: Option<String>,
    ) -> Result<HistoryQuery, ValidationError> {
        HistoryQuery::new(bucket, from, to, permission, self.clock.now())
    }

    /// The usage of `whose` in the query's buckets.
    pub fn history(&self, query: &HistoryQuery, whose: Whose) -> Result<History, StoreError> {
        Ok(query.fold(self.usage.history(&query.filter(whose))?))
    }

    /// The user's usage events matching `filter`, one page in id order.
    pub fn events(
        &self,
        user_id: UserId,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<UsageEvent>, StoreError> {
        self.usage.events(user_id, filter, page)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use chrono::TimeZone;

    use super::*;
    use crate::clock::FixedClock;
    use crate::pending::{self, poll_ready};
    use crate::period::UsagePeriod;
    use crate::plan::{PermissionList, UsageLimit};
    use crate::usage::{MockUsageRepository, PermissionQuota};
    use crate::user::{Role, Username};
    use crate::{PlanId, SubscriptionId};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn user(status: UserStatus) -> User {
        let t = Utc.timestamp_opt(0, 0).single().expect("epoch");
        User {
            id: UserId::from_store(7),
            username: Username::parse("bob").expect("valid"),
            role: Role::User,
            status,
            created_at: t,
            updated_at: t,
        }
    }

    fn name(s: &str) -> PermissionName {
        PermissionName::parse(s).expect("valid")
    }

    fn context(limit: Option<i64>, period: UsagePeriod) -> AccessContext {
        AccessContext {
            subscription_id: SubscriptionId::from_store(1),
            plan_id: PlanId::from_store(1),
            started_at: at("2026-01-15T10:00:00Z"),
            permissions: PermissionList::new([name("reports:read")]),
            limit: UsageLimit::parse(limit).expect("valid"),
            period,
            permission_limits: Default::default(),
            rate_limit: None,
        }
    }

    /// An in-memory store that behaves like the real one: counters keyed by
    /// (user, window start), consumed only while under the limit.
    #[derive(Default)]
    struct Counters {
        used: Mutex<HashMap<(i64, DateTime<Utc>), i64>>,
    }

    fn repo_with(
        ctx: std::sync::Arc<Mutex<Option<AccessContext>>>,
        counters: std::sync::Arc<Counters>,
    ) -> MockUsageRepository {
        let mut repo = MockUsageRepository::new();
        repo.expect_access_context().returning(move |_| {
            pending::ready(Ok(ctx.lock().expect("lock").clone().map(Arc::new)))
        });
        repo.expect_consume().returning(move |c| {
            let mut used = counters.used.lock().expect("lock");
            let entry = used.entry((c.user_id.get(), c.window.start)).or_insert(0);
            pending::ready(Ok(if c.limit.is_none_or(|l| *entry + c.cost.get() <= l) {
                *entry += c.cost.get();
                Consumed::Granted {
                    used: *entry,
                    permission_used: None,
                }
            } else {
                Consumed::Exhausted {
                    used: *entry,
                    permission_used: None,
                }
            }))
        });
        repo
    }

    fn service_at(
        now: &str,
        ctx: Option<AccessContext>,
    ) -> (
        AccessService,
        std::sync::Arc<Mutex<Option<AccessContext>>>,
        std::sync::Arc<Counters>,
    ) {
        let ctx = std::sync::Arc::new(Mutex::new(ctx));
        let counters = std::sync::Arc::new(Counters::default());
        let repo = repo_with(ctx.clone(), counters.clone());
        (
            AccessService::new(Arc::new(repo), Arc::new(FixedClock(at(now)))),
            ctx,
            counters,
        )
    }

    fn check(s: &AccessService, cost: i64) -> Decision {
        poll_ready(s.check(
            &user(UserStatus::Active),
            name("reports:read"),
            Cost::parse(Some(cost)).expect("valid"),
            None,
        ))
        .expect("decided")
    }

    #[test]
    fn denials_come_in_the_contract_order() {
        let mut repo = MockUsageRepository::new();
        repo.expect_access_context().never();
        let s = AccessService::new(
            Arc::new(repo),
            Arc::new(FixedClock(at("2026-01-01T00:00:00Z"))),
        );
        let d = poll_ready(s.check(
            &user(UserStatus::Suspended),
            name("reports:read"),
            Cost::parse(None).expect("1"),
            None,
        ))
        .expect("decided");
        assert_eq!(d.denied, Some(DenyReason::UserSuspended));

        let (s, _, _) = service_at("2026-01-01T00:00:00Z", None);
        assert_eq!(check(&s, 1).denied, Some(DenyReason::NoSubscription));

        let (s, _, _) = service_at(
            "2026-01-01T00:00:00Z",
            Some(context(Some(5), UsagePeriod::Day)),
        );
        let d = poll_ready(s.check(
            &user(UserStatus::Active),
            name("reports:write"),
            Cost::parse(None).expect("1"),
            None,
        ))
        .expect("decided");
        assert_eq!(d.denied, Some(DenyReason::PermissionDenied));
    }

    #[test]
    fn quota_grants_up_to_the_limit_and_denied_checks_consume_nothing() {
        let (s, _, counters) = service_at(
            "2026-03-10T12:00:00Z",
            Some(context(Some(10), UsagePeriod::Month)),
        );
        assert_eq!(check(&s, 4).remaining(), Some(6));
        let d = check(&s, 7);
        assert_eq!(d.denied, Some(DenyReason::QuotaExhausted));
        assert_eq!(d.remaining(), Some(6));
        let d = check(&s, 6);
        assert!(d.allowed());
        assert_eq!(d.remaining(), Some(0));
        assert_eq!(d.limit(), Some(10));
        assert_eq!(d.reset_at(), Some(at("2026-04-01T00:00:00Z")));
        let total: i64 = counters.used.lock().expect("lock").values().sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn a_limit_of_zero_grants_nothing_and_unlimited_grants_everything() {
        let (s, _, _) = service_at(
            "2026-03-10T12:00:00Z",
            Some(context(Some(0), UsagePeriod::Day)),
        );
        assert_eq!(check(&s, 1).denied, Some(DenyReason::QuotaExhausted));
        let (s, _, _) = service_at(
            "2026-03-10T12:00:00Z",
            Some(context(None, UsagePeriod::Day)),
        );
        let d = check(&s, 1_000_000);
        assert!(d.allowed());
        assert_eq!((d.limit(), d.remaining(), d.reset_at()), (None, None, None));
    }

    #[test]
    fn last_second_of_a_day_counts_in_that_day_and_resets_in_one_second() {
        let (s, _, counters) = service_at(
            "2026-11-26T23:59:59Z",
            Some(context(Some(1), UsagePeriod::Day)),
        );
        let d = check(&s, 1);
        assert!(d.allowed());
        assert_eq!(d.reset_in_seconds(), Some(1));
        assert_eq!(d.reset_at(), Some(at("2026-11-27T00:00:00Z")));
        assert!(counters
            .used
            .lock()
            .expect("lock")
            .contains_key(&(7, at("2026-11-26T00:00:00Z"))));
        assert_eq!(check(&s, 1).denied, Some(DenyReason::QuotaExhausted));
    }

    #[test]
    fn new_year_starts_a_new_month_window() {
        let ctx = Some(context(Some(1), UsagePeriod::Month));
        let (s, c, counters) = service_at("2026-12-31T23:59:59Z", ctx);
        assert!(check(&s, 1).allowed());
        let next_year = AccessService::new(
            Arc::new(repo_with(c, counters)),
            Arc::new(FixedClock(at("2027-01-01T00:00:00Z"))),
        );
        let d = check(&next_year, 1);
        assert!(d.allowed(), "January starts from zero");
        assert_eq!(d.reset_at(), Some(at("2027-02-01T00:00:00Z")));
    }

    #[test]
    fn february_windows_end_on_the_28th_or_29th() {
        let (s, _, _) = service_at(
            "2027-02-28T08:00:00Z",
            Some(context(Some(5), UsagePeriod::Month)),
        );
        assert_eq!(check(&s, 1).reset_at(), Some(at("2027-03-01T00:00:00Z")));
        let (s, _, _) = service_at(
            "2028-02-28T08:00:00Z",
            Some(context(Some(5), UsagePeriod::Day)),
        );
        assert_eq!(check(&s, 1).reset_at(), Some(at("2028-02-29T00:00:00Z")));
        let (s, _, _) = service_at(
            "2028-02-29T08:00:00Z",
            Some(context(Some(5), UsagePeriod::Month)),
        );
        let d = check(&s, 1);
        assert_eq!(d.reset_at(), Some(at("2028-03-01T00:00:00Z")));
        assert_eq!(d.reset_in_seconds(), Some(16 * 3600));
    }

    #[test]
    fn usage_consumed_before_a_plan_change_counts_against_the_new_limit() {
        let (s, ctx, _) = service_at(
            "2026-05-20T09:00:00Z",
            Some(context(Some(10), UsagePeriod::Month)),
        );
        assert!(check(&s, 8).allowed());
        // Moved to a smaller plan mid-period: 8 already used of 5.
        *ctx.lock().expect("lock") = Some(context(Some(5), UsagePeriod::Month));
        let d = check(&s, 1);
        assert_eq!(d.denied, Some(DenyReason::QuotaExhausted));
        assert_eq!(d.remaining(), Some(0));
        // Moved to a bigger plan: 8 used of 20.
        *ctx.lock().expect("lock") = Some(context(Some(20), UsagePeriod::Month));
        let d = check(&s, 2);
        assert!(d.allowed());
        assert_eq!(d.remaining(), Some(10));
    }

    #[test]
    fn lifetime_limits_have_no_reset() {
        let (s, _, _) = service_at(
            "2026-05-20T09:00:00Z",
            Some(context(Some(3), UsagePeriod::Lifetime)),
        );
        let d = check(&s, 1);
        assert!(d.allowed());
        assert_eq!(d.limit(), Some(3));
        assert_eq!((d.reset_at(), d.reset_in_seconds()), (None, None));
    }

    #[test]
    fn the_check_consumes_through_the_port_once_the_rules_allow() {
        let mut repo = MockUsageRepository::new();
        repo.expect_access_context()
            .returning(|_| pending::ready(Ok(Some(Arc::new(context(Some(5), UsagePeriod::Day))))));
        repo.expect_consume().times(2).returning(|c| {
            let used = c.cost.get();
            let consumed = if c.limit.is_none_or(|l| used <= l) {
                Consumed::Granted {
                    used,
                    permission_used: None,
                }
            } else {
                Consumed::Exhausted {
                    used: 0,
                    permission_used: None,
                }
            };
            // The store answers later: the check awaits it.
            pending::later(async move { Ok(consumed) })
        });
        let s = AccessService::new(
            Arc::new(repo),
            Arc::new(FixedClock(at("2026-03-10T12:00:00Z"))),
        );
        let active = user(UserStatus::Active);
        let cost = |n| Cost::parse(Some(n)).expect("valid");

        let d = poll_ready(s.check(&active, name("reports:read"), cost(2), None)).expect("ok");
        assert!(d.allowed());
        assert_eq!(d.remaining(), Some(3));
        assert_eq!(d.reset_at(), Some(at("2026-03-11T00:00:00Z")));
        let d = poll_ready(s.check(&active, name("reports:read"), cost(6), None)).expect("ok");
        assert_eq!(d.denied, Some(DenyReason::QuotaExhausted));
        // Denials before the quota never reach `consume` (twice above only).
        let d = poll_ready(s.check(&active, name("other"), cost(1), None)).expect("ok");
        assert_eq!(d.denied, Some(DenyReason::PermissionDenied));
    }

    #[test]
    fn a_store_error_fails_the_check_without_consuming() {
        let mut repo = MockUsageRepository::new();
        repo.expect_access_context()
            .returning(|_| pending::ready(Err(StoreError::Unavailable("down".into()))));
        repo.expect_consume().never();
        let s = AccessService::new(
            Arc::new(repo),
            Arc::new(FixedClock(at("2026-03-10T12:00:00Z"))),
        );
        let cost = Cost::parse(None).expect("1");
        let result =
            poll_ready(s.check(&user(UserStatus::Active), name("reports:read"), cost, None));
        assert!(matches!(
            result,
            Err(CheckError::Store(StoreError::Unavailable(_)))
        ));
    }

    /// A consumption of `reports:read` at noon on 2026-03-10 under a plan
    /// of 100 a month with a permission quota of 10 a day and 5 units/min.
    fn limited_consumption() -> Consumption {
        let now = at("2026-03-10T12:00:00Z");
        Consumption {
            subscription_id: SubscriptionId::from_store(1),
            user_id: UserId::from_store(7),
            permission: name("reports:read"),
            cost: Cost::parse(Some(2)).expect("valid"),
            limit: Some(100),
            period: UsagePeriod::Month,
            window: UsagePeriod::Month.window_at(now),
            at: now,
            permission_quota: Some(PermissionQuota {
                limit: 10,
                period: UsagePeriod::Day,
                window: UsagePeriod::Day.window_at(now),
            }),
            idempotency_key: None,
            hold: None,
            rate_limit: Some(crate::plan::RateLimit::parse(5, 60).expect("valid")),
        }
    }

    #[test]
    fn the_verdict_tests_the_rate_limit_before_the_quotas() {
        use crate::usage::Verdict;
        // Cost 2; plan 100 a month, `reports:read` 10 a day, 5 units a minute.
        let k = limited_consumption();
        assert_eq!(k.verdict(40, Some(6), Some(2_000_000)), Verdict::Fits);
        // A bucket short of the cost wins over an exhausted quota.
        assert_eq!(
            k.verdict(99, Some(9), Some(1_999_999)),
            Verdict::RateLimited(1_999_999)
        );
        assert_eq!(k.verdict(99, Some(6), Some(5_000_000)), Verdict::Exhausted);
        assert_eq!(k.verdict(40, Some(9), Some(5_000_000)), Verdict::Exhausted);
        // Exactly at each limit still fits.
        assert_eq!(k.verdict(98, Some(8), Some(2_000_000)), Verdict::Fits);
    }

    #[test]
    fn the_binding_quota_is_the_one_with_fewest_units_left() {
        // The permission's day window lies inside the plan's month window.
        let d = after_consuming(
            limited_consumption(),
            Consumed::Granted {
                used: 40,
                permission_used: Some(6),
            },
        )
        .expect("decided");
        assert!(d.allowed());
        assert_eq!(d.quotas.len(), 2);
        assert_eq!((d.limit(), d.remaining()), (Some(10), Some(4)));
        assert_eq!(d.reset_at(), Some(at("2026-03-11T00:00:00Z")));
        assert_eq!(d.quotas[0].reset_at, Some(at("2026-04-01T00:00:00Z")));
        assert_eq!(d.retry_after, None);
        // A tie goes to the permission's own quota.
        let tie = after_consuming(
            limited_consumption(),
            Consumed::Granted {
                used: 96,
                permission_used: Some(6),
            },
        )
        .expect("decided");
        assert_eq!(
            binding(&tie.quotas).map(|q| q.scope),
            Some(QuotaScope::Permission)
        );
    }

    #[test]
    fn a_rate_limited_check_retries_when_the_bucket_holds_its_cost() {
        // 5 units a minute: 12 s a unit; the bucket holds 0.5, the cost is 2.
        let d = after_consuming(
            limited_consumption(),
            Consumed::RateLimited {
                used: 40,
                permission_used: Some(6),
                tokens: 500_000,
            },
        )
        .expect("decided");
        assert_eq!(d.denied, Some(DenyReason::RateLimited));
        assert_eq!(d.retry_after, Some(18));
        assert_eq!(d.remaining(), Some(4), "quotas as they stand");
    }

    #[test]
    fn an_exhausted_quota_retries_at_the_binding_quotas_reset() {
        let d = after_consuming(
            limited_consumption(),
            Consumed::Exhausted {
                used: 40,
                permission_used: Some(9),
            },
        )
        .expect("decided");
        assert_eq!(d.denied, Some(DenyReason::QuotaExhausted));
        // The day's last second is 11:59:59 later; noon to midnight is 12 h.
        assert_eq!(d.retry_after, Some(12 * 3600));
        assert_eq!((d.limit(), d.remaining()), (Some(10), Some(1)));
    }

    #[test]
    fn a_permission_quota_exhausted_in_the_last_second_of_its_day_retries_in_one_second() {
        let last = at("2026-03-10T23:59:59Z");
        let mut k = limited_consumption();
        k.at = last;
        k.window = UsagePeriod::Month.window_at(last);
        k.permission_quota = Some(PermissionQuota {
            limit: 10,
            period: UsagePeriod::Day,
            window: UsagePeriod::Day.window_at(last),
        });
        let d = after_consuming(
            k,
            Consumed::Exhausted {
                used: 40,
                permission_used: Some(10),
            },
        )
        .expect("decided");
        assert_eq!(d.reset_at(), Some(at("2026-03-11T00:00:00Z")));
        assert_eq!(d.retry_after, Some(1));
        assert_eq!(d.quotas[0].reset_at, Some(at("2026-04-01T00:00:00Z")));
    }

    #[test]
    fn preview_decides_without_consuming() {
        let mut repo = MockUsageRepository::new();
        repo.expect_consume().never();
        // The store's answer as it stands: 4 of 5 used, nothing taken.
        repo.expect_peek().returning(|c| {
            let used = 4;
            Ok(if c.limit.is_none_or(|l| used + c.cost.get() <= l) {
                Consumed::Granted {
                    used,
                    permission_used: None,
                }
            } else {
                Consumed::Exhausted {
                    used,
                    permission_used: None,
                }
            })
        });
        let s = AccessService::new(
            Arc::new(repo),
            Arc::new(FixedClock(at("2026-03-10T12:00:00Z"))),
        );
        let active = user(UserStatus::Active);
        let ctx = Some(Arc::new(context(Some(5), UsagePeriod::Day)));
        let cost = |n| Cost::parse(Some(n)).expect("valid");

        let fits = s
            .preview(&active, name("reports:read"), cost(1), ctx.clone())
            .expect("ok");
        assert!(fits.allowed());
        // Nothing taken: what is left now, not after a unit.
        assert_eq!(fits.remaining(), Some(1));
        let over = s
            .preview(&active, name("reports:read"), cost(2), ctx.clone())
            .expect("ok");
        assert_eq!(over.denied, Some(DenyReason::QuotaExhausted));
        assert_eq!(over.remaining(), Some(1));
        let other = s.preview(&active, name("other"), cost(1), ctx).expect("ok");
        assert_eq!(other.denied, Some(DenyReason::PermissionDenied));
    }

    #[test]
    fn a_report_is_the_users_counters_of_the_window_read_once_net_of_held_units() {
        let mut repo = MockUsageRepository::new();
        repo.expect_access_context().never();
        repo.expect_events().never();
        // Held reservations' units are in the counters: 2 of b's, all of c's.
        repo.expect_used_and_held()
            .times(1)
            .withf(|user, window| {
                *user == UserId::from_store(7) && window.start == at("2026-03-01T00:00:00Z")
            })
            .returning(|_, _| {
                Ok((
                    vec![
                        ("a".to_owned(), 3),
                        ("b".to_owned(), 4),
                        ("c".to_owned(), 1),
                    ],
                    vec![("b".to_owned(), 2), ("c".to_owned(), 1)],
                ))
            });
        let s = AccessService::new(
            Arc::new(repo),
            Arc::new(FixedClock(at("2026-03-10T12:00:00Z"))),
        );
        let ctx = Some(Arc::new(context(Some(10), UsagePeriod::Month)));
        let r = s.report(UserId::from_store(7), ctx).expect("report");
        assert_eq!(
            (r.used, r.reserved, r.limit, r.remaining),
            (5, 3, Some(10), Some(2))
        );
        assert_eq!(r.by_permission.get("b"), Some(&2));
        assert_eq!(r.by_permission.get("c"), None, "only held units");
        assert_eq!(r.quotas[0].remaining, 2, "net of held units");
        assert_eq!(r.period.end, Some(at("2026-04-01T00:00:00Z")));
    }

    #[test]
    fn cost_must_be_1_to_a_million() {
        assert!(Cost::parse(Some(0)).is_err());
        assert!(Cost::parse(Some(1_000_001)).is_err());
        assert_eq!(Cost::parse(None).map(Cost::get), Ok(1));
        assert_eq!(Cost::parse(Some(1_000_000)).map(Cost::get), Ok(1_000_000));
    }
}
