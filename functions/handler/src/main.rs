//! `handler`: the custom handler executable started by the Azure Functions host.
//!
//! Reads the app settings from the environment, validates them (failing fast with a message
//! that names the bad setting), and serves [`remarketable_handler::app`] on
//! `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`. The database is connected lazily, so the host's
//! readiness probe is answered at once.

use anyhow::Context;
use remarketable_core::Settings;
use remarketable_handler::serve::serve;
use remarketable_handler::{app, AppState};
use std::io::IsTerminal;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// jemalloc: validation allocates per event, and glibc's malloc/free took 18 % of the handler's
/// time under the ingest benchmark (musl's allocator, for static builds, is slower still).
/// mimalloc was tried too: it hands freed pages back to the kernel within milliseconds, and
/// zeroing them again on the next batch (`clear_page_erms`) took a third of the handler's time.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        // The Functions host reads stdout through a pipe: no colour codes there.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let settings = Settings::from_env().context("invalid app settings")?;
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .context("FUNCTIONS_CUSTOMHANDLER_PORT is not set (the Functions host sets it)")?
        .parse()
        .context("FUNCTIONS_CUSTOMHANDLER_PORT is not a port number")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    tracing::info!(port, settings = ?settings, "handler listening");
    let header_read_timeout = settings.http_header_read_timeout;
    let state = Arc::new(AppState::new(settings));
    serve(
        listener,
        app(state.clone()),
        header_read_timeout,
        shutdown(),
    )
    .await;
    remarketable_api::collect::flush_usage(&state.api, true).await;
    Ok(())
}

/// Stops accepting on SIGTERM (host shutdown) or Ctrl-C; requests in flight finish first.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
