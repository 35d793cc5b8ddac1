//! What the HTTP server needs to start: where to listen, the bootstrap admin
//! key, workers and connection timeouts. The `tollgate` binary reads them
//! from its command line and environment.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate_domain::api_key::ApiKeySecret;

use crate::app::StartError;

/// The connection timeouts of the server; a zero turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    pub client_request: Duration,
    pub client_disconnect: Duration,
    pub keep_alive: Duration,
}

impl Default for ConnectionTimeouts {
    /// The defaults of the settings (and of actix-web).
    fn default() -> Self {
        Self {
            client_request: Duration::from_secs(5),
            client_disconnect: Duration::from_secs(1),
            keep_alive: Duration::from_secs(5),
        }
    }
}

/// Everything `Application::build` needs besides the services.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// The bootstrap admin key, `TOLLGATE_ADMIN_KEY` (at least 32 characters).
    pub admin_key: Option<String>,
    pub workers: Option<usize>,
    pub timeouts: ConnectionTimeouts,
}

impl Config {
    /// The bootstrap admin key, checked: at least 32 characters. The binary
    /// calls it before it opens the database, so a bad key stops the start
    /// before anything is touched.
    pub fn admin_secret(&self) -> Result<Option<ApiKeySecret>, StartError> {
        self.admin_key
            .as_deref()
            .map(|k| ApiKeySecret::configured(k, 32).map_err(StartError::AdminKey))
            .transpose()
    }
}
