//! `/v1/users/{id}/api-keys`, and the handlers `/v1/me/api-keys` shares.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use tollgate_domain::api_key::{ApiKey, ApiKeyName, ApiKeySecret, Principal};
use tollgate_domain::{ApiKeyId, UserId};

use super::users::user_id;
use super::{created, parse_timestamp, timestamp, ListQuery, ListResponse};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{blocking, path_id, Json};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users/{id}/api-keys")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/users/{id}/api-keys/{key_id}")
            .route(web::get().to(get))
            .route(web::delete().to(revoke)),
    );
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyDto {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for ApiKeyDto {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.get(),
            user_id: k.user_id.get(),
            name: k.name.into_inner(),
            prefix: k.prefix,
            created_at: timestamp(k.created_at),
            expires_at: k.expires_at.map(timestamp),
            revoked_at: k.revoked_at.map(timestamp),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 0-100 characters
    #[schema(max_length = 100)]
    name: Option<String>,
    /// RFC 3339, in the future. Through `/v1/me/api-keys` with a key that
    /// expires: no later than that key, and that key's expiry when absent.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// The key resource plus `"key": "tg_..."`, the only time the secret is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedApiKeyDto {
    #[serde(flatten)]
    resource: ApiKeyDto,
    /// The secret, shown once.
    key: String,
}

pub fn key_id(raw: i64) -> Result<ApiKeyId, ApiError> {
    path_id(raw, ApiKeyId::new, "API key")
}

/// Whom a new key is for.
pub enum Owner {
    /// A user an admin names (`/v1/users/{id}/api-keys`).
    User(UserId),
    /// The caller, through the key they call with (`/v1/me/api-keys`): the
    /// new key may not outlive that one.
    Caller(Principal),
}

/// Mints a key and answers 201 with the secret, once, never to be cached.
pub async fn issue(
    state: web::Data<AppState>,
    owner: Owner,
    body: CreateApiKey,
    location_base: &str,
) -> Result<HttpResponse, ApiError> {
    let name = ApiKeyName::parse(body.name.unwrap_or_default())?;
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|t| parse_timestamp("expires_at", t))
        .transpose()?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| ApiError::internal(e.to_string()))?;
    let (key, secret): (ApiKey, ApiKeySecret) = blocking(move || match owner {
        Owner::User(user) => state.keys.issue(user, name, expires_at, random),
        Owner::Caller(caller) => state.keys.issue_own(&caller, name, expires_at, random),
    })
    .await?;
    let location = format!("{location_base}/{}", key.id);
    let body = CreatedApiKeyDto {
        resource: ApiKeyDto::from(key),
        key: secret.expose().to_owned(),
    };
    let mut response = created(location, &body);
    // The secret must not stay in any cache between here and the client.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn list_for(
    state: web::Data<AppState>,
    user: UserId,
    query: &ListQuery,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let page = blocking(move || state.keys.list(user, page)).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(page, ApiKeyDto::from)))
}

pub async fn get_for(
    state: web::Data<AppState>,
    user: UserId,
    id: ApiKeyId,
) -> Result<HttpResponse, ApiError> {
    let key = blocking(move || state.keys.get(user, id)).await?;
    Ok(HttpResponse::Ok().json(ApiKeyDto::from(key)))
}

pub async fn revoke_for(
    state: web::Data<AppState>,
    user: UserId,
    id: ApiKeyId,
) -> Result<HttpResponse, ApiError> {
    blocking(move || state.keys.revoke(user, id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/v1/users/{id}/api-keys",
    tag = "api-keys",
    summary = "Mint a key for a user (admin); the secret is shown once",
    params(("id" = i64, Path, description = "User id")),
    request_body = CreateApiKey,
    responses((status = 201, description = "Created", body = CreatedApiKeyDto, headers(("Location" = String, description = "URL of the new resource"), ("Cache-Control" = String, description = "no-store"))), (status = 409, description = "The user already has 100 live keys", body = crate::error::ErrorBody)),
    security(("bearer" = []))
)]
async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: Json<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let user = user_id(*id)?;
    issue(
        state,
        Owner::User(user),
        body.0,
        &format!("/v1/users/{user}/api-keys"),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/api-keys",
    tag = "api-keys",
    summary = "List a user's keys (admin)",
    params(("id" = i64, Path, description = "User id"), ListQuery),
    responses((status = 200, description = "A page", body = ListResponse<ApiKeyDto>)),
    security(("bearer" = []))
)]
async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    list_for(state, user_id(*id)?, &query).await
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/api-keys/{key_id}",
    tag = "api-keys",
    summary = "Get a user's key (admin)",
    params(("id" = i64, Path, description = "User id"), ("key_id" = i64, Path, description = "Key id")),
    responses((status = 200, description = "The key", body = ApiKeyDto)),
    security(("bearer" = []))
)]
async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let (user, key) = path.into_inner();
    get_for(state, user_id(user)?, key_id(key)?).await
}

#[utoipa::path(
    delete,
    path = "/v1/users/{id}/api-keys/{key_id}",
    tag = "api-keys",
    summary = "Revoke a user's key (admin)",
    params(("id" = i64, Path, description = "User id"), ("key_id" = i64, Path, description = "Key id")),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = []))
)]
async fn revoke(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let (user, key) = path.into_inner();
    revoke_for(state, user_id(user)?, key_id(key)?).await
}
