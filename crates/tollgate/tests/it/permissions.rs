//! The permission routes, as `docs/api.md` section 3 describes them.

mod cases {
    use actix_web::http::StatusCode;
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn permissions_are_created_renamed_and_deleted_once_no_plan_uses_them(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let p = app
            .create(
                "/v1/permissions",
                json!({"name": "reports:read", "description": "Read reports"}),
            )
            .await;
        assert_eq!(p["name"], "reports:read");
        assert_eq!(p["description"], "Read reports");
        assert!(p["created_at"].as_str().expect("ts").ends_with('Z'));
        let id = p["id"].as_i64().expect("id");
        let got = app.get(&format!("/v1/permissions/{id}"), ADMIN_KEY).await;
        assert_eq!(got.body, p);
        app.post(
            "/v1/permissions",
            ADMIN_KEY,
            json!({"name": "reports:read"}),
        )
        .await
        .assert_error(409, "conflict");
        let other = app
            .create("/v1/permissions", json!({"name": "Reports:read"}))
            .await;
        assert_eq!(other["description"], "");

        for bad in [
            json!({"name": ""}),
            json!({"name": "a b"}),
            json!({"name": "x".repeat(65)}),
            json!({"name": "a';DROP TABLE permissions;--"}),
            json!({}),
            json!({"name": null}),
            json!({"name": "ok", "description": "d".repeat(256)}),
        ] {
            app.post("/v1/permissions", ADMIN_KEY, bad.clone())
                .await
                .assert_error(422, "validation_failed");
        }
        let patched = app
            .patch(
                &format!("/v1/permissions/{id}"),
                ADMIN_KEY,
                json!({"description": "new"}),
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK);
        assert_eq!(patched.body["description"], "new");
        assert_eq!(patched.body["name"], "reports:read");
        app.patch(
            &format!("/v1/permissions/{id}"),
            ADMIN_KEY,
            json!({"name": "Reports:read"}),
        )
        .await
        .assert_error(409, "conflict");
        app.patch(
            &format!("/v1/permissions/{id}"),
            ADMIN_KEY,
            json!({"name": null}),
        )
        .await
        .assert_error(422, "validation_failed");
        app.patch(
            "/v1/permissions/9999",
            ADMIN_KEY,
            json!({"description": "x"}),
        )
        .await
        .assert_error(404, "not_found");

        // In use by a plan: 409, then free again once the plan drops it.
        let plan = app
            .create(
                "/v1/plans",
                json!({"name": "Pro", "permissions": ["reports:read"]}),
            )
            .await;
        app.delete(&format!("/v1/permissions/{id}"), ADMIN_KEY)
            .await
            .assert_error(409, "conflict");
        let r = app
            .patch(
                &format!("/v1/plans/{}", plan["id"]),
                ADMIN_KEY,
                json!({"permissions": []}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app
            .delete(&format!("/v1/permissions/{id}"), ADMIN_KEY)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(r.text.is_empty());
        app.get(&format!("/v1/permissions/{id}"), ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.delete(&format!("/v1/permissions/{id}"), ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.stop().await;
    }
}

on_both_backends!(permissions_are_created_renamed_and_deleted_once_no_plan_uses_them,);
