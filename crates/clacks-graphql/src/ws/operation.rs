//! One operation of a connection, run as its own task until it is done or,
//! for a subscription, until its resolver hands the event stream over to
//! the connection's writer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError, Value};
use clacks_service::Caller;
use futures::{FutureExt, StreamExt};

use super::Protocol;
use super::feed::{FeedStream, OperationGauge};
use super::frames::Frames;
use super::outbox::{MutationInFlight, Outbox};
use crate::AppState;
use crate::error::{INTERNAL, coded, finalize};
use crate::render::{FeedHandoff, FeedSlot, RenderPlan};

/// Runs one operation, queueing its results, until it is over, handed
/// over, or stopped through its switch (`frames.stop`). A mutation (with
/// its `in_flight` guard) is never stopped half way: a stop only drops its
/// answer, and the connection's close waits for the guard.
pub(super) async fn operation(
    state: AppState,
    request: Request,
    document: Arc<ExecutableDocument>,
    caller: Arc<Caller>,
    outbox: Arc<Outbox>,
    frames: Frames,
    in_flight: Option<MutationInFlight>,
) {
    let stop = frames.stop.clone();
    let run = async move {
        let gauge = OperationGauge::start();
        // The executor's state is large and only needed until a
        // subscription is handed over; boxed, it is freed before the
        // subscription lives on.
        let handed_over =
            Box::pin(execute(&state, request, document, caller, &outbox, &frames)).await;
        match handed_over {
            Some((handoff, plan)) => {
                let feed = FeedStream::new(frames, plan, handoff, gauge);
                outbox.hand_over(feed).await;
            }
            None => frames.stop.finish(),
        }
    };
    match in_flight {
        Some(in_flight) => {
            run.await;
            drop(in_flight);
        }
        None => tokio::select! {
            biased;
            () = stop.stopped() => {}
            () = run => {}
        },
    }
}

/// Runs an operation through the executor, sending its results, unless a
/// subscription resolver hands its stream over (returned for the writer).
async fn execute(
    state: &AppState,
    request: Request,
    document: Arc<ExecutableDocument>,
    caller: Arc<Caller>,
    outbox: &Outbox,
    frames: &Frames,
) -> Option<(FeedHandoff, RenderPlan)> {
    // A subscription resolver hands its event stream over through this slot
    // instead of letting the executor render every event per subscriber.
    let slot = FeedSlot::default();
    let plan_source = (
        request.query.clone(),
        document,
        request.operation_name.clone(),
        request.variables.clone(),
    );
    let mut stream = state.schema.execute_stream(request.data(slot.clone()));
    let mut first = true;
    loop {
        let next = AssertUnwindSafe(stream.next()).catch_unwind().await;
        let response = match next {
            Ok(Some(response)) => finalize(response),
            Ok(None) => {
                if let Some(handoff) = slot.take() {
                    let (query, document, operation_name, variables) = plan_source;
                    let plan = RenderPlan::new(
                        &query,
                        &document,
                        operation_name.as_deref(),
                        &variables,
                        caller,
                        state.guard.limits().database_fetches,
                    );
                    return Some((handoff, plan));
                }
                break;
            }
            Err(_) => {
                tracing::error!("a GraphQL operation panicked");
                outbox
                    .send(
                        frames.error(&[coded(INTERNAL, "internal error")]),
                        &frames.stop,
                    )
                    .await;
                return None;
            }
        };
        if first && response.data == Value::Null && !response.errors.is_empty() {
            refuse(outbox, frames, &response.errors).await;
            return None;
        }
        first = false;
        if !outbox.send(frames.next(&response), &frames.stop).await {
            return None;
        }
    }
    outbox.send(frames.complete(), &frames.stop).await;
    None
}

/// Ends an operation that failed before any result with its errors (the
/// legacy protocol wants a `complete` after them).
async fn refuse(outbox: &Outbox, frames: &Frames, errors: &[ServerError]) {
    if outbox.send(frames.error(errors), &frames.stop).await && frames.protocol == Protocol::Legacy
    {
        outbox.send(frames.complete(), &frames.stop).await;
    }
}
