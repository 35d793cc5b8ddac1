//! `/v1/users`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use tollgate_domain::user::{NewUser, Role, User, UserFilter, UserPatch, UserStatus, Username};
use tollgate_domain::{UserId, ValidationError};

use super::{created, not_null, page_request, required, timestamp, ListResponse};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{blocking, path_id, Json};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/users/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserDto {
    pub id: i64,
    pub username: String,
    #[schema(value_type = String, example = "user")]
    pub role: &'static str,
    #[schema(value_type = String, example = "active")]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<User> for UserDto {
    fn from(u: User) -> Self {
        Self {
            id: u.id.get(),
            username: u.username.into_inner(),
            role: u.role.as_str(),
            status: u.status.as_str(),
            created_at: timestamp(u.created_at),
            updated_at: timestamp(u.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1-64 characters of A-Z a-z 0-9 _ . -
    #[schema(required = true, value_type = String, pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    username: Option<String>,
    /// admin or user (default user)
    #[schema(pattern = "^(admin|user)$")]
    role: Option<String>,
    /// active or suspended (default active)
    #[schema(pattern = "^(active|suspended)$")]
    status: Option<String>,
}

impl TryFrom<CreateUser> for NewUser {
    type Error = ValidationError;

    fn try_from(dto: CreateUser) -> Result<Self, ValidationError> {
        Ok(Self {
            username: Username::parse(required("username", dto.username)?)?,
            role: dto
                .role
                .as_deref()
                .map(Role::parse)
                .transpose()?
                .unwrap_or_default(),
            status: dto
                .status
                .as_deref()
                .map(UserStatus::parse)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    username: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, pattern = "^(admin|user)$")]
    role: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, pattern = "^(active|suspended)$")]
    status: Option<Option<String>>,
}

impl TryFrom<UpdateUser> for UserPatch {
    type Error = ValidationError;

    fn try_from(dto: UpdateUser) -> Result<Self, ValidationError> {
        Ok(Self {
            username: not_null("username", dto.username)?
                .map(Username::parse)
                .transpose()?,
            role: not_null("role", dto.role)?
                .as_deref()
                .map(Role::parse)
                .transpose()?,
            status: not_null("status", dto.status)?
                .as_deref()
                .map(UserStatus::parse)
                .transpose()?,
        })
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    /// 1..=500, default 50
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// Items with an id above this one
    #[param(minimum = 0)]
    after: Option<i64>,
    /// admin or user
    #[param(pattern = "^(admin|user)$")]
    role: Option<String>,
    /// active or suspended
    #[param(pattern = "^(active|suspended)$")]
    status: Option<String>,
}

impl UserListQuery {
    fn filter(&self) -> Result<UserFilter, ApiError> {
        let bad = |e: ValidationError| ApiError::bad_request(format!("bad query string: {e}"));
        Ok(UserFilter {
            role: self
                .role
                .as_deref()
                .map(Role::parse)
                .transpose()
                .map_err(bad)?,
            status: self
                .status
                .as_deref()
                .map(UserStatus::parse)
                .transpose()
                .map_err(bad)?,
        })
    }
}

pub fn user_id(raw: i64) -> Result<UserId, ApiError> {
    path_id(raw, UserId::new, "user")
}

#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    summary = "Create a user (admin)",
    request_body = CreateUser,
    responses((status = 201, description = "Created", body = UserDto, headers(("Location" = String, description = "URL of the new resource")))),
    security(("bearer" = []))
)]
async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let new = NewUser::try_from(body.0)?;
    let user = blocking(move || state.users.create(new)).await?;
    Ok(created(
        format!("/v1/users/{}", user.id),
        &UserDto::from(user),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    summary = "List users (admin)",
    params(UserListQuery),
    responses((status = 200, description = "A page", body = ListResponse<UserDto>)),
    security(("bearer" = []))
)]
async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<UserListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let page = page_request(query.limit, query.after)?;
    let filter = query.filter()?;
    let page = blocking(move || state.users.list(filter, page)).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(page, UserDto::from)))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    summary = "Get a user (admin)",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserDto)),
    security(("bearer" = []))
)]
async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = user_id(*id)?;
    let user = blocking(move || state.users.get(id)).await?;
    Ok(HttpResponse::Ok().json(UserDto::from(user)))
}

#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    tag = "users",
    summary = "Change a user (admin); the last active admin stays",
    params(("id" = i64, Path, description = "User id")),
    request_body = UpdateUser,
    responses((status = 200, description = "Changed", body = UserDto)),
    security(("bearer" = []))
)]
async fn update(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: Json<UpdateUser>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = user_id(*id)?;
    let patch = UserPatch::try_from(body.0)?;
    let user = blocking(move || state.users.update(id, patch)).await?;
    Ok(HttpResponse::Ok().json(UserDto::from(user)))
}

#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    summary = "Delete a user with their keys, subscription and usage (admin)",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []))
)]
async fn delete(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = user_id(*id)?;
    blocking(move || state.users.delete(id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
