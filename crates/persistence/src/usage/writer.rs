//! The batching writer: threads that take the access checks waiting for the
//! database and consume them in ONE transaction per batch, so one commit
//! (one fsync, one round trip of `COMMIT`) serves many checks. Each check is
//! answered after its batch committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_channel::oneshot;
use tollgate_domain::pending::{self, Pending};
use tollgate_domain::reservation::{ReservationId, Settle, SettleFailure, Settled};
use tollgate_domain::usage::{AccessContext, Consumed, Consumption};
use tollgate_domain::{StoreError, UserId};

use super::liveness::Liveness;
use super::sqlite::{event_tail, key_events, EventTail};
use crate::connection::ConnectionManager;
use crate::error::{copy_store_error, store_error};
use crate::testing::Faults;
use crate::{DbConnection, Pool, PoolStats};

type Connection = r2d2::PooledConnection<ConnectionManager>;

/// Tries of a batch that hit a deadlock before it is split.
const RETRIES: usize = 5;

/// A reservation's commit or release, for the writer to batch.
#[derive(Debug, Clone)]
pub(crate) struct SettleTask {
    pub(crate) id: ReservationId,
    /// Only this user's reservation (`None`: anyone's).
    pub(crate) by: Option<UserId>,
    /// That user's access context, when cached: the answer's quotas are
    /// read in the settlement's transaction.
    pub(crate) context: Option<Arc<AccessContext>>,
    pub(crate) settle: Settle,
    pub(crate) now: DateTime<Utc>,
}

/// What a job asks of the writer.
enum Task {
    Consume(Consumption),
    Settle(SettleTask),
}

/// What a job is answered.
pub(crate) enum Done {
    Consumed(Consumed),
    Settled(Result<Settled, SettleFailure>),
}

/// Where a check's answer goes: the future its caller awaits.
struct Reply(oneshot::Sender<Result<Done, StoreError>>);

impl Reply {
    /// Whether the caller stopped waiting (its future was dropped: the
    /// client went away, or its deadline passed).
    fn is_abandoned(&self) -> bool {
        self.0.is_canceled()
    }

    fn send(self, result: Result<Done, StoreError>) {
        // A caller that went away (client disconnected) needs no answer.
        let _ = self.0.send(result);
    }
}

struct Job {
    task: Task,
    reply: Reply,
    queued_at: Instant,
}

/// How the writer threads share the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterConfig {
    /// Threads sharing one queue of checks.
    pub(crate) threads: usize,
    /// The most checks in one transaction. A cap below the number of
    /// concurrent clients keeps the pipeline full: while one batch commits,
    /// the next one gathers, instead of every client waiting on the same
    /// commit and the writer then idling while they all send again.
    pub(crate) max_batch: usize,
    /// One transaction at a time, all on ONE connection kept across batches
    /// (SQLite, which has one write lock: a second writer waiting on it would
    /// sleep in SQLite's busy handler). Kept, the connection keeps its page
    /// cache: a connection that did not write the last commit must drop its
    /// cache and read every page again. Threads beyond the first would take
    /// turns holding it.
    pub(crate) exclusive: bool,
    /// SQLite: copy the WAL into the database every this many batches, on a
    /// thread of its own while the writer goes on committing (see
    /// [`checkpoint`]).
    pub(crate) checkpoint_every: Option<u64>,
    /// SQLite: key the newest usage events in bulk, once this many were
    /// granted (see [`Keying`]), on the connection kept when `exclusive`.
    pub(crate) key_events_every: Option<u64>,
    /// A nice value for the writer threads (Linux, where it is per thread):
    /// SQLite's one writer is the serial step every check goes through, and
    /// at the default it waited for a core behind the HTTP workers and the
    /// load it was answering. Lowering a nice value needs `CAP_SYS_NICE` (or
    /// root, or `RLIMIT_NICE`); without it the writer stays at the default
    /// and logs that at start.
    pub(crate) nice: Option<i32>,
    /// The most checks waiting for a batch; one more is refused at once
    /// (503 with `Retry-After`) instead of queueing without bound.
    pub(crate) queue_size: usize,
    /// How long a check may wait: one that waited longer for its batch is
    /// answered Unavailable without being consumed (its caller has given up).
    pub(crate) deadline: Duration,
}

