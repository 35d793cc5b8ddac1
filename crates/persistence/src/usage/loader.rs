//! The read cache's loader: ONE thread that takes every lookup the cache
//! missed and answers all those waiting at once, with one query per kind on
//! one connection, as the batching writer does for checks.
//!
//! A cold cache (a fresh start, or after a change dropped it) is missed by
//! every client at once: answered one by one, each miss would cost a
//! connection checkout (a round trip on MariaDB) and three queries, taken
//! from the writers' database time. Batched, a burst of misses costs a few
//! statements (docs/performance.md has the numbers).
//!
//! A key's lookup also loads its user's access context: every access check
//! needs both, so the check finds the context cached.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;

use futures_channel::oneshot;
use tollgate_domain::api_key::KeyAndUser;
use tollgate_domain::pending::{self, Pending};
use tollgate_domain::usage::AccessContext;
use tollgate_domain::StoreError;

use super::cache::ReadCache;
use super::liveness::Liveness;
use super::writer::next_batch;
use crate::error::{copy_store_error, store_error};
use crate::testing::Faults;
use crate::{DbConnection, Pool, PoolStats};

/// The most lookups answered by one batch.
const MAX_BATCH: usize = 256;

/// The most lookups waiting: this bounds what a stalled database can pile
/// up; one more is answered Unavailable at once.
const QUEUE_SIZE: usize = 4_096;

type Answer<T> = oneshot::Sender<Result<T, StoreError>>;

/// A lookup waiting for the loader, and where its answer goes.
enum Job {
    Key(String, Answer<Option<Arc<KeyAndUser>>>),
    Context(i64, Answer<Option<Arc<AccessContext>>>),
}

/// The handle the repositories send their cache misses through.
pub(crate) struct Loader {
    jobs: SyncSender<Job>,
    liveness: Arc<Liveness>,
}

impl Loader {
    /// Starts the loader thread; it stores what it loads in `cache`, and ends
    /// when the last handle is dropped. Callers bound their own wait: a
    /// lookup whose caller stopped waiting is not loaded.
    pub(crate) fn start(
        pool: Pool,
        stats: Arc<PoolStats>,
        cache: Arc<ReadCache>,
        faults: Arc<Faults>,
    ) -> Self {
        let (jobs, queue) = mpsc::sync_channel(QUEUE_SIZE);
        let liveness = Arc::new(Liveness::default());
        let alive = liveness.start();
        let spawned = thread::Builder::new()
            .name("tollgate-loader".into())
            .spawn(move || {
                let _alive = alive;
                while let Some(batch) = next_batch(&queue, MAX_BATCH) {
                    faults.loader_batch();
                    // A bug in one batch must not stop every later lookup;
                    // its callers see their answer channel close.
                    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        serve(&pool, &stats, &cache, batch)
                    }));
                    if served.is_err() {
                        log::error!("the read cache's loader panicked on a batch");
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the read cache's loader: {e}");
        }
        Self { jobs, liveness }
    }

    /// Whether the loader thread runs.
    pub(crate) fn is_alive(&self) -> bool {
        self.liveness.all_alive()
    }

    /// The key with this hash and its user, once loaded.
    pub(crate) fn key(&self, hash: &str) -> Pending<Result<Option<Arc<KeyAndUser>>, StoreError>> {
        let hash = hash.to_owned();
        self.ask(|answer| Job::Key(hash, answer))
    }

    /// The user's access context, once loaded.
    pub(crate) fn context(
        &self,
        user_id: i64,
    ) -> Pending<Result<Option<Arc<AccessContext>>, StoreError>> {
        self.ask(|answer| Job::Context(user_id, answer))
    }

    fn ask<T: Send + 'static>(
        &self,
        job: impl FnOnce(Answer<T>) -> Job,
    ) -> Pending<Result<T, StoreError>> {
        let (answer, reply) = oneshot::channel();
        match self.jobs.try_send(job(answer)) {
            Ok(()) => pending::later(async move { reply.await.unwrap_or_else(|_| Err(stopped())) }),
            Err(TrySendError::Full(_)) => pending::ready(Err(StoreError::Unavailable(
                "the read cache's loader is overloaded".into(),
            ))),
            Err(TrySendError::Disconnected(_)) => pending::ready(Err(stopped())),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unexpected("the read cache's loader stopped".into())
}

/// What one batch found: keys by hash, contexts by user id.
type Loaded = (
    HashMap<String, Arc<KeyAndUser>>,
    HashMap<i64, Arc<AccessContext>>,
);

/// Loads the batch's lookups, stores them in the cache under the generation
/// read before the queries (a change meanwhile makes them stale at once) and
/// answers every job.
fn serve(pool: &Pool, stats: &PoolStats, cache: &ReadCache, mut batch: Vec<Job>) {
    // Nobody waits for these any more (the client left, its deadline passed).
    batch.retain(|job| match job {
        Job::Key(_, answer) => !answer.is_canceled(),
        Job::Context(_, answer) => !answer.is_canceled(),
    });
    if batch.is_empty() {
        return;
    }
    let stamp = cache.stamp();
    let loaded = match stats.get(pool) {
        Ok(mut conn) => load(&mut conn, &batch).map_err(store_error),
        Err(e) => Err(StoreError::Unavailable(Box::new(e))),
    };
    let (keys, contexts) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            for job in batch {
                match job {
                    Job::Key(_, answer) => send(answer, Err(copy_store_error(&e))),
                    Job::Context(_, answer) => send(answer, Err(copy_store_error(&e))),
                }
            }
            return;
        }
    };
    for found in keys.values() {
        let user_id = found.user.id.get();
        let context = contexts.get(&user_id).cloned();
        cache.store_context(user_id, context, stamp);
    }
    for job in batch {
        match job {
            Job::Key(hash, answer) => {
                let found = keys.get(&hash).cloned();
                cache.store_key(hash, found.clone(), stamp);
                send(answer, Ok(found));
            }
            Job::Context(user_id, answer) => {
                cache.count_context_load();
                let found = contexts.get(&user_id).cloned();
                cache.store_context(user_id, found.clone(), stamp);
                send(answer, Ok(found));
            }
        }
    }
}

/// The batch's keys (with their users), and the contexts of the users asked
/// for and of the keys' users.
fn load(conn: &mut DbConnection, batch: &[Job]) -> Result<Loaded, diesel::result::Error> {
    let (mut hashes, mut user_ids) = (Vec::new(), Vec::new());
    for job in batch {
        match job {
            Job::Key(hash, _) => hashes.push(hash.as_str()),
            Job::Context(user_id, _) => user_ids.push(*user_id),
        }
    }
    let keys = shared(&hashes, |hashes| {
        crate::api_key::keys_find_by_hash(conn, hashes)
    })?;
    user_ids.extend(keys.values().map(|found| found.user.id.get()));
    user_ids.sort_unstable();
    user_ids.dedup();
    let contexts = shared(&user_ids, |ids| super::access_contexts(conn, ids))?;
    Ok((keys, contexts))
}

/// `query(asked)`'s values shared, and no query when nothing is asked.
fn shared<A, K: Eq + Hash, V>(
    asked: &[A],
    query: impl FnOnce(&[A]) -> Result<HashMap<K, V>, diesel::result::Error>,
) -> Result<HashMap<K, Arc<V>>, diesel::result::Error> {
    if asked.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(query(asked)?
        .into_iter()
        .map(|(k, v)| (k, Arc::new(v)))
        .collect())
}

/// A caller that went away needs no answer.
fn send<T>(answer: Answer<T>, result: Result<T, StoreError>) {
    let _ = answer.send(result);
}
