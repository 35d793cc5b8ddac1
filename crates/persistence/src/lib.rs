//! Tollgate's ports implemented with Diesel on SQLite (always built, bundled)
//! and MySQL/MariaDB (the `mysql` feature), behind r2d2 pools.
//!
//! A noun's rows, queries, error mapping and port impl live in its file
//! (`plan.rs`, `user.rs`, ...); the access checks' hot path in `usage/`.
//! The queries are written once against [`DbConnection`], Diesel's
//! `MultiConnection` over both backends; what differs is a `match` on it.

mod api_key;
mod connection;
mod epoch;
mod error;
mod permission;
mod plan;
mod reservation;
mod schema;
mod status;
mod subscription;
mod time;
mod usage;
mod user;

#[allow(clippy::panic, reason = "test support: it fails the test")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use tollgate_domain::{PageRequest, StoreError};

pub use connection::{
    Backend, ConnectError, ConnectionManager, DatabaseUrl, DbConnection, UrlError,
};
pub use usage::sweeper::Swept;
use usage::{cache, loader, sweeper, writer};

/// Rows a page query fetches: one more than the page, to tell whether
/// another page follows.
pub(crate) fn fetch_limit(page: PageRequest) -> i64 {
    i64::from(page.limit()) + 1
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
#[cfg(feature = "mysql")]
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/mysql");

pub(crate) type Pool = r2d2::Pool<ConnectionManager>;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_size: u32,
    /// How long a request waits for a free connection (and SQLite for a lock)
    /// before it answers 503.
    pub timeout: Duration,
    /// How long the access-check read cache serves an entry: the bound on
    /// how late another instance sees a change (this one sees its own at
    /// once). Zero disables the cache.
    pub cache_ttl: Duration,
    /// The most access checks waiting for the batching writer; one more is
    /// answered Unavailable at once (503 with `Retry-After`).
    pub check_queue: usize,
    /// The read cache's budget, in entries of keys and of access contexts
    /// each; past it the least recently used go.
    pub cache_entries: usize,
    /// How often the background sweep removes idempotency records past
    /// their lifetime.
    pub sweep_every: Duration,
    /// Days raw usage events are kept (the sweep deletes older ones);
    /// `None` keeps them forever.
    pub event_retention_days: Option<u32>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(1),
            check_queue: 4_096,
            cache_entries: 100_000,
            sweep_every: Duration::from_secs(1),
            event_retention_days: None,
        }
    }
}

pub use tollgate_domain::status::{CacheState, HotPathState, PoolState};

/// Counters of the pool's checkouts, shared with the writer threads.
#[derive(Debug, Default)]
pub(crate) struct PoolStats {
    checkouts: std::sync::atomic::AtomicU64,
    wait_nanos: std::sync::atomic::AtomicU64,
    timeouts: std::sync::atomic::AtomicU64,
}

impl PoolStats {
    /// A connection from `pool`, counting the wait.
    pub(crate) fn get(
        &self,
        pool: &Pool,
    ) -> Result<r2d2::PooledConnection<ConnectionManager>, r2d2::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let started = std::time::Instant::now();
        let result = pool.get();
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(waited, Relaxed);
        match &result {
            Ok(_) => self.checkouts.fetch_add(1, Relaxed),
            Err(_) => self.timeouts.fetch_add(1, Relaxed),
        };
        result
    }
}

/// The database: a connection pool that implements every repository port.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    backend: Backend,
    cache: Arc<cache::ReadCache>,
    loader: Arc<loader::Loader>,
    writer: Arc<writer::Writer>,
    stats: Arc<PoolStats>,
    timeout: Duration,
    #[cfg_attr(not(any(test, feature = "test-hooks")), allow(dead_code))]
    faults: Arc<testing::Faults>,
    _sweeper: Arc<sweeper::Sweeper>,
    retention: Option<chrono::Duration>,
}

