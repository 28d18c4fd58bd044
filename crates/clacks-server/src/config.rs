//! Command line and environment configuration. Every option is a flag and
//! an environment variable (the flag wins); `clacks --help` documents each.

use std::net::SocketAddr;

use clacks_api::host::AllowedHost;
use clacks_graphql::RequestLimits;
use clacks_service::{Rate, RateLimits};
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
    /// Mint a client token with the server's JWT secret (as the management
    /// API's `/jwt` does) and print it on stdout.
    Token(TokenArgs),
}

/// Arguments of `clacks token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user the token speaks for (`sub`).
    pub uid: String,
    /// The `name` claim (the user's display name in GraphQL `me`).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime: seconds, or a number with a unit s, m, h or d (`90m`,
    /// `7d`); default CLACKS_TOKEN_TTL, at most one year.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// An extra claim, KEY=VALUE; the value is read as JSON when it parses
    /// (`admin=true`, `team={"id":3}`), else as a string. Repeatable.
    #[arg(long = "claim", value_name = "KEY=VALUE", value_parser = parse_claim)]
    pub claims: Vec<(String, serde_json::Value)>,
}

/// `3600`, `3600s`, `90m`, `12h`, `7d`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} (use s, m, h or d)")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_secs))
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a duration such as 3600, 90m, 12h or 7d"))
}

