//! Subscriptions once their resolver has handed them over: no task and no
//! executor state per subscription, only this stream, which the
//! connection's writer polls beside its queue (SPEC section 9: memory per
//! connection). A subscription costs its hub queue, its render plan and a
//! few words here.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use axum::extract::ws::Utf8Bytes;
use clacks_core::ChannelEvent;
use clacks_delivery::{Delivery, EndReason, SharedEvent};
use clacks_service::EventStream;
use futures::Stream;

use super::frames::Frames;
use super::outbox::{FinalFrames, Output};
use crate::error::{FORBIDDEN, coded};
use crate::render::{FeedHandoff, RenderPlan, RenderSchema};

/// What a feed's frames need, shared by the stream and its items.
pub(super) struct FeedMeta {
    frames: Frames,
    plan: RenderPlan,
    /// [`Frames::frame_key`] of the plan's renderings.
    frame_key: u64,
    accept: Box<dyn Fn(&ChannelEvent) -> bool + Send + Sync>,
}

pub(super) enum FeedItem {
    Event(Arc<SharedEvent>),
    /// The subscription ended by itself (`None`: its stream completed).
    End(Option<EndReason>),
}

/// Counts a running operation, from its start until its feed (if any)
/// is dropped.
pub(super) struct OperationGauge(());

impl OperationGauge {
    pub fn start() -> Self {
        metrics::gauge!("clacks_ws_operations").increment(1.0);
        OperationGauge(())
    }
}

impl Drop for OperationGauge {
    fn drop(&mut self) {
        metrics::gauge!("clacks_ws_operations").decrement(1.0);
    }
}

/// One handed-over subscription. Stopped by the client through its
/// operation's stop switch (it then ends silently); ending by itself, it marks the
/// switch finished, so the connection knows the id is free again.
pub(super) struct FeedStream {
    meta: Arc<FeedMeta>,
    events: EventStream,
    done: bool,
    _gauge: OperationGauge,
}

impl FeedStream {
    pub fn new(
        frames: Frames,
        plan: RenderPlan,
        handoff: FeedHandoff,
        gauge: OperationGauge,
    ) -> Self {
        FeedStream {
            meta: Arc::new(FeedMeta {
                frame_key: frames.frame_key(plan.key),
                frames,
                plan,
                accept: handoff.accept,
            }),
            events: handoff.events,
            done: false,
            _gauge: gauge,
        }
    }
}

impl Stream for FeedStream {
    type Item = (Arc<FeedMeta>, FeedItem);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.meta.frames.stop.poll_stopped(cx).is_ready() {
            // Stopped by the client: nothing more is said.
            self.done = true;
            return Poll::Ready(None);
        }
        loop {
            let item = match Pin::new(&mut self.events).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Delivery::Event(event))) => {
                    if !(self.meta.accept)(&event) {
                        continue;
                    }
                    FeedItem::Event(event)
                }
                Poll::Ready(Some(Delivery::End(reason))) => {
                    self.done = true;
                    self.meta.frames.stop.finish();
                    FeedItem::End(Some(reason))
                }
                Poll::Ready(None) => {
                    self.done = true;
                    self.meta.frames.stop.finish();
                    FeedItem::End(None)
                }
            };
            return Poll::Ready(Some((self.meta.clone(), item)));
        }
    }
}

/// One live delivery in this many has its latency recorded: the
/// histogram's distribution stays the same, at a sixteenth of its cost
/// (each record is a clock read and a push into a shared bucket, which the
/// fan-out profile showed at several percent of the server's CPU).
const LATENCY_SAMPLE: u32 = 16;

/// Records the latency of one live delivery in [`LATENCY_SAMPLE`]
/// (`clacks_delivery_latency_seconds`: from the commit until the
/// connection's writer takes the event).
fn sample_latency(committed_at_ms: i64) {
    thread_local! {
        static DELIVERIES: Cell<u32> = const { Cell::new(0) };
    }
    let n = DELIVERIES.with(|deliveries| {
        let n = deliveries.get().wrapping_add(1);
        deliveries.set(n);
        n
    });
    if n.is_multiple_of(LATENCY_SAMPLE) {
        static LATENCY: LazyLock<metrics::Histogram> =
            LazyLock::new(|| metrics::histogram!("clacks_delivery_latency_seconds"));
        let age_ms = clacks_core::now_ms().saturating_sub(committed_at_ms).max(0);
        LATENCY.record(age_ms as f64 / 1000.0);
    }
}