/// What the writer counts for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    /// Checks refused because the queue was full.
    pub(crate) rejected: AtomicU64,
    /// Checks skipped because their caller stopped waiting before their batch.
    pub(crate) abandoned: AtomicU64,
}

/// What the writer threads share.
struct Shared {
    queue: Mutex<Receiver<Job>>,
    /// Held for a transaction when [`WriterConfig::exclusive`], with the
    /// connection the threads share (none until the first batch, and again
    /// after a batch failed).
    token: Mutex<Option<Connection>>,
    /// When [`WriterConfig::checkpoint_every`] is set (and its thread runs).
    checkpointer: Option<Checkpointer>,
    /// Makes the threads' own connections (MariaDB).
    manager: ConnectionManager,
    faults: Arc<Faults>,
}

impl Shared {
    fn token(&self) -> MutexGuard<'_, Option<Connection>> {
        self.token.lock().unwrap_or_else(|poisoned| {
            // A thread panicked mid-transaction: its connection is not trusted.
            self.token.clear_poison();
            let mut token = poisoned.into_inner();
            *token = None;
            token
        })
    }
}

/// The handle the pool's users send checks through.
pub(crate) struct Writer {
    jobs: SyncSender<Job>,
    stats: Arc<WriterStats>,
    liveness: Arc<Liveness>,
}

impl Writer {
    /// Starts the writer threads on `pool`. SQLite runs one, with a thread
    /// that checkpoints beside it; MariaDB overlaps the round trips of
    /// several batches. They end when the last handle is dropped.
    pub(crate) fn start(
        pool: Pool,
        stats: Arc<PoolStats>,
        manager: ConnectionManager,
        config: WriterConfig,
        faults: Arc<Faults>,
    ) -> Self {
        let (jobs, queue) = mpsc::sync_channel(config.queue_size.max(1));
        let writer_stats = Arc::new(WriterStats::default());
        let liveness = Arc::new(Liveness::default());
        let checkpointer = config
            .checkpoint_every
            .and_then(|every| Checkpointer::start(every, pool.clone(), stats.clone()));
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            token: Mutex::new(None),
            checkpointer,
            manager,
            faults,
        });
        for n in 0..config.threads.max(1) {
            let (pool, shared, stats) = (pool.clone(), shared.clone(), stats.clone());
            let (writer_stats, alive) = (writer_stats.clone(), liveness.start());
            let spawned = thread::Builder::new()
                .name(format!("tollgate-writer-{n}"))
                .spawn(move || {
                    let _alive = alive;
                    if let Some(nice) = config.nice {
                        set_nice(nice);
                    }
                    run(&pool, &stats, &writer_stats, &shared, config)
                });
            if let Err(e) = spawned {
                log::error!("cannot start a batching writer: {e}");
            }
        }
        Self {
            jobs,
            stats: writer_stats,
            liveness,
        }
    }

    /// Whether every writer thread runs.
    pub(crate) fn is_alive(&self) -> bool {
        self.liveness.all_alive()
    }

    pub(crate) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    fn submit(&self, task: Task, reply: Reply) -> Result<(), StoreError> {
        let job = Job {
            task,
            reply,
            queued_at: Instant::now(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Unavailable(
                    "the batching writer's queue is full".into(),
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(StoreError::Unexpected("the batching writer stopped".into()))
            }
        }
    }

    /// Consumes through the writer; the answer comes once the batch
    /// committed (at once when the queue is full).
    pub(crate) fn consume(
        &self,
        consumption: &Consumption,
    ) -> Pending<Result<Consumed, StoreError>> {
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.submit(Task::Consume(consumption.clone()), Reply(reply)) {
            return pending::ready(Err(e));
        }
        pending::later(async move {
            match answer.await.map_err(|_| dropped())?? {
                Done::Consumed(consumed) => Ok(consumed),
                Done::Settled(_) => Err(StoreError::Unexpected("a settlement's answer".into())),
            }
        })
    }

    /// Commits or releases a reservation through the writer, in a batch's
    /// transaction; the answer comes once it committed.
    pub(crate) fn settle(&self, task: SettleTask) -> Pending<Result<Settled, SettleFailure>> {
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.submit(Task::Settle(task), Reply(reply)) {
            return pending::ready(Err(SettleFailure::Store(e)));
        }
        pending::later(async move {
            match answer.await.map_err(|_| dropped())? {
                Ok(Done::Settled(settled)) => settled,
                Ok(Done::Consumed(_)) => Err(SettleFailure::Store(StoreError::Unexpected(
                    "a check's answer".into(),
                ))),
                Err(e) => Err(SettleFailure::Store(e)),
            }
        })
    }
}

