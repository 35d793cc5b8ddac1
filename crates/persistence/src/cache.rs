//! The read cache of the access-check hot path: key hash -> (key, user) and
//! user -> access context (subscription, plan, permissions).
//!
//! Every change of what it holds (keys, users, plans, permissions,
//! subscriptions) bumps the database's change epoch in its own transaction
//! (`change_tx` in `queries.rs`). A poller thread per [`crate::Database`]
//! reads that epoch every quarter of the TTL and drops the whole cache when
//! it moved. Writes made through this process drop it at once. An entry is
//! served only while the last successful poll is younger than the TTL, so a
//! poller that cannot reach the database makes the cache step aside: no
//! change made elsewhere is seen later than the TTL (1 s by default).
//! Entries do not expire otherwise, so busy keys are not reloaded every
//! second.
//!
//! A load records the generation read before it queried, so a load that
//! raced with a change is already stale when stored.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use tollgate_domain::api_key::KeyAndUser;
use tollgate_domain::usage::AccessContext;
use tollgate_domain::StoreError;

/// Most entries a map holds; past that it starts over (a cache, not a store).
const MAX_ENTRIES: usize = 200_000;

struct Entry<V> {
    value: V,
    generation: u64,
}

/// What the maps share: the generation, and when the epoch was last confirmed.
struct Clock {
    generation: AtomicU64,
    /// Microseconds after `origin` of the last successful epoch poll.
    confirmed_at: AtomicU64,
    origin: Instant,
    ttl: Duration,
}

impl Clock {
    fn now_micros(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether cached entries may be served now.
    fn trusted(&self) -> bool {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        let age = self.now_micros().saturating_sub(confirmed);
        !self.ttl.is_zero() && u128::from(age) < self.ttl.as_micros()
    }
}

/// One cached lookup.
pub(crate) struct CachedMap<K, V> {
    entries: RwLock<HashMap<K, Entry<V>>>,
    clock: Arc<Clock>,
}

impl<K: Eq + Hash, V: Clone> CachedMap<K, V> {
    fn new(clock: Arc<Clock>) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            clock,
        }
    }

    /// The cached value if it may be served; never blocks on the database.
    pub(crate) fn get_fresh<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.clock.trusted() {
            return None;
        }
        let generation = self.clock.generation.load(Ordering::Acquire);
        let entries = self.entries.read().ok()?;
        let e = entries.get(key)?;
        (e.generation == generation).then(|| e.value.clone())
    }

    /// Keeps `value` for `key`, loaded after the cache was at `generation`
    /// (so a change since makes it stale at once). Nothing is kept while the
    /// cache is off.
    pub(crate) fn store(&self, key: K, value: V, generation: u64) {
        if self.clock.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, Entry { value, generation });
        }
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}

/// The caches of one [`crate::Database`].
pub(crate) struct ReadCache {
    clock: Arc<Clock>,
    pub(crate) keys: CachedMap<String, Option<KeyAndUser>>,
    pub(crate) contexts: CachedMap<i64, Option<Arc<AccessContext>>>,
}

impl ReadCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        let clock = Arc::new(Clock {
            generation: AtomicU64::new(0),
            confirmed_at: AtomicU64::new(0),
            origin: Instant::now(),
            ttl,
        });
        Self {
            keys: CachedMap::new(clock.clone()),
            contexts: CachedMap::new(clock.clone()),
            clock,
        }
    }

    /// The generation now; read it before loading what is stored under it.
    pub(crate) fn generation(&self) -> u64 {
        self.clock.generation.load(Ordering::Acquire)
    }

    /// Called after every committed write of this process, and by the
    /// poller when the epoch moved: every entry is stale from now on.
    pub(crate) fn invalidate(&self) {
        self.clock.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The poller read the epoch at `polled` (an instant before its query).
    fn confirm(&self, polled: u64) {
        self.clock.confirmed_at.fetch_max(polled, Ordering::AcqRel);
    }

    /// Starts the thread that polls `epoch` every quarter of the TTL; it ends
    /// with the cache.
    pub(crate) fn start_poller(
        self: &Arc<Self>,
        epoch: impl Fn() -> Result<i64, StoreError> + Send + 'static,
    ) {
        if self.clock.ttl.is_zero() {
            return;
        }
        let interval = (self.clock.ttl / 4).max(Duration::from_millis(10));
        let cache: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("tollgate-cache".into())
            .spawn(move || {
                let mut last: Option<i64> = None;
                loop {
                    let Some(cache) = cache.upgrade() else { return };
                    let polled = cache.clock.now_micros();
                    match epoch() {
                        Ok(now) => {
                            if last.is_some_and(|l| l != now) {
                                cache.invalidate();
                                cache.keys.clear();
                                cache.contexts.clear();
                            }
                            last = Some(now);
                            cache.confirm(polled);
                        }
                        // Unconfirmed: the entries age out of trust by themselves.
                        Err(e) => log::warn!("cannot read the change epoch: {e}"),
                    }
                    drop(cache);
                    std::thread::sleep(interval);
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the cache poller, the cache stays unused: {e}");
        }
    }
}
