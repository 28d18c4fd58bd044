//! The `clacks` server: configuration, startup (database with retry,
//! migrations, JWT secret), the two listeners, and graceful shutdown.
//! Everything a request does is in the service and transport crates; this
//! crate only assembles them.

pub mod config;
mod ops;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use clacks_core::Error;
use clacks_delivery::{
    ClusterKey, ConnectionLimits, Connections, Hub, HubSettings, NatsBus, NatsSettings,
};
use clacks_service::{
    Auth, AuthSettings, ChatService, ChatServiceParts, Limits, MintedToken, StoreBackfill,
    TokenRequest,
};
use clacks_store::{PoolSettings, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Cli, Command, Config, LogFormat};

/// The least time given to closing the database after the grace period.
const STORE_CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Name of the setting that keeps a generated JWT secret.
const JWT_SECRET_SETTING: &str = "jwt_secret";

/// Why startup failed, so `main` can choose the exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is wrong; retrying will not help.
    #[error("{0}")]
    Config(String),
    /// A command's argument is refused (e.g. a reserved claim given to
    /// `clacks token`).
    #[error("{0}")]
    Invalid(String),
    /// Anything else (a port in use, a failing migration).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Connects to the database, retrying with backoff while it is unreachable.
/// A malformed URL fails at once. `cancel` aborts the wait (Ctrl-C).
pub async fn connect_store(
    config: &Config,
    cancel: &CancellationToken,
) -> Result<Arc<dyn Store>, StartupError> {
    clacks_store::Backend::from_url(&config.database_url)
        .map_err(|e| StartupError::Config(e.to_string()))?;
    let settings = PoolSettings {
        max_connections: config.db_max_connections.max(1),
        batch_pipeline: config.db_batch_pipeline,
        ..PoolSettings::default()
    };
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1u32;
    loop {
        match clacks_store::connect(&config.database_url, &settings).await {
            Ok(store) => return Ok(store),
            Err(Error::Unavailable(why)) => {
                tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = %why, "database unreachable, retrying");
            }
            Err(Error::InvalidInput { reason, .. }) => {
                return Err(StartupError::Config(format!(
                    "DATABASE_URL is not usable: {reason}"
                )));
            }
            Err(other) => {
                return Err(StartupError::Other(anyhow::anyhow!(
                    "connecting to the database failed: {other}"
                )));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return Err(StartupError::Other(anyhow::anyhow!("interrupted while waiting for the database"))),
        }
        delay = (delay * 2).min(Duration::from_secs(15));
        attempt += 1;
    }
}

/// The configured JWT secret, or the generated one kept in the database.
async fn jwt_secret(config: &Config, store: &Arc<dyn Store>) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = config.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
        if secret.len() < 32 {
            tracing::warn!(
                "JWT_SECRET is shorter than 32 bytes; RFC 8725 asks for at least 256 bits of key"
            );
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let secret = match store.setting(JWT_SECRET_SETTING).await? {
        Some(existing) => existing,
        None => {
            let fresh: String = {
                use rand::Rng;
                let bytes: [u8; 32] = rand::rng().random();
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            };
            store.init_setting(JWT_SECRET_SETTING, &fresh).await?
        }
    };
    tracing::warn!(
        "JWT_SECRET is not set: using the random key generated once and kept in the database. \
         Set JWT_SECRET so your application's server can sign tokens itself."
    );
    Ok(secret.into_bytes())
}

/// The token checker and minter for `secret`, as configured.
fn auth(config: &Config, secret: &[u8]) -> Auth {
    Auth::new(
        secret,
        AuthSettings {
            leeway: Duration::from_secs(config.jwt_leeway),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        },
    )
}

fn limits(config: &Config) -> Result<Limits, StartupError> {
    Ok(Limits {
        max_message_bytes: config.max_message_bytes,
        max_bulk_members: config.max_bulk_members,
        max_concurrent_searches: config.max_concurrent_searches,
        rates: config.rate_limits().map_err(StartupError::Config)?,
        default_token_ttl: Duration::from_secs(config.token_ttl.max(1)),
        presence_events_max_members: config.presence_events_max_members,
        ..Limits::default()
    })
}

