//! The background sweep: removes the idempotency records past their
//! lifetime, in small steps so that no step holds the writers up for long.
//! It runs on a thread of its own until the last handle of the database
//! goes away.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tollgate_domain::idempotency::KEPT_HOURS;
use tollgate_domain::StoreError;

use super::idempotency;
use crate::error::store_error;
use crate::{Pool, PoolStats};

/// Records one step removes: a short transaction.
const STEP: i64 = 1_000;

/// Keeps the sweep's thread running while it lives.
pub(crate) struct Sweeper {
    _alive: Sender<()>,
}

impl Sweeper {
    /// Starts the sweep on `pool`, a pass every `every`.
    pub(crate) fn start(pool: Pool, stats: std::sync::Arc<PoolStats>, every: Duration) -> Self {
        let (alive, stopped) = mpsc::channel::<()>();
        let spawned = thread::Builder::new()
            .name("tollgate-sweep".into())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                if let Err(e) = sweep(&pool, &stats, Utc::now()) {
                    log::warn!("the background sweep failed: {e}");
                }
            });
        if let Err(e) = spawned {
            log::error!("the background sweep cannot start: {e}");
        }
        Self { _alive: alive }
    }
}

/// One pass at `now`: every record older than its lifetime, a step at a
/// time; how many went.
pub(crate) fn sweep(
    pool: &Pool,
    stats: &PoolStats,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let before = now - chrono::Duration::hours(KEPT_HOURS);
    let mut removed = 0;
    loop {
        let mut conn = stats
            .get(pool)
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let step = conn
            .write_tx(|c| idempotency::remove_older_than(c, before, STEP))
            .map_err(store_error)?;
        removed += step;
        if i64::try_from(step).unwrap_or(i64::MAX) < STEP {
            return Ok(removed);
        }
    }
}
