//! The read cache of the access-check hot path: key hash -> (key, user) and
//! user -> access context (subscription, plan, permissions).
//!
//! Every change of what it holds (keys, users, plans, permissions,
//! subscriptions) bumps the database's change epoch in its own transaction
//! (`change_tx` in `epoch.rs`). A poller thread per [`crate::Database`]
//! reads that epoch every quarter of the TTL and drops the whole cache when
//! another instance moved it. A write made through this process drops only
//! what it touched ([`Change`]) and tells the poller its epoch, so the
//! poller does not drop everything for it. An entry is served only while
//! the last successful poll is younger than the TTL, so a poller that
//! cannot reach the database makes the cache step aside: no change made
//! elsewhere is seen later than the TTL (1 s by default). Entries do not
//! expire otherwise, so busy keys are not reloaded every second.
//!
//! Memory is bounded: known keys and access contexts each have a budget of
//! entries and lose their least recently used one when full; key hashes
//! that name no key are remembered in a small set of their own, so a flood
//! of made-up tokens cannot push out the keys in use.
//!
//! A load records a [`Stamp`] before it queries; a change since (everything
//! dropped, or any targeted drop of that map) makes the store a no-op, so a
//! load that raced with a change is never kept.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use lru::LruCache;
use tollgate_domain::api_key::KeyAndUser;
use tollgate_domain::status::CacheState;
use tollgate_domain::usage::AccessContext;
use tollgate_domain::{ApiKeyId, PlanId, StoreError, UserId};

/// The share of the key budget given to hashes that name no key.
const UNKNOWN_SHARE: usize = 16;

/// The most epochs of this process's own writes remembered for the poller.
const OWN_EPOCHS: usize = 1_024;

/// What a committed write changed, so that only that is dropped.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A key was created: its hash may be remembered as unknown.
    KeyCreated(String),
    /// A key changed (revoked).
    Key(ApiKeyId),
    /// A user, their keys or their subscription changed.
    User(UserId),
    /// A plan changed: its subscribers' contexts.
    Plan(PlanId),
    /// A new row nothing cached refers to (a user, plan or permission
    /// created; a permission no plan grants deleted).
    NothingCached,
    /// Anything else (a permission renamed): drop everything.
    All,
}

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

/// One bounded map, least recently used out first.
struct Map<K: Hash + Eq, V> {
    entries: LruCache<K, Entry<V>>,
    /// Targeted drops so far: a load that saw another value is not stored.
    drops: u64,
}

/// One cached lookup.
pub(crate) struct CachedMap<K: Hash + Eq, V> {
    map: Mutex<Map<K, V>>,
    clock: Arc<Clock>,
    hits: AtomicU64,
}

/// Taken before a load, checked when its result is stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    generation: u64,
    key_drops: u64,
    unknown_drops: u64,
    context_drops: u64,
}

