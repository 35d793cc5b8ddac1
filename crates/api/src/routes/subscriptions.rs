//! `/v1/users/{id}/subscription` and `/v1/subscriptions`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_domain::subscription::{
    Subscribed, Subscription, SubscriptionFilter, SubscriptionStatus,
};
use tollgate_domain::{PlanId, UserId, ValidationError};

use super::users::user_id;
use super::{created, page_request, required, timestamp, ListResponse};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{blocking, Json};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users/{id}/subscription")
            .route(web::get().to(get))
            .route(web::put().to(put))
            .route(web::delete().to(cancel)),
    )
    .service(web::resource("/subscriptions").route(web::get().to(list)));
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionDto {
    pub id: i64,
    pub user_id: i64,
    pub plan_id: i64,
    #[schema(value_type = String, example = "active")]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub canceled_at: Option<String>,
    #[schema(format = DateTime)]
    pub current_period_start: String,
    #[schema(format = DateTime)]
    pub current_period_end: Option<String>,
}

impl SubscriptionDto {
    pub fn new(s: Subscription, now: DateTime<Utc>) -> Self {
        let window = s.window_at(now);
        Self {
            id: s.id.get(),
            user_id: s.user_id.get(),
            plan_id: s.plan_id.get(),
            status: s.status.as_str(),
            started_at: timestamp(s.started_at),
            canceled_at: s.canceled_at.map(timestamp),
            current_period_start: timestamp(window.start),
            current_period_end: window.end.map(timestamp),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSubscription {
    #[schema(required = true, value_type = i64, minimum = 1)]
    plan_id: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionListQuery {
    /// 1..=500, default 50
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// Items with an id above this one
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Only this plan's
    #[param(minimum = 1)]
    plan_id: Option<i64>,
    /// active or canceled
    #[param(pattern = "^(active|canceled)$")]
    status: Option<String>,
}

/// The active subscription of `user` as a response.
pub async fn active_for(
    state: web::Data<AppState>,
    user: UserId,
) -> Result<HttpResponse, ApiError> {
    let (sub, now) = blocking(move || {
        let s = state.subscriptions.active(user)?;
        Ok::<_, ApiError>((s, state.subscriptions.now()))
    })
    .await?;
    Ok(HttpResponse::Ok().json(SubscriptionDto::new(sub, now)))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/subscription",
    tag = "subscriptions",
    summary = "A user's active subscription (admin)",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, description = "The active subscription", body = SubscriptionDto)),
    security(("bearer" = []))
)]
async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    active_for(state, user_id(*id)?).await
}

#[utoipa::path(
    put,
    path = "/v1/users/{id}/subscription",
    tag = "subscriptions",
    summary = "Subscribe (201) or move to another plan (200) (admin)",
    params(("id" = i64, Path, description = "User id")),
    request_body = PutSubscription,
    responses((status = 200, description = "Moved", body = SubscriptionDto), (status = 201, description = "Subscribed", body = SubscriptionDto, headers(("Location" = String, description = "URL of the new resource")))),
    security(("bearer" = []))
)]
async fn put(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: Json<PutSubscription>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let user = user_id(*id)?;
    let raw = required("plan_id", body.0.plan_id)?;
    let plan = PlanId::new(raw)
        .ok_or_else(|| ApiError::new(ErrorCode::ValidationFailed, "plan_id names no plan"))?;
    let (sub, how, now) = blocking(move || {
        let (s, how) = state.subscriptions.subscribe(user, plan)?;
        Ok::<_, ApiError>((s, how, state.subscriptions.now()))
    })
    .await?;
    let dto = SubscriptionDto::new(sub, now);
    Ok(match how {
        Subscribed::Created => created(format!("/v1/users/{user}/subscription"), &dto),
        Subscribed::Changed => HttpResponse::Ok().json(dto),
    })
}

#[utoipa::path(
    delete,
    path = "/v1/users/{id}/subscription",
    tag = "subscriptions",
    summary = "Cancel the active subscription (admin)",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 204, description = "Canceled")),
    security(("bearer" = []))
)]
async fn cancel(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let user = user_id(*id)?;
    blocking(move || state.subscriptions.cancel(user)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    summary = "List subscriptions (admin)",
    params(SubscriptionListQuery),
    responses((status = 200, description = "A page", body = ListResponse<SubscriptionDto>)),
    security(("bearer" = []))
)]
async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<SubscriptionListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let page = page_request(query.limit, query.after)?;
    let bad = |e: ValidationError| ApiError::bad_request(format!("bad query string: {e}"));
    let filter = SubscriptionFilter {
        plan_id: match query.plan_id {
            None => None,
            Some(raw) => Some(
                PlanId::new(raw)
                    .ok_or_else(|| bad(ValidationError::new("plan_id", "must be a positive id")))?,
            ),
        },
        status: query
            .status
            .as_deref()
            .map(SubscriptionStatus::parse)
            .transpose()
            .map_err(bad)?,
    };
    let (page, now) = blocking(move || {
        let p = state.subscriptions.list(filter, page)?;
        Ok::<_, ApiError>((p, state.subscriptions.now()))
    })
    .await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(page, |s| {
        SubscriptionDto::new(s, now)
    })))
}
