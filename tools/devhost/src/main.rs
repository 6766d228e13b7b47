//! `devhost`: see the crate documentation (`cargo doc -p remarketable-devhost`) and README.md.

use clap::Parser;
use remarketable_devhost::app::{FUNCTION_KEY_SETTING, MASTER_KEY_SETTING};
use remarketable_devhost::envelope::Encoding;
use remarketable_devhost::{Devhost, Options};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A local stand-in for the Azure Functions host.
#[derive(Debug, Parser)]
#[command(name = "devhost", version)]
struct Cli {
    /// Folder holding host.json, local.settings.json and functions/*/function.json.
    #[arg(long, default_value = ".")]
    app_root: PathBuf,
    /// Handler executable (default: host.json customHandler.description.defaultExecutablePath).
    #[arg(long)]
    handler: Option<PathBuf>,
    /// Port of the HTTP front on 127.0.0.1.
    #[arg(long, default_value_t = 7071)]
    port: u16,
    /// Hub logs, checkpoints and timer status (default: <app root>/.local/devhost).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Partitions of each hub (fixed once a hub exists on disk).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Send Metadata arrays and Data.events as JSON, not as strings holding JSON.
    #[arg(long)]
    plain_encoding: bool,
    /// KEY=VALUE replacing a value of local.settings.json (repeatable), e.g. the
    /// DATABASE_URL of a cluster on another port.
    #[arg(long = "setting", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEVHOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let mut options = Options::new(cli.app_root);
    options.handler = cli.handler;
    options.port = cli.port;
    options.state_dir = cli.state_dir;
    options.partitions = cli.partitions;
    options.encoding = if cli.plain_encoding {
        Encoding::Plain
    } else {
        Encoding::Double
    };
    options.summary_every = Some(Duration::from_secs(5));
    options.setting_overrides = cli.settings.into_iter().collect();
    // The keys may come from the environment so they need not sit in local.settings.json.
    options.extra_settings = [FUNCTION_KEY_SETTING, MASTER_KEY_SETTING]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect::<BTreeMap<_, _>>();
    let host = Devhost::start(options).await?;
    wait_for_signal().await;
    println!("devhost stopping");
    host.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
