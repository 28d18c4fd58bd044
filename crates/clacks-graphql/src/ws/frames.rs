//! The frames of one operation, in the connection's protocol.

use std::hash::{Hash, Hasher};

use async_graphql::Response;
use serde_json::json;

use super::Protocol;
use super::stop::StopSwitch;
use crate::error::{INTERNAL, coded};

/// Frame templates of one operation.
pub(super) struct Frames {
    pub protocol: Protocol,
    id: Box<str>,
    /// The operation's switch: once the client stops it, its frames still
    /// queued are dropped (the id may already be reused).
    pub stop: StopSwitch,
}

impl Frames {
    pub fn new(protocol: Protocol, id: &str, stop: StopSwitch) -> Self {
        Frames {
            protocol,
            id: id.into(),
            stop,
        }
    }

    fn result_kind(&self) -> &'static str {
        match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        }
    }

    pub fn next(&self, response: &Response) -> String {
        #[derive(serde::Serialize)]
        struct Frame<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            payload: &'a Response,
        }
        serde_json::to_string(&Frame {
            id: &self.id,
            kind: self.result_kind(),
            payload: response,
        })
        .unwrap_or_else(|_| self.error(&[coded(INTERNAL, "internal error")]))
    }

    /// An operation-level failure (`error` in graphql-transport-ws; a
    /// `data` frame with errors in the legacy protocol, as its server did).
    pub fn error(&self, errors: &[async_graphql::ServerError]) -> String {
        match self.protocol {
            Protocol::TransportWs => {
                json!({"id": &*self.id, "type": "error", "payload": errors}).to_string()
            }
            Protocol::Legacy => {
                json!({"id": &*self.id, "type": "data", "payload": {"data": null, "errors": errors}})
                    .to_string()
            }
        }
    }

    /// Identifies the result frames of this operation around the payloads
    /// of the rendering `render_key`: equal keys, equal frames.
    pub fn frame_key(&self, render_key: u64) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        render_key.hash(&mut hasher);
        self.result_kind().hash(&mut hasher);
        self.id.hash(&mut hasher);
        hasher.finish()
    }

    /// A result frame around an already serialized response payload.
    pub fn next_raw(&self, payload: &str) -> String {
        let kind = self.result_kind();
        let mut frame = String::with_capacity(payload.len() + self.id.len() + 34);
        frame.push_str("{\"id\":");
        push_json_string(&mut frame, &self.id);
        frame.push_str(",\"type\":\"");
        frame.push_str(kind);
        frame.push_str("\",\"payload\":");
        frame.push_str(payload);
        frame.push('}');
        frame
    }

    pub fn complete(&self) -> String {
        json!({"id": &*self.id, "type": "complete"}).to_string()
    }
}

/// Appends `text` as a JSON string. Plain text (printable ASCII with no
/// quote or backslash: the usual operation ids, "1" or a UUID) needs no
/// escaping and goes in without an allocation: this runs once per
/// delivered event.
fn push_json_string(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(text).to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn result_frames_quote_any_id_as_json_does() {
        for id in [
            "1",
            "9b2c-uuid",
            "with \"quotes\"",
            "back\\slash",
            "tab\there",
            "é",
            "\u{7f}",
        ] {
            let frames = Frames::new(Protocol::TransportWs, id, StopSwitch::default());
            let frame: serde_json::Value =
                serde_json::from_str(&frames.next_raw(r#"{"data":null}"#)).unwrap();
            assert_eq!(
                frame,
                json!({"id": id, "type": "next", "payload": {"data": null}}),
                "{id:?}"
            );
        }
    }
}
