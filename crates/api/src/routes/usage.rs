//! Usage reports and events: `/v1/users/{id}/usage...` and `/v1/me/usage...`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollgate_domain::access::UsageReport;
use tollgate_domain::history::{Bucket, History, HistoryItem, Whose};
use tollgate_domain::usage::{EventFilter, UsageEvent};
use tollgate_domain::{PlanId, UserId};

use super::access::QuotaDto;
use super::users::user_id;
use super::{page_request, parse_timestamp, timestamp, ListResponse};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{blocking, bounded};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/users/{id}/usage").route(web::get().to(user_usage)))
        .service(web::resource("/users/{id}/usage/events").route(web::get().to(user_events)))
        .service(web::resource("/me/usage").route(web::get().to(my_usage)))
        .service(web::resource("/me/usage/events").route(web::get().to(my_events)))
        .service(web::resource("/users/{id}/usage/history").route(web::get().to(user_history)))
        .service(web::resource("/me/usage/history").route(web::get().to(my_history)))
        .service(web::resource("/usage/history").route(web::get().to(all_history)));
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageReportDto {
    pub user_id: i64,
    pub plan_id: i64,
    #[schema(value_type = String, example = "month")]
    pub usage_period: &'static str,
    #[schema(format = DateTime)]
    pub period_start: String,
    #[schema(format = DateTime)]
    pub period_end: Option<String>,
    pub limit: Option<i64>,
    /// Units consumed: checks and committed reservations
    pub used: i64,
    /// Units of held reservations
    pub reserved: i64,
    /// limit - used - reserved
    pub remaining: Option<i64>,
    pub by_permission: BTreeMap<String, i64>,
    /// Every quota of the plan: the plan-wide one and each permission's
    pub quotas: Vec<QuotaDto>,
}

