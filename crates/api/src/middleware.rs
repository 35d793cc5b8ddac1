//! In-process access checks for other Rust services built on actix-web:
//!
//! ```text
//! use tollgate_api::middleware::RequirePermission;
//! App::new()
//!     .app_data(web::Data::new(tollgate_api::state::AppState::open(url, &pool)?))
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

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{web, Error, HttpMessage};
use futures_util::future::LocalBoxFuture;
use tollgate_domain::access::Decision;
use tollgate_domain::permission::PermissionName;
use tollgate_domain::usage::Cost;
use tollgate_domain::ValidationError;

use crate::auth::{bearer_token, principal_of, CallerId};
use crate::error::ApiError;
use crate::routes::access::{denied_error_response, rate_limit_headers, run_check};
use crate::state::AppState;

/// Wraps routes so that each request must pass an access check of one
/// permission (and consumes `cost` units of the caller's quota).
#[derive(Debug, Clone)]
pub struct RequirePermission {
    permission: PermissionName,
    cost: Cost,
}

impl RequirePermission {
    /// Panics if `permission` is not a valid permission name: it is written
    /// in code, so that is a bug found at start-up. See [`Self::try_new`].
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
        })
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

async fn decide(req: &ServiceRequest, config: &RequirePermission) -> Result<Decision, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("RequirePermission needs web::Data<AppState>"))?;
    let token = bearer_token(req.request()).ok_or_else(ApiError::unauthorized)?;
    let principal = principal_of(&state, token).await?;
    run_check(
        &state,
        principal.user,
        config.permission.clone(),
        config.cost,
    )
    .await
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
            let decision = match decide(&req, &config).await {
                Ok(d) => d,
                Err(e) => return Ok(req.error_response(e).map_into_right_body()),
            };
            if let Some(reason) = decision.denied {
                let response = denied_error_response(&decision, reason);
                return Ok(req.into_response(response).map_into_right_body());
            }
            let headers = rate_limit_headers(&decision);
            req.extensions_mut().insert(CallerId(decision.user_id));
            req.extensions_mut().insert(decision);
            let mut res = service.call(req).await?;
            for (name, value) in headers {
                res.headers_mut().insert(name, value);
            }
            Ok(res.map_into_left_body())
        })
    }
}
