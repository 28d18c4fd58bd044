//! The request guard (issue 10): each attack on the client port is refused
//! before the engine validates or runs anything, over HTTP and over
//! WebSocket, with `LIMIT_EXCEEDED` and the limit, its maximum and the
//! measured value; introspection and suggestions are for callers with a
//! token; an operation's database fetches are budgeted.
//!
//! The guard does not depend on the database, so these run on SQLite; the
//! fetch budget, which resolvers charge, runs on every backend.

use std::time::Instant;

use clacks_testkit::TestBackend;
use serde_json::{Value, json};

use super::client::{LEGACY, MODERN, Ws};
use crate::backend_tests;
use crate::helpers::TestApp;

const INTROSPECTION: &str =
    include_str!("../../../../clacks-graphql/testdata/introspection.graphql");
const INTROSPECTION_FULL: &str =
    include_str!("../../../../clacks-graphql/testdata/introspection-full.graphql");

/// The defaults (crates/clacks-graphql/src/guard/mod.rs `RequestLimits`).
const MAX_DOCUMENT_BYTES: u64 = 32 * 1024;
const MAX_TOKENS: u64 = 2_000;
const MAX_DEPTH: u64 = 16;
const MAX_INLINED_SELECTIONS: u64 = 2_000;
const MAX_ALIASES: u64 = 15;
const MAX_DIRECTIVES: u64 = 50;
const MAX_ROOT_FIELDS: u64 = 10;
const MAX_COST: u64 = 10_000;
const MAX_BATCH: u64 = 10;

async fn on_sqlite(test: impl AsyncFnOnce(TestApp)) {
    if let Some(app) = TestApp::spawn(TestBackend::Sqlite).await {
        test(app).await;
    }
}

async fn post(app: &TestApp, token: Option<&str>, body: &Value) -> Value {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.client_url))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// `(limit, max, actual)` of a response's only error, which must be a
/// `LIMIT_EXCEEDED` refusal with no data.
fn limit_of(response: &Value) -> (String, u64, u64) {
    assert!(response["data"].is_null(), "{response}");
    let errors = response["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{response}");
    limit_in(&errors[0])
}

fn limit_in(error: &Value) -> (String, u64, u64) {
    let extensions = &error["extensions"];
    assert_eq!(extensions["code"], "LIMIT_EXCEEDED", "{error}");
    (
        extensions["limit"].as_str().unwrap().to_owned(),
        extensions["max"].as_u64().unwrap(),
        extensions["actual"].as_u64().unwrap(),
    )
}

fn expected(limit: &str, max: u64, actual: u64) -> (String, u64, u64) {
    (limit.to_owned(), max, actual)
}

/// POSTs `query` and returns the refusal, printing how long it took.
async fn refused_over_http(app: &TestApp, token: Option<&str>, query: &str) -> (String, u64, u64) {
    let started = Instant::now();
    let response = post(app, token, &json!({"query": query})).await;
    let refusal = limit_of(&response);
    println!(
        "HTTP {} ({} bytes, token: {}) refused in {:?}",
        refusal.0,
        query.len(),
        token.is_some(),
        started.elapsed()
    );
    refusal
}

/// Subscribes with `query` and returns the refusal; the connection stays
/// open and usable.
async fn refused_over_ws(app: &TestApp, protocol: &'static str, query: &str) -> (String, u64, u64) {
    let mut ws = Ws::open(&app.ws_url, protocol, &app.token("alice")).await;
    let started = Instant::now();
    ws.subscribe("attack", query, json!({})).await;
    let frame = ws.recv().await;
    let elapsed = started.elapsed();
    let error = if protocol == MODERN {
        assert_eq!(frame["type"], "error", "{frame}");
        frame["payload"][0].clone()
    } else {
        assert_eq!(frame["type"], "data", "{frame}");
        assert!(frame["payload"]["data"].is_null(), "{frame}");
        let complete = ws.recv().await;
        assert_eq!(complete["type"], "complete", "{complete}");
        frame["payload"]["errors"][0].clone()
    };
    assert_eq!(frame["id"], "attack");
    let refusal = limit_in(&error);
    println!(
        "WebSocket ({protocol}) {} ({} bytes) refused in {elapsed:?}",
        refusal.0,
        query.len()
    );
    // The same connection still serves a well-behaved operation.
    ws.subscribe("fine", "{ __typename }", json!({})).await;
    let (id, payload) = ws.next_payload().await;
    assert_eq!(
        (id.as_str(), &payload["data"]["__typename"]),
        ("fine", &json!("Query"))
    );
    refusal
}

