//! Walks every route of contract sections 2 to 6 against the real server.

mod common;

mod cases {
    use actix_web::http::{Method, StatusCode};
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn health_and_readiness(backend: Backend) {
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

    pub async fn authentication_and_roles(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        // Missing, malformed and unknown keys.
        let r = app.raw(Method::GET, "/v1/me", None, None, None).await;
        r.assert_error(401, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let mut req = app.client.get(format!("{}/v1/me", app.base));
        req = req.insert_header(("Authorization", "Basic YWJjOmRlZg=="));
        let res = req.send().await.expect("sent");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        app.get("/v1/me", "tg_unknownunknownunknownunknownunknown")
            .await
            .assert_error(401, "unauthorized");
        // 401 comes before any look at the body.
        app.raw(
            Method::POST,
            "/v1/plans",
            None,
            Some("{not json"),
            Some("application/json"),
        )
        .await
        .assert_error(401, "unauthorized");

        // The bootstrap key is the admin `admin`.
        let me = app.get("/v1/me", ADMIN_KEY).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["username"], "admin");
        assert_eq!(me.body["role"], "admin");

        // A user may read plans and permissions, and nothing of admins.
        let (uid, key) = app.user_with_key("bob").await;
        let plan = app.create("/v1/plans", json!({"name": "Basic"})).await;
        let perm = app
            .create("/v1/permissions", json!({"name": "x:read"}))
            .await;
        assert_eq!(app.get("/v1/plans", &key).await.status, StatusCode::OK);
        assert_eq!(
            app.get(&format!("/v1/plans/{}", plan["id"]), &key)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            app.get("/v1/permissions", &key).await.status,
            StatusCode::OK
        );
        app.get(&format!("/v1/permissions/{}", perm["id"]), &key)
            .await
            .assert_error(403, "forbidden");
        app.post("/v1/plans", &key, json!({"name": "Mine"}))
            .await
            .assert_error(403, "forbidden");
        app.get("/v1/users", &key)
            .await
            .assert_error(403, "forbidden");
        app.get("/v1/subscriptions", &key)
            .await
            .assert_error(403, "forbidden");
        app.get(&format!("/v1/users/{uid}"), &key)
            .await
            .assert_error(403, "forbidden");
        assert_eq!(app.get("/v1/me", &key).await.body["username"], "bob");

        // Suspended: GET /v1/me still works, minting keys does not.
        let r = app
            .patch(
                &format!("/v1/users/{uid}"),
                ADMIN_KEY,
                json!({"status": "suspended"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let me = app.get("/v1/me", &key).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["status"], "suspended");
        app.post("/v1/me/api-keys", &key, json!({}))
            .await
            .assert_error(403, "forbidden");
        app.stop().await;
    }

    pub async fn permissions_crud(backend: Backend) {
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

    pub async fn plans_crud(backend: Backend) {
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

    pub async fn users_crud_and_last_admin(backend: Backend) {
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

    pub async fn api_keys(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let user = app.create("/v1/users", json!({"username": "erin"})).await;
        let uid = user["id"].as_i64().expect("id");
        let created = app
            .create(
                &format!("/v1/users/{uid}/api-keys"),
                json!({"name": "laptop", "expires_at": "2099-01-01T00:00:00Z"}),
            )
            .await;
        let key = created["key"].as_str().expect("secret").to_owned();
        assert!(key.starts_with("tg_") && key.len() >= 35);
        assert!(key[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(created["prefix"], key[..8]);
        assert_eq!(created["user_id"], uid);
        assert_eq!(created["name"], "laptop");
        assert_eq!(created["expires_at"], "2099-01-01T00:00:00Z");
        assert_eq!(created["revoked_at"], json!(null));

        let listed = app
            .get(&format!("/v1/users/{uid}/api-keys"), ADMIN_KEY)
            .await;
        assert!(
            !listed.text.contains(&key[8..]),
            "a listing shows the secret"
        );
        assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
        let kid = created["id"].as_i64().expect("id");
        let one = app
            .get(&format!("/v1/users/{uid}/api-keys/{kid}"), ADMIN_KEY)
            .await;
        assert_eq!(one.body["prefix"], created["prefix"]);
        assert!(one.body.get("key").is_none());

        // The user's own keys.
        assert_eq!(app.get("/v1/me", &key).await.body["username"], "erin");
        let mine = app
            .post("/v1/me/api-keys", &key, json!({"name": "ci"}))
            .await;
        assert_eq!(mine.status, StatusCode::CREATED);
        let second = mine.body["key"].as_str().expect("secret").to_owned();
        let second_id = mine.body["id"].as_i64().expect("id");
        assert!(mine
            .header("location")
            .expect("location")
            .starts_with("/v1/me/api-keys/"));
        let empty_body = app
            .raw(Method::POST, "/v1/me/api-keys", Some(&key), None, None)
            .await;
        assert_eq!(
            empty_body.status,
            StatusCode::CREATED,
            "{}",
            empty_body.text
        );
        let listed = app.get("/v1/me/api-keys?limit=2", &key).await;
        assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(2));
        assert!(listed.body["next_after"].is_i64());

        // Another user's key is not found through /v1/me.
        let (_, other_key) = app.user_with_key("frank").await;
        app.delete(&format!("/v1/me/api-keys/{second_id}"), &other_key)
            .await
            .assert_error(404, "not_found");
        app.get(&format!("/v1/me/api-keys/{second_id}"), &other_key)
            .await
            .assert_error(404, "not_found");

        // Revoke: the key answers 401 from then on.
        let r = app
            .delete(&format!("/v1/me/api-keys/{second_id}"), &key)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        app.get("/v1/me", &second)
            .await
            .assert_error(401, "unauthorized");
        let r = app
            .delete(&format!("/v1/users/{uid}/api-keys/{kid}"), ADMIN_KEY)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        app.get("/v1/me", &key)
            .await
            .assert_error(401, "unauthorized");
        let revoked = app
            .get(&format!("/v1/users/{uid}/api-keys/{kid}"), ADMIN_KEY)
            .await;
        assert!(revoked.body["revoked_at"].is_string());

        app.post(
            &format!("/v1/users/{uid}/api-keys"),
            ADMIN_KEY,
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await
        .assert_error(422, "validation_failed");
        app.post(
            &format!("/v1/users/{uid}/api-keys"),
            ADMIN_KEY,
            json!({"expires_at": "tomorrow"}),
        )
        .await
        .assert_error(422, "validation_failed");
        app.post("/v1/users/9999/api-keys", ADMIN_KEY, json!({}))
            .await
            .assert_error(404, "not_found");
        app.get("/v1/users/9999/api-keys", ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.stop().await;
    }

    /// A timestamp `seconds` from now, to the second.
    fn in_seconds(seconds: i64) -> String {
        (chrono::Utc::now() + chrono::Duration::seconds(seconds))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// Mints `n` keys for `uid` through the admin route.
    async fn mint(app: &TestApp, uid: i64, n: usize) {
        for _ in 0..n {
            app.create(&format!("/v1/users/{uid}/api-keys"), json!({}))
                .await;
        }
    }

    /// The user's keys that are neither revoked nor expired now.
    async fn live_keys(app: &TestApp, uid: i64) -> usize {
        let now = chrono::Utc::now();
        let listed = app
            .get(&format!("/v1/users/{uid}/api-keys?limit=500"), ADMIN_KEY)
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
        let items = listed.body["items"].as_array().expect("items");
        items
            .iter()
            .filter(|k| k["revoked_at"].is_null())
            .filter(|k| {
                k["expires_at"].as_str().is_none_or(|e| {
                    chrono::DateTime::parse_from_rfc3339(e).expect("timestamp") > now
                })
            })
            .count()
    }

    pub async fn at_most_100_live_keys_per_user(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (uid, key) = app.user_with_key("many").await;
        let admin_route = format!("/v1/users/{uid}/api-keys");
        // A revoked key does not count.
        let revoked = app.create(&admin_route, json!({})).await;
        let revoked_id = revoked["id"].as_i64().expect("id");
        let r = app
            .delete(&format!("{admin_route}/{revoked_id}"), ADMIN_KEY)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        mint(&app, uid, 98).await;
        // The 100th live key, through /v1/me.
        let hundredth = app.post("/v1/me/api-keys", &key, json!({})).await;
        assert_eq!(hundredth.status, StatusCode::CREATED, "{}", hundredth.text);
        assert_eq!(live_keys(&app, uid).await, 100);

        // The 101st is 409 on both routes, and nothing was stored.
        let message = app
            .post(&admin_route, ADMIN_KEY, json!({}))
            .await
            .assert_error(409, "conflict");
        assert!(message.contains("100"), "{message}");
        app.post("/v1/me/api-keys", &key, json!({"name": "one more"}))
            .await
            .assert_error(409, "conflict");
        assert_eq!(live_keys(&app, uid).await, 100);

        // Revoking one makes room for one; an expired key does not count.
        let last = hundredth.body["id"].as_i64().expect("id");
        let r = app.delete(&format!("/v1/me/api-keys/{last}"), &key).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let soon = app
            .post(
                &admin_route,
                ADMIN_KEY,
                json!({"expires_at": in_seconds(2)}),
            )
            .await;
        assert_eq!(soon.status, StatusCode::CREATED, "{}", soon.text);
        app.post(&admin_route, ADMIN_KEY, json!({}))
            .await
            .assert_error(409, "conflict");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(2500)).await;
        let after_expiry = app.post("/v1/me/api-keys", &key, json!({})).await;
        assert_eq!(
            after_expiry.status,
            StatusCode::CREATED,
            "{}",
            after_expiry.text
        );
        app.post("/v1/me/api-keys", &key, json!({}))
            .await
            .assert_error(409, "conflict");
        assert_eq!(live_keys(&app, uid).await, 100);
        app.stop().await;
    }

    pub async fn concurrent_key_creation_never_exceeds_100(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (uid, key) = app.user_with_key("racer").await;
        mint(&app, uid, 89).await;
        assert_eq!(live_keys(&app, uid).await, 90);

        // 20 creations at once, half through each route: exactly 10 fit.
        let admin_route = format!("/v1/users/{uid}/api-keys");
        let attempts = (0..20).map(|i| {
            let (path, caller) = if i % 2 == 0 {
                (admin_route.as_str(), ADMIN_KEY)
            } else {
                ("/v1/me/api-keys", key.as_str())
            };
            app.post(path, caller, json!({"name": format!("race {i}")}))
        });
        let answers = futures_util::future::join_all(attempts).await;
        let created = answers
            .iter()
            .filter(|r| r.status == StatusCode::CREATED)
            .count();
        for refused in answers.iter().filter(|r| r.status != StatusCode::CREATED) {
            refused.assert_error(409, "conflict");
        }
        assert_eq!(created, 10);
        assert_eq!(live_keys(&app, uid).await, 100);
        app.stop().await;
    }

    pub async fn own_keys_expire_no_later_than_the_calling_key(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (uid, forever) = app.user_with_key("bounded").await;
        let bound = "2099-01-01T00:00:00Z";
        let expiring = app
            .create(
                &format!("/v1/users/{uid}/api-keys"),
                json!({"expires_at": bound}),
            )
            .await;
        let expiring = expiring["key"].as_str().expect("secret").to_owned();

        // None given: the calling key's expiry.
        let inherited = app.post("/v1/me/api-keys", &expiring, json!({})).await;
        assert_eq!(inherited.status, StatusCode::CREATED, "{}", inherited.text);
        assert_eq!(inherited.body["expires_at"], bound);
        // Equal or earlier: as asked.
        for asked in [bound, "2098-06-01T12:00:00Z"] {
            let r = app
                .post("/v1/me/api-keys", &expiring, json!({"expires_at": asked}))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            assert_eq!(r.body["expires_at"], asked);
        }
        // Later: 422, and nothing stored.
        let before = live_keys(&app, uid).await;
        let message = app
            .post(
                "/v1/me/api-keys",
                &expiring,
                json!({"expires_at": "2099-01-01T00:00:01Z"}),
            )
            .await
            .assert_error(422, "validation_failed");
        assert!(message.contains("expires_at"), "{message}");
        assert_eq!(live_keys(&app, uid).await, before);

        // A key that never expires sets no bound.
        let free = app.post("/v1/me/api-keys", &forever, json!({})).await;
        assert_eq!(free.status, StatusCode::CREATED, "{}", free.text);
        assert_eq!(free.body["expires_at"], json!(null));
        let later = app
            .post(
                "/v1/me/api-keys",
                &forever,
                json!({"expires_at": "2100-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(later.status, StatusCode::CREATED, "{}", later.text);
        // The admin route is not bound by the admin's key.
        let r = app
            .post(
                &format!("/v1/users/{uid}/api-keys"),
                ADMIN_KEY,
                json!({"expires_at": "2100-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        app.stop().await;
    }

    pub async fn responses_with_a_secret_are_not_stored(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (uid, key) = app.user_with_key("cached").await;
        let by_admin = app
            .post(&format!("/v1/users/{uid}/api-keys"), ADMIN_KEY, json!({}))
            .await;
        let by_me = app.post("/v1/me/api-keys", &key, json!({})).await;
        for r in [&by_admin, &by_me] {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            assert!(r.body["key"].is_string());
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
        app.stop().await;
    }

    pub async fn subscriptions(backend: Backend) {
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

    pub async fn pagination(backend: Backend) {
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
    health_and_readiness,
    authentication_and_roles,
    permissions_crud,
    plans_crud,
    users_crud_and_last_admin,
    deleting_a_user_removes_keys_and_subscription,
    api_keys,
    at_most_100_live_keys_per_user,
    concurrent_key_creation_never_exceeds_100,
    own_keys_expire_no_later_than_the_calling_key,
    responses_with_a_secret_are_not_stored,
    subscriptions,
    pagination,
    bad_input_changes_nothing,
);

/// The bootstrap admin key's sources, on a real `tollgate` process.
mod admin_key {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use actix_web::http::StatusCode;

    const KEY: &str = "file-admin-key-0123456789abcdefghijkl";

    fn tollgate(dir: &std::path::Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.env_remove("TOLLGATE_ADMIN_KEY")
            .env_remove("TOLLGATE_ADMIN_KEY_FILE")
            .env("DATABASE_URL", dir.join("tollgate.db"))
            .env("TOLLGATE_WORKERS", "1")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null());
        cmd
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    #[actix_web::test]
    async fn the_admin_key_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("admin_key");
        std::fs::write(&file, format!("{KEY}\n")).expect("key written");
        let port = free_port();
        let child = tollgate(dir.path())
            .env("TOLLGATE_ADMIN_KEY_FILE", &file)
            .env("TOLLGATE_BIND", format!("127.0.0.1:{port}"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tollgate starts");
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _child = Kill(child);

        let client = awc::Client::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            let sent = client
                .get(format!("http://127.0.0.1:{port}/v1/me"))
                .insert_header(("Authorization", format!("Bearer {KEY}")))
                .send()
                .await;
            if let Ok(mut res) = sent {
                let body: serde_json::Value = res.json().await.expect("json");
                assert_eq!(body["username"], "admin", "{body}");
                break res.status();
            }
            assert!(Instant::now() < deadline, "tollgate did not start");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn an_admin_key_flag_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        for args in [
            vec!["--admin-key", KEY],
            vec![&format!("--admin-key={KEY}")],
            vec!["serve", "--admin-key", KEY],
        ] {
            let out = tollgate(dir.path())
                .args(&args)
                .output()
                .expect("tollgate runs");
            assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("--admin-key"), "{stderr}");
        }
    }

    #[test]
    fn both_admin_key_settings_are_a_start_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("admin_key");
        std::fs::write(&file, KEY).expect("key written");
        let out = tollgate(dir.path())
            .env("TOLLGATE_ADMIN_KEY", KEY)
            .env("TOLLGATE_ADMIN_KEY_FILE", &file)
            .env("TOLLGATE_BIND", "127.0.0.1:0")
            .output()
            .expect("tollgate runs");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("TOLLGATE_ADMIN_KEY and TOLLGATE_ADMIN_KEY_FILE"),
            "{stderr}"
        );
    }
}
