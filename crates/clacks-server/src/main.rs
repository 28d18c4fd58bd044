use std::process::ExitCode;

use clacks_server::{Cli, Command, StartupError};
use clap::Parser;
use tokio_util::sync::CancellationToken;

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
    clacks_server::telemetry::init_logging(config.log_format, &config.log_level);
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