/// Gives the calling thread the nice value `nice`; logs why not if it cannot.
fn set_nice(nice: i32) {
    if let Err(e) = try_set_nice(nice) {
        log::info!("the batching writer keeps the default priority (nice {nice} refused: {e})");
    }
}

#[cfg(target_os = "linux")]
fn try_set_nice(nice: i32) -> std::io::Result<()> {
    let thread = rustix::thread::gettid();
    rustix::process::setpriority_process(Some(thread), nice).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn try_set_nice(_nice: i32) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "a per-thread nice value is Linux only",
    ))
}

/// Takes the next batch: waits for one job, then whatever else is queued
/// (None once every sender is gone).
pub(crate) fn next_batch<J>(queue: &Receiver<J>, max_batch: usize) -> Option<Vec<J>> {
    let first = queue.recv().ok()?;
    let mut batch = vec![first];
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The jobs of `batch` still worth running: a job whose caller stopped
/// waiting, or that waited past the deadline (its caller was answered 503),
/// is dropped unconsumed and counted.
fn still_wanted(batch: Vec<Job>, deadline: Duration, stats: &WriterStats) -> Vec<Job> {
    let before = batch.len();
    let wanted: Vec<Job> = batch
        .into_iter()
        .filter_map(|job| {
            if job.reply.is_abandoned() {
                return None;
            }
            if job.queued_at.elapsed() > deadline {
                job.reply.send(Err(unavailable(
                    "the check waited too long for the database".into(),
                )));
                return None;
            }
            Some(job)
        })
        .collect();
    let dropped = (before - wanted.len()) as u64;
    if dropped > 0 {
        stats.abandoned.fetch_add(dropped, Ordering::Relaxed);
    }
    wanted
}

fn run(
    pool: &Pool,
    stats: &PoolStats,
    writer_stats: &WriterStats,
    shared: &Shared,
    config: WriterConfig,
) {
    let mut keying = config.key_events_every.map(Keying::new);
    // This thread's own connection, when it does not share SQLite's.
    let mut own: Option<DbConnection> = None;
    // One thread at a time waits on the queue and takes what is there.
    let take = || next_batch(&*shared.queue.lock().ok()?, config.max_batch.max(1));
    while let Some(batch) = take() {
        shared.faults.writer_batch();
        let batch = still_wanted(batch, config.deadline, writer_stats);
        if batch.is_empty() {
            continue;
        }
        // Checks first, then settlements: the results come in that order.
        let mut items = Vec::with_capacity(batch.len());
        let mut settles = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        let mut settle_replies = Vec::new();
        for job in batch {
            match job.task {
                Task::Consume(c) => {
                    items.push(c);
                    replies.push(job.reply);
                }
                Task::Settle(t) => {
                    settles.push(t);
                    settle_replies.push(job.reply);
                }
            }
        }
        replies.extend(settle_replies);
        // A bug in one batch must not stop the writer for every later check,
        // nor leave its transaction open: the connection it ran on is closed
        // (a pooled one dropped with its transaction open is closed by the
        // pool, `ConnectionManager::has_broken`), which rolls the
        // transaction back and, on SQLite, frees the write lock at once.
        let mut held = config.exclusive.then(|| shared.token());
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut src = match held.as_mut() {
                Some(held) => Source::Held { pool, stats, held },
                None => Source::Owned {
                    manager: &shared.manager,
                    own: &mut own,
                },
            };
            consume_on(&mut src, &shared.faults, &items, &settles)
        }));
        if results.is_err() {
            // Closed, the connection's transaction is rolled back (and
            // SQLite's write lock freed) at once.
            if let Some(held) = held.as_mut() {
                **held = None;
            }
            own = None;
        }
        drop(held);
        let results = results.unwrap_or_else(|_| {
            log::error!(
                "the batching writer panicked on a batch of {} checks",
                replies.len()
            );
            replies
                .iter()
                .map(|_| Err(StoreError::Unexpected("the batching writer failed".into())))
                .collect()
        });
        if let Some(keying) = keying.as_mut() {
            keying.count_granted(&results);
        }
        for (reply, result) in replies.into_iter().zip(results) {
            reply.send(result);
        }
        if let Some(checkpointer) = &shared.checkpointer {
            checkpointer.batch_committed();
        }
        if let Some(keying) = keying.as_mut() {
            if let Some(conn) = shared.token().as_mut() {
                keying.batch_committed(conn);
            }
        }
    }
}

