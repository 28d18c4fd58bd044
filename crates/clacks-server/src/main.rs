use std::process::ExitCode;

use clacks_server::{Cli, Command, StartupError};
use clacks_service::TokenRequest;
use clap::Parser;
use tokio_util::sync::CancellationToken;

// jemalloc instead of the system allocator: every connection and
// subscription allocates a little in bursts (a reconnect storm allocates
// and frees gigabytes' worth of transient state), and glibc's malloc keeps
// the freed, fragmented pages resident for good. jemalloc hands them back
// within about a second (background purging, below): 24 -> 19 KiB of
// resident memory per subscribed connection at 10,000 connections
// (BENCHMARKS.md, "many channels").
#[cfg(all(unix, not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Purge freed pages after one second from a background thread (the
/// defaults wait ten and purge only when allocating). Overridable at run
/// time with the `_RJEM_MALLOC_CONF` environment variable.
#[cfg(all(unix, not(target_env = "msvc")))]
#[allow(non_upper_case_globals, unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

fn report(error: &StartupError) -> ExitCode {
    match error {
        StartupError::Config(message) => {
            eprintln!("clacks: configuration error: {message}");
            ExitCode::from(2)
        }
        StartupError::Invalid(message) => {
            eprintln!("clacks: {message}");
            ExitCode::from(2)
        }
        StartupError::Other(error) => {
            eprintln!("clacks: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config;
    // `clacks token` prints the token alone on stdout.
    let logs_to_stderr = matches!(cli.command, Some(Command::Token(_)));
    clacks_server::telemetry::init_logging(config.log_format, &config.log_level, logs_to_stderr);
    if let Err(message) = config.validate() {
        return report(&StartupError::Config(message));
    }

    let interrupted = CancellationToken::new();
    let on_signal = interrupted.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });

    let store = match clacks_server::connect_store(&config, &interrupted).await {
        Ok(store) => store,
        Err(e) => return report(&e),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => match store.migrate().await {
            Ok(()) => {
                tracing::info!(database = store.backend().name(), "migrations applied");
                store.close().await;
                ExitCode::SUCCESS
            }
            Err(e) => report(&StartupError::Other(anyhow::anyhow!(
                "migration failed: {e}"
            ))),
        },
        Command::Token(args) => {
            let request = TokenRequest {
                name: args.name,
                extra_claims: args.claims.into_iter().collect(),
                ttl: args.ttl,
            };
            let minted = clacks_server::mint_token(&config, &store, args.uid, request).await;
            store.close().await;
            match minted {
                Ok(minted) => {
                    println!("{}", minted.token);
                    ExitCode::SUCCESS
                }
                Err(e) => report(&e),
            }
        }
        Command::Serve => {
            let server = match clacks_server::start(&config, store).await {
                Ok(server) => server,
                Err(e) => return report(&e),
            };
            let stop = server.shutdown_token();
            tokio::select! {
                () = interrupted.cancelled() => {}
                () = stop.cancelled() => {}
            }
            server.shutdown().await;
            ExitCode::SUCCESS
        }
    }
}
