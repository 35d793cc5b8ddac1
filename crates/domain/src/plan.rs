//! Plans: what a subscriber may do (permissions) and how much (usage limit per period).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::period::UsagePeriod;
use crate::permission::{PermissionName, PermissionRepository};
use crate::text::text_type;
use crate::{Page, PageRequest, PlanId, StoreError, ValidationError};

text_type!(
    /// 1..=255 characters, any printable text.
    PlanName, field = "name", min = 1, max = 255
);
text_type!(
    /// 0..=1000 characters.
    PlanDescription, field = "description", min = 0, max = 1000
);

/// Units a subscriber may consume per period; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageLimit(Option<i64>);

impl UsageLimit {
    /// No limit: every check of a granted permission is allowed.
    pub const UNLIMITED: Self = Self(None);

    /// A limit must be >= 0 (0 grants nothing).
    pub fn parse(value: Option<i64>) -> Result<Self, ValidationError> {
        match value {
            Some(v) if v < 0 => Err(ValidationError::new("usage_limit", "must be >= 0")),
            other => Ok(Self(other)),
        }
    }

    /// The limit; `None` is unlimited.
    pub fn get(self) -> Option<i64> {
        self.0
    }
}

/// A plan's permission list: order kept as given, duplicates removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermissionList(Vec<PermissionName>);

impl PermissionList {
    /// The most permissions a plan grants.
    pub const MAX: usize = 256;

    /// A list a client gave: at most [`Self::MAX`] names once duplicates
    /// are removed.
    pub fn parse(names: impl IntoIterator<Item = PermissionName>) -> Result<Self, ValidationError> {
        let list = Self::new(names);
        if list.0.len() > Self::MAX {
            return Err(ValidationError::new(
                "permissions",
                format!("at most {} permissions", Self::MAX),
            ));
        }
        Ok(list)
    }

    /// The list as stored (duplicates removed, no bound: a stored list was
    /// parsed when it was written).
    pub fn new(names: impl IntoIterator<Item = PermissionName>) -> Self {
        let mut list: Vec<PermissionName> = Vec::new();
        for name in names {
            if !list.contains(&name) {
                list.push(name);
            }
        }
        Self(list)
    }

    /// The permissions in the plan's order.
    pub fn names(&self) -> &[PermissionName] {
        &self.0
    }

    /// Whether the list grants the permission `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n.as_str() == name)
    }
}

/// A permission's own quota in a plan: units per period of that permission
/// alone, on top of the plan-wide quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionLimit {
    /// Units per period, `>= 0` (0 grants nothing).
    pub usage_limit: i64,
    /// How often this quota resets.
    pub usage_period: UsagePeriod,
}

impl PermissionLimit {
    /// A limit must be `>= 0`.
    pub fn parse(usage_limit: i64, usage_period: UsagePeriod) -> Result<Self, ValidationError> {
        if usage_limit < 0 {
            return Err(ValidationError::new(
                "permission_limits",
                "usage_limit must be >= 0",
            ));
        }
        Ok(Self {
            usage_limit,
            usage_period,
        })
    }
}

/// A plan's permission quotas, by permission name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermissionLimits(std::collections::BTreeMap<PermissionName, PermissionLimit>);

impl PermissionLimits {
    /// The quotas of `limits`.
    pub fn new(limits: impl IntoIterator<Item = (PermissionName, PermissionLimit)>) -> Self {
        Self(limits.into_iter().collect())
    }

    /// The quota of `permission`, if it has one.
    pub fn get(&self, permission: &str) -> Option<PermissionLimit> {
        self.0.get(permission).copied()
    }

    /// Every quota, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&PermissionName, &PermissionLimit)> {
        self.0.iter()
    }

    /// Whether no permission has a quota.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Err when a limited permission is not in `permissions`.
    pub fn check_within(&self, permissions: &PermissionList) -> Result<(), ValidationError> {
        match self
            .0
            .keys()
            .find(|name| !permissions.contains(name.as_str()))
        {
            Some(name) => Err(ValidationError::new(
                "permission_limits",
                format!("{name} is not one of the plan's permissions"),
            )),
            None => Ok(()),
        }
    }
}

