//! Connections to either backend, chosen by the scheme of `DATABASE_URL`, and
//! the few statements whose SQL differs between them.

use std::time::Duration;

use diesel::connection::SimpleConnection;
#[cfg(feature = "mysql")]
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::BigInt;
use diesel::sqlite::SqliteConnection;

/// Evaluates `$run` with `$conn` bound to the backend's own connection
/// inside the `DbConnection` `$c`, for a hot statement whose code is the
/// same on both: run on the `DbConnection`, the multi-backend translates
/// its SQL and each of its binds again on every run.
macro_rules! on_backend {
    ($c:expr, |$conn:ident| $run:expr) => {
        match $c {
            $crate::connection::DbConnection::Sqlite($conn) => $run,
            #[cfg(feature = "mysql")]
            $crate::connection::DbConnection::Mysql($conn) => $run,
        }
    };
}
pub(crate) use on_backend;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Mysql => "mysql",
        }
    }
}

/// A `DATABASE_URL` that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("DATABASE_URL is empty")]
    Empty,
    #[error(
        "DATABASE_URL names MySQL/MariaDB, but this tollgate was built without it; \
         rebuild with `cargo build --release --features mysql`"
    )]
    MysqlNotBuilt,
    #[error("DATABASE_URL has the unsupported scheme `{0}` (use a file path, sqlite://PATH or mysql://...)")]
    UnsupportedScheme(String),
    #[error("DATABASE_URL names an in-memory SQLite database, which a connection pool cannot share; use a file path")]
    InMemory,
}

/// A parsed `DATABASE_URL`: the backend and what its driver is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    backend: Backend,
    target: String,
}

impl DatabaseUrl {
    /// `mysql://...` is MySQL/MariaDB; `sqlite://PATH`, `sqlite:PATH` or a bare
    /// path is an SQLite file.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(UrlError::Empty);
        }
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            if !cfg!(feature = "mysql") {
                return Err(UrlError::MysqlNotBuilt);
            }
            let target = url.replacen("mariadb://", "mysql://", 1);
            return Ok(Self {
                backend: Backend::Mysql,
                target,
            });
        }
        let path = if let Some(rest) = url.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            rest
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(UrlError::UnsupportedScheme(scheme.to_owned()));
        } else {
            url
        };
        if path.is_empty() || path == ":memory:" || path.contains("mode=memory") {
            return Err(UrlError::InMemory);
        }
        Ok(Self {
            backend: Backend::Sqlite,
            target: path.to_owned(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// A connection to one of the backends. Diesel's `MultiConnection` makes it
/// a connection of its own: the queries are written once against it, and it
/// runs each on the backend it holds.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    #[cfg(feature = "mysql")]
    Mysql(MysqlConnection),
}

impl DbConnection {
    /// SQLite: copies what it can of the WAL into the database without
    /// waiting for readers or writers (`PASSIVE`). Nothing to do on MariaDB.
    /// A connection that has not read yet has not opened the WAL, and its
    /// checkpoint does nothing: it reads first.
    pub(crate) fn checkpoint_wal(&mut self) -> QueryResult<()> {
        match self {
            Self::Sqlite(c) => c.batch_execute(
                "SELECT count(*) FROM sqlite_master; PRAGMA wal_checkpoint(PASSIVE)",
            ),
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => Ok(()),
        }
    }

    /// SQLite: a page cache of 16 MiB instead of 2 MiB for the connection
    /// the batching writer keeps: the index leaf of each user's newest
    /// events then stays in memory instead of being read again from the
    /// WAL or the file on most checks. Nothing to do on MariaDB.
    pub(crate) fn enlarge_page_cache(&mut self) -> QueryResult<()> {
        match self {
            Self::Sqlite(c) => c.batch_execute("PRAGMA cache_size = -16384"),
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => Ok(()),
        }
    }
}

/// Failure to open or check a connection; keeps the driver's message.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("database error: {0}")]
    Query(#[from] DieselError),
}

/// r2d2's manager for [`DbConnection`]s.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    url: DatabaseUrl,
    busy_timeout: Duration,
}

impl ConnectionManager {
    pub fn new(url: DatabaseUrl, busy_timeout: Duration) -> Self {
        Self { url, busy_timeout }
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<DbConnection, ConnectError> {
        match self.url.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.url.target)?;
                // Settings of this connection only, which take no lock: a
                // connection opened while the writer checkpoints must not
                // fail. WAL is a property of the file, set once by `migrate`.
                // The batching writer checkpoints the WAL itself, off the
                // path of the checks; SQLite's own checkpoint in a COMMIT
                // only restarts the WAL past 100,000 frames (~400 MiB).
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA synchronous = FULL; \
                     PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 100000;",
                    self.busy_timeout.as_millis()
                ))?;
                Ok(DbConnection::Sqlite(conn))
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                let mut conn = MysqlConnection::establish(&self.url.target)?;
                // READ COMMITTED: searches take no gap locks, so checks that
                // create a window's counter concurrently do not deadlock.
                // `eq_range_index_dive_limit = 1`: the batch statements'
                // `IN` lists of primary keys are planned from the index
                // statistics instead of one B-tree dive per listed value.
                conn.batch_execute(&format!(
                    "SET SESSION innodb_lock_wait_timeout = {}; \
                     SET SESSION eq_range_index_dive_limit = 1; \
                     SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                    self.busy_timeout.as_secs().max(1)
                ))?;
                Ok(DbConnection::Mysql(conn))
            }
            #[cfg(not(feature = "mysql"))]
            Backend::Mysql => Err(ConnectError::Connect(
                diesel::ConnectionError::BadConnection(UrlError::MysqlNotBuilt.to_string()),
            )),
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), ConnectError> {
        match conn {
            DbConnection::Sqlite(c) => c.batch_execute("SELECT 1")?,
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(c) => c.batch_execute("SELECT 1")?,
        }
        Ok(())
    }

    /// A connection goes back to the pool only when it is clean: not while
    /// its thread panics, and not with a transaction still open on it or a
    /// transaction manager in error (a panic inside a transaction leaves
    /// one open; on SQLite it would keep the database's write lock).
    /// Broken connections are closed, which rolls the transaction back.
    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        use diesel::r2d2::R2D2Connection;
        std::thread::panicking()
            || match conn {
                DbConnection::Sqlite(c) => c.is_broken(),
                #[cfg(feature = "mysql")]
                DbConnection::Mysql(c) => c.is_broken(),
            }
    }
}