/// `clacks token`: mints a client token with the secret and settings the
/// server uses (the generated secret in the database when `JWT_SECRET` is
/// not set, created as `serve` would), through the management API's code.
pub async fn mint_token(
    config: &Config,
    store: &Arc<dyn Store>,
    user: String,
    request: TokenRequest,
) -> Result<MintedToken, StartupError> {
    config.validate().map_err(StartupError::Config)?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
    let secret = jwt_secret(config, store).await?;
    auth(config, &secret)
        .mint_for(user, request, &limits(config)?)
        .map_err(|e| match e {
            Error::InvalidInput { .. } => StartupError::Invalid(e.public_message()),
            other => StartupError::Other(anyhow::anyhow!("minting the token failed: {other}")),
        })
}

/// A running server.
pub struct RunningServer {
    pub client_addr: SocketAddr,
    pub management_addr: SocketAddr,
    pub service: Arc<ChatService>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl RunningServer {
    /// Stops within the grace period: accepts no more connections or
    /// requests; lets HTTP requests in flight answer; closes every
    /// WebSocket with 1001 once its mutations in flight have answered, and
    /// waits for each close frame to be flushed; then closes the database.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let deadline = tokio::time::Instant::now() + self.grace;
        let connections = self.service.connections();
        let open = connections.shut_down();
        if open > 0 {
            tracing::info!(connections = open, "closing live connections");
        }
        // Listeners stop accepting; their open HTTP connections finish the
        // request in flight, then close.
        self.shutdown.cancel();
        let listeners = futures::future::join_all(self.tasks);
        let everything = futures::future::join(listeners, connections.all_closed());
        if tokio::time::timeout_at(deadline, everything).await.is_err() {
            tracing::warn!(
                connections = connections.count(),
                "requests or connections still open after the grace period; closing anyway"
            );
        }
        // A mutation that overran the grace may still hold a database
        // connection, which the pool's close would wait for.
        let store_deadline = deadline.max(tokio::time::Instant::now() + STORE_CLOSE_WAIT);
        if tokio::time::timeout_at(store_deadline, self.service.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy; exiting anyway");
        }
        tracing::info!("stopped");
    }

    /// A token that, when cancelled, starts the graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what} listener (in use? set its address option)")
    })
}