impl<K: Eq + Hash, V: Clone> CachedMap<K, V> {
    fn new(clock: Arc<Clock>, budget: usize) -> Self {
        let budget = NonZeroUsize::new(budget).unwrap_or(NonZeroUsize::MIN);
        Self {
            map: Mutex::new(Map {
                entries: LruCache::sparse(budget),
                drops: 0,
            }),
            clock,
            hits: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map<K, V>> {
        // A panic while holding it left at worst a missing entry.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value if it may be served; never blocks on the database.
    fn get_fresh<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.clock.trusted().then(|| {
            let generation = self.clock.generation.load(Ordering::Acquire);
            let mut map = self.lock();
            let e = map.entries.get(key)?;
            (e.generation == generation).then(|| e.value.clone())
        });
        let found = found.flatten();
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        // Misses are counted where they are loaded: a lookup that missed is
        // looked up again on its way to the loader.
        found
    }

    /// Keeps `value` unless the cache is off or something changed since
    /// `generation` and `drops` were read.
    fn store(&self, key: K, value: V, generation: u64, drops: u64) {
        if self.clock.ttl.is_zero() || self.clock.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let mut map = self.lock();
        if map.drops == drops {
            map.entries.put(key, Entry { value, generation });
        }
    }

    fn drops(&self) -> u64 {
        self.lock().drops
    }

    /// Drops the entries `gone` says; later stores of older loads are refused.
    fn drop_where(&self, mut gone: impl FnMut(&K, &V) -> bool) {
        let mut map = self.lock();
        map.drops += 1;
        map.entries.retain(|k, e| !gone(k, &e.value));
    }

    fn clear(&self) {
        self.lock().entries.clear();
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// The caches of one [`crate::Database`].
pub(crate) struct ReadCache {
    clock: Arc<Clock>,
    keys: CachedMap<String, Arc<KeyAndUser>>,
    unknown_keys: CachedMap<String, ()>,
    contexts: CachedMap<i64, Option<Arc<AccessContext>>>,
    /// Epochs this process's own writes gave the database, not yet polled.
    own_epochs: Mutex<BTreeSet<i64>>,
    keys_loaded: AtomicU64,
    unknown_keys_loaded: AtomicU64,
    contexts_loaded: AtomicU64,
}

thread_local! {
    /// The epoch the last change transaction on this thread committed (set
    /// by `change_tx`, taken by `Database::with_write`).
    static BUMPED: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Called by a change transaction with the epoch it set.
pub(crate) fn note_bumped(epoch: i64) {
    BUMPED.with(|b| b.set(Some(epoch)));
}

/// The epoch the last change transaction on this thread set, if any.
pub(crate) fn take_bumped() -> Option<i64> {
    BUMPED.with(Cell::take)
}

impl ReadCache {
    /// A cache serving entries for `ttl`, keeping at most `budget` keys and
    /// as many contexts (and a sixteenth of it of unknown hashes).
    pub(crate) fn new(ttl: Duration, budget: usize) -> Self {
        let clock = Arc::new(Clock {
            generation: AtomicU64::new(0),
            confirmed_at: AtomicU64::new(0),
            origin: Instant::now(),
            ttl,
        });
        Self {
            keys: CachedMap::new(clock.clone(), budget),
            unknown_keys: CachedMap::new(clock.clone(), (budget / UNKNOWN_SHARE).max(1)),
            contexts: CachedMap::new(clock.clone(), budget),
            own_epochs: Mutex::new(BTreeSet::new()),
            keys_loaded: AtomicU64::new(0),
            unknown_keys_loaded: AtomicU64::new(0),
            contexts_loaded: AtomicU64::new(0),
            clock,
        }
    }

    /// The key with this hash: `Some(None)` when the hash is known to name
    /// no key, `None` when only the database can tell.
    pub(crate) fn key(&self, hash: &str) -> Option<Option<Arc<KeyAndUser>>> {
        if let Some(found) = self.keys.get_fresh(hash) {
            return Some(Some(found));
        }
        self.unknown_keys.get_fresh(hash).map(|()| None)
    }

    /// The user's access context, when cached.
    pub(crate) fn context(&self, user_id: i64) -> Option<Option<Arc<AccessContext>>> {
        self.contexts.get_fresh(&user_id)
    }

    /// Read before loading what is stored under it.
    pub(crate) fn stamp(&self) -> Stamp {
        Stamp {
            generation: self.clock.generation.load(Ordering::Acquire),
            key_drops: self.keys.drops(),
            unknown_drops: self.unknown_keys.drops(),
            context_drops: self.contexts.drops(),
        }
    }

    /// Keeps what the database said of `hash` (and counts it).
    pub(crate) fn store_key(&self, hash: String, found: Option<Arc<KeyAndUser>>, stamp: Stamp) {
        let loaded = if found.is_some() {
            &self.keys_loaded
        } else {
            &self.unknown_keys_loaded
        };
        loaded.fetch_add(1, Ordering::Relaxed);
        match found {
            Some(found) => self
                .keys
                .store(hash, found, stamp.generation, stamp.key_drops),
            None => self
                .unknown_keys
                .store(hash, (), stamp.generation, stamp.unknown_drops),
        }
    }

    /// Counts a context lookup the loader answered (a miss).
    pub(crate) fn count_context_load(&self) {
        self.contexts_loaded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn store_context(
        &self,
        user_id: i64,
        context: Option<Arc<AccessContext>>,
        stamp: Stamp,
    ) {
        self.contexts
            .store(user_id, context, stamp.generation, stamp.context_drops);
    }

    /// Every entry is stale from now on, and its memory freed.
    pub(crate) fn invalidate(&self) {
        self.clock.generation.fetch_add(1, Ordering::AcqRel);
        self.keys.clear();
        self.unknown_keys.clear();
        self.contexts.clear();
    }

    /// A write of this process committed `change`, setting the epoch to
    /// `epoch`: drops what it touched, and tells the poller that epoch is
    /// known here.
    pub(crate) fn changed(&self, change: &Change, epoch: i64) {
        {
            let mut own = self.own_epochs.lock().unwrap_or_else(|p| p.into_inner());
            own.insert(epoch);
            while own.len() > OWN_EPOCHS {
                own.pop_first();
            }
        }
        match change {
            Change::KeyCreated(hash) => self.unknown_keys.drop_where(|h, ()| h == hash),
            Change::Key(id) => self.keys.drop_where(|_, found| found.key.id == *id),
            Change::User(user) => {
                self.keys.drop_where(|_, found| found.user.id == *user);
                self.contexts.drop_where(|id, _| *id == user.get());
            }
            Change::Plan(plan) => self
                .contexts
                .drop_where(|_, c| c.as_ref().is_some_and(|c| c.plan_id == *plan)),
            Change::NothingCached => {}
            Change::All => self.invalidate(),
        }
    }

    /// Whether every epoch after `last` up to `now` came from this process's
    /// own writes (already applied here); forgets those up to `now`.
    fn only_own(&self, last: i64, now: i64) -> bool {
        let mut own = self.own_epochs.lock().unwrap_or_else(|p| p.into_inner());
        let all_own = now > last
            && now - last <= OWN_EPOCHS as i64
            && (last + 1..=now).all(|e| own.contains(&e));
        own.retain(|&e| e > now);
        all_own
    }

    pub(crate) fn state(&self) -> CacheState {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheState {
            key_hits: load(&self.keys.hits),
            unknown_key_hits: load(&self.unknown_keys.hits),
            keys_loaded: load(&self.keys_loaded),
            unknown_keys_loaded: load(&self.unknown_keys_loaded),
            context_hits: load(&self.contexts.hits),
            context_misses: load(&self.contexts_loaded),
            keys: self.keys.len(),
            unknown_keys: self.unknown_keys.len(),
            contexts: self.contexts.len(),
        }
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
                            if let Some(last) = last.filter(|&l| l != now) {
                                if !cache.only_own(last, now) {
                                    cache.invalidate();
                                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted_clock() -> Arc<Clock> {
        let clock = Arc::new(Clock {
            generation: AtomicU64::new(0),
            confirmed_at: AtomicU64::new(0),
            origin: Instant::now(),
            ttl: Duration::from_secs(60),
        });
        clock
            .confirmed_at
            .store(clock.now_micros(), Ordering::Release);
        clock
    }

    fn map(budget: usize) -> CachedMap<u32, u32> {
        CachedMap::new(trusted_clock(), budget)
    }

    fn put(m: &CachedMap<u32, u32>, k: u32) {
        let (generation, drops) = (m.clock.generation.load(Ordering::Acquire), m.drops());
        m.store(k, k * 10, generation, drops);
    }

    #[test]
    fn a_full_map_evicts_the_least_recently_used_entry_only() {
        let m = map(3);
        for k in 1..=3 {
            put(&m, k);
        }
        assert_eq!(m.get_fresh(&1), Some(10), "1 is used again");
        put(&m, 4);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get_fresh(&2), None, "2 was the least recently used");
        for k in [1, 3, 4] {
            assert_eq!(m.get_fresh(&k), Some(k * 10), "{k} stays");
        }
    }

    #[test]
    fn a_load_that_raced_with_a_targeted_drop_is_not_kept() {
        let m = map(10);
        put(&m, 1);
        let (generation, drops) = (m.clock.generation.load(Ordering::Acquire), m.drops());
        // A change commits while the load of 2 is on its way.
        m.drop_where(|k, _| *k == 2);
        m.store(2, 20, generation, drops);
        assert_eq!(m.get_fresh(&2), None, "loaded before the change");
        assert_eq!(m.get_fresh(&1), Some(10), "untouched by the change");
        put(&m, 2);
        assert_eq!(m.get_fresh(&2), Some(20), "loaded after it");
    }

    #[test]
    fn a_flood_of_unknown_hashes_leaves_the_known_keys_cached() {
        let cache = ReadCache::new(Duration::from_secs(60), 1_000);
        cache.confirm(cache.clock.now_micros());
        for n in 0..100_000 {
            let stamp = cache.stamp();
            cache.store_key(format!("unknown-{n}"), None, stamp);
        }
        let state = cache.state();
        assert_eq!(state.unknown_keys, 1_000 / UNKNOWN_SHARE, "bounded");
        assert_eq!(
            cache.key("unknown-99999"),
            Some(None),
            "the newest is known unknown"
        );
        assert_eq!(cache.key("unknown-0"), None, "the oldest went");
    }

    #[test]
    fn the_poller_drops_nothing_for_epochs_of_this_process_only() {
        let cache = ReadCache::new(Duration::from_secs(60), 10);
        cache.changed(&Change::NothingCached, 5);
        cache.changed(&Change::NothingCached, 6);
        assert!(cache.only_own(4, 6), "5 and 6 are this process's");
        cache.changed(&Change::NothingCached, 8);
        assert!(!cache.only_own(6, 8), "7 came from another instance");
        assert!(
            !cache.only_own(8, 9),
            "8 was forgotten with the poll up to 8"
        );
    }

    #[test]
    fn invalidating_makes_every_entry_stale_and_frees_it() {
        let cache = ReadCache::new(Duration::from_secs(60), 10);
        cache.confirm(cache.clock.now_micros());
        let stamp = cache.stamp();
        cache.store_context(7, None, stamp);
        assert_eq!(cache.context(7), Some(None));
        cache.invalidate();
        assert_eq!(cache.context(7), None);
        cache.store_context(7, None, stamp);
        assert_eq!(cache.context(7), None, "a load from before is refused");
        assert_eq!(cache.state().contexts, 0);
    }
}
