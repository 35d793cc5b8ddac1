//! `RequirePermission` wrapping a route of a small test app: the same check,
//! bodies and headers as the access routes.

mod cases {
    use actix_web::http::StatusCode;
    use actix_web::{test, web, App, HttpMessage, HttpRequest, HttpResponse};
    use serde_json::Value;
    use tollgate_api::middleware::RequirePermission;
    use tollgate_domain::access::Decision;
    use tollgate_persistence::testing::TestDatabase;
    use tollgate_persistence::Backend;

    use crate::common::TestApp;

    async fn reports(req: HttpRequest) -> HttpResponse {
        let user = req
            .extensions()
            .get::<Decision>()
            .map(|d| d.user_id.get())
            .unwrap_or(0);
        HttpResponse::Ok().body(format!("reports for {user}"))
    }

    pub async fn require_permission_guards_a_route(backend: Backend) {
        // Tollgate's own server seeds the data; the test app shares its database.
        let tollgate = TestApp::spawn(backend).await;
        let c = tollgate
            .customer("svc", "Pro", &["reports:read"], Some(2), "month")
            .await;
        let state =
            tollgate::open_state(&tollgate.db.url, &TestDatabase::pool_options()).expect("state");
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(state))
                .service(
                    web::resource("/reports")
                        .wrap(RequirePermission::new("reports:read"))
                        .route(web::get().to(reports)),
                )
                .service(
                    web::resource("/admin")
                        .wrap(RequirePermission::new("admin:all"))
                        .route(web::get().to(reports)),
                ),
        )
        .await;
        let get = |path: &str, key: Option<&str>| {
            let mut req = test::TestRequest::get().uri(path);
            if let Some(key) = key {
                req = req.insert_header(("Authorization", format!("Bearer {key}")));
            }
            req.to_request()
        };

        let res = test::call_service(&app, get("/reports", Some(&c.key))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()
                .get("ratelimit-remaining")
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body = test::read_body(res).await;
        assert_eq!(body, format!("reports for {}", c.user_id).as_bytes());

        let res = test::call_service(&app, get("/admin", Some(&c.key))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let body: Value = test::read_body_json(res).await;
        assert_eq!(body["error"]["code"], "forbidden");

        let res = test::call_service(&app, get("/reports", None)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.headers().get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let body: Value = test::read_body_json(res).await;
        assert_eq!(body["error"]["code"], "unauthorized");

        assert_eq!(
            test::call_service(&app, get("/reports", Some(&c.key)))
                .await
                .status(),
            StatusCode::OK
        );
        let res = test::call_service(&app, get("/reports", Some(&c.key))).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().get("retry-after").is_some());
        let body: Value = test::read_body_json(res).await;
        assert_eq!(body["error"]["code"], "quota_exhausted");

        // The same counter as Tollgate's own checks.
        assert_eq!(tollgate.usage(c.user_id).await["used"], 2);
        assert_eq!(tollgate.events(c.user_id).await.len(), 2);
        tollgate.stop().await;
    }
}

on_both_backends!(require_permission_guards_a_route);
