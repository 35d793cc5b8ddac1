//! The read cache of the access-check hot path: key hash -> (key, user) and
//! user -> access context (subscription, plan, permissions).
//!
//! An entry is served while it is younger than the TTL (1 s: how late another
//! instance may see a change) AND no write went through this process's
//! [`crate::Database`] since it was loaded (so this instance sees its own
//! changes at once). Writes bump a generation after they commit; a load
//! records the generation read before it queried, so a load that raced with a
//! write is already stale when stored.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tollgate_domain::api_key::ApiKey;
use tollgate_domain::usage::AccessContext;
use tollgate_domain::user::User;
use tollgate_domain::StoreError;

/// Most entries a map holds; past that it starts over (a cache, not a store).
const MAX_ENTRIES: usize = 200_000;

struct Entry<V> {
    value: V,
    generation: u64,
    loaded: Instant,
}

/// One cached lookup.
pub(crate) struct CachedMap<K, V> {
    entries: RwLock<HashMap<K, Entry<V>>>,
    generation: Arc<AtomicU64>,
    ttl: Duration,
}

impl<K: Eq + Hash, V: Clone> CachedMap<K, V> {
    fn new(generation: Arc<AtomicU64>, ttl: Duration) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generation,
            ttl,
        }
    }

    /// The cached value if it is fresh; never blocks on the database.
    pub(crate) fn get_fresh<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let generation = self.generation.load(Ordering::Acquire);
        let entries = self.entries.read().ok()?;
        let e = entries.get(key)?;
        (e.generation == generation && e.loaded.elapsed() < self.ttl).then(|| e.value.clone())
    }

    /// The cached value, or `load()`'s (cached when it succeeds).
    pub(crate) fn get_or_load<Q>(
        &self,
        key: &Q,
        load: impl FnOnce() -> Result<V, StoreError>,
    ) -> Result<V, StoreError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let generation = self.generation.load(Ordering::Acquire);
        if self.ttl.is_zero() {
            return load();
        }
        if let Some(value) = self.get_fresh(key) {
            return Ok(value);
        }
        let value = load()?;
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(
                key.to_owned(),
                Entry {
                    value: value.clone(),
                    generation,
                    loaded: Instant::now(),
                },
            );
        }
        Ok(value)
    }
}

/// The caches of one [`crate::Database`] and the generation its writes bump.
pub(crate) struct ReadCache {
    generation: Arc<AtomicU64>,
    pub(crate) keys: CachedMap<String, Option<(ApiKey, User)>>,
    pub(crate) contexts: CachedMap<i64, Option<AccessContext>>,
}

impl ReadCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        let generation = Arc::new(AtomicU64::new(0));
        Self {
            keys: CachedMap::new(generation.clone(), ttl),
            contexts: CachedMap::new(generation.clone(), ttl),
            generation,
        }
    }

    /// Called after every committed write: every entry is stale from now on.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
