//! `/healthz` and `/readyz`: no key needed.

use actix_web::{web, HttpResponse};
use serde_json::json;

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatusDto {
    pub status: String,
}

use crate::error::{ApiError, ErrorCode};
use crate::extract::blocking;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/readyz").route(web::get().to(readyz)));
}

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "200 while the process runs",
    responses((status = 200, description = "Alive", body = StatusDto))
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the database answers and the threads the access checks need
/// (the batching writers, the read cache's loader) run, else 503.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "200 when the database answers and the access-check threads run, else 503",
    responses((status = 200, description = "Ready", body = StatusDto))
)]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.db.threads_alive() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "a thread the access checks need has stopped; restart this instance",
        ));
    }
    let db = state.db.clone();
    blocking(move || db.ping()).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
