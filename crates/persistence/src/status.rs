//! [`StoreStatus`] for [`Database`]: its readiness and counters in the
//! domain's terms.

use tollgate_domain::status::{self, NotReady, StoreState, StoreStatus};

use crate::Database;

impl StoreStatus for Database {
    fn ready(&self) -> Result<(), NotReady> {
        if !self.threads_alive() {
            return Err(NotReady::ThreadStopped);
        }
        self.ping().map_err(NotReady::Store)
    }

    fn state(&self) -> StoreState {
        let pool = self.pool_state();
        let hot = self.hot_path_state();
        let cache = hot.cache;
        StoreState {
            pool: status::PoolState {
                max_size: pool.max_size,
                connections: pool.connections,
                idle: pool.idle,
                checkouts: pool.checkouts,
                wait_seconds: pool.wait_seconds,
                timeouts: pool.timeouts,
            },
            hot_path: status::HotPathState {
                checks_rejected: hot.checks_rejected,
                checks_abandoned: hot.checks_abandoned,
                cache: status::CacheState {
                    key_hits: cache.key_hits,
                    unknown_key_hits: cache.unknown_key_hits,
                    keys_loaded: cache.keys_loaded,
                    unknown_keys_loaded: cache.unknown_keys_loaded,
                    context_hits: cache.context_hits,
                    context_misses: cache.context_misses,
                    keys: cache.keys,
                    unknown_keys: cache.unknown_keys,
                    contexts: cache.contexts,
                },
            },
        }
    }
}
