//! The subscription routes, as `docs/api.md` section 7 describes them.

mod cases {
    use actix_web::http::StatusCode;
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn a_subscription_is_put_changed_listed_and_canceled(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let basic = app
            .create("/v1/plans", json!({"name": "Basic", "usage_period": "day"}))
            .await;
        let pro = app
            .create(
                "/v1/plans",
                json!({"name": "Pro", "usage_period": "lifetime"}),
            )
            .await;
        let (uid, key) = app.user_with_key("gina").await;
        let path = format!("/v1/users/{uid}/subscription");
        app.get(&path, ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.get("/v1/me/subscription", &key)
            .await
            .assert_error(404, "not_found");

        let r = app
            .put(&path, ADMIN_KEY, json!({"plan_id": basic["id"]}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.header("location"), Some(path.as_str()));
        assert_eq!(r.body["status"], "active");
        assert_eq!(r.body["plan_id"], basic["id"]);
        assert_eq!(r.body["canceled_at"], json!(null));
        let start = r.body["current_period_start"].as_str().expect("start");
        assert!(start.ends_with("T00:00:00Z"), "{start}");
        assert!(r.body["current_period_end"]
            .as_str()
            .expect("end")
            .ends_with("T00:00:00Z"));
        let sub_id = r.body["id"].clone();

        let r = app
            .put(&path, ADMIN_KEY, json!({"plan_id": pro["id"]}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["id"], sub_id);
        assert_eq!(r.body["plan_id"], pro["id"]);
        assert_eq!(r.body["current_period_end"], json!(null));
        let r = app
            .put(&path, ADMIN_KEY, json!({"plan_id": pro["id"]}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        app.put(&path, ADMIN_KEY, json!({"plan_id": 9999}))
            .await
            .assert_error(422, "validation_failed");
        app.put(&path, ADMIN_KEY, json!({"plan_id": 0}))
            .await
            .assert_error(422, "validation_failed");
        app.put(&path, ADMIN_KEY, json!({}))
            .await
            .assert_error(422, "validation_failed");
        app.put(&path, ADMIN_KEY, json!({"plan_id": "1"}))
            .await
            .assert_error(400, "bad_request");
        app.put(
            "/v1/users/9999/subscription",
            ADMIN_KEY,
            json!({"plan_id": pro["id"]}),
        )
        .await
        .assert_error(404, "not_found");

        let mine = app.get("/v1/me/subscription", &key).await;
        assert_eq!(mine.status, StatusCode::OK);
        assert_eq!(mine.body["id"], sub_id);
        let listed = app
            .get(
                &format!("/v1/subscriptions?plan_id={}&status=active", pro["id"]),
                ADMIN_KEY,
            )
            .await;
        assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
        app.get("/v1/subscriptions?status=paused", ADMIN_KEY)
            .await
            .assert_error(400, "bad_request");

        assert_eq!(
            app.delete(&path, ADMIN_KEY).await.status,
            StatusCode::NO_CONTENT
        );
        app.delete(&path, ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.get(&path, ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        let canceled = app
            .get("/v1/subscriptions?status=canceled", ADMIN_KEY)
            .await;
        let items = canceled.body["items"].as_array().expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["status"], "canceled");
        assert!(items[0]["canceled_at"].is_string());
        let again = app
            .put(&path, ADMIN_KEY, json!({"plan_id": basic["id"]}))
            .await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_ne!(again.body["id"], sub_id);
        app.stop().await;
    }
}

on_both_backends!(a_subscription_is_put_changed_listed_and_canceled,);
