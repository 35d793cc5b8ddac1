//! `/healthz`, `/readyz` and `/metrics` on a running server.

mod cases {
    use actix_web::http::{Method, StatusCode};
    use tollgate_persistence::Backend;

    use crate::common::TestApp;

    pub async fn healthz_and_readyz_are_200_and_metrics_count_requests_decisions_and_the_pool(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let r = app.raw(Method::GET, "/healthz", None, None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app.raw(Method::GET, "/readyz", None, None, None).await;
        assert_eq!(r.status, StatusCode::OK);

        // Metrics: requests by route template and status, decisions, pool.
        let c = app.customer("m", "Metered", &["p"], Some(1), "day").await;
        assert_eq!(app.check(&c.key, "p", None).await.status, StatusCode::OK);
        assert_eq!(
            app.check(&c.key, "p", None).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        app.get(&format!("/v1/plans/{}", c.plan_id), &c.key).await;
        let res = app.client.get(format!("{}/metrics", app.base)).send().await;
        let mut res = res.expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        let text = String::from_utf8(res.body().await.expect("body").to_vec()).expect("utf-8");
        for expected in [
            r#"tollgate_http_requests_total{method="GET",route="/healthz",status="200"} 1"#,
            r#"tollgate_http_requests_total{method="POST",route="/v1/access/check",status="429"} 1"#,
            r#"tollgate_http_requests_total{method="GET",route="/v1/plans/{id}",status="200"} 1"#,
            r#"tollgate_http_request_duration_seconds_bucket{method="POST",route="/v1/access/check",status="200""#,
            r#"tollgate_access_decisions_total{outcome="allowed"} 1"#,
            r#"tollgate_access_decisions_total{outcome="quota_exhausted"} 1"#,
            "tollgate_access_check_db_seconds_count 2",
            "tollgate_db_pool_connections ",
            "tollgate_db_pool_in_use_connections ",
            "tollgate_db_pool_wait_seconds ",
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
        app.stop().await;
    }
}

on_both_backends!(healthz_and_readyz_are_200_and_metrics_count_requests_decisions_and_the_pool,);