/// `KEY=VALUE`: the value as JSON when it parses, else as a string.
fn parse_claim(text: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("{text:?} has no claim name before ="));
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
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

    /// Serve the demo chat page on the client port (`/`, `/demo`). In dev
    /// mode (management API on loopback without a token) it also offers a
    /// login as any user and creates channels, for browsers on this machine.
    #[arg(
        long,
        env = "CLACKS_DEMO",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        global = true
    )]
    pub demo: bool,

    /// Origins (scheme://host[:port], comma-separated) whose web pages may
    /// call the client port; `*` for any. Cookies are never allowed, so
    /// `*` only lets pages send their own tokens. In dev mode loopback
    /// origins (http://localhost:*, http://127.0.0.1:*, http://[::1]:*)
    /// are allowed as well.
    #[arg(
        long,
        env = "CLACKS_CORS_ORIGINS",
        default_value = "",
        hide_default_value = true,
        global = true
    )]
    pub cors_origins: clacks_web::CorsOrigins,

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
    /// nats://127.0.0.1:4222; nats://USER:PASSWORD@HOST:PORT or
    /// nats://TOKEN@HOST:PORT to authenticate; several separated by
    /// commas). Unset: this node delivers alone.
    #[arg(long, env = "CLACKS_NATS_URL", hide_env_values = true, global = true)]
    pub nats_url: Option<String>,

    /// NATS credentials file (a user JWT and its nkey seed, as `nsc`
    /// writes them), for servers that authenticate with nkeys.
    #[arg(long, env = "CLACKS_NATS_CREDS", global = true)]
    pub nats_credentials: Option<std::path::PathBuf>,

    /// Key that signs the messages nodes exchange over NATS (every node of
    /// a deployment needs the same one; at least 32 characters). Unset:
    /// derived from the JWT secret, which the nodes share already.
    #[arg(
        long,
        env = "CLACKS_CLUSTER_KEY",
        hide_env_values = true,
        global = true
    )]
    pub cluster_key: Option<String>,

    /// Prefix of the NATS subjects this deployment uses (separates several
    /// deployments sharing one NATS server).
    #[arg(
        long,
        env = "CLACKS_NATS_SUBJECT_PREFIX",
        default_value = "clacks",
        global = true
    )]
    pub nats_subject_prefix: String,

    /// Seconds another node's user stays online here without news of them
    /// from that node: each node sends its online users every third of it,
    /// so the users of a node that crashed or lost NATS go offline on the
    /// others within about this long.
    #[arg(
        long,
        env = "CLACKS_PRESENCE_TTL",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600),
        global = true
    )]
    pub presence_ttl: u64,

    /// Channels of at most this many members get a `PresenceChanged` event
    /// when a member comes online or goes offline (0: none do); larger ones
    /// answer the `presence` query only.
    #[arg(
        long,
        env = "CLACKS_PRESENCE_EVENTS_MAX_MEMBERS",
        default_value_t = 100,
        global = true
    )]
    pub presence_events_max_members: u32,

    /// Largest message content, in bytes.
    #[arg(long, env = "CLACKS_MAX_MESSAGE_BYTES", default_value_t = clacks_core::DEFAULT_MAX_MESSAGE_BYTES, global = true)]
    pub max_message_bytes: usize,

    /// Searches this node runs at once; more are refused at once
    /// (`RATE_LIMITED`, HTTP 429).
    #[arg(long, env = "CLACKS_MAX_CONCURRENT_SEARCHES", default_value_t = clacks_service::DEFAULT_MAX_CONCURRENT_SEARCHES, global = true)]
    pub max_concurrent_searches: usize,

    /// Most users one bulk membership change (`PATCH
    /// /channel/{channelId}/users`) may add and remove together.
    #[arg(long, env = "CLACKS_MAX_BULK_MEMBERS", default_value_t = clacks_service::DEFAULT_MAX_BULK_MEMBERS, global = true)]
    pub max_bulk_members: usize,

    /// Sustained messages per second one user may send.
    #[arg(long, env = "CLACKS_SEND_RATE", default_value_t = 10, global = true)]
    pub send_rate: u32,

    /// Messages one user may send in a burst above the sustained rate.
    #[arg(long, env = "CLACKS_SEND_BURST", default_value_t = 30, global = true)]
    pub send_burst: u32,

    /// Sustained message edits per second one user may make.
    #[arg(long, env = "CLACKS_EDIT_RATE", default_value_t = 5, global = true)]
    pub edit_rate: u32,

    /// Message edits one user may make in a burst above the sustained rate.
    #[arg(long, env = "CLACKS_EDIT_BURST", default_value_t = 20, global = true)]
    pub edit_burst: u32,

    /// Sustained message deletes per second one user may make.
    #[arg(long, env = "CLACKS_DELETE_RATE", default_value_t = 5, global = true)]
    pub delete_rate: u32,

    /// Message deletes one user may make in a burst above the sustained rate.
    #[arg(long, env = "CLACKS_DELETE_BURST", default_value_t = 20, global = true)]
    pub delete_burst: u32,

    /// Sustained `markRead` calls per second one user may make.
    #[arg(
        long,
        env = "CLACKS_MARK_READ_RATE",
        default_value_t = 20,
        global = true
    )]
    pub mark_read_rate: u32,

    /// `markRead` calls one user may make in a burst above the sustained rate.
    #[arg(
        long,
        env = "CLACKS_MARK_READ_BURST",
        default_value_t = 100,
        global = true
    )]
    pub mark_read_burst: u32,

    /// Sustained typing broadcasts per second of one user, all channels
    /// together (each channel also takes at most one per 2 seconds).
    #[arg(long, env = "CLACKS_TYPING_RATE", default_value_t = 5, global = true)]
    pub typing_rate: u32,

    /// Typing broadcasts of one user in a burst above the sustained rate.
    #[arg(long, env = "CLACKS_TYPING_BURST", default_value_t = 20, global = true)]
    pub typing_burst: u32,

    /// Sustained subscriptions per second one user may open.
    #[arg(
        long,
        env = "CLACKS_SUBSCRIBE_RATE",
        default_value_t = 10,
        global = true
    )]
    pub subscribe_rate: u32,

    /// Subscriptions one user may open in a burst above the sustained rate.
    #[arg(
        long,
        env = "CLACKS_SUBSCRIBE_BURST",
        default_value_t = 100,
        global = true
    )]
    pub subscribe_burst: u32,

    /// Sustained GraphQL query cost units per second one user may spend.
    #[arg(
        long,
        env = "CLACKS_QUERY_COST_RATE",
        default_value_t = 2_000,
        global = true
    )]
    pub query_cost_rate: u32,

    /// Query cost units one user may spend in a burst; also the costliest
    /// single query a user can run, so keep it above the largest cost one
    /// query may have.
    #[arg(
        long,
        env = "CLACKS_QUERY_COST_BURST",
        default_value_t = 20_000,
        global = true
    )]
    pub query_cost_burst: u32,

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

    /// Bytes of outgoing frames queued per WebSocket connection, bounded
    /// like CLACKS_CONNECTION_QUEUE (a single larger frame, such as a big
    /// history page, is still sent, alone).
    #[arg(
        long,
        env = "CLACKS_CONNECTION_QUEUE_BYTES",
        default_value_t = 1024 * 1024,
        global = true
    )]
    pub connection_queue_bytes: usize,

    /// WebSocket connections this node holds at once; beyond, an upgrade
    /// is refused with HTTP 503.
    #[arg(
        long,
        env = "CLACKS_MAX_CONNECTIONS",
        default_value_t = 50_000,
        global = true
    )]
    pub max_connections: usize,

    /// WebSocket connections one user may hold on this node; beyond,
    /// `connection_init` is refused with close code 4029.
    #[arg(
        long,
        env = "CLACKS_MAX_CONNECTIONS_PER_USER",
        default_value_t = 32,
        global = true
    )]
    pub max_connections_per_user: usize,

    /// WebSocket connections from one client address (IPv6: one /64) on
    /// this node; beyond, an upgrade is refused with HTTP 429. Loopback
    /// clients are not counted (see CLACKS_TRUSTED_PROXIES).
    #[arg(
        long,
        env = "CLACKS_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1000,
        global = true
    )]
    pub max_connections_per_address: usize,

    /// Reverse proxies (IP addresses or CIDR networks, comma-separated)
    /// whose CLACKS_FORWARDED_HEADER names the client's address; from any
    /// other peer the header is ignored. Unset: the TCP peer is the client.
    #[arg(long, env = "CLACKS_TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<clacks_graphql::ws::TrustedProxies>,

    /// The header the trusted proxies write the client's address into:
    /// `x-forwarded-for` or `forwarded` (RFC 7239). The other one is
    /// ignored: a client could have written it.
    #[arg(
        long,
        env = "CLACKS_FORWARDED_HEADER",
        default_value = "x-forwarded-for",
        global = true
    )]
    pub forwarded_header: clacks_graphql::ws::ForwardedHeader,

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

    /// Longest GraphQL document (the query text), in bytes.
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_DOCUMENT_BYTES",
        default_value_t = RequestLimits::DEFAULT.document_bytes,
        global = true
    )]
    pub graphql_max_document_bytes: u64,

    /// Most lexical tokens in one GraphQL document (names, punctuation,
    /// values; not whitespace or comments).
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_TOKENS",
        default_value_t = RequestLimits::DEFAULT.tokens,
        global = true
    )]
    pub graphql_max_tokens: u64,

    /// Deepest nesting of fields in fields (through fragments) and of
    /// argument values in values.
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_DEPTH",
        default_value_t = RequestLimits::DEFAULT.depth,
        global = true
    )]
    pub graphql_max_depth: u64,

    /// Most selections (fields, fragment spreads, inline fragments) in one
    /// document once every fragment is inlined, over all its operations and
    /// fragment definitions: what the engine's validation walks.
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_INLINED_SELECTIONS",
        default_value_t = RequestLimits::DEFAULT.inlined_selections,
        global = true
    )]
    pub graphql_max_inlined_selections: u64,

    /// Most aliased fields in one operation (fragments inlined).
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_ALIASES",
        default_value_t = RequestLimits::DEFAULT.aliases,
        global = true
    )]
    pub graphql_max_aliases: u64,

    /// Most directives in one operation (fragments inlined).
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_DIRECTIVES",
        default_value_t = RequestLimits::DEFAULT.directives,
        global = true
    )]
    pub graphql_max_directives: u64,

    /// Most fields at the top level of one operation.
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_ROOT_FIELDS",
        default_value_t = RequestLimits::DEFAULT.root_fields,
        global = true
    )]
    pub graphql_max_root_fields: u64,

    /// Largest cost of one operation: each field's `@cost` weight (1, or 10
    /// for fields that reach the database) times the rows of the lists
    /// around it (`@listSize`, see schema.graphql).
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_COST",
        default_value_t = RequestLimits::DEFAULT.cost,
        global = true
    )]
    pub graphql_max_cost: u64,

    /// Most operations in one HTTP batch (a JSON array of requests).
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_BATCH",
        default_value_t = RequestLimits::DEFAULT.batch,
        global = true
    )]
    pub graphql_max_batch: u64,

    /// Most resolutions that reach the database during one operation (the
    /// backstop when lists are longer than the cost assumed).
    #[arg(
        long,
        env = "CLACKS_GRAPHQL_MAX_DATABASE_FETCHES",
        default_value_t = RequestLimits::DEFAULT.database_fetches,
        global = true
    )]
    pub graphql_max_database_fetches: u64,

    /// Let callers without a token introspect the schema (`__schema`,
    /// `__type`, /schema.graphql). Off: introspection needs a valid token.
    #[arg(long, env = "CLACKS_GRAPHQL_PUBLIC_INTROSPECTION", global = true)]
    pub graphql_public_introspection: bool,

    /// Seconds the server takes at most to stop after SIGTERM/SIGINT
    /// (requests and mutations in flight answer, WebSockets get 1001); also
    /// how long a WebSocket the server closes waits for its mutations in
    /// flight to answer.
    #[arg(
        long,
        env = "CLACKS_SHUTDOWN_GRACE",
        default_value_t = 10,
        global = true
    )]
    pub shutdown_grace: u64,

    /// Run the webhook worker on this node: it sends the deliveries of
    /// every node sharing the database (each attempt by one node). Off: this
    /// node still records webhook events; a node with the worker sends them.
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_WORKER",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        global = true
    )]
    pub webhook_worker: bool,

    /// Attempts per webhook delivery (the first included) before it is
    /// marked failed.
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 12,
        global = true
    )]
    pub webhook_max_attempts: u32,

    /// Seconds after which a webhook delivery that still fails is marked
    /// failed, whatever its attempt count.
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_MAX_AGE",
        default_value_t = 86_400,
        global = true
    )]
    pub webhook_max_age: u64,

    /// Milliseconds before the first retry of a webhook delivery; each
    /// retry waits twice as long as the previous one (with jitter).
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_BACKOFF_BASE_MS",
        default_value_t = 1000,
        global = true
    )]
    pub webhook_backoff_base_ms: u64,

    /// Seconds a webhook retry waits at most.
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_BACKOFF_MAX",
        default_value_t = 3600,
        global = true
    )]
    pub webhook_backoff_max: u64,

    /// Seconds one webhook request may take (connecting included).
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_TIMEOUT",
        default_value_t = 10,
        global = true
    )]
    pub webhook_timeout: u64,

    /// Webhook requests in flight at once on this node.
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_CONCURRENCY",
        default_value_t = 16,
        global = true
    )]
    pub webhook_concurrency: usize,

    /// Milliseconds between the worker's looks for deliveries made by other
    /// nodes (this node's own events wake it at once).
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_POLL_INTERVAL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub webhook_poll_interval_ms: u64,

    /// Days finished webhook deliveries and their attempts are kept.
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_RETENTION_DAYS",
        default_value_t = 7,
        global = true
    )]
    pub webhook_retention_days: u64,

    /// Milliseconds after a message before `message.unread_offline` is
    /// sent for each member who has not read it and is not connected.
    #[arg(
        long,
        env = "CLACKS_WEBHOOK_UNREAD_DELAY_MS",
        default_value_t = 60_000,
        global = true
    )]
    pub webhook_unread_delay_ms: u64,

    /// Milliseconds between two rounds of this node's background search
    /// indexer, which indexes messages after they are sent (off the send
    /// path); 0 runs none on this node. Searches catch up their own scope
    /// first either way, so this only bounds how much a search may have
    /// to index before it answers.
    #[arg(
        long,
        env = "CLACKS_SEARCH_INDEX_INTERVAL_MS",
        default_value_t = 500,
        global = true
    )]
    pub search_index_interval_ms: u64,

    /// Log format.
    #[arg(long, env = "CLACKS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`,
    /// `clacks=debug,sqlx=warn`).
    #[arg(long, env = "CLACKS_LOG", default_value = "info", global = true)]
    pub log_level: String,
}

