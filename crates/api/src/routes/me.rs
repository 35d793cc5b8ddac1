//! `/v1/me...`: the caller's own user, keys and subscription.

use actix_web::{web, HttpResponse};

use super::api_keys::{get_for, issue, key_id, list_for, revoke_for, CreateApiKey};
use super::subscriptions::active_for;
use super::users::UserDto;
use super::ListQuery;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/me").route(web::get().to(me)))
        .service(
            web::resource("/me/api-keys")
                .route(web::get().to(list_keys))
                .route(web::post().to(create_key)),
        )
        .service(
            web::resource("/me/api-keys/{key_id}")
                .route(web::get().to(get_key))
                .route(web::delete().to(revoke_key)),
        )
        .service(web::resource("/me/subscription").route(web::get().to(subscription)));
}

/// The caller's own user; a suspended user's key still works here.
async fn me(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(UserDto::from(caller.0.user))
}

async fn list_keys(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    list_for(state, caller.user_id(), &query).await
}

/// Suspended users cannot mint keys.
async fn create_key(
    caller: Caller,
    state: web::Data<AppState>,
    body: Json<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require_active()?;
    issue(state, caller.user_id(), body.0, "/v1/me/api-keys").await
}

async fn get_key(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    get_for(state, caller.user_id(), key_id(*id)?).await
}

/// Revoking one's own key is allowed even while suspended.
async fn revoke_key(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    revoke_for(state, caller.user_id(), key_id(*id)?).await
}

async fn subscription(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    active_for(state, caller.user_id()).await
}
