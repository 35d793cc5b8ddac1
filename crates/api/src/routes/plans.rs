//! `/v1/plans`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use tollgate_domain::period::UsagePeriod;
use tollgate_domain::permission::PermissionName;
use tollgate_domain::plan::{
    NewPlan, PermissionList, Plan, PlanDescription, PlanName, PlanPatch, UsageLimit,
};
use tollgate_domain::{PlanId, ValidationError};

use super::{created, not_null, required, timestamp, ListQuery, ListResponse};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{blocking, path_id, Json};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/plans")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/plans/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanDto {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub usage_limit: Option<i64>,
    #[schema(value_type = String, example = "month")]
    pub usage_period: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Plan> for PlanDto {
    fn from(p: Plan) -> Self {
        Self {
            id: p.id.get(),
            name: p.name.into_inner(),
            description: p.description.into_inner(),
            permissions: p
                .permissions
                .names()
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect(),
            usage_limit: p.usage_limit.get(),
            usage_period: p.usage_period.as_str(),
            created_at: timestamp(p.created_at),
            updated_at: timestamp(p.updated_at),
        }
    }
}

fn permission_list(names: Vec<String>) -> Result<PermissionList, ValidationError> {
    let parsed = names
        .into_iter()
        .map(|n| {
            PermissionName::parse(n)
                .map_err(|e| ValidationError::new("permissions", format!("item: {}", e.message)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    PermissionList::parse(parsed)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    /// 1-255 characters
    #[schema(required = true, value_type = String, min_length = 1, max_length = 255)]
    name: Option<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Names of existing permissions
    permissions: Option<Vec<String>>,
    /// Units per period, >= 0; null is unlimited
    #[schema(minimum = 0)]
    usage_limit: Option<i64>,
    /// lifetime, day or month (default month)
    #[schema(pattern = "^(lifetime|day|month)$")]
    usage_period: Option<String>,
}

impl TryFrom<CreatePlan> for NewPlan {
    type Error = ValidationError;

    fn try_from(dto: CreatePlan) -> Result<Self, ValidationError> {
        Ok(Self {
            name: PlanName::parse(required("name", dto.name)?)?,
            description: PlanDescription::parse(dto.description.unwrap_or_default())?,
            permissions: permission_list(dto.permissions.unwrap_or_default())?,
            usage_limit: UsageLimit::parse(dto.usage_limit)?,
            usage_period: dto
                .usage_period
                .as_deref()
                .map(UsagePeriod::parse)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255)]
    name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, max_length = 1000)]
    description: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    permissions: Option<Option<Vec<String>>>,
    /// `null` makes the plan unlimited.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<i64>, minimum = 0)]
    usage_limit: Option<Option<i64>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, pattern = "^(lifetime|day|month)$")]
    usage_period: Option<Option<String>>,
}

impl TryFrom<UpdatePlan> for PlanPatch {
    type Error = ValidationError;

    fn try_from(dto: UpdatePlan) -> Result<Self, ValidationError> {
        Ok(Self {
            name: not_null("name", dto.name)?
                .map(PlanName::parse)
                .transpose()?,
            description: not_null("description", dto.description)?
                .map(PlanDescription::parse)
                .transpose()?,
            permissions: not_null("permissions", dto.permissions)?
                .map(permission_list)
                .transpose()?,
            usage_limit: dto.usage_limit.map(UsageLimit::parse).transpose()?,
            usage_period: not_null("usage_period", dto.usage_period)?
                .as_deref()
                .map(UsagePeriod::parse)
                .transpose()?,
        })
    }
}

fn plan_id(raw: i64) -> Result<PlanId, ApiError> {
    path_id(raw, PlanId::new, "plan")
}

#[utoipa::path(
    post,
    path = "/v1/plans",
    tag = "plans",
    summary = "Create a plan (admin)",
    request_body = CreatePlan,
    responses((status = 201, description = "Created", body = PlanDto, headers(("Location" = String, description = "URL of the new resource")))),
    security(("bearer" = []))
)]
async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: Json<CreatePlan>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let new = NewPlan::try_from(body.0)?;
    let plan = blocking(move || state.plans.create(new)).await?;
    Ok(created(
        format!("/v1/plans/{}", plan.id),
        &PlanDto::from(plan),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "plans",
    summary = "List plans",
    params(ListQuery),
    responses((status = 200, description = "A page", body = ListResponse<PlanDto>)),
    security(("bearer" = []))
)]
async fn list(
    _caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let page = blocking(move || state.plans.list(page)).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(page, PlanDto::from)))
}

#[utoipa::path(
    get,
    path = "/v1/plans/{id}",
    tag = "plans",
    summary = "Get a plan",
    params(("id" = i64, Path, description = "Plan id")),
    responses((status = 200, description = "The plan", body = PlanDto)),
    security(("bearer" = []))
)]
async fn get(
    _caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = plan_id(*id)?;
    let plan = blocking(move || state.plans.get(id)).await?;
    Ok(HttpResponse::Ok().json(PlanDto::from(plan)))
}

#[utoipa::path(
    patch,
    path = "/v1/plans/{id}",
    tag = "plans",
    summary = "Change a plan (admin); applies at every subscriber's next check",
    params(("id" = i64, Path, description = "Plan id")),
    request_body = UpdatePlan,
    responses((status = 200, description = "Changed", body = PlanDto)),
    security(("bearer" = []))
)]
async fn update(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: Json<UpdatePlan>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = plan_id(*id)?;
    let patch = PlanPatch::try_from(body.0)?;
    let plan = blocking(move || state.plans.update(id, patch)).await?;
    Ok(HttpResponse::Ok().json(PlanDto::from(plan)))
}

#[utoipa::path(
    delete,
    path = "/v1/plans/{id}",
    tag = "plans",
    summary = "Delete a plan without active subscriptions (admin)",
    params(("id" = i64, Path, description = "Plan id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []))
)]
async fn delete(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = plan_id(*id)?;
    blocking(move || state.plans.delete(id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
