//! Queries and mutations over HTTP, the JWT rules, authorization and limits.

use serde_json::{Value, json};

use super::client::{bad_tokens, now, token_with};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    queries_and_mutations,
    unread_counts_and_read_receipts,
    jwt_rules_over_http,
    non_member_is_refused_everywhere,
    limits_and_error_codes,
);

fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {response}"))
}

fn ok(response: &Value) -> &Value {
    assert!(response.get("errors").is_none(), "{response}");
    &response["data"]
}

const SEND: &str = "mutation($c: ID!, $t: String!, $k: String) {
    createMessage(input: {channel: $c, content: $t, clientMessageId: $k}) { id seq content sentAt sent_at sender { id } channel { id } clientMessageId }
}";

async fn send(app: &TestApp, token: &str, channel: i64, text: &str) -> Value {
    let r = app
        .graphql(
            Some(token),
            SEND,
            json!({"c": channel.to_string(), "t": text}),
        )
        .await;
    ok(&r)["createMessage"].clone()
}

async fn queries_and_mutations(app: TestApp) {
    let alice = app.token("alice");
    let bob = app.token("bob");
    let channel = app.channel_with("general", &["alice", "bob"]).await;
    let c = channel.to_string();

    let named = token_with(
        json!({"sub": "alice", "exp": now() + 600, "nbf": now(), "name": "Alice", "avatar": "a.png"}),
    );
    let me = app
        .graphql(Some(&named), "{ me { id name claims } }", json!({}))
        .await;
    assert_eq!(ok(&me)["me"]["id"], "alice");
    assert_eq!(ok(&me)["me"]["name"], "Alice");
    assert_eq!(ok(&me)["me"]["claims"]["avatar"], "a.png");

    // The original mutation, exactly as v0 clients send it.
    let original = app
        .graphql(
            Some(&alice),
            "mutation { createMessage(input: {content: \"hello\", channel: \"CHANNEL\"}) { id content sent_at sender { id } channel { id } } }"
                .replace("CHANNEL", &c)
                .as_str(),
            json!({}),
        )
        .await;
    let first = &ok(&original)["createMessage"];
    assert_eq!(first["content"], "hello");
    assert_eq!(first["sender"]["id"], "alice");
    assert_eq!(first["channel"]["id"], c.as_str());
    assert!((first["sent_at"].as_i64().unwrap() - now()).abs() < 60);

    // Idempotent retry.
    let v = json!({"c": c, "t": "once", "k": "k-1"});
    let a = app.graphql(Some(&bob), SEND, v.clone()).await;
    let b = app.graphql(Some(&bob), SEND, v).await;
    assert_eq!(ok(&a)["createMessage"]["id"], ok(&b)["createMessage"]["id"]);
    assert_eq!(ok(&a)["createMessage"]["clientMessageId"], "k-1");
    for i in 0..3 {
        send(&app, &alice, channel, &format!("m{i}")).await;
    }
    // seqs: 1 hello, 2 once, 3..5 m0..m2

    let history = app
        .graphql(
            Some(&alice),
            "query($c: ID!) { channel(id: $c) { id displayName display_name lastSeq
                newest: history(limit: 2) { seq content }
                older: history(before: 4, limit: 2) { seq }
                after: history(after: 1, limit: 2) { seq }
                window: history(after: 1, before: 5) { seq }
                messages(last: \"4\", count: 2) { seq }
                recent: messages { seq }
                message_view(user_id: \"bob\", last: 0, count: 10) { order seen time user { id } message { content } }
                members { userId role lastReadSeq } users { id } } }",
            json!({"c": c}),
        )
        .await;
    let ch = &ok(&history)["channel"];
    assert_eq!(ch["displayName"], "general");
    assert_eq!(ch["display_name"], "general");
    let seqs = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&ch["newest"]), vec![5, 4]);
    assert_eq!(seqs(&ch["older"]), vec![3, 2]);
    assert_eq!(seqs(&ch["after"]), vec![2, 3]);
    assert_eq!(seqs(&ch["window"]), vec![2, 3, 4]);
    assert_eq!(seqs(&ch["messages"]), vec![3, 4]);
    assert_eq!(seqs(&ch["recent"]), vec![1, 2, 3, 4, 5]);
    let views = ch["message_view"].as_array().unwrap();
    assert_eq!(views.len(), 5);
    assert_eq!(views[1]["seen"], true, "bob's own message counts as seen");
    assert_eq!(views[0]["seen"], false);
    assert_eq!(ch["members"].as_array().unwrap().len(), 2);

    // Edit and delete: sender only; delete leaves a tombstone.
    let id = first["id"].as_str().unwrap();
    let edit =
        "mutation($id: ID!) { editMessage(id: $id, content: \"edited\") { content editedAt } }";
    let by_bob = app.graphql(Some(&bob), edit, json!({"id": id})).await;
    assert_eq!(code(&by_bob), "FORBIDDEN");
    let edited = app.graphql(Some(&alice), edit, json!({"id": id})).await;
    assert_eq!(ok(&edited)["editMessage"]["content"], "edited");
    let delete = "mutation($id: ID!) { deleteMessage(id: $id) { deleted content seq } }";
    assert_eq!(
        code(&app.graphql(Some(&bob), delete, json!({"id": id})).await),
        "FORBIDDEN"
    );
    let deleted = app.graphql(Some(&alice), delete, json!({"id": id})).await;
    assert_eq!(ok(&deleted)["deleteMessage"]["deleted"], true);
    assert_eq!(ok(&deleted)["deleteMessage"]["content"], "");
    assert_eq!(ok(&deleted)["deleteMessage"]["seq"], 1);

    let typing = app
        .graphql(
            Some(&alice),
            "mutation($c: ID!) { setTyping(channel: $c) }",
            json!({"c": c}),
        )
        .await;
    assert_eq!(ok(&typing)["setTyping"], true);

    // GET: queries yes, mutations no.
    let get: Value = app
        .http
        .get(format!("{}/graphql", app.client_url))
        .query(&[("query", "{ me { id } }")])
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok(&get)["me"]["id"], "alice");
    let get_mutation: Value = app
        .http
        .get(format!("{}/graphql", app.client_url))
        .query(&[(
            "query",
            format!("mutation {{ setTyping(channel: \"{c}\") }}"),
        )])
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&get_mutation), "BAD_USER_INPUT");
    app.shutdown().await;
}

