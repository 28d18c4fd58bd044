//! A member's removal raced against their subscribe and against their
//! sends, many rounds on each backend, over real sockets (issue 11): no
//! event after their `member_left` reaches them, and no message of theirs
//! takes a seq after it.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use super::client::{MODERN, Ws};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(removal_raced_against_subscribe, removal_raced_against_send);

const ROUNDS: usize = 200;

const EVENTS: &str = "subscription($c: ID, $after: Int) { events(channel: $c, afterSeq: $after) {
    __typename channelId seq
    ... on MessageCreated { message { content sender { id } } }
    ... on MemberLeft { userId }
} }";

/// Content of the messages posted once bob is no longer a member.
const AFTER: &str = "posted after bob left";

/// Orders the removal around the other side differently from round to
/// round, so that many interleavings come up.
async fn stagger(round: usize) {
    match round % 4 {
        0 => {}
        1 => tokio::task::yield_now().await,
        2 => tokio::time::sleep(Duration::from_millis(1)).await,
        _ => tokio::time::sleep(Duration::from_millis(2)).await,
    }
}

async fn remove(app: &TestApp, channel: i64, user: &str) {
    let status = app
        .http
        .delete(app.api(&format!("/channel/{channel}/users/{user}")))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "removing {user}: {status}");
}

/// Sends as `token` over HTTP: the seq, or the error code.
async fn send(app: &TestApp, token: &str, channel: i64, text: &str) -> Result<i64, String> {
    let r = app
        .graphql(
            Some(token),
            "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { seq } }",
            json!({"c": channel.to_string(), "t": text}),
        )
        .await;
    match r["data"]["createMessage"]["seq"].as_i64() {
        Some(seq) => Ok(seq),
        None => Err(r["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("neither a seq nor a code: {r}"))
            .to_owned()),
    }
}

/// What bob's socket said about one operation.
#[derive(Debug)]
enum Said {
    Event(Value),
    /// A `next` carrying an error (its code): the stream ends.
    Error(String),
    /// The subscribe was refused (the code); nothing follows.
    Refused(String),
    Complete,
}

/// The next frame of operation `id`. Any frame showing bob a message
/// posted after his removal, whatever its operation, fails the test.
async fn said(bob: &mut Ws, id: &str) -> Said {
    loop {
        let frame = bob.recv().await;
        let payload = &frame["payload"];
        let content = &payload["data"]["events"]["message"]["content"];
        assert_ne!(
            content, AFTER,
            "bob saw a message posted after his removal: {frame}"
        );
        if frame["id"] != id {
            continue;
        }
        return match frame["type"].as_str() {
            Some("next") if payload.get("errors").is_some() => {
                Said::Error(code(&payload["errors"]))
            }
            Some("next") => Said::Event(payload["data"]["events"].clone()),
            Some("error") => Said::Refused(code(payload)),
            Some("complete") => Said::Complete,
            _ => panic!("unexpected frame {frame}"),
        };
    }
}

fn code(errors: &Value) -> String {
    errors[0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn is_bobs_leave(event: &Value, channel: &str) -> bool {
    event["__typename"] == "MemberLeft" && event["userId"] == "bob" && event["channelId"] == channel
}

/// bob subscribes (to the channel, or to all his channels) while the
/// management API removes him; then alice posts to the channel. Either the
/// subscribe is refused, or bob's stream of that channel ends with his
/// `member_left`: he never sees alice's later message.
async fn removal_raced_against_subscribe(app: TestApp) {
    let alice = app.token("alice");
    let mut bob = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    // Where bob stays: its messages show how far his all-channels stream got.
    let lobby = app.channel_with("lobby", &["alice", "bob"]).await;
    // Rounds where bob's stream followed the channel until his removal, and
    // where it never followed it (refused, or listed after the removal).
    let (mut ended, mut never) = (0, 0);
    for round in 0..ROUNDS {
        let channel = app
            .channel_with(&format!("race {round}"), &["alice", "bob"])
            .await;
        let channel_id = channel.to_string();
        let all_channels = round % 2 == 1;
        let variables = if all_channels {
            json!({})
        } else {
            json!({"c": channel_id})
        };
        let id = format!("s{round}");
        let removal = async {
            stagger(round / 2).await;
            remove(&app, channel, "bob").await;
        };
        tokio::join!(bob.subscribe(&id, EVENTS, variables), removal);
        if all_channels {
            let mut left = false;
            let mut next_event = async |bob: &mut Ws| match said(bob, &id).await {
                Said::Event(event) => {
                    if event["channelId"] == channel_id.as_str() {
                        assert!(!left, "round {round}: {event} after bob's member_left");
                        left = is_bobs_leave(&event, &channel_id);
                    }
                    event
                }
                other => panic!("round {round}: the all-channels stream ended: {other:?}"),
            };
            // The stream is live once a message posted to the lobby comes
            // through; until then, the subscribe may not be registered yet.
            'probing: for probe in 0.. {
                let probe = format!("probe {round}-{probe}");
                send(&app, &alice, lobby, &probe).await.unwrap();
                let wait = tokio::time::sleep(Duration::from_millis(200));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        event = next_event(&mut bob) => {
                            if event["message"]["content"] == probe.as_str() {
                                break 'probing;
                            }
                        }
                        () = &mut wait => break,
                    }
                }
            }
            send(&app, &alice, channel, AFTER).await.unwrap();
            // Posted after AFTER, so behind it in bob's queue had it been
            // routed to him.
            let sentinel = format!("sentinel {round}");
            send(&app, &alice, lobby, &sentinel).await.unwrap();
            while next_event(&mut bob).await["message"]["content"] != sentinel.as_str() {}
            bob.send(json!({"id": id, "type": "complete"})).await;
            if left {
                ended += 1;
            } else {
                never += 1;
            }
        } else {
            send(&app, &alice, channel, AFTER).await.unwrap();
            let mut left = false;
            loop {
                match said(&mut bob, &id).await {
                    Said::Event(event) => {
                        assert!(!left, "round {round}: {event} after bob's member_left");
                        left = is_bobs_leave(&event, &channel_id);
                    }
                    Said::Error(code) => {
                        assert_eq!(code, "FORBIDDEN", "round {round}");
                        assert!(left, "round {round}: ended before bob's member_left");
                        ended += 1;
                    }
                    Said::Refused(code) => {
                        assert_eq!(code, "FORBIDDEN", "round {round}");
                        never += 1;
                        break;
                    }
                    Said::Complete => {
                        assert!(left, "round {round}: completed before bob's member_left");
                        break;
                    }
                }
            }
        }
    }
    eprintln!("{ended} rounds followed the channel until the removal, {never} never followed it");
    assert_eq!(ended + never, ROUNDS);
    // Nothing is pending for bob: a ping is answered next.
    bob.send(json!({"type": "ping"})).await;
    loop {
        let frame = bob.recv().await;
        assert_ne!(
            frame["payload"]["data"]["events"]["message"]["content"],
            AFTER
        );
        if frame["type"] == "pong" {
            break;
        }
    }
    app.shutdown().await;
}

