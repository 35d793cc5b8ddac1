//! One suite, run on SQLite always and on MariaDB with the `mysql` feature.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::{Arc, Barrier};
use std::thread;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures_executor::block_on;
use tollgate_domain::api_key::{
    ApiKeyName, ApiKeyRepository, ApiKeySecret, KeyAndUser, NewApiKey, MAX_LIVE_KEYS,
};
use tollgate_domain::period::UsagePeriod;
use tollgate_domain::permission::{
    NewPermission, PermissionDescription, PermissionError, PermissionName, PermissionPatch,
    PermissionRepository,
};
use tollgate_domain::plan::{
    NewPlan, PermissionList, PlanDescription, PlanError, PlanName, PlanPatch, PlanRepository,
    UsageLimit,
};
use tollgate_domain::subscription::{
    SubscriptionError, SubscriptionFilter, SubscriptionRepository, SubscriptionStatus,
};
use tollgate_domain::user::{
    keep_an_active_admin, NewUser, Role, User, UserError, UserFilter, UserPatch, UserRepository,
    UserStatus, Username,
};
use tollgate_domain::{PageRequest, PlanId, UserId};
use tollgate_persistence::testing::TestDatabase;
use tollgate_persistence::Database;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("valid")
}

fn perm(db: &Database, name: &str) -> tollgate_domain::permission::Permission {
    PermissionRepository::create(
        db,
        &NewPermission {
            name: PermissionName::parse(name).expect("valid"),
            description: PermissionDescription::parse("").expect("valid"),
        },
        now(),
    )
    .expect("permission created")
}

fn new_plan(name: &str, perms: &[&str]) -> NewPlan {
    NewPlan {
        name: PlanName::parse(name).expect("valid"),
        description: PlanDescription::parse("").expect("valid"),
        permissions: PermissionList::new(
            perms
                .iter()
                .map(|p| PermissionName::parse(*p).expect("valid")),
        ),
        usage_limit: UsageLimit::parse(Some(100)).expect("valid"),
        usage_period: UsagePeriod::Month,
    }
}

fn user(db: &Database, name: &str, role: Role) -> User {
    UserRepository::create(
        db,
        &NewUser {
            username: Username::parse(name).expect("valid"),
            role,
            status: UserStatus::Active,
        },
        now(),
    )
    .expect("user created")
}

fn names(list: &PermissionList) -> Vec<&str> {
    list.names().iter().map(PermissionName::as_str).collect()
}

mod cases {
    use super::*;
    use tollgate_domain::usage::{Consumed, Consumption, Cost, UsageRepository};

    fn consumption(
        sub: &tollgate_domain::subscription::Subscription,
        perm: &str,
        cost: i64,
        limit: Option<i64>,
    ) -> Consumption {
        Consumption {
            subscription_id: sub.id,
            user_id: sub.user_id,
            permission: PermissionName::parse(perm).expect("valid"),
            cost: Cost::parse(Some(cost)).expect("valid"),
            limit,
            window: UsagePeriod::Month.window_at(now()),
            at: now(),
        }
    }

    /// A second instance on `t`'s database whose pool's checkouts are the
    /// test's own: with a 60 s TTL its cache poller checks out a connection
    /// once, at start (the 1 s of the test pools polls every 250 ms), and
    /// that poll is over when this returns.
    fn quiet_instance(t: &TestDatabase) -> Database {
        let options = tollgate_persistence::PoolOptions {
            cache_ttl: std::time::Duration::from_secs(60),
            ..TestDatabase::pool_options()
        };
        let url = tollgate_persistence::DatabaseUrl::parse(&t.url).expect("url");
        let db = Database::open(&url, &options);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while db.pool_state().checkouts == 0 && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(db.pool_state().checkouts, 1, "the poller's first poll");
        db
    }

    /// A new user `name` with an active subscription to `plan`.
    fn subscriber(
        db: &Database,
        name: &str,
        plan: PlanId,
    ) -> tollgate_domain::subscription::Subscription {
        let u = user(db, name, Role::User);
        SubscriptionRepository::create(db, u.id, plan, now()).expect("sub")
    }

