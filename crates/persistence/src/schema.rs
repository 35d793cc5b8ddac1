//! Diesel's view of the tables in `migrations/`. Timestamps are BIGINT
//! microseconds since the Unix epoch, the same on both backends.

diesel::table! {
    permissions (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    plans (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        usage_limit -> Nullable<BigInt>,
        usage_period -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        rate_units -> Nullable<BigInt>,
        rate_per_seconds -> Nullable<BigInt>,
    }
}

diesel::table! {
    plan_permissions (plan_id, permission_id) {
        plan_id -> BigInt,
        permission_id -> BigInt,
        position -> Integer,
        limit_units -> Nullable<BigInt>,
        limit_period -> Nullable<Text>,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        role -> Text,
        status -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        user_id -> BigInt,
        name -> Text,
        prefix -> Text,
        key_hash -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> BigInt,
        user_id -> BigInt,
        plan_id -> BigInt,
        status -> Text,
        active_user_id -> Nullable<BigInt>,
        started_at -> BigInt,
        canceled_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    usage_counters (user_id, period_start, permission) {
        user_id -> BigInt,
        period_start -> BigInt,
        permission -> Text,
        used -> BigInt,
    }
}

diesel::table! {
    usage_hours (user_id, hour_start, permission) {
        user_id -> BigInt,
        hour_start -> BigInt,
        permission -> Text,
        used -> BigInt,
    }
}

diesel::table! {
    usage_events (id) {
        id -> BigInt,
        user_id -> BigInt,
        subscription_id -> BigInt,
        permission -> Text,
        cost -> BigInt,
        at -> BigInt,
    }
}

// SQLite only: the keys of usage events, copied in bulk by the batching
// writer (migrations/sqlite/..._event_keys_in_bulk).
diesel::table! {
    usage_event_keys (user_id, at, id) {
        user_id -> BigInt,
        at -> BigInt,
        id -> BigInt,
    }
}

diesel::table! {
    usage_events_keyed (id) {
        id -> Integer,
        upto -> BigInt,
        generation -> BigInt,
    }
}

diesel::joinable!(plan_permissions -> plans (plan_id));
diesel::joinable!(plan_permissions -> permissions (permission_id));
diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(subscriptions -> plans (plan_id));
diesel::joinable!(subscriptions -> users (user_id));
diesel::joinable!(usage_counters -> users (user_id));

diesel::table! {
    permission_counters (user_id, permission, period, period_start) {
        user_id -> BigInt,
        permission -> Text,
        period -> Text,
        period_start -> BigInt,
        used -> BigInt,
    }
}

diesel::table! {
    rate_buckets (user_id) {
        user_id -> BigInt,
        tokens -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    idempotency_keys (user_id, idem_key) {
        user_id -> BigInt,
        idem_key -> Text,
        permission -> Text,
        cost -> BigInt,
        created_at -> BigInt,
        response -> Nullable<Text>,
    }
}

diesel::table! {
    reservations (id) {
        id -> Text,
        user_id -> BigInt,
        subscription_id -> BigInt,
        permission -> Text,
        reserved -> BigInt,
        committed -> Nullable<BigInt>,
        status -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        period_start -> Nullable<BigInt>,
        own_period -> Nullable<Text>,
        own_start -> Nullable<BigInt>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    idempotency_keys,
    reservations,
    permission_counters,
    rate_buckets,
    permissions,
    plans,
    plan_permissions,
    users,
    api_keys,
    subscriptions,
    usage_counters,
    usage_events,
    usage_event_keys,
    usage_events_keyed,
);

diesel::table! {
    change_epoch (id) {
        id -> Integer,
        epoch -> BigInt,
    }
}
