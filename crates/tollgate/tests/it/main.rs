//! The real server on a real database (SQLite, and MariaDB with the `mysql`
//! feature), and the real `tollgate` binary: one test binary, a module per
//! concept. A case of `on_both_backends!` runs as `<module>::sqlite::<case>`
//! and `<module>::mariadb::<case>`.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

#[macro_use]
mod common;

mod access;
mod api_keys;
mod auth;
mod connections;
mod conventions;
mod entitlements;
mod gateway;
mod hardening;
mod health;
mod history;
mod idempotency;
mod metrics;
mod middleware;
mod openapi;
#[cfg(feature = "mysql")]
mod outage;
mod permissions;
mod plans;
mod processes;
mod reservations;
mod subscriptions;
mod users;