/// A token bucket per subscriber over all of a plan's permissions: it holds
/// at most `units`, starts full and refills at `units / per_seconds` units a
/// second; a check takes its cost from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    units: i64,
    per_seconds: i64,
}

impl RateLimit {
    /// The most units a bucket holds.
    pub const MAX_UNITS: i64 = 1_000_000_000;
    /// The longest refill period.
    pub const MAX_PER_SECONDS: i64 = 86_400;

    /// `units` 1..=1,000,000,000, `per_seconds` 1..=86,400.
    pub fn parse(units: i64, per_seconds: i64) -> Result<Self, ValidationError> {
        if !(1..=Self::MAX_UNITS).contains(&units) {
            return Err(ValidationError::new(
                "rate_limit",
                "units must be between 1 and 1000000000",
            ));
        }
        if !(1..=Self::MAX_PER_SECONDS).contains(&per_seconds) {
            return Err(ValidationError::new(
                "rate_limit",
                "per_seconds must be between 1 and 86400",
            ));
        }
        Ok(Self { units, per_seconds })
    }

    /// The bucket's capacity.
    pub fn units(self) -> i64 {
        self.units
    }

    /// Seconds to refill an empty bucket.
    pub fn per_seconds(self) -> i64 {
        self.per_seconds
    }

    /// A full bucket, in micro-units (the store's unit).
    pub fn capacity_micros(self) -> i64 {
        self.units * MICROS
    }

    /// The bucket's micro-units after `elapsed_micros` of refill from
    /// `tokens`, capped at the capacity. Rounded down: the bucket never
    /// holds more than the exact refill would give.
    pub fn refilled(self, tokens: i64, elapsed_micros: i64) -> i64 {
        let capacity = self.capacity_micros();
        if elapsed_micros <= 0 {
            return tokens.min(capacity);
        }
        // micro-units per microsecond = units / per_seconds / 1e6 * 1e6.
        let refill =
            i128::from(elapsed_micros) * i128::from(self.units) / i128::from(self.per_seconds);
        let total = i128::from(tokens) + refill;
        i64::try_from(total.min(i128::from(capacity))).unwrap_or(capacity)
    }

    /// Whether a bucket of `tokens` micro-units holds `cost` units.
    pub fn holds(self, tokens: i64, cost: i64) -> bool {
        i128::from(tokens) >= i128::from(cost) * i128::from(MICROS)
    }

    /// A bucket of `tokens` micro-units once `cost` units are taken.
    pub fn take(self, tokens: i64, cost: i64) -> i64 {
        tokens - cost * MICROS
    }

    /// Whole seconds until a bucket of `tokens` micro-units holds `cost`
    /// units: rounded up, at least 1.
    pub fn seconds_until(self, tokens: i64, cost: i64) -> i64 {
        let missing = i128::from(cost) * i128::from(MICROS) - i128::from(tokens);
        if missing <= 0 {
            return 1;
        }
        // micro-units refill at units per per_seconds seconds, i.e.
        // units * 1e6 micro-units per per_seconds seconds.
        let per = i128::from(self.units) * i128::from(MICROS);
        let seconds = (missing * i128::from(self.per_seconds) + per - 1) / per;
        i64::try_from(seconds.max(1)).unwrap_or(i64::MAX)
    }
}

/// Micro-units in a unit: the bucket is kept in whole micro-units.
const MICROS: i64 = 1_000_000;

/// A plan: the permissions it grants and how much may be consumed per period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The plan's id.
    pub id: PlanId,
    /// The plan's unique name.
    pub name: PlanName,
    /// What the plan offers, for people.
    pub description: PlanDescription,
    /// The permissions the plan grants.
    pub permissions: PermissionList,
    /// Units a subscriber may consume per period.
    pub usage_limit: UsageLimit,
    /// How often the usage resets.
    pub usage_period: UsagePeriod,
    /// Quotas of single permissions, on top of the plan-wide one.
    pub permission_limits: PermissionLimits,
    /// The subscriber's rate limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// When the plan was created.
    pub created_at: DateTime<Utc>,
    /// When the plan last changed.
    pub updated_at: DateTime<Utc>,
}

