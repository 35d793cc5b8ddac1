//! In-process access checks for other Rust services built on actix-web:
//!
//! ```text
//! use tollgate_api::middleware::RequirePermission;
//! App::new()
//!     .app_data(web::Data::new(tollgate::open_state(url, &pool)?))
//!     .service(
//!         web::resource("/reports")
//!             .wrap(RequirePermission::new("reports:read"))
//!             .route(web::get().to(reports)),
//!     )
//! ```
//!
//! Every request to the wrapped routes runs the same check as
//! `GET /v1/authorize` through the domain crate, with the key of its
//! `Authorization: Bearer` header: allowed requests reach the handler (the
//! [`Decision`] is in the request's extensions) and their response carries
//! the `RateLimit-*` headers; others get 401/403/429 with the same bodies and
//! headers as `/v1/authorize`.
//!
//! For a cost known only after the handler (the tokens of a model's
//! answer), [`RequirePermission::reserving`] holds the most the handler may
//! cost before it runs, and commits what the handler reports through the
//! [`Metered`] in its request's extensions once it returned:
//!
//! ```text
//! .wrap(RequirePermission::new("model:generate").reserving(4_000)?)
//! ...
//! async fn generate(metered: web::ReqData<Metered>) -> HttpResponse {
//!     metered.set(tokens_used);
//!     ...
//! }
//! ```

use std::cell::Cell;
use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{web, Error, HttpMessage};
use futures_util::future::LocalBoxFuture;
use tollgate_domain::access::Decision;
use tollgate_domain::permission::PermissionName;
use tollgate_domain::reservation::{ReservationId, Settle, TtlSeconds};
use tollgate_domain::usage::Cost;
use tollgate_domain::user::User;
use tollgate_domain::ValidationError;

use crate::auth::{bearer_token, principal_of, CallerId};
use crate::error::ApiError;
use crate::extract::bounded;
use crate::routes::access::{
    denied_error_response, idempotency_key, rate_limit_headers, run_check,
};
use crate::routes::reservations::run_reserve;
use crate::state::AppState;

/// Wraps routes so that each request must pass an access check of one
/// permission (and consumes `cost` units of the caller's quota).
#[derive(Debug, Clone)]
pub struct RequirePermission {
    permission: PermissionName,
    cost: Cost,
    /// Reserve `cost` for this long and commit what the handler reports.
    hold: Option<TtlSeconds>,
}

/// The cost a handler behind [`RequirePermission::reserving`] reports,
/// read after it returned: the units to commit of those reserved (a report
/// outside `0..=reserved` is held to it). Not set: all of them when the
/// response is a success (2xx), none otherwise (an error included).
#[derive(Debug, Clone, Default)]
pub struct Metered {
    cost: Rc<Cell<Option<i64>>>,
    /// The units reserved, the most `set` may report.
    reserved: i64,
}

impl Metered {
    /// Reports the handler's real cost (committed once it returned).
    pub fn set(&self, cost: i64) {
        self.cost.set(Some(cost));
    }

    /// The units held for the handler.
    pub fn reserved(&self) -> i64 {
        self.reserved
    }
}

impl RequirePermission {
    /// Panics if `permission` is not a valid permission name: it is written
    /// in code, so that is a bug found at start-up. See [`Self::try_new`].
    #[allow(
        clippy::panic,
        reason = "the permission is a literal of the embedding service's code"
    )]
    pub fn new(permission: &str) -> Self {
        match Self::try_new(permission) {
            Ok(m) => m,
            Err(e) => panic!("RequirePermission::new({permission:?}): {e}"),
        }
    }

    pub fn try_new(permission: &str) -> Result<Self, ValidationError> {
        Ok(Self {
            permission: PermissionName::parse(permission)?,
            cost: Cost::parse(None)?,
            hold: None,
        })
    }

    /// Reserves `max_cost` units before the handler (decided as a check;
    /// held for at most 300 s) and commits the cost the handler reports in
    /// its [`Metered`] after it, returning the rest.
    pub fn reserving(mut self, max_cost: i64) -> Result<Self, ValidationError> {
        self.cost = Cost::parse(Some(max_cost))?;
        self.hold = Some(TtlSeconds::parse(None)?);
        Ok(self)
    }

    /// Units each request consumes (default 1).
    pub fn with_cost(mut self, cost: i64) -> Result<Self, ValidationError> {
        self.cost = Cost::parse(Some(cost))?;
        Ok(self)
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequirePermission
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequirePermissionService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequirePermissionService {
            service: Rc::new(service),
            config: self.clone(),
        }))
    }
}

