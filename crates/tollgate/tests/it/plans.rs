//! The plan routes, as `docs/api.md` section 4 describes them.

mod cases {
    use actix_web::http::StatusCode;
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn plan_names_are_unique_bad_plans_are_422_and_a_subscribed_plan_cannot_be_deleted(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        for name in ["a", "b", "c"] {
            app.create("/v1/permissions", json!({"name": name})).await;
        }
        let plan = app
            .create(
                "/v1/plans",
                json!({"name": "Pro", "description": "Caf\u{e9} \u{1F680}", "permissions": ["c", "a", "c", "b"],
                       "usage_limit": 1000, "usage_period": "day"}),
            )
            .await;
        assert_eq!(plan["permissions"], json!(["c", "a", "b"]));
        assert_eq!(plan["usage_limit"], 1000);
        assert_eq!(plan["usage_period"], "day");
        assert_eq!(plan["description"], "Caf\u{e9} \u{1F680}");
        let defaults = app.create("/v1/plans", json!({"name": "pro"})).await;
        assert_eq!(defaults["usage_limit"], json!(null));
        assert_eq!(defaults["usage_period"], "month");
        assert_eq!(defaults["permissions"], json!([]));
        app.post("/v1/plans", ADMIN_KEY, json!({"name": "Pro"}))
            .await
            .assert_error(409, "conflict");
        let m = app
            .post(
                "/v1/plans",
                ADMIN_KEY,
                json!({"name": "X", "permissions": ["a", "ghost"]}),
            )
            .await
            .assert_error(422, "validation_failed");
        assert!(m.contains("ghost"), "{m}");
        let m = app
            .post(
                "/v1/plans",
                ADMIN_KEY,
                json!({"name": "X", "usage_limit": -1}),
            )
            .await
            .assert_error(422, "validation_failed");
        assert_eq!(m, "usage_limit must be >= 0");
        // 257 distinct names (256 plus duplicates would do): over the cap,
        // refused before any name is looked up.
        let names: Vec<String> = (0..257).map(|i| format!("p{i}")).collect();
        let m = app
            .post(
                "/v1/plans",
                ADMIN_KEY,
                json!({"name": "X", "permissions": names}),
            )
            .await
            .assert_error(422, "validation_failed");
        assert!(m.contains("at most 256"), "{m}");
        for bad in [
            json!({"name": "X", "usage_period": "week"}),
            json!({"name": ""}),
            json!({"name": "n".repeat(256)}),
            json!({"name": "X", "description": "d".repeat(1001)}),
            json!({"name": "X", "permissions": ["bad name"]}),
        ] {
            app.post("/v1/plans", ADMIN_KEY, bad)
                .await
                .assert_error(422, "validation_failed");
        }
        let zero = app
            .create("/v1/plans", json!({"name": "Zero", "usage_limit": 0}))
            .await;
        assert_eq!(zero["usage_limit"], 0);

        let id = plan["id"].as_i64().expect("id");
        let r = app
            .patch(
                &format!("/v1/plans/{id}"),
                ADMIN_KEY,
                json!({"usage_limit": null, "usage_period": "lifetime"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["usage_limit"], json!(null));
        assert_eq!(r.body["usage_period"], "lifetime");
        assert_eq!(r.body["permissions"], json!(["c", "a", "b"]));
        app.patch(
            &format!("/v1/plans/{id}"),
            ADMIN_KEY,
            json!({"permissions": ["ghost"]}),
        )
        .await
        .assert_error(422, "validation_failed");
        let unchanged = app.get(&format!("/v1/plans/{id}"), ADMIN_KEY).await;
        assert_eq!(unchanged.body["permissions"], json!(["c", "a", "b"]));

        let list = app.get("/v1/plans", ADMIN_KEY).await;
        assert_eq!(list.body["items"].as_array().map(Vec::len), Some(3));
        assert_eq!(list.body["next_after"], json!(null));

        let (uid, _) = app.user_with_key("carol").await;
        let r = app
            .put(
                &format!("/v1/users/{uid}/subscription"),
                ADMIN_KEY,
                json!({"plan_id": id}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        app.delete(&format!("/v1/plans/{id}"), ADMIN_KEY)
            .await
            .assert_error(409, "conflict");
        app.delete(&format!("/v1/users/{uid}/subscription"), ADMIN_KEY)
            .await;
        assert_eq!(
            app.delete(&format!("/v1/plans/{id}"), ADMIN_KEY)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        app.get(&format!("/v1/plans/{id}"), ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.stop().await;
    }
}

on_both_backends!(plan_names_are_unique_bad_plans_are_422_and_a_subscribed_plan_cannot_be_deleted,);
