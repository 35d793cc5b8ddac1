//! The store's health and load as the operations routes report them
//! (`/readyz`, `/metrics`), so those routes need no concrete adapter.

use crate::StoreError;

/// Why the store cannot serve access checks now.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// A thread the access checks need (a batching writer, the read cache's
    /// loader) has stopped; only a restart of the instance brings it back.
    #[error("a thread the access checks need has stopped")]
    ThreadStopped,
    /// The store does not answer (or failed otherwise).
    #[error(transparent)]
    Store(StoreError),
}

/// The readiness and counters of the store behind the other ports.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait StoreStatus: Send + Sync {
    /// Ok when the threads the access checks need run and the store answers
    /// a trivial query. Err(NotReady::ThreadStopped) when one of those
    /// threads has ended (checked first, without asking the store);
    /// Err(NotReady::Store) when the store does not answer within its
    /// timeout. Blocks on the store.
    fn ready(&self) -> Result<(), NotReady>;

    /// What the store's pool and hot path have counted so far. Never blocks.
    fn state(&self) -> StoreState;
}

/// A snapshot of the store's counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StoreState {
    /// The connection pool of the management requests.
    pub pool: PoolState,
    /// The machinery of the access checks.
    pub hot_path: HotPathState,
}

/// The connection pool's size and what it handed out.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PoolState {
    /// Most connections the pool opens.
    pub max_size: u32,
    /// Connections open now.
    pub connections: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Connections handed out so far.
    pub checkouts: u64,
    /// Seconds spent waiting for a connection, summed.
    pub wait_seconds: f64,
    /// Checkouts that gave up after the pool timeout.
    pub timeouts: u64,
}

/// What the access checks' machinery counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HotPathState {
    /// Checks refused at once because the writer's queue was full.
    pub checks_rejected: u64,
    /// Checks dropped unconsumed: their caller stopped waiting (went away,
    /// or its deadline passed) before their batch.
    pub checks_abandoned: u64,
    /// The read cache of keys and access contexts.
    pub cache: CacheState,
}

/// The read cache's counters and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheState {
    /// Lookups of real keys answered from the cache.
    pub key_hits: u64,
    /// Lookups of key hashes answered from the set of hashes known to name
    /// no key.
    pub unknown_key_hits: u64,
    /// Key lookups the cache could not answer that loaded a real key.
    pub keys_loaded: u64,
    /// Key lookups the cache could not answer that found no key.
    pub unknown_keys_loaded: u64,
    /// Access contexts answered from the cache.
    pub context_hits: u64,
    /// Access contexts loaded from the store.
    pub context_misses: u64,
    /// Real keys cached now.
    pub keys: usize,
    /// Hashes known to name no key, cached now.
    pub unknown_keys: usize,
    /// Access contexts cached now.
    pub contexts: usize,
}