impl Database {
    /// Opens a pool on `url`. Connections are made lazily, so this succeeds
    /// while the database is down; the first use then answers Unavailable.
    pub fn open(url: &DatabaseUrl, options: &PoolOptions) -> Self {
        let pool_of = |size: u32| {
            r2d2::Pool::builder()
                .max_size(size.max(1))
                .min_idle(Some(0))
                .connection_timeout(options.timeout)
                // A MariaDB connection can die with its server; checking it
                // out with a `SELECT 1` (one round trip per batch or cache
                // miss) drops dead ones, so the pool recovers when the
                // server returns.
                .test_on_check_out(url.backend() == Backend::Mysql)
                .error_handler(Box::new(r2d2::LoggingErrorHandler))
                .build_unchecked(ConnectionManager::new(url.clone(), options.timeout))
        };
        let pool = pool_of(options.max_size);
        // SQLite has one write lock: ONE thread feeds it, up to 64 checks a
        // batch (a second thread would hand the connection over per batch),
        // at nice -5 since every check passes through it, with the
        // checkpoints on a thread beside it and the usage events keyed in
        // bulk every 8,192 events. MariaDB overlaps the round trips of 2
        // writers of up to 32 (more writers only wait on each other's
        // locks) at the default priority: they mostly wait on round trips.
        // docs/performance.md gives the measurements behind each number.
        let writer_config = match url.backend() {
            Backend::Sqlite => writer::WriterConfig {
                threads: 1,
                max_batch: 64,
                exclusive: true,
                checkpoint_every: Some(1024),
                key_events_every: Some(8192),
                nice: Some(-5),
                queue_size: options.check_queue,
                deadline: options.timeout,
            },
            Backend::Mysql => writer::WriterConfig {
                threads: options.max_size.clamp(1, 2) as usize,
                max_batch: 32,
                exclusive: false,
                checkpoint_every: None,
                key_events_every: None,
                nice: None,
                queue_size: options.check_queue,
                deadline: options.timeout,
            },
        };
        // The hot path's threads (writers, loader, cache poller, WAL
        // checkpoint) have connections of their own: management requests,
        // however heavy, cannot make checks wait for the pool.
        // (SQLite's writer takes its one connection from it; MariaDB's
        // writers make their own.)
        let hot_size = u32::try_from(writer_config.threads).unwrap_or(u32::MAX) + 3;
        let hot_pool = pool_of(hot_size);
        let stats = Arc::new(PoolStats::default());
        let faults = Arc::new(testing::Faults::default());
        let cache = Arc::new(cache::ReadCache::new(
            options.cache_ttl,
            options.cache_entries,
        ));
        let (poll_pool, poll_stats) = (hot_pool.clone(), stats.clone());
        cache.start_poller(move || {
            let mut conn = poll_stats
                .get(&poll_pool)
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
            let conn: &mut DbConnection = &mut conn;
            epoch::change_epoch_now(conn).map_err(error::store_error)
        });
        let loader = Arc::new(loader::Loader::start(
            hot_pool.clone(),
            stats.clone(),
            cache.clone(),
            faults.clone(),
        ));
        let writer = Arc::new(writer::Writer::start(
            hot_pool,
            stats.clone(),
            ConnectionManager::new(url.clone(), options.timeout),
            writer_config,
            faults.clone(),
        ));
        let retention = options
            .event_retention_days
            .map(|days| chrono::Duration::days(i64::from(days)));
        let sweeper = Arc::new(sweeper::Sweeper::start(
            pool.clone(),
            stats.clone(),
            options.sweep_every,
            retention,
        ));
        Self {
            retention,
            _sweeper: sweeper,
            pool,
            backend: url.backend(),
            cache,
            loader,
            writer,
            stats,
            timeout: options.timeout,
            faults,
        }
    }

