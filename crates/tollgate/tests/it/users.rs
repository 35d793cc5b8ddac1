//! The user routes (`docs/api.md` section 5), the last admin, and what deleting a user takes with it.

mod cases {
    use actix_web::http::StatusCode;
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn users_are_managed_and_the_last_active_admin_stays(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let admin_id = app.get("/v1/me", ADMIN_KEY).await.body["id"]
            .as_i64()
            .expect("id");
        let bob = app.create("/v1/users", json!({"username": "bob"})).await;
        assert_eq!(bob["role"], "user");
        assert_eq!(bob["status"], "active");
        app.create(
            "/v1/users",
            json!({"username": "Bob", "status": "suspended"}),
        )
        .await;
        app.post("/v1/users", ADMIN_KEY, json!({"username": "bob"}))
            .await
            .assert_error(409, "conflict");
        for bad in [
            json!({"username": "bob smith"}),
            json!({"username": ""}),
            json!({"username": "u".repeat(65)}),
            json!({"username": "x", "role": "root"}),
            json!({"username": "x", "status": "gone"}),
            json!({"username": "x:y"}),
        ] {
            app.post("/v1/users", ADMIN_KEY, bad)
                .await
                .assert_error(422, "validation_failed");
        }
        let suspended = app.get("/v1/users?status=suspended", ADMIN_KEY).await;
        let names: Vec<_> = suspended.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|u| u["username"].clone())
            .collect();
        assert_eq!(names, vec![json!("Bob")]);
        let admins = app.get("/v1/users?role=admin", ADMIN_KEY).await;
        assert_eq!(admins.body["items"].as_array().map(Vec::len), Some(1));
        app.get("/v1/users?role=root", ADMIN_KEY)
            .await
            .assert_error(400, "bad_request");
        app.get("/v1/users?colour=red", ADMIN_KEY)
            .await
            .assert_error(400, "bad_request");

        // The last active admin stays.
        let me = format!("/v1/users/{admin_id}");
        app.patch(&me, ADMIN_KEY, json!({"role": "user"}))
            .await
            .assert_error(409, "conflict");
        app.patch(&me, ADMIN_KEY, json!({"status": "suspended"}))
            .await
            .assert_error(409, "conflict");
        app.delete(&me, ADMIN_KEY)
            .await
            .assert_error(409, "conflict");
        let renamed = app.patch(&me, ADMIN_KEY, json!({"username": "root"})).await;
        assert_eq!(renamed.status, StatusCode::OK);
        assert_eq!(renamed.body["username"], "root");
        // With a second admin, the first may step down.
        let bob_id = bob["id"].as_i64().expect("id");
        let r = app
            .patch(
                &format!("/v1/users/{bob_id}"),
                ADMIN_KEY,
                json!({"role": "admin"}),
            )
            .await;
        assert_eq!(r.body["role"], "admin");
        let r = app.patch(&me, ADMIN_KEY, json!({"role": "user"})).await;
        assert_eq!(r.status, StatusCode::OK);
        // The bootstrap key now belongs to a plain user.
        app.get("/v1/users", ADMIN_KEY)
            .await
            .assert_error(403, "forbidden");

        app.stop().await;
    }

    pub async fn deleting_a_user_removes_keys_and_subscription(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let plan = app.create("/v1/plans", json!({"name": "Pro"})).await;
        let (uid, key) = app.user_with_key("dave").await;
        let r = app
            .put(
                &format!("/v1/users/{uid}/subscription"),
                ADMIN_KEY,
                json!({"plan_id": plan["id"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(app.get("/v1/me", &key).await.status, StatusCode::OK);
        let r = app.delete(&format!("/v1/users/{uid}"), ADMIN_KEY).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        app.get("/v1/me", &key)
            .await
            .assert_error(401, "unauthorized");
        app.get(&format!("/v1/users/{uid}"), ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        let subs = app
            .get(
                &format!("/v1/subscriptions?plan_id={}", plan["id"]),
                ADMIN_KEY,
            )
            .await;
        assert_eq!(subs.body["items"], json!([]));
        assert_eq!(
            app.delete(&format!("/v1/plans/{}", plan["id"]), ADMIN_KEY)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        app.stop().await;
    }
}

on_both_backends!(
    users_are_managed_and_the_last_active_admin_stays,
    deleting_a_user_removes_keys_and_subscription,
);
