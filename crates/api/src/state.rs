//! The services the handlers call, wired to the database at start-up.

use std::sync::Arc;

use tollgate_domain::access::AccessService;
use tollgate_domain::api_key::ApiKeyService;
use tollgate_domain::clock::{Clock, SystemClock};
use tollgate_domain::permission::PermissionService;
use tollgate_domain::plan::PlanService;
use tollgate_domain::subscription::SubscriptionService;
use tollgate_domain::user::UserService;
use tollgate_persistence::Database;

/// Shared by every worker.
#[derive(Clone)]
pub struct AppState {
    pub permissions: PermissionService,
    pub plans: PlanService,
    pub users: UserService,
    pub keys: ApiKeyService,
    pub subscriptions: SubscriptionService,
    pub access: AccessService,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub db: Database,
    /// The longest a request waits for the database (`TOLLGATE_DB_TIMEOUT_MS`).
    pub db_timeout: std::time::Duration,
}

impl AppState {
    /// Opens (and migrates) the database at `database_url`: what a Rust
    /// service needs to use [`crate::middleware::RequirePermission`].
    pub fn open(
        database_url: &str,
        pool: &tollgate_persistence::PoolOptions,
    ) -> Result<Self, crate::StartError> {
        Ok(Self::new(crate::app::open_database(database_url, pool)?))
    }

    pub fn new(db: Database) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = Arc::new(db.clone());
        Self {
            permissions: PermissionService::new(store.clone(), clock.clone()),
            plans: PlanService::new(store.clone(), store.clone(), clock.clone()),
            users: UserService::new(store.clone(), clock.clone()),
            keys: ApiKeyService::new(store.clone(), store.clone(), clock.clone()),
            subscriptions: SubscriptionService::new(
                store.clone(),
                store.clone(),
                store.clone(),
                clock.clone(),
            ),
            access: AccessService::new(store, clock),
            metrics: Arc::new(
                crate::metrics::Metrics::new()
                    .unwrap_or_else(|e| panic!("the fixed metric definitions are invalid: {e}")),
            ),
            db_timeout: db.timeout(),
            db,
        }
    }
}