/// The node still answers.
async fn still_serving(app: &TestApp) {
    let alive = post(app, None, &json!({"query": "{ __typename }"})).await;
    assert_eq!(alive["data"]["__typename"], "Query", "{alive}");
}

/// The exploit: fragments A to D each spread the next one 60
/// times; E is `__typename`. 1.3 KB, 3.6 s of engine CPU before the guard.
fn fragment_explosion() -> (String, u64) {
    let mut query = String::from("query{...A}");
    let names = ["A", "B", "C", "D", "E"];
    for pair in names.windows(2) {
        let spreads = format!("...{} ", pair[1]).repeat(60);
        query.push_str(&format!(" fragment {} on Query{{{spreads}}}", pair[0]));
    }
    query.push_str(" fragment E on Query{__typename}");
    // Selections once inlined: each fragment (and the operation) counted
    // where validation walks it.
    let e: u64 = 1;
    let d = 60 * (1 + e);
    let c = 60 * (1 + d);
    let b = 60 * (1 + c);
    let a = 60 * (1 + b);
    let operation = 1 + a;
    (query, operation + a + b + c + d + e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_explosion_is_refused_with_and_without_a_token() {
    on_sqlite(async |app: TestApp| {
        let (query, inlined) = fragment_explosion();
        assert!(query.len() < 1_400, "{}", query.len());
        let refusal = expected("inlinedSelections", MAX_INLINED_SELECTIONS, inlined);
        assert_eq!(refused_over_http(&app, None, &query).await, refusal);
        let token = app.token("alice");
        assert_eq!(refused_over_http(&app, Some(&token), &query).await, refusal);
        assert_eq!(refused_over_ws(&app, MODERN, &query).await, refusal);
        assert_eq!(refused_over_ws(&app, LEGACY, &query).await, refusal);
        // A fragment cycle never reaches the engine either.
        let cycle = post(
            &app,
            None,
            &json!({"query": "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"}),
        )
        .await;
        assert_eq!(
            cycle["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{cycle}"
        );
        assert!(
            cycle["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("spreads itself"),
            "{cycle}"
        );
        still_serving(&app).await;
        app.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_amplification_is_refused_whole() {
    on_sqlite(async |app: TestApp| {
        let alice = app.token("alice");
        let channel = app.channel_with("general", &["alice"]).await;
        // The batch: 50 operations, each 90 aliases of an
        // introspection fragment.
        let aliases: String = (0..90).map(|i| format!("a{i}: __schema {{ ...S }} ")).collect();
        let flood = format!("{{ {aliases} }} fragment S on __Schema {{ types {{ name }} }}");
        let batch: Vec<Value> = (0..50).map(|_| json!({"query": flood})).collect();
        let started = Instant::now();
        let refused = post(&app, None, &json!(batch)).await;
        println!("batch of 50 refused in {:?}", started.elapsed());
        assert_eq!(limit_of(&refused), expected("batch", MAX_BATCH, 50));

        // Refused whole: not even its first operation runs.
        let send = json!({
            "query": "mutation($c: ID!) { createMessage(input: {channel: $c, content: \"x\"}) { seq } }",
            "variables": {"c": channel.to_string()},
        });
        let eleven: Vec<Value> = (0..11).map(|_| send.clone()).collect();
        let refused = post(&app, Some(&alice), &json!(eleven)).await;
        assert_eq!(limit_of(&refused), expected("batch", MAX_BATCH, 11));
        let history = app
            .graphql(
                Some(&alice),
                "query($c: ID!) { channel(id: $c) { history { seq } } }",
                json!({"c": channel.to_string()}),
            )
            .await;
        assert_eq!(history["data"]["channel"]["history"], json!([]), "{history}");

        // Within the limit, each operation is guarded on its own.
        let mixed = json!([send, {"query": flood}, {"query": "{ me { id } }"}]);
        let answers = post(&app, Some(&alice), &mixed).await;
        let answers = answers.as_array().unwrap();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0]["data"]["createMessage"]["seq"], 1, "{}", answers[0]);
        assert_eq!(limit_of(&answers[1]), expected("aliases", MAX_ALIASES, 90));
        assert_eq!(answers[2]["data"]["me"]["id"], "alice");

        // Alone, the flood is an alias flood for a member and needs a token
        // for anyone else (introspection).
        assert_eq!(
            refused_over_http(&app, Some(&alice), &flood).await,
            expected("aliases", MAX_ALIASES, 90)
        );
        let anonymous = post(&app, None, &json!({"query": flood})).await;
        assert_eq!(anonymous["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
        assert_eq!(
            refused_over_ws(&app, MODERN, &flood).await,
            expected("aliases", MAX_ALIASES, 90)
        );
        still_serving(&app).await;
        app.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_aliases_directives_root_fields_and_tokens_are_refused() {
    on_sqlite(async |app: TestApp| {
        let token = app.token("alice");
        let aliases: String = (0..16).map(|i| format!("a{i}: me {{ id }} ")).collect();
        let directives = format!("{{ __typename {} }}", "@skip(if: false) ".repeat(51));
        let roots = format!("{{ {} }}", "me { id } ".repeat(11));
        let tokens = format!("{{ {} }}", "__typename ".repeat(2_001));
        let cases = [
            (
                format!("{{ {aliases} }}"),
                expected("aliases", MAX_ALIASES, 16),
            ),
            (directives, expected("directives", MAX_DIRECTIVES, 51)),
            (roots, expected("rootFields", MAX_ROOT_FIELDS, 11)),
            (tokens, expected("tokens", MAX_TOKENS, 2_003)),
        ];
        for (query, refusal) in cases {
            assert_eq!(refused_over_http(&app, Some(&token), &query).await, refusal);
            assert_eq!(refused_over_ws(&app, MODERN, &query).await, refusal);
        }
        still_serving(&app).await;
        app.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deep_documents_are_refused() {
    on_sqlite(async |app: TestApp| {
        let token = app.token("alice");
        let huge = format!("{{ __typename }} # {}", "x".repeat(40_000));
        let refusal = expected("documentBytes", MAX_DOCUMENT_BYTES, huge.len() as u64);
        assert_eq!(refused_over_http(&app, None, &huge).await, refusal);
        assert_eq!(refused_over_ws(&app, MODERN, &huge).await, refusal);

        let deep = format!("{}{}", "{ a ".repeat(17), "}".repeat(17));
        assert_eq!(
            refused_over_http(&app, Some(&token), &deep).await,
            expected("depth", MAX_DEPTH, 17)
        );
        // Depth through fragments: each one nests two fields.
        let mut chained = String::from("{ channels { ...F0 } }");
        for i in 0..8 {
            chained.push_str(&format!(
                " fragment F{i} on Channel {{ lastMessage {{ channel {{ ...F{} }} }} }}",
                i + 1
            ));
        }
        chained.push_str(" fragment F8 on Channel { id }");
        let refusal = expected("depth", MAX_DEPTH, 1 + 2 * 8 + 1);
        assert_eq!(
            refused_over_http(&app, Some(&token), &chained).await,
            refusal
        );
        assert_eq!(refused_over_ws(&app, LEGACY, &chained).await, refusal);
        still_serving(&app).await;
        app.shutdown().await;
    })
    .await;
}

/// With the size limits opened wide, 100,000 nested brackets reach the
/// nesting check, which refuses them before the parser recurses into them
/// (a stack overflow would take the whole node down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_never_reaches_the_parser() {
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.graphql_max_document_bytes = 1 << 20;
        config.graphql_max_tokens = 1 << 20;
    })
    .await
    else {
        return;
    };
    let levels = 100_000;
    let lists = format!("{{ a(x: {}1{}) }}", "[".repeat(levels), "]".repeat(levels));
    let objects = format!(
        "{{ a(x: {}1{}) }}",
        "{b: ".repeat(levels),
        "}".repeat(levels)
    );
    let fields = format!("{}{}", "{ a ".repeat(levels), "}".repeat(levels));
    let unclosed = "{ a ".repeat(levels);
    let cases = [
        (lists, levels as u64 + 1),
        (objects, levels as u64 + 1),
        (fields, levels as u64),
        (unclosed, levels as u64),
    ];
    for (query, depth) in cases {
        let refusal = expected("depth", MAX_DEPTH, depth);
        assert_eq!(refused_over_http(&app, None, &query).await, refusal);
        // Within the WebSocket message limit (256 KiB) for the smaller ones.
        if query.len() < 256 * 1024 {
            assert_eq!(refused_over_ws(&app, MODERN, &query).await, refusal);
        }
    }
    still_serving(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_sees_the_rows_behind_each_field() {
    on_sqlite(async |app: TestApp| {
        let token = app.token("alice");
        // The row-blind query: aliases of every channel's 200 latest
        // messages with their readers and channel.
        let selection =
            "channels { history(limit: 200) { seenBy { userId } channel { id displayName } } }";
        let aliases: String = (0..3).map(|i| format!("a{i}: {selection} ")).collect();
        let query = format!("{{ {aliases} }}");
        // Per alias: channels 10 + 50 assumed channels × (history 10 + 200
        // messages × (seenBy 10 + 50 assumed readers × userId 1, channel
        // 10 + id 1 + displayName 1)).
        let per_alias = 10 + 50 * (10 + 200 * ((10 + 50) + (10 + 1 + 1)));
        let refusal = expected("cost", MAX_COST, 3 * per_alias);
        assert_eq!(refused_over_http(&app, Some(&token), &query).await, refusal);
        assert_eq!(refused_over_ws(&app, MODERN, &query).await, refusal);
        assert_eq!(refused_over_ws(&app, LEGACY, &query).await, refusal);

        // The page size comes from variables too, clamped as the service
        // clamps it.
        let paged = "query($n: Int) { channels { history(limit: $n) { seenBy { userId } } } }";
        let response = post(
            &app,
            Some(&token),
            &json!({"query": paged, "variables": {"n": 1_000_000}}),
        )
        .await;
        assert_eq!(
            limit_of(&response),
            expected("cost", MAX_COST, 10 + 50 * (10 + 200 * (10 + 50)))
        );
        let response = post(
            &app,
            Some(&token),
            &json!({"query": paged, "variables": {"n": 2}}),
        )
        .await;
        assert_eq!(response["data"]["channels"], json!([]), "{response}");
        app.shutdown().await;
    })
    .await;
}

/// A full introspection answer is about 50 KB: a token holder who asks for
/// it many times over, aliased and batched, pays for each copy from the
/// query budget instead of making the node build megabytes per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_is_paid_for_by_the_answer_it_builds() {
    on_sqlite(async |app: TestApp| {
        let token = app.token("carol");
        let aliased = |n: usize| {
            let fields: String = (0..n)
                .map(|i| format!("a{i}: __schema {{ ...S }} "))
                .collect();
            format!("{{ {fields} }} fragment S on __Schema {{ types {{ name }} }}")
        };
        // __schema (1) + types (1,000 + its selection, 1), per alias.
        assert_eq!(
            limit_of(&post(&app, Some(&token), &json!({"query": aliased(10)})).await),
            expected("cost", MAX_COST, 10 * 1_002)
        );
        // Nine fit one operation; a batch of ten such is mostly refused by
        // the budget (20,000 units at once by default), and says so.
        let batch: Vec<Value> = (0..10).map(|_| json!({"query": aliased(9)})).collect();
        let answers = post(&app, Some(&token), &json!(batch)).await;
        let answers = answers.as_array().unwrap();
        let answered = answers.iter().filter(|a| a.get("errors").is_none()).count();
        let limited = answers
            .iter()
            .filter(|a| a["errors"][0]["extensions"]["code"] == "RATE_LIMITED")
            .count();
        assert!((2..=3).contains(&answered), "{answered} answered");
        assert_eq!(answered + limited, 10);
        // One full introspection is still answered at once for someone else.
        let full = post(
            &app,
            Some(&app.token("dave")),
            &json!({"query": INTROSPECTION_FULL}),
        )
        .await;
        assert!(full.get("errors").is_none(), "{full}");
        app.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_and_suggestions_need_a_token() {
    on_sqlite(async |app: TestApp| {
        let token = app.token("alice");
        for query in [INTROSPECTION, INTROSPECTION_FULL] {
            let anonymous = post(&app, None, &json!({"query": query})).await;
            assert_eq!(
                anonymous["errors"][0]["extensions"]["code"],
                "UNAUTHENTICATED"
            );
            assert!(anonymous["data"].is_null(), "{anonymous}");
            let answered = post(&app, Some(&token), &json!({"query": query})).await;
            assert!(answered.get("errors").is_none(), "{answered}");
            let types = answered["data"]["__schema"]["types"].as_array().unwrap();
            assert!(types.iter().any(|t| t["name"] == "Channel"));
        }
        let by_type = "{ __type(name: \"Channel\") { name } }";
        let anonymous = post(&app, None, &json!({"query": by_type})).await;
        assert_eq!(
            anonymous["errors"][0]["extensions"]["code"],
            "UNAUTHENTICATED"
        );
        let typename = post(&app, None, &json!({"query": "{ __typename }"})).await;
        assert_eq!(typename["data"]["__typename"], "Query");

        // No "Did you mean" to strangers; members get the hint.
        let typo = json!({"query": "{ chanels { id } }"});
        let anonymous = post(&app, None, &typo).await;
        let message = anonymous["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("Unknown field"), "{anonymous}");
        assert!(!message.contains("Did you mean"), "{anonymous}");
        let member = post(&app, Some(&token), &typo).await;
        let message = member["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("Did you mean \"channels\""), "{member}");

        // The SDL is introspection too.
        let sdl = |token: Option<String>| {
            let mut request = app.http.get(format!("{}/schema.graphql", app.client_url));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        assert_eq!(sdl(None).await.unwrap().status(), 401);
        assert_eq!(sdl(Some("not-a-jwt".into())).await.unwrap().status(), 401);
        let served = sdl(Some(token.clone())).await.unwrap();
        assert_eq!(served.status(), 200);
        assert!(served.text().await.unwrap().contains("@listSize"));
        app.shutdown().await;
    })
    .await;

    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.graphql_public_introspection = true;
    })
    .await
    else {
        return;
    };
    let public = post(&app, None, &json!({"query": INTROSPECTION})).await;
    assert!(public.get("errors").is_none(), "{public}");
    let served = app
        .http
        .get(format!("{}/schema.graphql", app.client_url))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    // Still no suggestions without a token.
    let typo = post(&app, None, &json!({"query": "{ chanels { id } }"})).await;
    assert!(
        !typo["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Did you mean")
    );
    app.shutdown().await;
}

backend_tests!(database_fetches_are_budgeted_per_operation);

/// Each resolver that reaches the database charges the operation's budget;
/// past it, that field fails with `LIMIT_EXCEEDED` and the rest answers.
async fn database_fetches_are_budgeted_per_operation(app: TestApp) {
    let backend = app.backend;
    app.shutdown().await;
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.graphql_max_database_fetches = 4;
    })
    .await
    else {
        return;
    };
    let alice = app.token("alice");
    let mut aliases = String::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let channel = app.channel_with(name, &["alice"]).await;
        app.graphql(
            Some(&alice),
            "mutation($c: ID!) { createMessage(input: {channel: $c, content: \"hi\"}) { seq } }",
            json!({"c": channel.to_string()}),
        )
        .await;
        aliases.push_str(&format!(
            "c{i}: channel(id: \"{channel}\") {{ id lastMessage {{ content }} }} "
        ));
    }
    // 3 channel fetches, then 3 lastMessage fetches: the 5th and 6th fail.
    let response = app
        .graphql(Some(&alice), &format!("{{ {aliases} }}"), json!({}))
        .await;
    let errors = response["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{response}");
    let mut actuals = Vec::new();
    for error in errors {
        let (limit, max, actual) = limit_in(error);
        assert_eq!((limit.as_str(), max), ("databaseFetches", 4));
        assert_eq!(error["path"][1], "lastMessage", "{error}");
        actuals.push(actual);
    }
    actuals.sort_unstable();
    assert_eq!(actuals, vec![5, 6]);
    let data = &response["data"];
    let answered: Vec<&Value> = ["c0", "c1", "c2"]
        .iter()
        .map(|alias| &data[alias]["lastMessage"])
        .filter(|last| !last.is_null())
        .collect();
    assert_eq!(answered, vec![&json!({"content": "hi"})], "{response}");
    // The budget is per operation: the next one starts afresh.
    let again = app
        .graphql(Some(&alice), "{ channels { id } }", json!({}))
        .await;
    assert_eq!(
        again["data"]["channels"].as_array().unwrap().len(),
        3,
        "{again}"
    );
    app.shutdown().await;
}
