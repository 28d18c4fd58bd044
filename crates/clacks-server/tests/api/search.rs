//! Full-text search over real sockets (issue 13 item 5): the GraphQL
//! `search` field and `GET /api/v1/search`, on every backend: hits with
//! their message and channel, paging by cursor, the membership rule, edits
//! and tombstones, and hostile input answered without a server error.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    graphql_search_finds_ranks_pages_and_refuses_non_members,
    graphql_search_follows_edits_and_deletes,
    hostile_queries_never_get_a_server_error,
    management_search_pages_and_validates,
);

const SEARCH: &str = "query($q: String!, $c: ID, $l: Int, $a: String) {
    search(query: $q, channel: $c, limit: $l, after: $a) {
        score cursor
        message { id content channelId deleted }
        channel { id displayName }
    }
}";

const NOISE: &[&str] = &[
    "good morning everyone",
    "lunch is ready downstairs",
    "deploy finished without errors",
    "see you tomorrow",
    "weather looks grim today",
];

fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

async fn send(app: &TestApp, channel: i64, from: &str, content: &str) -> String {
    let r = app
        .graphql(
            Some(&app.token(from)),
            "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { id } }",
            json!({"c": channel.to_string(), "t": content}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    r["data"]["createMessage"]["id"]
        .as_str()
        .expect("sent")
        .to_owned()
}

async fn search(app: &TestApp, user: &str, variables: Value) -> Value {
    app.graphql(Some(&app.token(user)), SEARCH, variables).await
}

/// A search of few rows (many of them stay within the query cost rate),
/// retried when rate limited all the same.
async fn light_search(app: &TestApp, token: &str, variables: Value) -> Value {
    loop {
        let r = app
            .graphql(
                Some(token),
                "query($q: String!, $c: ID) { search(query: $q, channel: $c, limit: 3) { message { id } } }",
                variables.clone(),
            )
            .await;
        match r["errors"][0]["extensions"]["retryAfterMs"].as_u64() {
            Some(wait) if code(&r) == "RATE_LIMITED" => {
                tokio::time::sleep(std::time::Duration::from_millis(wait + 10)).await;
            }
            _ => return r,
        }
    }
}

fn hit_ids(response: &Value) -> Vec<String> {
    assert!(response["errors"].is_null(), "{response}");
    response["data"]["search"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| hit["message"]["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn graphql_search_finds_ranks_pages_and_refuses_non_members(app: TestApp) {
    let ours = app.channel_with("ours", &["alice", "bob"]).await;
    let theirs = app.channel_with("theirs", &["bob"]).await;
    for text in NOISE {
        send(&app, ours, "bob", text).await;
    }
    let weak = send(
        &app,
        ours,
        "bob",
        "the report mentions one apple among bananas, cherries and plums",
    )
    .await;
    let strong = send(&app, ours, "alice", "apple apple apple").await;
    let hidden = send(&app, theirs, "bob", "apple apple apple apple").await;

    let r = search(&app, "alice", json!({"q": "APPLE"})).await;
    assert_eq!(hit_ids(&r), [strong.clone(), weak.clone()], "{r}");
    let first = &r["data"]["search"][0];
    assert_eq!(first["channel"]["id"], ours.to_string());
    assert_eq!(first["channel"]["displayName"], "ours");
    assert_eq!(first["message"]["channelId"], ours.to_string());
    assert_eq!(first["message"]["content"], "apple apple apple");
    assert!(first["score"].as_f64().unwrap() > r["data"]["search"][1]["score"].as_f64().unwrap());

    // Bob sees his other channel too; Alice never does.
    let r = search(&app, "bob", json!({"q": "apple"})).await;
    assert!(hit_ids(&r).contains(&hidden), "{r}");

    // Pages of one: each hit once, then a short page.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let r = search(&app, "alice", json!({"q": "apple", "l": 1, "a": after})).await;
        let ids = hit_ids(&r);
        if ids.is_empty() {
            break;
        }
        seen.extend(ids);
        after = r["data"]["search"][0]["cursor"].as_str().map(str::to_owned);
        assert!(seen.len() <= 2, "paging did not end: {seen:?}");
    }
    assert_eq!(seen, [strong, weak]);

    // A channel the caller is not in: FORBIDDEN, as for history, whether
    // it exists or not.
    for channel in [theirs, theirs + 1000] {
        let r = search(
            &app,
            "alice",
            json!({"q": "apple", "c": channel.to_string()}),
        )
        .await;
        assert_eq!(code(&r), "FORBIDDEN", "{r}");
        let history = app
            .graphql(
                Some(&app.token("alice")),
                "query($c: ID!) { channel(id: $c) { history { id } } }",
                json!({"c": channel.to_string()}),
            )
            .await;
        assert_eq!(code(&history), "FORBIDDEN", "{history}");
        assert_eq!(r["errors"][0]["message"], history["errors"][0]["message"]);
    }
    // Without a token: UNAUTHENTICATED.
    let r = app.graphql(None, SEARCH, json!({"q": "apple"})).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
}

async fn graphql_search_follows_edits_and_deletes(app: TestApp) {
    let channel = app.channel_with("zoo", &["alice"]).await;
    for text in NOISE {
        send(&app, channel, "alice", text).await;
    }
    let edited = send(&app, channel, "alice", "original walrus").await;
    let deleted = send(&app, channel, "alice", "doomed platypus").await;
    let token = app.token("alice");
    let r = app
        .graphql(
            Some(&token),
            "mutation($m: ID!) { editMessage(id: $m, content: \"replacement narwhal\") { id } }",
            json!({"m": edited}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app
        .graphql(
            Some(&token),
            "mutation($m: ID!) { deleteMessage(id: $m) { id deleted } }",
            json!({"m": deleted}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");

    assert!(hit_ids(&search(&app, "alice", json!({"q": "walrus"})).await).is_empty());
    assert_eq!(
        hit_ids(&search(&app, "alice", json!({"q": "narwhal"})).await),
        [edited]
    );
    assert!(hit_ids(&search(&app, "alice", json!({"q": "platypus"})).await).is_empty());
}

async fn hostile_queries_never_get_a_server_error(app: TestApp) {
    let channel = app.channel_with("hostile", &["alice"]).await;
    for text in NOISE {
        send(&app, channel, "alice", text).await;
    }
    let target = send(
        &app,
        channel,
        "alice",
        "quoted \"syntax\" NEAR(things) -minus +plus stars* (parentheses) café 東京",
    )
    .await;
    let long = "z".repeat(10_000);
    let hostile = [
        "\"",
        "\"syntax",
        "*",
        "syntax*",
        "-",
        "-syntax",
        "NEAR(",
        "NEAR(syntax things, 2)",
        "(",
        "((syntax)",
        "syntax AND",
        "OR",
        "NOT syntax",
        "syntax:things",
        "a & b | !c <-> d:*",
        "'; DROP TABLE messages; --",
        "\\",
        "%",
        "東京",
        "CAFÉ",
        "🦀",
        "\u{0}",
        &long,
        "",
        " ",
    ];
    let client = reqwest::Client::new();
    let token = app.token("alice");
    for query in hostile {
        let r = light_search(&app, &token, json!({"q": query, "c": channel.to_string()})).await;
        if r["errors"].is_null() {
            for id in hit_ids(&r) {
                assert_eq!(id, target, "{query:?}");
            }
        } else {
            assert_eq!(code(&r), "BAD_USER_INPUT", "{query:?}: {r}");
        }
        let response = client
            .get(app.api("/search"))
            .query(&[("q", query)])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(status == 200 || status == 422, "{query:?}: {status}");
        if status == 422 {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
        }
    }
    let r = light_search(&app, &token, json!({"q": "\"syntax\" NEAR("})).await;
    assert_eq!(hit_ids(&r), [target]);
    let r = light_search(&app, &token, json!({"q": long})).await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
}

async fn management_search_pages_and_validates(app: TestApp) {
    let a = app.channel_with("a", &["alice"]).await;
    let b = app.channel_with("b", &["bob"]).await;
    for text in NOISE {
        send(&app, a, "alice", text).await;
    }
    let mut in_a = Vec::new();
    for i in 0..5 {
        in_a.push(send(&app, a, "alice", &format!("quarterly figures part {i}")).await);
    }
    let in_b = send(&app, b, "bob", "quarterly figures of bob").await;
    let client = reqwest::Client::new();
    let get = |query: Vec<(&'static str, String)>| {
        let request = client.get(app.api("/search")).query(&query);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (
                status,
                content_type,
                response.json::<Value>().await.unwrap(),
            )
        }
    };

    // Everything, two at a time: six hits, each once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("q", "quarterly".to_owned()), ("limit", "2".to_owned())];
        if let Some(after) = &after {
            query.push(("after", after.clone()));
        }
        let (status, _, page) = get(query).await;
        assert_eq!(status, 200, "{page}");
        for hit in page["items"].as_array().unwrap() {
            seen.push(hit["message"]["id"].as_i64().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 6, "{seen:?}");
    }
    let mut expected = in_a.clone();
    expected.push(in_b.clone());
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);

    // Scoped to a user's channels, and to a channel.
    let (status, _, page) = get(vec![("q", "quarterly".into()), ("user", "bob".into())]).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(
        page["items"][0]["message"]["id"]
            .as_i64()
            .unwrap()
            .to_string(),
        in_b
    );
    assert_eq!(page["items"][0]["message"]["channelId"], b);
    let (_, _, page) = get(vec![("q", "figures".into()), ("channel", a.to_string())]).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5, "{page}");

    // Refusals: problem+json.
    for (query, status) in [
        (vec![("q", String::new())], 422),
        (vec![("q", "x".repeat(257))], 422),
        (vec![("q", "ok".into()), ("limit", "0".into())], 422),
        (vec![("q", "ok".into()), ("limit", "101".into())], 422),
        (vec![("q", "ok".into()), ("limit", "many".into())], 400),
        (vec![("q", "ok".into()), ("after", "nonsense".into())], 422),
        (vec![], 400),
        (
            vec![("q", "ok".into()), ("channel", (b + 1000).to_string())],
            404,
        ),
        (
            vec![
                ("q", "ok".into()),
                ("channel", a.to_string()),
                ("user", "bob".into()),
            ],
            409,
        ),
    ] {
        let (got, content_type, body) = get(query.clone()).await;
        assert_eq!(got, status, "{query:?}: {body}");
        assert_eq!(content_type, "application/problem+json", "{query:?}");
    }
}
