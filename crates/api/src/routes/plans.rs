//! `/v1/plans`.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use tollgate_domain::period::UsagePeriod;
use tollgate_domain::permission::PermissionName;
use tollgate_domain::plan::{
    NewPlan, PermissionLimit, PermissionLimits, PermissionList, Plan, PlanDescription, PlanName,
    PlanPatch, RateLimit, UsageLimit,
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
    /// Quotas of single permissions of the plan, by name
    pub permission_limits: BTreeMap<String, PermissionLimitDto>,
    /// The subscriber's token bucket, if any
    pub rate_limit: Option<RateLimitDto>,
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
            permission_limits: p
                .permission_limits
                .iter()
                .map(|(name, limit)| {
                    let dto = PermissionLimitDto {
                        usage_limit: limit.usage_limit,
                        usage_period: limit.usage_period.as_str(),
                    };
                    (name.as_str().to_owned(), dto)
                })
                .collect(),
            rate_limit: p.rate_limit.map(|r| RateLimitDto {
                units: r.units(),
                per_seconds: r.per_seconds(),
            }),
            created_at: timestamp(p.created_at),
            updated_at: timestamp(p.updated_at),
        }
    }
}

/// A permission's own quota, as a plan shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PermissionLimitDto {
    pub usage_limit: i64,
    #[schema(value_type = String, example = "day")]
    pub usage_period: &'static str,
}

/// A rate limit, as a plan shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RateLimitDto {
    pub units: i64,
    pub per_seconds: i64,
}

/// A permission's own quota in a request: an object only (serde would
/// also take an array for a struct).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "JsonObject")]
pub struct PermissionLimitInput {
    /// Units per period, >= 0 (required)
    #[schema(required = true, value_type = i64, minimum = 0)]
    usage_limit: Option<i64>,
    /// lifetime, day or month (default month)
    #[schema(pattern = "^(lifetime|day|month)$")]
    usage_period: Option<String>,
}

/// A rate limit in a request: an object only.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "JsonObject")]
pub struct RateLimitInput {
    /// Units the bucket holds, 1..=1000000000
    #[schema(required = true, value_type = i64, minimum = 1, maximum = 1000000000)]
    units: Option<i64>,
    /// Seconds to refill an empty bucket, 1..=86400
    #[schema(required = true, value_type = i64, minimum = 1, maximum = 86400)]
    per_seconds: Option<i64>,
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionLimitFields {
    usage_limit: Option<i64>,
    usage_period: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFields {
    units: Option<i64>,
    per_seconds: Option<i64>,
}

impl TryFrom<JsonObject> for PermissionLimitInput {
    type Error = serde_json::Error;

    fn try_from(object: JsonObject) -> Result<Self, Self::Error> {
        let f: PermissionLimitFields = serde_json::from_value(serde_json::Value::Object(object))?;
        Ok(Self {
            usage_limit: f.usage_limit,
            usage_period: f.usage_period,
        })
    }
}

impl TryFrom<JsonObject> for RateLimitInput {
    type Error = serde_json::Error;

    fn try_from(object: JsonObject) -> Result<Self, Self::Error> {
        let f: RateLimitFields = serde_json::from_value(serde_json::Value::Object(object))?;
        Ok(Self {
            units: f.units,
            per_seconds: f.per_seconds,
        })
    }
}

fn permission_limits(
    map: BTreeMap<String, PermissionLimitInput>,
) -> Result<PermissionLimits, ValidationError> {
    let limits = map
        .into_iter()
        .map(|(name, input)| {
            let name = PermissionName::parse(name).map_err(|e| {
                ValidationError::new("permission_limits", format!("key: {}", e.message))
            })?;
            let usage_limit = input.usage_limit.ok_or_else(|| {
                ValidationError::new(
                    "permission_limits",
                    format!("{name}: usage_limit is required"),
                )
            })?;
            let period = input
                .usage_period
                .as_deref()
                .map(UsagePeriod::parse)
                .transpose()?
                .unwrap_or_default();
            Ok((name, PermissionLimit::parse(usage_limit, period)?))
        })
        .collect::<Result<Vec<_>, ValidationError>>()?;
    Ok(PermissionLimits::new(limits))
}

fn rate_limit(input: RateLimitInput) -> Result<RateLimit, ValidationError> {
    RateLimit::parse(
        required("rate_limit.units", input.units)?,
        required("rate_limit.per_seconds", input.per_seconds)?,
    )
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
    /// Quotas of single permissions of the plan (default none)
    permission_limits: Option<BTreeMap<String, PermissionLimitInput>>,
    /// A token bucket per subscriber (default null: none)
    rate_limit: Option<RateLimitInput>,
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
            permission_limits: permission_limits(dto.permission_limits.unwrap_or_default())?,
            rate_limit: dto.rate_limit.map(rate_limit).transpose()?,
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
    /// Replaces every permission quota of the plan.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<BTreeMap<String, PermissionLimitInput>>)]
    permission_limits: Option<Option<BTreeMap<String, PermissionLimitInput>>>,
    /// `null` removes the rate limit.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<RateLimitInput>)]
    rate_limit: Option<Option<RateLimitInput>>,
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
            permission_limits: not_null("permission_limits", dto.permission_limits)?
                .map(permission_limits)
                .transpose()?,
            rate_limit: dto
                .rate_limit
                .map(|r| r.map(rate_limit).transpose())
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
