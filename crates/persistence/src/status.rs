//! [`StoreStatus`] for [`Database`]: its readiness and counters in the
//! domain's terms.

use tollgate_domain::status::{NotReady, StoreState, StoreStatus};

use crate::Database;

impl StoreStatus for Database {
    fn ready(&self) -> Result<(), NotReady> {
        if !self.threads_alive() {
            return Err(NotReady::ThreadStopped);
        }
        self.ping().map_err(NotReady::Store)
    }

    fn state(&self) -> StoreState {
        StoreState {
            pool: self.pool_state(),
            hot_path: self.hot_path_state(),
        }
    }
}
