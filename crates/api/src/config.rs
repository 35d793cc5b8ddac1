//! Settings, from the environment or the same-named command-line flags.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate_persistence::PoolOptions;

/// Where the database is and how many connections to keep.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// The database: a file path or sqlite://PATH for SQLite (the default, a
    /// file tollgate.db in the working directory), or
    /// mysql://USER:PASSWORD@HOST:PORT/DATABASE for MySQL/MariaDB (needs a
    /// build with `--features mysql`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "tollgate.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Most database connections this process opens.
    #[arg(long, env = "TOLLGATE_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// Milliseconds a request waits for a database connection or lock
    /// before it answers 503 `unavailable`.
    #[arg(long, env = "TOLLGATE_DB_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub db_timeout_ms: u64,

    /// Milliseconds an access check may reuse what it read of a key, user,
    /// subscription and plan. Changes made through this process apply at
    /// once; changes made through another instance within this bound.
    /// 0 reads everything from the database on every check.
    #[arg(long, env = "TOLLGATE_CACHE_TTL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub cache_ttl_ms: u64,
}

impl DatabaseArgs {
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_size: self.pool_size,
            timeout: Duration::from_millis(self.db_timeout_ms),
            cache_ttl: Duration::from_millis(self.cache_ttl_ms),
        }
    }
}

/// Settings of `tollgate serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Address to listen on, as IP:PORT (port 0 picks a free port).
    #[arg(long, env = "TOLLGATE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// Bootstrap admin key, at least 32 characters: it authenticates as the
    /// admin user `admin`, created on first start if missing. A new value
    /// revokes the previous one.
    #[arg(long, env = "TOLLGATE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// HTTP worker threads (default: one per CPU core).
    #[arg(long, env = "TOLLGATE_WORKERS",
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub workers: Option<u16>,

    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// How long the server waits for slow or idle clients before it drops
/// their connection; what bounds the connections a slowloris can hold.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Milliseconds a new connection has to send its first request's line
    /// and headers (408 and closed after it). 0 waits forever.
    #[arg(long, env = "TOLLGATE_CLIENT_REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub client_request_timeout_ms: u64,

    /// Milliseconds the server waits for a client to acknowledge the close
    /// of its connection before it drops it. 0 waits forever.
    #[arg(long, env = "TOLLGATE_CLIENT_DISCONNECT_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub client_disconnect_timeout_ms: u64,

    /// Milliseconds an idle keep-alive connection stays open between
    /// requests. 0 turns keep-alive off (one request per connection).
    #[arg(long, env = "TOLLGATE_KEEP_ALIVE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub keep_alive_ms: u64,
}

impl ConnectionArgs {
    pub fn timeouts(&self) -> ConnectionTimeouts {
        ConnectionTimeouts {
            client_request: Duration::from_millis(self.client_request_timeout_ms),
            client_disconnect: Duration::from_millis(self.client_disconnect_timeout_ms),
            keep_alive: Duration::from_millis(self.keep_alive_ms),
        }
    }
}

/// The connection timeouts of [`ConnectionArgs`]; a zero turns one off.
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

/// Everything `Application::build` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub pool: PoolOptions,
    pub bind: SocketAddr,
    pub admin_key: Option<String>,
    pub workers: Option<usize>,
    pub timeouts: ConnectionTimeouts,
}

/// A setting that cannot be used; its message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("TOLLGATE_BIND {value:?} is not an IP:PORT address (for example 127.0.0.1:8080)")]
pub struct BadBind {
    value: String,
}

impl TryFrom<ServeArgs> for Config {
    type Error = BadBind;

    fn try_from(args: ServeArgs) -> Result<Self, BadBind> {
        let bind = args
            .bind
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| BadBind { value: args.bind })?;
        Ok(Self {
            pool: args.db.pool_options(),
            database_url: args.db.database_url,
            bind,
            admin_key: args.admin_key,
            workers: args.workers.map(usize::from),
            timeouts: args.connections.timeouts(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        connections: ConnectionArgs,
    }

    #[test]
    fn connection_settings_default_to_the_timeouts_default() {
        let cli = Cli::try_parse_from(["tollgate"]).expect("defaults parse");
        assert_eq!(cli.connections.timeouts(), ConnectionTimeouts::default());
    }

    #[test]
    fn connection_settings_are_milliseconds_and_zero_turns_one_off() {
        let cli = Cli::try_parse_from([
            "tollgate",
            "--client-request-timeout-ms",
            "1500",
            "--keep-alive-ms",
            "0",
        ])
        .expect("flags parse");
        let t = cli.connections.timeouts();
        assert_eq!(t.client_request, Duration::from_millis(1500));
        assert_eq!(t.keep_alive, Duration::ZERO);
        assert_eq!(t.client_disconnect, Duration::from_secs(1));
    }
}
