//! The outgoing side of a connection: one bounded queue, drained by one
//! writer task that also drives the connection's subscriptions.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use futures::task::AtomicWaker;
use tokio::sync::Notify;

use super::SLOW_CONSUMER;
use super::feed::{FeedItem, FeedMeta, FeedStream, Feeds};
use super::stop::StopSwitch;
use crate::render::RenderSchema;
use crate::schema::ConnectionControl;

/// How long an operation's frame may wait for room in the connection's
/// queue, or the writer for room in the socket, before the client counts
/// as a slow consumer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long the writer may take to flush and close at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a slow consumer has to read through what its socket already
/// holds and receive the 4008 close frame. Nothing more is queued for it
/// meanwhile, so this costs one idle task, not memory.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub(super) struct Close {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

pub(super) enum Outgoing {
    /// A frame, with the switch of the operation it belongs to (none for
    /// the connection's own frames).
    Frame(Utf8Bytes, Option<StopSwitch>),
    /// A subscription handed over by its operation: from now on the writer
    /// renders its events itself.
    Feed(Box<FeedStream>),
}

/// What the reader, the operations and the writer of a connection share:
/// the bounded outgoing queue and the close request. One small allocation
/// per connection (a tokio mpsc channel plus a watch channel cost about
/// 2 KiB before the first frame), and the queue's memory is given back
/// once drained.
pub(super) struct Outbox {
    state: Mutex<State>,
    /// The writer, waiting for something to send or for the close.
    writer: AtomicWaker,
    /// The reader, waiting for a close request.
    reader: AtomicWaker,
    /// Operations waiting for room.
    room: Notify,
}

struct State {
    items: VecDeque<Outgoing>,
    capacity: usize,
    close: Option<Close>,
    /// The writer is gone: nothing queued will be sent.
    writer_gone: bool,
}

/// Capacity kept once the queue drains; more is freed.
const KEEP: usize = 4;

/// What the writer is to do next.
pub(super) enum Pending {
    Send(Outgoing),
    Close,
}

