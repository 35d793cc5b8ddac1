//! `/v1/permissions`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use tollgate_domain::permission::{
    NewPermission, Permission, PermissionDescription, PermissionName, PermissionPatch,
};
use tollgate_domain::{PermissionId, ValidationError};

use super::{created, not_null, required, timestamp, ListQuery, ListResponse};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{blocking, path_id, Json};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/permissions")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/permissions/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PermissionDto {
    pub id: i64,
    pub name: String,
    pub description: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Permission> for PermissionDto {
    fn from(p: Permission) -> Self {
        Self {
            id: p.id.get(),
            name: p.name.into_inner(),
            description: p.description.into_inner(),
            created_at: timestamp(p.created_at),
            updated_at: timestamp(p.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePermission {
    /// 1-64 characters of A-Z a-z 0-9 _ . : -
    #[schema(required = true, value_type = String, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    name: Option<String>,
    #[schema(max_length = 255)]
    description: Option<String>,
}

impl TryFrom<CreatePermission> for NewPermission {
    type Error = ValidationError;

    fn try_from(dto: CreatePermission) -> Result<Self, ValidationError> {
        Ok(Self {
            name: PermissionName::parse(required("name", dto.name)?)?,
            description: PermissionDescription::parse(dto.description.unwrap_or_default())?,
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePermission {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, max_length = 255)]
    description: Option<Option<String>>,
}

impl TryFrom<UpdatePermission> for PermissionPatch {
    type Error = ValidationError;

    fn try_from(dto: UpdatePermission) -> Result<Self, ValidationError> {
        Ok(Self {
            name: not_null("name", dto.name)?
                .map(PermissionName::parse)
                .transpose()?,
            description: not_null("description", dto.description)?
                .map(PermissionDescription::parse)
                .transpose()?,
        })
    }
}

fn permission_id(raw: i64) -> Result<PermissionId, ApiError> {
    path_id(raw, PermissionId::new, "permission")
}

#[utoipa::path(
    post,
    path = "/v1/permissions",
    tag = "permissions",
    summary = "Create a permission (admin)",
    request_body = CreatePermission,
    responses((status = 201, description = "Created", body = PermissionDto, headers(("Location" = String, description = "URL of the new resource")))),
    security(("bearer" = []))
)]
async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: Json<CreatePermission>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let new = NewPermission::try_from(body.0)?;
    let p = blocking(move || state.permissions.create(new)).await?;
    Ok(created(
        format!("/v1/permissions/{}", p.id),
        &PermissionDto::from(p),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/permissions",
    tag = "permissions",
    summary = "List permissions",
    params(ListQuery),
    responses((status = 200, description = "A page", body = ListResponse<PermissionDto>)),
    security(("bearer" = []))
)]
async fn list(
    _caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let page = blocking(move || state.permissions.list(page)).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(page, PermissionDto::from)))
}

#[utoipa::path(
    get,
    path = "/v1/permissions/{id}",
    tag = "permissions",
    summary = "Get a permission (admin)",
    params(("id" = i64, Path, description = "Permission id")),
    responses((status = 200, description = "The permission", body = PermissionDto)),
    security(("bearer" = []))
)]
async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = permission_id(*id)?;
    let p = blocking(move || state.permissions.get(id)).await?;
    Ok(HttpResponse::Ok().json(PermissionDto::from(p)))
}

#[utoipa::path(
    patch,
    path = "/v1/permissions/{id}",
    tag = "permissions",
    summary = "Change a permission (admin)",
    params(("id" = i64, Path, description = "Permission id")),
    request_body = UpdatePermission,
    responses((status = 200, description = "Changed", body = PermissionDto)),
    security(("bearer" = []))
)]
async fn update(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: Json<UpdatePermission>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = permission_id(*id)?;
    let patch = PermissionPatch::try_from(body.0)?;
    let p = blocking(move || state.permissions.update(id, patch)).await?;
    Ok(HttpResponse::Ok().json(PermissionDto::from(p)))
}

#[utoipa::path(
    delete,
    path = "/v1/permissions/{id}",
    tag = "permissions",
    summary = "Delete a permission no plan grants (admin)",
    params(("id" = i64, Path, description = "Permission id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []))
)]
async fn delete(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = permission_id(*id)?;
    blocking(move || state.permissions.delete(id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