impl From<UsageReport> for UsageReportDto {
    fn from(r: UsageReport) -> Self {
        Self {
            user_id: r.user_id.get(),
            plan_id: r.plan_id.get(),
            usage_period: r.context.period.as_str(),
            period_start: timestamp(r.period.start),
            period_end: r.period.end.map(timestamp),
            limit: r.limit,
            used: r.used,
            reserved: r.reserved,
            remaining: r.remaining,
            by_permission: r.by_permission,
            quotas: r.quotas.iter().map(QuotaDto::from).collect(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageEventDto {
    pub id: i64,
    pub user_id: i64,
    pub permission: String,
    pub cost: i64,
    #[schema(format = DateTime)]
    pub at: String,
}

impl From<UsageEvent> for UsageEventDto {
    fn from(e: UsageEvent) -> Self {
        Self {
            id: e.id,
            user_id: e.user_id.get(),
            permission: e.permission,
            cost: e.cost,
            at: timestamp(e.at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// 1..=500, default 50
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// Items with an id above this one
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Events at or after this RFC 3339 time
    #[param(format = DateTime)]
    from: Option<String>,
    /// Events before this RFC 3339 time
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only this permission's events
    permission: Option<String>,
}

/// A query string's fault: 400.
fn bad_query(e: tollgate_domain::ValidationError) -> ApiError {
    ApiError::bad_request(format!("bad query string: {e}"))
}

/// A range's optional bounds.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The `from` and `to` timestamps of a query string, each if given.
fn range(from: Option<&str>, to: Option<&str>) -> Result<Bounds, ApiError> {
    let parse = |field, t: Option<&str>| {
        t.map(|t| parse_timestamp(field, t))
            .transpose()
            .map_err(bad_query)
    };
    Ok((parse("from", from)?, parse("to", to)?))
}

async fn report_for(state: web::Data<AppState>, user: UserId) -> Result<HttpResponse, ApiError> {
    let known = state.clone();
    blocking(move || known.users.get(user)).await?;
    let context = bounded(state.db_timeout, state.access.context_of(user)).await?;
    let report = blocking(move || state.access.report(user, context)).await?;
    Ok(HttpResponse::Ok().json(UsageReportDto::from(report)))
}

async fn events_for(
    state: web::Data<AppState>,
    user: UserId,
    query: EventsQuery,
) -> Result<HttpResponse, ApiError> {
    let page = page_request(query.limit, query.after)?;
    let (from, to) = range(query.from.as_deref(), query.to.as_deref())?;
    let filter = EventFilter {
        from,
        to,
        permission: query.permission,
    };
    let page = blocking(move || {
        state.users.get(user)?;
        Ok::<_, ApiError>(state.access.events(user, &filter, page)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(page, UsageEventDto::from)))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/usage",
    tag = "usage",
    summary = "A user's usage in the current period (admin)",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, description = "The report", body = UsageReportDto)),
    security(("bearer" = []))
)]
async fn user_usage(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    report_for(state, user_id(*id)?).await
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/usage/events",
    tag = "usage",
    summary = "A user's usage events, oldest first (admin)",
    params(("id" = i64, Path, description = "User id"), EventsQuery),
    responses((status = 200, description = "A page", body = ListResponse<UsageEventDto>)),
    security(("bearer" = []))
)]
async fn user_events(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    events_for(state, user_id(*id)?, query.into_inner()).await
}

#[utoipa::path(
    get,
    path = "/v1/me/usage",
    tag = "usage",
    summary = "The caller's usage in the current period",
    responses((status = 200, description = "The report", body = UsageReportDto)),
    security(("bearer" = []))
)]
async fn my_usage(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    report_for(state, caller.user_id()).await
}

#[utoipa::path(
    get,
    path = "/v1/me/usage/events",
    tag = "usage",
    summary = "The caller's usage events, oldest first",
    params(EventsQuery),
    responses((status = 200, description = "A page", body = ListResponse<UsageEventDto>)),
    security(("bearer" = []))
)]
async fn my_events(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    events_for(state, caller.user_id(), query.into_inner()).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// hour, day (default) or month: UTC calendar buckets
    #[param(value_type = Option<String>, example = "day")]
    bucket: Option<String>,
    /// RFC 3339, inclusive, widened down to its bucket's start; default 29
    /// buckets before the current one
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339, exclusive, widened up to a bucket's start; default the end
    /// of the current bucket
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only this permission's units
    permission: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AllHistoryParams {
    /// hour, day (default) or month: UTC calendar buckets
    #[param(value_type = Option<String>, example = "day")]
    bucket: Option<String>,
    /// RFC 3339, inclusive, widened down to its bucket's start
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339, exclusive, widened up to a bucket's start
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only this permission's units
    permission: Option<String>,
    /// Only the users with an active subscription of this plan
    #[param(minimum = 1)]
    plan_id: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryItemDto {
    #[schema(format = DateTime)]
    pub start: String,
    pub used: i64,
    pub by_permission: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryDto {
    /// Present on a user's history
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    #[schema(value_type = String, example = "day")]
    pub bucket: &'static str,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    /// One per bucket with usage, ascending
    pub items: Vec<HistoryItemDto>,
}

impl HistoryDto {
    fn of(history: History, user_id: Option<UserId>) -> Self {
        Self {
            user_id: user_id.map(UserId::get),
            bucket: history.bucket.as_str(),
            from: timestamp(history.from),
            to: timestamp(history.to),
            items: history
                .items
                .into_iter()
                .map(|i: HistoryItem| HistoryItemDto {
                    start: timestamp(i.start),
                    used: i.used,
                    by_permission: i.by_permission,
                })
                .collect(),
        }
    }
}

async fn history_for(
    state: web::Data<AppState>,
    whose: Whose,
    params: HistoryParams,
) -> Result<HttpResponse, ApiError> {
    let bucket = params
        .bucket
        .as_deref()
        .map(Bucket::parse)
        .transpose()
        .map_err(bad_query)?
        .unwrap_or_default();
    let (from, to) = range(params.from.as_deref(), params.to.as_deref())?;
    let query = state
        .access
        .history_query(bucket, from, to, params.permission)
        .map_err(bad_query)?;
    let history = blocking(move || {
        if let Whose::User(user) = whose {
            state.users.get(user)?;
        }
        Ok::<_, ApiError>(state.access.history(&query, whose)?)
    })
    .await?;
    let user = match whose {
        Whose::User(user) => Some(user),
        Whose::Plan(_) | Whose::Everyone => None,
    };
    Ok(HttpResponse::Ok().json(HistoryDto::of(history, user)))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/usage/history",
    tag = "usage",
    summary = "A user's usage per hour, day or month (admin)",
    params(("id" = i64, Path, description = "User id"), HistoryParams),
    responses((status = 200, description = "The buckets with usage", body = HistoryDto)),
    security(("bearer" = []))
)]
async fn user_history(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    query: web::Query<HistoryParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    history_for(state, Whose::User(user_id(*id)?), query.into_inner()).await
}

#[utoipa::path(
    get,
    path = "/v1/me/usage/history",
    tag = "usage",
    summary = "The caller's usage per hour, day or month",
    params(HistoryParams),
    responses((status = 200, description = "The buckets with usage", body = HistoryDto)),
    security(("bearer" = []))
)]
async fn my_history(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<HistoryParams>,
) -> Result<HttpResponse, ApiError> {
    history_for(state, Whose::User(caller.user_id()), query.into_inner()).await
}

#[utoipa::path(
    get,
    path = "/v1/usage/history",
    tag = "usage",
    summary = "Every user's usage per hour, day or month, or a plan's subscribers' (admin)",
    params(AllHistoryParams),
    responses((status = 200, description = "The buckets with usage", body = HistoryDto)),
    security(("bearer" = []))
)]
async fn all_history(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<AllHistoryParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let AllHistoryParams {
        bucket,
        from,
        to,
        permission,
        plan_id,
    } = query.into_inner();
    let whose = match plan_id {
        None => Whose::Everyone,
        Some(id) if id > 0 => Whose::Plan(PlanId::from_store(id)),
        Some(_) => {
            let e = tollgate_domain::ValidationError::new("plan_id", "must be a positive id");
            return Err(bad_query(e));
        }
    };
    let params = HistoryParams {
        bucket,
        from,
        to,
        permission,
    };
    history_for(state, whose, params).await
}
