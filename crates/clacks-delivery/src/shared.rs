//! One committed event as every subscriber shares it: the event itself and
//! the bytes it renders to, so a transport serializes an event once per
//! distinct request shape instead of once per subscriber.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use clacks_core::ChannelEvent;

/// How many distinct renderings one event keeps (one per distinct
/// subscription document and variables; clients tend to share a few).
const MAX_RENDERINGS: usize = 8;

#[derive(Debug)]
pub struct SharedEvent {
    event: ChannelEvent,
    /// Routed live (not replayed from the store for a resuming client).
    live: bool,
    renderings: Mutex<Vec<(u64, Arc<str>)>>,
}

impl SharedEvent {
    /// An event routed live.
    pub fn new(event: ChannelEvent) -> Arc<SharedEvent> {
        Arc::new(SharedEvent {
            event,
            live: true,
            renderings: Mutex::new(Vec::new()),
        })
    }

    /// An event read back from the store for a resuming subscriber.
    pub fn replayed(event: ChannelEvent) -> Arc<SharedEvent> {
        Arc::new(SharedEvent {
            event,
            live: false,
            renderings: Mutex::new(Vec::new()),
        })
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    pub fn event(&self) -> &ChannelEvent {
        &self.event
    }

    /// The rendering stored under `key`, if a subscriber made it already.
    pub fn rendering(&self, key: u64) -> Option<Arc<str>> {
        let renderings = self.renderings.lock().unwrap_or_else(|p| p.into_inner());
        renderings
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, bytes)| bytes.clone())
    }

    /// Keeps a rendering for the next subscriber with the same `key`.
    pub fn keep_rendering(&self, key: u64, rendered: Arc<str>) {
        let mut renderings = self.renderings.lock().unwrap_or_else(|p| p.into_inner());
        if renderings.len() < MAX_RENDERINGS && !renderings.iter().any(|(k, _)| *k == key) {
            renderings.push((key, rendered));
        }
    }
}

impl Deref for SharedEvent {
    type Target = ChannelEvent;

    fn deref(&self) -> &ChannelEvent {
        &self.event
    }
}
