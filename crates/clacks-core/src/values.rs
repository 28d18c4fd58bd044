//! Validated values. Each type can only be built through `parse`, so holding
//! one proves the input was checked, once, for every transport.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};

/// Numeric channel id, as in the original API (`{"id": n}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(pub i64);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ChannelId {
    /// Parses an id given as text (GraphQL `ID`, URL path segment).
    pub fn parse(raw: &str) -> Result<Self> {
        raw.trim()
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(ChannelId)
            .ok_or_else(|| Error::invalid("channel", "must be a positive integer id"))
    }
}

/// Global message id (unique across channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub i64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl MessageId {
    pub fn parse(raw: &str) -> Result<Self> {
        raw.trim()
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(MessageId)
            .ok_or_else(|| Error::invalid("message", "must be a positive integer id"))
    }
}

/// Position in a channel's event stream. Every message and every durable
/// channel event gets the next one, gap-free, in the transaction storing it.
pub type Seq = i64;

pub const USER_ID_MAX_CHARS: usize = 200;
pub const DISPLAY_NAME_MAX_CHARS: usize = 150;
pub const CLIENT_MESSAGE_ID_MAX_CHARS: usize = 100;
pub const ROLE_MAX_CHARS: usize = 32;
/// Longest reaction key, in bytes: room for any emoji sequence (a family
/// with skin tones is about 40 bytes) or a short name like `thumbs_up`.
pub const REACTION_KEY_MAX_BYTES: usize = 64;
/// Most different reaction keys one message carries. Without a cap, one
/// member could pile keys onto a message until every reader of it pays
/// for them; chat apps show a handful (Discord allows 20, Slack 23).
pub const MAX_REACTION_KEYS_PER_MESSAGE: i64 = 50;
/// Default limit on message content, in bytes of UTF-8.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Metadata is a small JSON document, not a blob store.
pub const METADATA_MAX_BYTES: usize = 16 * 1024;

