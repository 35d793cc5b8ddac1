//! One suite, run on SQLite always and on MariaDB with the `mysql` feature.
//! A module per noun, as in the crate; a case of `on_both_backends!` runs as
//! `<module>::sqlite::<case>` and `<module>::mariadb::<case>`.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::{Arc, Barrier};
use std::thread;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures_executor::block_on;
use tollgate_domain::api_key::{
    ApiKeyName, ApiKeyRepository, ApiKeySecret, KeyAndUser, NewApiKey, MAX_LIVE_KEYS,
};
use tollgate_domain::period::UsagePeriod;
use tollgate_domain::permission::{
    NewPermission, PermissionDescription, PermissionError, PermissionName, PermissionPatch,
    PermissionRepository,
};
use tollgate_domain::plan::{
    NewPlan, PermissionList, PlanDescription, PlanError, PlanName, PlanPatch, PlanRepository,
    UsageLimit,
};
use tollgate_domain::subscription::{
    SubscriptionError, SubscriptionFilter, SubscriptionRepository, SubscriptionStatus,
};
use tollgate_domain::user::{
    keep_an_active_admin, NewUser, Role, User, UserError, UserFilter, UserPatch, UserRepository,
    UserStatus, Username,
};
use tollgate_domain::{PageRequest, PlanId, UserId};
use tollgate_persistence::testing::TestDatabase;
use tollgate_persistence::Database;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("valid")
}

fn perm(db: &Database, name: &str) -> tollgate_domain::permission::Permission {
    PermissionRepository::create(
        db,
        &NewPermission {
            name: PermissionName::parse(name).expect("valid"),
            description: PermissionDescription::parse("").expect("valid"),
        },
        now(),
    )
    .expect("permission created")
}

fn new_plan(name: &str, perms: &[&str]) -> NewPlan {
    NewPlan {
        name: PlanName::parse(name).expect("valid"),
        description: PlanDescription::parse("").expect("valid"),
        permissions: PermissionList::new(
            perms
                .iter()
                .map(|p| PermissionName::parse(*p).expect("valid")),
        ),
        usage_limit: UsageLimit::parse(Some(100)).expect("valid"),
        usage_period: UsagePeriod::Month,
        permission_limits: Default::default(),
        rate_limit: None,
    }
}

fn user(db: &Database, name: &str, role: Role) -> User {
    UserRepository::create(
        db,
        &NewUser {
            username: Username::parse(name).expect("valid"),
            role,
            status: UserStatus::Active,
        },
        now(),
    )
    .expect("user created")
}

fn names(list: &PermissionList) -> Vec<&str> {
    list.names().iter().map(PermissionName::as_str).collect()
}

/// Runs each `cases::<case>` of the invoking module on a fresh SQLite
/// database and, with the `mysql` feature, a fresh MariaDB one.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::cases::$case(&tollgate_persistence::testing::TestDatabase::sqlite());
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod mariadb {
            $(
                #[test]
                fn $case() {
                    super::cases::$case(&tollgate_persistence::testing::TestDatabase::mysql());
                }
            )*
        }
    };
}

mod api_key;
mod database;
mod permission;
mod plan;
mod reservation;
mod subscription;
mod usage;
mod user;
mod writer;

use tollgate_domain::usage::{Consumed, Consumption, Cost, UsageRepository};

fn consumption(
    sub: &tollgate_domain::subscription::Subscription,
    perm: &str,
    cost: i64,
    limit: Option<i64>,
) -> Consumption {
    Consumption {
        subscription_id: sub.id,
        user_id: sub.user_id,
        permission: PermissionName::parse(perm).expect("valid"),
        cost: Cost::parse(Some(cost)).expect("valid"),
        limit,
        period: UsagePeriod::Month,
        window: UsagePeriod::Month.window_at(now()),
        at: now(),
        permission_quota: None,
        rate_limit: None,
        idempotency_key: None,
        hold: None,
    }
}

