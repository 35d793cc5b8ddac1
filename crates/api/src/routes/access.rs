//! `POST /v1/access/check` and `GET /v1/authorize` (forward-auth).

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::{Deserialize, Serialize};
use tollgate_domain::access::{Decision, DenyReason, Quota};
use tollgate_domain::idempotency::IdempotencyKey;
use tollgate_domain::permission::PermissionName;
use tollgate_domain::usage::Cost;
use tollgate_domain::user::User;
use tollgate_domain::{UserId, ValidationError};

use super::{required, timestamp};
use crate::auth::Caller;
use crate::error::{error_json, ApiError, ErrorCode};
use crate::extract::{blocking, bounded, Json};
use crate::state::AppState;

/// Header a gateway may send instead of the `permission` query parameter.
pub const PERMISSION_HEADER: &str = "x-tollgate-permission";
/// Header of an allowed forward-auth answer: the user the key belongs to.
pub const USER_ID_HEADER: &str = "x-tollgate-user-id";
/// Header naming a request so that its retries consume nothing.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header of an answer repeated from an earlier request of the same key.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The request's `Idempotency-Key`, if it has one: given at most once,
/// 1..=255 visible ASCII characters, else 400.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY_HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "the Idempotency-Key header is given more than once",
        ));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/access/check").route(web::post().to(check)))
        .service(
            web::resource("/authorize")
                .route(web::get().to(authorize))
                .route(web::head().to(authorize))
                .route(web::method(Method::OPTIONS).to(authorize)),
        );
}

/// Envoy's ext_authz appends the original path (and keeps its method):
/// a pattern the router matches by regular expression, so it comes after
/// the static routes and the reservations' scope.
pub fn configure_forwarded(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/authorize/{original_path:.*}").route(web::route().to(authorize_forwarded)),
    );
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The permission to use
    #[schema(required = true, value_type = String, example = "reports:read", pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    permission: Option<String>,
    /// Units to consume, 1..=1000000 (default 1)
    #[schema(minimum = 1, maximum = 1000000)]
    cost: Option<i64>,
    /// Admins only: check for this user
    user_id: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DecisionDto {
    pub allowed: bool,
    /// user_suspended, no_subscription, permission_denied, rate_limited or quota_exhausted
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
    pub user_id: i64,
    pub permission: String,
    /// The binding quota's limit
    pub limit: Option<i64>,
    /// The binding quota's units left
    pub remaining: Option<i64>,
    /// When the binding quota resets
    #[schema(format = DateTime)]
    pub reset_at: Option<String>,
    /// Seconds until the same check could succeed (denied only)
    pub retry_after: Option<i64>,
    /// Every quota that applies, after this check
    pub quotas: Vec<QuotaDto>,
}

/// A quota's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotaDto {
    /// plan or permission
    #[schema(value_type = String, example = "plan")]
    pub scope: &'static str,
    pub limit: i64,
    pub remaining: i64,
    #[schema(value_type = String, example = "month")]
    pub usage_period: &'static str,
    #[schema(format = DateTime)]
    pub reset_at: Option<String>,
}

impl From<&Quota> for QuotaDto {
    fn from(q: &Quota) -> Self {
        Self {
            scope: q.scope.as_str(),
            limit: q.limit,
            remaining: q.remaining,
            usage_period: q.usage_period.as_str(),
            reset_at: q.reset_at.map(timestamp),
        }
    }
}

impl From<&Decision> for DecisionDto {
    fn from(d: &Decision) -> Self {
        Self {
            allowed: d.allowed(),
            reason: d.denied.map(DenyReason::as_str),
            user_id: d.user_id.get(),
            permission: d.permission.as_str().to_owned(),
            limit: d.limit(),
            remaining: d.remaining(),
            reset_at: d.reset_at().map(timestamp),
            retry_after: d.retry_after,
            quotas: d.quotas.iter().map(QuotaDto::from).collect(),
        }
    }
}

/// The status of a decision: 200, 403 or 429.
pub fn decision_status(d: &Decision) -> StatusCode {
    match d.denied {
        None => StatusCode::OK,
        Some(DenyReason::QuotaExhausted | DenyReason::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
        Some(
            DenyReason::UserSuspended | DenyReason::NoSubscription | DenyReason::PermissionDenied,
        ) => StatusCode::FORBIDDEN,
    }
}

/// `RateLimit-*` headers of the binding quota when a quota applies, and
/// `Retry-After` on a 429 that can be retried.
pub fn rate_limit_headers(d: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    let mut push = |name: &'static str, value: i64| {
        headers.push((HeaderName::from_static(name), HeaderValue::from(value)));
    };
    if let (Some(limit), Some(remaining)) = (d.limit(), d.remaining()) {
        push("ratelimit-limit", limit);
        push("ratelimit-remaining", remaining);
        if let Some(reset) = d.reset_in_seconds() {
            push("ratelimit-reset", reset);
        }
    }
    if let Some(retry) = d.retry_after {
        push("retry-after", retry);
    }
    if d.replayed {
        headers.push((
            HeaderName::from_static(REPLAYED_HEADER),
            HeaderValue::from_static("true"),
        ));
    }
    headers
}