/// Starts both listeners on an already connected store.
pub async fn start(config: &Config, store: Arc<dyn Store>) -> Result<RunningServer, StartupError> {
    config.validate().map_err(StartupError::Config)?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
    let secret = jwt_secret(config, &store).await?;
    let auth = auth(config, &secret);
    let limits = limits(config)?;
    let hub = Hub::new(
        HubSettings {
            queue_capacity: config.subscription_queue,
            ..HubSettings::default()
        },
        Arc::new(StoreBackfill(store.clone())),
    );
    let connections = Connections::new(ConnectionLimits {
        total: config.max_connections,
        per_user: config.max_connections_per_user,
        per_address: config.max_connections_per_address,
    });
    let bus = match config.nats_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            // Every node of a deployment shares the JWT secret already, so
            // a key derived from it works with no configuration.
            let key = match config.cluster_key.as_deref().filter(|k| !k.is_empty()) {
                Some(key) => ClusterKey::from_secret(key.as_bytes()),
                None => ClusterKey::from_secret(&secret),
            };
            let settings = NatsSettings {
                url,
                prefix: &config.nats_subject_prefix,
                credentials: config.nats_credentials.as_deref(),
                key,
                presence_ttl: Duration::from_secs(config.presence_ttl.max(1)),
            };
            Some(
                NatsBus::start(settings, hub.clone(), connections.clone())
                    .await
                    .map_err(|e| StartupError::Config(format!("CLACKS_NATS_URL: {e}")))?,
            )
        }
        None => None,
    };
    let service = ChatService::new(ChatServiceParts {
        store: store.clone(),
        hub,
        bus,
        connections,
        auth,
        limits,
    });
    let prometheus = telemetry::prometheus();

    let web = clacks_web::WebConfig {
        demo: config.demo,
        dev_mode: config.dev_mode(),
        cors_origins: config.cors_origins.clone(),
    };
    let client_router = Router::new()
        .merge(clacks_graphql::router(
            service.clone(),
            clacks_graphql::GraphqlConfig {
                max_subscriptions_per_connection: config.max_subscriptions_per_connection,
                limits: config.graphql_limits(),
                public_introspection: config.graphql_public_introspection,
                connection_queue: config.connection_queue,
                connection_queue_bytes: config.connection_queue_bytes,
                close_grace: Duration::from_secs(config.shutdown_grace),
                trusted_proxies: config.trusted_proxies.clone().unwrap_or_default(),
                forwarded_header: config.forwarded_header,
                connection_init_timeout: Duration::from_secs(config.connection_init_timeout),
                keepalive_interval: Duration::from_secs(config.keepalive_interval),
                ..clacks_graphql::GraphqlConfig::default()
            },
        ))
        .merge(ops::health_routes())
        .merge(clacks_web::router(service.clone(), &web))
        .layer(clacks_web::cors_layer(&web))
        .layer(axum::middleware::from_fn(|req, next| {
            ops::track_http("client", req, next)
        }));
    let management_router = Router::new()
        .merge(clacks_api::router(
            service.clone(),
            clacks_api::ManagementConfig {
                token: config.management_token.clone().filter(|t| !t.is_empty()),
            },
        ))
        .merge(ops::management_ops_routes(
            service.clone(),
            prometheus,
            config.management_token.as_deref().filter(|t| !t.is_empty()),
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(clacks_api::host::AllowedHosts::new(
                config.management_addr,
                &config.management_allowed_hosts,
            )),
            clacks_api::host::require_allowed_host,
        ))
        .layer(axum::middleware::from_fn(|req, next| {
            ops::track_http("management", req, next)
        }));

    // Created before the listeners answer, so its metric series exist from the
    // first scrape of /metrics on.
    let search_indexer = (config.search_index_interval_ms > 0).then(|| {
        clacks_service::SearchIndexer::new(
            store.clone(),
            Duration::from_millis(config.search_index_interval_ms),
            service.search_pending(),
        )
    });

    let client = bind(config.client_addr, "client").await?;
    let management = bind(config.management_addr, "management").await?;
    let client_addr = client.local_addr().map_err(anyhow::Error::from)?;
    let management_addr = management.local_addr().map_err(anyhow::Error::from)?;
    let shutdown = CancellationToken::new();

    let mut tasks = Vec::new();
    for (listener, router, name) in [
        (client, client_router, "client"),
        (management, management_router, "management"),
    ] {
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
            if let Err(e) = served {
                tracing::error!(listener = name, error = %e, "listener failed");
            }
        }));
    }
    let housekeeping = service.clone();
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => housekeeping.housekeeping(),
                () = stop.cancelled() => return,
            }
        }
    }));

    if config.webhook_worker {
        let worker = clacks_service::WebhookWorker::new(
            store.clone(),
            config.webhook_settings(),
            service.webhook_wake(),
            service.connections().clone(),
        )
        .map_err(|e| anyhow::anyhow!("starting the webhook worker failed: {e}"))?;
        tasks.push(tokio::spawn(worker.run(shutdown.clone().cancelled_owned())));
    }

    if let Some(indexer) = search_indexer {
        tasks.push(tokio::spawn(
            indexer.run(shutdown.clone().cancelled_owned()),
        ));
    }

    tracing::info!(
        client = %client_addr,
        management = %management_addr,
        database = service.backend().name(),
        "clacks is serving"
    );
    Ok(RunningServer {
        client_addr,
        management_addr,
        service,
        shutdown,
        tasks,
        grace: Duration::from_secs(config.shutdown_grace),
    })
}
