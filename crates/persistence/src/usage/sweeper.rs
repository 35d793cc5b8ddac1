//! The background sweep: releases the held reservations past their expiry,
//! and removes the idempotency records past their lifetime and the settled
//! reservations 24 hours after their expiry, and the usage events older
//! than the retention, in small steps so that no step
//! holds the writers up for long.
//! It runs on a thread of its own until the last handle of the database
//! goes away.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tollgate_domain::idempotency::KEPT_HOURS;
use tollgate_domain::StoreError;

use tollgate_domain::reservation::{Settle, SettleFailure};

use super::idempotency;
use crate::error::store_error;
use crate::reservation;
use crate::{DbConnection, Pool, PoolStats};

/// Records one step removes: a short transaction.
const STEP: i64 = 1_000;

/// Old events one purge step deletes, and the pause between two steps:
/// a step holds the database's write lock (SQLite's only one), so it is
/// kept to a few milliseconds and the writer finds the lock free most of
/// the time; at most 5,000 events a second, a day's purge of 400 million.
const PURGE_STEP: i64 = 100;
const PURGE_PAUSE: Duration = Duration::from_millis(20);

/// Keeps the sweep's thread running while it lives.
pub(crate) struct Sweeper {
    _alive: Sender<()>,
}

impl Sweeper {
    /// Starts the sweep on `pool`, a pass every `every`.
    pub(crate) fn start(
        pool: Pool,
        stats: std::sync::Arc<PoolStats>,
        every: Duration,
        retention: Option<chrono::Duration>,
    ) -> Self {
        let (alive, stopped) = mpsc::channel::<()>();
        let spawned = thread::Builder::new()
            .name("tollgate-sweep".into())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                if let Err(e) = sweep(&pool, &stats, Utc::now(), retention) {
                    log::warn!("the background sweep failed: {e}");
                }
            });
        if let Err(e) = spawned {
            log::error!("the background sweep cannot start: {e}");
        }
        Self { _alive: alive }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Held reservations released at their expiry.
    pub released: usize,
    /// Idempotency records removed.
    pub records: usize,
    /// Settled reservations removed, 24 hours after their expiry.
    pub settled: usize,
    /// Usage events removed, older than the retention.
    pub events: usize,
}

/// One pass at `now`: every held reservation due, a transaction each (a
/// commit racing it: whichever locks the reservation first applies), then
/// every record older than its lifetime, a step at a time, then the usage
/// events older than `retention`, a step at a time with a pause between
/// steps (the writers take the lock in it).
pub(crate) fn sweep(
    pool: &Pool,
    stats: &PoolStats,
    now: DateTime<Utc>,
    retention: Option<chrono::Duration>,
) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    let mut conn = stats
        .get(pool)
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
    loop {
        let due = reservation::due(&mut conn, now, STEP).map_err(store_error)?;
        for id in &due {
            match reservation::settle_on(&mut conn, id, Settle::Release, now) {
                Ok(_) => swept.released += 1,
                // Settled meanwhile (committed or released by its user).
                Err(SettleFailure::Refused(_) | SettleFailure::NotFound) => {}
                Err(SettleFailure::Store(e)) => return Err(e),
            }
        }
        if i64::try_from(due.len()).unwrap_or(i64::MAX) < STEP {
            break;
        }
    }
    // Settled reservations are kept as long as records (a repeat of the
    // request that made one answers with its id).
    let before = now - chrono::Duration::hours(KEPT_HOURS);
    swept.records = in_steps(&mut conn, STEP, Duration::ZERO, |c, limit| {
        idempotency::remove_older_than(c, before, limit)
    })?;
    swept.settled = in_steps(&mut conn, STEP, Duration::ZERO, |c, limit| {
        reservation::remove_settled_before(c, before, limit)
    })?;
    if let Some(kept) = retention {
        let horizon = crate::time::to_db(now - kept);
        swept.events = in_steps(&mut conn, PURGE_STEP, PURGE_PAUSE, |c, limit| {
            super::events::purge_step(c, horizon, limit)
        })?;
    }
    Ok(swept)
}

/// Runs `step(conn, limit)` (a delete of at most `limit` rows) one short
/// transaction at a time, `pause` between two, until a step removes fewer;
/// how many went in all.
fn in_steps(
    conn: &mut DbConnection,
    limit: i64,
    pause: Duration,
    step: impl Fn(&mut DbConnection, i64) -> diesel::QueryResult<usize>,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    loop {
        let done = conn.write_tx(|c| step(c, limit)).map_err(store_error)?;
        removed += done;
        if i64::try_from(done).unwrap_or(i64::MAX) < limit {
            return Ok(removed);
        }
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
}