fn check_text(field: &'static str, raw: &str, max_chars: usize) -> Result<()> {
    if raw.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    let chars = raw.chars().count();
    if chars > max_chars {
        return Err(Error::invalid(
            field,
            format!("is {chars} characters, the maximum is {max_chars}"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Identifiers are compared byte for byte on every backend; MySQL's
/// collations ignore trailing spaces, so ids may not start or end with one.
fn check_identifier(field: &'static str, raw: &str, max_chars: usize) -> Result<()> {
    check_text(field, raw, max_chars)?;
    if raw.trim() != raw {
        return Err(Error::invalid(
            field,
            "must not start or end with whitespace",
        ));
    }
    Ok(())
}

/// The application's opaque user id: 1 to 200 characters, no control
/// characters. Clacks never interprets it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: impl Into<String>) -> Result<Self> {
        let raw = raw.into();
        check_identifier("user id", &raw, USER_ID_MAX_CHARS)?;
        Ok(UserId(raw))
    }

    /// For values read back from the store, which only ever holds parsed ids.
    pub fn from_trusted(raw: String) -> Self {
        UserId(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A channel's display name: 1 to 150 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: impl Into<String>) -> Result<Self> {
        let raw = raw.into();
        check_text("display name", &raw, DISPLAY_NAME_MAX_CHARS)?;
        Ok(DisplayName(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A member's role in a channel (free-form for the application, e.g.
/// `member`, `admin`); defaults to `member`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Role(String);

impl Role {
    pub fn parse(raw: impl Into<String>) -> Result<Self> {
        let raw = raw.into();
        check_identifier("role", &raw, ROLE_MAX_CHARS)?;
        Ok(Role(raw))
    }

    pub fn member() -> Self {
        Role("member".to_owned())
    }

    pub fn from_trusted(raw: String) -> Self {
        Role(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Role {
    fn default() -> Self {
        Role::member()
    }
}

/// A client-chosen id that makes `createMessage` idempotent: a retry with
/// the same id (same channel, same sender) returns the original message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    pub fn parse(raw: impl Into<String>) -> Result<Self> {
        let raw = raw.into();
        check_identifier("client message id", &raw, CLIENT_MESSAGE_ID_MAX_CHARS)?;
        Ok(ClientMessageId(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reaction: an emoji or a short key (`+1`, `thumbs_up`). 1 to
/// [`REACTION_KEY_MAX_BYTES`] bytes of UTF-8, no whitespace and no control
/// or format characters anywhere (so a key cannot hide padding). Compared
/// byte for byte: `👍` and `+1` are different reactions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReactionKey(String);

impl ReactionKey {
    pub fn parse(raw: impl Into<String>) -> Result<Self> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(Error::invalid("key", "must not be empty"));
        }
        if raw.len() > REACTION_KEY_MAX_BYTES {
            return Err(Error::invalid(
                "key",
                format!("must be at most {REACTION_KEY_MAX_BYTES} bytes"),
            ));
        }
        // ZERO WIDTH JOINER and the variation selectors are what emoji
        // sequences are made of; other format characters (bidi overrides,
        // zero-width spaces) only hide what a key is.
        let hidden = |c: char| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '\u{200b}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
        };
        if raw.chars().any(hidden) {
            return Err(Error::invalid(
                "key",
                "must not contain whitespace, control or invisible characters",
            ));
        }
        Ok(ReactionKey(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Message content: not blank, at most `max_bytes` of UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageBody(String);

impl MessageBody {
    pub fn parse(raw: impl Into<String>, max_bytes: usize) -> Result<Self> {
        let raw = raw.into();
        if raw.len() > max_bytes {
            return Err(Error::PayloadTooLarge {
                what: "message content",
                actual: raw.len(),
                limit: max_bytes,
            });
        }
        if raw.trim().is_empty() {
            return Err(Error::invalid("content", "must not be empty"));
        }
        if raw.contains('\0') {
            return Err(Error::invalid("content", "must not contain NUL characters"));
        }
        Ok(MessageBody(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Optional JSON metadata attached to a channel, at most
/// [`METADATA_MAX_BYTES`] when serialized, and always a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(serde_json::Value);

impl Metadata {
    pub fn parse(value: serde_json::Value) -> Result<Self> {
        if !value.is_object() {
            return Err(Error::invalid("metadata", "must be a JSON object"));
        }
        let size = value.to_string().len();
        if size > METADATA_MAX_BYTES {
            return Err(Error::PayloadTooLarge {
                what: "metadata",
                actual: size,
                limit: METADATA_MAX_BYTES,
            });
        }
        Ok(Metadata(value))
    }

    pub fn from_stored(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok().map(Metadata)
    }

    pub fn as_value(&self) -> &serde_json::Value {
        &self.0
    }

    pub fn to_json_string(&self) -> String {
        self.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_limits() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("  ").is_err());
        assert!(UserId::parse("a\nb").is_err());
        assert!(UserId::parse("é".repeat(200)).is_ok());
        assert!(UserId::parse("é".repeat(201)).is_err());
    }

    #[test]
    fn display_name_limits() {
        assert!(DisplayName::parse("x".repeat(150)).is_ok());
        assert!(matches!(
            DisplayName::parse("x".repeat(151)),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn message_body_limits() {
        assert!(MessageBody::parse("hi", 16).is_ok());
        assert!(matches!(
            MessageBody::parse("x".repeat(17), 16),
            Err(Error::PayloadTooLarge { limit: 16, .. })
        ));
        assert!(MessageBody::parse(" \n", 16).is_err());
    }

    #[test]
    fn ids_parse() {
        assert_eq!(ChannelId::parse("42").ok(), Some(ChannelId(42)));
        assert!(ChannelId::parse("0").is_err());
        assert!(ChannelId::parse("abc").is_err());
        assert!(MessageId::parse("-1").is_err());
    }

    #[test]
    fn metadata_must_be_object() {
        assert!(Metadata::parse(serde_json::json!({"a": 1})).is_ok());
        assert!(Metadata::parse(serde_json::json!([1])).is_err());
    }
}
