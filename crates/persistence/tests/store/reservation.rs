//! Reservations in the store: a hold made in the last second of a day and
//! committed after midnight counts in that day.

mod cases {
    use tollgate_domain::reservation::{
        NewHold, ReservationId, ReservationRepository, ReservationStatus, Settle, SettleFailure,
        TtlSeconds,
    };

    use crate::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    pub fn a_hold_of_the_last_second_of_a_day_committed_after_midnight_counts_in_that_day(
        t: &TestDatabase,
    ) {
        perm(&t.db, "a");
        let plan = PlanRepository::create(
            &t.db,
            &NewPlan {
                usage_period: UsagePeriod::Day,
                ..new_plan("Daily", &["a"])
            },
            now(),
        )
        .expect("plan");
        let u = user(&t.db, "late", Role::User);
        let sub = SubscriptionRepository::create(&t.db, u.id, plan.id, now()).expect("sub");
        let last_second = at(2026, 12, 31, 23, 59, 59);
        let day = UsagePeriod::Day.window_at(last_second);
        let id = ReservationId::new(last_second, [7; 16]);
        let k = Consumption {
            period: UsagePeriod::Day,
            window: day,
            at: last_second,
            hold: Some(NewHold {
                id: id.clone(),
                ttl: TtlSeconds::parse(Some(120)).expect("ttl"),
            }),
            ..consumption(&sub, "a", 10, Some(100))
        };
        let held = block_on(UsageRepository::consume(&t.db, &k)).expect("consumed");
        assert!(
            matches!(held, Consumed::Granted { used: 10, .. }),
            "{held:?}"
        );
        assert_eq!(
            UsageRepository::used_and_held(&t.db, u.id, day).expect("held"),
            (vec![("a".to_owned(), 10)], vec![("a".to_owned(), 10)])
        );
        let after_midnight = at(2027, 1, 1, 0, 0, 30);
        let intruder = user(&t.db, "intruder", Role::User);
        let theirs = block_on(ReservationRepository::settle(
            &t.db,
            &id,
            Some(intruder.id),
            Settle::Release,
            after_midnight,
        ));
        assert!(matches!(theirs, Err(SettleFailure::NotFound)), "{theirs:?}");
        let r = block_on(ReservationRepository::settle(
            &t.db,
            &id,
            Some(u.id),
            Settle::Commit(4),
            after_midnight,
        ))
        .expect("committed");
        assert_eq!(
            r.reservation.hold.status,
            ReservationStatus::Committed { units: 4 }
        );
        let next_day = UsagePeriod::Day.window_at(after_midnight);
        let used = |w| UsageRepository::used_by_permission(&t.db, u.id, w).expect("used");
        assert_eq!(used(day), vec![("a".to_owned(), 4)], "kept in Dec 31");
        assert!(used(next_day).is_empty(), "nothing in Jan 1");
        assert!(UsageRepository::used_and_held(&t.db, u.id, day)
            .expect("held")
            .1
            .is_empty());
        let events =
            UsageRepository::events(&t.db, u.id, &Default::default(), PageRequest::first(100))
                .expect("events");
        assert_eq!(events.items.len(), 1);
        assert_eq!((events.items[0].cost, events.items[0].at), (4, last_second));
        // Settled: a second commit of another amount changes nothing.
        assert!(block_on(ReservationRepository::settle(
            &t.db,
            &id,
            None,
            Settle::Commit(5),
            after_midnight
        ))
        .is_err());
        assert_eq!(used(day), vec![("a".to_owned(), 4)]);
    }

    pub fn the_sweep_releases_a_hold_at_its_expiry_and_not_before(t: &TestDatabase) {
        perm(&t.db, "a");
        let plan = PlanRepository::create(&t.db, &new_plan("Sweep", &["a"]), now()).expect("plan");
        let u = user(&t.db, "sweep", Role::User);
        let sub = SubscriptionRepository::create(&t.db, u.id, plan.id, now()).expect("sub");
        let id = ReservationId::new(now(), [9; 16]);
        let k = Consumption {
            hold: Some(NewHold {
                id: id.clone(),
                ttl: TtlSeconds::parse(Some(60)).expect("ttl"),
            }),
            ..consumption(&sub, "a", 7, Some(100))
        };
        block_on(UsageRepository::consume(&t.db, &k)).expect("consumed");
        let early = t.db.sweep(now() + Duration::seconds(59)).expect("sweep");
        assert_eq!(early.released, 0);
        let due = t.db.sweep(now() + Duration::seconds(60)).expect("sweep");
        assert_eq!(due.released, 1);
        let r = ReservationRepository::reservation(&t.db, &id)
            .expect("read")
            .expect("found");
        assert_eq!(r.hold.status, ReservationStatus::Released);
        // Kept 24 hours after its expiry, then gone.
        let kept = t.db.sweep(now() + Duration::hours(24)).expect("sweep");
        assert_eq!(kept.settled, 0);
        let gone =
            t.db.sweep(now() + Duration::hours(24) + Duration::seconds(61))
                .expect("sweep");
        assert_eq!(gone.settled, 1);
        assert!(ReservationRepository::reservation(&t.db, &id)
            .expect("read")
            .is_none());
        assert!(UsageRepository::used_by_permission(&t.db, u.id, k.window)
            .expect("used")
            .iter()
            .all(|(_, used)| *used == 0));
    }
}

on_both_backends!(
    a_hold_of_the_last_second_of_a_day_committed_after_midnight_counts_in_that_day,
    the_sweep_releases_a_hold_at_its_expiry_and_not_before,
);
