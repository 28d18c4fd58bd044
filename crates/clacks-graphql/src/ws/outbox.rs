//! The outgoing side of a connection: one queue, bounded in frames and in
//! bytes, drained by one writer task that also drives the connection's
//! subscriptions; and the count of the connection's mutations still to
//! answer, which its close waits for.

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
/// the bounded outgoing queue, the close request and the mutations in
/// flight. One small allocation per connection (a tokio mpsc channel plus
/// a watch channel cost about 2 KiB before the first frame), and the
/// queue's memory is given back once drained.
pub(super) struct Outbox {
    state: Mutex<State>,
    /// The writer, waiting for something to send or for the close.
    writer: AtomicWaker,
    /// The reader, waiting for a close request.
    reader: AtomicWaker,
    /// The reader, waiting for the last mutation in flight to answer.
    answered: AtomicWaker,
    /// Operations waiting for room.
    room: Notify,
}

struct State {
    items: VecDeque<Outgoing>,
    capacity: usize,
    /// Bytes of the queued frames, and their bound.
    bytes: usize,
    max_bytes: usize,
    close: Option<Close>,
    /// The writer is gone: nothing queued will be sent.
    writer_gone: bool,
    /// Mutations received and not answered yet.
    mutations: usize,
}

impl State {
    /// Room for `len` more bytes: under both bounds, or an empty queue (a
    /// frame larger than the byte bound, a big history page, is still
    /// sent, alone).
    fn has_room(&self, len: usize) -> bool {
        self.items.is_empty()
            || (self.items.len() < self.capacity && self.bytes + len <= self.max_bytes)
    }
}

impl Outgoing {
    /// What it weighs against the byte bound: a subscription handed over
    /// weighs nothing here (its events wait in its own bounded queue).
    fn bytes(&self) -> usize {
        match self {
            Outgoing::Frame(frame, _) => frame.as_str().len(),
            Outgoing::Feed(_) => 0,
        }
    }
}

/// A mutation of the connection that has not answered yet. Its answer
/// must reach the client even when the connection is closing, so the
/// reader requests the close only once every such guard is dropped (or
/// the close grace is over).
pub(super) struct MutationInFlight(Arc<Outbox>);

impl Drop for MutationInFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.mutations -= 1;
        let last = state.mutations == 0;
        drop(state);
        if last {
            self.0.answered.wake();
        }
    }
}

/// What the writer is to do next.
pub(super) enum Pending {
    Send(Outgoing),
    Close,
}