/// bob sends several messages at once while the management API removes
/// him. Each send is stored or refused (FORBIDDEN); every stored one has a
/// seq below his `member_left`, and the channel's seqs stay gap-free.
async fn removal_raced_against_send(app: TestApp) {
    const SENDS: usize = 4;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let mut reader = Ws::open(&app.ws_url, MODERN, &alice).await;
    let mut refused = 0;
    for round in 0..ROUNDS {
        let channel = app
            .channel_with(&format!("race {round}"), &["alice", "bob"])
            .await;
        let channel_id = channel.to_string();
        let sends = join_all((0..SENDS).map(|i| {
            let bob = bob.clone();
            let app = &app;
            async move { send(app, &bob, channel, &format!("bob {round}-{i}")).await }
        }));
        let removal = async {
            stagger(round).await;
            remove(&app, channel, "bob").await;
        };
        let (sent, ()) = tokio::join!(sends, removal);
        let mut stored = Vec::new();
        for result in sent {
            match result {
                Ok(seq) => stored.push(seq),
                Err(code) => {
                    assert_eq!(code, "FORBIDDEN", "round {round}");
                    refused += 1;
                }
            }
        }
        let last = send(&app, &alice, channel, "end").await.unwrap();

        // The channel's whole story, replayed to alice.
        let id = format!("r{round}");
        reader
            .subscribe(&id, EVENTS, json!({"c": channel.to_string(), "after": 0}))
            .await;
        let mut events = Vec::new();
        while events.len() < last as usize {
            let (got, payload) = reader.next_payload().await;
            assert_eq!(got, id);
            events.push(payload["data"]["events"].clone());
        }
        reader.send(json!({"id": id, "type": "complete"})).await;
        let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "round {round}: gap-free"
        );
        let left = events
            .iter()
            .find(|e| is_bobs_leave(e, &channel_id))
            .and_then(|e| e["seq"].as_i64())
            .unwrap_or_else(|| panic!("round {round}: no member_left in {events:?}"));
        let bobs: Vec<i64> = events
            .iter()
            .filter(|e| {
                e["__typename"] == "MessageCreated" && e["message"]["sender"]["id"] == "bob"
            })
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert!(
            bobs.iter().all(|seq| *seq < left),
            "round {round}: bob's messages {bobs:?}, his member_left {left}"
        );
        stored.sort_unstable();
        assert_eq!(
            bobs, stored,
            "round {round}: every ack is stored, nothing else"
        );
    }
    assert!(refused < ROUNDS * SENDS, "some sends went through");
    app.shutdown().await;
}
