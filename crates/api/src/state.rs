//! The services the handlers call, on the adapters of the domain's ports
//! (the `tollgate` binary gives its database; tests give mocks).

use std::sync::Arc;
use std::time::Duration;

use tollgate_domain::access::AccessService;
use tollgate_domain::api_key::{ApiKeyRepository, ApiKeyService};
use tollgate_domain::clock::{Clock, SystemClock};
use tollgate_domain::permission::{PermissionRepository, PermissionService};
use tollgate_domain::plan::{PlanRepository, PlanService};
use tollgate_domain::reservation::{ReservationRepository, ReservationService};
use tollgate_domain::status::StoreStatus;
use tollgate_domain::subscription::{SubscriptionRepository, SubscriptionService};
use tollgate_domain::usage::UsageRepository;
use tollgate_domain::user::{UserRepository, UserService};

/// The adapter of every port the handlers use, and the clock.
#[derive(Clone)]
pub struct Ports {
    pub permissions: Arc<dyn PermissionRepository>,
    pub plans: Arc<dyn PlanRepository>,
    pub users: Arc<dyn UserRepository>,
    pub keys: Arc<dyn ApiKeyRepository>,
    pub subscriptions: Arc<dyn SubscriptionRepository>,
    pub usage: Arc<dyn UsageRepository>,
    pub reservations: Arc<dyn ReservationRepository>,
    pub status: Arc<dyn StoreStatus>,
    pub clock: Arc<dyn Clock>,
}

impl Ports {
    /// Every port on one store that implements them all, and the system clock.
    pub fn of<S>(store: Arc<S>) -> Self
    where
        S: PermissionRepository
            + PlanRepository
            + UserRepository
            + ApiKeyRepository
            + SubscriptionRepository
            + UsageRepository
            + ReservationRepository
            + StoreStatus
            + 'static,
    {
        Self {
            permissions: store.clone(),
            plans: store.clone(),
            users: store.clone(),
            keys: store.clone(),
            subscriptions: store.clone(),
            usage: store.clone(),
            reservations: store.clone(),
            status: store,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Shared by every worker.
#[derive(Clone)]
pub struct AppState {
    pub permissions: PermissionService,
    pub plans: PlanService,
    pub users: UserService,
    pub keys: ApiKeyService,
    pub subscriptions: SubscriptionService,
    pub access: AccessService,
    pub reservations: ReservationService,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The store's readiness (`/readyz`) and counters (`/metrics`).
    pub status: Arc<dyn StoreStatus>,
    /// The longest a request waits for the database (`TOLLGATE_DB_TIMEOUT_MS`).
    pub db_timeout: Duration,
}

impl AppState {
    /// The services on `ports`; an access check waits at most `db_timeout`
    /// for the store.
    pub fn new(ports: Ports, db_timeout: Duration) -> Self {
        let Ports {
            permissions,
            plans,
            users,
            keys,
            subscriptions,
            usage,
            reservations,
            status,
            clock,
        } = ports;
        Self {
            permissions: PermissionService::new(permissions.clone(), clock.clone()),
            plans: PlanService::new(plans.clone(), permissions, clock.clone()),
            users: UserService::new(users.clone(), clock.clone()),
            keys: ApiKeyService::new(keys, users.clone(), clock.clone()),
            subscriptions: SubscriptionService::new(subscriptions, users, plans, clock.clone()),
            access: AccessService::new(usage, clock.clone()),
            reservations: ReservationService::new(reservations, clock),
            metrics: Arc::new(crate::metrics::Metrics::fixed()),
            status,
            db_timeout,
        }
    }
}

/// An [`AppState`] on the domain's mocks, for the handlers' tests.
#[cfg(test)]
pub(crate) mod mocked {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{DateTime, TimeZone, Utc};
    use tollgate_domain::api_key::{ApiKey, ApiKeyName, MockApiKeyRepository};
    use tollgate_domain::clock::FixedClock;
    use tollgate_domain::permission::MockPermissionRepository;
    use tollgate_domain::plan::MockPlanRepository;
    use tollgate_domain::reservation::MockReservationRepository;
    use tollgate_domain::status::MockStoreStatus;
    use tollgate_domain::subscription::MockSubscriptionRepository;
    use tollgate_domain::usage::MockUsageRepository;
    use tollgate_domain::user::{MockUserRepository, Role, User, UserStatus, Username};
    use tollgate_domain::{ApiKeyId, UserId};

    use super::{AppState, Ports};

    /// The instant every mocked state's clock answers.
    pub(crate) fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 14, 12, 0, 0)
            .single()
            .expect("a valid instant")
    }

    /// One mock per port; a mock given no expectation fails the test when
    /// it is called.
    #[derive(Default)]
    pub(crate) struct Mocks {
        pub(crate) keys: MockApiKeyRepository,
        pub(crate) usage: MockUsageRepository,
        pub(crate) status: MockStoreStatus,
    }

    impl Mocks {
        pub(crate) fn into_state(self) -> AppState {
            let ports = Ports {
                permissions: Arc::new(MockPermissionRepository::new()),
                plans: Arc::new(MockPlanRepository::new()),
                users: Arc::new(MockUserRepository::new()),
                keys: Arc::new(self.keys),
                subscriptions: Arc::new(MockSubscriptionRepository::new()),
                usage: Arc::new(self.usage),
                reservations: Arc::new(MockReservationRepository::new()),
                status: Arc::new(self.status),
                clock: Arc::new(FixedClock(now())),
            };
            AppState::new(ports, Duration::from_secs(1))
        }
    }

    /// An active user of `role`.
    pub(crate) fn user(id: i64, role: Role) -> User {
        User {
            id: UserId::new(id).expect("a valid id"),
            username: Username::parse(format!("user{id}")).expect("a valid name"),
            role,
            status: UserStatus::Active,
            created_at: now(),
            updated_at: now(),
        }
    }

    /// A live key of `user`.
    pub(crate) fn key_of(user: &User) -> ApiKey {
        ApiKey {
            id: ApiKeyId::new(1).expect("a valid id"),
            user_id: user.id,
            name: ApiKeyName::parse("test").expect("a valid name"),
            prefix: "tg_test".into(),
            created_at: now(),
            expires_at: None,
            revoked_at: None,
        }
    }
}
