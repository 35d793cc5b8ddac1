//! `/v1/me...`: the caller's own user, keys and subscription.

use actix_web::{web, HttpResponse};

use super::api_keys::{
    get_for, issue, key_id, list_for, revoke_for, ApiKeyDto, CreateApiKey, CreatedApiKeyDto, Owner,
};
use super::subscriptions::{active_for, SubscriptionDto};
use super::users::UserDto;
use super::{ListQuery, ListResponse};
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
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "me",
    summary = "The caller's own user (works while suspended)",
    responses((status = 200, description = "The caller", body = UserDto)),
    security(("bearer" = []))
)]
async fn me(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(UserDto::from(caller.0.user))
}

#[utoipa::path(
    get,
    path = "/v1/me/api-keys",
    tag = "me",
    summary = "The caller's keys",
    params(ListQuery),
    responses((status = 200, description = "A page", body = ListResponse<ApiKeyDto>)),
    security(("bearer" = []))
)]
async fn list_keys(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    list_for(state, caller.user_id(), &query).await
}

/// Suspended users cannot mint keys. The new key expires no later than the
/// key that makes it.
#[utoipa::path(
    post,
    path = "/v1/me/api-keys",
    tag = "me",
    summary = "Mint a key for the caller; the secret is shown once",
    request_body = CreateApiKey,
    responses((status = 201, description = "Created", body = CreatedApiKeyDto, headers(("Location" = String, description = "URL of the new resource"), ("Cache-Control" = String, description = "no-store"))), (status = 409, description = "The caller already has 100 live keys", body = crate::error::ErrorBody), (status = 422, description = "expires_at is later than the calling key's expiry", body = crate::error::ErrorBody)),
    security(("bearer" = []))
)]
async fn create_key(
    caller: Caller,
    state: web::Data<AppState>,
    body: Json<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require_active()?;
    issue(state, Owner::Caller(caller.0), body.0, "/v1/me/api-keys").await
}

#[utoipa::path(
    get,
    path = "/v1/me/api-keys/{key_id}",
    tag = "me",
    summary = "One of the caller's keys",
    params(("key_id" = i64, Path, description = "Key id")),
    responses((status = 200, description = "The key", body = ApiKeyDto)),
    security(("bearer" = []))
)]
async fn get_key(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    get_for(state, caller.user_id(), key_id(*id)?).await
}

/// Revoking one's own key is allowed even while suspended.
#[utoipa::path(
    delete,
    path = "/v1/me/api-keys/{key_id}",
    tag = "me",
    summary = "Revoke one of the caller's keys",
    params(("key_id" = i64, Path, description = "Key id")),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = []))
)]
async fn revoke_key(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    revoke_for(state, caller.user_id(), key_id(*id)?).await
}

#[utoipa::path(
    get,
    path = "/v1/me/subscription",
    tag = "me",
    summary = "The caller's active subscription",
    responses((status = 200, description = "The active subscription", body = SubscriptionDto)),
    security(("bearer" = []))
)]
async fn subscription(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    active_for(state, caller.user_id()).await
}
