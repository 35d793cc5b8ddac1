//! `docs/api.md` section 10 (usage history) against the real server: the
//! buckets add up to the events under concurrent load, on each route, and
//! every bad query is a 400 that changes nothing.

mod cases {
    use actix_web::http::StatusCode;
    use futures_util::future::join_all;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    /// The sum of `used` over the items, and per permission.
    fn sums(history: &Value) -> (i64, BTreeMap<String, i64>) {
        let mut total = 0;
        let mut by = BTreeMap::new();
        for item in history["items"].as_array().expect("items") {
            let used = item["used"].as_i64().expect("used");
            let mut of_item = 0;
            for (name, units) in item["by_permission"].as_object().expect("by_permission") {
                let units = units.as_i64().expect("units");
                of_item += units;
                *by.entry(name.clone()).or_insert(0) += units;
            }
            assert_eq!(used, of_item, "{item}");
            total += used;
        }
        (total, by)
    }

    /// 64 concurrent checks of two permissions and varied costs, and a
    /// committed reservation: every bucket size, on the user's, the
    /// caller's and the plan's routes, adds up to the events' costs.
    pub async fn history_adds_up_to_the_events_under_concurrent_load(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("hist", "Hist", &["h:a", "h:b"], None, "month")
            .await;
        let answers = join_all((0..64_i64).map(|n| {
            let permission = if n % 3 == 0 { "h:b" } else { "h:a" };
            app.check(&c.key, permission, Some(1 + n % 5))
        }))
        .await;
        assert!(answers.iter().all(|r| r.status == StatusCode::OK));
        let held = app
            .post(
                "/v1/access/reservations",
                &c.key,
                json!({"permission": "h:a", "cost": 10}),
            )
            .await;
        assert_eq!(held.status, StatusCode::CREATED, "{}", held.text);
        let id = held.body["id"].as_str().expect("id").to_owned();
        let done = app
            .post(
                &format!("/v1/access/reservations/{id}/commit"),
                &c.key,
                json!({"cost": 7}),
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text);

        let events = app.events(c.user_id).await;
        let mut expected = BTreeMap::new();
        for e in &events {
            *expected
                .entry(e["permission"].as_str().expect("permission").to_owned())
                .or_insert(0) += e["cost"].as_i64().expect("cost");
        }
        let total: i64 = expected.values().sum();
        assert_eq!(total, (0..64).map(|n| 1 + n % 5).sum::<i64>() + 7);

        for bucket in ["hour", "day", "month"] {
            let mine = app
                .get(&format!("/v1/me/usage/history?bucket={bucket}"), &c.key)
                .await;
            assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
            assert_eq!(mine.body["bucket"], bucket);
            assert_eq!(mine.body["user_id"], c.user_id);
            assert_eq!(sums(&mine.body), (total, expected.clone()), "{bucket}");
            let theirs = app
                .get(
                    &format!("/v1/users/{}/usage/history?bucket={bucket}", c.user_id),
                    ADMIN_KEY,
                )
                .await;
            assert_eq!(theirs.body, mine.body, "{bucket}");
            let plan = app
                .get(
                    &format!("/v1/usage/history?bucket={bucket}&plan_id={}", c.plan_id),
                    ADMIN_KEY,
                )
                .await;
            assert_eq!(plan.status, StatusCode::OK, "{}", plan.text);
            assert!(plan.body.get("user_id").is_none());
            assert_eq!(sums(&plan.body), (total, expected.clone()), "{bucket}");
        }
        // One permission only.
        let only = app
            .get("/v1/me/usage/history?bucket=hour&permission=h:b", &c.key)
            .await;
        let (b_total, b_by) = sums(&only.body);
        assert_eq!(b_total, expected["h:b"]);
        assert_eq!(b_by.len(), 1);
        // A range before any usage is empty; the usage report agrees.
        let before = app
            .get(
                "/v1/me/usage/history?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z",
                &c.key,
            )
            .await;
        assert_eq!(before.status, StatusCode::OK, "{}", before.text);
        assert_eq!(before.body["items"], json!([]));
        assert_eq!(before.body["from"], "2020-01-01T00:00:00Z");
        assert_eq!(app.usage(c.user_id).await["used"], total);
        app.stop().await;
    }

    /// Every bad query is 400 with the error body; a user's key cannot read
    /// another's history or everyone's.
    pub async fn bad_history_queries_are_400(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("histbad", "HistBad", &["hb"], None, "day")
            .await;
        assert_eq!(app.check(&c.key, "hb", None).await.status, StatusCode::OK);
        for query in [
            "bucket=week",
            "bucket=",
            "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            "bucket=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "from=yesterday",
            "to=2026-13-01T00:00:00Z",
            "limit=10",
            "plan_id=1",
        ] {
            let r = app
                .get(&format!("/v1/me/usage/history?{query}"), &c.key)
                .await;
            r.assert_error(400, "bad_request");
        }
        for query in ["plan_id=0", "plan_id=x", "user_id=1"] {
            let r = app
                .get(&format!("/v1/usage/history?{query}"), ADMIN_KEY)
                .await;
            r.assert_error(400, "bad_request");
        }
        app.get("/v1/usage/history", &c.key)
            .await
            .assert_error(403, "forbidden");
        app.get(&format!("/v1/users/{}/usage/history", c.user_id), &c.key)
            .await
            .assert_error(403, "forbidden");
        app.get("/v1/users/999999/usage/history", ADMIN_KEY)
            .await
            .assert_error(404, "not_found");
        // Nothing changed: the one unit is still the history.
        let mine = app.get("/v1/me/usage/history", &c.key).await;
        assert_eq!(sums(&mine.body).0, 1);
        app.stop().await;
    }
}

on_both_backends!(
    history_adds_up_to_the_events_under_concurrent_load,
    bad_history_queries_are_400,
);
