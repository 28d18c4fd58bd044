//! Health, readiness, metrics and shutdown.

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    both_listeners_answer_health,
    readyz_and_metrics_on_management_port
);

async fn both_listeners_answer_health(app: TestApp) {
    for base in [&app.client_url, &app.management_url] {
        let response = app
            .http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{base}/healthz");
    }
    // The management routes are not on the client port.
    let response = app
        .http
        .get(format!("{}/readyz", app.client_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.shutdown().await;
}

async fn readyz_and_metrics_on_management_port(app: TestApp) {
    let ready = app
        .http
        .get(format!("{}/readyz", app.management_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.management_url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("clacks_http_requests_total"), "{text}");
    for metric in [
        "clacks_connections",
        "clacks_subscriptions",
        "clacks_db_connections_open",
        "clacks_db_connections_idle",
    ] {
        assert!(text.contains(metric), "{metric} missing:\n{text}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_behind_the_token() {
    let Some(app) = TestApp::spawn_with(clacks_testkit::TestBackend::Sqlite, |config| {
        config.management_token = Some("ops-secret".into());
    })
    .await
    else {
        return;
    };
    let url = format!("{}/metrics", app.management_url);
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 401);
    let authorized = app
        .http
        .get(&url)
        .bearer_auth("ops-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 200);
    for open in ["/healthz", "/readyz"] {
        let response = app
            .http
            .get(format!("{}{open}", app.management_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{open} stays open for probes");
    }
    app.shutdown().await;
}
