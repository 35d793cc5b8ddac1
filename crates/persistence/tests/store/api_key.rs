//! The API key port on both backends.

mod cases {
    use crate::*;

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
}

on_both_backends!(
    api_keys_are_found_by_hash_and_revoked,
    replacing_a_named_key_revokes_the_old_one,
);