/// A plan to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPlan {
    /// Its unique name.
    pub name: PlanName,
    /// What it offers.
    pub description: PlanDescription,
    /// The permissions it grants (each must exist).
    pub permissions: PermissionList,
    /// Units per period.
    pub usage_limit: UsageLimit,
    /// How often the usage resets.
    pub usage_period: UsagePeriod,
    /// Quotas of single permissions (each one of `permissions`).
    pub permission_limits: PermissionLimits,
    /// The subscriber's rate limit, if any.
    pub rate_limit: Option<RateLimit>,
}

/// Fields to change; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanPatch {
    /// A new name, if given.
    pub name: Option<PlanName>,
    /// A new description, if given.
    pub description: Option<PlanDescription>,
    /// A new permission list (replacing the old), if given.
    pub permissions: Option<PermissionList>,
    /// A new limit, if given.
    pub usage_limit: Option<UsageLimit>,
    /// A new period, if given.
    pub usage_period: Option<UsagePeriod>,
    /// New permission quotas (replacing all the old), if given.
    pub permission_limits: Option<PermissionLimits>,
    /// A new rate limit (`Some(None)` removes it), if given.
    pub rate_limit: Option<Option<RateLimit>>,
}

/// Why a plan operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// There is no such plan (HTTP 404).
    #[error("plan not found")]
    NotFound,
    /// Another plan has this name (HTTP 409).
    #[error("a plan with this name already exists")]
    NameTaken,
    /// The named permission does not exist (HTTP 422).
    #[error("unknown permission: {0}")]
    UnknownPermission(PermissionName),
    /// Active subscriptions use the plan, so it cannot be deleted (HTTP 409).
    #[error("the plan has active subscriptions")]
    InUse,
    /// The input breaks a rule (HTTP 422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where plans and their permission lists are kept.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait PlanRepository: Send + Sync {
    /// Returns Err(NameTaken), or Err(UnknownPermission) if a listed permission
    /// vanished meanwhile (checked in the same transaction as the insert).
    fn create(&self, new: &NewPlan, now: DateTime<Utc>) -> Result<Plan, PlanError>;
    /// Returns Err(NotFound) if there is no such plan.
    fn get(&self, id: PlanId) -> Result<Plan, PlanError>;
    /// One page of the plans in id order.
    fn list(&self, page: PageRequest) -> Result<Page<Plan>, StoreError>;
    /// Returns Err(NotFound), Err(NameTaken) or Err(UnknownPermission).
    fn update(&self, id: PlanId, patch: &PlanPatch, now: DateTime<Utc>) -> Result<Plan, PlanError>;
    /// Deletes the plan and its canceled subscriptions. Returns Err(NotFound),
    /// or Err(InUse) if an active subscription uses it (checked atomically).
    fn delete(&self, id: PlanId) -> Result<(), PlanError>;
    /// Whether an active subscription uses the plan.
    fn has_active_subscriptions(&self, id: PlanId) -> Result<bool, StoreError>;
}

/// The plan use cases.
#[derive(Clone)]
pub struct PlanService {
    plans: Arc<dyn PlanRepository>,
    permissions: Arc<dyn PermissionRepository>,
    clock: Arc<dyn Clock>,
}