/// The service [`RequirePermission`] wraps around a route.
pub struct RequirePermissionService<S> {
    service: Rc<S>,
    config: RequirePermission,
}

async fn decide(
    req: &ServiceRequest,
    config: &RequirePermission,
) -> Result<(Decision, User, web::Data<AppState>), ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("RequirePermission needs web::Data<AppState>"))?;
    let token = bearer_token(req.request()).ok_or_else(ApiError::unauthorized)?;
    let principal = principal_of(&state, token).await?;
    let key = idempotency_key(req.request())?;
    let (user, permission) = (principal.user, config.permission.clone());
    let decision = match config.hold {
        None => run_check(&state, user.clone(), permission, config.cost, key).await?,
        Some(ttl) => run_reserve(&state, user.clone(), permission, config.cost, ttl, key).await?,
    };
    Ok((decision, user, state))
}

/// Commits what the handler reported of the reservation (see [`Metered`]).
/// A commit that fails is logged: the reservation then expires unsettled.
async fn settle_metered(
    state: web::Data<AppState>,
    user: User,
    id: ReservationId,
    metered: &Metered,
    success: bool,
) {
    // A report outside 0..=reserved is the handler's bug: what it used is
    // committed as closely as the hold allows, never lost to the expiry.
    let n = match metered.cost.get() {
        Some(n) => n.clamp(0, metered.reserved),
        None if success => metered.reserved,
        None => 0,
    };
    let settled = state.reservations.settle(&user, &id, Settle::Commit(n));
    let result = bounded(state.db_timeout, settled).await;
    if let Err(e) = result {
        log::warn!("RequirePermission could not commit a reservation: {e}");
    }
}

