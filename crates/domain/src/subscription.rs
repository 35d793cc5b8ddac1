//! Subscriptions: a user's plan. At most one is active per user.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::period::{UsagePeriod, Window};
use crate::plan::{PlanError, PlanRepository};
use crate::user::{UserError, UserRepository};
use crate::{Page, PageRequest, PlanId, StoreError, SubscriptionId, UserId, ValidationError};

/// Whether a subscription is the user's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    /// The user's current subscription (at most one per user).
    Active,
    /// Ended; kept for the history.
    Canceled,
}

impl SubscriptionStatus {
    /// Parses `active` or `canceled`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "active" => Ok(Self::Active),
            "canceled" => Ok(Self::Canceled),
            _ => Err(ValidationError::new("status", "must be active or canceled")),
        }
    }

    /// The status as the contract names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Canceled => "canceled",
        }
    }
}

/// A user's subscription to a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// The subscriber.
    pub user_id: UserId,
    /// The plan subscribed to.
    pub plan_id: PlanId,
    /// Active or canceled.
    pub status: SubscriptionStatus,
    /// When it started (a plan change keeps it).
    pub started_at: DateTime<Utc>,
    /// When it was canceled, if it was.
    pub canceled_at: Option<DateTime<Utc>>,
    /// The period of its plan, read together with the subscription.
    pub usage_period: UsagePeriod,
}

impl Subscription {
    /// The usage window the subscription is in at `now` (for a canceled one,
    /// the window it was canceled in). A lifetime window is shown from the
    /// subscription's start.
    pub fn window_at(&self, now: DateTime<Utc>) -> Window {
        let at = self.canceled_at.unwrap_or(now);
        self.usage_period.shown_window(at, self.started_at)
    }
}

/// Filters of the subscription list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// Only subscriptions to this plan, if given.
    pub plan_id: Option<PlanId>,
    /// Only subscriptions of this status, if given.
    pub status: Option<SubscriptionStatus>,
}

/// Why a subscription operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// The user does not exist (HTTP 404).
    #[error("user not found")]
    UserNotFound,
    /// The plan to subscribe to does not exist (HTTP 422).
    #[error("unknown plan")]
    UnknownPlan,
    /// The user has no active subscription (HTTP 404).
    #[error("no active subscription")]
    NoActiveSubscription,
    /// The user already has an active subscription (a concurrent subscribe won).
    #[error("the user already has an active subscription")]
    AlreadyActive,
    /// The input breaks a rule (HTTP 422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UserError> for SubscriptionError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::NotFound => Self::UserNotFound,
            UserError::Store(s) => Self::Store(s),
            UserError::Invalid(v) => Self::Invalid(v),
            // Looking a user up cannot fail so: a bug if it does.
            e @ (UserError::UsernameTaken | UserError::LastAdmin) => {
                Self::Store(StoreError::Unexpected(Box::new(e)))
            }
        }
    }
}

impl From<PlanError> for SubscriptionError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::NotFound => Self::UnknownPlan,
            PlanError::Store(s) => Self::Store(s),
            PlanError::Invalid(v) => Self::Invalid(v),
            // Looking a plan up cannot fail so: a bug if it does.
            e @ (PlanError::NameTaken | PlanError::UnknownPermission(_) | PlanError::InUse) => {
                Self::Store(StoreError::Unexpected(Box::new(e)))
            }
        }
    }
}

/// Where subscriptions are kept.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait SubscriptionRepository: Send + Sync {
    /// Starts an active subscription. Returns Err(AlreadyActive) if the user
    /// has one (enforced by a unique constraint), Err(UserNotFound) or
    /// Err(UnknownPlan) if either vanished.
    fn create(
        &self,
        user_id: UserId,
        plan_id: PlanId,
        now: DateTime<Utc>,
    ) -> Result<Subscription, SubscriptionError>;
    /// Moves the user's active subscription to another plan, keeping its usage
    /// (`now` says which window's usage counts when the period kind changes).
    /// Returns Err(NoActiveSubscription) or Err(UnknownPlan).
    fn change_plan(
        &self,
        user_id: UserId,
        plan_id: PlanId,
        now: DateTime<Utc>,
    ) -> Result<Subscription, SubscriptionError>;
    /// The user's active subscription, if any.
    fn find_active(&self, user_id: UserId) -> Result<Option<Subscription>, StoreError>;
    /// Returns Err(NoActiveSubscription) if the user has none.
    fn cancel(&self, user_id: UserId, now: DateTime<Utc>) -> Result<(), SubscriptionError>;
    /// One page of the subscriptions matching `filter`, in id order.
    fn list(
        &self,
        filter: SubscriptionFilter,
        page: PageRequest,
    ) -> Result<Page<Subscription>, StoreError>;
}