impl PlanService {
    /// The use cases on `plans` and `permissions`, with `clock` for creation and change times.
    pub fn new(
        plans: Arc<dyn PlanRepository>,
        permissions: Arc<dyn PermissionRepository>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            plans,
            permissions,
            clock,
        }
    }

    /// A plan may only grant permissions that exist, and limit only
    /// permissions it grants.
    pub fn create(&self, new: NewPlan) -> Result<Plan, PlanError> {
        new.permission_limits.check_within(&new.permissions)?;
        self.ensure_known(&new.permissions)?;
        self.plans.create(&new, self.clock.now())
    }

    /// The plan `id`; Err(NotFound) if there is none.
    pub fn get(&self, id: PlanId) -> Result<Plan, PlanError> {
        self.plans.get(id)
    }

    /// One page of the plans in id order.
    pub fn list(&self, page: PageRequest) -> Result<Page<Plan>, PlanError> {
        Ok(self.plans.list(page)?)
    }

    /// Applies `patch` to the plan `id`; Err(NotFound), Err(NameTaken) or Err(UnknownPermission).
    /// After the patch, every limited permission must be one the plan grants.
    pub fn update(&self, id: PlanId, patch: PlanPatch) -> Result<Plan, PlanError> {
        if patch.permissions.is_some() || patch.permission_limits.is_some() {
            let current = self.plans.get(id)?;
            let permissions = patch.permissions.as_ref().unwrap_or(&current.permissions);
            let limits = patch
                .permission_limits
                .as_ref()
                .unwrap_or(&current.permission_limits);
            limits.check_within(permissions)?;
        }
        if let Some(list) = &patch.permissions {
            self.ensure_known(list)?;
        }
        self.plans.update(id, &patch, self.clock.now())
    }

    /// A plan with active subscriptions cannot be deleted.
    pub fn delete(&self, id: PlanId) -> Result<(), PlanError> {
        // An unknown id has no subscriptions; the repository's delete says NotFound.
        if self.plans.has_active_subscriptions(id)? {
            return Err(PlanError::InUse);
        }
        self.plans.delete(id)
    }

    fn ensure_known(&self, list: &PermissionList) -> Result<(), PlanError> {
        if list.names().is_empty() {
            return Ok(());
        }
        match self.permissions.missing(list.names())?.into_iter().next() {
            Some(name) => Err(PlanError::UnknownPermission(name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::RateLimit;

    #[test]
    fn a_bucket_refills_one_unit_after_exactly_per_seconds_over_units() {
        // 20 units per 2 s: one unit every 100 ms.
        let rate = RateLimit::parse(20, 2).expect("valid");
        assert_eq!(rate.refilled(0, 99_999), 999_990);
        assert_eq!(rate.refilled(0, 100_000), 1_000_000);
        // Never above the capacity, whatever the time.
        assert_eq!(rate.refilled(19_500_000, 10_000_000), 20_000_000);
        // A clock that went back refills nothing.
        assert_eq!(rate.refilled(5, -1_000), 5);
    }

    #[test]
    fn retry_after_is_the_wait_for_the_missing_units_rounded_up() {
        // 40 units a day: 2,160 s a unit.
        let rate = RateLimit::parse(40, 86_400).expect("valid");
        assert_eq!(rate.seconds_until(0, 1), 2_160);
        assert_eq!(rate.seconds_until(500_000, 1), 1_080);
        assert_eq!(rate.seconds_until(999_999, 1), 1);
        let fast = RateLimit::parse(1_000, 1).expect("valid");
        assert_eq!(fast.seconds_until(0, 1), 1, "at least 1");
    }

    #[test]
    fn rate_limits_are_1_to_a_billion_units_per_1_to_86400_seconds() {
        assert!(RateLimit::parse(0, 1).is_err());
        assert!(RateLimit::parse(1_000_000_001, 1).is_err());
        assert!(RateLimit::parse(1, 0).is_err());
        assert!(RateLimit::parse(1, 86_401).is_err());
        assert!(RateLimit::parse(1_000_000_000, 86_400).is_ok());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_permission_list_holds_at_most_256_distinct_names() {
        use super::PermissionList;
        use crate::permission::PermissionName;
        let names =
            |n: usize| (0..n).map(|i| PermissionName::parse(format!("p{i}")).expect("valid"));
        assert_eq!(
            PermissionList::parse(names(256)).map(|l| l.names().len()),
            Ok(256)
        );
        assert!(PermissionList::parse(names(257)).is_err());
        // Duplicates do not count.
        let twice = names(256).chain(names(256));
        assert_eq!(
            PermissionList::parse(twice).map(|l| l.names().len()),
            Ok(256)
        );
    }

    use super::*;
    use crate::clock::SystemClock;
    use crate::permission::MockPermissionRepository;

    fn name(s: &str) -> PermissionName {
        PermissionName::parse(s).expect("valid")
    }

    fn new_plan(perms: &[&str]) -> NewPlan {
        NewPlan {
            name: PlanName::parse("Pro").expect("valid"),
            description: PlanDescription::parse("").expect("valid"),
            permissions: PermissionList::new(perms.iter().map(|p| name(p))),
            usage_limit: UsageLimit::parse(Some(10)).expect("valid"),
            usage_period: UsagePeriod::Month,
            permission_limits: Default::default(),
            rate_limit: None,
        }
    }

    fn stored(id: i64, new: &NewPlan) -> Plan {
        let now = Utc::now();
        Plan {
            id: PlanId::from_store(id),
            name: new.name.clone(),
            description: new.description.clone(),
            permissions: new.permissions.clone(),
            usage_limit: new.usage_limit,
            usage_period: new.usage_period,
            permission_limits: new.permission_limits.clone(),
            rate_limit: new.rate_limit,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn plan_with_unknown_permission_is_refused_before_any_write() {
        let mut perms = MockPermissionRepository::new();
        perms.expect_missing().returning(|names| {
            Ok(names
                .iter()
                .filter(|n| n.as_str() == "nope")
                .cloned()
                .collect())
        });
        let mut plans = MockPlanRepository::new();
        plans.expect_create().never();
        let service = PlanService::new(Arc::new(plans), Arc::new(perms), Arc::new(SystemClock));

        let result = service.create(new_plan(&["reports:read", "nope"]));

        assert!(matches!(result, Err(PlanError::UnknownPermission(n)) if n.as_str() == "nope"));
    }

    #[test]
    fn plan_with_known_permissions_is_created() {
        let mut perms = MockPermissionRepository::new();
        perms.expect_missing().returning(|_| Ok(vec![]));
        let mut plans = MockPlanRepository::new();
        plans
            .expect_create()
            .times(1)
            .returning(|new, _| Ok(stored(1, new)));
        let service = PlanService::new(Arc::new(plans), Arc::new(perms), Arc::new(SystemClock));

        let plan = service
            .create(new_plan(&["reports:read"]))
            .expect("created");

        assert_eq!(plan.permissions.names(), &[name("reports:read")]);
    }

    #[test]
    fn plan_in_use_cannot_be_deleted() {
        let mut plans = MockPlanRepository::new();
        plans
            .expect_has_active_subscriptions()
            .returning(|_| Ok(true));
        plans.expect_delete().never();
        let service = PlanService::new(
            Arc::new(plans),
            Arc::new(MockPermissionRepository::new()),
            Arc::new(SystemClock),
        );

        assert!(matches!(
            service.delete(PlanId::from_store(1)),
            Err(PlanError::InUse)
        ));
    }

    #[test]
    fn permission_list_keeps_order_and_drops_duplicates() {
        let list = PermissionList::new(["b", "a", "b", "c", "a"].map(name));
        let got: Vec<&str> = list.names().iter().map(PermissionName::as_str).collect();
        assert_eq!(got, vec!["b", "a", "c"]);
    }

    #[test]
    fn usage_limit_must_not_be_negative() {
        assert!(UsageLimit::parse(Some(-1)).is_err());
        assert_eq!(UsageLimit::parse(Some(0)).map(UsageLimit::get), Ok(Some(0)));
        assert_eq!(UsageLimit::parse(None).map(UsageLimit::get), Ok(None));
    }

    #[test]
    fn plan_names_are_case_sensitive_values() {
        let pro = PlanName::parse("Pro").expect("valid");
        let lower = PlanName::parse("pro").expect("valid");
        assert_ne!(pro, lower);
        assert!(PlanName::parse("").is_err());
        assert!(PlanName::parse("\u{1F680}".repeat(255)).is_ok());
        assert!(PlanName::parse("x".repeat(256)).is_err());
    }
}
