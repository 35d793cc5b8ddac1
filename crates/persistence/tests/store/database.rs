//! Migrations, text and pagination, on both backends.

mod cases {
    use crate::*;

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
}

on_both_backends!(
    migrations_go_down_and_up_again,
    names_compare_byte_for_byte,
    non_ascii_text_round_trips,
    pagination_walks_every_item_once,
);
