//! `RequirePermission` wrapping a route of a small test app: the same check,
//! bodies and headers as the access routes.

mod cases {
    use actix_web::http::StatusCode;
    use actix_web::{test, web, App, HttpMessage, HttpRequest, HttpResponse};
    use serde_json::Value;
    use tollgate_api::middleware::{Metered, RequirePermission};
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

    /// A handler's cost known afterwards: `?tokens=N` is what it reports.
    async fn generate(metered: web::ReqData<Metered>, req: HttpRequest) -> HttpResponse {
        let reported = req.query_string().strip_prefix("tokens=");
        match reported.and_then(|n| n.parse::<i64>().ok()) {
            Some(n) => {
                metered.set(n);
                HttpResponse::Ok().body(format!("{n} of {}", metered.reserved()))
            }
            None if req.query_string() == "fail" => HttpResponse::InternalServerError().finish(),
            None => HttpResponse::Ok().body("unreported"),
        }
    }

    pub async fn require_permission_reserves_before_the_handler_and_commits_its_cost(
        backend: Backend,
    ) {
        let tollgate = TestApp::spawn(backend).await;
        let c = tollgate
            .customer("meter", "Meter", &["model:generate"], Some(100), "month")
            .await;
        let state =
            tollgate::open_state(&tollgate.db.url, &TestDatabase::pool_options()).expect("state");
        let app = test::init_service(
            App::new().app_data(web::Data::new(state)).service(
                web::resource("/generate")
                    .wrap(
                        RequirePermission::new("model:generate")
                            .reserving(40)
                            .expect("valid"),
                    )
                    .route(web::get().to(generate)),
            ),
        )
        .await;
        let get = |path: &str| {
            test::TestRequest::get()
                .uri(path)
                .insert_header(("Authorization", format!("Bearer {}", c.key)))
                .to_request()
        };
        let res = test::call_service(&app, get("/generate?tokens=7")).await;
        assert_eq!(res.status(), StatusCode::OK);
        // The headers are the hold's: 40 of 100 taken before the handler ran.
        assert_eq!(
            res.headers()
                .get("ratelimit-remaining")
                .map(|v| v.as_bytes()),
            Some(&b"60"[..])
        );
        assert_eq!(test::read_body(res).await, "7 of 40".as_bytes());
        let usage = tollgate.usage(c.user_id).await;
        assert_eq!((&usage["used"], &usage["reserved"]), (&7.into(), &0.into()));
        // Unreported: a success commits all it held, a failure nothing.
        let res = test::call_service(&app, get("/generate")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = test::call_service(&app, get("/generate?fail")).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let usage = tollgate.usage(c.user_id).await;
        assert_eq!(
            (&usage["used"], &usage["reserved"]),
            (&47.into(), &0.into())
        );
        // A report over the hold commits the hold (53 left -> 13), and the
        // 13 left cannot hold 40: 429 before the handler.
        let res = test::call_service(&app, get("/generate?tokens=999")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = test::call_service(&app, get("/generate?tokens=1")).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let events = tollgate.events(c.user_id).await;
        let costs: Vec<i64> = events
            .iter()
            .map(|e| e["cost"].as_i64().expect("cost"))
            .collect();
        assert_eq!(costs, vec![7, 40, 40]);
        let usage = tollgate.usage(c.user_id).await;
        assert_eq!(
            (&usage["used"], &usage["reserved"]),
            (&87.into(), &0.into())
        );
        tollgate.stop().await;
    }
}

on_both_backends!(
    require_permission_guards_a_route,
    require_permission_reserves_before_the_handler_and_commits_its_cost,
);
