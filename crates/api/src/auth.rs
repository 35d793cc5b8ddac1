//! Authentication: `Authorization: Bearer <key>` to the caller's principal.

use std::future::{ready, Ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use tollgate_domain::api_key::Principal;
use tollgate_domain::user::{Role, UserStatus};
use tollgate_domain::UserId;

use crate::error::ApiError;
use crate::extract::bounded;
use crate::state::AppState;

/// The authenticated caller of a `/v1` route.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// The caller's user id, stored in the request's extensions for the log line.
#[derive(Debug, Clone, Copy)]
pub struct CallerId(pub UserId);

impl Caller {
    pub fn user_id(&self) -> UserId {
        self.0.user.id
    }

    /// Admin routes: an active admin only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.user.role != Role::Admin {
            return Err(ApiError::forbidden("this route needs an admin key"));
        }
        self.require_active()
    }

    /// Routes that change something: an active user only.
    pub fn require_active(&self) -> Result<(), ApiError> {
        if self.0.user.status != UserStatus::Active {
            return Err(ApiError::forbidden("the user is suspended"));
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || !token.chars().all(|c| c.is_ascii_graphic())
    {
        return None;
    }
    Some(token.to_owned())
}

/// Middleware of the `/v1` scope: authenticates the bearer key before any
/// other extraction (so a request without a key is 401, whatever its body),
/// and leaves the [`Caller`] in the request's extensions.
pub async fn require_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match authenticate(req.request()).await {
        Ok(caller) => {
            req.extensions_mut().insert(CallerId(caller.user_id()));
            req.extensions_mut().insert(caller);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => Ok(req.error_response(e).map_into_right_body()),
    }
}

async fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let token = bearer_token(req).ok_or_else(ApiError::unauthorized)?;
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    Ok(Caller(principal_of(&state, token).await?))
}

/// The principal of a token, without a thread hop: at once from the read
/// cache, else awaited from the store's loader for at most the database
/// timeout.
pub async fn principal_of(
    state: &web::Data<AppState>,
    token: String,
) -> Result<Principal, ApiError> {
    bounded(state.db_timeout, state.keys.authenticate(&token)).await
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    /// The caller that [`require_key`] authenticated.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(ApiError::unauthorized),
        )
    }
}
