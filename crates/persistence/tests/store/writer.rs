//! The SQLite batching writer: checkpoints, its one connection, the bulk keying of events, its priority.

mod cases {
    use crate::*;

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
                Consumed::Granted {
                    used: total + 1,
                    permission_used: None
                }
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
}

#[test]
fn sqlite_writer_checkpoints_the_wal() {
    cases::the_writer_checkpoints_the_wal(&tollgate_persistence::testing::TestDatabase::sqlite());
}

#[test]
fn sqlite_writer_keeps_one_connection() {
    cases::the_writer_keeps_one_connection(&tollgate_persistence::testing::TestDatabase::sqlite());
}

#[test]
fn sqlite_events_are_found_keyed_and_in_the_tail() {
    cases::events_are_found_keyed_and_in_the_tail(
        &tollgate_persistence::testing::TestDatabase::sqlite(),
    );
}

#[cfg(target_os = "linux")]
#[test]
fn sqlite_writer_runs_at_a_raised_priority() {
    cases::the_writer_runs_at_a_raised_priority(
        &tollgate_persistence::testing::TestDatabase::sqlite(),
    );
}
