//! `/v1/access/reservations`: hold units before a call whose cost is known
//! afterwards, then commit the real cost or release them.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use tollgate_domain::access::{binding, Decision, Quota};
use tollgate_domain::idempotency::IdempotencyKey;
use tollgate_domain::permission::PermissionName;
use tollgate_domain::reservation::{
    NewHold, Reservation, ReservationId, ReservationStatus, Settle, Settled, TtlSeconds,
};
use tollgate_domain::usage::Cost;
use tollgate_domain::user::User;

use super::access::{
    decision_status, idempotency_key, parse_permission, replay_if_recorded, subject, with_headers,
    DecisionDto, QuotaDto,
};
use super::{required, timestamp};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{blocking, bounded, Json};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // A scope of a static prefix is matched by comparing strings: no other
    // route's request runs the patterns of ids (regular expressions) below.
    // A commit's pattern first, so that a commit runs one of them.
    cfg.service(
        web::scope("/access/reservations")
            .service(web::resource("").route(web::post().to(create)))
            .service(web::resource("/{id}/commit").route(web::post().to(commit)))
            .service(
                web::resource("/{id}")
                    .route(web::get().to(get))
                    .route(web::delete().to(release)),
            ),
    );
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReservationRequest {
    /// The permission to use
    #[schema(required = true, value_type = String, example = "reports:read", pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    permission: Option<String>,
    /// Units to hold, 1..=1000000 (default 1)
    #[schema(minimum = 1, maximum = 1000000)]
    cost: Option<i64>,
    /// Seconds the units are held unless settled, 1..=3600 (default 300)
    #[schema(minimum = 1, maximum = 3600)]
    ttl_seconds: Option<i64>,
    /// Admins only: reserve for this user
    user_id: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Units to keep, 0..=reserved; the rest go back to the quotas
    #[schema(required = true, minimum = 0, maximum = 1000000)]
    cost: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReservationDto {
    /// Opaque; reveals nothing about other reservations
    pub id: String,
    pub user_id: i64,
    pub permission: String,
    /// held, committed or released
    #[schema(value_type = String, example = "held")]
    pub status: &'static str,
    /// Units held at creation
    pub reserved: i64,
    /// Units kept by the commit
    pub committed: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The binding quota's limit
    pub limit: Option<i64>,
    /// The binding quota's units left (net of held units)
    pub remaining: Option<i64>,
    /// When the binding quota resets
    #[schema(format = DateTime)]
    pub reset_at: Option<String>,
    /// Every quota that applies to the permission
    pub quotas: Vec<QuotaDto>,
}

impl ReservationDto {
    fn of(r: &Reservation, status: ReservationStatus, quotas: &[Quota]) -> Self {
        let binding = binding(quotas);
        Self {
            id: r.id.as_str().to_owned(),
            user_id: r.user_id.get(),
            permission: r.permission.clone(),
            status: status.as_str(),
            reserved: r.hold.reserved.get(),
            committed: match status {
                ReservationStatus::Committed { units } => Some(units),
                ReservationStatus::Held | ReservationStatus::Released => None,
            },
            created_at: timestamp(r.hold.created_at),
            expires_at: timestamp(r.hold.expires_at),
            limit: binding.map(|q| q.limit),
            remaining: binding.map(|q| q.remaining),
            reset_at: binding.and_then(|q| q.reset_at).map(timestamp),
            quotas: quotas.iter().map(QuotaDto::from).collect(),
        }
    }
}

/// A reservation of `cost` units for `ttl`, decided as a check (see
/// [`super::access::run_check`]) under a fresh id: the time and 128 random
/// bits.
pub(crate) async fn run_reserve(
    state: &web::Data<AppState>,
    subject: User,
    permission: PermissionName,
    cost: Cost,
    ttl: TtlSeconds,
    key: Option<IdempotencyKey>,
) -> Result<Decision, ApiError> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| ApiError::internal(e.to_string()))?;
    let hold = NewHold {
        // The id's time only orders ids (the decision's clock dates the
        // reservation itself).
        id: ReservationId::new(chrono::Utc::now(), random),
        ttl,
    };
    let started = std::time::Instant::now();
    let again = key.clone();
    let reserved = state.access.reserve(&subject, permission, cost, hold, key);
    let decision = bounded(state.db_timeout, reserved).await?;
    let decision =
        replay_if_recorded(state, decision, subject, again, cost, Some(ttl.get())).await?;
    state
        .metrics
        .observe_decision(&decision, Some(started.elapsed()));
    Ok(decision)
}

fn location(id: &ReservationId) -> String {
    format!("/v1/access/reservations/{}", id.as_str())
}

/// A path's id: one that cannot be a reservation's is 404 like an unknown one.
fn parse_id(raw: &str) -> Result<ReservationId, ApiError> {
    ReservationId::parse(raw).ok_or_else(|| ApiError::not_found("reservation"))
}

