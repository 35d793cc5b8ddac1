//! `/healthz` and `/readyz`: no key needed.

use actix_web::{web, HttpResponse};
use serde_json::json;

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatusDto {
    pub status: String,
}

use tollgate_domain::status::NotReady;

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
    let status = state.status.clone();
    blocking(move || status.ready().map_err(not_ready)).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

fn not_ready(e: NotReady) -> ApiError {
    match e {
        NotReady::ThreadStopped => ApiError::new(
            ErrorCode::Unavailable,
            "a thread the access checks need has stopped; restart this instance",
        ),
        NotReady::Store(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::{test, web, App};
    use tollgate_domain::status::NotReady;
    use tollgate_domain::StoreError;

    use crate::state::mocked::Mocks;

    async fn readyz(ready: fn() -> Result<(), NotReady>) -> (StatusCode, String) {
        let mut mocks = Mocks::default();
        mocks.status.expect_ready().times(1).returning(ready);
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(mocks.into_state()))
                .configure(super::configure),
        )
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        let status = res.status();
        let body = test::read_body(res).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[actix_web::test]
    async fn readyz_is_200_when_the_store_is_ready() {
        let (status, body) = readyz(|| Ok(())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"status":"ready"}"#);
    }

    #[actix_web::test]
    async fn readyz_is_503_and_says_restart_when_a_thread_has_stopped() {
        let (status, body) = readyz(|| Err(NotReady::ThreadStopped)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""code":"unavailable""#), "{body}");
        assert!(body.contains("restart this instance"), "{body}");
    }

    #[actix_web::test]
    async fn readyz_is_503_when_the_store_does_not_answer() {
        let (status, body) =
            readyz(|| Err(NotReady::Store(StoreError::Unavailable("gone".into())))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""code":"unavailable""#), "{body}");
    }
}