/// Environment variables an earlier release read, with their successors.
const RENAMED_VARIABLES: &[(&str, &str)] = &[(
    "CLACKS_GRAPHQL_MAX_COMPLEXITY",
    "CLACKS_GRAPHQL_MAX_COST (cost now counts list rows)",
)];

impl Config {
    /// A configuration with every default, for tests and embedding.
    pub fn defaults() -> Config {
        Cli::parse_from(["clacks"]).config
    }

    /// Dev mode: the management API listens on loopback without a token,
    /// so anyone on this machine can already mint tokens and create
    /// channels; the client port then offers the same to browsers on this
    /// machine (the demo's login) and lets loopback origins through CORS.
    pub fn dev_mode(&self) -> bool {
        self.management_addr.ip().is_loopback()
            && self.management_token.as_deref().is_none_or(str::is_empty)
    }

    /// The per-user rate limits; refuses a zero rate or burst.
    pub fn rate_limits(&self) -> Result<RateLimits, String> {
        let rate = |name: &str, per_second: u32, burst: u32| {
            Rate::new(per_second, burst).ok_or_else(|| {
                format!("CLACKS_{name}_RATE and CLACKS_{name}_BURST must be at least 1")
            })
        };
        Ok(RateLimits {
            send: rate("SEND", self.send_rate, self.send_burst)?,
            edit: rate("EDIT", self.edit_rate, self.edit_burst)?,
            delete: rate("DELETE", self.delete_rate, self.delete_burst)?,
            mark_read: rate("MARK_READ", self.mark_read_rate, self.mark_read_burst)?,
            typing: rate("TYPING", self.typing_rate, self.typing_burst)?,
            subscribe: rate("SUBSCRIBE", self.subscribe_rate, self.subscribe_burst)?,
            query_cost: rate("QUERY_COST", self.query_cost_rate, self.query_cost_burst)?,
            ..RateLimits::default()
        })
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
        self.rate_limits()?;
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
        if self
            .cluster_key
            .as_deref()
            .is_some_and(|key| !key.is_empty() && key.len() < 32)
        {
            return Err("CLACKS_CLUSTER_KEY must be at least 32 characters (or unset: it is then derived from the JWT secret)".into());
        }
        if self.connection_queue == 0 || self.subscription_queue == 0 {
            return Err(
                "CLACKS_CONNECTION_QUEUE and CLACKS_SUBSCRIPTION_QUEUE must be at least 1".into(),
            );
        }
        if self.connection_init_timeout == 0 || self.keepalive_interval == 0 {
            return Err("CLACKS_CONNECTION_INIT_TIMEOUT and CLACKS_KEEPALIVE_INTERVAL must be at least 1 second".into());
        }
        if self.max_bulk_members == 0 {
            return Err("CLACKS_MAX_BULK_MEMBERS must be at least 1".into());
        }
        if self.max_concurrent_searches == 0 {
            return Err("CLACKS_MAX_CONCURRENT_SEARCHES must be at least 1".into());
        }
        if self.max_message_bytes == 0 {
            return Err("CLACKS_MAX_MESSAGE_BYTES must be at least 1".into());
        }
        if let Some((old, new)) = RENAMED_VARIABLES
            .iter()
            .find(|(old, _)| std::env::var_os(old).is_some())
        {
            // Ignoring it would quietly drop a limit the operator set.
            return Err(format!(
                "{old} is no longer read: set {new} instead (see the README's limits table)"
            ));
        }
        let limits = self.graphql_limits();
        let named = [
            ("CLACKS_GRAPHQL_MAX_DOCUMENT_BYTES", limits.document_bytes),
            ("CLACKS_GRAPHQL_MAX_TOKENS", limits.tokens),
            ("CLACKS_GRAPHQL_MAX_DEPTH", limits.depth),
            (
                "CLACKS_GRAPHQL_MAX_INLINED_SELECTIONS",
                limits.inlined_selections,
            ),
            ("CLACKS_GRAPHQL_MAX_ROOT_FIELDS", limits.root_fields),
            ("CLACKS_GRAPHQL_MAX_COST", limits.cost),
            ("CLACKS_GRAPHQL_MAX_BATCH", limits.batch),
            (
                "CLACKS_GRAPHQL_MAX_DATABASE_FETCHES",
                limits.database_fetches,
            ),
        ];
        if let Some((name, _)) = named.iter().find(|(_, value)| *value == 0) {
            return Err(format!(
                "{name} must be at least 1 (0 would refuse every request)"
            ));
        }
        if self.webhook_max_attempts == 0
            || self.webhook_timeout == 0
            || self.webhook_concurrency == 0
            || self.webhook_poll_interval_ms == 0
            || self.webhook_backoff_base_ms == 0
            || self.webhook_backoff_max == 0
        {
            return Err("CLACKS_WEBHOOK_MAX_ATTEMPTS, CLACKS_WEBHOOK_TIMEOUT, CLACKS_WEBHOOK_CONCURRENCY, \
                 CLACKS_WEBHOOK_POLL_INTERVAL_MS, CLACKS_WEBHOOK_BACKOFF_BASE_MS and CLACKS_WEBHOOK_BACKOFF_MAX \
                 must be at least 1"
                .into());
        }
        if self.connection_queue_bytes == 0
            || self.max_connections == 0
            || self.max_connections_per_user == 0
            || self.max_connections_per_address == 0
        {
            return Err("CLACKS_CONNECTION_QUEUE_BYTES, CLACKS_MAX_CONNECTIONS, \
                 CLACKS_MAX_CONNECTIONS_PER_USER and CLACKS_MAX_CONNECTIONS_PER_ADDRESS must be at least 1"
                .into());
        }
        Ok(())
    }

