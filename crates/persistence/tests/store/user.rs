//! The user port on both backends: filters, the last admin, deleting a user.

mod cases {
    use crate::*;

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
}

on_both_backends!(
    users_filter_by_role_and_status,
    concurrent_demotions_leave_one_active_admin,
    deleting_a_user_removes_keys_and_subscription,
);
