//! Throwaway databases for tests, on either backend, dropped with their guard.
//!
//! SQLite: a fresh file under the system temp dir. MySQL/MariaDB (feature
//! `mysql`): a fresh database on the server named by `TOLLGATE_TEST_MYSQL_URL`
//! (for example `mysql://root:secret@127.0.0.1:3306`, a user that may create
//! databases). With the feature on and no server given, the test fails: a
//! MariaDB test never passes by skipping.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Backend, Database, DatabaseUrl, PoolOptions};

/// The environment variable naming the MariaDB server for tests.
pub const MYSQL_URL_VAR: &str = "TOLLGATE_TEST_MYSQL_URL";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "tg_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A fresh, migrated database that is removed when dropped.
pub struct TestDatabase {
    pub url: String,
    pub db: Database,
    cleanup: Cleanup,
}

enum Cleanup {
    Files(PathBuf),
    #[cfg(feature = "mysql")]
    MysqlDatabase {
        server: String,
        name: String,
    },
}

impl TestDatabase {
    /// Options for test pools: small, with a short timeout.
    pub fn pool_options() -> PoolOptions {
        PoolOptions {
            max_size: 8,
            timeout: Duration::from_secs(10),
            cache_ttl: Duration::from_secs(1),
            ..PoolOptions::default()
        }
    }

    /// A fresh database of `backend`, migrated.
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Mysql => Self::mysql(),
        }
    }

    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("{}.db", unique_name()));
        let url = format!("sqlite://{}", path.display());
        let t = Self::open(url, Cleanup::Files(path));
        t.migrate();
        t
    }

    #[cfg(feature = "mysql")]
    pub fn mysql() -> Self {
        let server = std::env::var(MYSQL_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{MYSQL_URL_VAR} is not set: the mysql feature's tests need a MariaDB \
                 server (run `just mysql-up` and export the URL it prints)"
            )
        });
        Self::mysql_on(&server)
    }

    /// A fresh database on the MariaDB server at `server` (a URL without database).
    #[cfg(feature = "mysql")]
    pub fn mysql_on(server: &str) -> Self {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let server = server.trim_end_matches('/').to_owned();
        let name = unique_name();
        let mut admin = diesel::mysql::MysqlConnection::establish(&server)
            .unwrap_or_else(|e| panic!("cannot reach MariaDB at {MYSQL_URL_VAR}: {e}"));
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ))
            .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
        let t = Self::open(
            format!("{server}/{name}"),
            Cleanup::MysqlDatabase { server, name },
        );
        t.migrate();
        t
    }

    #[cfg(not(feature = "mysql"))]
    pub fn mysql() -> Self {
        panic!("MySQL/MariaDB tests need the `mysql` feature")
    }

    fn open(url: String, cleanup: Cleanup) -> Self {
        let parsed = DatabaseUrl::parse(&url).unwrap_or_else(|e| panic!("bad test URL: {e}"));
        let db = Database::open(&parsed, &Self::pool_options());
        Self { url, db, cleanup }
    }

    fn migrate(&self) {
        if let Err(e) = self.db.migrate() {
            panic!("migrations failed on a fresh test database: {e}");
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Files(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            #[cfg(feature = "mysql")]
            Cleanup::MysqlDatabase { server, name } => {
                use diesel::connection::SimpleConnection;
                use diesel::Connection;
                if let Ok(mut admin) = diesel::mysql::MysqlConnection::establish(server) {
                    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
                }
            }
        }
    }
}

/// Faults a test can ask of one [`Database`] (see `Database::faults`, which
/// only tests can reach: this crate's own, or those of a crate that enables
/// the `test-hooks` feature). Each is taken by the next batch.
#[derive(Debug, Default)]
pub struct Faults {
    panic_in_transaction: std::sync::atomic::AtomicBool,
    stop_writer: std::sync::atomic::AtomicBool,
    stop_loader: std::sync::atomic::AtomicBool,
    /// Until when every batch that starts waits, as microseconds after `origin`.
    hold_until: AtomicU64,
    origin: std::sync::OnceLock<std::time::Instant>,
}

impl Faults {
    /// The writer's next batch panics inside its write transaction, after
    /// it took a lock (SQLite's write lock, MariaDB's lock on the change
    /// epoch's row).
    pub fn panic_next_batch_in_transaction(&self) {
        self.panic_in_transaction.store(true, Ordering::SeqCst);
    }

    /// The writer thread that takes the next batch ends.
    pub fn stop_writer(&self) {
        self.stop_writer.store(true, Ordering::SeqCst);
    }

    /// The loader thread ends at its next batch.
    pub fn stop_loader(&self) {
        self.stop_loader.store(true, Ordering::SeqCst);
    }

    /// For `hold` from now, every batch the writer threads take waits
    /// until then before it starts (checks queue behind them meanwhile).
    pub fn hold_batches(&self, hold: Duration) {
        let until = self.micros_now().saturating_add(micros(hold));
        self.hold_until.store(until, Ordering::SeqCst);
    }

    fn micros_now(&self) -> u64 {
        micros(self.origin.get_or_init(std::time::Instant::now).elapsed())
    }

    pub(crate) fn writer_batch(&self) {
        if self.stop_writer.swap(false, Ordering::SeqCst) {
            panic!("fault asked by a test: the writer thread stops");
        }
        let until = self.hold_until.load(Ordering::SeqCst);
        let now = self.micros_now();
        if until > now {
            std::thread::sleep(Duration::from_micros(until - now));
        }
    }

    pub(crate) fn loader_batch(&self) {
        if self.stop_loader.swap(false, Ordering::SeqCst) {
            panic!("fault asked by a test: the loader thread stops");
        }
    }

    pub(crate) fn in_transaction(&self, conn: &mut crate::DbConnection) {
        use diesel::connection::SimpleConnection;

        if !self.panic_in_transaction.swap(false, Ordering::SeqCst) {
            return;
        }
        let _ = conn.write_tx(|c| -> diesel::QueryResult<()> {
            c.batch_execute("UPDATE change_epoch SET epoch = epoch")?;
            panic!("fault asked by a test: a panic inside a write transaction")
        });
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