    /// The webhook worker's settings, as configured.
    pub fn webhook_settings(&self) -> clacks_service::WebhookSettings {
        use std::time::Duration;
        clacks_service::WebhookSettings {
            max_attempts: self.webhook_max_attempts,
            max_age: Duration::from_secs(self.webhook_max_age),
            backoff_base: Duration::from_millis(self.webhook_backoff_base_ms),
            backoff_max: Duration::from_secs(self.webhook_backoff_max),
            timeout: Duration::from_secs(self.webhook_timeout),
            concurrency: self.webhook_concurrency,
            poll_interval: Duration::from_millis(self.webhook_poll_interval_ms),
            retention: Duration::from_secs(self.webhook_retention_days.saturating_mul(86_400)),
            unread_delay: Duration::from_millis(self.webhook_unread_delay_ms),
        }
    }

    /// The GraphQL request limits, as configured.
    pub fn graphql_limits(&self) -> RequestLimits {
        RequestLimits {
            document_bytes: self.graphql_max_document_bytes,
            tokens: self.graphql_max_tokens,
            depth: self.graphql_max_depth,
            inlined_selections: self.graphql_max_inlined_selections,
            aliases: self.graphql_max_aliases,
            directives: self.graphql_max_directives,
            root_fields: self.graphql_max_root_fields,
            cost: self.graphql_max_cost,
            batch: self.graphql_max_batch,
            database_fetches: self.graphql_max_database_fetches,
        }
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
    fn a_cluster_key_is_long_or_unset() {
        let mut config = Config::defaults();
        config.cluster_key = Some("short".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("CLACKS_CLUSTER_KEY")
        );
        config.cluster_key = Some("k".repeat(32));
        assert!(config.validate().is_ok());
        config.cluster_key = None;
        assert!(config.validate().is_ok(), "derived from the JWT secret");
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
    fn graphql_limits_default_once_and_refuse_zero() {
        let config = Config::defaults();
        assert_eq!(config.graphql_limits(), RequestLimits::DEFAULT);
        assert!(!config.graphql_public_introspection);
        let mut config = Config::defaults();
        config.graphql_max_cost = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("CLACKS_GRAPHQL_MAX_COST")
        );
        let parsed = Cli::parse_from([
            "clacks",
            "--graphql-max-aliases",
            "3",
            "--graphql-public-introspection",
        ]);
        assert_eq!(parsed.config.graphql_limits().aliases, 3);
        assert!(parsed.config.graphql_public_introspection);
    }

    #[test]
    fn dev_mode_is_a_loopback_management_api_without_a_token() {
        let mut config = Config::defaults();
        assert!(config.dev_mode());
        config.management_token = Some(String::new());
        assert!(config.dev_mode(), "an empty token is no token");
        config.management_token = Some("s3cret".into());
        assert!(!config.dev_mode());
        config.management_token = None;
        config.management_addr = "[::1]:7999".parse().unwrap();
        assert!(config.dev_mode());
        config.management_addr = "10.0.0.5:7999".parse().unwrap();
        assert!(!config.dev_mode());
    }

    #[test]
    fn demo_and_cors_flags() {
        let config = Cli::try_parse_from(["clacks"]).unwrap().config;
        assert!(config.demo);
        assert_eq!(config.cors_origins, clacks_web::CorsOrigins::default());
        let config = Cli::try_parse_from([
            "clacks",
            "--demo",
            "off",
            "--cors-origins",
            "https://App.example, http://localhost:3000/",
        ])
        .unwrap()
        .config;
        assert!(!config.demo);
        assert_eq!(
            config.cors_origins,
            "https://app.example,http://localhost:3000".parse().unwrap()
        );
        for bad in ["https://app.example/path", "*,https://app.example"] {
            assert!(Cli::try_parse_from(["clacks", "--cors-origins", bad]).is_err());
        }
    }

    #[test]
    fn rate_limits_come_from_the_flags_and_refuse_zero() {
        let mut config = Config::defaults();
        let defaults = config.rate_limits().unwrap();
        assert_eq!(
            defaults,
            RateLimits::default(),
            "the flags' defaults are the service's"
        );
        config.edit_rate = 7;
        assert_eq!(
            config.rate_limits().unwrap().edit,
            Rate::new(7, 20).unwrap()
        );
        config.query_cost_burst = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("CLACKS_QUERY_COST_BURST")
        );
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
