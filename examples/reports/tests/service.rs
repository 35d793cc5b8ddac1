//! The reports service on its own SQLite file: its key is allowed up to the
//! plan's quota, denied a permission the plan does not grant, and refused
//! without a key.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use actix_web::http::StatusCode;
use actix_web::{test, web, App};
use tollgate_example_reports::{routes, seed, DAILY_UNITS};
use tollgate_persistence::PoolOptions;

#[actix_web::test]
async fn the_service_allows_its_plan_then_denies_what_it_does_not_grant_and_what_is_over_quota() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let database = dir.path().join("reports.db");
    let state = tollgate::open_state(&database.to_string_lossy(), &PoolOptions::default())
        .expect("the service's database");
    let key = seed(&state).expect("seeded").expect("a fresh database");
    assert!(seed(&state).expect("seeded").is_none(), "seeded once");
    let app =
        test::init_service(App::new().app_data(web::Data::new(state)).configure(routes)).await;
    let bearer = ("Authorization", format!("Bearer {}", key.expose()));

    for n in 1..=DAILY_UNITS {
        let req = test::TestRequest::get()
            .uri("/reports")
            .insert_header(bearer.clone())
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK, "report {n}");
        let remaining = res
            .headers()
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok());
        assert_eq!(remaining, Some(DAILY_UNITS - n));
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["reports"][0], "sales");
    }

    let req = test::TestRequest::post()
        .uri("/exports")
        .insert_header(bearer.clone())
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("permission_denied"), "{body}");

    let req = test::TestRequest::get()
        .uri("/reports")
        .insert_header(bearer.clone())
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["error"]["code"], "quota_exhausted", "{body}");

    let req = test::TestRequest::get().uri("/reports").to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
