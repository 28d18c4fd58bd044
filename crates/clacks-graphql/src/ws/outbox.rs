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
    Frame(Utf8Bytes),
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
                .push_back(Outgoing::Frame(Utf8Bytes::from(frame)));
        }
        self.writer.wake();
        true
    }

    /// Queues an operation's frame, waiting for room: a client that reads
    /// slowly slows its own operations down. A client that takes no frame
    /// at all for [`SEND_TIMEOUT`] is closed with 4008.
    pub async fn send(&self, frame: String) -> bool {
        self.enqueue(Outgoing::Frame(Utf8Bytes::from(frame))).await
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

/// What the writer sends next.
pub(super) enum Output {
    Frame(Utf8Bytes),
    /// A subscription's last frame (if any), then its `complete`.
    Final(Option<Utf8Bytes>, Utf8Bytes),
    /// A subscription's queue overflowed: close with 4008.
    SlowConsumer,
}

enum Written {
    Done(bool),
    Closing,
    TimedOut,
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
        loop {
            let step = tokio::select! {
                biased;
                pending = std::future::poll_fn(|cx| outbox.poll_pending(cx)) => match pending {
                    Pending::Send(Outgoing::Frame(frame)) => Step::Write(Output::Frame(frame)),
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
                Step::Feed(meta, item) => meta.output(&self.render, item).await,
            };
            let written = {
                let mut write = std::pin::pin!(self.write_batch(first));
                // Most batches go straight into the socket; only one that
                // has to wait arms the timer.
                match futures::poll!(write.as_mut()) {
                    Poll::Ready(written) => Written::Done(written),
                    Poll::Pending => tokio::select! {
                        written = write.as_mut() => Written::Done(written),
                        () = outbox.writer_close() => Written::Closing,
                        // Boxed, as is the close below: rare, and inline they
                        // would weigh on every connection's writer.
                        () = Box::pin(tokio::time::sleep(SEND_TIMEOUT)) => Written::TimedOut,
                    },
                }
            };
            match written {
                Written::Done(true) => {}
                Written::Done(false) | Written::Closing => break,
                Written::TimedOut => {
                    // The client took nothing for that long: the live
                    // events behind would only pile up (it resumes with
                    // its last seq and loses nothing).
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

    /// Writes `first`, then whatever else is ready without waiting (queued
    /// frames first), then flushes. False when the socket failed or a
    /// subscription overflowed.
    async fn write_batch(&mut self, first: Output) -> bool {
        let mut output = first;
        let mut written = 0;
        loop {
            let sent = match output {
                Output::SlowConsumer => {
                    self.outbox.request_close(SLOW_CONSUMER, "slow consumer");
                    return false;
                }
                Output::Frame(frame) => {
                    written += 1;
                    self.sink.feed(Message::Text(frame)).await
                }
                Output::Final(last, complete) => {
                    written += 2;
                    match last {
                        Some(last) => match self.sink.feed(Message::Text(last)).await {
                            Ok(()) => self.sink.feed(Message::Text(complete)).await,
                            failed => failed,
                        },
                        None => self.sink.feed(Message::Text(complete)).await,
                    }
                }
            };
            if sent.is_err() {
                return false;
            }
            if written >= WRITE_BATCH {
                break;
            }
            match self.ready().await {
                Some(next) => output = next,
                None => break,
            }
        }
        self.sink.flush().await.is_ok()
    }

    /// The next output that is ready now, without waiting.
    async fn ready(&mut self) -> Option<Output> {
        while let Some(Pending::Send(outgoing)) = self.outbox.try_pending() {
            match outgoing {
                Outgoing::Frame(frame) => return Some(Output::Frame(frame)),
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
                if let Outgoing::Frame(frame) = outgoing
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
