//! Command line and environment configuration. Every option is a flag and
//! an environment variable (the flag wins); `clacks --help` documents each.

use std::net::SocketAddr;

use clacks_api::host::AllowedHost;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Clacks: a self-hosted real-time chat backend (GraphQL for clients, a JSON
/// management API for the application's own server).
#[derive(Debug, Clone, Parser)]
#[command(name = "clacks", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve,
    /// Apply the embedded database migrations, then exit.
    Migrate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Database: sqlite:PATH, mysql://USER[:PASS]@HOST[:PORT]/DB (MariaDB;
    /// tested on 10.11, also through the statements written for MySQL 8,
    /// but no MySQL 8 server is tested), or
    /// postgres://USER[:PASS]@HOST[:PORT]/DB.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://clacks.db",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// Most database connections in the pool.
    #[arg(
        long,
        env = "CLACKS_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,

    /// Message batches in flight at once on MySQL/MariaDB and PostgreSQL
    /// (default 2; 1 commits one batch at a time).
    #[arg(long, env = "CLACKS_DB_BATCH_PIPELINE", global = true)]
    pub db_batch_pipeline: Option<usize>,

    /// HS256 key for client JWTs. Unset: a random key is generated once and
    /// kept in the database (a warning is logged). Use at least 32 bytes.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// Seconds of clock skew tolerated on a token's exp and nbf.
    #[arg(long, env = "CLACKS_JWT_LEEWAY", default_value_t = 5, global = true)]
    pub jwt_leeway: u64,

    /// Required `iss` of client tokens (and the one minted tokens carry).
    #[arg(long, env = "CLACKS_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of client tokens (and the one minted tokens carry).
    #[arg(long, env = "CLACKS_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Default lifetime, in seconds, of tokens minted by the management API.
    #[arg(
        long,
        env = "CLACKS_TOKEN_TTL",
        default_value_t = 86_400,
        global = true
    )]
    pub token_ttl: u64,

    /// Address of the client listener (GraphQL, GraphiQL, /healthz).
    #[arg(
        long,
        env = "CLACKS_CLIENT_ADDR",
        default_value = "0.0.0.0:8000",
        global = true
    )]
    pub client_addr: SocketAddr,

    /// Address of the management listener (/api/v1, OpenAPI, /metrics).
    /// Keep it private: binding it beyond loopback requires a token.
    #[arg(
        long,
        env = "CLACKS_MANAGEMENT_ADDR",
        default_value = "127.0.0.1:7999",
        global = true
    )]
    pub management_addr: SocketAddr,

    /// Bearer token required on every management request except health and
    /// the OpenAPI documents.
    #[arg(
        long,
        env = "CLACKS_MANAGEMENT_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub management_token: Option<String>,

    /// Host names the management API answers to besides loopback
    /// (localhost, 127.0.0.1, [::1]) and its own listening address,
    /// comma-separated, each with an optional :port (e.g.
    /// clacks.internal,10.0.0.5). Any other `Host` gets 421, so a web page
    /// cannot reach the port through DNS rebinding. `*` accepts any Host:
    /// only where no browser can reach the port.
    #[arg(
        long,
        env = "CLACKS_MANAGEMENT_ALLOWED_HOSTS",
        value_delimiter = ',',
        global = true
    )]
    pub management_allowed_hosts: Vec<AllowedHost>,

    /// NATS server for fan-out between several Clacks nodes (e.g.
    /// nats://127.0.0.1:4222). Unset: this node delivers alone.
    #[arg(long, env = "CLACKS_NATS_URL", hide_env_values = true, global = true)]
    pub nats_url: Option<String>,

    /// Prefix of the NATS subjects this deployment uses (separates several
    /// deployments sharing one NATS server).
    #[arg(
        long,
        env = "CLACKS_NATS_SUBJECT_PREFIX",
        default_value = "clacks",
        global = true
    )]
    pub nats_subject_prefix: String,

    /// Largest message content, in bytes.
    #[arg(long, env = "CLACKS_MAX_MESSAGE_BYTES", default_value_t = clacks_core::DEFAULT_MAX_MESSAGE_BYTES, global = true)]
    pub max_message_bytes: usize,

    /// Sustained messages per second one user may send.
    #[arg(long, env = "CLACKS_SEND_RATE", default_value_t = 10, global = true)]
    pub send_rate: u32,

    /// Messages one user may send in a burst above the sustained rate.
    #[arg(long, env = "CLACKS_SEND_BURST", default_value_t = 30, global = true)]
    pub send_burst: u32,

    /// Events queued per subscription before a slow client is disconnected.
    #[arg(
        long,
        env = "CLACKS_SUBSCRIPTION_QUEUE",
        default_value_t = 1024,
        global = true
    )]
    pub subscription_queue: usize,

    /// Most concurrent subscriptions on one WebSocket connection.
    #[arg(
        long,
        env = "CLACKS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value_t = 100,
        global = true
    )]
    pub max_subscriptions_per_connection: usize,

    /// Outgoing WebSocket frames queued per connection before a client that
    /// does not read is disconnected (close code 4008, "slow consumer").
    #[arg(
        long,
        env = "CLACKS_CONNECTION_QUEUE",
        default_value_t = 1024,
        global = true
    )]
    pub connection_queue: usize,

    /// Seconds a WebSocket client has to send `connection_init` (4408 after).
    #[arg(
        long,
        env = "CLACKS_CONNECTION_INIT_TIMEOUT",
        default_value_t = 3,
        global = true
    )]
    pub connection_init_timeout: u64,

    /// Seconds between keep-alives on idle WebSockets (`ka` / `ping`).
    #[arg(
        long,
        env = "CLACKS_KEEPALIVE_INTERVAL",
        default_value_t = 15,
        global = true
    )]
    pub keepalive_interval: u64,

    /// Deepest GraphQL query accepted.
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_DEPTH",
        default_value_t = 16,
        global = true
    )]
    pub graphql_max_depth: usize,

    /// Most complex GraphQL query accepted (async-graphql's field count
    /// based complexity).
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_COMPLEXITY",
        default_value_t = 1000,
        global = true
    )]
    pub graphql_max_complexity: usize,

    /// Seconds to let connections finish after SIGTERM/SIGINT.
    #[arg(
        long,
        env = "CLACKS_SHUTDOWN_GRACE",
        default_value_t = 10,
        global = true
    )]
    pub shutdown_grace: u64,

    /// Log format.
    #[arg(long, env = "CLACKS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`,
    /// `clacks=debug,sqlx=warn`).
    #[arg(long, env = "CLACKS_LOG", default_value = "info", global = true)]
    pub log_level: String,
}