/// Whether `subscribe` started a subscription or moved one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// A new subscription was started.
    Created,
    /// The active subscription moved to another plan.
    Changed,
}

/// The subscription use cases.
#[derive(Clone)]
pub struct SubscriptionService {
    subscriptions: Arc<dyn SubscriptionRepository>,
    users: Arc<dyn UserRepository>,
    plans: Arc<dyn PlanRepository>,
    clock: Arc<dyn Clock>,
}

impl SubscriptionService {
    /// The use cases on `subscriptions`, `users` and `plans`, with `clock` for start and cancel times.
    pub fn new(
        subscriptions: Arc<dyn SubscriptionRepository>,
        users: Arc<dyn UserRepository>,
        plans: Arc<dyn PlanRepository>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            subscriptions,
            users,
            plans,
            clock,
        }
    }

    /// Now, by the service's clock (the periods a response shows).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Subscribes the user to the plan, or moves their active subscription to
    /// it (usage consumed in the period stays and counts against the new plan).
    pub fn subscribe(
        &self,
        user_id: UserId,
        plan_id: PlanId,
    ) -> Result<(Subscription, Subscribed), SubscriptionError> {
        self.users.get(user_id)?;
        self.plans.get(plan_id)?;
        if self.subscriptions.find_active(user_id)?.is_some() {
            let moved = self
                .subscriptions
                .change_plan(user_id, plan_id, self.clock.now())?;
            return Ok((moved, Subscribed::Changed));
        }
        match self
            .subscriptions
            .create(user_id, plan_id, self.clock.now())
        {
            Ok(created) => Ok((created, Subscribed::Created)),
            // A concurrent request subscribed first: this one becomes a change.
            Err(SubscriptionError::AlreadyActive) => {
                let moved = self
                    .subscriptions
                    .change_plan(user_id, plan_id, self.clock.now())?;
                Ok((moved, Subscribed::Changed))
            }
            Err(e) => Err(e),
        }
    }

    /// The user's active subscription; Err(UserNotFound) or Err(NoActiveSubscription).
    pub fn active(&self, user_id: UserId) -> Result<Subscription, SubscriptionError> {
        self.users.get(user_id)?;
        self.subscriptions
            .find_active(user_id)?
            .ok_or(SubscriptionError::NoActiveSubscription)
    }

    /// Cancels the user's active subscription; Err(NoActiveSubscription) if there is none.
    pub fn cancel(&self, user_id: UserId) -> Result<(), SubscriptionError> {
        self.users.get(user_id)?;
        self.subscriptions.cancel(user_id, self.clock.now())
    }

    /// One page of the subscriptions matching `filter`, in id order.
    pub fn list(
        &self,
        filter: SubscriptionFilter,
        page: PageRequest,
    ) -> Result<Page<Subscription>, SubscriptionError> {
        Ok(self.subscriptions.list(filter, page)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::plan::{
        MockPlanRepository, PermissionList, Plan, PlanDescription, PlanName, UsageLimit,
    };
    use crate::user::{MockUserRepository, Role, User, UserStatus, Username};

    fn user(id: UserId) -> User {
        let now = Utc::now();
        User {
            id,
            username: Username::parse("bob").expect("valid"),
            role: Role::User,
            status: UserStatus::Active,
            created_at: now,
            updated_at: now,
        }
    }

    fn plan(id: PlanId) -> Plan {
        let now = Utc::now();
        Plan {
            id,
            name: PlanName::parse("Pro").expect("valid"),
            description: PlanDescription::parse("").expect("valid"),
            permissions: PermissionList::default(),
            usage_limit: UsageLimit::UNLIMITED,
            usage_period: UsagePeriod::Month,
            permission_limits: Default::default(),
            rate_limit: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn sub(user_id: UserId, plan_id: PlanId) -> Subscription {
        Subscription {
            id: SubscriptionId::from_store(1),
            user_id,
            plan_id,
            status: SubscriptionStatus::Active,
            started_at: Utc::now(),
            canceled_at: None,
            usage_period: UsagePeriod::Month,
        }
    }

    fn known_user_and_plan() -> (MockUserRepository, MockPlanRepository) {
        let mut users = MockUserRepository::new();
        users.expect_get().returning(|id| Ok(user(id)));
        let mut plans = MockPlanRepository::new();
        plans.expect_get().returning(|id| Ok(plan(id)));
        (users, plans)
    }

    fn service(
        subs: MockSubscriptionRepository,
        users: MockUserRepository,
        plans: MockPlanRepository,
    ) -> SubscriptionService {
        SubscriptionService::new(
            Arc::new(subs),
            Arc::new(users),
            Arc::new(plans),
            Arc::new(SystemClock),
        )
    }

    #[test]
    fn first_subscribe_creates() {
        let (users, plans) = known_user_and_plan();
        let mut subs = MockSubscriptionRepository::new();
        subs.expect_find_active().returning(|_| Ok(None));
        subs.expect_create()
            .times(1)
            .returning(|u, p, _| Ok(sub(u, p)));
        subs.expect_change_plan().never();

        let (_, how) = service(subs, users, plans)
            .subscribe(UserId::from_store(1), PlanId::from_store(2))
            .expect("subscribed");

        assert_eq!(how, Subscribed::Created);
    }

    #[test]
    fn subscribe_with_an_active_subscription_changes_plan() {
        let (users, plans) = known_user_and_plan();
        let mut subs = MockSubscriptionRepository::new();
        subs.expect_find_active()
            .returning(|u| Ok(Some(sub(u, PlanId::from_store(1)))));
        subs.expect_create().never();
        subs.expect_change_plan()
            .times(1)
            .returning(|u, p, _| Ok(sub(u, p)));

        let (s, how) = service(subs, users, plans)
            .subscribe(UserId::from_store(1), PlanId::from_store(2))
            .expect("moved");

        assert_eq!(how, Subscribed::Changed);
        assert_eq!(s.plan_id, PlanId::from_store(2));
    }

    #[test]
    fn losing_a_subscribe_race_becomes_a_change() {
        let (users, plans) = known_user_and_plan();
        let mut subs = MockSubscriptionRepository::new();
        subs.expect_find_active().returning(|_| Ok(None));
        subs.expect_create()
            .returning(|_, _, _| Err(SubscriptionError::AlreadyActive));
        subs.expect_change_plan()
            .times(1)
            .returning(|u, p, _| Ok(sub(u, p)));

        let (_, how) = service(subs, users, plans)
            .subscribe(UserId::from_store(1), PlanId::from_store(2))
            .expect("moved");

        assert_eq!(how, Subscribed::Changed);
    }

    #[test]
    fn unknown_plan_is_refused() {
        let mut users = MockUserRepository::new();
        users.expect_get().returning(|id| Ok(user(id)));
        let mut plans = MockPlanRepository::new();
        plans.expect_get().returning(|_| Err(PlanError::NotFound));
        let mut subs = MockSubscriptionRepository::new();
        subs.expect_create().never();

        let result =
            service(subs, users, plans).subscribe(UserId::from_store(1), PlanId::from_store(99));

        assert!(matches!(result, Err(SubscriptionError::UnknownPlan)));
    }

    #[test]
    fn unknown_user_is_not_found() {
        let mut users = MockUserRepository::new();
        users.expect_get().returning(|_| Err(UserError::NotFound));
        let result = service(
            MockSubscriptionRepository::new(),
            users,
            MockPlanRepository::new(),
        )
        .subscribe(UserId::from_store(5), PlanId::from_store(1));

        assert!(matches!(result, Err(SubscriptionError::UserNotFound)));
    }
}
