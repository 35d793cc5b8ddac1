//! The API key routes and their limits (`docs/api.md` section 6).

mod cases {
    use actix_web::http::{Method, StatusCode};
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn keys_are_issued_listed_and_revoked_and_a_revoked_key_is_401(backend: Backend) {
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
}

on_both_backends!(
    keys_are_issued_listed_and_revoked_and_a_revoked_key_is_401,
    at_most_100_live_keys_per_user,
    concurrent_key_creation_never_exceeds_100,
    own_keys_expire_no_later_than_the_calling_key,
    responses_with_a_secret_are_not_stored,
);
