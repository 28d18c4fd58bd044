//! The promises the fault tests check, read from the database itself (not
//! through the server under test) and from what the clients recorded.

use std::collections::HashMap;

use clacks_core::{ChannelId, HistoryPage, Message};
use clacks_store::{MAX_PAGE, PoolSettings};

use super::traffic::{SendLog, SubscriberLog};

/// Every message of `channel`, by ascending seq.
pub async fn stored_messages(database_url: &str, channel: i64) -> Vec<Message> {
    let settings = PoolSettings {
        max_connections: 2,
        ..PoolSettings::default()
    };
    let store = clacks_store::connect(database_url, &settings)
        .await
        .expect("open the database to check it");
    let mut messages: Vec<Message> = Vec::new();
    loop {
        let after = messages.last().map_or(0, |m| m.seq);
        let page = store
            .history(ChannelId(channel), HistoryPage::After(after), MAX_PAGE)
            .await
            .expect("read the channel's messages");
        if page.is_empty() {
            break;
        }
        messages.extend(page);
    }
    store.close().await;
    messages
}

/// Checks what a crash or an outage must not break: seqs are gap-free from
/// 1, no client message id is stored twice, and every acknowledged message
/// is stored with the seq its ack named. Returns the stored seq of each
/// client message id.
pub fn check_durable(stored: &[Message], senders: &[SendLog]) -> HashMap<String, i64> {
    for (i, message) in stored.iter().enumerate() {
        assert_eq!(
            message.seq,
            i as i64 + 1,
            "seqs must be gap-free from 1: position {i} holds seq {}",
            message.seq
        );
    }
    let mut by_id: HashMap<String, i64> = HashMap::with_capacity(stored.len());
    for message in stored {
        let id = message
            .client_message_id
            .clone()
            .unwrap_or_else(|| panic!("seq {} has no client message id", message.seq));
        if let Some(first) = by_id.insert(id.clone(), message.seq) {
            panic!("{id} is stored twice: seq {first} and seq {}", message.seq);
        }
        assert_eq!(
            message.content.split('|').next(),
            Some(id.as_str()),
            "seq {} content",
            message.seq
        );
    }
    for sender in senders {
        for (id, seq) in sender.acked() {
            match by_id.get(id) {
                Some(stored_seq) => assert_eq!(
                    *stored_seq, seq,
                    "{id} was acknowledged with seq {seq} but is stored at seq {stored_seq}"
                ),
                None => panic!("{id} was acknowledged with seq {seq} but is not stored"),
            }
        }
    }
    by_id
}

/// Checks a subscriber received every message up to `last` exactly once,
/// in seq order: each connection resumed right after the last seq seen
/// before it and delivered a gap-free run from there. Returns how many
/// times it reconnected.
pub fn check_delivered(subscriber: &SubscriberLog, last: i64) -> usize {
    let user = &subscriber.user;
    let mut seen = 0i64;
    for (n, run) in subscriber.runs.iter().enumerate() {
        assert_eq!(
            run.after, seen,
            "{user}: connection {n} resumed after {} but had seen up to {seen}",
            run.after
        );
        for seq in &run.seqs {
            assert_eq!(
                *seq,
                seen + 1,
                "{user}: connection {n} delivered seq {seq} after seq {seen} (gap or duplicate)"
            );
            seen = *seq;
        }
    }
    assert_eq!(
        seen,
        last,
        "{user} ended at seq {seen} of {last}; closes: {:?}",
        subscriber.closes()
    );
    subscriber.runs.len().saturating_sub(1)
}

/// The `q`-quantile of `values` (sorted in place).
pub fn quantile(values: &mut [std::time::Duration], q: f64) -> std::time::Duration {
    if values.is_empty() {
        return std::time::Duration::ZERO;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[index.min(values.len() - 1)]
}

/// Sends every message a sender never got an ack for again, with the same
/// client message id, to a (restarted) server: a message stored before
/// must come back with its stored seq, one that was not is stored now.
/// Then checks the channel again. Returns how many the retries stored.
pub async fn check_retries(
    server: &super::server::Server,
    database_url: &str,
    channel: i64,
    senders: &[SendLog],
    stored_before: &HashMap<String, i64>,
) -> usize {
    let last_before = stored_before.len() as i64;
    let mut stored_now = 0;
    for sender in senders {
        for id in sender.never_acked() {
            let seq = server
                .send_once(&sender.user, channel, &id)
                .await
                .unwrap_or_else(|code| panic!("retrying {id}: {code}"));
            match stored_before.get(&id) {
                Some(stored) => assert_eq!(
                    seq, *stored,
                    "a retry of {id} (stored at seq {stored}) answered seq {seq}"
                ),
                None => {
                    assert!(
                        seq > last_before,
                        "{id} was not stored, its retry answered old seq {seq}"
                    );
                    stored_now += 1;
                }
            }
        }
    }
    let after = stored_messages(database_url, channel).await;
    check_durable(&after, senders);
    assert_eq!(
        after.len(),
        stored_before.len() + stored_now,
        "retries stored exactly the messages that were missing"
    );
    stored_now
}