    /// 64 threads consume concurrently through the batching writer: exactly
    /// the limit is granted, each grant sees a distinct running total, and
    /// the counter equals the events.
    pub fn concurrent_consumption_is_exact(t: &TestDatabase) {
        perm(&t.db, "p");
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &["p"]), now()).expect("plan");
        let hot_sub = subscriber(&t.db, "hot", plan.id);
        let cold_sub = subscriber(&t.db, "cold", plan.id);
        let barrier = Arc::new(Barrier::new(64));
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let db = t.db.clone();
                let barrier = barrier.clone();
                let c = if i % 4 == 0 {
                    consumption(&cold_sub, "p", 1, None)
                } else {
                    consumption(&hot_sub, "p", 1, Some(30))
                };
                thread::spawn(move || {
                    barrier.wait();
                    block_on(UsageRepository::consume(&db, &c))
                })
            })
            .collect();
        let results: Vec<Consumed> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("consumed"))
            .collect();
        let hot_results: Vec<_> = results
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 != 0)
            .map(|(_, r)| *r)
            .collect();
        let mut seen: Vec<i64> = hot_results
            .iter()
            .filter_map(|r| match r {
                Consumed::Granted { used } => Some(*used),
                Consumed::Exhausted { .. } => None,
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=30).collect::<Vec<_>>(),
            "each grant sees its own total"
        );
        assert!(hot_results
            .iter()
            .all(|r| !matches!(r, Consumed::Exhausted { used } if *used != 30)));
        let window = UsagePeriod::Month.window_at(now());
        assert_eq!(
            UsageRepository::used(&t.db, hot_sub.user_id, window).expect("used"),
            30
        );
        assert_eq!(
            UsageRepository::used(&t.db, cold_sub.user_id, window).expect("used"),
            16
        );
        let events = UsageRepository::events(
            &t.db,
            hot_sub.user_id,
            &Default::default(),
            PageRequest::first(500),
        )
        .expect("events");
        assert_eq!(events.items.len(), 30);
        let by_perm =
            UsageRepository::used_by_permission(&t.db, cold_sub.user_id, window).expect("sum");
        assert_eq!(by_perm, vec![("p".to_owned(), 16)]);
    }

    /// A counter created for a new window starts from the events already in it.
    pub fn new_counters_start_from_the_window_events(t: &TestDatabase) {
        perm(&t.db, "p");
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &["p"]), now()).expect("plan");
        let sub = subscriber(&t.db, "u", plan.id);
        let c = consumption(&sub, "p", 7, Some(10));
        assert_eq!(
            block_on(UsageRepository::consume(&t.db, &c)).expect("ok"),
            Consumed::Granted { used: 7 }
        );
        // Same events, seen through a day window: a fresh counter seeded with 7.
        let mut day = consumption(&sub, "p", 4, Some(10));
        day.window = UsagePeriod::Day.window_at(now());
        assert_eq!(
            block_on(UsageRepository::consume(&t.db, &day)).expect("ok"),
            Consumed::Exhausted { used: 7 }
        );
        day.cost = Cost::parse(Some(3)).expect("valid");
        assert_eq!(
            block_on(UsageRepository::consume(&t.db, &day)).expect("ok"),
            Consumed::Granted { used: 10 }
        );
    }

    /// The new windows of one batch get their counters together (MariaDB:
    /// one statement for all their seeds; SQLite, in process, one by one):
    /// each starts from its own window's events. The checks queue up while a
    /// transaction of the test holds the lock the writer needs, so they come
    /// to it in few batches.
    pub fn new_counters_of_one_batch_start_from_their_own_events(t: &TestDatabase) {
        use diesel::connection::SimpleConnection;
        use r2d2::ManageConnection;
        perm(&t.db, "p");
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &["p"]), now()).expect("plan");
        let subs: Vec<_> = (0..12i64)
            .map(|i| {
                let sub = subscriber(&t.db, &format!("u{i}"), plan.id);
                let month = consumption(&sub, "p", i + 1, None);
                block_on(UsageRepository::consume(&t.db, &month)).expect("ok");
                sub
            })
            .collect();
        let url = tollgate_persistence::DatabaseUrl::parse(&t.url).expect("url");
        let manager =
            tollgate_persistence::ConnectionManager::new(url, std::time::Duration::from_secs(10));
        let mut holder = manager.connect().expect("a connection of the test");
        let (hold, release) = match &holder {
            tollgate_persistence::DbConnection::Sqlite(_) => ("BEGIN IMMEDIATE", "COMMIT"),
            #[cfg(feature = "mysql")]
            tollgate_persistence::DbConnection::Mysql(_) => {
                ("BEGIN; SELECT id FROM users FOR UPDATE", "COMMIT")
            }
        };
        let run = |conn: &mut tollgate_persistence::DbConnection, sql: &str| match conn {
            tollgate_persistence::DbConnection::Sqlite(c) => c.batch_execute(sql),
            #[cfg(feature = "mysql")]
            tollgate_persistence::DbConnection::Mysql(c) => c.batch_execute(sql),
        };
        run(&mut holder, hold).expect("lock held");
        thread::scope(|scope| {
            let checks: Vec<_> = subs
                .iter()
                .enumerate()
                .map(|(i, sub)| {
                    scope.spawn(move || {
                        // Same events, seen through a day window: seeded with i + 1.
                        let mut day = consumption(sub, "p", 1, Some(i as i64 + 2));
                        day.window = UsagePeriod::Day.window_at(now());
                        let first = block_on(UsageRepository::consume(&t.db, &day)).expect("ok");
                        let second = block_on(UsageRepository::consume(&t.db, &day)).expect("ok");
                        (i as i64, first, second)
                    })
                })
                .collect();
            thread::sleep(std::time::Duration::from_millis(300));
            run(&mut holder, release).expect("lock released");
            for check in checks {
                let (i, first, second) = check.join().expect("no panic");
                assert_eq!(first, Consumed::Granted { used: i + 2 }, "user {i}");
                assert_eq!(second, Consumed::Exhausted { used: i + 2 }, "user {i}");
            }
        });
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    /// A check of `sub`'s user at `when`, in `period`'s window then.
    fn check_at(
        sub: &tollgate_domain::subscription::Subscription,
        perm: &str,
        cost: i64,
        limit: Option<i64>,
        period: UsagePeriod,
        when: DateTime<Utc>,
    ) -> Consumption {
        Consumption {
            window: period.window_at(when),
            at: when,
            ..consumption(sub, perm, cost, limit)
        }
    }

    fn consumed(db: &Database, c: &Consumption) -> Consumed {
        block_on(UsageRepository::consume(db, c)).expect("consumed")
    }

    fn granted(db: &Database, c: &Consumption) -> bool {
        matches!(
            block_on(UsageRepository::consume(db, c)).expect("consumed"),
            Consumed::Granted { .. }
        )
    }

    fn plan_with(
        db: &Database,
        name: &str,
        perms: &[&str],
        limit: i64,
        period: UsagePeriod,
    ) -> PlanId {
        let mut plan = new_plan(name, perms);
        plan.usage_limit = UsageLimit::parse(Some(limit)).expect("valid");
        plan.usage_period = period;
        PlanRepository::create(db, &plan, now()).expect("plan").id
    }

    /// Usage is the user's: a user who cancels and subscribes again in the
    /// same window keeps what they consumed in it (limit 5: 3 used, then
    /// only 2 more), and the report says so before any new check.
    pub fn a_new_subscription_keeps_the_windows_usage(t: &TestDatabase) {
        perm(&t.db, "p");
        let plan = plan_with(&t.db, "Five", &["p"], 5, UsagePeriod::Month);
        let first = subscriber(&t.db, "u", plan);
        for _ in 0..3 {
            assert!(granted(&t.db, &consumption(&first, "p", 1, Some(5))));
        }
        SubscriptionRepository::cancel(&t.db, first.user_id, now()).expect("canceled");
        let again =
            SubscriptionRepository::create(&t.db, first.user_id, plan, now()).expect("again");
        assert_ne!(again.id, first.id);
        let window = UsagePeriod::Month.window_at(now());
        assert_eq!(
            UsageRepository::used(&t.db, again.user_id, window).expect("used"),
            3
        );
        let results: Vec<Consumed> = (0..3)
            .map(|_| {
                block_on(UsageRepository::consume(
                    &t.db,
                    &consumption(&again, "p", 1, Some(5)),
                ))
                .expect("ok")
            })
            .collect();
        assert_eq!(
            results,
            vec![
                Consumed::Granted { used: 4 },
                Consumed::Granted { used: 5 },
                Consumed::Exhausted { used: 5 }
            ]
        );
        // Moving to another plan of the same period keeps it too.
        let bigger = plan_with(&t.db, "Seven", &["p"], 7, UsagePeriod::Month);
        SubscriptionRepository::change_plan(&t.db, again.user_id, bigger, now()).expect("moved");
        assert_eq!(
            block_on(UsageRepository::consume(
                &t.db,
                &consumption(&again, "p", 3, Some(7))
            ))
            .expect("ok"),
            Consumed::Exhausted { used: 5 }
        );
        assert_eq!(
            block_on(UsageRepository::consume(
                &t.db,
                &consumption(&again, "p", 2, Some(7))
            ))
            .expect("ok"),
            Consumed::Granted { used: 7 }
        );
    }

    /// month -> day -> month, on the 1st (where a day and a month window
    /// share their start) and the day after: each move counts the new
    /// window's usage, whatever counters the other kind left behind.
    pub fn period_kind_changes_count_the_new_window(t: &TestDatabase) {
        perm(&t.db, "p");
        let monthly = plan_with(&t.db, "Monthly", &["p"], 100, UsagePeriod::Month);
        let daily = plan_with(&t.db, "Daily", &["p"], 6, UsagePeriod::Day);
        let u = user(&t.db, "u", Role::User);
        let first = at("2026-11-01T09:00:00Z");
        let sub = SubscriptionRepository::create(&t.db, u.id, monthly, first).expect("sub");
        let month = |when| UsagePeriod::Month.window_at(when);
        let day = |when| UsagePeriod::Day.window_at(when);
        assert!(granted(
            &t.db,
            &check_at(&sub, "p", 4, Some(100), UsagePeriod::Month, first)
        ));

        // To the daily plan on the 1st: the day window (same start as the
        // month's) counts the 4 of today.
        let later = at("2026-11-01T10:00:00Z");
        SubscriptionRepository::change_plan(&t.db, u.id, daily, later).expect("to daily");
        assert_eq!(
            UsageRepository::used(&t.db, u.id, day(later)).expect("used"),
            4
        );
        assert_eq!(
            consumed(
                &t.db,
                &check_at(&sub, "p", 1, Some(6), UsagePeriod::Day, later)
            ),
            Consumed::Granted { used: 5 }
        );
        // The next day starts from zero.
        let next = at("2026-11-02T10:00:00Z");
        assert_eq!(
            consumed(
                &t.db,
                &check_at(&sub, "p", 6, Some(6), UsagePeriod::Day, next)
            ),
            Consumed::Granted { used: 6 }
        );
        // Back to monthly: the month counts all 11, not the 1st's day counter.
        SubscriptionRepository::change_plan(&t.db, u.id, monthly, next).expect("to monthly");
        assert_eq!(
            UsageRepository::used(&t.db, u.id, month(next)).expect("used"),
            11
        );
        assert_eq!(
            consumed(
                &t.db,
                &check_at(&sub, "p", 89, Some(100), UsagePeriod::Month, next)
            ),
            Consumed::Granted { used: 100 }
        );
        assert_eq!(
            consumed(
                &t.db,
                &check_at(&sub, "p", 1, Some(100), UsagePeriod::Month, next)
            ),
            Consumed::Exhausted { used: 100 }
        );

        // A plan's own period changed by a PATCH: its subscribers' counters
        // follow at once (today's 95 of the 2nd, then the month's 100).
        let patch = |period| PlanPatch {
            usage_period: Some(period),
            ..Default::default()
        };
        PlanRepository::update(&t.db, monthly, &patch(UsagePeriod::Day), next).expect("patched");
        assert_eq!(
            UsageRepository::used(&t.db, u.id, day(next)).expect("used"),
            95
        );
        PlanRepository::update(&t.db, monthly, &patch(UsagePeriod::Month), next).expect("patched");
        assert_eq!(
            UsageRepository::used(&t.db, u.id, month(next)).expect("used"),
            100
        );
        PlanRepository::update(&t.db, monthly, &patch(UsagePeriod::Lifetime), next)
            .expect("patched");
        let lifetime = UsagePeriod::Lifetime.window_at(next);
        assert_eq!(
            UsageRepository::used(&t.db, u.id, lifetime).expect("used"),
            100
        );
    }

    /// The plan-wide quota is the sum of the user's permissions: two
    /// permissions share a limit, one at a time and under 48 concurrent
    /// checks, and the report shows each.
    pub fn permissions_sum_against_the_plan_limit(t: &TestDatabase) {
        perm(&t.db, "a");
        perm(&t.db, "b");
        let plan = plan_with(&t.db, "Shared", &["a", "b"], 5, UsagePeriod::Month);
        let sub = subscriber(&t.db, "u", plan);
        let consume = |p, cost| {
            block_on(UsageRepository::consume(
                &t.db,
                &consumption(&sub, p, cost, Some(5)),
            ))
            .expect("ok")
        };
        assert_eq!(consume("a", 3), Consumed::Granted { used: 3 });
        assert_eq!(consume("b", 3), Consumed::Exhausted { used: 3 });
        assert_eq!(consume("b", 2), Consumed::Granted { used: 5 });
        assert_eq!(consume("a", 1), Consumed::Exhausted { used: 5 });
        let window = UsagePeriod::Month.window_at(now());
        assert_eq!(
            UsageRepository::used(&t.db, sub.user_id, window).expect("used"),
            5
        );
        assert_eq!(
            UsageRepository::used_by_permission(&t.db, sub.user_id, window).expect("by permission"),
            vec![("a".to_owned(), 3), ("b".to_owned(), 2)]
        );

        let other = subscriber(&t.db, "v", plan);
        let barrier = Arc::new(Barrier::new(48));
        let handles: Vec<_> = (0..48)
            .map(|i| {
                let db = t.db.clone();
                let barrier = barrier.clone();
                let c = consumption(&other, ["a", "b", "c"][i % 3], 1, Some(20));
                thread::spawn(move || {
                    barrier.wait();
                    block_on(UsageRepository::consume(&db, &c)).expect("consumed")
                })
            })
            .collect();
        let mut seen: Vec<i64> = handles
            .into_iter()
            .filter_map(|h| match h.join().expect("thread") {
                Consumed::Granted { used } => Some(used),
                Consumed::Exhausted { used } => {
                    assert_eq!(used, 20);
                    None
                }
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=20).collect::<Vec<_>>(),
            "each grant sees its own total"
        );
        let by_permission =
            UsageRepository::used_by_permission(&t.db, other.user_id, window).expect("sums");
        assert_eq!(by_permission.iter().map(|(_, n)| n).sum::<i64>(), 20);
        let events = UsageRepository::events(
            &t.db,
            other.user_id,
            &Default::default(),
            PageRequest::first(500),
        )
        .expect("events");
        assert_eq!(events.items.len(), 20);
    }

    /// A report reads counters only: a lifetime user with 4,000 events gets
    /// the right report, and the same report once their events are gone
    /// from the table (deleted behind the store's back).
    pub fn reports_read_counters_not_events(t: &TestDatabase) {
        use diesel::connection::SimpleConnection;
        use r2d2::ManageConnection;
        use tollgate_domain::access::AccessService;
        use tollgate_domain::clock::FixedClock;

        perm(&t.db, "a");
        perm(&t.db, "b");
        let plan = plan_with(&t.db, "Forever", &["a", "b"], 10_000, UsagePeriod::Lifetime);
        let sub = subscriber(&t.db, "u", plan);
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let db = t.db.clone();
                let c = Consumption {
                    window: UsagePeriod::Lifetime.window_at(now()),
                    ..consumption(&sub, if i % 4 == 0 { "b" } else { "a" }, 1, Some(10_000))
                };
                thread::spawn(move || {
                    for _ in 0..250 {
                        assert!(granted(&db, &c));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let usage: Arc<dyn UsageRepository> = Arc::new(t.db.clone());
        let access = AccessService::new(usage, Arc::new(FixedClock(now())));
        let report = access
            .report(
                sub.user_id,
                block_on(access.context_of(sub.user_id)).expect("context"),
            )
            .expect("report");
        assert_eq!(
            (report.used, report.limit, report.remaining),
            (4000, Some(10_000), Some(6000))
        );
        let expected = [("a".to_owned(), 3000), ("b".to_owned(), 1000)]
            .into_iter()
            .collect();
        assert_eq!(report.by_permission, expected);

        let url = tollgate_persistence::DatabaseUrl::parse(&t.url).expect("url");
        let manager =
            tollgate_persistence::ConnectionManager::new(url, std::time::Duration::from_secs(10));
        let mut raw = manager.connect().expect("a connection of the test");
        let delete = format!(
            "DELETE FROM usage_events WHERE user_id = {}",
            sub.user_id.get()
        );
        match &mut raw {
            tollgate_persistence::DbConnection::Sqlite(c) => c.batch_execute(&delete),
            #[cfg(feature = "mysql")]
            tollgate_persistence::DbConnection::Mysql(c) => c.batch_execute(&delete),
        }
        .expect("events deleted");
        let events = UsageRepository::events(
            &t.db,
            sub.user_id,
            &Default::default(),
            PageRequest::first(10),
        )
        .expect("events");
        assert!(events.items.is_empty(), "the events are gone");
        assert_eq!(
            access
                .report(
                    sub.user_id,
                    block_on(access.context_of(sub.user_id)).expect("context")
                )
                .expect("report"),
            report
        );
    }

    pub fn migrations_go_down_and_up_again(t: &TestDatabase) {
        perm(&t.db, "reports:read");
        let reverted = t.db.revert_all().expect("down");
        assert!(reverted >= 1);
        assert_eq!(t.db.migrate().expect("up again"), reverted);
        assert_eq!(t.db.migrate().expect("idempotent"), 0);
        // The tables are empty and usable again.
        let page = PermissionRepository::list(&t.db, PageRequest::default()).expect("list");
        assert!(page.items.is_empty());
        perm(&t.db, "reports:read");
    }

    pub fn names_compare_byte_for_byte(t: &TestDatabase) {
        PlanRepository::create(&t.db, &new_plan("Pro", &[]), now()).expect("Pro");
        PlanRepository::create(&t.db, &new_plan("pro", &[]), now()).expect("pro is another plan");
        assert!(matches!(
            PlanRepository::create(&t.db, &new_plan("Pro", &[]), now()),
            Err(PlanError::NameTaken)
        ));
        perm(&t.db, "Reports:read");
        perm(&t.db, "reports:read");
        user(&t.db, "Alice", Role::User);
        user(&t.db, "alice", Role::User);
        let found =
            UserRepository::find_by_username(&t.db, &Username::parse("alice").expect("valid"))
                .expect("query")
                .expect("found");
        assert_eq!(found.username.as_str(), "alice");
        assert!(
            UserRepository::find_by_username(&t.db, &Username::parse("ALICE").expect("valid"))
                .expect("query")
                .is_none()
        );
    }

    pub fn non_ascii_text_round_trips(t: &TestDatabase) {
        let description = "Zugriff f\u{fc}r \u{1F680} \u{65e5}\u{672c}\u{8a9e} \u{2014} '\"; DROP TABLE plans; --";
        let mut plan = new_plan("Caf\u{e9} \u{1F680}", &[]);
        plan.description = PlanDescription::parse(description).expect("valid");
        let created = PlanRepository::create(&t.db, &plan, now()).expect("created");
        let read = PlanRepository::get(&t.db, created.id).expect("read");
        assert_eq!(read.name.as_str(), "Caf\u{e9} \u{1F680}");
        assert_eq!(read.description.as_str(), description);
        assert_eq!(read.created_at, now());
    }

    pub fn permission_crud_and_conflicts(t: &TestDatabase) {
        let p = perm(&t.db, "reports:read");
        assert!(matches!(
            PermissionRepository::create(
                &t.db,
                &NewPermission {
                    name: PermissionName::parse("reports:read").expect("valid"),
                    description: PermissionDescription::parse("").expect("valid"),
                },
                now()
            ),
            Err(PermissionError::NameTaken)
        ));
        let other = perm(&t.db, "reports:write");
        let later = now() + Duration::seconds(5);
        let renamed = PermissionRepository::update(
            &t.db,
            p.id,
            &PermissionPatch {
                name: Some(PermissionName::parse("reports:view").expect("valid")),
                description: Some(PermissionDescription::parse("view").expect("valid")),
            },
            later,
        )
        .expect("updated");
        assert_eq!(renamed.name.as_str(), "reports:view");
        assert_eq!(renamed.updated_at, later);
        assert_eq!(renamed.created_at, now());
        assert!(matches!(
            PermissionRepository::update(
                &t.db,
                other.id,
                &PermissionPatch {
                    name: Some(PermissionName::parse("reports:view").expect("valid")),
                    description: None
                },
                later
            ),
            Err(PermissionError::NameTaken)
        ));
        PermissionRepository::delete(&t.db, other.id).expect("deleted");
        assert!(matches!(
            PermissionRepository::get(&t.db, other.id),
            Err(PermissionError::NotFound)
        ));
        assert!(matches!(
            PermissionRepository::delete(&t.db, other.id),
            Err(PermissionError::NotFound)
        ));
    }

    pub fn plan_keeps_permission_order_and_follows_renames(t: &TestDatabase) {
        perm(&t.db, "a");
        let b = perm(&t.db, "b");
        perm(&t.db, "c");
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &["c", "a", "b"]), now())
            .expect("created");
        assert_eq!(names(&plan.permissions), vec!["c", "a", "b"]);
        assert!(PermissionRepository::is_granted(&t.db, b.id).expect("query"));
        assert!(matches!(
            PermissionRepository::delete(&t.db, b.id),
            Err(PermissionError::InUse)
        ));
        PermissionRepository::update(
            &t.db,
            b.id,
            &PermissionPatch {
                name: Some(PermissionName::parse("bee").expect("valid")),
                description: None,
            },
            now(),
        )
        .expect("renamed");
        let read = PlanRepository::get(&t.db, plan.id).expect("read");
        assert_eq!(names(&read.permissions), vec!["c", "a", "bee"]);

        let patched = PlanRepository::update(
            &t.db,
            plan.id,
            &PlanPatch {
                permissions: Some(PermissionList::new(
                    ["a"].map(|n| PermissionName::parse(n).expect("valid")),
                )),
                usage_limit: Some(UsageLimit::UNLIMITED),
                usage_period: Some(UsagePeriod::Day),
                ..PlanPatch::default()
            },
            now(),
        )
        .expect("patched");
        assert_eq!(names(&patched.permissions), vec!["a"]);
        assert_eq!(patched.usage_limit, UsageLimit::UNLIMITED);
        assert_eq!(patched.usage_period, UsagePeriod::Day);
        assert!(!PermissionRepository::is_granted(&t.db, b.id).expect("query"));
        PermissionRepository::delete(&t.db, b.id).expect("no longer in use");
    }

    pub fn plan_with_unknown_permission_writes_nothing(t: &TestDatabase) {
        perm(&t.db, "a");
        let result = PlanRepository::create(&t.db, &new_plan("Pro", &["a", "ghost"]), now());
        assert!(matches!(result, Err(PlanError::UnknownPermission(n)) if n.as_str() == "ghost"));
        let all = PlanRepository::list(&t.db, PageRequest::default()).expect("list");
        assert!(all.items.is_empty(), "the failed create left a plan behind");
        let missing = PermissionRepository::missing(
            &t.db,
            &[
                PermissionName::parse("a").expect("valid"),
                PermissionName::parse("ghost").expect("valid"),
            ],
        )
        .expect("query");
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].as_str(), "ghost");
    }

    pub fn pagination_walks_every_item_once(t: &TestDatabase) {
        for i in 0..7 {
            perm(&t.db, &format!("p{i}"));
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let req = PageRequest::parse(Some(3), after).expect("valid");
            let page = PermissionRepository::list(&t.db, req).expect("list");
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().map(|p| p.id.get()));
            match page.next_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    pub fn users_filter_by_role_and_status(t: &TestDatabase) {
        let admin = user(&t.db, "root", Role::Admin);
        let u = user(&t.db, "bob", Role::User);
        user(&t.db, "carol", Role::User);
        UserRepository::update(
            &t.db,
            u.id,
            &UserPatch {
                status: Some(UserStatus::Suspended),
                ..UserPatch::default()
            },
            now(),
            &|_, _| Ok(()),
        )
        .expect("suspended");
        let admins = UserRepository::list(
            &t.db,
            UserFilter {
                role: Some(Role::Admin),
                status: None,
            },
            PageRequest::default(),
        )
        .expect("list");
        assert_eq!(
            admins.items.iter().map(|u| u.id).collect::<Vec<_>>(),
            vec![admin.id]
        );
        let suspended = UserRepository::list(
            &t.db,
            UserFilter {
                role: Some(Role::User),
                status: Some(UserStatus::Suspended),
            },
            PageRequest::default(),
        )
        .expect("list");
        assert_eq!(suspended.items.len(), 1);
        assert_eq!(suspended.items[0].username.as_str(), "bob");
        assert!(matches!(
            UserRepository::create(
                &t.db,
                &NewUser {
                    username: Username::parse("bob").expect("valid"),
                    role: Role::User,
                    status: UserStatus::Active
                },
                now()
            ),
            Err(UserError::UsernameTaken)
        ));
    }

    pub fn concurrent_demotions_leave_one_active_admin(t: &TestDatabase) {
        let a = user(&t.db, "admin_a", Role::Admin);
        let b = user(&t.db, "admin_b", Role::Admin);
        for _ in 0..5 {
            let barrier = Arc::new(Barrier::new(2));
            let handles: Vec<_> = [a.id, b.id]
                .into_iter()
                .map(|id| {
                    let db = t.db.clone();
                    let barrier = barrier.clone();
                    thread::spawn(move || {
                        barrier.wait();
                        let patch = UserPatch {
                            role: Some(Role::User),
                            ..UserPatch::default()
                        };
                        UserRepository::update(&db, id, &patch, now(), &|cur, n| {
                            keep_an_active_admin(cur, Some((Role::User, cur.status)), n)
                        })
                    })
                })
                .collect();
            let results: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect();
            let ok = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(ok, 1, "exactly one demotion may win: {results:?}");
            assert!(results
                .iter()
                .any(|r| matches!(r, Err(UserError::LastAdmin))));
            // Restore both admins for the next round.
            for id in [a.id, b.id] {
                UserRepository::update(
                    &t.db,
                    id,
                    &UserPatch {
                        role: Some(Role::Admin),
                        ..UserPatch::default()
                    },
                    now(),
                    &|_, _| Ok(()),
                )
                .expect("restored");
            }
        }
    }

    pub fn one_active_subscription_under_concurrent_creates(t: &TestDatabase) {
        let u = user(&t.db, "bob", Role::User);
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &[]), now()).expect("plan");
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let db = t.db.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    SubscriptionRepository::create(&db, u.id, plan.id, now())
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(SubscriptionError::AlreadyActive))));
        let all = SubscriptionRepository::list(
            &t.db,
            SubscriptionFilter::default(),
            PageRequest::default(),
        )
        .expect("list");
        assert_eq!(all.items.len(), 1);
    }

    pub fn subscription_lifecycle(t: &TestDatabase) {
        let u = user(&t.db, "bob", Role::User);
        let basic = PlanRepository::create(&t.db, &new_plan("Basic", &[]), now()).expect("plan");
        let pro = PlanRepository::create(&t.db, &new_plan("Pro", &[]), now()).expect("plan");
        assert!(matches!(
            SubscriptionRepository::create(&t.db, u.id, PlanId::from_store(9999), now()),
            Err(SubscriptionError::UnknownPlan)
        ));
        assert!(matches!(
            SubscriptionRepository::create(&t.db, UserId::from_store(9999), basic.id, now()),
            Err(SubscriptionError::UserNotFound)
        ));
        let s = SubscriptionRepository::create(&t.db, u.id, basic.id, now()).expect("created");
        assert_eq!(s.status, SubscriptionStatus::Active);
        assert_eq!(s.started_at, now());
        let moved = SubscriptionRepository::change_plan(&t.db, u.id, pro.id, now()).expect("moved");
        assert_eq!(moved.id, s.id);
        assert_eq!(moved.plan_id, pro.id);
        assert!(matches!(
            SubscriptionRepository::change_plan(&t.db, u.id, PlanId::from_store(9999), now()),
            Err(SubscriptionError::UnknownPlan)
        ));
        assert!(PlanRepository::has_active_subscriptions(&t.db, pro.id).expect("query"));
        let r = PlanRepository::delete(&t.db, pro.id);
        assert!(matches!(r, Err(PlanError::InUse)), "{r:?}");

        SubscriptionRepository::cancel(&t.db, u.id, now()).expect("canceled");
        assert!(matches!(
            SubscriptionRepository::cancel(&t.db, u.id, now()),
            Err(SubscriptionError::NoActiveSubscription)
        ));
        assert!(SubscriptionRepository::find_active(&t.db, u.id)
            .expect("query")
            .is_none());
        let canceled = SubscriptionRepository::list(
            &t.db,
            SubscriptionFilter {
                plan_id: Some(pro.id),
                status: Some(SubscriptionStatus::Canceled),
            },
            PageRequest::default(),
        )
        .expect("list");
        assert_eq!(canceled.items.len(), 1);
        assert_eq!(canceled.items[0].canceled_at, Some(now()));
        // A new subscription after a cancel is allowed.
        SubscriptionRepository::create(&t.db, u.id, basic.id, now()).expect("resubscribed");
        PlanRepository::delete(&t.db, pro.id).expect("only canceled subscriptions used it");
        assert!(matches!(
            PlanRepository::get(&t.db, pro.id),
            Err(PlanError::NotFound)
        ));
    }

    pub fn deleting_a_user_removes_keys_and_subscription(t: &TestDatabase) {
        user(&t.db, "root", Role::Admin);
        let u = user(&t.db, "bob", Role::User);
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &[]), now()).expect("plan");
        SubscriptionRepository::create(&t.db, u.id, plan.id, now()).expect("sub");
        let secret = ApiKeySecret::from_random([9; 32]);
        ApiKeyRepository::create(
            &t.db,
            &NewApiKey {
                user_id: u.id,
                name: ApiKeyName::parse("ci").expect("valid"),
                prefix: secret.shown_prefix(),
                hash: secret.hash(),
                expires_at: None,
            },
            now(),
            MAX_LIVE_KEYS,
        )
        .expect("key");
        UserRepository::delete(&t.db, u.id, &|_, _| Ok(())).expect("deleted");
        assert!(
            block_on(ApiKeyRepository::find_by_hash(&t.db, &secret.hash()))
                .expect("query")
                .is_none()
        );
        assert!(!PlanRepository::has_active_subscriptions(&t.db, plan.id).expect("query"));
        PlanRepository::delete(&t.db, plan.id).expect("plan now unused");
        assert!(matches!(
            UserRepository::delete(&t.db, u.id, &|_, _| Ok(())),
            Err(UserError::NotFound)
        ));
    }

    pub fn api_keys_are_found_by_hash_and_revoked(t: &TestDatabase) {
        let u = user(&t.db, "bob", Role::User);
        let other = user(&t.db, "eve", Role::User);
        let secret = ApiKeySecret::from_random([3; 32]);
        let new = NewApiKey {
            user_id: u.id,
            name: ApiKeyName::parse("laptop").expect("valid"),
            prefix: secret.shown_prefix(),
            hash: secret.hash(),
            expires_at: Some(now() + Duration::days(30)),
        };
        let key = ApiKeyRepository::create(&t.db, &new, now(), MAX_LIVE_KEYS).expect("created");
        assert_eq!(key.prefix, &secret.expose()[..8]);
        let KeyAndUser {
            key: found,
            user: owner,
        } = Arc::unwrap_or_clone(
            block_on(ApiKeyRepository::find_by_hash(&t.db, &secret.hash()))
                .expect("query")
                .expect("found"),
        );
        assert_eq!(found.id, key.id);
        assert_eq!(owner.id, u.id);
        assert_eq!(found.expires_at, Some(now() + Duration::days(30)));
        assert!(matches!(
            ApiKeyRepository::revoke(&t.db, other.id, key.id, now()),
            Err(tollgate_domain::api_key::ApiKeyError::NotFound)
        ));
        let epoch = || t.db.change_epoch().expect("epoch");
        let before = epoch();
        ApiKeyRepository::revoke(&t.db, u.id, key.id, now()).expect("revoked");
        assert_eq!(epoch(), before + 1, "a revocation tells every cache");
        ApiKeyRepository::revoke(&t.db, u.id, key.id, now() + Duration::hours(1))
            .expect("revoking twice is fine");
        assert_eq!(
            epoch(),
            before + 1,
            "revoking a revoked key changes nothing"
        );
        assert!(matches!(
            UserRepository::create(
                &t.db,
                &NewUser {
                    username: Username::parse("bob").expect("valid"),
                    role: Role::User,
                    status: UserStatus::Active,
                },
                now(),
            ),
            Err(UserError::UsernameTaken)
        ));
        assert_eq!(epoch(), before + 1, "a write that failed changes nothing");
        let KeyAndUser { key: found, .. } = Arc::unwrap_or_clone(
            block_on(ApiKeyRepository::find_by_hash(&t.db, &secret.hash()))
                .expect("query")
                .expect("found"),
        );
        assert_eq!(
            found.revoked_at,
            Some(now()),
            "the first revocation time stays"
        );
        let listed = ApiKeyRepository::list(&t.db, u.id, PageRequest::default()).expect("list");
        assert_eq!(listed.items.len(), 1);
    }

    /// A cold read cache missed by many threads at once: each lookup gets
    /// its own key, user and context (or none), and a key's lookup leaves its
    /// user's context cached, so the check that follows needs no connection.
    pub fn cold_cache_lookups_get_their_own_answers(t: &TestDatabase) {
        perm(&t.db, "a");
        perm(&t.db, "b");
        let limited =
            PlanRepository::create(&t.db, &new_plan("Small", &["a"]), now()).expect("plan");
        let open =
            PlanRepository::create(&t.db, &new_plan("Big", &["b", "a"]), now()).expect("plan");
        // 40 users with a key each; every third has no subscription.
        let users: Vec<_> = (0..40u8)
            .map(|i| {
                let u = user(&t.db, &format!("u{i}"), Role::User);
                let plan = match i % 3 {
                    0 => None,
                    1 => Some(limited.id),
                    _ => Some(open.id),
                };
                let sub = plan
                    .map(|p| SubscriptionRepository::create(&t.db, u.id, p, now()).expect("sub"));
                let secret = ApiKeySecret::from_random([i; 32]);
                let key = NewApiKey {
                    user_id: u.id,
                    name: ApiKeyName::parse("k").expect("valid"),
                    prefix: secret.shown_prefix(),
                    hash: secret.hash(),
                    expires_at: None,
                };
                let key = ApiKeyRepository::create(&t.db, &key, now(), MAX_LIVE_KEYS).expect("key");
                (u, sub, key, secret)
            })
            .collect();
        // A second instance on the same database: its cache starts cold.
        let cold = quiet_instance(t);
        let checkouts = || cold.pool_state().checkouts;
        let lookup = |f: &(dyn Fn(usize) + Sync)| {
            let barrier = Barrier::new(users.len() + 1);
            thread::scope(|scope| {
                for i in 0..=users.len() {
                    let (barrier, f) = (&barrier, &f);
                    scope.spawn(move || {
                        barrier.wait();
                        f(i);
                    });
                }
            });
        };
        let unknown = ApiKeySecret::from_random([200; 32]);
        lookup(&|i| {
            let Some((u, _, key, secret)) = users.get(i) else {
                let found = block_on(ApiKeyRepository::find_by_hash(&cold, &unknown.hash()))
                    .expect("query");
                assert!(found.is_none(), "an unknown key");
                return;
            };
            let found =
                block_on(ApiKeyRepository::find_by_hash(&cold, &secret.hash())).expect("query");
            let KeyAndUser {
                key: found_key,
                user: owner,
            } = &*found.expect("the key");
            assert_eq!((found_key.id, owner.id), (key.id, u.id));
        });
        let after_keys = checkouts();
        assert!(after_keys > 1, "the keys were loaded from the database");
        let contexts = |i: usize| {
            let Some((u, sub, _, _)) = users.get(i) else {
                return;
            };
            let context = block_on(UsageRepository::access_context(&cold, u.id)).expect("query");
            match (sub, context) {
                (None, None) => {}
                (Some(sub), Some(context)) => {
                    assert_eq!(context.subscription_id, sub.id);
                    assert_eq!(context.plan_id, sub.plan_id);
                    let expected: &[&str] = if sub.plan_id == limited.id {
                        &["a"]
                    } else {
                        &["b", "a"]
                    };
                    assert_eq!(names(&context.permissions), expected);
                }
                (sub, context) => {
                    panic!("user {}: subscription {sub:?}, context {context:?}", u.id)
                }
            }
        };
        lookup(&contexts);
        assert_eq!(checkouts(), after_keys, "every context came with its key");
        // A write that nothing cached refers to drops nothing.
        perm(&cold, "c");
        let after_create = checkouts();
        lookup(&contexts);
        assert_eq!(
            checkouts(),
            after_create,
            "a new permission dropped nothing"
        );
        // A change of a plan through this instance drops the contexts of its
        // subscribers: they alone are loaded again.
        PlanRepository::update(
            &cold,
            limited.id,
            &PlanPatch {
                description: Some(PlanDescription::parse("changed").expect("valid")),
                ..PlanPatch::default()
            },
            now(),
        )
        .expect("plan changed");
        let after_change = checkouts();
        lookup(&contexts);
        assert!(checkouts() > after_change, "the contexts were loaded again");
    }

    pub fn replacing_a_named_key_revokes_the_old_one(t: &TestDatabase) {
        let u = user(&t.db, "admin", Role::Admin);
        let name = ApiKeyName::parse("TOLLGATE_ADMIN_KEY").expect("valid");
        let first = ApiKeySecret::configured(&"a".repeat(40), 32).expect("valid");
        let second = ApiKeySecret::configured(&"b".repeat(40), 32).expect("valid");
        let new = |s: &ApiKeySecret| NewApiKey {
            user_id: u.id,
            name: name.clone(),
            prefix: s.shown_prefix(),
            hash: s.hash(),
            expires_at: None,
        };
        ApiKeyRepository::replace_named(&t.db, &new(&first), now()).expect("installed");
        ApiKeyRepository::replace_named(&t.db, &new(&first), now()).expect("again: no change");
        let keys = ApiKeyRepository::list(&t.db, u.id, PageRequest::default()).expect("list");
        assert_eq!(keys.items.len(), 1);
        ApiKeyRepository::replace_named(&t.db, &new(&second), now()).expect("rotated");
        let KeyAndUser { key: old, .. } = Arc::unwrap_or_clone(
            block_on(ApiKeyRepository::find_by_hash(&t.db, &first.hash()))
                .expect("query")
                .expect("found"),
        );
        assert!(old.revoked_at.is_some());
        let KeyAndUser { key: current, .. } = Arc::unwrap_or_clone(
            block_on(ApiKeyRepository::find_by_hash(&t.db, &second.hash()))
                .expect("query")
                .expect("found"),
        );
        assert!(current.revoked_at.is_none());
    }

    /// SQLite's own checkpoint only comes at 100,000 WAL frames: the
    /// database file grows because the batching writer copies the WAL into
    /// it after every 1,024th batch, and not before.
    pub fn the_writer_checkpoints_the_wal(t: &TestDatabase) {
        let path = t.url.strip_prefix("sqlite://").expect("an SQLite database");
        let size = || std::fs::metadata(path).expect("the database file").len();
        perm(&t.db, "p");
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &["p"]), now()).expect("plan");
        let sub = subscriber(&t.db, "u", plan.id);
        let before = size();
        let c = consumption(&sub, "p", 1, None);
        // One at a time: each check is a batch of its own.
        for _ in 0..1023 {
            block_on(UsageRepository::consume(&t.db, &c)).expect("ok");
        }
        assert_eq!(
            size(),
            before,
            "nothing is checkpointed before the 1,024th batch"
        );
        block_on(UsageRepository::consume(&t.db, &c)).expect("ok");
        // The checkpoint runs right after that batch is answered.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() <= before && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(size() > before, "the WAL was not copied into the database");
    }

    /// The SQLite writer threads keep ONE connection across batches (its
    /// page cache stays warm) instead of checking one out per batch, and
    /// take a fresh one after a batch failed.
    pub fn the_writer_keeps_one_connection(t: &TestDatabase) {
        perm(&t.db, "p");
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &["p"]), now()).expect("plan");
        let kept_sub = subscriber(&t.db, "kept", plan.id);
        let gone_sub = subscriber(&t.db, "gone", plan.id);
        let kept = consumption(&kept_sub, "p", 1, None);
        let gone = consumption(&gone_sub, "p", 1, None);
        // The checks go through an instance whose poller stays quiet.
        let db = quiet_instance(t);
        block_on(UsageRepository::consume(&db, &kept)).expect("first batch");
        let checkouts = || db.pool_state().checkouts;
        let before = checkouts();
        for _ in 0..50 {
            block_on(UsageRepository::consume(&db, &kept)).expect("ok");
        }
        assert_eq!(
            checkouts(),
            before,
            "50 batches on the connection already held"
        );
        // A check whose user was deleted meanwhile fails (foreign keys)...
        UserRepository::delete(&t.db, gone_sub.user_id, &|_, _| Ok(())).expect("deleted");
        let after_delete = checkouts();
        assert!(block_on(UsageRepository::consume(&db, &gone)).is_err());
        assert_eq!(
            checkouts(),
            after_delete,
            "the failed batch ran on the held one"
        );
        // ...and the next batch starts on a fresh connection.
        block_on(UsageRepository::consume(&db, &kept)).expect("ok after a failure");
        assert_eq!(checkouts(), after_delete + 1);
        block_on(UsageRepository::consume(&db, &kept)).expect("ok");
        assert_eq!(checkouts(), after_delete + 1);
    }

    /// SQLite keys usage events in bulk once 8,192 were granted: events are
    /// found alike through their keys and in the tail above `upto`, by the
    /// event list, the sums and a new window's counter; a deleted user's
    /// events take their keys along, and an id they free is read in the tail.
    pub fn events_are_found_keyed_and_in_the_tail(t: &TestDatabase) {
        let path = t.url.strip_prefix("sqlite://").expect("an SQLite database");
        perm(&t.db, "a");
        perm(&t.db, "b");
        let plan =
            PlanRepository::create(&t.db, &new_plan("Pro", &["a", "b"]), now()).expect("plan");
        let subs: Vec<_> = (0..4)
            .map(|i| subscriber(&t.db, &format!("u{i}"), plan.id))
            .collect();
        // (user, permission) of thread i: 32 threads of 260 checks, 8,320 events.
        let of = |i: usize| (i % 4, if (i / 4).is_multiple_of(2) { "a" } else { "b" });
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (db, c) = (t.db.clone(), consumption(&subs[of(i).0], of(i).1, 1, None));
                thread::spawn(move || {
                    for _ in 0..260 {
                        block_on(UsageRepository::consume(&db, &c)).expect("consumed");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        // The pass writes 1,024 keys after each batch: 12 batches finish it,
        // and their events stay in the tail.
        for _ in 0..12 {
            block_on(UsageRepository::consume(
                &t.db,
                &consumption(&subs[0], "a", 1, None),
            ))
            .expect("ok");
        }
        let upto = sqlite_number(path, "SELECT upto AS n FROM usage_events_keyed");
        assert!(upto >= 8192, "keyed up to {upto}");
        assert_eq!(
            sqlite_number(path, "SELECT count(*) AS n FROM usage_event_keys"),
            upto,
            "every event up to upto has its key"
        );
        assert!(sqlite_number(path, "SELECT max(id) AS n FROM usage_events") > upto);
        let window = UsagePeriod::Month.window_at(now());
        for (u, sub) in subs.iter().enumerate() {
            let expected = |p: &str| {
                let threads = (0..32).filter(|&i| of(i) == (u, p)).count() as i64;
                threads * 260 + if (u, p) == (0, "a") { 12 } else { 0 }
            };
            let total = expected("a") + expected("b");
            let ids = all_event_ids(&t.db, sub.user_id, &Default::default());
            assert_eq!(ids.len() as i64, total, "user {u}'s events");
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "in id order, once each"
            );
            let only_b = tollgate_domain::usage::EventFilter {
                permission: Some("b".into()),
                ..Default::default()
            };
            assert_eq!(
                all_event_ids(&t.db, sub.user_id, &only_b).len() as i64,
                expected("b")
            );
            assert_eq!(
                UsageRepository::used_by_permission(&t.db, sub.user_id, window).expect("sums"),
                vec![
                    ("a".to_owned(), expected("a")),
                    ("b".to_owned(), expected("b"))
                ]
            );
            // A day window's new counter starts from the same events.
            let mut day = consumption(sub, "a", 1, Some(total + 1));
            day.window = UsagePeriod::Day.window_at(now());
            assert_eq!(
                block_on(UsageRepository::consume(&t.db, &day)).expect("ok"),
                Consumed::Granted { used: total + 1 }
            );
        }
        // Key everything by hand (a finished pass), then delete the user who
        // owns the newest events: their keys go, upto comes down to the
        // newest event left, and the id freed for the next event is in the tail.
        key_all_by_hand(path);
        block_on(UsageRepository::consume(
            &t.db,
            &consumption(&subs[3], "a", 1, None),
        ))
        .expect("ok");
        key_all_by_hand(path);
        let newest = sqlite_number(path, "SELECT max(id) AS n FROM usage_events");
        let generation = sqlite_number(path, "SELECT generation AS n FROM usage_events_keyed");
        UserRepository::delete(&t.db, subs[3].user_id, &|_, _| Ok(())).expect("deleted");
        let left = sqlite_number(path, "SELECT max(id) AS n FROM usage_events");
        assert!(left < newest);
        assert_eq!(
            sqlite_number(path, "SELECT upto AS n FROM usage_events_keyed"),
            left
        );
        assert!(sqlite_number(path, "SELECT generation AS n FROM usage_events_keyed") > generation);
        assert_eq!(
            sqlite_number(
                path,
                &format!(
                    "SELECT count(*) AS n FROM usage_event_keys WHERE user_id = {}",
                    subs[3].user_id.get()
                )
            ),
            0
        );
        block_on(UsageRepository::consume(
            &t.db,
            &consumption(&subs[1], "a", 1, None),
        ))
        .expect("ok");
        let ids = all_event_ids(&t.db, subs[1].user_id, &Default::default());
        assert_eq!(
            ids.last(),
            Some(&(left + 1)),
            "the freed id, read in the tail"
        );
    }

    /// Every event id of the user, page by page.
    fn all_event_ids(
        db: &Database,
        user: UserId,
        filter: &tollgate_domain::usage::EventFilter,
    ) -> Vec<i64> {
        let mut ids = Vec::new();
        let mut page = PageRequest::first(500);
        loop {
            let got = UsageRepository::events(db, user, filter, page).expect("events");
            ids.extend(got.items.iter().map(|e| e.id));
            match got.next_after {
                Some(after) => page = PageRequest::parse(Some(500), Some(after)).expect("page"),
                None => return ids,
            }
        }
    }

    #[derive(diesel::QueryableByName)]
    struct Number {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    /// One number read straight from the SQLite file.
    fn sqlite_number(path: &str, sql: &str) -> i64 {
        use diesel::{Connection, RunQueryDsl};
        let mut c = diesel::SqliteConnection::establish(path).expect("open");
        diesel::sql_query(sql)
            .get_result::<Number>(&mut c)
            .expect(sql)
            .n
    }

    /// What a finished keying pass leaves: every event keyed, `upto` the newest.
    fn key_all_by_hand(path: &str) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut c = diesel::SqliteConnection::establish(path).expect("open");
        c.batch_execute(
            "PRAGMA busy_timeout = 10000; \
             INSERT OR IGNORE INTO usage_event_keys SELECT user_id, at, id FROM usage_events; \
             UPDATE usage_events_keyed SET upto = (SELECT max(id) FROM usage_events)",
        )
        .expect("keyed by hand");
    }

    /// The SQLite writer runs at nice -5 where the process may lower a nice
    /// value (root, `CAP_SYS_NICE`), and at the default where it may not.
    #[cfg(target_os = "linux")]
    pub fn the_writer_runs_at_a_raised_priority(t: &TestDatabase) {
        perm(&t.db, "p");
        let plan = PlanRepository::create(&t.db, &new_plan("Pro", &["p"]), now()).expect("plan");
        let sub = subscriber(&t.db, "u", plan.id);
        // Answered, so the writer thread has started and set its priority.
        block_on(UsageRepository::consume(
            &t.db,
            &consumption(&sub, "p", 1, None),
        ))
        .expect("ok");
        let may_raise = thread::spawn(|| {
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), -5).is_ok()
        })
        .join()
        .expect("the probe thread");
        // Tests run in parallel: other databases' writers are listed too.
        let nices = writer_nice_values();
        assert!(!nices.is_empty(), "no thread named tollgate-writer");
        if may_raise {
            assert!(nices.contains(&-5), "no writer at nice -5: {nices:?}");
        } else {
            assert!(nices.iter().all(|n| *n == 0), "{nices:?}");
        }
    }

    /// The nice value of each thread named `tollgate-writer` (field 19 of
    /// its `/proc` stat line).
    #[cfg(target_os = "linux")]
    fn writer_nice_values() -> Vec<i64> {
        std::fs::read_dir("/proc/self/task")
            .expect("the process's threads")
            .filter_map(|entry| {
                let dir = entry.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                if comm.trim() != "tollgate-writer" {
                    return None;
                }
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                let (_, after_name) = stat.rsplit_once(')')?;
                after_name.split_whitespace().nth(16)?.parse().ok()
            })
            .collect()
    }
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::cases::$case(&tollgate_persistence::testing::TestDatabase::sqlite());
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod mariadb {
            $(
                #[test]
                fn $case() {
                    super::cases::$case(&tollgate_persistence::testing::TestDatabase::mysql());
                }
            )*
        }
    };
}

