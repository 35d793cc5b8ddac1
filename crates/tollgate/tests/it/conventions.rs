//! What every route does alike: pages, and bad input that changes nothing.

mod cases {
    use actix_web::http::{Method, StatusCode};
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn pages_walk_every_item_once_in_id_order_and_bad_page_queries_are_400(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        for i in 0..5 {
            app.create("/v1/permissions", json!({"name": format!("p{i}")}))
                .await;
        }
        let mut seen = Vec::new();
        let mut path = String::from("/v1/permissions?limit=2");
        loop {
            let r = app.get(&path, ADMIN_KEY).await;
            assert_eq!(r.status, StatusCode::OK);
            let items = r.body["items"].as_array().expect("items").clone();
            assert!(items.len() <= 2);
            seen.extend(items.iter().map(|p| p["id"].as_i64().expect("id")));
            match r.body["next_after"].as_i64() {
                Some(after) => path = format!("/v1/permissions?limit=2&after={after}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        for q in [
            "limit=0",
            "limit=501",
            "limit=-1",
            "limit=abc",
            "after=-5",
            "after=x",
            "bogus=1",
        ] {
            app.get(&format!("/v1/permissions?{q}"), ADMIN_KEY)
                .await
                .assert_error(400, "bad_request");
        }
        let r = app.get("/v1/permissions?limit=500", ADMIN_KEY).await;
        assert_eq!(r.status, StatusCode::OK);
        app.stop().await;
    }

    pub async fn bad_input_changes_nothing(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let json = Some("application/json");
        let k = Some(ADMIN_KEY);
        app.raw(Method::POST, "/v1/plans", k, Some("{\"name\": "), json)
            .await
            .assert_error(400, "bad_request");
        app.raw(Method::POST, "/v1/plans", k, Some("not json"), json)
            .await
            .assert_error(400, "bad_request");
        app.raw(Method::POST, "/v1/plans", k, Some("[1,2]"), json)
            .await
            .assert_error(400, "bad_request");
        app.raw(Method::POST, "/v1/plans", k, Some("{\"name\": 5}"), json)
            .await
            .assert_error(400, "bad_request");
        let m = app
            .raw(
                Method::POST,
                "/v1/plans",
                k,
                Some("{\"name\": \"X\", \"usage_limit\": \"many\"}"),
                json,
            )
            .await
            .assert_error(400, "bad_request");
        assert!(m.contains("usage_limit"), "{m}");
        let m = app
            .raw(
                Method::POST,
                "/v1/plans",
                k,
                Some("{\"name\": \"X\", \"colour\": \"red\"}"),
                json,
            )
            .await
            .assert_error(400, "bad_request");
        assert!(m.contains("colour"), "{m}");
        app.raw(
            Method::POST,
            "/v1/plans",
            k,
            Some("{\"name\": \"X\", \"usage_limit\": 99999999999999999999}"),
            json,
        )
        .await
        .assert_error(400, "bad_request");
        app.raw(
            Method::POST,
            "/v1/plans",
            k,
            Some("{\"name\":\"X\"}"),
            Some("text/plain"),
        )
        .await
        .assert_error(400, "bad_request");
        let big = format!(
            "{{\"name\": \"X\", \"description\": \"{}\"}}",
            "d".repeat(70 * 1024)
        );
        app.raw(Method::POST, "/v1/plans", k, Some(&big), json)
            .await
            .assert_error(413, "payload_too_large");
        app.raw(
            Method::POST,
            "/v1/plans",
            k,
            Some("{\"name\": \"Robert'); DROP TABLE plans;--\"}"),
            json,
        )
        .await;
        // Ids that are not positive 64-bit integers name no resource.
        for id in [
            "abc",
            "0",
            "-1",
            "99999999999999999999",
            "1.5",
            "%27%20OR%201=1",
        ] {
            app.get(&format!("/v1/plans/{id}"), ADMIN_KEY)
                .await
                .assert_error(404, "not_found");
            app.get(&format!("/v1/users/{id}"), ADMIN_KEY)
                .await
                .assert_error(404, "not_found");
        }
        // Unknown routes and methods.
        app.get("/v1/nothing", ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.raw(Method::GET, "/nothing", None, None, None)
            .await
            .assert_error(404, "not_found");
        app.call(Method::PUT, "/v1/plans", ADMIN_KEY, None)
            .await
            .assert_error(405, "method_not_allowed");
        app.call(Method::POST, "/v1/me", ADMIN_KEY, None)
            .await
            .assert_error(405, "method_not_allowed");
        app.raw(Method::POST, "/healthz", None, None, None)
            .await
            .assert_error(405, "method_not_allowed");

        // Only the plan with the SQL-looking name was created, verbatim.
        let plans = app.get("/v1/plans", ADMIN_KEY).await;
        let items = plans.body["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{}", plans.text);
        assert_eq!(items[0]["name"], "Robert'); DROP TABLE plans;--");
        app.stop().await;
    }
}

on_both_backends!(
    pages_walk_every_item_once_in_id_order_and_bad_page_queries_are_400,
    bad_input_changes_nothing,
);