/// Keys one transaction writes, after one batch: a short pause of the checks.
const KEYS_PER_TX: usize = 1_024;

/// Keys the newest usage events in bulk (SQLite): once `every` events were
/// granted since the last pass, it reads the events above
/// `usage_events_keyed.upto` (the tail, at most twice `every`), sorts their
/// keys, and writes them in transactions of [`KEYS_PER_TX`], one after each
/// batch, the last one moving `upto`. Sorted and many at once, the keys of a
/// user's events share leaves: 8,192 events of 1,000 users fill ~1,000
/// leaves, where an index written with each event wrote one leaf per event
/// into the WAL. Reads find the tail by id meanwhile.
struct Keying {
    every: u64,
    /// Events granted since the last pass started.
    granted: u64,
    /// A pass under way: its tail (keys sorted) and how many are written.
    pass: Option<(EventTail, usize)>,
}

impl Keying {
    fn new(every: u64) -> Self {
        Self {
            every: every.max(1),
            granted: 0,
            pass: None,
        }
    }

    fn count_granted(&mut self, results: &[Result<Done, StoreError>]) {
        let granted = results
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Ok(Done::Consumed(Consumed::Granted { .. }) | Done::Settled(Ok(_)))
                )
            })
            .count();
        self.granted += granted as u64;
    }

    /// After a batch was answered: starts a pass, or writes its next keys.
    fn batch_committed(&mut self, conn: &mut DbConnection) {
        let Some((tail, written)) = &mut self.pass else {
            if self.granted >= self.every {
                self.granted = 0;
                let most = i64::try_from(self.every.saturating_mul(2)).unwrap_or(i64::MAX);
                match event_tail(conn, most) {
                    Ok(mut tail) if !tail.keys.is_empty() => {
                        tail.keys.sort_unstable();
                        self.pass = Some((tail, 0));
                    }
                    Ok(_) => {}
                    Err(e) => log::warn!("cannot read the usage events to key: {e}"),
                }
            }
            return;
        };
        let end = (*written + KEYS_PER_TX).min(tail.keys.len());
        let last = end == tail.keys.len();
        let chunk = &tail.keys[*written..end];
        match key_events(conn, chunk, last.then_some(&*tail)) {
            Ok(()) if last => self.pass = None,
            Ok(()) => *written = end,
            Err(e) => {
                log::warn!("keying usage events failed ({e}); the next pass does it again");
                self.pass = None;
            }
        }
    }
}

/// The thread that checkpoints every `every` batches, woken by the writer.
struct Checkpointer {
    every: u64,
    batches: AtomicU64,
    /// Full while a checkpoint is pending.
    wake: SyncSender<()>,
}

impl Checkpointer {
    /// `None` if the thread could not start (SQLite's own checkpoint then
    /// still restarts the WAL, see [`checkpoint`]).
    fn start(every: u64, pool: Pool, stats: Arc<PoolStats>) -> Option<Self> {
        let (wake, asked) = mpsc::sync_channel::<()>(1);
        let spawned = thread::Builder::new()
            .name("tollgate-checkpoint".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    checkpoint(&pool, &stats);
                }
            });
        match spawned {
            Ok(_) => Some(Self {
                every: every.max(1),
                batches: AtomicU64::new(0),
                wake,
            }),
            Err(e) => {
                log::error!("cannot start the WAL checkpoint thread: {e}");
                None
            }
        }
    }

    /// Counts a batch; wakes the thread on every `every`-th.
    fn batch_committed(&self) {
        if !(self.batches.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.every) {
            return;
        }
        match self.wake.try_send(()) {
            // Full: the last one has not started yet, and will cover this.
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => log::warn!("the WAL checkpoint thread stopped"),
        }
    }
}

