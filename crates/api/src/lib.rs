//! Tollgate's HTTP API: actix-web handlers, DTOs, authentication, the
//! error-to-HTTP mapping and the server's configuration, on the domain's
//! ports only. The `tollgate` crate wires the database in at start-up.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod state;

pub use app::{Application, StartError};
pub use config::Config;
