//! The subscription port on both backends.

mod cases {
    use crate::*;

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
}

on_both_backends!(
    one_active_subscription_under_concurrent_creates,
    subscription_lifecycle,
);