async fn unread_counts_and_read_receipts(app: TestApp) {
    let alice = app.token("alice");
    let bob = app.token("bob");
    let channel = app.channel_with("general", &["alice", "bob"]).await;
    let c = channel.to_string();
    let mut last = Value::Null;
    for i in 0..3 {
        last = send(&app, &alice, channel, &format!("m{i}")).await;
    }
    let channels = "{ channels { id unreadCount lastReadSeq lastMessage { content seq } } unread_messages { content } unreadMessages { seq } }";
    let before = app.graphql(Some(&bob), channels, json!({})).await;
    let data = ok(&before);
    assert_eq!(data["channels"][0]["unreadCount"], 3);
    assert_eq!(data["channels"][0]["lastReadSeq"], 0);
    assert_eq!(data["channels"][0]["lastMessage"]["content"], "m2");
    assert_eq!(data["unread_messages"].as_array().unwrap().len(), 3);
    let for_alice = app.graphql(Some(&alice), channels, json!({})).await;
    assert_eq!(
        ok(&for_alice)["channels"][0]["unreadCount"],
        0,
        "own messages are not unread"
    );

    let mark = "mutation($c: ID!, $s: Int!) { markRead(channel: $c, seq: $s) { lastReadSeq unreadCount channelId } }";
    let marked = app.graphql(Some(&bob), mark, json!({"c": c, "s": 2})).await;
    assert_eq!(ok(&marked)["markRead"]["lastReadSeq"], 2);
    assert_eq!(ok(&marked)["markRead"]["unreadCount"], 1);
    let back = app.graphql(Some(&bob), mark, json!({"c": c, "s": 1})).await;
    assert_eq!(ok(&back)["markRead"]["lastReadSeq"], 2, "never moves back");

    let seen = app
        .graphql(
            Some(&alice),
            "query($c: ID!) { channel(id: $c) { message_view(user_id: \"bob\", last: 0, count: 10) { order seen time } history(limit: 10) { seq seenBy { userId seenAt } } } }",
            json!({"c": c}),
        )
        .await;
    let ch = &ok(&seen)["channel"];
    let views = ch["message_view"].as_array().unwrap();
    assert_eq!(
        views
            .iter()
            .map(|v| v["seen"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        vec![true, true, false]
    );
    assert!(views[0]["time"].as_i64().is_some());
    assert!(views[2]["time"].is_null());
    let history = ch["history"].as_array().unwrap();
    assert_eq!(history[0]["seq"], 3);
    assert!(history[0]["seenBy"].as_array().unwrap().is_empty());
    assert_eq!(history[1]["seenBy"][0]["userId"], "bob");
    let single = app
        .graphql(
            Some(&alice),
            "query($id: ID!) { message(id: $id) { seq seenBy { userId } } }",
            json!({"id": last["id"]}),
        )
        .await;
    assert_eq!(ok(&single)["message"]["seq"], 3);
    app.shutdown().await;
}

async fn jwt_rules_over_http(app: TestApp) {
    app.channel_with("general", &["alice"]).await;
    let valid = token_with(json!({"sub": "alice", "exp": now() + 600, "nbf": now()}));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r: Value = app
            .http
            .post(format!("{}/graphql", app.client_url))
            .header("Authorization", format!("{scheme} {valid}"))
            .json(&json!({"query": "{ me { id } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ok(&r)["me"]["id"], "alice", "scheme {scheme}");
    }
    for (why, token) in bad_tokens("alice") {
        let r = app.graphql(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(code(&r), "UNAUTHENTICATED", "{why}: {r}");
        assert!(r["data"].is_null(), "{why}");
    }
    let basic: Value = app
        .http
        .post(format!("{}/graphql", app.client_url))
        .header("Authorization", "Basic YTpi")
        .json(&json!({"query": "{ me { id } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&basic), "UNAUTHENTICATED");
    // No token: data fields and introspection are refused.
    let anonymous = app.graphql(None, "{ me { id } }", json!({})).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    let schema = app
        .graphql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(code(&schema), "UNAUTHENTICATED");
    app.shutdown().await;
}

async fn non_member_is_refused_everywhere(app: TestApp) {
    let alice = app.token("alice");
    let mallory = app.token("mallory");
    let channel = app.channel_with("secret", &["alice"]).await;
    let c = channel.to_string();
    let message = send(&app, &alice, channel, "psst").await;
    let id = message["id"].as_str().unwrap().to_owned();
    let operations: Vec<(&str, Value)> = vec![
        ("query($c: ID!) { channel(id: $c) { id } }", json!({"c": c})),
        ("{ channel(id: \"999999\") { id } }", json!({})),
        (
            "query($id: ID!) { message(id: $id) { content } }",
            json!({"id": id}),
        ),
        ("{ message(id: \"999999\") { content } }", json!({})),
        (SEND, json!({"c": c, "t": "hi"})),
        (
            "mutation($c: ID!) { markRead(channel: $c, seq: 1) { lastReadSeq } }",
            json!({"c": c}),
        ),
        (
            "mutation($c: ID!) { setTyping(channel: $c) }",
            json!({"c": c}),
        ),
        (
            "mutation($id: ID!) { editMessage(id: $id, content: \"x\") { id } }",
            json!({"id": id}),
        ),
        (
            "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
            json!({"id": id}),
        ),
    ];
    for (query, variables) in operations {
        let r = app.graphql(Some(&mallory), query, variables).await;
        assert_eq!(code(&r), "FORBIDDEN", "{query}: {r}");
        let text = r.to_string();
        assert!(
            !text.contains("psst") && !text.contains("secret"),
            "leaks: {text}"
        );
    }
    let mine = app
        .graphql(
            Some(&mallory),
            "{ channels { id } unread_messages { id } }",
            json!({}),
        )
        .await;
    assert_eq!(ok(&mine)["channels"], json!([]));
    assert_eq!(ok(&mine)["unread_messages"], json!([]));
    app.shutdown().await;
}

async fn limits_and_error_codes(app: TestApp) {
    let alice = app.token("alice");
    let channel = app.channel_with("general", &["alice"]).await;
    let c = channel.to_string();
    let big = "x".repeat(16 * 1024 + 1);
    let r = app
        .graphql(Some(&alice), SEND, json!({"c": c, "t": big}))
        .await;
    assert_eq!(code(&r), "PAYLOAD_TOO_LARGE");
    let r = app
        .graphql(Some(&alice), SEND, json!({"c": c, "t": "  "}))
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT");
    let r = app
        .graphql(Some(&alice), SEND, json!({"c": "abc", "t": "hi"}))
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT");
    let r = app.graphql(Some(&alice), "{ me { id ", json!({})).await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "parse error");
    let r = app
        .graphql(Some(&alice), "{ me { nope } }", json!({}))
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "validation error");
    let mut deep = String::from("id");
    for _ in 0..10 {
        deep = format!("lastMessage {{ channel {{ {deep} }} }}");
    }
    let r = app
        .graphql(
            Some(&alice),
            &format!("{{ channels {{ {deep} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(code(&r), "LIMIT_EXCEEDED", "depth limit: {r}");
    assert_eq!(r["errors"][0]["extensions"]["limit"], "depth", "{r}");
    let wide = (0..1100)
        .map(|i| format!("a{i}: me {{ id }}"))
        .collect::<Vec<_>>()
        .join(" ");
    let r = app
        .graphql(Some(&alice), &format!("{{ {wide} }}"), json!({}))
        .await;
    assert_eq!(code(&r), "LIMIT_EXCEEDED", "{r}");
    assert_eq!(r["errors"][0]["extensions"]["limit"], "tokens", "{r}");
    let not_json = app
        .http
        .post(format!("{}/graphql", app.client_url))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let body: Value = not_json.json().await.unwrap();
    assert_eq!(code(&body), "BAD_USER_INPUT");

    let backend = app.backend;
    app.shutdown().await;

    // The per-user send rate limit.
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.send_rate = 1;
        config.send_burst = 2;
    })
    .await
    else {
        return;
    };
    let alice = app.token("alice");
    let channel = app.channel_with("general", &["alice"]).await;
    let mut limited = None;
    for i in 0..4 {
        let r = app
            .graphql(
                Some(&alice),
                SEND,
                json!({"c": channel.to_string(), "t": format!("m{i}")}),
            )
            .await;
        if r.get("errors").is_some() {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the third message within a second is limited");
    assert_eq!(code(&limited), "RATE_LIMITED");
    assert!(
        limited["errors"][0]["extensions"]["retryAfterMs"]
            .as_i64()
            .unwrap()
            > 0
    );
    app.shutdown().await;
}
