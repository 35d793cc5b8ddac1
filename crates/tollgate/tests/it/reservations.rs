//! Reservations (#16; `docs/api.md` "Reservations"): hold units, commit
//! the real cost or release them, over HTTP. Exact under 48 concurrent
//! holders, a commit racing the expiry, a kill -9 between a reserve and its
//! commit, idempotent reserves, and every bad request changing nothing.

mod cases {
    use std::time::{Duration, Instant};

    use actix_web::http::{Method, StatusCode};
    use futures_util::future::join_all;
    use serde_json::{json, Value};
    use tollgate_persistence::Backend;

    use crate::common::{send_to, Resp, TestApp, ADMIN_KEY};
    use crate::processes::cases::start_for_test;

    const PATH: &str = "/v1/access/reservations";

    async fn reserve(app: &TestApp, key: &str, body: Value) -> Resp {
        app.post(PATH, key, body).await
    }

    async fn commit(app: &TestApp, key: &str, id: &str, cost: i64) -> Resp {
        app.post(&format!("{PATH}/{id}/commit"), key, json!({"cost": cost}))
            .await
    }

    fn id_of(r: &Resp) -> String {
        r.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id: {}", r.text))
            .to_owned()
    }

    pub async fn a_commit_keeps_its_units_returns_the_rest_and_writes_one_event(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("res", "Res", &["p", "q"], Some(10), "month")
            .await;
        let r = reserve(&app, &c.key, json!({"permission": "p", "cost": 6})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = id_of(&r);
        assert!(id.starts_with("rsv_") && id.len() == 48, "{id}");
        assert_eq!(r.header("location"), Some(format!("{PATH}/{id}").as_str()));
        assert_eq!(r.body["status"], "held");
        assert_eq!(r.body["reserved"], 6);
        assert_eq!(r.body["committed"], Value::Null);
        assert_eq!(r.body["remaining"], 4, "{}", r.text);
        assert_eq!(r.header("ratelimit-remaining"), Some("4"));
        let usage = app.usage(c.user_id).await;
        assert_eq!(
            (&usage["used"], &usage["reserved"], &usage["remaining"]),
            (&json!(0), &json!(6), &json!(4)),
            "{usage}"
        );
        assert_eq!(usage["by_permission"], json!({}), "held units are not used");
        // The held units count against the quota.
        let over = app.check(&c.key, "q", Some(5)).await;
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text);
        assert!(
            app.events(c.user_id).await.is_empty(),
            "no event before the commit"
        );

        let done = commit(&app, &c.key, &id, 2).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text);
        assert_eq!(done.body["status"], "committed");
        assert_eq!(done.body["committed"], 2);
        assert_eq!(done.body["remaining"], 8);
        let usage = app.usage(c.user_id).await;
        assert_eq!(
            (&usage["used"], &usage["reserved"], &usage["remaining"]),
            (&json!(2), &json!(0), &json!(8)),
            "{usage}"
        );
        let events = app.events(c.user_id).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["cost"], 2);
        assert_eq!(events[0]["permission"], "p");
        assert_eq!(
            events[0]["at"], r.body["created_at"],
            "dated at the reserve"
        );

        let again = commit(&app, &c.key, &id, 2).await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        assert_eq!(again.body["committed"], 2);
        commit(&app, &c.key, &id, 3)
            .await
            .assert_error(409, "conflict");
        app.delete(&format!("{PATH}/{id}"), &c.key)
            .await
            .assert_error(409, "conflict");
        let shown = app.get(&format!("{PATH}/{id}"), &c.key).await;
        assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
        assert_eq!(shown.body["status"], "committed");
        assert_eq!(app.events(c.user_id).await.len(), 1);
        assert_eq!(app.usage(c.user_id).await["used"], 2);
        app.stop().await;
    }

    pub async fn a_release_returns_the_quota_units_but_not_the_rate_limits(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer_of(
                "rel",
                json!({"name": "Rel", "permissions": ["p"], "usage_limit": 10,
                       "usage_period": "month",
                       "permission_limits": {"p": {"usage_limit": 8, "usage_period": "day"}},
                       "rate_limit": {"units": 6, "per_seconds": 86400}}),
            )
            .await;
        let r = reserve(&app, &c.key, json!({"permission": "p", "cost": 5})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(
            r.body["remaining"], 3,
            "the permission's 8 bind: {}",
            r.text
        );
        let id = id_of(&r);
        let path = format!("{PATH}/{id}");
        assert_eq!(
            app.delete(&path, &c.key).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            app.delete(&path, &c.key).await.status,
            StatusCode::NO_CONTENT
        );
        commit(&app, &c.key, &id, 1)
            .await
            .assert_error(409, "conflict");
        let shown = app.get(&path, &c.key).await;
        assert_eq!(shown.body["status"], "released");
        assert_eq!(shown.body["remaining"], 8, "{}", shown.text);
        let usage = app.usage(c.user_id).await;
        assert_eq!((&usage["used"], &usage["reserved"]), (&json!(0), &json!(0)));
        // The bucket gave its 5 units to the reservation for good: 1 is left.
        let check = app.check(&c.key, "p", Some(2)).await;
        assert_eq!(
            check.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            check.text
        );
        assert_eq!(check.body["reason"], "rate_limited");
        assert_eq!(app.check(&c.key, "p", Some(1)).await.status, StatusCode::OK);
        assert!(app.events(c.user_id).await.len() == 1);
        app.stop().await;
    }

    pub async fn bad_reservation_requests_are_refused_and_change_nothing(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("badr", "BadR", &["p"], Some(10), "month")
            .await;
        let d = app
            .customer("intruder", "Intr", &["p"], Some(10), "month")
            .await;
        for body in [
            json!({"permission": "p", "cost": 0}),
            json!({"permission": "p", "cost": 1_000_001}),
            json!({"permission": "p", "ttl_seconds": 0}),
            json!({"permission": "p", "ttl_seconds": 3601}),
            json!({"permission": "bad name"}),
            json!({}),
        ] {
            reserve(&app, &c.key, body)
                .await
                .assert_error(422, "validation_failed");
        }
        for body in [
            json!({"permission": "p", "burst": 1}),
            json!({"permission": "p", "ttl_seconds": "5"}),
        ] {
            reserve(&app, &c.key, body)
                .await
                .assert_error(400, "bad_request");
        }
        let denied = reserve(&app, &c.key, json!({"permission": "other"})).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text);
        assert_eq!(denied.body["reason"], "permission_denied");

        let r = reserve(&app, &c.key, json!({"permission": "p", "cost": 5})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = id_of(&r);
        let path = format!("{PATH}/{id}");
        for n in [6, -1] {
            commit(&app, &c.key, &id, n)
                .await
                .assert_error(422, "validation_failed");
        }
        app.post(&format!("{path}/commit"), &c.key, json!({}))
            .await
            .assert_error(422, "validation_failed");
        // Someone else's, unknown and malformed ids: 404.
        let unknown = format!("rsv_{}", "0".repeat(32));
        for (key, id) in [
            (d.key.as_str(), id.as_str()),
            (c.key.as_str(), unknown.as_str()),
            (c.key.as_str(), "rsv_nothex"),
            (c.key.as_str(), "42"),
        ] {
            app.get(&format!("{PATH}/{id}"), key)
                .await
                .assert_error(404, "not_found");
            commit(&app, key, id, 1)
                .await
                .assert_error(404, "not_found");
            app.delete(&format!("{PATH}/{id}"), key)
                .await
                .assert_error(404, "not_found");
        }
        let admin = app.get(&path, ADMIN_KEY).await;
        assert_eq!(admin.status, StatusCode::OK, "{}", admin.text);
        assert_eq!(admin.body["status"], "held");
        assert_eq!(admin.body["user_id"], c.user_id);
        let usage = app.usage(c.user_id).await;
        assert_eq!((&usage["used"], &usage["reserved"]), (&json!(0), &json!(5)));
        assert!(app.events(c.user_id).await.is_empty());
        app.stop().await;
    }

    pub async fn reservations_are_exact_under_48_concurrent_holders(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("holders", "Holders", &["p"], Some(30), "month")
            .await;
        let answers: Vec<Resp> = join_all(
            (0..48).map(|_| reserve(&app, &c.key, json!({"permission": "p", "ttl_seconds": 600}))),
        )
        .await;
        let held: Vec<&Resp> = answers
            .iter()
            .filter(|r| r.status == StatusCode::CREATED)
            .collect();
        let refused = answers
            .iter()
            .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!((held.len(), refused), (30, 18));
        let usage = app.usage(c.user_id).await;
        assert_eq!(
            (&usage["used"], &usage["reserved"]),
            (&json!(0), &json!(30))
        );
        let commits: Vec<Resp> = join_all(
            held.iter()
                .map(|r| commit(&app, &c.key, r.body["id"].as_str().expect("id"), 1)),
        )
        .await;
        assert!(commits.iter().all(|r| r.status == StatusCode::OK));
        let usage = app.usage(c.user_id).await;
        assert_eq!(
            (&usage["used"], &usage["reserved"]),
            (&json!(30), &json!(0))
        );
        assert_eq!(app.events(c.user_id).await.len(), 30);
        app.stop().await;
    }

    /// Commits sent around the expiry of one-second reservations: each is
    /// either committed (its event written) or released (its units back),
    /// never both, and the counters agree with the events.
    pub async fn a_commit_racing_the_expiry_either_wins_or_loses_whole(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("expiry", "Expiry", &["p"], Some(1000), "month")
            .await;
        let made: Vec<Resp> = join_all((0..16).map(|_| {
            reserve(
                &app,
                &c.key,
                json!({"permission": "p", "cost": 3, "ttl_seconds": 1}),
            )
        }))
        .await;
        assert!(made.iter().all(|r| r.status == StatusCode::CREATED));
        // From just before the expiry to well after it.
        let start = Instant::now();
        let commits: Vec<Resp> = join_all(made.iter().enumerate().map(|(i, r)| {
            let id = r.body["id"].as_str().expect("id").to_owned();
            let app = &app;
            let key = c.key.clone();
            async move {
                let wait = Duration::from_millis(900 + 20 * i as u64);
                actix_web::rt::time::sleep(wait.saturating_sub(start.elapsed())).await;
                commit(app, &key, &id, 2).await
            }
        }))
        .await;
        let won = commits
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        let lost = commits
            .iter()
            .filter(|r| r.status == StatusCode::CONFLICT)
            .count();
        assert_eq!(
            won + lost,
            16,
            "{:?}",
            commits.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        // The sweep releases the rest within a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let usage = app.usage(c.user_id).await;
            if usage["reserved"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "still held: {usage}");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        for (r, answer) in made.iter().zip(&commits) {
            let shown = app
                .get(
                    &format!("{PATH}/{}", r.body["id"].as_str().expect("id")),
                    &c.key,
                )
                .await;
            let expected = if answer.status == StatusCode::OK {
                "committed"
            } else {
                "released"
            };
            assert_eq!(shown.body["status"], expected, "{}", shown.text);
        }
        let events = app.events(c.user_id).await;
        assert_eq!(events.len(), won);
        let usage = app.usage(c.user_id).await;
        assert_eq!(usage["used"], json!(2 * won as i64), "{usage}");
        app.stop().await;
    }

    pub async fn a_reserve_with_an_idempotency_key_holds_once(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("idem", "Idem", &["p"], Some(10), "month")
            .await;
        let body = json!({"permission": "p", "cost": 4, "ttl_seconds": 60});
        let send = |body: Value| {
            app.with_headers(
                Method::POST,
                PATH,
                &c.key,
                Some(body),
                &[("Idempotency-Key", b"job-7")],
            )
        };
        let first = send(body.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
        let again = send(body.clone()).await;
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("location"), first.header("location"));
        send(json!({"permission": "p", "cost": 4, "ttl_seconds": 61}))
            .await
            .assert_error(422, "validation_failed");
        // A check is another request than a reservation.
        app.with_headers(
            Method::POST,
            "/v1/access/check",
            &c.key,
            Some(json!({"permission": "p", "cost": 4})),
            &[("Idempotency-Key", b"job-7")],
        )
        .await
        .assert_error(422, "validation_failed");
        assert_eq!(app.usage(c.user_id).await["reserved"], 4);
        app.stop().await;
    }

    /// A plan change rebuilds its subscribers' counters from their events:
    /// held units, which have none yet, are counted again, so the quotas
    /// stay exact and a later commit returns the rest to the new counters.
    pub async fn a_plan_change_while_units_are_held_keeps_them_counted(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("change", "Change", &["p", "q"], Some(10), "month")
            .await;
        assert_eq!(app.check(&c.key, "q", Some(1)).await.status, StatusCode::OK);
        let r = reserve(&app, &c.key, json!({"permission": "p", "cost": 6})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = id_of(&r);
        let plan = format!("/v1/plans/{}", c.plan_id);
        let patch = |body: Value| app.patch(&plan, ADMIN_KEY, body);
        let changed = patch(json!({"usage_period": "day"})).await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
        let changed =
            patch(json!({"permission_limits": {"p": {"usage_limit": 7, "usage_period": "day"}}}))
                .await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
        let usage = app.usage(c.user_id).await;
        assert_eq!(
            (&usage["used"], &usage["reserved"], &usage["remaining"]),
            (&json!(1), &json!(6), &json!(3)),
            "{usage}"
        );
        // p's own 7 a day already hold the 6.
        let over = app.check(&c.key, "p", Some(2)).await;
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text);
        assert_eq!(over.body["remaining"], 1, "{}", over.text);
        let done = commit(&app, &c.key, &id, 1).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text);
        let usage = app.usage(c.user_id).await;
        assert_eq!(
            (&usage["used"], &usage["reserved"], &usage["remaining"]),
            (&json!(2), &json!(0), &json!(8)),
            "{usage}"
        );
        let fits = app.check(&c.key, "p", Some(6)).await;
        assert_eq!(fits.status, StatusCode::OK, "{}", fits.text);
        assert_eq!(fits.body["remaining"], 0, "p: 1 committed + 6 of 7");
        app.stop().await;
    }

    /// kill -9 between a reserve and its commit: after the restart the
    /// reservation is still held and its commit works; one left unsettled
    /// expires and returns its units.
    pub async fn after_kill_9_a_reservation_is_still_held_and_one_unsettled_expires(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("k9", "K9", &["p"], Some(10), "month").await;
        let mut server = start_for_test(&app.db.url).await;
        let client = app.client.clone();
        let post = |base: String, path: String, body: Value| {
            let (client, key) = (client.clone(), c.key.clone());
            async move {
                let body = body.to_string();
                send_to(
                    &client,
                    &base,
                    Method::POST,
                    &path,
                    Some(&key),
                    Some(&body),
                    &[("Content-Type", b"application/json")],
                )
                .await
            }
        };
        let base = server.base().to_owned();
        let long = post(
            base.clone(),
            PATH.into(),
            json!({"permission": "p", "cost": 3}),
        )
        .await;
        let short = post(
            base,
            PATH.into(),
            json!({"permission": "p", "cost": 4, "ttl_seconds": 2}),
        )
        .await;
        assert_eq!(
            (long.status, short.status),
            (StatusCode::CREATED, StatusCode::CREATED)
        );
        server.child.kill().expect("kill -9");
        server.child.wait().expect("reaped");

        let again = start_for_test(&app.db.url).await;
        let id = id_of(&long);
        let shown = post(
            again.base().to_owned(),
            format!("{PATH}/{id}/commit"),
            json!({"cost": 2}),
        )
        .await;
        assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
        assert_eq!(shown.body["committed"], 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let usage = app.usage(c.user_id).await;
            if usage["reserved"] == 0 {
                assert_eq!(usage["used"], 2, "{usage}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the short one never expired: {usage}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let expired = app.get(&format!("{PATH}/{}", id_of(&short)), &c.key).await;
        assert_eq!(expired.body["status"], "released");
        assert_eq!(app.events(c.user_id).await.len(), 1);
        drop(again);
        app.stop().await;
    }
}

on_both_backends!(
    a_commit_keeps_its_units_returns_the_rest_and_writes_one_event,
    a_release_returns_the_quota_units_but_not_the_rate_limits,
    bad_reservation_requests_are_refused_and_change_nothing,
    reservations_are_exact_under_48_concurrent_holders,
    a_commit_racing_the_expiry_either_wins_or_loses_whole,
    a_reserve_with_an_idempotency_key_holds_once,
    after_kill_9_a_reservation_is_still_held_and_one_unsettled_expires,
    a_plan_change_while_units_are_held_keeps_them_counted,
);