/// Copies the SQLite WAL into the database off the path of the checks:
/// the writer goes on committing batches meanwhile. Left to
/// SQLite, the checkpoint ran inside the `COMMIT` of whichever batch crossed
/// its threshold (every 1,000 frames), and every waiting check waited for it.
/// SQLite's own checkpoint now only restarts the WAL once it passes
/// 100,000 frames (its frames are then nearly all copied already). Rare
/// checkpoints copy each hot page once for many commits: every 1,024
/// batches gave a lower p99 than every 256 (docs/performance.md).
fn checkpoint(pool: &Pool, stats: &PoolStats) {
    let mut conn = match stats.get(pool) {
        Ok(c) => c,
        Err(e) => return log::warn!("no connection to checkpoint the WAL: {e}"),
    };
    let conn: &mut DbConnection = &mut conn;
    if let Err(e) = conn.checkpoint_wal() {
        log::warn!("WAL checkpoint failed: {e}");
    }
}

fn dropped() -> StoreError {
    StoreError::Unexpected("the batching writer dropped a check".into())
}

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable(message.into())
}

/// Where a writer thread's batches run: SQLite's one connection, taken from
/// the pool and kept across batches (shared by the threads, see
/// [`WriterConfig::exclusive`]), or a connection of the thread's own, made
/// by the connection manager (MariaDB). Either is replaced after any
/// failure: a connection a statement failed on is never used again, so a
/// connection left out of step with its server cannot hang every later
/// batch (once, under the full test suite, a MariaDB batch retried after
/// deadlocks waited forever for an answer its server never sent).
enum Source<'a> {
    Held {
        pool: &'a Pool,
        stats: &'a PoolStats,
        held: &'a mut Option<Connection>,
    },
    Owned {
        manager: &'a ConnectionManager,
        own: &'a mut Option<DbConnection>,
    },
}

impl Source<'_> {
    fn get(&mut self) -> Result<&mut DbConnection, StoreError> {
        match self {
            Self::Held { pool, stats, held } => match held {
                Some(conn) => Ok(conn),
                None => {
                    let mut conn = stats.get(pool).map_err(|e| unavailable(e.to_string()))?;
                    if let Err(e) = conn.enlarge_page_cache() {
                        log::warn!(
                            "the writer's connection keeps SQLite's default page cache: {e}"
                        );
                    }
                    Ok(held.insert(conn))
                }
            },
            Self::Owned { manager, own } => match own {
                Some(conn) => Ok(conn),
                None => {
                    use r2d2::ManageConnection;
                    let conn = manager.connect().map_err(|e| unavailable(e.to_string()))?;
                    Ok(own.insert(conn))
                }
            },
        }
    }

    /// Closes the connection (rolling back whatever it had open).
    fn discard(&mut self) {
        match self {
            Self::Held { held, .. } => **held = None,
            Self::Owned { own, .. } => **own = None,
        }
    }
}

/// The batch in one transaction; a deadlock victim (or a lock wait that
/// timed out) is retried, and a batch that fails otherwise is split so that
/// one bad check fails alone. Every try after a failure runs on a new
/// connection. The results: the checks', then the settlements'.
fn consume_on(
    src: &mut Source<'_>,
    faults: &Faults,
    items: &[Consumption],
    settles: &[SettleTask],
) -> Vec<Result<Done, StoreError>> {
    let total = items.len() + settles.len();
    let mut tries = 0;
    loop {
        let conn = match src.get() {
            Ok(conn) => conn,
            Err(e) => return (0..total).map(|_| Err(copy_store_error(&e))).collect(),
        };
        faults.in_transaction(conn);
        let e = match super::consume_batch(conn, items, settles) {
            Ok((consumed, settled)) => {
                return consumed
                    .into_iter()
                    .map(|c| Ok(Done::Consumed(c)))
                    .chain(settled.into_iter().map(|s| Ok(Done::Settled(s))))
                    .collect()
            }
            Err(e) => e,
        };
        let retry = conn.is_retryable(&e);
        src.discard();
        tries += 1;
        if retry && tries < RETRIES {
            continue;
        }
        if total == 1 {
            return vec![Err(store_error(e))];
        }
        log::warn!("a batch of {total} checks failed ({e}); running them one by one");
        let one = |src: &mut Source<'_>, items: &[Consumption], settles: &[SettleTask]| {
            consume_on(src, faults, items, settles)
                .pop()
                .unwrap_or_else(|| Err(dropped()))
        };
        let mut results: Vec<Result<Done, StoreError>> = items
            .iter()
            .map(|item| one(src, std::slice::from_ref(item), &[]))
            .collect();
        results.extend(
            settles
                .iter()
                .map(|task| one(src, &[], std::slice::from_ref(task))),
        );
        return results;
    }
}
