//! The outgoing side of a connection: one bounded queue, drained by one
//! writer task that also drives the connection's subscriptions.

use std::borrow::Cow;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SelectAll, SplitSink};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::SLOW_CONSUMER;
use super::feed::{FeedItem, FeedMeta, FeedStream};
use crate::render::RenderSchema;
use crate::schema::ConnectionControl;

/// How long an operation's frame may wait for room in the connection's
/// queue before the client counts as a slow consumer.
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

/// What operations share with the connection: the outgoing queue and the
/// close signal.
pub(super) struct Outbox {
    queue: mpsc::Sender<Outgoing>,
    close: watch::Sender<Option<Close>>,
}

impl Outbox {
    pub fn new(
        capacity: usize,
    ) -> (
        Outbox,
        mpsc::Receiver<Outgoing>,
        watch::Receiver<Option<Close>>,
    ) {
        let (queue, queued) = mpsc::channel(capacity.max(1));
        let (close, closing) = watch::channel(None);
        (Outbox { queue, close }, queued, closing)
    }

    /// Queues a control frame (ack, pong, keep-alive, a refused
    /// operation's error). A full queue means data is flowing to the client
    /// anyway, so the frame is dropped rather than the connection.
    pub fn push(&self, frame: String) -> bool {
        match self.queue.try_send(Outgoing::Frame(Utf8Bytes::from(frame))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("clacks_ws_control_frames_dropped_total").increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues an operation's frame, waiting for room: a client that reads
    /// slowly slows its own operations down, and the live events behind
    /// them wait in their bounded subscription queue, which ends the
    /// subscription when it overflows. A client that takes no frame at all
    /// for [`SEND_TIMEOUT`] is closed with 4008.
    pub async fn send(&self, frame: String) -> bool {
        self.enqueue(Outgoing::Frame(Utf8Bytes::from(frame))).await
    }

    /// Hands a subscription over to the writer.
    pub async fn hand_over(&self, feed: FeedStream) -> bool {
        self.enqueue(Outgoing::Feed(Box::new(feed))).await
    }

    async fn enqueue(&self, outgoing: Outgoing) -> bool {
        match tokio::time::timeout(SEND_TIMEOUT, self.queue.send(outgoing)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                metrics::counter!("clacks_ws_slow_consumer_closes_total").increment(1);
                self.request_close(SLOW_CONSUMER, "slow consumer");
                false
            }
        }
    }

    pub fn request_close(&self, code: u16, reason: impl Into<Cow<'static, str>>) {
        let reason = reason.into();
        self.close.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(Close { code, reason });
                true
            } else {
                false
            }
        });
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
    queued: mpsc::Receiver<Outgoing>,
    render: RenderSchema,
    feeds: SelectAll<FeedStream>,
    /// Set when a subscription overflowed: nothing else is written before
    /// the 4008 close frame.
    slow_consumer: bool,
}

impl Writer {
    pub fn new(
        sink: SplitSink<WebSocket, Message>,
        queued: mpsc::Receiver<Outgoing>,
        render: RenderSchema,
    ) -> Self {
        Writer {
            sink,
            queued,
            render,
            feeds: SelectAll::new(),
            slow_consumer: false,
        }
    }

    pub async fn run(mut self, mut closing: watch::Receiver<Option<Close>>) {
        loop {
            let step = tokio::select! {
                biased;
                _ = closing.changed() => Step::Stop,
                outgoing = self.queued.recv() => match outgoing {
                    Some(Outgoing::Frame(frame)) => Step::Write(Output::Frame(frame)),
                    Some(Outgoing::Feed(feed)) => {
                        self.feeds.push(*feed);
                        continue;
                    }
                    None => Step::Stop,
                },
                Some((meta, item)) = self.feeds.next(), if !self.feeds.is_empty() => {
                    Step::Feed(meta, item)
                }
            };
            let first = match step {
                Step::Stop => break,
                Step::Write(output) => output,
                Step::Feed(meta, item) => meta.output(&self.render, item).await,
            };
            tokio::select! {
                written = self.write_batch(first) => if !written { break },
                _ = closing.changed() => break,
            }
        }
        let requested = if self.slow_consumer {
            Some(Close {
                code: SLOW_CONSUMER,
                reason: "slow consumer".into(),
            })
        } else {
            closing.borrow().clone()
        };
        let Some(requested) = requested else { return };
        let grace = if requested.code == SLOW_CONSUMER {
            SLOW_CLOSE_GRACE
        } else {
            CLOSE_GRACE
        };
        let _ = tokio::time::timeout(grace, self.finish(requested)).await;
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
                    self.slow_consumer = true;
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
        while let Ok(outgoing) = self.queued.try_recv() {
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
        let polled = std::future::poll_fn(|cx| Poll::Ready(self.feeds.poll_next_unpin(cx))).await;
        match polled {
            Poll::Ready(Some((meta, item))) => Some(meta.output(&self.render, item).await),
            _ => None,
        }
    }

    async fn finish(&mut self, requested: Close) {
        if requested.code != SLOW_CONSUMER {
            while let Ok(outgoing) = self.queued.try_recv() {
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