impl<S, B> Service<ServiceRequest> for RequirePermissionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let (decision, user, state) = match decide(&req, &config).await {
                Ok(d) => d,
                Err(e) => return Ok(req.error_response(e).map_into_right_body()),
            };
            if let Some(reason) = decision.denied {
                let response = denied_error_response(&decision, reason);
                return Ok(req.into_response(response).map_into_right_body());
            }
            let headers = rate_limit_headers(&decision);
            // A replayed reservation was settled by its original request.
            let held = match (&decision.reservation, decision.replayed) {
                (Some(r), false) => Some(r.id.clone()),
                _ => None,
            };
            let metered = Metered {
                cost: Rc::default(),
                reserved: config.cost.get(),
            };
            req.extensions_mut().insert(CallerId(decision.user_id));
            req.extensions_mut().insert(metered.clone());
            req.extensions_mut().insert(decision);
            let res = service.call(req).await;
            let success = matches!(&res, Ok(res) if res.status().is_success());
            if let Some(id) = held {
                settle_metered(state, user, id, &metered, success).await;
            }
            let mut res = res?;
            for (name, value) in headers {
                res.headers_mut().insert(name, value);
            }
            Ok(res.map_into_left_body())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix_web::http::StatusCode;
    use actix_web::{test, web, App, HttpResponse};
    use tollgate_domain::api_key::KeyAndUser;
    use tollgate_domain::pending;
    use tollgate_domain::permission::PermissionName;
    use tollgate_domain::plan::{PermissionList, UsageLimit};
    use tollgate_domain::usage::{AccessContext, Consumed};
    use tollgate_domain::user::Role;
    use tollgate_domain::{PlanId, StoreError, SubscriptionId};

    use super::RequirePermission;
    use crate::state::mocked::{key_of, now, user, Mocks};

    const KEY: &str = "tg_mockedkey0123456789abcdefghijklmnop";

    /// A known key of user 7 (from the read cache).
    fn known_key(mocks: &mut Mocks) {
        let owner = user(7, Role::User);
        let found = Arc::new(KeyAndUser {
            key: key_of(&owner),
            user: owner,
        });
        mocks
            .keys
            .expect_find_by_hash()
            .returning(move |_| pending::ready(Ok(Some(found.clone()))));
    }

    /// User 7 subscribed to a plan of `permissions`, `limit` units a month.
    fn subscribed(mocks: &mut Mocks, permissions: &[&str], limit: i64) {
        let context = Arc::new(AccessContext {
            subscription_id: SubscriptionId::new(3).expect("id"),
            plan_id: PlanId::new(2).expect("id"),
            started_at: now(),
            permissions: PermissionList::new(
                permissions
                    .iter()
                    .map(|p| PermissionName::parse(*p).expect("a valid name")),
            ),
            limit: UsageLimit::parse(Some(limit)).expect("a valid limit"),
            period: Default::default(),
            permission_limits: Default::default(),
            rate_limit: None,
        });
        mocks
            .usage
            .expect_access_context()
            .returning(move |_| pending::ready(Ok(Some(context.clone()))));
    }

    async fn get_reports(mocks: Mocks, key: Option<&str>) -> (StatusCode, String) {
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(mocks.into_state()))
                .service(
                    web::resource("/reports")
                        .wrap(RequirePermission::new("reports:read"))
                        .route(web::get().to(|| async { HttpResponse::Ok().body("reports") })),
                ),
        )
        .await;
        let mut req = test::TestRequest::get().uri("/reports");
        if let Some(key) = key {
            req = req.insert_header(("Authorization", format!("Bearer {key}")));
        }
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status();
        let body = test::read_body(res).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[actix_web::test]
    async fn a_granted_check_reaches_the_handler() {
        let mut mocks = Mocks::default();
        known_key(&mut mocks);
        subscribed(&mut mocks, &["reports:read"], 10);
        mocks.usage.expect_consume().times(1).returning(|_| {
            pending::later(async {
                Ok(Consumed::Granted {
                    used: 1,
                    permission_used: None,
                })
            })
        });
        assert_eq!(
            get_reports(mocks, Some(KEY)).await,
            (StatusCode::OK, "reports".into())
        );
    }

    #[actix_web::test]
    async fn a_permission_outside_the_plan_is_403_and_consumes_nothing() {
        let mut mocks = Mocks::default();
        known_key(&mut mocks);
        subscribed(&mut mocks, &["exports:run"], 10);
        mocks.usage.expect_consume().never();
        let (status, body) = get_reports(mocks, Some(KEY)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("permission_denied"), "{body}");
    }

    #[actix_web::test]
    async fn an_exhausted_quota_is_429() {
        let mut mocks = Mocks::default();
        known_key(&mut mocks);
        subscribed(&mut mocks, &["reports:read"], 1);
        mocks.usage.expect_consume().returning(|_| {
            pending::ready(Ok(Consumed::Exhausted {
                used: 1,
                permission_used: None,
            }))
        });
        let (status, body) = get_reports(mocks, Some(KEY)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(body.contains("quota_exhausted"), "{body}");
    }

    #[actix_web::test]
    async fn no_key_is_401_without_asking_the_store() {
        // The mocks expect no call: any lookup fails the test.
        let (status, body) = get_reports(Mocks::default(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("unauthorized"), "{body}");
    }

    #[actix_web::test]
    async fn an_unavailable_key_store_is_503() {
        let mut mocks = Mocks::default();
        mocks
            .keys
            .expect_find_by_hash()
            .returning(|_| pending::later(async { Err(StoreError::Unavailable("down".into())) }));
        let (status, body) = get_reports(mocks, Some(KEY)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("unavailable"), "{body}");
        assert!(!body.contains("down"), "the cause stays in the log: {body}");
    }

    #[actix_web::test]
    async fn an_unavailable_usage_store_is_503() {
        let mut mocks = Mocks::default();
        known_key(&mut mocks);
        subscribed(&mut mocks, &["reports:read"], 10);
        mocks
            .usage
            .expect_consume()
            .returning(|_| pending::later(async { Err(StoreError::Unavailable("busy".into())) }));
        let (status, body) = get_reports(mocks, Some(KEY)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("unavailable"), "{body}");
    }
}
