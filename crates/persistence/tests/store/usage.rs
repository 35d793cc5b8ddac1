//! The hot path on both backends: the read cache's loads, exact consumption, counters and reports.

mod cases {
    use crate::*;

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
            .map(|(_, r)| r.clone())
            .collect();
        let mut seen: Vec<i64> = hot_results
            .iter()
            .filter_map(|r| match r {
                Consumed::Granted { used, .. } => Some(*used),
                Consumed::Exhausted { .. } | Consumed::RateLimited { .. } => None,
                Consumed::Replayed(_) | Consumed::KeyReused => panic!("no idempotency key"),
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=30).collect::<Vec<_>>(),
            "each grant sees its own total"
        );
        assert!(hot_results.iter().all(
            |r| !matches!(r, Consumed::Exhausted { used, permission_used: None } if *used != 30)
        ));
        let window = UsagePeriod::Month.window_at(now());
        assert_eq!(used_in(&t.db, hot_sub.user_id, window), 30);
        assert_eq!(used_in(&t.db, cold_sub.user_id, window), 16);
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
            Consumed::Granted {
                used: 7,
                permission_used: None
            }
        );
        // Same events, seen through a day window: a fresh counter seeded with 7.
        let mut day = consumption(&sub, "p", 4, Some(10));
        day.window = UsagePeriod::Day.window_at(now());
        assert_eq!(
            block_on(UsageRepository::consume(&t.db, &day)).expect("ok"),
            Consumed::Exhausted {
                used: 7,
                permission_used: None
            }
        );
        day.cost = Cost::parse(Some(3)).expect("valid");
        assert_eq!(
            block_on(UsageRepository::consume(&t.db, &day)).expect("ok"),
            Consumed::Granted {
                used: 10,
                permission_used: None
            }
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
                assert_eq!(
                    first,
                    Consumed::Granted {
                        used: i + 2,
                        permission_used: None
                    },
                    "user {i}"
                );
                assert_eq!(
                    second,
                    Consumed::Exhausted {
                        used: i + 2,
                        permission_used: None
                    },
                    "user {i}"
                );
            }
        });
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
        assert_eq!(used_in(&t.db, again.user_id, window), 3);
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
                Consumed::Granted {
                    used: 4,
                    permission_used: None
                },
                Consumed::Granted {
                    used: 5,
                    permission_used: None
                },
                Consumed::Exhausted {
                    used: 5,
                    permission_used: None
                }
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
            Consumed::Exhausted {
                used: 5,
                permission_used: None
            }
        );
        assert_eq!(
            block_on(UsageRepository::consume(
                &t.db,
                &consumption(&again, "p", 2, Some(7))
            ))
            .expect("ok"),
            Consumed::Granted {
                used: 7,
                permission_used: None
            }
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
        assert_eq!(used_in(&t.db, u.id, day(later)), 4);
        assert_eq!(
            consumed(
                &t.db,
                &check_at(&sub, "p", 1, Some(6), UsagePeriod::Day, later)
            ),
            Consumed::Granted {
                used: 5,
                permission_used: None
            }
        );
        // The next day starts from zero.
        let next = at("2026-11-02T10:00:00Z");
        assert_eq!(
            consumed(
                &t.db,
                &check_at(&sub, "p", 6, Some(6), UsagePeriod::Day, next)
            ),
            Consumed::Granted {
                used: 6,
                permission_used: None
            }
        );
        // Back to monthly: the month counts all 11, not the 1st's day counter.
        SubscriptionRepository::change_plan(&t.db, u.id, monthly, next).expect("to monthly");
        assert_eq!(used_in(&t.db, u.id, month(next)), 11);
        assert_eq!(
            consumed(
                &t.db,
                &check_at(&sub, "p", 89, Some(100), UsagePeriod::Month, next)
            ),
            Consumed::Granted {
                used: 100,
                permission_used: None
            }
        );
        assert_eq!(
            consumed(
                &t.db,
                &check_at(&sub, "p", 1, Some(100), UsagePeriod::Month, next)
            ),
            Consumed::Exhausted {
                used: 100,
                permission_used: None
            }
        );

        // A plan's own period changed by a PATCH: its subscribers' counters
        // follow at once (today's 95 of the 2nd, then the month's 100).
        let patch = |period| PlanPatch {
            usage_period: Some(period),
            ..Default::default()
        };
        PlanRepository::update(&t.db, monthly, &patch(UsagePeriod::Day), next).expect("patched");
        assert_eq!(used_in(&t.db, u.id, day(next)), 95);
        PlanRepository::update(&t.db, monthly, &patch(UsagePeriod::Month), next).expect("patched");
        assert_eq!(used_in(&t.db, u.id, month(next)), 100);
        PlanRepository::update(&t.db, monthly, &patch(UsagePeriod::Lifetime), next)
            .expect("patched");
        let lifetime = UsagePeriod::Lifetime.window_at(next);
        assert_eq!(used_in(&t.db, u.id, lifetime), 100);
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
        assert_eq!(
            consume("a", 3),
            Consumed::Granted {
                used: 3,
                permission_used: None
            }
        );
        assert_eq!(
            consume("b", 3),
            Consumed::Exhausted {
                used: 3,
                permission_used: None
            }
        );
        assert_eq!(
            consume("b", 2),
            Consumed::Granted {
                used: 5,
                permission_used: None
            }
        );
        assert_eq!(
            consume("a", 1),
            Consumed::Exhausted {
                used: 5,
                permission_used: None
            }
        );
        let window = UsagePeriod::Month.window_at(now());
        assert_eq!(used_in(&t.db, sub.user_id, window), 5);
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
                Consumed::Granted { used, .. } => Some(used),
                Consumed::Exhausted { used, .. } => {
                    assert_eq!(used, 20);
                    None
                }
                Consumed::RateLimited { .. } => panic!("no rate limit"),
                Consumed::Replayed(_) | Consumed::KeyReused => panic!("no idempotency key"),
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

    /// Events older than the retention go in the sweep; the history of
    /// their range is unchanged and a window's new counter there still
    /// starts from their units (the roll-ups).
    pub fn retention_keeps_history_and_new_counters_exact(t: &TestDatabase) {
        use tollgate_domain::access::AccessService;
        use tollgate_domain::clock::FixedClock;
        use tollgate_domain::history::{Bucket, Whose};

        perm(&t.db, "a");
        perm(&t.db, "b");
        let plan = plan_with(&t.db, "Kept", &["a", "b"], 1_000, UsagePeriod::Month);
        let sub = subscriber(&t.db, "u", plan);
        let old = now() - Duration::days(40);
        for i in 0..5 {
            let c = Consumption {
                at: old + Duration::minutes(i * 30),
                window: UsagePeriod::Month.window_at(old),
                ..consumption(&sub, if i % 2 == 0 { "a" } else { "b" }, 2, Some(1_000))
            };
            assert!(granted(&t.db, &c));
        }
        for _ in 0..3 {
            assert!(granted(&t.db, &consumption(&sub, "a", 1, Some(1_000))));
        }
        let usage: Arc<dyn UsageRepository> = Arc::new(t.db.clone());
        let access = AccessService::new(usage, Arc::new(FixedClock(now())));
        let histories = |access: &AccessService| {
            [Bucket::Hour, Bucket::Day, Bucket::Month].map(|bucket| {
                let query = access
                    .history_query(bucket, Some(old - Duration::hours(1)), Some(now()), None)
                    .expect("query");
                access
                    .history(&query, Whose::User(sub.user_id))
                    .expect("history")
            })
        };
        let before = histories(&access);
        let used: i64 = before[1].items.iter().map(|i| i.used).sum();
        assert_eq!(used, 13);

        let kept = Database::open(
            &tollgate_persistence::DatabaseUrl::parse(&t.url).expect("url"),
            &tollgate_persistence::PoolOptions {
                event_retention_days: Some(30),
                ..TestDatabase::pool_options()
            },
        );
        assert_eq!(kept.sweep(now()).expect("swept").events, 5);
        assert_eq!(kept.sweep(now()).expect("swept").events, 0);
        let left = UsageRepository::events(
            &t.db,
            sub.user_id,
            &Default::default(),
            PageRequest::first(50),
        )
        .expect("events");
        assert_eq!(left.items.len(), 3, "only the recent events are left");
        assert_eq!(histories(&access), before);

        // The old day's window, first checked now: its counter starts from
        // the 10 units its roll-ups hold (five events of 2, 12:00 to 14:00).
        let mut day = Consumption {
            at: old,
            window: UsagePeriod::Day.window_at(old),
            period: UsagePeriod::Day,
            ..consumption(&sub, "a", 5, Some(10))
        };
        assert_eq!(
            block_on(UsageRepository::consume(&t.db, &day)).expect("ok"),
            Consumed::Exhausted {
                used: 10,
                permission_used: None
            }
        );
        day.cost = Cost::parse(Some(2)).expect("valid");
        day.limit = Some(12);
        assert_eq!(
            block_on(UsageRepository::consume(&t.db, &day)).expect("ok"),
            Consumed::Granted {
                used: 12,
                permission_used: None
            }
        );
    }

    /// A purge of old events running while 64 threads check one hot
    /// subscription: the quota stays exact, every old event goes, and the
    /// old user's history keeps their units.
    pub fn a_purge_during_concurrent_checks_leaves_them_exact(t: &TestDatabase) {
        use tollgate_domain::access::AccessService;
        use tollgate_domain::clock::FixedClock;
        use tollgate_domain::history::{Bucket, Whose};

        perm(&t.db, "p");
        let plan = plan_with(&t.db, "Purged", &["p"], 150, UsagePeriod::Month);
        let old_sub = subscriber(&t.db, "old", plan);
        let hot_sub = subscriber(&t.db, "hot", plan);
        let old = now() - Duration::days(40);
        let seeders: Vec<_> = (0..16)
            .map(|_| {
                let db = t.db.clone();
                let c = Consumption {
                    at: old,
                    window: UsagePeriod::Month.window_at(old),
                    ..consumption(&old_sub, "p", 1, None)
                };
                thread::spawn(move || {
                    for _ in 0..200 {
                        assert!(granted(&db, &c));
                    }
                })
            })
            .collect();
        for h in seeders {
            h.join().expect("seeder");
        }
        let usage: Arc<dyn UsageRepository> = Arc::new(t.db.clone());
        let access = AccessService::new(usage, Arc::new(FixedClock(now())));
        let query = access
            .history_query(Bucket::Day, Some(old), None, None)
            .expect("query");
        let before = access
            .history(&query, Whose::User(old_sub.user_id))
            .expect("history");
        assert_eq!(before.items.iter().map(|i| i.used).sum::<i64>(), 3200);

        let kept = Database::open(
            &tollgate_persistence::DatabaseUrl::parse(&t.url).expect("url"),
            &tollgate_persistence::PoolOptions {
                event_retention_days: Some(30),
                ..TestDatabase::pool_options()
            },
        );
        let barrier = Arc::new(Barrier::new(65));
        let purge = {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut purged = 0;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while purged < 3200 && std::time::Instant::now() < deadline {
                    purged += kept.sweep(now()).expect("swept").events;
                }
                purged
            })
        };
        let checkers: Vec<_> = (0..64)
            .map(|_| {
                let db = t.db.clone();
                let barrier = barrier.clone();
                let c = consumption(&hot_sub, "p", 1, Some(150));
                thread::spawn(move || {
                    barrier.wait();
                    (0..5).filter(|_| granted(&db, &c)).count()
                })
            })
            .collect();
        let granted_in_all: usize = checkers
            .into_iter()
            .map(|h| h.join().expect("checker"))
            .sum();
        assert_eq!(purge.join().expect("purge"), 3200);
        assert_eq!(granted_in_all, 150);
        let window = UsagePeriod::Month.window_at(now());
        assert_eq!(used_in(&t.db, hot_sub.user_id, window), 150);
        assert_eq!(
            all_event_ids(&t.db, hot_sub.user_id, &Default::default()).len(),
            150
        );
        assert!(all_event_ids(&t.db, old_sub.user_id, &Default::default()).is_empty());
        assert_eq!(
            access
                .history(&query, Whose::User(old_sub.user_id))
                .expect("history"),
            before
        );
    }
}

on_both_backends!(
    a_purge_during_concurrent_checks_leaves_them_exact,
    retention_keeps_history_and_new_counters_exact,
    cold_cache_lookups_get_their_own_answers,
    concurrent_consumption_is_exact,
    new_counters_start_from_the_window_events,
    new_counters_of_one_batch_start_from_their_own_events,
    a_new_subscription_keeps_the_windows_usage,
    period_kind_changes_count_the_new_window,
    permissions_sum_against_the_plan_limit,
    reports_read_counters_not_events,
);
