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
use clacks_delivery::{CloseReason, Connections, Hub, HubSettings, NatsBus};
use clacks_service::{Auth, AuthSettings, ChatService, ChatServiceParts, Limits, StoreBackfill};
use clacks_store::{PoolSettings, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Cli, Command, Config, LogFormat};

/// Name of the setting that keeps a generated JWT secret.
const JWT_SECRET_SETTING: &str = "jwt_secret";

/// Why startup failed, so `main` can choose the exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is wrong; retrying will not help.
    #[error("{0}")]
    Config(String),
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
    /// Stops accepting, asks WebSockets to close (1001), waits for in-flight
    /// requests up to the grace period, then closes the database.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let closed = self
            .service
            .connections()
            .disconnect_all(CloseReason::ShuttingDown);
        if closed > 0 {
            tracing::info!(connections = closed, "closing live connections");
        }
        self.shutdown.cancel();
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(self.grace, all).await.is_err() {
            tracing::warn!("connections still open after the grace period; closing anyway");
        }
        self.service.store().close().await;
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
    let auth = Auth::new(
        &secret,
        AuthSettings {
            leeway: Duration::from_secs(config.jwt_leeway),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        },
    );
    let limits = Limits {
        max_message_bytes: config.max_message_bytes,
        send_per_second: std::num::NonZeroU32::new(config.send_rate)
            .unwrap_or(std::num::NonZeroU32::MIN),
        send_burst: std::num::NonZeroU32::new(config.send_burst)
            .unwrap_or(std::num::NonZeroU32::MIN),
        default_token_ttl: Duration::from_secs(config.token_ttl.max(1)),
        ..Limits::default()
    };
    let hub = Hub::with_backfill(
        HubSettings {
            queue_capacity: config.subscription_queue,
            ..HubSettings::default()
        },
        Some(Arc::new(StoreBackfill(store.clone()))),
    );
    let connections = Connections::new();
    let bus = match config.nats_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Some(
            NatsBus::start(
                url,
                &config.nats_subject_prefix,
                hub.clone(),
                connections.clone(),
            )
            .await
            .map_err(|e| StartupError::Config(format!("CLACKS_NATS_URL: {e}")))?,
        ),
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

    let client_router = Router::new()
        .merge(clacks_graphql::router(
            service.clone(),
            clacks_graphql::GraphqlConfig {
                max_subscriptions_per_connection: config.max_subscriptions_per_connection,
                max_depth: config.graphql_max_depth,
                max_complexity: config.graphql_max_complexity,
                connection_queue: config.connection_queue,
                connection_init_timeout: Duration::from_secs(config.connection_init_timeout),
                keepalive_interval: Duration::from_secs(config.keepalive_interval),
                ..clacks_graphql::GraphqlConfig::default()
            },
        ))
        .merge(ops::health_routes())
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

    tracing::info!(
        client = %client_addr,
        management = %management_addr,
        database = service.store().backend().name(),
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
