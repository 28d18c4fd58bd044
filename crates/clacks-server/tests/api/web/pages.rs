//! GraphiQL and the demo page: served from the binary with their content
//! types and cache headers, nothing from another origin, the demo
//! switchable off.

use clacks_testkit::TestBackend;

use super::client;
use crate::helpers::TestApp;
use crate::management::{Reply, read};

async fn get(app: &TestApp, path: &str) -> Reply {
    read(client().get(format!("{}{path}", app.client_url))).await
}

#[track_caller]
fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {:?}", reply.headers))
}

/// The page, then each script and style it loads: served, typed, cached by
/// ETag, and none of them from elsewhere.
#[track_caller]
fn assert_page(page: &Reply, loads: &[&str]) {
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.content_type(), "text/html; charset=utf-8");
    let policy = header(page, "content-security-policy");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    for asset in loads {
        assert!(page.text.contains(asset), "the page loads {asset}");
    }
    assert!(
        !page.text.contains("//cdn") && !page.text.contains("src=\"http"),
        "nothing from a CDN:\n{}",
        page.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_and_the_demo_are_embedded() {
    let Some(app) = TestApp::spawn(TestBackend::Sqlite).await else {
        return;
    };
    let graphiql = get(&app, "/graphiql").await;
    assert_page(
        &graphiql,
        &["/assets/graphiql/main.js", "/assets/vendor/graphiql.css"],
    );
    let demo = get(&app, "/demo").await;
    assert_page(&demo, &["/assets/demo/app.js", "/assets/demo/app.css"]);

    for (path, content_type, contains) in [
        (
            "/assets/graphiql/main.js",
            "text/javascript; charset=utf-8",
            "graphql-ws",
        ),
        (
            "/assets/vendor/graphiql.js",
            "text/javascript; charset=utf-8",
            "GraphiQL",
        ),
        (
            "/assets/vendor/graphiql.css",
            "text/css; charset=utf-8",
            ".graphiql-container",
        ),
        (
            "/assets/vendor/LICENSES.txt",
            "text/plain; charset=utf-8",
            "graphiql@",
        ),
        (
            "/assets/demo/app.js",
            "text/javascript; charset=utf-8",
            "afterSeq",
        ),
        ("/assets/demo/app.css", "text/css; charset=utf-8", "#chat"),
        (
            "/assets/vendor/graphql-ws.js",
            "text/javascript; charset=utf-8",
            "graphql-transport-ws",
        ),
    ] {
        let asset = get(&app, path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.content_type(), content_type, "{path}");
        assert!(asset.text.contains(contains), "{path} has {contains}");
        assert_eq!(header(&asset, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&asset, "x-content-type-options"), "nosniff");

        // Revalidation: the same ETag gets a 304 without a body.
        let etag = header(&asset, "etag").to_owned();
        let again = read(
            client()
                .get(format!("{}{path}", app.client_url))
                .header("if-none-match", &etag),
        )
        .await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.text.is_empty());
        assert_eq!(header(&again, "etag"), etag);
        let changed = read(
            client()
                .get(format!("{}{path}", app.client_url))
                .header("if-none-match", "\"something-else\""),
        )
        .await;
        assert_eq!(changed.status, 200, "{path}");
    }

    // A browser landing on the port or on /graphql finds the pages.
    let root = get(&app, "/").await;
    assert_eq!(root.status, 307);
    assert_eq!(header(&root, "location"), "/demo");
    let browser_on_graphql = read(
        client()
            .get(format!("{}/graphql", app.client_url))
            .header("accept", "text/html,application/xhtml+xml"),
    )
    .await;
    assert_eq!(browser_on_graphql.status, 307);
    assert_eq!(header(&browser_on_graphql, "location"), "/graphiql");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_can_be_switched_off() {
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| config.demo = false).await
    else {
        return;
    };
    for path in [
        "/",
        "/demo",
        "/assets/demo/app.js",
        "/assets/vendor/graphql-ws.js",
    ] {
        assert_eq!(get(&app, path).await.status, 404, "{path}");
    }
    let login = read(
        client()
            .post(format!("{}/demo/login", app.client_url))
            .json(&serde_json::json!({"userId": "alice"})),
    )
    .await;
    assert_eq!(login.status, 404);
    // GraphiQL stays: it is a client like any other.
    assert_eq!(get(&app, "/graphiql").await.status, 200);
    app.shutdown().await;
}