/// A second instance on `t`'s database whose pool's checkouts are the
/// test's own: with a 60 s TTL its cache poller checks out a connection
/// once, at start (the 1 s of the test pools polls every 250 ms), and
/// that poll is over when this returns.
fn quiet_instance(t: &TestDatabase) -> Database {
    let options = tollgate_persistence::PoolOptions {
        cache_ttl: std::time::Duration::from_secs(60),
        ..TestDatabase::pool_options()
    };
    let url = tollgate_persistence::DatabaseUrl::parse(&t.url).expect("url");
    let db = Database::open(&url, &options);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while db.pool_state().checkouts == 0 && std::time::Instant::now() < deadline {
        thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(db.pool_state().checkouts, 1, "the poller's first poll");
    db
}

/// A new user `name` with an active subscription to `plan`.
fn subscriber(
    db: &Database,
    name: &str,
    plan: PlanId,
) -> tollgate_domain::subscription::Subscription {
    let u = user(db, name, Role::User);
    SubscriptionRepository::create(db, u.id, plan, now()).expect("sub")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid")
        .with_timezone(&Utc)
}

/// A check of `sub`'s user at `when`, in `period`'s window then.
fn check_at(
    sub: &tollgate_domain::subscription::Subscription,
    perm: &str,
    cost: i64,
    limit: Option<i64>,
    period: UsagePeriod,
    when: DateTime<Utc>,
) -> Consumption {
    Consumption {
        period,
        window: period.window_at(when),
        at: when,
        ..consumption(sub, perm, cost, limit)
    }
}

/// The user's units in the window: the sum of their counters of it, as a
/// usage report reads them.
fn used_in(db: &Database, user_id: UserId, window: tollgate_domain::period::Window) -> i64 {
    UsageRepository::used_by_permission(db, user_id, window)
        .expect("used")
        .iter()
        .map(|(_, used)| used)
        .sum()
}

fn consumed(db: &Database, c: &Consumption) -> Consumed {
    block_on(UsageRepository::consume(db, c)).expect("consumed")
}

fn granted(db: &Database, c: &Consumption) -> bool {
    matches!(
        block_on(UsageRepository::consume(db, c)).expect("consumed"),
        Consumed::Granted { .. }
    )
}

fn plan_with(db: &Database, name: &str, perms: &[&str], limit: i64, period: UsagePeriod) -> PlanId {
    let mut plan = new_plan(name, perms);
    plan.usage_limit = UsageLimit::parse(Some(limit)).expect("valid");
    plan.usage_period = period;
    PlanRepository::create(db, &plan, now()).expect("plan").id
}

/// Every event id of the user, page by page.
fn all_event_ids(
    db: &Database,
    user: UserId,
    filter: &tollgate_domain::usage::EventFilter,
) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut page = PageRequest::first(500);
    loop {
        let got = UsageRepository::events(db, user, filter, page).expect("events");
        ids.extend(got.items.iter().map(|e| e.id));
        match got.next_after {
            Some(after) => page = PageRequest::parse(Some(500), Some(after)).expect("page"),
            None => return ids,
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// One number read straight from the SQLite file.
fn sqlite_number(path: &str, sql: &str) -> i64 {
    use diesel::{Connection, RunQueryDsl};
    let mut c = diesel::SqliteConnection::establish(path).expect("open");
    diesel::sql_query(sql)
        .get_result::<Number>(&mut c)
        .expect(sql)
        .n
}

/// What a finished keying pass leaves: every event keyed, `upto` the newest.
fn key_all_by_hand(path: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut c = diesel::SqliteConnection::establish(path).expect("open");
    c.batch_execute(
        "PRAGMA busy_timeout = 10000; \
         INSERT OR IGNORE INTO usage_event_keys SELECT user_id, at, id FROM usage_events; \
         UPDATE usage_events_keyed SET upto = (SELECT max(id) FROM usage_events)",
    )
    .expect("keyed by hand");
}

/// The nice value of each thread named `tollgate-writer` (field 19 of
/// its `/proc` stat line).
#[cfg(target_os = "linux")]
fn writer_nice_values() -> Vec<i64> {
    std::fs::read_dir("/proc/self/task")
        .expect("the process's threads")
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if comm.trim() != "tollgate-writer" {
                return None;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let (_, after_name) = stat.rsplit_once(')')?;
            after_name.split_whitespace().nth(16)?.parse().ok()
        })
        .collect()
}