impl Outbox {
    /// A queue of at most `capacity` frames and `max_bytes` bytes.
    pub fn new(capacity: usize, max_bytes: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                capacity: capacity.max(1),
                bytes: 0,
                max_bytes,
                close: None,
                writer_gone: false,
                mutations: 0,
            }),
            writer: AtomicWaker::new(),
            reader: AtomicWaker::new(),
            answered: AtomicWaker::new(),
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
            if !state.has_room(frame.len()) {
                metrics::counter!("clacks_ws_control_frames_dropped_total").increment(1);
                return true;
            }
            state.bytes += frame.len();
            state
                .items
                .push_back(Outgoing::Frame(Utf8Bytes::from(frame), None));
        }
        self.writer.wake();
        true
    }

    /// Queues an operation's frame, waiting for room (in frames and bytes):
    /// a client that reads slowly slows its own operations down. A client
    /// that leaves no room for [`SEND_TIMEOUT`] is closed with 4008.
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
        let bytes = outgoing.bytes();
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
                    if state.has_room(bytes) {
                        if let Some(outgoing) = outgoing.take() {
                            state.bytes += bytes;
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
                self.close_slow_consumer();
                false
            }
        }
    }

    /// Counts a mutation in flight until the guard is dropped.
    pub fn mutation_started(self: &Arc<Self>) -> MutationInFlight {
        self.lock().mutations += 1;
        MutationInFlight(self.clone())
    }

    /// Resolves once every mutation received has answered (its frames are
    /// queued, or refused because the writer is gone).
    pub async fn mutations_answered(&self) {
        std::future::poll_fn(|cx| {
            self.answered.register(cx.waker());
            if self.lock().mutations == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Requests the close, unless one was requested already (the first
    /// stands); true when this one stands.
    pub fn request_close(&self, code: u16, reason: impl Into<Cow<'static, str>>) -> bool {
        {
            let mut state = self.lock();
            if state.close.is_some() {
                return false;
            }
            state.close = Some(Close {
                code,
                reason: reason.into(),
            });
        }
        self.writer.wake();
        self.reader.wake();
        self.room.notify_waiters();
        true
    }

    /// Closes with 4008, counted unless the connection was closing anyway
    /// (a client that stops reading during a shutdown keeps its 1001).
    fn close_slow_consumer(&self) {
        if self.request_close(SLOW_CONSUMER, "slow consumer") {
            metrics::counter!("clacks_ws_slow_consumer_closes_total").increment(1);
        }
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
        state.bytes -= item.bytes();
        // Drained, the queue gives its memory back: events reach the
        // writer through the subscriptions' own queues, so this one carries
        // only acks, pings and answers, and an idle connection (nearly
        // every connection, nearly always) keeps none.
        if state.items.is_empty() {
            state.items = VecDeque::new();
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
        state.bytes = 0;
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
    /// A subscription's event.
    Event(Utf8Bytes, Option<StopSwitch>),
    /// A subscription's last frame (if any), then its `complete`. Boxed:
    /// it comes once per subscription, and every other output (and the
    /// writer's future, which holds one) would otherwise be its size.
    Final(Box<FinalFrames>, Option<StopSwitch>),
    /// A subscription's queue overflowed: close with 4008.
    SlowConsumer,
}

pub(super) struct FinalFrames {
    pub last: Option<Utf8Bytes>,
    pub complete: Utf8Bytes,
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
async fn within_send_timeout(
    operation: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), WriteFailure> {
    let mut operation = std::pin::pin!(operation);
    let done = match futures::poll!(operation.as_mut()) {
        Poll::Ready(done) => done,
        Poll::Pending => tokio::select! {
            done = operation => done,
            () = Box::pin(tokio::time::sleep(SEND_TIMEOUT)) => return Err(WriteFailure::Stalled),
        },
    };
    done.map_err(|_| WriteFailure::Socket)
}

fn stopped(operation: &Option<StopSwitch>) -> bool {
    operation.as_ref().is_some_and(StopSwitch::is_stopped)
}

/// Subscription events a batch wrote, added to
/// `clacks_events_delivered_total` when the batch ends, however it ends.
struct DeliveredCount(u64);

impl Drop for DeliveredCount {
    fn drop(&mut self) {
        if self.0 > 0 {
            super::feed::count_delivered(self.0);
        }
    }
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

    /// The writer's loop. Not an `async fn`, which would keep a copy of
    /// `self` beside the one it uses: this future lives as long as the
    /// connection, so its size is paid by every connection.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep a second copy of self"
    )]
    pub fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
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
                // Not abandoned for a close request: the batch may hold a
                // mutation's answer, and the close frame goes after it anyway.
                // A socket that takes nothing still ends it, as a stall.
                match self.write_batch(first).await {
                    Ok(()) => {}
                    Err(WriteFailure::Socket) => break,
                    Err(WriteFailure::Stalled | WriteFailure::Overflow) => {
                        // The client does not keep up: the live events behind
                        // would only pile up (it resumes with its last seq and
                        // loses nothing).
                        outbox.close_slow_consumer();
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
    }

    /// Sends one frame unless its operation was stopped. Waits only for
    /// room in the socket's buffer (a small future: the frame is handed
    /// over once there is room, not held by a `Feed`).
    async fn send(
        &mut self,
        frame: Utf8Bytes,
        operation: &Option<StopSwitch>,
    ) -> Result<(), WriteFailure> {
        if stopped(operation) {
            return Ok(());
        }
        let sink = &mut self.sink;
        within_send_timeout(std::future::poll_fn(|cx| sink.poll_ready_unpin(cx))).await?;
        sink.start_send_unpin(Message::Text(frame))
            .map_err(|_| WriteFailure::Socket)
    }

    /// Writes `output`, then whatever else is ready without waiting (queued
    /// frames first), then flushes.
    async fn write_batch(&mut self, mut output: Output) -> Result<(), WriteFailure> {
        // Added once per batch, on every way out of it, rather than one
        // shared atomic increment per event.
        let mut delivered = DeliveredCount(0);
        let mut written = 0;
        loop {
            match output {
                Output::SlowConsumer => return Err(WriteFailure::Overflow),
                Output::Frame(frame, operation) => {
                    written += 1;
                    self.send(frame, &operation).await?;
                }
                Output::Event(frame, operation) => {
                    written += 1;
                    delivered.0 += 1;
                    self.send(frame, &operation).await?;
                }
                Output::Final(frames, operation) => {
                    written += 2;
                    let FinalFrames { last, complete } = *frames;
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
        let sink = &mut self.sink;
        within_send_timeout(std::future::poll_fn(|cx| sink.poll_flush_unpin(cx))).await
    }

    /// The next output that is ready now, without waiting; nothing once a
    /// close is requested.
    async fn ready(&mut self) -> Option<Output> {
        while let Some(pending) = self.outbox.try_pending() {
            match pending {
                Pending::Close => return None,
                Pending::Send(Outgoing::Frame(frame, operation)) => {
                    return Some(Output::Frame(frame, operation));
                }
                Pending::Send(Outgoing::Feed(feed)) => self.feeds.push(*feed),
            }
        }
        if self.feeds.is_empty() {
            return None;
        }
        // Polled with the task's own waker, so nothing woken meanwhile is
        // missed when the writer next waits.
        let polled = std::future::poll_fn(|cx| Poll::Ready(self.feeds.poll_next(cx))).await;
        let Poll::Ready((meta, item)) = polled else {
            return None;
        };
        let mut render = std::pin::pin!(meta.output(&self.render, item));
        if let Poll::Ready(output) = futures::poll!(render.as_mut()) {
            return Some(output);
        }
        // A render that waits on the database does not hold up a close
        // request (the subscription ends with the connection).
        tokio::select! {
            output = render => Some(output),
            () = self.outbox.writer_close() => None,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn frame(bytes: usize) -> String {
        "x".repeat(bytes)
    }

    fn take(outbox: &Outbox) -> usize {
        match outbox.try_pending() {
            Some(Pending::Send(Outgoing::Frame(frame, _))) => frame.as_str().len(),
            _ => panic!("expected a queued frame"),
        }
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_as_in_frames() {
        let outbox = Outbox::new(1000, 1000);
        let operation = StopSwitch::default();
        assert!(outbox.send(frame(600), &operation).await);
        // 1,200 bytes would pass the bound: the sender waits for room.
        let mut second = std::pin::pin!(outbox.send(frame(600), &operation));
        assert!(futures::poll!(second.as_mut()).is_pending());
        // A control frame finds no room either, and is dropped.
        assert!(outbox.push(frame(500)));
        assert_eq!(outbox.lock().items.len(), 1);
        // The writer takes the first frame: the second goes in.
        assert_eq!(take(&outbox), 600);
        assert!(second.await);
        assert_eq!(outbox.lock().bytes, 600);
        assert_eq!(take(&outbox), 600);
        assert_eq!(outbox.lock().bytes, 0);
        // A frame larger than the whole bound goes into an empty queue,
        // alone.
        assert!(outbox.send(frame(5000), &operation).await);
        let mut small = std::pin::pin!(outbox.send(frame(1), &operation));
        assert!(futures::poll!(small.as_mut()).is_pending());
        assert_eq!(take(&outbox), 5000);
        assert!(small.await);
    }

    #[tokio::test]
    async fn mutations_answered_waits_for_every_guard() {
        let outbox = Outbox::new(10, 1000);
        outbox.mutations_answered().await;
        let first = outbox.mutation_started();
        let second = outbox.mutation_started();
        let mut answered = std::pin::pin!(outbox.mutations_answered());
        assert!(futures::poll!(answered.as_mut()).is_pending());
        drop(first);
        assert!(futures::poll!(answered.as_mut()).is_pending());
        drop(second);
        answered.await;
    }
}
