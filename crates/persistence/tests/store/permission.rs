//! The permission port on both backends.

mod cases {
    use crate::*;

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
}

on_both_backends!(permission_crud_and_conflicts,);