pub(crate) fn with_headers(mut builder: HttpResponseBuilder, d: &Decision) -> HttpResponseBuilder {
    for header in rate_limit_headers(d) {
        builder.insert_header(header);
    }
    builder
}

/// A denied decision as the contract's error body (forward-auth, middleware).
pub fn denied_error_response(d: &Decision, reason: DenyReason) -> HttpResponse {
    let code = match reason {
        DenyReason::QuotaExhausted => ErrorCode::QuotaExhausted,
        DenyReason::RateLimited => ErrorCode::RateLimited,
        DenyReason::UserSuspended | DenyReason::NoSubscription | DenyReason::PermissionDenied => {
            ErrorCode::Forbidden
        }
    };
    let message = format!("{}: {}", reason.as_str(), reason.explain());
    with_headers(HttpResponse::build(code.status()), d)
        .content_type("application/json")
        .body(error_json(code, &message))
}

/// The access check, awaited without holding a thread (ready at once up to
/// the consumption when the store's cache holds the subject's context), for
/// at most the database timeout: the check, dropped, is skipped by the
/// writer if its batch has not started. With `key`, a repeat of a granted
/// check is answered from its record.
pub async fn run_check(
    state: &web::Data<AppState>,
    subject: User,
    permission: PermissionName,
    cost: Cost,
    key: Option<IdempotencyKey>,
) -> Result<Decision, ApiError> {
    let started = std::time::Instant::now();
    let again = key.clone();
    let decision = bounded(
        state.db_timeout,
        state.access.check(&subject, permission, cost, key),
    )
    .await?;
    let decision = replay_if_recorded(state, decision, subject, again, cost, None).await?;
    // Only a decision on the quota went to the database.
    let consumed = matches!(
        decision.denied,
        None | Some(DenyReason::QuotaExhausted | DenyReason::RateLimited)
    );
    let store_time = consumed.then(|| started.elapsed());
    state.metrics.observe_decision(&decision, store_time);
    Ok(decision)
}

/// A keyed request denied before the quota (the user suspended since, the
/// subscription or the permission gone) that repeats a granted one: the
/// original's answer instead (or 422 for another request).
pub(crate) async fn replay_if_recorded(
    state: &web::Data<AppState>,
    decision: Decision,
    subject: User,
    key: Option<IdempotencyKey>,
    cost: Cost,
    ttl: Option<i64>,
) -> Result<Decision, ApiError> {
    let (Some(reason), Some(key)) = (decision.denied, key) else {
        return Ok(decision);
    };
    if !reason.before_quota() {
        return Ok(decision);
    }
    let (state, permission) = (state.clone(), decision.permission.clone());
    let found =
        blocking(move || state.access.replay(&subject, permission, cost, ttl, &key)).await?;
    Ok(found.unwrap_or(decision))
}

pub(crate) fn parse_permission(value: String) -> Result<PermissionName, ValidationError> {
    PermissionName::parse(value).map_err(|e| ValidationError::new("permission", e.message))
}

