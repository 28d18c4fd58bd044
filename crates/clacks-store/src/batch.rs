//! Group commit for messages: concurrent sends share one transaction.
//!
//! One fsync per message caps a database at hundreds to a few thousand
//! commits per second, and a channel's writers queue on its seq row lock.
//! Every message goes through one writer task per store instead: it takes
//! whatever has queued up (at most [`MAX_BATCH`]), stores it in one
//! transaction, commits, and only then answers each caller, so an ack
//! still means committed. Nothing waits for a timer: at low load a batch is
//! one message and costs what a direct insert costs.
//!
//! With a pipeline depth above one, the next batch starts once the previous
//! one has run its statements and is committing, so its round trips overlap
//! the previous commit's log flush. Batches still take their seqs in order
//! (a batch starts only after the previous one holds its channel locks, and
//! its own seq update waits for them) and are answered in order.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clacks_core::{Error, Result};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{NewMessage, StoredMessage};

/// Most messages stored in one transaction.
pub(crate) const MAX_BATCH: usize = 256;
/// Sends waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

pub(crate) struct Pending {
    pub new: NewMessage,
    pub reply: oneshot::Sender<Result<StoredMessage>>,
}

impl Pending {
    pub fn answer(self, result: Result<StoredMessage>) {
        // The caller may have gone away (client disconnected); the message
        // is stored all the same.
        let _ = self.reply.send(result);
    }
}

/// A batch's place in the pipeline.
pub(crate) struct Stage {
    committing: Option<oneshot::Sender<()>>,
    previous: Option<oneshot::Receiver<()>>,
}

impl Stage {
    /// Lets the next batch start: this one holds every lock it needs and
    /// only its commit remains. Dropping the stage does the same.
    pub fn committing(&mut self) {
        if let Some(committing) = self.committing.take() {
            let _ = committing.send(());
        }
    }

    /// Waits until the previous batch has answered its callers, so that
    /// acks leave in seq order.
    pub async fn previous_answered(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error means the previous batch's task ended (or panicked)
            // without signalling: it answers nothing more either way.
            let _ = previous.await;
        }
    }
}

/// Connections the batch writer keeps checked out between batches. A
/// connection taken from a sqlx pool is pinged when acquired and again when
/// released, two round trips per batch on the writer's critical path; kept
/// connections skip both. One idle for a while goes back to the pool, whose
/// acquire then checks a connection is alive.
pub(crate) struct KeptConnections<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    /// Off for SQLite: its single write connection serves other writes too.
    keep: bool,
    idle: Mutex<Vec<(sqlx::pool::PoolConnection<DB>, Instant)>>,
    reachability: Arc<Reachability>,
}

/// A kept connection idle longer than this is checked by the pool again.
const KEPT_IDLE: Duration = Duration::from_secs(10);

/// How long a batch pool of its own (MySQL/MariaDB, PostgreSQL) may take
/// to hand out a connection. It has one connection per batch in flight, so
/// it never waits for another batch to release one: its acquire only ever
/// waits for a connect, which takes milliseconds. The shared pools' longer
/// timeout would hold every send for 5 s when the database refuses
/// connections (sqlx retries a refused connect until the timeout).
pub(crate) const BATCH_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// While the database is unreachable, how often a batch tries it again;
/// the batches in between are refused at once.
const OUTAGE_RETRY: Duration = Duration::from_millis(250);

/// Whether the database answers, as the batch writer last found: a batch
/// that could not get a working connection starts an outage, during which
/// sends are refused at once (`Unavailable`) instead of each waiting for a
/// connect to time out, except one batch every [`OUTAGE_RETRY`] that tries
/// again. The first batch that reaches the database ends it.
#[derive(Default)]
pub(crate) struct Reachability {
    /// Set during an outage: when the next batch may try the database.
    retry_at: Mutex<Option<Instant>>,
}

impl Reachability {
    fn retry_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.retry_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_down(&self) -> bool {
        self.retry_at().is_some()
    }

