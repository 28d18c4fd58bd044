//! `TestApp::spawn`: a real server on ephemeral ports over a fresh database,
//! with typed helpers for both APIs.

use std::sync::Arc;

use clacks_server::{Config, RunningServer};
use clacks_service::{ChatService, TokenRequest};
use clacks_testkit::{TestBackend, TestDatabase};
use serde_json::{Value, json};

pub const TEST_JWT_SECRET: &str = "clacks-test-secret-0123456789abcdef";

/// Generates one test per backend for each named async fn taking a
/// `TestApp`: `mod sqlite { fn name() }`, `mod mysql`, `mod postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { $crate::helpers::run(clacks_testkit::TestBackend::Sqlite, super::$name).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { $crate::helpers::run(clacks_testkit::TestBackend::MySql, super::$name).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { $crate::helpers::run(clacks_testkit::TestBackend::Postgres, super::$name).await })*
        }
    };
}

pub async fn run<F, Fut>(backend: TestBackend, test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Some(app) = TestApp::spawn(backend).await {
        test(app).await;
    }
}

pub struct TestApp {
    pub backend: TestBackend,
    pub client_url: String,
    pub management_url: String,
    pub ws_url: String,
    /// The server's database, for tests that hold its locks.
    pub database_url: String,
    pub http: reqwest::Client,
    pub service: Arc<ChatService>,
    server: Option<RunningServer>,
    _db: TestDatabase,
}

/// The configuration tests run with: ephemeral loopback ports, a fixed JWT
/// secret and generous rate limits (the rate limit tests lower theirs).
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::defaults();
    config.database_url = database_url.to_owned();
    config.client_addr = "127.0.0.1:0".parse().expect("addr");
    config.management_addr = "127.0.0.1:0".parse().expect("addr");
    config.jwt_secret = Some(TEST_JWT_SECRET.to_owned());
    for (rate, burst) in [
        (&mut config.send_rate, &mut config.send_burst),
        (&mut config.edit_rate, &mut config.edit_burst),
        (&mut config.delete_rate, &mut config.delete_burst),
        (&mut config.mark_read_rate, &mut config.mark_read_burst),
        (&mut config.typing_rate, &mut config.typing_burst),
        (&mut config.subscribe_rate, &mut config.subscribe_burst),
    ] {
        (*rate, *burst) = (10_000, 10_000);
    }
    config.shutdown_grace = 2;
    config
}

impl TestApp {
    pub async fn spawn(backend: TestBackend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with a configuration adjusted by `adjust`.
    pub async fn spawn_with(
        backend: TestBackend,
        adjust: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        let db = TestDatabase::create(backend).await?;
        let mut config = test_config(&db.url);
        adjust(&mut config);
        let store = clacks_server::connect_store(&config, &Default::default())
            .await
            .expect("connect");
        let server = clacks_server::start(&config, store).await.expect("start");
        let client_url = format!("http://{}", server.client_addr);
        let management_url = format!("http://{}", server.management_addr);
        let ws_url = format!("ws://{}/graphql", server.client_addr);
        Some(TestApp {
            backend,
            client_url,
            management_url,
            ws_url,
            database_url: db.url.clone(),
            http: reqwest::Client::new(),
            service: server.service.clone(),
            server: Some(server),
            _db: db,
        })
    }

    /// A valid token for `user`, minted by the server's own key.
    pub fn token(&self, user: &str) -> String {
        self.service
            .admin_mint_token(user.to_owned(), TokenRequest::default())
            .expect("mint")
            .token
    }

    /// POSTs a GraphQL request, returns the JSON response body.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.client_url))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("graphql request")
            .json()
            .await
            .expect("graphql json")
    }

    /// `{management_url}/api/v1{path}`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.management_url)
    }

    /// Creates a channel through the service, returns its id.
    pub async fn channel_with(&self, name: &str, users: &[&str]) -> i64 {
        self.service
            .admin_create_channel(
                name.to_owned(),
                users.iter().map(|u| (*u).to_owned()).collect(),
                None,
            )
            .await
            .expect("create channel")
            .id
            .0
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}