/// The user a check is for: the caller, or (admins) the `user_id` given.
pub(crate) async fn subject(
    caller: Caller,
    state: &web::Data<AppState>,
    user_id: Option<i64>,
) -> Result<User, ApiError> {
    let Some(raw) = user_id.filter(|id| *id != caller.user_id().get()) else {
        return Ok(caller.0.user);
    };
    caller.require_admin()?;
    let id = UserId::new(raw)
        .ok_or_else(|| ApiError::validation(ValidationError::new("user_id", "names no user")))?;
    let state = state.clone();
    blocking(move || match state.users.get(id) {
        Err(tollgate_domain::user::UserError::NotFound) => Err(ApiError::validation(
            ValidationError::new("user_id", "names no user"),
        )),
        other => other.map_err(ApiError::from),
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/access/check",
    tag = "access",
    summary = "May this key use this permission now? Consumes cost when allowed",
    request_body = CheckRequest,
    responses((status = 200, description = "Allowed; cost consumed, durably", body = DecisionDto, headers(("RateLimit-Limit" = i64, description = "The plan's limit, when one applies"), ("RateLimit-Remaining" = i64, description = "Units left in the period"), ("RateLimit-Reset" = i64, description = "Seconds until the period resets (not for lifetime)"))), (status = 403, description = "Denied: user_suspended, no_subscription or permission_denied", body = DecisionDto), (status = 429, description = "Denied: quota_exhausted", body = DecisionDto, headers(("RateLimit-Limit" = i64, description = "The plan's limit, when one applies"), ("RateLimit-Remaining" = i64, description = "Units left in the period"), ("RateLimit-Reset" = i64, description = "Seconds until the period resets (not for lifetime)"), ("Retry-After" = i64, description = "Seconds until the period resets (not for lifetime)")))),
    security(("bearer" = []))
)]
async fn check(
    caller: Caller,
    state: web::Data<AppState>,
    body: Json<CheckRequest>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let body = body.0;
    let permission = parse_permission(required("permission", body.permission)?)?;
    let cost = Cost::parse(body.cost)?;
    let user = subject(caller, &state, body.user_id).await?;
    let decision = run_check(&state, user, permission, cost, key).await?;
    Ok(
        with_headers(HttpResponse::build(decision_status(&decision)), &decision)
            .json(DecisionDto::from(&decision)),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeQuery {
    /// The permission (or the X-Tollgate-Permission header)
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    permission: Option<String>,
    /// Units to consume, 1..=1000000 (default 1)
    #[param(minimum = 1, maximum = 1000000)]
    cost: Option<i64>,
}

#[utoipa::path(
    method(get, head, options),
    path = "/v1/authorize",
    tag = "access",
    summary = "Forward-auth check for gateways (nginx auth_request, Traefik, Envoy); HEAD and OPTIONS decide without consuming",
    params(AuthorizeQuery, ("X-Tollgate-Permission" = Option<String>, Header, description = "The permission, instead of the query parameter")),
    responses((status = 204, description = "Allowed; cost consumed", headers(("X-Tollgate-User-Id" = i64, description = "The key's user"), ("RateLimit-Limit" = i64), ("RateLimit-Remaining" = i64), ("RateLimit-Reset" = i64))), (status = 429, description = "Quota exhausted", body = crate::error::ErrorBody, headers(("RateLimit-Limit" = i64, description = "The plan's limit, when one applies"), ("RateLimit-Remaining" = i64, description = "Units left in the period"), ("RateLimit-Reset" = i64, description = "Seconds until the period resets (not for lifetime)"), ("Retry-After" = i64, description = "Seconds until the period resets (not for lifetime)")))),
    security(("bearer" = []))
)]
async fn authorize(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<AuthorizeQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    forward_auth(caller, state, query.permission, query.cost, &req).await
}

/// `/v1/authorize/<original path>`: the query string is the client's, so
/// only the `X-Tollgate-Permission` header names the permission.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/v1/authorize/{original_path}",
    tag = "access",
    summary = "Forward-auth check as Envoy ext_authz calls it (original path appended); HEAD and OPTIONS decide without consuming",
    params(("original_path" = String, Path, description = "The original request path"), ("X-Tollgate-Permission" = Option<String>, Header, description = "The permission, instead of the query parameter")),
    responses((status = 204, description = "Allowed; cost consumed", headers(("X-Tollgate-User-Id" = i64, description = "The key's user"))), (status = 429, description = "Quota exhausted", body = crate::error::ErrorBody, headers(("RateLimit-Limit" = i64, description = "The plan's limit, when one applies"), ("RateLimit-Remaining" = i64, description = "Units left in the period"), ("RateLimit-Reset" = i64, description = "Seconds until the period resets (not for lifetime)"), ("Retry-After" = i64, description = "Seconds until the period resets (not for lifetime)")))),
    security(("bearer" = []))
)]
async fn authorize_forwarded(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    forward_auth(caller, state, None, None, &req).await
}

/// Whether a forward-auth request only asks: `HEAD` and `OPTIONS` (a
/// preflight, a probe) get the decision a `GET` would get, consuming nothing.
fn only_asks(method: &Method) -> bool {
    method == Method::HEAD || method == Method::OPTIONS
}

async fn forward_auth(
    caller: Caller,
    state: web::Data<AppState>,
    permission: Option<String>,
    cost: Option<i64>,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut headers = req.headers().get_all(PERMISSION_HEADER);
    let from_header = headers.next();
    if headers.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "the {PERMISSION_HEADER} header is given more than once"
        )));
    }
    let from_header = from_header
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| ApiError::bad_request(format!("{PERMISSION_HEADER} is not ASCII")))?;
    let raw = permission.or(from_header).ok_or_else(|| {
        ApiError::bad_request(format!(
            "give the permission as ?permission=NAME or the {PERMISSION_HEADER} header"
        ))
    })?;
    let permission = parse_permission(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let cost = Cost::parse(cost).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key = idempotency_key(req)?;
    let decision = if only_asks(req.method()) {
        let user = caller.0.user;
        let context = bounded(state.db_timeout, state.access.context_of(user.id)).await?;
        blocking(move || state.access.preview(&user, permission, cost, context)).await?
    } else {
        run_check(&state, caller.0.user, permission, cost, key).await?
    };
    Ok(match decision.denied {
        None => with_headers(HttpResponse::NoContent(), &decision)
            .insert_header((USER_ID_HEADER, decision.user_id.get()))
            .finish(),
        Some(reason) => denied_error_response(&decision, reason),
    })
}
