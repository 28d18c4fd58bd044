//! One committed event as every subscriber shares it: the event itself and
//! the bytes it renders to, so a transport serializes an event once per
//! distinct request shape instead of once per subscriber.

use std::any::Any;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use clacks_core::ChannelEvent;

/// How many distinct renderings one event keeps (one per distinct
/// subscription document and variables; clients tend to share a few).
const MAX_RENDERINGS: usize = 8;

#[derive(Debug)]
pub struct SharedEvent {
    event: ChannelEvent,
    /// Routed live (not replayed from the store for a resuming client).
    live: bool,
    /// The first rendering made. Every subscriber of a channel usually
    /// shares one document, and reading a `OnceLock` writes nothing: a
    /// thousand subscribers on two threads do not pass a lock's (or a
    /// reference count's) cache line back and forth.
    first: OnceLock<(u64, Arc<str>)>,
    /// Renderings of other documents.
    others: Mutex<Vec<(u64, Arc<str>)>>,
    /// One whole frame a transport built around a rendering, for the next
    /// subscriber whose frame would be the same bytes (same rendering,
    /// same operation id): a delivery then clones it instead of building
    /// its own. Typed by the transport, which the hub knows nothing of.
    frame: OnceLock<(u64, Box<dyn Any + Send + Sync>)>,
}

/// A rendering of an event: borrowed from it when it is the first one.
pub enum Rendering<'a> {
    First(&'a str),
    Other(Arc<str>),
}

impl Deref for Rendering<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Rendering::First(text) => text,
            Rendering::Other(text) => text,
        }
    }
}

impl SharedEvent {
    /// An event routed live.
    pub fn new(event: ChannelEvent) -> Arc<SharedEvent> {
        Arc::new(SharedEvent {
            event,
            live: true,
            first: OnceLock::new(),
            others: Mutex::new(Vec::new()),
            frame: OnceLock::new(),
        })
    }

    /// An event read back from the store for a resuming subscriber.
    pub fn replayed(event: ChannelEvent) -> Arc<SharedEvent> {
        Arc::new(SharedEvent {
            event,
            live: false,
            first: OnceLock::new(),
            others: Mutex::new(Vec::new()),
            frame: OnceLock::new(),
        })
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    pub fn event(&self) -> &ChannelEvent {
        &self.event
    }

    /// The rendering stored under `key`, if a subscriber made it already.
    pub fn rendering(&self, key: u64) -> Option<Rendering<'_>> {
        let (first_key, first) = self.first.get()?;
        if *first_key == key {
            return Some(Rendering::First(first));
        }
        let others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        others
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, bytes)| Rendering::Other(bytes.clone()))
    }

    /// The frame kept under `key`, if a subscriber built it already.
    pub fn frame<T: Any + Clone>(&self, key: u64) -> Option<T> {
        let (frame_key, frame) = self.frame.get()?;
        if *frame_key != key {
            return None;
        }
        frame.downcast_ref::<T>().cloned()
    }

    /// Keeps `frame` for the next subscriber with the same `key`, unless a
    /// frame is kept already (the first subscriber's shape is the common
    /// one; the others build their own).
    pub fn keep_frame<T: Any + Send + Sync>(&self, key: u64, frame: T) {
        let _ = self.frame.set((key, Box::new(frame)));
    }

    /// Keeps a rendering for the next subscriber with the same `key`.
    pub fn keep_rendering(&self, key: u64, rendered: Arc<str>) {
        let Err((key, rendered)) = self.first.set((key, rendered)) else {
            return;
        };
        if self.first.get().is_some_and(|(first, _)| *first == key) {
            return;
        }
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        if others.len() + 1 < MAX_RENDERINGS && !others.iter().any(|(k, _)| *k == key) {
            others.push((key, rendered));
        }
    }
}

impl Deref for SharedEvent {
    type Target = ChannelEvent;

    fn deref(&self) -> &ChannelEvent {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use clacks_core::{ChannelId, EventPayload};

    use super::*;

    fn channel_deleted() -> Arc<SharedEvent> {
        SharedEvent::new(ChannelEvent {
            channel_id: ChannelId(1),
            seq: 1,
            durable: true,
            at: 0,
            payload: EventPayload::ChannelDeleted,
        })
    }

    #[test]
    fn renderings_are_kept_once_per_key_up_to_the_bound() {
        let event = channel_deleted();
        assert!(event.rendering(1).is_none());
        event.keep_rendering(1, "one".into());
        event.keep_rendering(1, "one again".into());
        assert_eq!(
            event.rendering(1).as_deref(),
            Some("one"),
            "the first kept wins"
        );
        for key in 2..20 {
            event.keep_rendering(key, format!("r{key}").into());
        }
        assert_eq!(event.rendering(2).as_deref(), Some("r2"));
        assert_eq!(
            event.rendering(MAX_RENDERINGS as u64).as_deref(),
            Some(format!("r{MAX_RENDERINGS}").as_str())
        );
        assert!(
            event.rendering(MAX_RENDERINGS as u64 + 1).is_none(),
            "at most {MAX_RENDERINGS} kept"
        );
    }

    #[test]
    fn one_frame_is_kept_under_its_key_and_type() {
        let event = channel_deleted();
        assert_eq!(event.frame::<String>(7), None);
        event.keep_frame(7, "frame".to_owned());
        event.keep_frame(8, "other".to_owned());
        assert_eq!(event.frame::<String>(7).as_deref(), Some("frame"));
        assert_eq!(event.frame::<String>(8), None, "one frame is kept");
        assert_eq!(event.frame::<u32>(7), None, "another type is not it");
    }
}
