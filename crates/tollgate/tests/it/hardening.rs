//! What no client (and no bug in one batch) can do to the access checks:
//! leave a poisoned connection in the pool, queue checks without bound,
//! charge a check whose caller left, or leave a dead thread unreported.
//! Faults come from the server's own `Database::faults` (test-hooks).

mod cases {
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use actix_web::http::{Method, StatusCode};
    use chrono::Utc;
    use tollgate_domain::permission::PermissionName;
    use tollgate_domain::usage::{Consumed, Consumption, Cost, UsageRepository};
    use tollgate_domain::UserId;
    use tollgate_persistence::testing::TestDatabase;
    use tollgate_persistence::{Backend, Database, PoolOptions};

    use crate::common::{Customer, TestApp, ADMIN_KEY};

    fn used(report: &serde_json::Value) -> i64 {
        report["used"].as_i64().expect("used")
    }

    /// A check of `c` for the store itself, as the access service builds it.
    async fn consumption(db: &Database, c: &Customer) -> Consumption {
        let user_id = UserId::new(c.user_id).expect("id");
        let context = UsageRepository::access_context(db, user_id)
            .await
            .expect("context")
            .expect("subscribed");
        let now = Utc::now();
        Consumption {
            subscription_id: context.subscription_id,
            user_id,
            permission: PermissionName::parse("p").expect("valid"),
            cost: Cost::parse(None).expect("valid"),
            limit: context.limit.get(),
            period: context.period,
            window: context.period.window_at(now),
            at: now,
            permission_quota: None,
            rate_limit: None,
            idempotency_key: None,
            hold: None,
        }
    }

