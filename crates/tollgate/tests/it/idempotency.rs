//! Idempotency keys (#16; `docs/api.md` "Idempotency"): a granted request's
//! repeats are answered as the original and consume nothing, on one
//! instance and racing on two processes; a repeat asking something else is
//! 422; a denied request records nothing; bad keys are 400.

mod cases {
    use actix_web::http::{Method, StatusCode};
    use futures_util::future::join_all;
    use serde_json::{json, Value};
    use tollgate_persistence::Backend;

    use crate::common::{send_to, Resp, TestApp, ADMIN_KEY};
    use crate::processes::cases::start_for_test;

    const KEY: &str = "Idempotency-Key";

    /// A check with an idempotency key (raw bytes).
    async fn keyed(app: &TestApp, key: &str, idem: &[u8], permission: &str, cost: i64) -> Resp {
        app.with_headers(
            Method::POST,
            "/v1/access/check",
            key,
            Some(json!({"permission": permission, "cost": cost})),
            &[(KEY, idem)],
        )
        .await
    }

    /// The `RateLimit-*` headers of an answer, by name.
    fn rate_headers(r: &Resp) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("ratelimit-"))
            .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect();
        h.sort();
        h
    }

    pub async fn a_repeat_is_answered_as_the_original_and_consumes_nothing(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("repeat", "Repeat", &["p", "q"], Some(10), "month")
            .await;
        let first = keyed(&app, &c.key, b"order-1", "p", 3).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert_eq!(first.header("idempotent-replayed"), None);
        assert_eq!(first.body["remaining"], 7);
        // Other checks move the quota between the original and its repeat.
        assert_eq!(app.check(&c.key, "q", Some(2)).await.status, StatusCode::OK);
        for _ in 0..3 {
            let again = keyed(&app, &c.key, b"order-1", "p", 3).await;
            assert_eq!(again.status, StatusCode::OK, "{}", again.text);
            assert_eq!(again.header("idempotent-replayed"), Some("true"));
            assert_eq!(again.body, first.body, "the same body as the original");
            assert_eq!(rate_headers(&again), rate_headers(&first));
            assert!(!rate_headers(&first).is_empty(), "a quota applies");
        }
        let usage = app.usage(c.user_id).await;
        assert_eq!(usage["used"], 5, "3 once, and the 2 of q");
        assert_eq!(app.events(c.user_id).await.len(), 2);
        // The key is the user's: another user's same key is another key.
        let d = app
            .customer("other", "Other", &["p"], Some(10), "month")
            .await;
        let theirs = keyed(&app, &d.key, b"order-1", "p", 3).await;
        assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.text);
        assert_eq!(theirs.header("idempotent-replayed"), None);
        assert_eq!(app.usage(d.user_id).await["used"], 3);
        app.stop().await;
    }

    pub async fn a_repeat_asking_another_permission_or_cost_is_422_and_consumes_nothing(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("reuse", "Reuse", &["p", "q"], Some(10), "month")
            .await;
        assert_eq!(
            keyed(&app, &c.key, b"k", "p", 2).await.status,
            StatusCode::OK
        );
        for (permission, cost) in [("p", 1), ("q", 2), ("q", 1)] {
            let r = keyed(&app, &c.key, b"k", permission, cost).await;
            r.assert_error(422, "validation_failed");
            assert!(r.text.contains("Idempotency-Key"), "{}", r.text);
        }
        // Forward-auth shares the checks' keys.
        let r = app
            .with_headers(
                Method::GET,
                "/v1/authorize?permission=p&cost=5",
                &c.key,
                None,
                &[(KEY, b"k")],
            )
            .await;
        r.assert_error(422, "validation_failed");
        assert_eq!(app.usage(c.user_id).await["used"], 2);
        assert_eq!(app.events(c.user_id).await.len(), 1);
        app.stop().await;
    }

    pub async fn a_denied_request_records_nothing_and_its_repeat_is_decided_again(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("denied", "Denied", &["p"], Some(2), "month")
            .await;
        let over = keyed(&app, &c.key, b"big", "p", 3).await;
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text);
        assert_eq!(over.header("idempotent-replayed"), None);
        let r = app
            .patch(
                &format!("/v1/plans/{}", c.plan_id),
                ADMIN_KEY,
                json!({"usage_limit": 5}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let now = keyed(&app, &c.key, b"big", "p", 3).await;
        assert_eq!(now.status, StatusCode::OK, "{}", now.text);
        assert_eq!(
            now.header("idempotent-replayed"),
            None,
            "decided, not replayed"
        );
        assert_eq!(now.body["remaining"], 2);
        assert_eq!(app.usage(c.user_id).await["used"], 3);
        app.stop().await;
    }

    pub async fn bad_keys_are_400_and_consume_nothing(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("bad", "Bad", &["p"], Some(10), "month").await;
        let long = "k".repeat(256);
        let bad: Vec<&[u8]> = vec![
            b"",
            long.as_bytes(),
            b"two words",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
        ];
        for idem in &bad {
            let r = keyed(&app, &c.key, idem, "p", 1).await;
            r.assert_error(400, "bad_request");
            let r = app
                .with_headers(
                    Method::GET,
                    "/v1/authorize?permission=p",
                    &c.key,
                    None,
                    &[(KEY, idem)],
                )
                .await;
            r.assert_error(400, "bad_request");
        }
        let twice = app
            .with_headers(
                Method::POST,
                "/v1/access/check",
                &c.key,
                Some(json!({"permission": "p"})),
                &[(KEY, b"a"), (KEY, b"b")],
            )
            .await;
        twice.assert_error(400, "bad_request");
        let longest = "~".repeat(255);
        let ok = keyed(&app, &c.key, longest.as_bytes(), "p", 1).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        assert_eq!(app.usage(c.user_id).await["used"], 1);
        app.stop().await;
    }

    pub async fn forward_auth_replays_204_with_its_headers(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("fa", "Fa", &["p"], Some(10), "day").await;
        let headers: &[(&str, &[u8])] = &[(KEY, b"fa-1")];
        let ask = || {
            app.with_headers(
                Method::GET,
                "/v1/authorize?permission=p&cost=2",
                &c.key,
                None,
                headers,
            )
        };
        let first = ask().await;
        assert_eq!(first.status, StatusCode::NO_CONTENT, "{}", first.text);
        let again = ask().await;
        assert_eq!(again.status, StatusCode::NO_CONTENT, "{}", again.text);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(rate_headers(&again), rate_headers(&first));
        assert_eq!(
            again.header("x-tollgate-user-id"),
            Some(c.user_id.to_string().as_str())
        );
        // The same key on the check route is the same request.
        let check = keyed(&app, &c.key, b"fa-1", "p", 2).await;
        assert_eq!(check.status, StatusCode::OK, "{}", check.text);
        assert_eq!(check.header("idempotent-replayed"), Some("true"));
        assert_eq!(check.body["remaining"], 8);
        assert_eq!(app.usage(c.user_id).await["used"], 2);
        app.stop().await;
    }

    /// A repeat after the user was suspended is still the original's
    /// answer; another request under the key is 422, even one the plan
    /// would refuse; a new key is decided (403).
    pub async fn a_repeat_after_a_suspension_is_the_originals_answer(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("later", "Later", &["p"], Some(10), "month")
            .await;
        let first = keyed(&app, &c.key, b"before", "p", 2).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        let r = app
            .patch(
                &format!("/v1/users/{}", c.user_id),
                ADMIN_KEY,
                json!({"status": "suspended"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let again = keyed(&app, &c.key, b"before", "p", 2).await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body, first.body);
        keyed(&app, &c.key, b"before", "other", 2)
            .await
            .assert_error(422, "validation_failed");
        let fresh = keyed(&app, &c.key, b"after", "p", 2).await;
        assert_eq!(fresh.status, StatusCode::FORBIDDEN, "{}", fresh.text);
        assert_eq!(fresh.body["reason"], "user_suspended");
        assert_eq!(app.usage(c.user_id).await["used"], 2);
        app.stop().await;
    }

    /// 64 concurrent repeats of one key across two server processes: one
    /// unit consumed, one event, every answer 200 with the same body.
    pub async fn sixty_four_racing_repeats_on_two_processes_consume_once(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("race", "Race", &["p"], Some(100), "month")
            .await;
        let a = start_for_test(&app.db.url).await;
        let b = start_for_test(&app.db.url).await;
        for round in 0..3 {
            let idem = format!("race-{round}");
            let answers: Vec<Resp> = join_all((0..64).map(|i| {
                let base = if i % 2 == 0 { a.base() } else { b.base() };
                let (client, key, idem) = (app.client.clone(), c.key.clone(), idem.clone());
                async move {
                    let body = json!({"permission": "p"}).to_string();
                    send_to(
                        &client,
                        base,
                        Method::POST,
                        "/v1/access/check",
                        Some(&key),
                        Some(&body),
                        &[
                            ("Content-Type", b"application/json"),
                            (KEY, idem.as_bytes()),
                        ],
                    )
                    .await
                }
            }))
            .await;
            let statuses: Vec<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
            assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
            let originals = answers
                .iter()
                .filter(|r| r.header("idempotent-replayed").is_none())
                .count();
            assert_eq!(originals, 1, "exactly one answer is the original");
            let bodies: Vec<&Value> = answers.iter().map(|r| &r.body).collect();
            assert!(bodies.iter().all(|b| **b == *bodies[0]), "{bodies:?}");
            assert_eq!(bodies[0]["remaining"], 99 - round);
        }
        assert_eq!(app.usage(c.user_id).await["used"], 3);
        assert_eq!(app.events(c.user_id).await.len(), 3);
        drop((a, b));
        app.stop().await;
    }

    /// Records older than their lifetime go with the background sweep: a
    /// repeat after it is decided again.
    pub async fn the_sweep_removes_records_after_24_hours(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("old", "Old", &["p"], None, "month").await;
        assert_eq!(
            keyed(&app, &c.key, b"old", "p", 1).await.status,
            StatusCode::OK
        );
        let now = chrono::Utc::now();
        let kept = app
            .db
            .db
            .sweep(now + chrono::Duration::hours(23))
            .expect("sweep");
        assert_eq!(kept.records, 0, "a record is kept 24 hours");
        let again = keyed(&app, &c.key, b"old", "p", 1).await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        let removed = app
            .db
            .db
            .sweep(now + chrono::Duration::hours(25))
            .expect("sweep");
        assert_eq!(removed.records, 1);
        let after = keyed(&app, &c.key, b"old", "p", 1).await;
        assert_eq!(after.status, StatusCode::OK, "{}", after.text);
        assert_eq!(after.header("idempotent-replayed"), None);
        assert_eq!(app.usage(c.user_id).await["used"], 2);
        app.stop().await;
    }
}

on_both_backends!(
    a_repeat_is_answered_as_the_original_and_consumes_nothing,
    a_repeat_asking_another_permission_or_cost_is_422_and_consumes_nothing,
    a_denied_request_records_nothing_and_its_repeat_is_decided_again,
    bad_keys_are_400_and_consume_nothing,
    forward_auth_replays_204_with_its_headers,
    sixty_four_racing_repeats_on_two_processes_consume_once,
    the_sweep_removes_records_after_24_hours,
    a_repeat_after_a_suspension_is_the_originals_answer,
);