#[derive(QueryableByName)]
struct LastId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// What differs between the backends: the statements every noun shares.
/// A statement of one noun that differs is written beside that noun, as a
/// `match` on the connection.
impl DbConnection {
    /// A transaction that takes the write lock up front (SQLite's
    /// `BEGIN IMMEDIATE`), so a read-then-write cannot fail halfway.
    pub(crate) fn write_tx<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<DieselError>,
    {
        use diesel::connection::{AnsiTransactionManager, TransactionManager};
        match self {
            Self::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => return self.transaction(f),
        }
        match f(self) {
            Ok(value) => {
                <Self as TransactionManager<Self>>::commit_transaction(self)?;
                Ok(value)
            }
            Err(e) => {
                <Self as TransactionManager<Self>>::rollback_transaction(self)?;
                Err(e)
            }
        }
    }

    /// The id of the row this connection inserted last.
    pub(crate) fn last_insert_id(&mut self) -> QueryResult<i64> {
        let sql = match self {
            Self::Sqlite(_) => "SELECT last_insert_rowid() AS id",
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => "SELECT CAST(LAST_INSERT_ID() AS SIGNED) AS id",
        };
        diesel::sql_query(sql)
            .get_result::<LastId>(self)
            .map(|r| r.id)
    }

    /// `CAST(expr AS <64-bit integer>)` in this dialect.
    pub(crate) fn bigint_cast(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "INTEGER",
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => "SIGNED",
        }
    }

    /// Whether a failed transaction may simply be run again: on MariaDB a
    /// deadlock victim and a lock wait that timed out both rolled back
    /// (innodb_rollback_on_timeout or not, the writer rolls the batch's
    /// transaction back). SQLite's `BEGIN IMMEDIATE` serializes writers:
    /// nothing to retry.
    pub(crate) fn is_retryable(&self, e: &DieselError) -> bool {
        match (self, e) {
            #[cfg(feature = "mysql")]
            (Self::Mysql(_), DieselError::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    diesel::result::DatabaseErrorKind::SerializationFailure
                ) || info.message().contains("Deadlock found")
                    || info.message().contains("Lock wait timeout exceeded")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use diesel::sql_types::Text;
    use diesel::sqlite::SqliteConnection;

    #[derive(QueryableByName)]
    struct CompileOption {
        #[diesel(sql_type = Text)]
        compile_options: String,
    }

    /// The options `.cargo/config.toml` gives the bundled SQLite are built
    /// in: losing them (a build outside the workspace) costs the writer its
    /// time in mutexes again.
    #[test]
    fn the_bundled_sqlite_has_the_workspace_build_options() {
        let mut conn = SqliteConnection::establish(":memory:").expect("an in-memory SQLite");
        let options: Vec<String> = diesel::sql_query("PRAGMA compile_options")
            .load::<CompileOption>(&mut conn)
            .expect("the compile options")
            .into_iter()
            .map(|o| o.compile_options)
            .collect();
        for wanted in ["THREADSAFE=2", "DEFAULT_MEMSTATUS=0", "OMIT_SHARED_CACHE"] {
            assert!(
                options.iter().any(|o| o == wanted),
                "{wanted} missing from {options:?}"
            );
        }
    }
}