    pub async fn a_panic_inside_a_write_transaction_leaves_no_lock_behind(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("panic", "Panic", &["p"], None, "month").await;
        assert_eq!(app.check(&c.key, "p", None).await.status, StatusCode::OK);

        app.server_db.faults().panic_next_batch_in_transaction();
        app.check(&c.key, "p", None)
            .await
            .assert_error(500, "internal");

        // The connection that panicked was closed, not pooled with its
        // transaction open: nothing waits for its lock (the test pools
        // would wait 10 s for it).
        let started = Instant::now();
        assert_eq!(app.check(&c.key, "p", None).await.status, StatusCode::OK);
        let r = app
            .post(
                "/v1/permissions",
                ADMIN_KEY,
                serde_json::json!({"name": "after-the-panic"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "waited for a lock: {:?}",
            started.elapsed()
        );
        assert_eq!(
            used(&app.usage(c.user_id).await),
            2,
            "the panicked batch consumed nothing"
        );
        app.stop().await;
    }

    pub async fn a_full_check_queue_answers_503_at_once_and_consumes_nothing(backend: Backend) {
        let pool = PoolOptions {
            check_queue: 2,
            ..TestDatabase::pool_options()
        };
        let app = Rc::new(TestApp::spawn_with(TestDatabase::new(backend), pool).await);
        let c = app.customer("queue", "Queue", &["p"], None, "month").await;
        assert_eq!(app.check(&c.key, "p", None).await.status, StatusCode::OK);

        // Every writer thread holds its batch for 5 s: checks sent one by
        // one fill the batches (one per writer thread), then the queue of 2;
        // the next one is refused, at once.
        app.server_db.faults().hold_batches(Duration::from_secs(5));
        let mut waiting = Vec::new();
        let refused = loop {
            assert!(waiting.len() < 10, "the queue never filled");
            let (app, key) = (app.clone(), c.key.clone());
            let check = actix_web::rt::spawn(async move {
                let started = Instant::now();
                let r = app.check(&key, "p", None).await;
                (r, started.elapsed())
            });
            actix_web::rt::time::sleep(Duration::from_millis(400)).await;
            if check.is_finished() {
                break check.await.expect("joined");
            }
            waiting.push(check);
        };
        let (r, took) = refused;
        r.assert_error(503, "unavailable");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(
            took < Duration::from_millis(400),
            "refused at once: {took:?}"
        );
        let waited = waiting.len() as i64;
        assert!(
            waited >= 3,
            "one held batch at least and a full queue: {waited}"
        );
        for check in waiting {
            assert_eq!(check.await.expect("joined").0.status, StatusCode::OK);
        }
        assert_eq!(
            used(&app.usage(c.user_id).await),
            1 + waited,
            "the refused check consumed nothing"
        );
        let metrics = app
            .raw(Method::GET, "/metrics", None, None, None)
            .await
            .text;
        assert!(
            metrics.contains("tollgate_access_checks_rejected_total 1"),
            "counted in /metrics"
        );
    }

    pub async fn a_check_whose_caller_left_before_its_batch_consumes_nothing(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("gone", "Gone", &["p"], None, "month").await;
        let db = app.server_db.clone();
        let k = consumption(&db, &c).await;

        db.faults().hold_batches(Duration::from_millis(800));
        let held = UsageRepository::consume(&db, &k);
        let held = actix_web::rt::spawn(held);
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        // Twenty callers give up while the batch before theirs is held.
        for _ in 0..20 {
            drop(UsageRepository::consume(&db, &k));
        }
        assert_eq!(
            held.await.expect("joined").expect("consumed"),
            Consumed::Granted {
                used: 1,
                permission_used: None
            }
        );
        let after = UsageRepository::consume(&db, &k).await.expect("consumed");
        assert_eq!(
            after,
            Consumed::Granted {
                used: 2,
                permission_used: None
            },
            "the twenty were skipped"
        );
        assert_eq!(app.events(c.user_id).await.len(), 2);
        assert_eq!(db.hot_path_state().checks_abandoned, 20);
        let metrics = app
            .raw(Method::GET, "/metrics", None, None, None)
            .await
            .text;
        assert!(metrics.contains("tollgate_access_checks_abandoned_total 20"));
        app.stop().await;
    }

    pub async fn management_requests_holding_the_pool_cannot_stall_checks(backend: Backend) {
        let pool = PoolOptions {
            max_size: 2,
            timeout: Duration::from_millis(1500),
            ..TestDatabase::pool_options()
        };
        let app = TestApp::spawn_with(TestDatabase::new(backend), pool).await;
        let c = app.customer("busy", "Busy", &["p"], None, "month").await;
        assert_eq!(app.check(&c.key, "p", None).await.status, StatusCode::OK);

        app.server_db.hold_management_pool(Duration::from_secs(4));
        let started = Instant::now();
        for _ in 0..20 {
            assert_eq!(app.check(&c.key, "p", None).await.status, StatusCode::OK);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the checks waited: {:?}",
            started.elapsed()
        );
        // Management requests meanwhile wait for the pool, then give up.
        app.get("/v1/users", ADMIN_KEY)
            .await
            .assert_error(503, "unavailable");
        // Once they are done, management requests are served again.
        actix_web::rt::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(used(&app.usage(c.user_id).await), 21);
        app.stop().await;
    }

    pub async fn readyz_is_503_once_the_writer_has_died(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("w", "W", &["p"], None, "month").await;
        let ready = app.raw(Method::GET, "/readyz", None, None, None).await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);

        // Every writer thread of this backend ends on its next batch.
        for _ in 0..4 {
            app.server_db.faults().stop_writer();
            let _ = app.check(&c.key, "p", None).await;
            if !app.server_db.threads_alive() {
                break;
            }
        }
        app.raw(Method::GET, "/readyz", None, None, None)
            .await
            .assert_error(503, "unavailable");
        app.stop().await;
    }

    pub async fn readyz_is_503_once_the_loader_has_died(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.server_db.faults().stop_loader();
        // A key the cache does not hold goes to the loader, which ends.
        let r = app
            .raw(
                Method::GET,
                "/v1/me",
                Some("tg_notakeyatall0123456789abcdefghijkl"),
                None,
                None,
            )
            .await;
        assert!(r.status.is_server_error(), "{}", r.text);
        // The thread is gone once it has unwound.
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.server_db.threads_alive() {
            assert!(Instant::now() < deadline, "the loader still runs");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        app.raw(Method::GET, "/readyz", None, None, None)
            .await
            .assert_error(503, "unavailable");
        app.stop().await;
    }
}

on_both_backends!(
    a_panic_inside_a_write_transaction_leaves_no_lock_behind,
    a_full_check_queue_answers_503_at_once_and_consumes_nothing,
    a_check_whose_caller_left_before_its_batch_consumes_nothing,
    management_requests_holding_the_pool_cannot_stall_checks,
    readyz_is_503_once_the_writer_has_died,
    readyz_is_503_once_the_loader_has_died,
);
