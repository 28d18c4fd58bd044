//! Group commit for messages: concurrent sends share one transaction.
//!
//! One fsync per message caps a database at hundreds to a few thousand
//! commits per second, and a channel's writers queue on its seq row lock.
//! Every message goes through one writer task per store instead: it takes
//! whatever has queued up (at most [`MAX_BATCH`]), stores it in one
//! transaction, commits, and only then answers each caller, so an ack
//! still means committed. Nothing waits for a timer: at low load a batch is
//! one message and costs what a direct insert costs.

use std::future::Future;

use clacks_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

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

pub(crate) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the writer task; `write` stores one batch and answers it.
    pub fn spawn<F, Fut>(write: F) -> Batcher
    where
        F: Fn(Vec<Pending>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (queue, mut rx) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = Vec::with_capacity(MAX_BATCH.min(rx.len() + 1));
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                metrics::histogram!("clacks_store_batch_size").record(batch.len() as f64);
                write(batch).await;
            }
        });
        Batcher { queue }
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
