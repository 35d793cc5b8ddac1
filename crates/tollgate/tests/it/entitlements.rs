//! Entitlements (#15; CONTRACT sections 4 and 7, `docs/api.md` "Per-permission
//! quotas and the rate limit"): a quota per permission and an exact
//! token-bucket rate limit per plan, over HTTP only. The plans' validation,
//! exact counting under 64 concurrent checks, the bucket's bound across two
//! server processes and a kill -9, and the 429s of forward-auth.

mod cases {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use actix_web::http::StatusCode;
    use futures_util::future::join_all;
    use serde_json::{json, Value};
    use tollgate_persistence::Backend;

    use crate::common::{Resp, TestApp, ADMIN_KEY};
    use crate::processes::cases::{start_for_test, Server};

    /// The one entry of `quotas` (a check's body or a usage report) with this scope.
    fn quota<'a>(body: &'a Value, scope: &str) -> &'a Value {
        let all = body["quotas"]
            .as_array()
            .unwrap_or_else(|| panic!("no quotas array: {body}"));
        let found: Vec<&Value> = all.iter().filter(|q| q["scope"] == scope).collect();
        assert_eq!(found.len(), 1, "exactly one `{scope}` quota: {body}");
        found[0]
    }

    /// The scopes of `quotas`, sorted (the contract gives them no order).
    fn scopes(body: &Value) -> Vec<String> {
        let mut s: Vec<String> = body["quotas"]
            .as_array()
            .unwrap_or_else(|| panic!("no quotas array: {body}"))
            .iter()
            .map(|q| q["scope"].as_str().expect("scope").to_owned())
            .collect();
        s.sort();
        s
    }

    /// A header as an integer.
    fn int_header(r: &Resp, name: &str) -> i64 {
        r.header(name)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not an integer: {:?}", r.headers))
    }

    /// The answers with this status.
    fn with_status(answers: &[Resp], status: StatusCode) -> Vec<&Resp> {
        answers.iter().filter(|r| r.status == status).collect()
    }

    fn statuses(answers: &[Resp]) -> Vec<u16> {
        answers.iter().map(|r| r.status.as_u16()).collect()
    }

    /// The `remaining` of these answers, sorted.
    fn remainings(answers: &[&Resp]) -> Vec<i64> {
        let mut r: Vec<i64> = answers
            .iter()
            .map(|a| a.body["remaining"].as_i64().expect("remaining"))
            .collect();
        r.sort_unstable();
        r
    }

    // ---- 1. Validation ----------------------------------------------------

    /// Well-formed JSON whose values break a rule of section 4: 422.
    /// Choices (section 1 and `docs/api.md` "Requests and bodies"): a missing
    /// or null required field is 422 like every other broken rule, and so is
    /// a negative `units` / `per_seconds` (an integer of the right JSON type
    /// out of its range, as a negative `cost` or `usage_limit` is).
    fn unprocessable() -> Vec<Value> {
        vec![
            // "c" exists but the plan does not grant it; "ghost" does not exist.
            json!({"permission_limits": {"c": {"usage_limit": 1}}}),
            json!({"permission_limits": {"ghost": {"usage_limit": 1}}}),
            json!({"permission_limits": {"bad name": {"usage_limit": 1}}}),
            json!({"permission_limits": {"a": {"usage_limit": 1}, "c": {"usage_limit": 1}}}),
            json!({"permission_limits": {"a": {"usage_limit": -1}}}),
            json!({"permission_limits": {"a": {"usage_limit": null}}}),
            json!({"permission_limits": {"a": {}}}),
            json!({"permission_limits": {"a": {"usage_period": "day"}}}),
            json!({"permission_limits": {"a": {"usage_limit": 1, "usage_period": "week"}}}),
            json!({"rate_limit": {"units": 0, "per_seconds": 60}}),
            json!({"rate_limit": {"units": 1_000_000_001, "per_seconds": 60}}),
            json!({"rate_limit": {"units": -1, "per_seconds": 60}}),
            json!({"rate_limit": {"units": 10, "per_seconds": 0}}),
            json!({"rate_limit": {"units": 10, "per_seconds": 86_401}}),
            json!({"rate_limit": {"units": 10, "per_seconds": -1}}),
            json!({"rate_limit": {"per_seconds": 60}}),
            json!({"rate_limit": {"units": 10}}),
            json!({"rate_limit": {"units": null, "per_seconds": 60}}),
            json!({"rate_limit": {"units": 10, "per_seconds": null}}),
            json!({"rate_limit": {}}),
        ]
    }

    /// Unknown fields inside the objects and wrong JSON types: 400.
    fn bad_request() -> Vec<Value> {
        vec![
            json!({"permission_limits": {"a": {"usage_limit": 1, "burst": 2}}}),
            json!({"rate_limit": {"units": 10, "per_seconds": 60, "burst": 2}}),
            json!({"permission_limits": []}),
            json!({"permission_limits": "a"}),
            json!({"permission_limits": {"a": 5}}),
            json!({"permission_limits": {"a": {"usage_limit": "5"}}}),
            json!({"permission_limits": {"a": {"usage_limit": 1.5}}}),
            json!({"permission_limits": {"a": {"usage_limit": 1, "usage_period": 1}}}),
            json!({"rate_limit": 100}),
            json!({"rate_limit": [10, 60]}),
            json!({"rate_limit": {"units": "10", "per_seconds": 60}}),
            json!({"rate_limit": {"units": 10, "per_seconds": 1.5}}),
        ]
    }

    /// `base` with the fields of `fields` set.
    fn merged(base: &Value, fields: &Value) -> Value {
        let mut out = base.clone();
        for (k, v) in fields.as_object().expect("object") {
            out[k] = v.clone();
        }
        out
    }

    /// The fields of a plan that the requests here set (timestamps left out).
    fn entitlements(plan: &Value) -> Value {
        json!([
            plan["permissions"],
            plan["usage_limit"],
            plan["usage_period"],
            plan["permission_limits"],
            plan["rate_limit"]
        ])
    }

    /// Every plan, as `GET /v1/plans` lists them.
    async fn plan_list(app: &TestApp) -> Value {
        let r = app.get("/v1/plans?limit=500", ADMIN_KEY).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["items"].clone()
    }

    /// A `PATCH` that must succeed; returns the plan as `GET` reads it back.
    async fn patch_ok(app: &TestApp, path: &str, fields: Value) -> Value {
        let r = app.patch(path, ADMIN_KEY, fields.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "PATCH {fields}: {}", r.text);
        let got = app.get(path, ADMIN_KEY).await.body;
        assert_eq!(
            entitlements(&got),
            entitlements(&r.body),
            "GET reads back what PATCH answered"
        );
        got
    }

    /// `GET /v1/authorize?permission=P` with this key.
    async fn authorize(app: &TestApp, key: &str, permission: &str) -> Resp {
        app.get(&format!("/v1/authorize?permission={permission}"), key)
            .await
    }

    pub async fn bad_permission_limits_and_rate_limits_are_refused_and_change_nothing(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        app.permissions(&["a", "b", "c"]).await;
        let plan = app
            .create(
                "/v1/plans",
                json!({"name": "Ent", "permissions": ["a", "b"], "usage_limit": 100,
                       "usage_period": "month",
                       "permission_limits": {"b": {"usage_limit": 10, "usage_period": "day"}},
                       "rate_limit": {"units": 100, "per_seconds": 60}}),
            )
            .await;
        assert_eq!(
            plan["permission_limits"],
            json!({"b": {"usage_limit": 10, "usage_period": "day"}})
        );
        assert_eq!(plan["rate_limit"], json!({"units": 100, "per_seconds": 60}));
        let path = format!("/v1/plans/{}", plan["id"]);
        let before = app.get(&path, ADMIN_KEY).await;
        assert_eq!(before.status, StatusCode::OK, "{}", before.text);
        assert_eq!(entitlements(&before.body), entitlements(&plan));
        let before = before.body;
        let all_before = plan_list(&app).await;

        let post_base = json!({"name": "Bad", "permissions": ["a", "b"]});
        let cases = unprocessable()
            .into_iter()
            .map(|c| (422, "validation_failed", c))
            .chain(bad_request().into_iter().map(|c| (400, "bad_request", c)));
        for (status, code, fields) in cases {
            let body = merged(&post_base, &fields);
            let r = app.post("/v1/plans", ADMIN_KEY, body.clone()).await;
            assert_eq!(r.status.as_u16(), status, "POST {body}: {}", r.text);
            r.assert_error(status, code);
            assert_eq!(
                plan_list(&app).await,
                all_before,
                "POST {body} created something"
            );

            let r = app.patch(&path, ADMIN_KEY, fields.clone()).await;
            assert_eq!(r.status.as_u16(), status, "PATCH {fields}: {}", r.text);
            r.assert_error(status, code);
            let after = app.get(&path, ADMIN_KEY).await.body;
            assert_eq!(after, before, "PATCH {fields} changed the plan");
        }

        // A limit on no permission of the plan: on POST too when the plan grants nothing.
        app.post(
            "/v1/plans",
            ADMIN_KEY,
            json!({"name": "Bad", "permission_limits": {"a": {"usage_limit": 1}}}),
        )
        .await
        .assert_error(422, "validation_failed");

        // Keys are checked against `permissions` as the PATCH leaves them:
        // dropping a permission that has a limit is refused, and so is a
        // change that is valid in part (nothing of it is applied).
        for fields in [
            json!({"permissions": ["a"]}),
            json!({"permissions": ["a", "c"]}),
            json!({"permissions": ["a"], "permission_limits": {"b": {"usage_limit": 1}}}),
            json!({"permissions": ["a", "b"], "permission_limits": {"c": {"usage_limit": 1}}}),
            json!({"usage_limit": 5, "rate_limit": {"units": 0, "per_seconds": 60}}),
            json!({"description": "x", "permission_limits": {"a": {"usage_limit": -1}}}),
            // `docs/api.md`, PATCH: `null` is meaningful only for the nullable
            // fields (`usage_limit`, `rate_limit`); `permission_limits` is not one.
            json!({"permission_limits": null}),
        ] {
            let r = app.patch(&path, ADMIN_KEY, fields.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "PATCH {fields}: {}",
                r.text
            );
            r.assert_error(422, "validation_failed");
            let after = app.get(&path, ADMIN_KEY).await.body;
            assert_eq!(after, before, "PATCH {fields} changed the plan");
        }
        assert_eq!(plan_list(&app).await, all_before);
        app.stop().await;
    }

    pub async fn plans_without_the_new_fields_read_back_empty_and_a_patch_replaces_the_whole_map(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        app.permissions(&["a", "b", "c"]).await;
        // A v1 client's plan.
        let v1 = app
            .create(
                "/v1/plans",
                json!({"name": "V1", "permissions": ["a", "b"], "usage_limit": 3, "usage_period": "day"}),
            )
            .await;
        let has_v2_fields = |plan: &Value| {
            let o = plan.as_object().expect("object");
            assert_eq!(o.get("permission_limits"), Some(&json!({})), "{plan}");
            assert_eq!(o.get("rate_limit"), Some(&Value::Null), "{plan}");
        };
        has_v2_fields(&v1);
        let path = format!("/v1/plans/{}", v1["id"]);
        has_v2_fields(&app.get(&path, ADMIN_KEY).await.body);
        has_v2_fields(&app.get("/v1/plans", ADMIN_KEY).await.body["items"][0]);
        let r = app.patch(&path, ADMIN_KEY, json!({"usage_limit": 4})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        has_v2_fields(&r.body);

        // `usage_period` defaults to "month"; a PATCH replaces the whole map.
        let p = patch_ok(
            &app,
            &path,
            json!({"permission_limits": {"a": {"usage_limit": 2}}}),
        )
        .await;
        assert_eq!(
            p["permission_limits"],
            json!({"a": {"usage_limit": 2, "usage_period": "month"}})
        );
        let p = patch_ok(
            &app,
            &path,
            json!({"permission_limits": {"b": {"usage_limit": 1, "usage_period": "lifetime"}}}),
        )
        .await;
        assert_eq!(
            p["permission_limits"],
            json!({"b": {"usage_limit": 1, "usage_period": "lifetime"}})
        );
        // Other fields leave the map as it is.
        let p = patch_ok(
            &app,
            &path,
            json!({"description": "d", "usage_limit": null}),
        )
        .await;
        assert_eq!(
            p["permission_limits"],
            json!({"b": {"usage_limit": 1, "usage_period": "lifetime"}})
        );
        // A limit on a permission added by the same request, 0 included, and
        // the dropped permission's limit dropped with it.
        let p = patch_ok(&app, &path, json!({"permissions": ["a", "c"],
                             "permission_limits": {"c": {"usage_limit": 0, "usage_period": "day"}}}))
        .await;
        assert_eq!(p["permissions"], json!(["a", "c"]));
        assert_eq!(
            p["permission_limits"],
            json!({"c": {"usage_limit": 0, "usage_period": "day"}})
        );
        // The rate limit's bounds are inclusive; `null` removes it.
        let p = patch_ok(
            &app,
            &path,
            json!({"rate_limit": {"units": 1, "per_seconds": 1}}),
        )
        .await;
        assert_eq!(p["rate_limit"], json!({"units": 1, "per_seconds": 1}));
        let p = patch_ok(
            &app,
            &path,
            json!({"rate_limit": {"units": 1_000_000_000, "per_seconds": 86_400}}),
        )
        .await;
        assert_eq!(
            p["rate_limit"],
            json!({"units": 1_000_000_000, "per_seconds": 86_400})
        );
        let p = patch_ok(&app, &path, json!({"usage_limit": 9})).await;
        assert_eq!(
            p["rate_limit"],
            json!({"units": 1_000_000_000, "per_seconds": 86_400})
        );
        let p = patch_ok(&app, &path, json!({"rate_limit": null})).await;
        assert_eq!(p["rate_limit"], Value::Null);
        let p = patch_ok(&app, &path, json!({"permission_limits": {}})).await;
        assert_eq!(p["permission_limits"], json!({}));
        // With no limit left on it, "c" may go.
        let p = patch_ok(&app, &path, json!({"permissions": ["b"]})).await;
        assert_eq!(p["permissions"], json!(["b"]));
        has_v2_fields(&p);

        // Every v1 check answer keeps its meaning; `quotas` is new beside it.
        let c = app.customer("vee", "V1 too", &["a"], Some(3), "day").await;
        let r = app.check(&c.key, "a", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["allowed"], true);
        assert_eq!(r.body["reason"], Value::Null);
        assert_eq!(r.body["limit"], 3);
        assert_eq!(r.body["remaining"], 2);
        assert_eq!(r.body["retry_after"], Value::Null);
        assert_eq!(scopes(&r.body), ["plan"]);
        let q = quota(&r.body, "plan");
        assert_eq!(q["limit"], 3);
        assert_eq!(q["remaining"], 2);
        assert_eq!(q["usage_period"], "day");
        assert_eq!(q["reset_at"], r.body["reset_at"]);
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
        assert_eq!(r.header("ratelimit-remaining"), Some("2"));
        let free = app.customer("free", "Free", &["a"], None, "month").await;
        let r = app.check(&free.key, "a", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["limit"], Value::Null);
        assert_eq!(r.body["quotas"], json!([]));
        assert!(r.header("ratelimit-limit").is_none());
        app.stop().await;
    }

    // ---- 2 and 3. Exact quotas under 64 concurrent checks ---------------

    pub async fn a_permission_limit_of_50_is_exact_under_64_concurrent_checks_on_an_unlimited_plan(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer_of(
                "hot",
                json!({"name": "Hot", "permissions": ["hot", "cold"], "usage_limit": null,
                   "permission_limits": {"hot": {"usage_limit": 50, "usage_period": "month"}}}),
            )
            .await;
        let answers = join_all((0..64).map(|_| app.check(&c.key, "hot", None))).await;
        let granted = with_status(&answers, StatusCode::OK);
        let refused = with_status(&answers, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(granted.len(), 50, "{:?}", statuses(&answers));
        assert_eq!(refused.len(), 14, "{:?}", statuses(&answers));
        // Each answer is "after this check": the 50 grants left 49, 48, ... 0.
        assert_eq!(remainings(&granted), (0..50).collect::<Vec<_>>());
        for r in &granted {
            assert_eq!(r.body["limit"], 50, "{}", r.text);
            assert_eq!(scopes(&r.body), ["permission"], "{}", r.text);
        }
        for r in &refused {
            assert_eq!(r.body["allowed"], false, "{}", r.text);
            assert_eq!(r.body["reason"], "quota_exhausted", "{}", r.text);
            assert_eq!(r.body["limit"], 50);
            assert_eq!(r.body["remaining"], 0);
            assert_eq!(scopes(&r.body), ["permission"], "{}", r.text);
            let q = quota(&r.body, "permission");
            assert_eq!(q["limit"], 50);
            assert_eq!(q["remaining"], 0);
            assert_eq!(q["usage_period"], "month");
            assert_eq!(r.header("ratelimit-limit"), Some("50"));
            assert_eq!(r.header("ratelimit-remaining"), Some("0"));
            let retry = r.body["retry_after"].as_i64().expect("retry_after");
            assert!((1..=31 * 86_400).contains(&retry), "{}", r.text);
            assert_eq!(int_header(r, "retry-after"), retry);
        }
        assert_eq!(app.events(c.user_id).await.len(), 50);
        let report = app.usage(c.user_id).await;
        assert_eq!(report["used"], 50, "{report}");
        assert_eq!(report["limit"], Value::Null, "{report}");
        assert_eq!(report["remaining"], Value::Null, "{report}");
        assert_eq!(report["by_permission"]["hot"], 50, "{report}");
        // The plan-wide quota is unlimited: only the permission's own is listed.
        assert_eq!(scopes(&report), ["permission"], "{report}");
        let q = quota(&report, "permission");
        assert_eq!(q["limit"], 50, "{report}");
        assert_eq!(q["remaining"], 0, "{report}");
        // The plan's other permission has no quota at all.
        let cold = app.check(&c.key, "cold", None).await;
        assert_eq!(cold.status, StatusCode::OK, "{}", cold.text);
        assert_eq!(cold.body["limit"], Value::Null);
        assert_eq!(cold.body["quotas"], json!([]));
        app.stop().await;
    }

    pub async fn a_plan_limit_of_50_and_a_permission_limit_of_30_are_each_exact_under_64_concurrent_checks(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer_of(
                "mix",
                json!({"name": "Mix", "permissions": ["lim", "free"], "usage_limit": 50,
                   "usage_period": "month",
                   "permission_limits": {"lim": {"usage_limit": 30, "usage_period": "month"}}}),
            )
            .await;

        // The limited permission: its own 30 binds before the plan's 50.
        let answers = join_all((0..64).map(|_| app.check(&c.key, "lim", None))).await;
        let granted = with_status(&answers, StatusCode::OK);
        let refused = with_status(&answers, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(granted.len(), 30, "{:?}", statuses(&answers));
        assert_eq!(refused.len(), 34, "{:?}", statuses(&answers));
        assert_eq!(remainings(&granted), (0..30).collect::<Vec<_>>());
        for r in &granted {
            assert_eq!(scopes(&r.body), ["permission", "plan"], "{}", r.text);
            let own = quota(&r.body, "permission");
            let plan = quota(&r.body, "plan");
            assert_eq!(own["limit"], 30);
            assert_eq!(plan["limit"], 50);
            let own_left = own["remaining"].as_i64().expect("remaining");
            assert_eq!(plan["remaining"], own_left + 20, "{}", r.text);
            // The binding quota is the one with the fewest units remaining.
            assert_eq!(r.body["limit"], 30, "{}", r.text);
            assert_eq!(r.body["remaining"], own_left, "{}", r.text);
            assert_eq!(r.header("ratelimit-limit"), Some("30"));
        }
        for r in &refused {
            assert_eq!(r.body["reason"], "quota_exhausted", "{}", r.text);
            assert_eq!(r.body["limit"], 30, "{}", r.text);
            assert_eq!(r.body["remaining"], 0, "{}", r.text);
            assert_eq!(quota(&r.body, "permission")["remaining"], 0);
            assert_eq!(quota(&r.body, "plan")["remaining"], 20, "{}", r.text);
            assert_eq!(r.header("ratelimit-limit"), Some("30"));
            assert_eq!(r.header("ratelimit-remaining"), Some("0"));
        }

        // The other permission: only the plan-wide quota, 20 units left of it.
        let answers = join_all((0..64).map(|_| app.check(&c.key, "free", None))).await;
        let granted = with_status(&answers, StatusCode::OK);
        let refused = with_status(&answers, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(granted.len(), 20, "{:?}", statuses(&answers));
        assert_eq!(refused.len(), 44, "{:?}", statuses(&answers));
        assert_eq!(remainings(&granted), (0..20).collect::<Vec<_>>());
        for r in granted.iter().chain(&refused) {
            assert_eq!(scopes(&r.body), ["plan"], "{}", r.text);
            assert_eq!(r.body["limit"], 50, "{}", r.text);
            assert_eq!(r.header("ratelimit-limit"), Some("50"));
        }
        for r in &refused {
            assert_eq!(r.body["reason"], "quota_exhausted", "{}", r.text);
            assert_eq!(r.body["remaining"], 0, "{}", r.text);
        }

        // Both quotas at 0: on a tie the permission's own binds.
        let tie = app.check(&c.key, "lim", None).await;
        assert_eq!(tie.status, StatusCode::TOO_MANY_REQUESTS, "{}", tie.text);
        assert_eq!(tie.body["limit"], 30, "{}", tie.text);
        assert_eq!(tie.body["remaining"], 0);
        assert_eq!(tie.header("ratelimit-limit"), Some("30"));

        assert_eq!(app.events(c.user_id).await.len(), 50);
        let report = app.usage(c.user_id).await;
        assert_eq!(report["used"], 50, "{report}");
        assert_eq!(report["limit"], 50, "{report}");
        assert_eq!(report["remaining"], 0, "{report}");
        assert_eq!(report["by_permission"]["lim"], 30, "{report}");
        assert_eq!(report["by_permission"]["free"], 20, "{report}");
        assert_eq!(scopes(&report), ["permission", "plan"], "{report}");
        assert_eq!(quota(&report, "plan")["limit"], 50);
        assert_eq!(quota(&report, "plan")["remaining"], 0);
        assert_eq!(quota(&report, "permission")["limit"], 30);
        assert_eq!(quota(&report, "permission")["remaining"], 0);
        app.stop().await;
    }

    // ---- 4, 5 and 6. The rate limit across processes --------------------

    /// What one load client saw.
    #[derive(Default)]
    struct Tally {
        /// Units granted (each check costs 1).
        granted: i64,
        oks: usize,
        refused: usize,
        /// The body of the last 429.
        last_refusal: Option<Value>,
        /// A request failed (the server went away).
        broke: bool,
    }

    /// Sends checks of `p` to `base`, one at a time: until the first 429 when
    /// `until` is `None`, else until `until` (10 ms pause after a 429). Every
    /// 429 must be `rate_limited` (the plans here have no quota) with a
    /// `retry_after` >= 1 and the same `Retry-After`. Stops when a request
    /// fails; `seen` counts granted units across clients as they arrive.
    async fn load(
        base: String,
        key: String,
        until: Option<Instant>,
        seen: Arc<AtomicI64>,
    ) -> Tally {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let mut t = Tally::default();
        loop {
            if until.is_some_and(|u| Instant::now() >= u) {
                return t;
            }
            let res = client
                .post(format!("{base}/v1/access/check"))
                .insert_header(("Authorization", format!("Bearer {key}")))
                .send_json(&json!({"permission": "p"}))
                .await;
            let Ok(mut res) = res else {
                t.broke = true;
                return t;
            };
            // The answer counts only once its body arrived whole.
            let Ok(body) = res.json::<Value>().await else {
                t.broke = true;
                return t;
            };
            match res.status().as_u16() {
                200 => {
                    assert_eq!(body["allowed"], true, "{body}");
                    t.granted += 1;
                    t.oks += 1;
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                429 => {
                    assert_eq!(body["allowed"], false, "{body}");
                    assert_eq!(body["reason"], "rate_limited", "{body}");
                    let retry = body["retry_after"]
                        .as_i64()
                        .unwrap_or_else(|| panic!("no retry_after: {body}"));
                    assert!(retry >= 1, "{body}");
                    let header = res
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok());
                    assert_eq!(header, Some(retry), "Retry-After of {body}");
                    t.refused += 1;
                    t.last_refusal = Some(body);
                    match until {
                        None => return t,
                        Some(_) => actix_web::rt::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                other => panic!("unexpected status {other}: {body}"),
            }
        }
    }

    /// 32 load clients on each of two servers.
    async fn load_on_two(a: &Server, b: &Server, key: &str, until: Option<Instant>) -> Vec<Tally> {
        let seen = Arc::new(AtomicI64::new(0));
        join_all((0..64).map(|i| {
            let base = if i % 2 == 0 { a.base() } else { b.base() };
            load(base.to_owned(), key.to_owned(), until, seen.clone())
        }))
        .await
    }

    fn rate_limited_plan(name: &str, units: i64, per_seconds: i64) -> Value {
        json!({"name": name, "permissions": ["p"], "usage_limit": null,
               "rate_limit": {"units": units, "per_seconds": per_seconds}})
    }

    pub async fn two_processes_grant_exactly_the_40_units_of_a_daily_bucket_to_64_clients(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer_of("bucket", rate_limited_plan("Bucket", 40, 86_400))
            .await;
        let a = start_for_test(&app.db.url).await;
        let b = start_for_test(&app.db.url).await;
        let tallies = load_on_two(&a, &b, &c.key, None).await;
        let granted: i64 = tallies.iter().map(|t| t.granted).sum();
        assert_eq!(granted, 40, "granted units must equal the bucket's size");
        for t in &tallies {
            assert!(!t.broke, "a request failed");
            let refusal = t.last_refusal.as_ref().expect("every client ends on a 429");
            // One unit takes 86400 / 40 = 2160 s to come back.
            let retry = refusal["retry_after"].as_i64().expect("retry_after");
            assert!((1..=2160).contains(&retry), "{refusal}");
            // A rate limit is not a quota: an unlimited plan lists none.
            assert_eq!(refusal["quotas"], json!([]), "{refusal}");
            assert_eq!(refusal["limit"], Value::Null, "{refusal}");
        }
        assert_eq!(app.events(c.user_id).await.len(), 40);
        assert_eq!(app.usage(c.user_id).await["used"], 40);
        drop((a, b));
        app.stop().await;
    }

    pub async fn two_processes_keep_a_refilling_bucket_within_its_bound_and_near_it_for_6_seconds(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer_of("refill", rate_limited_plan("Refill", 20, 2))
            .await;
        let a = start_for_test(&app.db.url).await;
        let b = start_for_test(&app.db.url).await;
        // Every grant happens between `started` and the end of the join.
        let started = Instant::now();
        let tallies = load_on_two(&a, &b, &c.key, Some(started + Duration::from_secs(6))).await;
        let t = started.elapsed().as_secs_f64();
        assert!(tallies.iter().all(|t| !t.broke), "a request failed");
        let granted: i64 = tallies.iter().map(|t| t.granted).sum();
        let refused: usize = tallies.iter().map(|t| t.refused).sum();
        // Section 4: at most units + t * units / per_seconds over t seconds.
        let bound = 20.0 + t * 10.0;
        assert!(
            granted as f64 <= bound,
            "{granted} granted in {t:.3} s, over the bound {bound:.1}"
        );
        assert!(
            granted as f64 >= 0.9 * bound,
            "{granted} granted in {t:.3} s, under 90 % of the bound {bound:.1}"
        );
        assert!(refused > 0, "the load never met the limit");
        let oks: usize = tallies.iter().map(|t| t.oks).sum();
        assert_eq!(app.events(c.user_id).await.len(), oks);
        drop((a, b));
        app.stop().await;
    }

    pub async fn after_kill_9_the_bucket_is_as_the_committed_checks_left_it(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        // 1000 units a day: the bucket gains under 0.012 units a second, less
        // than one unit in this whole test, so none is granted by refill.
        let c = app
            .customer_of("crash", rate_limited_plan("Crash", 1000, 86_400))
            .await;
        let mut server = start_for_test(&app.db.url).await;
        let base = server.base().to_owned();
        let seen = Arc::new(AtomicI64::new(0));
        let clients =
            join_all((0..16).map(|_| load(base.clone(), c.key.clone(), None, seen.clone())));
        let killer = async {
            // Mid-load: once 300 grants were answered (or after 10 s).
            let deadline = Instant::now() + Duration::from_secs(10);
            while seen.load(Ordering::SeqCst) < 300 && Instant::now() < deadline {
                actix_web::rt::time::sleep(Duration::from_millis(1)).await;
            }
            // SIGKILL: no shutdown, no flush.
            server.child.kill().expect("kill -9");
            server.child.wait().expect("reaped");
        };
        let (tallies, ()) = futures_util::future::join(clients, killer).await;
        let seen_granted: i64 = tallies.iter().map(|t| t.granted).sum();
        assert!(seen_granted > 0, "the load never got going");
        assert!(
            seen_granted < 1000,
            "the load emptied the bucket before the kill"
        );
        assert!(tallies.iter().all(|t| t.broke), "every client saw the kill");

        let again = start_for_test(&app.db.url).await;
        let committed = app.events(c.user_id).await.len() as i64;
        assert!(
            (seen_granted..=seen_granted + 16).contains(&committed),
            "{committed} events for {seen_granted} answered 200"
        );
        // Drain what the bucket still holds, through the restarted process.
        let seen = Arc::new(AtomicI64::new(0));
        let drained: Vec<Tally> = join_all(
            (0..16).map(|_| load(again.base().to_owned(), c.key.clone(), None, seen.clone())),
        )
        .await;
        assert!(drained.iter().all(|t| !t.broke && t.refused == 1));
        let available: i64 = drained.iter().map(|t| t.granted).sum();
        assert_eq!(
            committed + available,
            1000,
            "{committed} committed before the kill, {available} granted after the restart"
        );
        assert_eq!(app.events(c.user_id).await.len(), 1000);
        assert_eq!(app.usage(c.user_id).await["used"], 1000);
        drop(again);
        app.stop().await;
    }

    // ---- 7. Forward-auth's 429s; denied checks consume nothing -----------

    pub async fn forward_auth_answers_429_rate_limited_or_quota_exhausted_with_ratelimit_headers(
        backend: Backend,
    ) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer_of(
                "gate",
                json!({"name": "Gate", "permissions": ["a", "b"], "usage_limit": 100,
                   "usage_period": "month",
                   "permission_limits": {"b": {"usage_limit": 1, "usage_period": "day"}},
                   "rate_limit": {"units": 3, "per_seconds": 86_400}}),
            )
            .await;
        let user = c.user_id.to_string();

        // b: its own day quota (1 left of 1, then 0) binds before the plan's 100.
        let r = authorize(&app, &c.key, "b").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(r.header("x-tollgate-user-id"), Some(user.as_str()));
        assert_eq!(r.header("ratelimit-limit"), Some("1"));
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
        assert!((1..=86_400).contains(&int_header(&r, "ratelimit-reset")));

        let r = authorize(&app, &c.key, "b").await;
        r.assert_error(429, "quota_exhausted");
        assert_eq!(r.header("ratelimit-limit"), Some("1"));
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
        let reset = int_header(&r, "ratelimit-reset");
        assert!((1..=86_400).contains(&reset));
        // Both are "seconds until the binding quota resets".
        assert_eq!(int_header(&r, "retry-after"), reset);

        // a: the plan-wide quota binds. The refused b took no unit from the
        // bucket: 2 are left, so two checks of a pass.
        for left in ["98", "97"] {
            let r = authorize(&app, &c.key, "a").await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
            assert_eq!(r.header("ratelimit-limit"), Some("100"));
            assert_eq!(r.header("ratelimit-remaining"), Some(left));
        }
        let r = authorize(&app, &c.key, "a").await;
        r.assert_error(429, "rate_limited");
        assert_eq!(r.header("ratelimit-limit"), Some("100"));
        assert_eq!(r.header("ratelimit-remaining"), Some("97"));
        assert!((1..=31 * 86_400).contains(&int_header(&r, "ratelimit-reset")));
        // One unit comes back every 86400 / 3 = 28800 s.
        let retry = int_header(&r, "retry-after");
        assert!((28_700..=28_800).contains(&retry), "Retry-After {retry}");

        // The rate limit comes before the quotas in the decision order.
        let r = app
            .client
            .get(format!("{}/v1/authorize", app.base))
            .insert_header(("Authorization", format!("Bearer {}", c.key)))
            .insert_header(("X-Tollgate-Permission", "b"))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let r = authorize(&app, &c.key, "b").await;
        r.assert_error(429, "rate_limited");
        assert_eq!(r.header("ratelimit-limit"), Some("1"));
        assert!(r.header("retry-after").is_some());

        assert_eq!(app.events(c.user_id).await.len(), 3);
        let report = app.usage(c.user_id).await;
        assert_eq!(report["used"], 3, "{report}");
        assert_eq!(report["by_permission"]["a"], 2, "{report}");
        assert_eq!(report["by_permission"]["b"], 1, "{report}");
        app.stop().await;
    }

    pub async fn a_denied_check_consumes_nothing_from_any_quota_or_the_bucket(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer_of(
                "deny",
                json!({"name": "Deny", "permissions": ["a", "b"], "usage_limit": 3,
                   "usage_period": "month",
                   "permission_limits": {"b": {"usage_limit": 10, "usage_period": "month"}},
                   "rate_limit": {"units": 5, "per_seconds": 86_400}}),
            )
            .await;
        let ok = app.check(&c.key, "b", Some(2)).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        assert_eq!(ok.body["retry_after"], Value::Null);
        assert_eq!(quota(&ok.body, "plan")["remaining"], 1);
        assert_eq!(quota(&ok.body, "permission")["remaining"], 8);
        assert_eq!(ok.body["limit"], 3, "the plan's quota binds: {}", ok.text);
        assert_eq!(ok.body["remaining"], 1);

        // Over the plan-wide quota (2 + 2 > 3): b's own quota keeps its 8.
        let over = app.check(&c.key, "b", Some(2)).await;
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text);
        assert_eq!(over.body["allowed"], false);
        assert_eq!(over.body["reason"], "quota_exhausted");
        assert_eq!(over.body["limit"], 3);
        assert_eq!(over.body["remaining"], 1);
        assert_eq!(quota(&over.body, "permission")["remaining"], 8);
        let retry = over.body["retry_after"].as_i64().expect("retry_after");
        assert!((1..=31 * 86_400).contains(&retry), "{}", over.text);
        assert_eq!(int_header(&over, "retry-after"), retry);
        assert_eq!(int_header(&over, "ratelimit-reset"), retry);

        // The bucket holds 3 (of 5) and this costs 4: rate_limited, which
        // comes before the plan quota this check would break too.
        let limited = app.check(&c.key, "a", Some(4)).await;
        assert_eq!(
            limited.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            limited.text
        );
        assert_eq!(limited.body["reason"], "rate_limited");
        assert_eq!(limited.body["limit"], 3);
        assert_eq!(limited.body["remaining"], 1);
        // One unit comes back every 86400 / 5 = 17280 s.
        let retry = limited.body["retry_after"].as_i64().expect("retry_after");
        assert!((17_180..=17_280).contains(&retry), "{}", limited.text);
        assert_eq!(int_header(&limited, "retry-after"), retry);
        assert_eq!(limited.header("ratelimit-remaining"), Some("1"));

        // Neither refusal took anything: the plan's last unit is there...
        let last = app.check(&c.key, "a", Some(1)).await;
        assert_eq!(last.status, StatusCode::OK, "{}", last.text);
        assert_eq!(last.body["remaining"], 0);
        // ... b's own quota lost only the granted 2, and the bucket still
        // holds 2 of the 5 (2 + 1 taken).
        let r = app
            .patch(
                &format!("/v1/plans/{}", c.plan_id),
                ADMIN_KEY,
                json!({"usage_limit": 6}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let b = app.check(&c.key, "b", Some(2)).await;
        assert_eq!(b.status, StatusCode::OK, "{}", b.text);
        assert_eq!(quota(&b.body, "permission")["remaining"], 6, "{}", b.text);
        assert_eq!(quota(&b.body, "plan")["remaining"], 1, "{}", b.text);
        assert_eq!(b.body["limit"], 6);
        assert_eq!(b.body["remaining"], 1);
        let empty = app.check(&c.key, "a", Some(1)).await;
        assert_eq!(
            empty.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            empty.text
        );
        assert_eq!(empty.body["reason"], "rate_limited");
        assert_eq!(empty.body["remaining"], 1);

        let events = app.events(c.user_id).await;
        assert_eq!(events.len(), 3);
        let units: i64 = events
            .iter()
            .map(|e| e["cost"].as_i64().expect("cost"))
            .sum();
        assert_eq!(units, 5);
        let report = app.usage(c.user_id).await;
        assert_eq!(report["used"], 5, "{report}");
        assert_eq!(report["limit"], 6, "{report}");
        assert_eq!(report["remaining"], 1, "{report}");
        assert_eq!(report["by_permission"]["a"], 1, "{report}");
        assert_eq!(report["by_permission"]["b"], 4, "{report}");
        assert_eq!(quota(&report, "plan")["remaining"], 1, "{report}");
        assert_eq!(quota(&report, "permission")["limit"], 10, "{report}");
        assert_eq!(quota(&report, "permission")["remaining"], 6, "{report}");
        app.stop().await;
    }

    /// Deliver 2 (section 4): usage already consumed in a window counts
    /// against a permission limit added in that window.
    pub async fn usage_already_consumed_counts_against_a_new_permission_limit(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("late", "Late", &["a", "b"], None, "month")
            .await;
        assert_eq!(app.check(&c.key, "a", Some(5)).await.status, StatusCode::OK);
        assert_eq!(app.check(&c.key, "b", Some(7)).await.status, StatusCode::OK);
        let r = app
            .patch(
                &format!("/v1/plans/{}", c.plan_id),
                ADMIN_KEY,
                json!({"permission_limits": {"a": {"usage_limit": 6, "usage_period": "month"}}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let over = app.check(&c.key, "a", Some(2)).await;
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text);
        assert_eq!(over.body["reason"], "quota_exhausted");
        assert_eq!(over.body["limit"], 6);
        assert_eq!(over.body["remaining"], 1, "b's 7 units are not a's");
        let fits = app.check(&c.key, "a", Some(1)).await;
        assert_eq!(fits.status, StatusCode::OK, "{}", fits.text);
        assert_eq!(fits.body["remaining"], 0);
        let other = app.check(&c.key, "b", None).await;
        assert_eq!(other.status, StatusCode::OK, "{}", other.text);
        assert_eq!(other.body["quotas"], json!([]));
        app.stop().await;
    }
}

on_both_backends!(
    bad_permission_limits_and_rate_limits_are_refused_and_change_nothing,
    plans_without_the_new_fields_read_back_empty_and_a_patch_replaces_the_whole_map,
    a_permission_limit_of_50_is_exact_under_64_concurrent_checks_on_an_unlimited_plan,
    a_plan_limit_of_50_and_a_permission_limit_of_30_are_each_exact_under_64_concurrent_checks,
    two_processes_grant_exactly_the_40_units_of_a_daily_bucket_to_64_clients,
    two_processes_keep_a_refilling_bucket_within_its_bound_and_near_it_for_6_seconds,
    after_kill_9_the_bucket_is_as_the_committed_checks_left_it,
    forward_auth_answers_429_rate_limited_or_quota_exhausted_with_ratelimit_headers,
    a_denied_check_consumes_nothing_from_any_quota_or_the_bucket,
    usage_already_consumed_counts_against_a_new_permission_limit,
);