    /// How long a request waits for a connection, a lock or an answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Faults a test can ask of this database's threads.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn faults(&self) -> &testing::Faults {
        &self.faults
    }

    /// Takes every connection of the management pool for `hold` (on a
    /// thread of its own), as long-running management requests would; returns
    /// once they are taken.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn hold_management_pool(&self, hold: Duration) {
        let (pool, stats) = (self.pool.clone(), self.stats.clone());
        let (taken, all_taken) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let held: Vec<_> = (0..pool.max_size())
                .filter_map(|_| stats.get(&pool).ok())
                .collect();
            let _ = taken.send(held.len());
            std::thread::sleep(hold);
        });
        let _ = all_taken.recv();
    }

    /// Whether the threads the access checks need (the batching writers and
    /// the cache's loader) all run.
    pub fn threads_alive(&self) -> bool {
        self.writer.is_alive() && self.loader.is_alive()
    }

    /// The hot path's counters, for metrics.
    pub fn hot_path_state(&self) -> HotPathState {
        use std::sync::atomic::Ordering::Relaxed;
        let writer = self.writer.stats();
        HotPathState {
            checks_rejected: writer.rejected.load(Relaxed),
            checks_abandoned: writer.abandoned.load(Relaxed),
            cache: self.cache.state(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool_state(&self) -> PoolState {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.pool.state();
        PoolState {
            max_size: self.pool.max_size(),
            connections: s.connections,
            idle: s.idle_connections,
            checkouts: self.stats.checkouts.load(Relaxed),
            wait_seconds: self.stats.wait_nanos.load(Relaxed) as f64 / 1e9,
            timeouts: self.stats.timeouts.load(Relaxed),
        }
    }

    /// Runs `f` on a pooled connection; a pool that cannot give one within its
    /// timeout is Unavailable.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut DbConnection) -> T) -> Result<T, StoreError> {
        let mut conn = self
            .stats
            .get(&self.pool)
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(f(&mut conn))
    }

    /// Like [`Self::with`] for writes that may change what the read cache
    /// holds: when `f` succeeded and its change transaction moved the change
    /// epoch, this process's cache drops what `change` names. A write that
    /// failed, or changed nothing, drops nothing.
    pub(crate) fn with_write<T, E>(
        &self,
        change: cache::Change,
        f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        cache::take_bumped();
        let result = self.with(f);
        let bumped = cache::take_bumped();
        if let (Ok(Ok(_)), Some(epoch)) = (&result, bumped) {
            self.cache.changed(&change, epoch);
        }
        result
    }

    /// The database's change epoch: moved by every committed write that
    /// changes what access checks read (diagnostics and tests).
    pub fn change_epoch(&self) -> Result<i64, StoreError> {
        self.with(epoch::change_epoch_now)?
            .map_err(error::store_error)
    }

    /// What the background sweep does, once, as if the time were `now`:
    /// releases the held reservations due and removes the idempotency
    /// records older than their lifetime, and the usage events older than
    /// the retention.
    pub fn sweep(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Swept, StoreError> {
        sweeper::sweep(&self.pool, &self.stats, now, self.retention)
    }

    /// The oldest instant whose usage events are kept at `now`, if events
    /// are deleted at all.
    pub(crate) fn retention_horizon(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.retention.map(|kept| now - kept)
    }

    /// Whether the database answers a trivial query.
    pub fn ping(&self) -> Result<(), StoreError> {
        use diesel::connection::SimpleConnection;
        self.with(|conn| match conn {
            DbConnection::Sqlite(c) => c.batch_execute("SELECT 1"),
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(c) => c.batch_execute("SELECT 1"),
        })?
        .map_err(error::store_error)
    }

    /// Applies the migrations not yet applied; returns how many ran.
    /// On SQLite it first puts the file in WAL mode (persistent), which the
    /// concurrent readers and the batching writer rely on.
    pub fn migrate(&self) -> Result<usize, MigrationError> {
        use diesel::connection::SimpleConnection;
        self.with(|conn| match conn {
            DbConnection::Sqlite(c) => c
                .batch_execute("PRAGMA journal_mode = WAL")
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .and_then(|()| c.run_pending_migrations(SQLITE_MIGRATIONS))
                .map(|v| v.len()),
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(c) => c.run_pending_migrations(MYSQL_MIGRATIONS).map(|v| v.len()),
        })
        .map_err(MigrationError::Store)?
        .map_err(MigrationError::Migration)
    }

    /// Reverts every migration (tests and `down` checks).
    pub fn revert_all(&self) -> Result<usize, MigrationError> {
        self.with(|conn| match conn {
            DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(c) => c.revert_all_migrations(MYSQL_MIGRATIONS).map(|v| v.len()),
        })
        .map_err(MigrationError::Store)?
        .map_err(MigrationError::Migration)
    }
}

/// A migration that could not run.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot reach the database to migrate it")]
    Store(#[source] StoreError),
    #[error("migration failed: {0}")]
    Migration(Box<dyn std::error::Error + Send + Sync>),
}
