//! Typed ids: positive 64-bit integers.

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(i64);

        impl $name {
            /// Accepts only positive ids.
            pub fn new(raw: i64) -> Option<Self> {
                (raw > 0).then_some(Self(raw))
            }

            /// Wraps an id that a store handed out (always positive).
            pub fn from_store(raw: i64) -> Self {
                Self(raw)
            }

            /// The raw id, as stored and shown to clients.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Id of a permission.
    PermissionId
);
id_type!(
    /// Id of a plan.
    PlanId
);
id_type!(
    /// Id of a user.
    UserId
);
id_type!(
    /// Id of an API key.
    ApiKeyId
);
id_type!(
    /// Id of a subscription.
    SubscriptionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive() {
        assert!(PlanId::new(0).is_none());
        assert!(PlanId::new(-7).is_none());
        assert_eq!(PlanId::new(42).map(PlanId::get), Some(42));
    }
}
