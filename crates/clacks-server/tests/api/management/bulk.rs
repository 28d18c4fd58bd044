//! Bulk membership over HTTP: `PATCH /channel/{channelId}/users`, the
//! paged `GET /channel/{channelId}/users`, and GraphQL `membersPage`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{create_channel, get, patch};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(bulk_membership_over_http, bulk_membership_refusals);

fn users(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n:05}")).collect()
}

/// Every member id, following `nextAfter` from page to page.
async fn paged_ids(app: &TestApp, id: i64, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = format!("/channel/{id}/users?limit={limit}");
    loop {
        let reply = get(app, &path).await;
        let body = reply.ok(200);
        let items = body["items"].as_array().expect("a page object");
        assert!(items.len() <= limit as usize);
        for item in items {
            assert!(
                item["role"].is_string() && item["lastReadSeq"].is_i64(),
                "{item}"
            );
            ids.push(item["uid"].as_str().expect("uid").to_owned());
        }
        match body["nextAfter"].as_str() {
            Some(after) => path = format!("/channel/{id}/users?limit={limit}&after={after}"),
            None => return ids,
        }
    }
}

async fn bulk_membership_over_http(app: TestApp) {
    let id = create_channel(&app, "Town square", &["alice"]).await;
    let path = format!("/channel/{id}/users");
    let add = users("u", 3_000);

    let added = patch(&app, &path, json!({"add": add, "role": "reader"})).await;
    assert_eq!(
        added.ok(200),
        &json!({"added": 3_000, "alreadyMembers": 0, "removed": 0, "notMembers": 0})
    );
    // Idempotent: the repeat changes nothing.
    let again = patch(&app, &path, json!({"add": add})).await;
    assert_eq!(again.ok(200)["alreadyMembers"], 3_000);
    assert_eq!(again.json["added"], 0);

    // The original unpaged shape: a bare array of ids.
    let all = get(&app, &path).await;
    let all: Vec<String> = all
        .ok(200)
        .as_array()
        .expect("the original bare array")
        .iter()
        .map(|v| v.as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(all.len(), 3_001);
    // Paged: every member exactly once, in the same order.
    let paged = paged_ids(&app, id, 200).await;
    assert_eq!(paged, all);
    assert_eq!(paged.iter().collect::<HashSet<_>>().len(), 3_001);

    // Removal in bulk, with a user who is not a member.
    let mut remove = users("u", 1_000);
    remove.push("nobody".into());
    let removed = patch(&app, &path, json!({"remove": remove})).await;
    assert_eq!(
        removed.ok(200),
        &json!({"added": 0, "alreadyMembers": 0, "removed": 1_000, "notMembers": 1})
    );
    assert_eq!(paged_ids(&app, id, 150).await.len(), 2_001);
    let channel = get(&app, &format!("/channel/{id}")).await;
    assert_eq!(
        channel.ok(200)["users"].as_array().map(Vec::len),
        Some(2_001)
    );

    // GraphQL: a member pages through the channel's members.
    let token = app.token("alice");
    let query = "query($id: ID!, $after: ID) { channel(id: $id) { membersPage(after: $after, limit: 200) { user { id } role } } }";
    let mut after = Value::Null;
    let mut seen = Vec::new();
    loop {
        let reply = app
            .graphql(
                Some(&token),
                query,
                json!({"id": id.to_string(), "after": after}),
            )
            .await;
        let page = reply["data"]["channel"]["membersPage"]
            .as_array()
            .unwrap_or_else(|| panic!("a page: {reply}"))
            .clone();
        for member in &page {
            seen.push(member["user"]["id"].as_str().expect("id").to_owned());
        }
        if page.len() < 200 {
            break;
        }
        after = json!(seen.last());
    }
    assert_eq!(seen, paged_ids(&app, id, 500).await);
    // Not a member: nothing.
    let reply = app
        .graphql(
            Some(&app.token("eve")),
            query,
            json!({"id": id.to_string()}),
        )
        .await;
    assert!(
        reply["errors"][0]["extensions"]["code"].is_string(),
        "{reply}"
    );
    assert!(
        reply["data"].is_null() || reply["data"]["channel"].is_null(),
        "{reply}"
    );
}

async fn bulk_membership_refusals(app: TestApp) {
    let id = create_channel(&app, "Refusals", &["alice"]).await;
    let path = format!("/channel/{id}/users");
    // One over the default limit, with ids of the longest kind: past the
    // base body limit, still read, and refused as a field.
    let long: Vec<String> = (0..10_001).map(|n| format!("{n:0>200}")).collect();
    let over = patch(&app, &path, json!({"add": long})).await;
    let problem = over.problem(422);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("10000")),
        "{problem}"
    );
    let invalid = patch(&app, &path, json!({"add": ["bob", " "]})).await;
    invalid.problem(422);
    let both = patch(&app, &path, json!({"add": ["bob"], "remove": ["bob"]})).await;
    both.problem(422);
    let missing = patch(
        &app,
        &format!("/channel/{}/users", id + 1_000),
        json!({"add": ["bob"]}),
    )
    .await;
    missing.problem(404);
    let not_a_list = patch(&app, &path, json!({"add": "bob"})).await;
    not_a_list.problem(422);
    let bad_after = get(&app, &format!("/channel/{id}/users?after=%20")).await;
    bad_after.problem(422);
    let gone = get(&app, &format!("/channel/{}/users?limit=5", id + 1_000)).await;
    gone.problem(404);
    // Nothing changed.
    assert_eq!(get(&app, &path).await.ok(200), &json!(["alice"]));
}
