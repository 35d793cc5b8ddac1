//! The plan port on both backends.

mod cases {
    use crate::*;

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
}

on_both_backends!(
    plan_keeps_permission_order_and_follows_renames,
    plan_with_unknown_permission_writes_nothing,
);
