//! Tollgate's core: entities, the newtypes that parse their input, the rules of
//! plans, permissions, users, keys and subscriptions, and the ports (repository
//! traits) the rules need. No database, no HTTP, no I/O: adapters live in the
//! `tollgate-persistence` and `tollgate-api` crates.

#![warn(missing_docs)]

pub mod access;
pub mod api_key;
pub mod clock;
pub mod error;
pub mod history;
pub mod id;
pub mod idempotency;
pub mod page;
pub mod pending;
pub mod period;
pub mod permission;
pub mod plan;
pub mod reservation;
pub mod status;
pub mod subscription;
pub mod text;
pub mod usage;
pub mod user;

pub use error::{StoreError, ValidationError};
pub use id::{ApiKeyId, PermissionId, PlanId, SubscriptionId, UserId};
pub use page::{Page, PageRequest};
pub use pending::Pending;
