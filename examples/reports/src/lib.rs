//! A reports service of its own that sells its routes through Tollgate,
//! in process: the routes are wrapped in Tollgate's `RequirePermission`,
//! which authenticates the caller's key and counts the call against their
//! plan with Tollgate's domain, on Tollgate's persistence (an SQLite file of
//! this service's own).
//!
//! - `GET /reports` needs `reports:read` (1 unit of the plan's quota);
//! - `POST /exports` needs `exports:run`, which the demo plan does not
//!   grant.

use actix_web::{web, HttpResponse};
use tollgate_api::middleware::RequirePermission;
use tollgate_api::state::AppState;
use tollgate_domain::api_key::{ApiKeyName, ApiKeySecret};
use tollgate_domain::period::UsagePeriod;
use tollgate_domain::permission::{NewPermission, PermissionDescription, PermissionName};
use tollgate_domain::plan::{NewPlan, PermissionList, PlanDescription, PlanName, UsageLimit};
use tollgate_domain::user::{NewUser, Role, UserStatus, Username};

/// The demo plan's quota: units a day over all its permissions.
pub const DAILY_UNITS: i64 = 3;

/// The service's routes, each behind an access check.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/reports")
            .wrap(RequirePermission::new("reports:read"))
            .route(web::get().to(reports)),
    )
    .service(
        web::resource("/exports")
            .wrap(RequirePermission::new("exports:run"))
            .route(web::post().to(exports)),
    );
}

async fn reports() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"reports": ["sales", "signups"]}))
}

async fn exports() -> HttpResponse {
    HttpResponse::Accepted().json(serde_json::json!({"export": "queued"}))
}

/// Creates the demo customer on a fresh database: the two permissions, a
/// plan granting `reports:read` only ([`DAILY_UNITS`] a day), the user
/// `demo` subscribed to it, and a key for them, returned once. `None` when
/// the database was seeded before (its key was shown then).
pub fn seed(state: &AppState) -> anyhow::Result<Option<ApiKeySecret>> {
    let demo = Username::parse("demo")?;
    if state.users.find_by_username(&demo)?.is_some() {
        return Ok(None);
    }
    for (name, description) in [
        ("reports:read", "Read the reports"),
        ("exports:run", "Run an export"),
    ] {
        state.permissions.create(NewPermission {
            name: PermissionName::parse(name)?,
            description: PermissionDescription::parse(description)?,
        })?;
    }
    let plan = state.plans.create(NewPlan {
        name: PlanName::parse("Reports starter")?,
        description: PlanDescription::parse("Reports, a few a day")?,
        permissions: PermissionList::parse([PermissionName::parse("reports:read")?])?,
        usage_limit: UsageLimit::parse(Some(DAILY_UNITS))?,
        usage_period: UsagePeriod::Day,
        permission_limits: Default::default(),
        rate_limit: None,
    })?;
    let user = state.users.create(NewUser {
        username: demo,
        role: Role::User,
        status: UserStatus::Active,
    })?;
    state.subscriptions.subscribe(user.id, plan.id)?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let (_, secret) = state
        .keys
        .issue(user.id, ApiKeyName::parse("demo")?, None, random)?;
    Ok(Some(secret))
}
