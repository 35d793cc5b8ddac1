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

    /// Most access checks waiting for the database at once; one more is
    /// answered 503 `unavailable` with `Retry-After: 1` at once, and
    /// consumes nothing.
    #[arg(long, env = "TOLLGATE_CHECK_QUEUE", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub check_queue: u64,

    /// Entries the access-check read cache keeps of API keys, and as many
    /// of users' access contexts (the least recently used go first); a
    /// sixteenth of it more for key hashes that name no key.
    #[arg(long, env = "TOLLGATE_CACHE_ENTRIES", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub cache_entries: u64,
}

impl DatabaseArgs {
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_size: self.pool_size,
            timeout: Duration::from_millis(self.db_timeout_ms),
            cache_ttl: Duration::from_millis(self.cache_ttl_ms),
            check_queue: usize::try_from(self.check_queue).unwrap_or(usize::MAX),
            cache_entries: usize::try_from(self.cache_entries).unwrap_or(usize::MAX),
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
}

/// Everything `Application::build` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub pool: PoolOptions,
    pub bind: SocketAddr,
    pub admin_key: Option<String>,
    pub workers: Option<usize>,
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
        })
    }
}
