//! The wiring of the `tollgate` binary: the database of `tollgate-persistence`
//! behind the ports of `tollgate-domain`, served by `tollgate-api`. The only
//! crate that names both the api and the persistence.

pub mod config;

use std::sync::Arc;

use tollgate_api::state::{AppState, Ports};
use tollgate_api::Application;
use tollgate_persistence::{Database, DatabaseUrl, PoolOptions, UrlError};

pub use config::Config;

/// Why the server could not start; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DatabaseUrl(#[from] UrlError),
    #[error("DATABASE_URL: {0}")]
    Migration(String),
    #[error(transparent)]
    Server(#[from] tollgate_api::StartError),
}

/// Opens the database named by `url` and applies pending migrations.
pub fn open_database(url: &str, pool: &PoolOptions) -> Result<Database, StartError> {
    let url = DatabaseUrl::parse(url)?;
    let db = Database::open(&url, pool);
    let applied = db
        .migrate()
        .map_err(|e| StartError::Migration(error_chain(&e)))?;
    if applied > 0 {
        log::info!(
            "applied {applied} migration(s) to the {} database",
            url.backend().name()
        );
    }
    Ok(db)
}

/// The api's services on `db`, which implements every port.
pub fn state_of(db: &Database) -> AppState {
    AppState::new(Ports::of(Arc::new(db.clone())), db.timeout())
}

/// Opens (and migrates) the database at `database_url` and gives the
/// services on it: what a Rust service needs to use
/// [`tollgate_api::middleware::RequirePermission`].
pub fn open_state(database_url: &str, pool: &PoolOptions) -> Result<AppState, StartError> {
    Ok(state_of(&open_database(database_url, pool)?))
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

/// The server, built and bound on its database.
pub struct Tollgate {
    /// The HTTP server, ready to run.
    pub app: Application,
    /// The database the server's services use.
    pub db: Database,
}

impl Tollgate {
    /// Checks the admin key, opens (and migrates) the database, then builds
    /// the server on it.
    pub fn build(config: Config) -> Result<Self, StartError> {
        // A bad key stops the start before the database is touched.
        config.server.admin_secret()?;
        let db = open_database(&config.database_url, &config.pool)?;
        let app = Application::build(config.server, state_of(&db))?;
        Ok(Self { app, db })
    }
}
