//! The command line: settings from the environment or the same-named flags;
//! the bootstrap admin key from the environment only (a flag shows in `ps`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tollgate_api::config::ConnectionTimeouts;
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

    /// Milliseconds between passes of the background sweep, which removes
    /// idempotency records older than 24 hours.
    #[arg(long, env = "TOLLGATE_SWEEP_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub sweep_ms: u64,

    /// Days raw usage events are kept; older ones are deleted in the
    /// background, a little at a time. Unset: kept forever. Counters,
    /// reports and history stay exact without them.
    #[arg(long, env = "TOLLGATE_EVENT_RETENTION_DAYS",
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub event_retention_days: Option<u32>,
}

impl DatabaseArgs {
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_size: self.pool_size,
            timeout: Duration::from_millis(self.db_timeout_ms),
            cache_ttl: Duration::from_millis(self.cache_ttl_ms),
            check_queue: usize::try_from(self.check_queue).unwrap_or(usize::MAX),
            cache_entries: usize::try_from(self.cache_entries).unwrap_or(usize::MAX),
            sweep_every: Duration::from_millis(self.sweep_ms),
            event_retention_days: self.event_retention_days,
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

/// Everything [`crate::Tollgate::build`] needs: the database and the server.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub pool: PoolOptions,
    pub server: tollgate_api::Config,
}

/// The bootstrap admin key (at least 32 characters): it authenticates as the
/// admin user `admin`, created on first start if missing; a new value revokes
/// the previous one. Never a flag: command lines are visible to every user.
pub const ADMIN_KEY_VAR: &str = "TOLLGATE_ADMIN_KEY";
/// A file holding the bootstrap admin key (a mounted secret), instead of
/// [`ADMIN_KEY_VAR`]; one trailing newline is dropped.
pub const ADMIN_KEY_FILE_VAR: &str = "TOLLGATE_ADMIN_KEY_FILE";

/// A setting that cannot be used; its message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("TOLLGATE_BIND {0:?} is not an IP:PORT address (for example 127.0.0.1:8080)")]
    BadBind(String),
    #[error("{ADMIN_KEY_VAR} and {ADMIN_KEY_FILE_VAR} are both set; set only one")]
    AdminKeyTwice,
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    #[error("{ADMIN_KEY_FILE_VAR}: cannot read {path:?}: {source}")]
    AdminKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        Self::from_args(args, |name| std::env::var_os(name))
    }
}

impl Config {
    /// The settings of `args`, and the admin key from the variables `env`
    /// looks up (the process environment, or a test's own).
    pub fn from_args(
        args: ServeArgs,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let bind = args
            .bind
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::BadBind(args.bind))?;
        Ok(Self {
            pool: args.db.pool_options(),
            database_url: args.db.database_url,
            server: tollgate_api::Config {
                bind,
                admin_key: admin_key(env)?,
                workers: args.workers.map(usize::from),
                timeouts: args.connections.timeouts(),
            },
        })
    }
}

/// The admin key of [`ADMIN_KEY_VAR`] or of the file [`ADMIN_KEY_FILE_VAR`]
/// names; an empty variable counts as unset.
fn admin_key(env: impl Fn(&str) -> Option<OsString>) -> Result<Option<String>, ConfigError> {
    let set = |name| env(name).filter(|v| !v.is_empty());
    match (set(ADMIN_KEY_VAR), set(ADMIN_KEY_FILE_VAR)) {
        (Some(_), Some(_)) => Err(ConfigError::AdminKeyTwice),
        (Some(key), None) => key
            .into_string()
            .map(Some)
            .map_err(|_| ConfigError::NotUnicode(ADMIN_KEY_VAR)),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::AdminKeyFile { path, source })?;
            let key = text
                .strip_suffix("\r\n")
                .or_else(|| text.strip_suffix('\n'))
                .unwrap_or(&text);
            Ok(Some(key.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn the_admin_key_comes_from_the_variable_or_the_file() {
        let key = "k".repeat(40);
        assert_eq!(
            admin_key(lookup(&[(ADMIN_KEY_VAR, &key)])).expect("read"),
            Some(key.clone())
        );
        assert_eq!(admin_key(lookup(&[])).expect("read"), None);
        assert_eq!(
            admin_key(lookup(&[(ADMIN_KEY_VAR, "")])).expect("read"),
            None
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("admin_key");
        let path = file.to_str().expect("utf-8 path");
        for (written, read) in [
            (format!("{key}\n"), key.clone()),
            (format!("{key}\r\n"), key.clone()),
            (key.clone(), key.clone()),
            // Only one newline goes: the rest is the key's (and fails its check).
            (format!("{key}\n\n"), format!("{key}\n")),
        ] {
            std::fs::write(&file, written).expect("written");
            assert_eq!(
                admin_key(lookup(&[(ADMIN_KEY_FILE_VAR, path)])).expect("read"),
                Some(read)
            );
        }
    }

    #[test]
    fn both_sources_or_an_unreadable_file_are_errors_naming_the_settings() {
        let both = admin_key(lookup(&[(ADMIN_KEY_VAR, "a"), (ADMIN_KEY_FILE_VAR, "/x")]))
            .expect_err("both set");
        let message = both.to_string();
        assert!(message.contains(ADMIN_KEY_VAR) && message.contains(ADMIN_KEY_FILE_VAR));

        let missing = admin_key(lookup(&[(ADMIN_KEY_FILE_VAR, "/nonexistent/tollgate-key")]))
            .expect_err("missing file");
        assert!(
            missing.to_string().starts_with(ADMIN_KEY_FILE_VAR),
            "{missing}"
        );
    }

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
