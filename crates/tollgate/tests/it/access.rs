//! `docs/api.md` section 9 (access checks) against the real server: decisions, headers, reports,
//! changes applied at the next check, and exactness under concurrency.

mod cases {
    use actix_web::http::{Method, StatusCode};
    use futures_util::future::join_all;
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn decisions_come_in_the_documented_order(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("ann", "Pro", &["reports:read"], Some(3), "day")
            .await;

        let ok = app.check(&c.key, "reports:read", None).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        assert_eq!(ok.body["allowed"], true);
        assert_eq!(ok.body["reason"], json!(null));
        assert_eq!(ok.body["user_id"], c.user_id);
        assert_eq!(ok.body["permission"], "reports:read");
        assert_eq!(ok.body["limit"], 3);
        assert_eq!(ok.body["remaining"], 2);
        assert!(ok.body["reset_at"]
            .as_str()
            .expect("reset_at")
            .ends_with("T00:00:00Z"));
        assert_eq!(ok.header("ratelimit-limit"), Some("3"));
        assert_eq!(ok.header("ratelimit-remaining"), Some("2"));
        let reset: i64 = ok
            .header("ratelimit-reset")
            .expect("reset")
            .parse()
            .expect("int");
        assert!((1..=86_400).contains(&reset));
        assert!(ok.header("retry-after").is_none());

        let denied = app.check(&c.key, "reports:write", None).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
        assert_eq!(denied.body["allowed"], false);
        assert_eq!(denied.body["reason"], "permission_denied");

        let over = app.check(&c.key, "reports:read", Some(3)).await;
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(over.body["reason"], "quota_exhausted");
        assert_eq!(over.body["remaining"], 2);
        assert_eq!(over.header("ratelimit-remaining"), Some("2"));
        assert!(over.header("retry-after").is_some());
        // Denied checks consumed nothing.
        assert_eq!(app.usage(c.user_id).await["used"], 1);
        assert_eq!(app.events(c.user_id).await.len(), 1);
        assert_eq!(
            app.check(&c.key, "reports:read", Some(2)).await.status,
            StatusCode::OK
        );
        let exhausted = app.check(&c.key, "reports:read", None).await;
        assert_eq!(exhausted.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(exhausted.body["remaining"], 0);

        // Suspension comes first, then the subscription.
        let r = app
            .patch(
                &format!("/v1/users/{}", c.user_id),
                ADMIN_KEY,
                json!({"status": "suspended"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let s = app.check(&c.key, "reports:write", None).await;
        assert_eq!(s.status, StatusCode::FORBIDDEN);
        assert_eq!(s.body["reason"], "user_suspended");
        app.patch(
            &format!("/v1/users/{}", c.user_id),
            ADMIN_KEY,
            json!({"status": "active"}),
        )
        .await;
        app.delete(&format!("/v1/users/{}/subscription", c.user_id), ADMIN_KEY)
            .await;
        let n = app.check(&c.key, "reports:read", None).await;
        assert_eq!(n.status, StatusCode::FORBIDDEN);
        assert_eq!(n.body["reason"], "no_subscription");
        assert_eq!(n.body["limit"], json!(null));

        // 401 for missing/invalid keys, with the error body.
        app.raw(
            Method::POST,
            "/v1/access/check",
            None,
            Some("{\"permission\":\"a\"}"),
            Some("application/json"),
        )
        .await
        .assert_error(401, "unauthorized");
        app.check("tg_nope", "reports:read", None)
            .await
            .assert_error(401, "unauthorized");
        app.stop().await;
    }

    pub async fn costs_outside_1_to_1000000_are_422_and_unlimited_and_zero_limits_hold(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let free = app.customer("un", "Unlimited", &["a"], None, "month").await;
        for cost in [0, -1, 1_000_001] {
            app.check(&free.key, "a", Some(cost))
                .await
                .assert_error(422, "validation_failed");
        }
        app.post("/v1/access/check", &free.key, json!({}))
            .await
            .assert_error(422, "validation_failed");
        app.post(
            "/v1/access/check",
            &free.key,
            json!({"permission": "bad name"}),
        )
        .await
        .assert_error(422, "validation_failed");
        app.post(
            "/v1/access/check",
            &free.key,
            json!({"permission": "a", "extra": 1}),
        )
        .await
        .assert_error(400, "bad_request");
        app.post(
            "/v1/access/check",
            &free.key,
            json!({"permission": "a", "cost": "1"}),
        )
        .await
        .assert_error(400, "bad_request");
        let big = app.check(&free.key, "a", Some(1_000_000)).await;
        assert_eq!(big.status, StatusCode::OK);
        assert_eq!(big.body["limit"], json!(null));
        assert_eq!(big.body["remaining"], json!(null));
        assert_eq!(big.body["reset_at"], json!(null));
        assert!(big.header("ratelimit-limit").is_none());
        let report = app.usage(free.user_id).await;
        assert_eq!(report["used"], 1_000_000);
        assert_eq!(report["limit"], json!(null));
        assert_eq!(report["remaining"], json!(null));

        let zero = app
            .customer("zed", "Zero", &["a"], Some(0), "lifetime")
            .await;
        let r = app.check(&zero.key, "a", None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("ratelimit-limit"), Some("0"));
        assert!(r.header("retry-after").is_none(), "lifetime never resets");
        assert!(r.header("ratelimit-reset").is_none());
        assert_eq!(app.events(zero.user_id).await.len(), 0);
        app.stop().await;
    }

    pub async fn admin_checks_on_behalf_of_a_user(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("bo", "Pro", &["x"], Some(10), "month").await;
        let r = app
            .post(
                "/v1/access/check",
                ADMIN_KEY,
                json!({"permission": "x", "user_id": c.user_id, "cost": 4}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["user_id"], c.user_id);
        assert_eq!(r.body["remaining"], 6);
        app.post(
            "/v1/access/check",
            ADMIN_KEY,
            json!({"permission": "x", "user_id": 9999}),
        )
        .await
        .assert_error(422, "validation_failed");
        let other = app.customer("cy", "Other", &["x"], Some(10), "month").await;
        app.post(
            "/v1/access/check",
            &other.key,
            json!({"permission": "x", "user_id": c.user_id}),
        )
        .await
        .assert_error(403, "forbidden");
        let own = app
            .post(
                "/v1/access/check",
                &other.key,
                json!({"permission": "x", "user_id": other.user_id}),
            )
            .await;
        assert_eq!(own.status, StatusCode::OK);
        assert_eq!(app.usage(c.user_id).await["used"], 4);
        app.stop().await;
    }

    pub async fn forward_auth_answers_204_or_an_error(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("fa", "Pro", &["reports:read"], Some(2), "month")
            .await;
        let r = app
            .get("/v1/authorize?permission=reports:read", &c.key)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(
            r.header("x-tollgate-user-id"),
            Some(c.user_id.to_string().as_str())
        );
        assert_eq!(r.header("ratelimit-remaining"), Some("1"));
        let mut req = app.client.get(format!("{}/v1/authorize", app.base));
        req = req
            .insert_header(("Authorization", format!("Bearer {}", c.key)))
            .insert_header(("X-Tollgate-Permission", "reports:read"));
        let res = req.send().await.expect("sent");
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.events(c.user_id).await.len(), 2);
        // Envoy's ext_authz form: original path appended, method kept.
        let res = app
            .client
            .post(format!("{}/v1/authorize/orders/42?x=1", app.base))
            .insert_header(("Authorization", format!("Bearer {}", c.key)))
            .insert_header(("X-Tollgate-Permission", "reports:read"))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let over = app
            .get("/v1/authorize?permission=reports:read", &c.key)
            .await;
        over.assert_error(429, "quota_exhausted");
        assert!(over.header("retry-after").is_some());
        assert_eq!(over.header("ratelimit-remaining"), Some("0"));
        let denied = app.get("/v1/authorize?permission=admin:all", &c.key).await;
        let m = denied.assert_error(403, "forbidden");
        assert!(m.starts_with("permission_denied"), "{m}");
        app.raw(
            Method::GET,
            "/v1/authorize?permission=reports:read",
            None,
            None,
            None,
        )
        .await
        .assert_error(401, "unauthorized");
        app.get("/v1/authorize", &c.key)
            .await
            .assert_error(400, "bad_request");
        app.get("/v1/authorize?permission=a&x=1", &c.key)
            .await
            .assert_error(400, "bad_request");
        assert_eq!(app.events(c.user_id).await.len(), 2);
        app.stop().await;
    }

    /// A forward-auth request with these headers: (status, headers, body).
    async fn ask(
        app: &TestApp,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (
        StatusCode,
        actix_web::http::header::HeaderMap,
        serde_json::Value,
    ) {
        let mut req = app.client.request(method, format!("{}{path}", app.base));
        for (name, value) in headers {
            req = req.append_header((*name, *value));
        }
        let mut res = req.send().await.expect("sent");
        let bytes = res.body().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (res.status(), res.headers().clone(), body)
    }

    /// `used` of the caller's `GET /v1/me/usage`.
    async fn used_now(app: &TestApp, key: &str) -> i64 {
        let r = app.get("/v1/me/usage", key).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["used"].as_i64().expect("used")
    }

    pub async fn head_and_options_decide_without_consuming(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("probe", "Probe", &["reports:read"], Some(5), "month")
            .await;
        let bearer = format!("Bearer {}", c.key);
        let r = app
            .get("/v1/authorize?permission=reports:read", &c.key)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(used_now(&app, &c.key).await, 1);

        let routes: [(&str, &[(&str, &str)]); 3] = [
            ("/v1/authorize?permission=reports:read", &[]),
            (
                "/v1/authorize",
                &[("X-Tollgate-Permission", "reports:read")],
            ),
            (
                "/v1/authorize/orders/42?x=1",
                &[("X-Tollgate-Permission", "reports:read")],
            ),
        ];
        for method in [Method::HEAD, Method::OPTIONS] {
            for (path, extra) in routes {
                for _ in 0..3 {
                    let mut headers = vec![("Authorization", bearer.as_str())];
                    headers.extend_from_slice(extra);
                    let (status, h, _) = ask(&app, method.clone(), path, &headers).await;
                    assert_eq!(status, StatusCode::NO_CONTENT, "{method} {path}");
                    let user = c.user_id.to_string();
                    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
                    assert_eq!(get("x-tollgate-user-id"), Some(user.as_str()));
                    // What is left now: nothing was taken.
                    assert_eq!(get("ratelimit-remaining"), Some("4"), "{method} {path}");
                }
            }
            // Denials are the same as a GET's.
            let (status, _, body) = ask(
                &app,
                method.clone(),
                "/v1/authorize?permission=admin:all",
                &[("Authorization", bearer.as_str())],
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method}");
            if method == Method::OPTIONS {
                assert_eq!(body["error"]["code"], "forbidden", "{body}");
            }
        }
        assert_eq!(used_now(&app, &c.key).await, 1);
        assert_eq!(app.events(c.user_id).await.len(), 1);

        // A CORS preflight carries no key: a plain 401.
        for path in [
            "/v1/authorize?permission=reports:read",
            "/v1/authorize/orders/42",
        ] {
            let (status, h, body) = ask(
                &app,
                Method::OPTIONS,
                path,
                &[
                    ("Origin", "https://app.example"),
                    ("Access-Control-Request-Method", "GET"),
                    ("Access-Control-Request-Headers", "authorization"),
                ],
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(
                h.get("www-authenticate").and_then(|v| v.to_str().ok()),
                Some("Bearer")
            );
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
            assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        }

        // At the limit, HEAD says 429 and still takes nothing.
        for _ in 0..4 {
            let r = app
                .get("/v1/authorize?permission=reports:read", &c.key)
                .await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        }
        let (status, h, _) = ask(
            &app,
            Method::HEAD,
            "/v1/authorize?permission=reports:read",
            &[("Authorization", bearer.as_str())],
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(h.get("retry-after").is_some());
        assert_eq!(used_now(&app, &c.key).await, 5);
        assert_eq!(app.events(c.user_id).await.len(), 5);

        // Two permission headers (a client's and a gateway's): refused.
        let (status, _, body) = ask(
            &app,
            Method::GET,
            "/v1/authorize",
            &[
                ("Authorization", bearer.as_str()),
                ("X-Tollgate-Permission", "reports:read"),
                ("X-Tollgate-Permission", "admin:all"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "bad_request");
        app.stop().await;
    }

    pub async fn changes_apply_at_the_next_check(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("ch", "Pro", &["a", "b"], Some(5), "month")
            .await;
        assert_eq!(app.check(&c.key, "a", Some(4)).await.status, StatusCode::OK);
        // A smaller limit: 4 used of 3.
        let plan = format!("/v1/plans/{}", c.plan_id);
        app.patch(&plan, ADMIN_KEY, json!({"usage_limit": 3})).await;
        assert_eq!(
            app.check(&c.key, "a", None).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        // A bigger plan: the usage carries over.
        let big = app
            .create(
                "/v1/plans",
                json!({"name": "Big", "permissions": ["a"], "usage_limit": 6}),
            )
            .await;
        app.put(
            &format!("/v1/users/{}/subscription", c.user_id),
            ADMIN_KEY,
            json!({"plan_id": big["id"]}),
        )
        .await;
        let r = app.check(&c.key, "a", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["remaining"], 1);
        // The new plan does not grant b.
        assert_eq!(
            app.check(&c.key, "b", None).await.body["reason"],
            "permission_denied"
        );
        // Permissions removed from the plan, then a change of period kind:
        // the usage of the new window is rebuilt from the events.
        let big_path = format!("/v1/plans/{}", big["id"]);
        app.patch(&big_path, ADMIN_KEY, json!({"permissions": ["b"]}))
            .await;
        assert_eq!(
            app.check(&c.key, "a", None).await.body["reason"],
            "permission_denied"
        );
        app.patch(
            &big_path,
            ADMIN_KEY,
            json!({"permissions": ["a"], "usage_period": "day"}),
        )
        .await;
        // Today's 5 units count against the daily limit of 6.
        let r = app.check(&c.key, "a", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["remaining"], 0);
        assert!(r.body["reset_at"]
            .as_str()
            .expect("reset")
            .ends_with("T00:00:00Z"));
        let r = app.check(&c.key, "a", None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
        app.patch(
            &big_path,
            ADMIN_KEY,
            json!({"usage_limit": 100, "usage_period": "lifetime"}),
        )
        .await;
        let report = app.usage(c.user_id).await;
        assert_eq!(report["used"], 6);
        assert_eq!(report["usage_period"], "lifetime");
        assert_eq!(report["period_end"], json!(null));
        // A revoked key, then a deleted user.
        let key2 = app.post("/v1/me/api-keys", &c.key, json!({})).await.body["key"]
            .as_str()
            .expect("key")
            .to_owned();
        let kid = app.get("/v1/me/api-keys", &c.key).await.body["items"][1]["id"].clone();
        app.delete(&format!("/v1/me/api-keys/{kid}"), &c.key).await;
        app.check(&key2, "a", None)
            .await
            .assert_error(401, "unauthorized");
        app.delete(&format!("/v1/users/{}", c.user_id), ADMIN_KEY)
            .await;
        app.check(&c.key, "a", None)
            .await
            .assert_error(401, "unauthorized");
        app.stop().await;
    }

    pub async fn usage_reports_and_events_show_what_the_checks_consumed(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("rep", "Pro", &["a", "b"], Some(100), "month")
            .await;
        for (perm, cost) in [("a", 2), ("b", 3), ("a", 5)] {
            assert_eq!(
                app.check(&c.key, perm, Some(cost)).await.status,
                StatusCode::OK
            );
        }
        app.check(&c.key, "a", Some(1000)).await;
        let report = app.get("/v1/me/usage", &c.key).await;
        assert_eq!(report.status, StatusCode::OK);
        let r = report.body;
        assert_eq!(r["user_id"], c.user_id);
        assert_eq!(r["plan_id"], c.plan_id);
        assert_eq!(r["usage_period"], "month");
        assert!(r["period_start"]
            .as_str()
            .expect("start")
            .ends_with("-01T00:00:00Z"));
        assert!(r["period_end"]
            .as_str()
            .expect("end")
            .ends_with("-01T00:00:00Z"));
        assert_eq!(r["limit"], 100);
        assert_eq!(r["used"], 10);
        assert_eq!(r["remaining"], 90);
        assert_eq!(r["by_permission"], json!({"a": 7, "b": 3}));

        let events = app.get("/v1/me/usage/events", &c.key).await.body;
        let items = events["items"].as_array().expect("items");
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["permission"], "a");
        assert_eq!(items[0]["cost"], 2);
        assert_eq!(items[2]["cost"], 5);
        assert!(items
            .windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
        let only_b = app
            .get("/v1/me/usage/events?permission=b", &c.key)
            .await
            .body;
        assert_eq!(only_b["items"].as_array().map(Vec::len), Some(1));
        let page = app
            .get(
                &format!("/v1/users/{}/usage/events?limit=2", c.user_id),
                ADMIN_KEY,
            )
            .await
            .body;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
        assert!(page["next_after"].is_i64());
        let future = app
            .get(
                &format!(
                    "/v1/users/{}/usage/events?from=2099-01-01T00:00:00Z",
                    c.user_id
                ),
                ADMIN_KEY,
            )
            .await
            .body;
        assert_eq!(future["items"], json!([]));
        let past = app
            .get(
                &format!(
                    "/v1/users/{}/usage/events?to=2000-01-01T00:00:00Z",
                    c.user_id
                ),
                ADMIN_KEY,
            )
            .await
            .body;
        assert_eq!(past["items"], json!([]));
        let all = app
            .get(
                &format!(
                    "/v1/users/{}/usage/events?from=2000-01-01T00:00:00Z&to=2099-01-01T00:00:00Z",
                    c.user_id
                ),
                ADMIN_KEY,
            )
            .await
            .body;
        assert_eq!(all["items"].as_array().map(Vec::len), Some(3));
        app.get("/v1/me/usage/events?from=yesterday", &c.key)
            .await
            .assert_error(400, "bad_request");
        app.get("/v1/users/9999/usage", ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.get(&format!("/v1/users/{}/usage", c.user_id), &c.key)
            .await
            .assert_error(403, "forbidden");
        let (lonely, lonely_key) = app.user_with_key("lonely").await;
        app.get(&format!("/v1/users/{lonely}/usage"), ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        app.get("/v1/me/usage", &lonely_key)
            .await
            .assert_error(404, "not_found");
        app.stop().await;
    }

    /// A change made through one instance reaches another instance's next
    /// checks within 1 second (its read cache polls the change epoch).
    pub async fn changes_reach_other_instances_within_a_second(backend: Backend) {
        let a = TestApp::spawn(backend).await;
        let c = a.customer("far", "Far", &["p"], Some(100), "month").await;
        let b = tollgate::Tollgate::build(tollgate::Config {
            database_url: a.db.url.clone(),
            pool: tollgate_persistence::testing::TestDatabase::pool_options(),
            server: tollgate_api::Config {
                bind: "127.0.0.1:0".parse().expect("address"),
                admin_key: None,
                workers: Some(1),
                timeouts: Default::default(),
            },
        })
        .expect("second instance")
        .app;
        let b_base = format!("http://{}", b.local_addr());
        let b_handle = b.handle();
        actix_web::rt::spawn(b.run());
        let check_on_b = |key: String| {
            let client = a.client.clone();
            let url = format!("{b_base}/v1/access/check");
            async move {
                client
                    .post(url)
                    .insert_header(("Authorization", format!("Bearer {key}")))
                    .send_json(&json!({"permission": "p"}))
                    .await
                    .expect("sent")
                    .status()
            }
        };
        // Warm b's cache, then change things through a and time b's view.
        for _ in 0..3 {
            assert_eq!(check_on_b(c.key.clone()).await, StatusCode::OK);
        }
        let until = |expected: StatusCode| {
            let check = check_on_b;
            let key = c.key.clone();
            async move {
                let started = std::time::Instant::now();
                loop {
                    if check(key.clone()).await == expected {
                        return started.elapsed();
                    }
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(3),
                        "never saw {expected}"
                    );
                    actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        a.patch(
            &format!("/v1/users/{}", c.user_id),
            ADMIN_KEY,
            json!({"status": "suspended"}),
        )
        .await;
        let took = until(StatusCode::FORBIDDEN).await;
        assert!(
            took < std::time::Duration::from_secs(1),
            "suspension took {took:?}"
        );
        a.patch(
            &format!("/v1/users/{}", c.user_id),
            ADMIN_KEY,
            json!({"status": "active"}),
        )
        .await;
        let took = until(StatusCode::OK).await;
        assert!(
            took < std::time::Duration::from_secs(1),
            "reactivation took {took:?}"
        );
        a.patch(
            &format!("/v1/plans/{}", c.plan_id),
            ADMIN_KEY,
            json!({"usage_limit": 0}),
        )
        .await;
        let took = until(StatusCode::TOO_MANY_REQUESTS).await;
        assert!(
            took < std::time::Duration::from_secs(1),
            "a new limit took {took:?}"
        );
        let keys = a
            .get(&format!("/v1/users/{}/api-keys", c.user_id), ADMIN_KEY)
            .await;
        let kid = keys.body["items"][0]["id"].clone();
        a.delete(
            &format!("/v1/users/{}/api-keys/{kid}", c.user_id),
            ADMIN_KEY,
        )
        .await;
        let took = until(StatusCode::UNAUTHORIZED).await;
        assert!(
            took < std::time::Duration::from_secs(1),
            "a revocation took {took:?}"
        );
        b_handle.stop(true).await;
        a.stop().await;
    }

    /// 64 concurrent checks against a limit of 50, several rounds: exactly
    /// 50 granted, 50 events, `used` = 50, every other answer 429.
    pub async fn quota_is_exact_under_64_concurrent_checks(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.permissions(&["hot"]).await;
        for round in 0..5 {
            let c = app
                .customer(
                    &format!("hot{round}"),
                    &format!("Hot{round}"),
                    &["hot"],
                    Some(50),
                    "month",
                )
                .await;
            let answers = join_all((0..64).map(|_| app.check(&c.key, "hot", None))).await;
            let granted = answers
                .iter()
                .filter(|r| r.status == StatusCode::OK)
                .count();
            let refused = answers
                .iter()
                .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
                .count();
            assert_eq!(
                granted,
                50,
                "round {round}: {:?}",
                answers.iter().map(|r| r.status).collect::<Vec<_>>()
            );
            assert_eq!(refused, 14, "round {round}");
            assert_eq!(app.events(c.user_id).await.len(), 50, "round {round}");
            assert_eq!(app.usage(c.user_id).await["used"], 50, "round {round}");
        }
        app.stop().await;
    }
}

on_both_backends!(
    decisions_come_in_the_documented_order,
    costs_outside_1_to_1000000_are_422_and_unlimited_and_zero_limits_hold,
    admin_checks_on_behalf_of_a_user,
    forward_auth_answers_204_or_an_error,
    head_and_options_decide_without_consuming,
    changes_apply_at_the_next_check,
    usage_reports_and_events_show_what_the_checks_consumed,
    quota_is_exact_under_64_concurrent_checks,
    changes_reach_other_instances_within_a_second,
);