#[utoipa::path(
    post,
    path = "/v1/access/reservations",
    tag = "access",
    summary = "Hold units for a call whose cost is known afterwards; decided as a check",
    request_body = CreateReservationRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1..=255 visible ASCII characters: a repeat is answered as the original, holding nothing")),
    responses((status = 201, description = "Held; the units count as used until settled", body = ReservationDto, headers(("Location" = String, description = "URL of the reservation"), ("RateLimit-Limit" = i64), ("RateLimit-Remaining" = i64), ("RateLimit-Reset" = i64))), (status = 403, description = "Denied: user_suspended, no_subscription or permission_denied", body = DecisionDto), (status = 429, description = "Denied: rate_limited or quota_exhausted", body = DecisionDto, headers(("Retry-After" = i64, description = "Seconds until the same request could succeed")))),
    security(("bearer" = []))
)]
async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: Json<CreateReservationRequest>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let body = body.0;
    let permission = parse_permission(required("permission", body.permission)?)?;
    let cost = Cost::parse(body.cost)?;
    let ttl = TtlSeconds::parse(body.ttl_seconds)?;
    let user = subject(caller, &state, body.user_id).await?;
    let decision = run_reserve(&state, user, permission, cost, ttl, key).await?;
    let Some(reservation) = &decision.reservation else {
        return Ok(
            with_headers(HttpResponse::build(decision_status(&decision)), &decision)
                .json(DecisionDto::from(&decision)),
        );
    };
    let dto = ReservationDto::of(reservation, ReservationStatus::Held, &decision.quotas);
    Ok(with_headers(HttpResponse::Created(), &decision)
        .insert_header((header::LOCATION, location(&reservation.id)))
        .json(dto))
}

/// The reservation's body as it stands, with its permission's quotas now.
async fn shown(state: &web::Data<AppState>, r: Reservation) -> Result<ReservationDto, ApiError> {
    let context = bounded(state.db_timeout, state.access.context_of(r.user_id)).await?;
    let state = state.clone();
    blocking(move || {
        let quotas = state.access.quotas_now(r.user_id, &r.permission, context)?;
        let status = r.status_at(state.reservations.now());
        Ok::<_, ApiError>(ReservationDto::of(&r, status, &quotas))
    })
    .await
}

/// The caller's reservation (or, for admins, anyone's), settled through
/// the batching writer for at most the database timeout (the writer's
/// transaction checks whose it is).
async fn settle(
    state: &web::Data<AppState>,
    caller: Caller,
    id: ReservationId,
    settle: Settle,
) -> Result<Settled, ApiError> {
    let settled = state.reservations.settle(&caller.0.user, &id, settle);
    bounded(state.db_timeout, settled).await
}

#[utoipa::path(
    get,
    path = "/v1/access/reservations/{id}",
    tag = "access",
    summary = "A reservation (its user's or, for admins, anyone's)",
    params(("id" = String, Path, description = "The reservation's id")),
    responses((status = 200, description = "The reservation", body = ReservationDto), (status = 404, description = "No such reservation of the caller's", body = crate::error::ErrorBody)),
    security(("bearer" = []))
)]
async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let viewer = caller.0.user;
    let found = state.clone();
    let r = blocking(move || found.reservations.get(&viewer, &id)).await?;
    Ok(HttpResponse::Ok().json(shown(&state, r).await?))
}

#[utoipa::path(
    post,
    path = "/v1/access/reservations/{id}/commit",
    tag = "access",
    summary = "Keep cost units of a held reservation (a usage event dated at its creation) and return the rest",
    params(("id" = String, Path, description = "The reservation's id")),
    request_body = CommitRequest,
    responses((status = 200, description = "Committed (or the same commit repeated)", body = ReservationDto), (status = 404, description = "No such reservation of the caller's", body = crate::error::ErrorBody), (status = 409, description = "Released, expired, or committed with another cost", body = crate::error::ErrorBody), (status = 422, description = "cost outside 0..=reserved", body = crate::error::ErrorBody)),
    security(("bearer" = []))
)]
async fn commit(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<CommitRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    // Outside 0..=reserved is 422, decided on the reservation.
    let n = required("cost", body.0.cost)?;
    let settled = settle(&state, caller, id, Settle::Commit(n)).await?;
    let body = match settled.quotas {
        // Read in the commit's own transaction.
        Some(quotas) => {
            let r = settled.reservation;
            let status = r.status_at(state.reservations.now());
            ReservationDto::of(&r, status, &quotas)
        }
        None => shown(&state, settled.reservation).await?,
    };
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(
    delete,
    path = "/v1/access/reservations/{id}",
    tag = "access",
    summary = "Release a held reservation's units",
    params(("id" = String, Path, description = "The reservation's id")),
    responses((status = 204, description = "Released (or released before)"), (status = 404, description = "No such reservation of the caller's", body = crate::error::ErrorBody), (status = 409, description = "Committed", body = crate::error::ErrorBody)),
    security(("bearer" = []))
)]
async fn release(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    settle(&state, caller, id, Settle::Release).await?;
    Ok(HttpResponse::NoContent().finish())
}