impl Config {
    /// A configuration with every default, for tests and embedding.
    pub fn defaults() -> Config {
        Cli::parse_from(["clacks"]).config
    }

    /// Checks what clap cannot: refuses settings that would be unsafe.
    pub fn validate(&self) -> Result<(), String> {
        if !self.management_addr.ip().is_loopback()
            && self.management_token.as_deref().is_none_or(str::is_empty)
        {
            return Err(format!(
                "the management API would listen on {} (beyond loopback) without authentication.\n\
                 Set CLACKS_MANAGEMENT_TOKEN (or --management-token) to a long random secret, \
                 or bind it to loopback with CLACKS_MANAGEMENT_ADDR=127.0.0.1:7999.",
                self.management_addr
            ));
        }
        if self.send_rate == 0 || self.send_burst == 0 {
            return Err("CLACKS_SEND_RATE and CLACKS_SEND_BURST must be at least 1".into());
        }
        if self.nats_subject_prefix.is_empty()
            || !self
                .nats_subject_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(
                "CLACKS_NATS_SUBJECT_PREFIX must be letters, digits, '-', '_' or '.'".into(),
            );
        }
        if self.connection_queue == 0 || self.subscription_queue == 0 {
            return Err(
                "CLACKS_CONNECTION_QUEUE and CLACKS_SUBSCRIPTION_QUEUE must be at least 1".into(),
            );
        }
        if self.connection_init_timeout == 0 || self.keepalive_interval == 0 {
            return Err("CLACKS_CONNECTION_INIT_TIMEOUT and CLACKS_KEEPALIVE_INTERVAL must be at least 1 second".into());
        }
        if self.max_message_bytes == 0 {
            return Err("CLACKS_MAX_MESSAGE_BYTES must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn public_management_needs_a_token() {
        let mut config = Config::defaults();
        assert!(config.validate().is_ok());
        config.management_addr = "0.0.0.0:7999".parse().unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("CLACKS_MANAGEMENT_TOKEN")
        );
        config.management_token = Some("s3cret".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn allowed_hosts_are_a_comma_separated_list() {
        let cli = Cli::try_parse_from([
            "clacks",
            "--management-allowed-hosts",
            "clacks.internal, 10.0.0.5:7999,*",
        ])
        .unwrap();
        let hosts: Vec<String> = cli
            .config
            .management_allowed_hosts
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(hosts, ["clacks.internal", "10.0.0.5:7999", "*"]);
        let bad = Cli::try_parse_from(["clacks", "--management-allowed-hosts", "http://x"]);
        assert!(bad.is_err());
    }
}
