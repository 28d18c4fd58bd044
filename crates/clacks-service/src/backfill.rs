use std::sync::Arc;

use clacks_core::{ChannelEvent, ChannelId, Result, Seq, UserId};
use clacks_delivery::Backfill;
use clacks_store::Store;
use futures::future::BoxFuture;

/// Lets the delivery hub fill gaps from the database, the source of truth.
pub struct StoreBackfill(pub Arc<dyn Store>);

impl Backfill for StoreBackfill {
    fn events_after(
        &self,
        channel: ChannelId,
        after: Seq,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ChannelEvent>>> {
        Box::pin(self.0.events_after(channel, after, limit))
    }

    fn last_seq(&self, channel: ChannelId) -> BoxFuture<'_, Result<Seq>> {
        Box::pin(async move { Ok(self.0.channel(channel).await?.last_seq) })
    }

    fn batch_users(
        &self,
        channel: ChannelId,
        seq: Seq,
        only: Option<UserId>,
    ) -> BoxFuture<'_, Result<Vec<UserId>>> {
        Box::pin(async move { self.0.batch_users(channel, seq, only.as_ref()).await })
    }
}