/// Counts events delivered (`clacks_events_delivered_total`). The writer
/// counts a batch's events and adds them at once, rather than one shared
/// atomic increment per event.
pub(super) fn count_delivered(events: u64) {
    // Looked up once: a registry lookup per delivered event showed up at
    // 5-6 % of the server's CPU in the fan-out profile.
    static DELIVERED: LazyLock<metrics::Counter> =
        LazyLock::new(|| metrics::counter!("clacks_events_delivered_total"));
    DELIVERED.increment(events);
}

impl FeedMeta {
    /// Renders `item` (shared with every subscriber of the same document
    /// when possible) into frames.
    pub async fn output(&self, render: &RenderSchema, item: FeedItem) -> Output {
        let frames = &self.frames;
        match item {
            FeedItem::Event(event) => {
                if event.is_live() {
                    sample_latency(event.at);
                }
                // Subscribers of one document with the same operation id
                // share the frame's bytes: clients that number operations
                // from 1 (subscriptions-transport-ws) do. graphql-ws's
                // random ids each build their own frame around the shared
                // rendering.
                let frame = match event.frame::<Utf8Bytes>(self.frame_key) {
                    Some(frame) => frame,
                    None => {
                        let payload = self.plan.payload(render, &event).await;
                        let frame = Utf8Bytes::from(frames.next_raw(&payload));
                        event.keep_frame(self.frame_key, frame.clone());
                        frame
                    }
                };
                Output::Event(frame, Some(frames.stop.clone()))
            }
            FeedItem::End(Some(EndReason::Removed)) => {
                let removed = async_graphql::Response::from_errors(vec![coded(
                    FORBIDDEN,
                    "no longer a member of this channel",
                )]);
                Output::Final(
                    Box::new(FinalFrames {
                        last: Some(frames.next(&removed).into()),
                        complete: frames.complete().into(),
                    }),
                    Some(frames.stop.clone()),
                )
            }
            FeedItem::End(Some(EndReason::ChannelDeleted) | None) => Output::Final(
                Box::new(FinalFrames {
                    last: None,
                    complete: frames.complete().into(),
                }),
                Some(frames.stop.clone()),
            ),
            // Counted by the writer, which closes the connection.
            FeedItem::End(Some(EndReason::Overflow)) => Output::SlowConsumer,
        }
    }
}

/// A connection's subscriptions, polled in turn. A connection has a few;
/// a plain vector costs nothing per subscription beyond the feed itself
/// (a `SelectAll` allocates a task node per stream and a queue per set).
#[derive(Default)]
pub(super) struct Feeds {
    feeds: Vec<FeedStream>,
    /// Where the next poll starts, so no feed starves the others.
    next: usize,
}

impl Feeds {
    pub fn push(&mut self, feed: FeedStream) {
        // Sized to the subscriptions (most connections have one): a
        // vector's first growth would make room for four.
        self.feeds.reserve_exact(1);
        self.feeds.push(feed);
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// The next item of any feed; finished feeds are dropped.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(Arc<FeedMeta>, FeedItem)> {
        let mut polled = 0;
        while polled < self.feeds.len() {
            let index = self.next % self.feeds.len();
            match Pin::new(&mut self.feeds[index]).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    self.next = index + 1;
                    return Poll::Ready(item);
                }
                Poll::Ready(None) => {
                    self.feeds.swap_remove(index);
                    if self.feeds.is_empty() {
                        self.feeds = Vec::new();
                    }
                }
                Poll::Pending => {
                    self.next = index + 1;
                    polled += 1;
                }
            }
        }
        Poll::Pending
    }
}
