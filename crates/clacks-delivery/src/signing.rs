//! Authentication of what nodes tell each other over NATS.
//!
//! Anyone who can publish on a deployment's subjects could otherwise forge
//! events, memberships and disconnects. Every payload is prefixed with an
//! HMAC-SHA256 of its subject and body under the cluster key, which every
//! node of a deployment shares (configured, or derived from the JWT secret,
//! which they share already); anything else is dropped and counted. Bodies
//! carry the time they were sent, and one older (or, with clock skew,
//! newer) than [`MAX_SKEW_MS`] is dropped too, so a captured message cannot
//! be replayed later. Within that window a replayed durable event is a
//! duplicate the hub's sequencer drops by seq, and the database stays the
//! source of truth for everything durable.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const TAG_LEN: usize = 32;
/// How far a message's send time may be from this node's clock.
pub(crate) const MAX_SKEW_MS: i64 = 60_000;

/// The key that signs and checks inter-node messages.
#[derive(Clone)]
pub struct ClusterKey(Hmac<Sha256>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why an inter-node message was dropped (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// No tag at all: a plain message from something that is not a node.
    Unsigned,
    /// A tag that does not match: another key, or a tampered message.
    Forged,
    /// Signed, but not a message this version understands.
    Malformed,
    /// Signed, but sent too long ago (or too far in the future).
    Stale,
}

impl Rejected {
    pub(crate) fn count(self) {
        let reason = match self {
            Rejected::Unsigned => "unsigned",
            Rejected::Forged => "forged",
            Rejected::Malformed => "malformed",
            Rejected::Stale => "stale",
        };
        metrics::counter!("clacks_nats_rejected_total", "reason" => reason).increment(1);
    }
}

impl ClusterKey {
    /// A key derived from a shared secret (the configured cluster key, or
    /// the JWT secret): the secret itself is never used as an HMAC key for
    /// two purposes.
    pub fn from_secret(secret: &[u8]) -> ClusterKey {
        let derived = Sha256::new()
            .chain_update(b"clacks inter-node messages v1\0")
            .chain_update(secret)
            .finalize();
        // HMAC pads a key shorter than its block with zeros: this is the
        // 32-byte key, through the infallible constructor.
        let mut block = hmac::digest::Key::<Hmac<Sha256>>::default();
        block[..derived.len()].copy_from_slice(&derived);
        ClusterKey(<Hmac<Sha256> as hmac::digest::KeyInit>::new(&block))
    }

    fn tag(&self, subject: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(subject.as_bytes());
        mac.update(&[0]);
        mac.update(body);
        mac
    }

    /// `body` with its tag in front, for `subject`.
    pub(crate) fn seal(&self, subject: &str, body: &[u8]) -> Bytes {
        let tag = self.tag(subject, body).finalize().into_bytes();
        let mut sealed = BytesMut::with_capacity(TAG_LEN + body.len());
        sealed.put_slice(&tag);
        sealed.put_slice(body);
        sealed.freeze()
    }

    /// A user's token in NATS subjects: any user id (any characters, '.'
    /// and '*' included) becomes 32 hex digits, a valid subject token, and
    /// the ids stay out of subject names someone watching NATS sees. Two
    /// users sharing a token (2^-128) would only share a subject; the hub
    /// checks the user of every event it receives.
    pub(crate) fn user_token(&self, user: &str) -> String {
        use std::fmt::Write;
        let tag = self
            .tag("user subject", user.as_bytes())
            .finalize()
            .into_bytes();
        tag.iter()
            .take(16)
            .fold(String::with_capacity(32), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            })
    }

    /// The body of a payload received on `subject`, if its tag is right
    /// (checked in constant time).
    pub(crate) fn open<'a>(&self, subject: &str, payload: &'a [u8]) -> Result<&'a [u8], Rejected> {
        let unsigned = || {
            if payload.first() == Some(&b'{') {
                Rejected::Unsigned
            } else {
                Rejected::Forged
            }
        };
        if payload.len() < TAG_LEN {
            return Err(unsigned());
        }
        let (tag, body) = payload.split_at(TAG_LEN);
        self.tag(subject, body)
            .verify_slice(tag)
            .map(|()| body)
            .map_err(|_| unsigned())
    }
}

/// Whether a message sent at `sent_ms` may still be acted on.
pub(crate) fn is_fresh(sent_ms: i64) -> bool {
    (clacks_core::now_ms() - sent_ms).abs() <= MAX_SKEW_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_what_it_sealed_for_that_subject_only() {
        let key = ClusterKey::from_secret(b"shared by every node");
        let sealed = key.seal("clacks.ch.1", br#"{"n":1}"#);
        assert_eq!(key.open("clacks.ch.1", &sealed), Ok(&br#"{"n":1}"#[..]));
        assert_eq!(
            key.open("clacks.ch.2", &sealed),
            Err(Rejected::Forged),
            "a tag binds its subject"
        );
    }

    #[test]
    fn refuses_unsigned_tampered_and_foreign_messages() {
        let key = ClusterKey::from_secret(b"shared by every node");
        assert_eq!(
            key.open("clacks.ch.1", br#"{"node":1,"event":{}}"#),
            Err(Rejected::Unsigned)
        );
        assert_eq!(key.open("clacks.ch.1", b"{}"), Err(Rejected::Unsigned));
        let mut tampered = key.seal("clacks.ch.1", br#"{"n":1}"#).to_vec();
        if let Some(last) = tampered.last_mut() {
            *last = b'2';
        }
        assert_eq!(key.open("clacks.ch.1", &tampered), Err(Rejected::Forged));
        let foreign = ClusterKey::from_secret(b"another deployment").seal("clacks.ch.1", b"{}");
        assert_eq!(key.open("clacks.ch.1", &foreign), Err(Rejected::Forged));
    }

    #[test]
    fn a_user_token_is_one_subject_token_whatever_the_id() {
        let key = ClusterKey::from_secret(b"shared by every node");
        let token = key.user_token("a.b *>\u{1F600}");
        assert_eq!(token.len(), 32);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
        assert_eq!(
            token,
            key.user_token("a.b *>\u{1F600}"),
            "the same on every node"
        );
        assert_ne!(token, key.user_token("a.b *>"));
    }

    #[test]
    fn freshness_is_a_window_around_now() {
        let now = clacks_core::now_ms();
        assert!(is_fresh(now));
        assert!(is_fresh(now - MAX_SKEW_MS + 1_000));
        assert!(!is_fresh(now - MAX_SKEW_MS - 1_000));
        assert!(!is_fresh(now + MAX_SKEW_MS + 1_000));
    }
}