impl Outbox {
    pub fn new(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                capacity: capacity.max(1),
                close: None,
                writer_gone: false,
            }),
            writer: AtomicWaker::new(),
            reader: AtomicWaker::new(),
            room: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a control frame (ack, pong, keep-alive, a refused
    /// operation's error). A full queue means data is flowing to the client
    /// anyway, so the frame is dropped rather than the connection.
    pub fn push(&self, frame: String) -> bool {
        {
            let mut state = self.lock();
            if state.writer_gone {
                return false;
            }
            if state.items.len() >= state.capacity {
                metrics::counter!("clacks_ws_control_frames_dropped_total").increment(1);
                return true;
            }
            state
                .items
                .push_back(Outgoing::Frame(Utf8Bytes::from(frame), None));
        }
        self.writer.wake();
        true
    }

    /// Queues an operation's frame, waiting for room: a client that reads
    /// slowly slows its own operations down. A client that takes no frame
    /// at all for [`SEND_TIMEOUT`] is closed with 4008.
    pub async fn send(&self, frame: String, operation: &StopSwitch) -> bool {
        self.enqueue(Outgoing::Frame(
            Utf8Bytes::from(frame),
            Some(operation.clone()),
        ))
        .await
    }

    /// Hands a subscription over to the writer.
    pub async fn hand_over(&self, feed: FeedStream) -> bool {
        self.enqueue(Outgoing::Feed(Box::new(feed))).await
    }

    async fn enqueue(&self, outgoing: Outgoing) -> bool {
        let mut outgoing = Some(outgoing);
        let queued = tokio::time::timeout(SEND_TIMEOUT, async {
            loop {
                let room = self.room.notified();
                tokio::pin!(room);
                // Registered before looking, so a slot freed in between
                // still wakes this sender.
                room.as_mut().enable();
                {
                    let mut state = self.lock();
                    if state.writer_gone || state.close.is_some() {
                        return false;
                    }
                    if state.items.len() < state.capacity {
                        if let Some(outgoing) = outgoing.take() {
                            state.items.push_back(outgoing);
                        }
                        drop(state);
                        self.writer.wake();
                        return true;
                    }
                }
                room.await;
            }
        })
        .await;
        match queued {
            Ok(queued) => queued,
            Err(_) => {
                metrics::counter!("clacks_ws_slow_consumer_closes_total").increment(1);
                self.request_close(SLOW_CONSUMER, "slow consumer");
                false
            }
        }
    }

    pub fn request_close(&self, code: u16, reason: impl Into<Cow<'static, str>>) {
        {
            let mut state = self.lock();
            if state.close.is_some() {
                return;
            }
            state.close = Some(Close {
                code,
                reason: reason.into(),
            });
        }
        self.writer.wake();
        self.reader.wake();
        self.room.notify_waiters();
    }

    /// Resolves once a close was requested (the reader stops reading).
    pub async fn close_requested(&self) {
        self.closing(&self.reader).await
    }

    /// Resolves once a close was requested (the writer stops writing).
    async fn writer_close(&self) {
        self.closing(&self.writer).await
    }

    async fn closing(&self, waiter: &AtomicWaker) {
        std::future::poll_fn(|cx| {
            waiter.register(cx.waker());
            if self.lock().close.is_some() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The writer's next job: the close first, then queued output.
    fn poll_pending(&self, cx: &mut std::task::Context<'_>) -> Poll<Pending> {
        self.writer.register(cx.waker());
        match self.try_pending() {
            Some(pending) => Poll::Ready(pending),
            None => Poll::Pending,
        }
    }

    fn try_pending(&self) -> Option<Pending> {
        let mut state = self.lock();
        if state.close.is_some() {
            return Some(Pending::Close);
        }
        let item = state.items.pop_front()?;
        if state.items.is_empty() && state.items.capacity() > KEEP {
            state.items.shrink_to(KEEP);
        }
        drop(state);
        self.room.notify_one();
        Some(Pending::Send(item))
    }

    fn requested_close(&self) -> Option<Close> {
        self.lock().close.clone()
    }

    /// What is still queued when the connection closes; the queue then
    /// refuses everything.
    fn drain_for_close(&self) -> VecDeque<Outgoing> {
        let mut state = self.lock();
        state.writer_gone = true;
        let items = std::mem::take(&mut state.items);
        drop(state);
        self.room.notify_waiters();
        items
    }
}

impl ConnectionControl for Outbox {
    fn close(&self, code: u16, reason: &'static str) {
        self.request_close(code, reason);
    }
}

/// What the writer sends next, with the switch of the operation it belongs
/// to: a frame of an operation the client has stopped is not sent (after
/// its `complete`, a client may reuse the id).
pub(super) enum Output {
    Frame(Utf8Bytes, Option<StopSwitch>),
    /// A subscription's last frame (if any), then its `complete`.
    Final(Option<Utf8Bytes>, Utf8Bytes, Option<StopSwitch>),
    /// A subscription's queue overflowed: close with 4008.
    SlowConsumer,
}

/// Why the writer stopped writing.
enum WriteFailure {
    /// The socket failed (the client is gone, or the frame was refused).
    Socket,
    /// The socket took nothing for [`SEND_TIMEOUT`].
    Stalled,
    /// A subscription's queue overflowed.
    Overflow,
}

/// Runs a socket operation, giving it [`SEND_TIMEOUT`] to make progress;
/// the timer is armed only when the operation has to wait (boxed: rare,
/// and inline it would weigh on every connection's writer).
async fn within_send_timeout<T>(operation: impl Future<Output = T>) -> Option<T> {
    let mut operation = std::pin::pin!(operation);
    if let Poll::Ready(done) = futures::poll!(operation.as_mut()) {
        return Some(done);
    }
    tokio::select! {
        done = operation => Some(done),
        () = Box::pin(tokio::time::sleep(SEND_TIMEOUT)) => None,
    }
}

fn stopped(operation: &Option<StopSwitch>) -> bool {
    operation.as_ref().is_some_and(StopSwitch::is_stopped)
}

/// Requests a close when the writer ends, whyever it ends (a socket
/// error, a panic in a render): otherwise the reader would go on with
/// nobody writing. A no-op when a close was requested already.
struct WriterExit(Arc<Outbox>);

impl Drop for WriterExit {
    fn drop(&mut self) {
        self.0.request_close(1011, "internal error");
        self.0.drain_for_close();
    }
}

enum Step {
    Write(Output),
    Feed(Arc<FeedMeta>, FeedItem),
    Stop,
}

/// The writer: drains the queue into the socket, flushing once per batch,
/// and renders the events of the subscriptions handed to it. On a close
/// request it flushes what is queued (unless the client is the slow one)
/// and sends the close frame.
pub(super) struct Writer {
    sink: SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    render: RenderSchema,
    feeds: Feeds,
}

impl Writer {
    pub fn new(
        sink: SplitSink<WebSocket, Message>,
        outbox: Arc<Outbox>,
        render: RenderSchema,
    ) -> Self {
        Writer {
            sink,
            outbox,
            render,
            feeds: Feeds::default(),
        }
    }

    pub async fn run(mut self) {
        let outbox = self.outbox.clone();
        let _exit = WriterExit(outbox.clone());
        loop {
            let step = tokio::select! {
                biased;
                pending = std::future::poll_fn(|cx| outbox.poll_pending(cx)) => match pending {
                    Pending::Send(Outgoing::Frame(frame, operation)) => {
                        Step::Write(Output::Frame(frame, operation))
                    }
                    Pending::Send(Outgoing::Feed(feed)) => {
                        self.feeds.push(*feed);
                        continue;
                    }
                    Pending::Close => Step::Stop,
                },
                (meta, item) = std::future::poll_fn(|cx| self.feeds.poll_next(cx)), if !self.feeds.is_empty() => {
                    Step::Feed(meta, item)
                }
            };
            let first = match step {
                Step::Stop => break,
                Step::Write(output) => output,
                // A render may wait on the database: a close request (token
                // expiry, forced disconnect) does not wait for it.
                Step::Feed(meta, item) => tokio::select! {
                    output = meta.output(&self.render, item) => output,
                    () = outbox.writer_close() => break,
                },
            };
            let written = tokio::select! {
                written = self.write_batch(first) => written,
                () = outbox.writer_close() => break,
            };
            match written {
                Ok(()) => {}
                Err(WriteFailure::Socket) => break,
                Err(WriteFailure::Stalled | WriteFailure::Overflow) => {
                    // The client does not keep up: the live events behind
                    // would only pile up (it resumes with its last seq and
                    // loses nothing).
                    metrics::counter!("clacks_ws_slow_consumer_closes_total").increment(1);
                    outbox.request_close(SLOW_CONSUMER, "slow consumer");
                    break;
                }
            }
        }
        // The subscriptions end now, not after the close frame's grace:
        // their hub registrations and queued events go at once.
        self.feeds = Feeds::default();
        // A close requested by anyone (the reader, an operation, or this
        // writer for a slow consumer) also stops the reader.
        let Some(requested) = outbox.requested_close() else {
            return;
        };
        let grace = if requested.code == SLOW_CONSUMER {
            SLOW_CLOSE_GRACE
        } else {
            CLOSE_GRACE
        };
        let _ = Box::pin(tokio::time::timeout(grace, self.finish(requested))).await;
    }

    /// Sends one frame unless its operation was stopped.
    async fn send(
        &mut self,
        frame: Utf8Bytes,
        operation: &Option<StopSwitch>,
    ) -> Result<(), WriteFailure> {
        if stopped(operation) {
            return Ok(());
        }
        match within_send_timeout(self.sink.feed(Message::Text(frame))).await {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(WriteFailure::Socket),
            None => Err(WriteFailure::Stalled),
        }
    }

    /// Writes `first`, then whatever else is ready without waiting (queued
    /// frames first), then flushes.
    async fn write_batch(&mut self, first: Output) -> Result<(), WriteFailure> {
        let mut output = first;
        let mut written = 0;
        loop {
            match output {
                Output::SlowConsumer => return Err(WriteFailure::Overflow),
                Output::Frame(frame, operation) => {
                    written += 1;
                    self.send(frame, &operation).await?;
                }
                Output::Final(last, complete, operation) => {
                    written += 2;
                    if let Some(last) = last {
                        self.send(last, &operation).await?;
                    }
                    self.send(complete, &operation).await?;
                }
            }
            if written >= WRITE_BATCH {
                break;
            }
            match self.ready().await {
                Some(next) => output = next,
                None => break,
            }
        }
        match within_send_timeout(self.sink.flush()).await {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(WriteFailure::Socket),
            None => Err(WriteFailure::Stalled),
        }
    }

    /// The next output that is ready now, without waiting.
    async fn ready(&mut self) -> Option<Output> {
        while let Some(Pending::Send(outgoing)) = self.outbox.try_pending() {
            match outgoing {
                Outgoing::Frame(frame, operation) => return Some(Output::Frame(frame, operation)),
                Outgoing::Feed(feed) => self.feeds.push(*feed),
            }
        }
        if self.feeds.is_empty() {
            return None;
        }
        // Polled with the task's own waker, so nothing woken meanwhile is
        // missed when the writer next waits.
        let polled = std::future::poll_fn(|cx| Poll::Ready(self.feeds.poll_next(cx))).await;
        match polled {
            Poll::Ready((meta, item)) => Some(meta.output(&self.render, item).await),
            Poll::Pending => None,
        }
    }

    async fn finish(&mut self, requested: Close) {
        let queued = self.outbox.drain_for_close();
        if requested.code != SLOW_CONSUMER {
            for outgoing in queued {
                if let Outgoing::Frame(frame, operation) = outgoing
                    && !stopped(&operation)
                    && self.sink.feed(Message::Text(frame)).await.is_err()
                {
                    return;
                }
            }
        }
        let _ = self
            .sink
            .send(Message::Close(Some(CloseFrame {
                code: requested.code,
                reason: Utf8Bytes::from(requested.reason.into_owned()),
            })))
            .await;
    }
}