    /// Whether a batch may try the database now; during an outage, the
    /// one that may claims the next try.
    fn admit(&self) -> Result<()> {
        let mut retry_at = self.retry_at();
        match *retry_at {
            Some(at) if Instant::now() < at => Err(Error::Unavailable(
                "the database is unreachable; retry later".into(),
            )),
            Some(_) => {
                *retry_at = Some(Instant::now() + OUTAGE_RETRY);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records how an attempt to reach the database went: an `Unavailable`
    /// error (no connection, or it broke) starts or extends an outage,
    /// anything else ends it.
    fn observe(&self, error: Option<&Error>) {
        let mut retry_at = self.retry_at();
        match error {
            Some(Error::Unavailable(why)) => {
                if retry_at.is_none() {
                    tracing::warn!(error = %why, "database unreachable: refusing sends until it answers again");
                }
                *retry_at = Some(Instant::now() + OUTAGE_RETRY);
            }
            _ => {
                if retry_at.take().is_some() {
                    tracing::info!("database reachable again: accepting sends");
                }
            }
        }
    }
}

impl<DB: sqlx::Database> KeptConnections<DB> {
    pub fn new(pool: sqlx::Pool<DB>, keep: bool, reachability: Arc<Reachability>) -> Self {
        KeptConnections {
            pool,
            keep,
            idle: Mutex::new(Vec::new()),
            reachability,
        }
    }

    /// A connection for the next batch, and whether it was kept (not
    /// checked by the pool since its last batch); during an outage,
    /// `Unavailable` at once unless this batch may try again.
    pub async fn take(&self) -> Result<(sqlx::pool::PoolConnection<DB>, bool)> {
        self.reachability.admit()?;
        let kept = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            // Dropped, stale ones return to the pool, so that the acquire
            // below can have them (the pool holds no more than the writer).
            idle.retain(|(_, since)| since.elapsed() < KEPT_IDLE);
            idle.pop()
        };
        match kept {
            Some((connection, _)) => Ok((connection, true)),
            None => Ok((self.fresh().await?, false)),
        }
    }

    /// A connection checked by the pool.
    pub async fn fresh(&self) -> Result<sqlx::pool::PoolConnection<DB>> {
        let acquired = self.pool.acquire().await.map_err(crate::db_error);
        if let Err(error) = &acquired {
            self.reachability.observe(Some(error));
        }
        acquired
    }

    /// Records how a batch that had a connection went (see
    /// [`Reachability`]).
    pub fn observe(&self, error: Option<&Error>) {
        self.reachability.observe(error);
    }

    /// Keeps a connection whose last batch went through (one that failed
    /// may be broken: it goes back to the pool, which tests it).
    pub fn put_back(&self, connection: sqlx::pool::PoolConnection<DB>) {
        if self.keep {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((connection, Instant::now()));
        }
    }
}

/// How long the writer has had a batch in flight, summed since it
/// started: two readings give the share of that time sends kept the
/// database busy. Overlapping batches (a pipeline) count once.
#[derive(Default)]
struct WriterLoad {
    state: Mutex<LoadState>,
}

#[derive(Default)]
struct LoadState {
    in_flight: usize,
    /// When `in_flight` last went from 0 to 1.
    since: Option<Instant>,
    /// Busy time up to `since` (or up to now when nothing is in flight).
    busy: Duration,
}

impl WriterLoad {
    fn state(&self) -> std::sync::MutexGuard<'_, LoadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn batch_started(&self) {
        let mut state = self.state();
        if state.in_flight == 0 {
            state.since = Some(Instant::now());
        }
        state.in_flight += 1;
    }

    fn batch_finished(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0
            && let Some(since) = state.since.take()
        {
            state.busy += since.elapsed();
        }
    }

    fn busy(&self) -> Duration {
        let state = self.state();
        state.busy + state.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

/// A batch counted in [`WriterLoad`] until dropped: a batch whose task
/// ends any way at all (a panic included) stops counting as busy.
struct BatchInFlight(Arc<WriterLoad>);

impl BatchInFlight {
    fn start(load: Arc<WriterLoad>) -> Self {
        load.batch_started();
        BatchInFlight(load)
    }
}

impl Drop for BatchInFlight {
    fn drop(&mut self) {
        self.0.batch_finished();
    }
}

pub(crate) struct Batcher {
    queue: mpsc::Sender<Pending>,
    reachability: Arc<Reachability>,
    load: Arc<WriterLoad>,
}

impl Batcher {
    /// Starts the writer task; `write` stores one batch and answers it,
    /// reporting to `reachability` whether it reached the database. At
    /// most `depth` batches are in flight at once.
    pub fn spawn<F, Fut>(depth: usize, reachability: Arc<Reachability>, write: F) -> Batcher
    where
        F: Fn(Vec<Pending>, Stage) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (queue, mut rx) = mpsc::channel::<Pending>(QUEUE);
        let slots = Arc::new(Semaphore::new(depth.max(1)));
        let load = Arc::new(WriterLoad::default());
        let writer_load = load.clone();
        tokio::spawn(async move {
            let mut previous_committing: Option<oneshot::Receiver<()>> = None;
            let mut previous_answered: Option<oneshot::Receiver<()>> = None;
            loop {
                // Waiting here (not after taking the batch) lets everything
                // that queues up meanwhile join the next batch.
                if let Some(committing) = previous_committing.take() {
                    let _ = committing.await;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut batch = Vec::with_capacity(MAX_BATCH.min(rx.len() + 1));
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                // Looked up at the first batch, not at startup: the
                // metrics recorder may be installed after the store.
                static BATCH_SIZE: OnceLock<metrics::Histogram> = OnceLock::new();
                BATCH_SIZE
                    .get_or_init(|| metrics::histogram!("clacks_store_batch_size"))
                    .record(batch.len() as f64);
                let (committing, committing_rx) = oneshot::channel();
                let (answered, answered_rx) = oneshot::channel();
                let stage = Stage {
                    committing: Some(committing),
                    previous: previous_answered.replace(answered_rx),
                };
                previous_committing = Some(committing_rx);
                let in_flight = BatchInFlight::start(writer_load.clone());
                let written = write(batch, stage);
                tokio::spawn(async move {
                    written.await;
                    drop(in_flight);
                    drop(slot);
                    let _ = answered.send(());
                });
            }
        });
        Batcher {
            queue,
            reachability,
            load,
        }
    }

    /// How long this writer has had a batch in flight since it started.
    pub fn busy(&self) -> Duration {
        self.load.busy()
    }

    /// Whether the last batch found the database unreachable.
    pub fn database_down(&self) -> bool {
        self.reachability.is_down()
    }

    pub async fn submit(&self, new: NewMessage) -> Result<StoredMessage> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { new, reply })
            .await
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the message writer stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clacks_core::{ChannelId, MessageBody, Sender};

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Step {
        Started(usize),
        Committing(usize),
        Answered(usize),
    }

    /// With two batches in flight, a batch starts only once the previous
    /// one is committing, and batches answer in order even when a later
    /// one finishes first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_batches_start_after_the_previous_commit_and_answer_in_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let numbered = Arc::new(AtomicUsize::new(0));
        let batcher = {
            let log = log.clone();
            Batcher::spawn(2, Arc::default(), move |batch, mut stage| {
                let log = log.clone();
                let n = numbered.fetch_add(1, Ordering::SeqCst);
                async move {
                    log.lock().unwrap().push(Step::Started(n));
                    tokio::task::yield_now().await;
                    log.lock().unwrap().push(Step::Committing(n));
                    stage.committing();
                    // Even batches are slow to commit: the next one would
                    // overtake them if answers were not ordered.
                    if n.is_multiple_of(2) {
                        for _ in 0..50 {
                            tokio::task::yield_now().await;
                        }
                    }
                    stage.previous_answered().await;
                    log.lock().unwrap().push(Step::Answered(n));
                    for pending in batch {
                        pending.answer(Err(Error::Internal(format!("batch {n}"))));
                    }
                }
            })
        };
        let batcher = Arc::new(batcher);
        let mut sends = Vec::new();
        // More than MAX_BATCH sends make several batches however they queue.
        for _ in 0..3 * MAX_BATCH {
            let batcher = batcher.clone();
            sends.push(tokio::spawn(async move {
                let new = NewMessage {
                    channel_id: ChannelId(1),
                    sender: Sender::System,
                    content: MessageBody::parse("hi", 100).unwrap(),
                    client_message_id: None,
                };
                batcher.submit(new).await
            }));
        }
        for send in sends {
            assert!(matches!(send.await.unwrap(), Err(Error::Internal(_))));
        }
        let log = log.lock().unwrap().clone();
        let at = |step: Step| log.iter().position(|s| *s == step).unwrap();
        let batches = numbered_batches(&log);
        assert!(batches >= 3, "expected several batches: {log:?}");
        for n in 1..batches {
            assert!(
                at(Step::Committing(n - 1)) < at(Step::Started(n)),
                "{log:?}"
            );
            assert!(at(Step::Answered(n - 1)) < at(Step::Answered(n)), "{log:?}");
        }
    }

    /// While the database is unreachable, batches are refused at once but
    /// one per retry interval tries it again; reaching it ends the outage.
    #[test]
    fn an_outage_refuses_batches_at_once_and_retries_one_periodically() {
        let reachability = Reachability::default();
        assert!(reachability.admit().is_ok());
        reachability.observe(Some(&Error::Unavailable("connection refused".into())));
        assert!(reachability.is_down());
        assert!(matches!(reachability.admit(), Err(Error::Unavailable(_))));
        std::thread::sleep(OUTAGE_RETRY);
        assert!(reachability.admit().is_ok(), "one batch tries again");
        assert!(
            matches!(reachability.admit(), Err(Error::Unavailable(_))),
            "the others do not wait for its connect"
        );
        // Any answer from the database, even an error, means it is back.
        reachability.observe(Some(&Error::Internal("constraint".into())));
        assert!(!reachability.is_down());
        assert!(reachability.admit().is_ok());
    }

    /// Busy time grows while a batch is in flight, overlapping batches
    /// counted once, and stands still between batches.
    #[test]
    fn writer_load_counts_time_with_a_batch_in_flight_once() {
        let load = WriterLoad::default();
        assert_eq!(load.busy(), Duration::ZERO);
        load.batch_started();
        load.batch_started();
        std::thread::sleep(Duration::from_millis(20));
        load.batch_finished();
        std::thread::sleep(Duration::from_millis(20));
        load.batch_finished();
        let busy = load.busy();
        assert!(busy >= Duration::from_millis(40), "{busy:?}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(load.busy(), busy, "idle time is not busy");
        load.batch_started();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            load.busy() > busy,
            "a batch in flight counts before it ends"
        );
    }

    fn numbered_batches(log: &[Step]) -> usize {
        log.iter().filter(|s| matches!(s, Step::Started(_))).count()
    }
}