on_both_backends!(
    migrations_go_down_and_up_again,
    names_compare_byte_for_byte,
    non_ascii_text_round_trips,
    permission_crud_and_conflicts,
    plan_keeps_permission_order_and_follows_renames,
    plan_with_unknown_permission_writes_nothing,
    pagination_walks_every_item_once,
    users_filter_by_role_and_status,
    concurrent_demotions_leave_one_active_admin,
    one_active_subscription_under_concurrent_creates,
    subscription_lifecycle,
    deleting_a_user_removes_keys_and_subscription,
    api_keys_are_found_by_hash_and_revoked,
    replacing_a_named_key_revokes_the_old_one,
    cold_cache_lookups_get_their_own_answers,
    concurrent_consumption_is_exact,
    new_counters_start_from_the_window_events,
    new_counters_of_one_batch_start_from_their_own_events,
    a_new_subscription_keeps_the_windows_usage,
    period_kind_changes_count_the_new_window,
    permissions_sum_against_the_plan_limit,
    reports_read_counters_not_events,
);

#[test]
fn sqlite_writer_checkpoints_the_wal() {
    cases::the_writer_checkpoints_the_wal(&TestDatabase::sqlite());
}

#[test]
fn sqlite_events_are_found_keyed_and_in_the_tail() {
    cases::events_are_found_keyed_and_in_the_tail(&TestDatabase::sqlite());
}

#[test]
fn sqlite_writer_keeps_one_connection() {
    cases::the_writer_keeps_one_connection(&TestDatabase::sqlite());
}

#[cfg(target_os = "linux")]
#[test]
fn sqlite_writer_runs_at_a_raised_priority() {
    cases::the_writer_runs_at_a_raised_priority(&TestDatabase::sqlite());
}
