//! Wiring: load the app, open the hubs, start the handler, the HTTP front, the consumers and
//! the timers; stop them all on shutdown.

use crate::app::{App, FunctionDef, Trigger};
use crate::ctx::{status_json, Ctx};
use crate::envelope::Encoding;
use crate::handler::{Handler, HandlerSpec};
use crate::hub::Hub;
use crate::status::Stats;
use anyhow::Context;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the binary's flags (or a test) ask for.
#[derive(Debug, Clone)]
pub struct Options {
    pub app_root: PathBuf,
    /// Overrides host.json `defaultExecutablePath`.
    pub handler: Option<PathBuf>,
    /// 0 picks a free port.
    pub port: u16,
    /// Defaults to `<app root>/.local/devhost`.
    pub state_dir: Option<PathBuf>,
    pub partitions: u32,
    pub encoding: Encoding,
    /// Settings used when local.settings.json does not define them (e.g. the devhost keys).
    pub extra_settings: BTreeMap<String, String>,
    /// Settings that replace local.settings.json's values (`--setting KEY=VALUE`).
    pub setting_overrides: BTreeMap<String, String>,
    /// How often the summary line may print; `None` never.
    pub summary_every: Option<Duration>,
}

impl Options {
    pub fn new(app_root: impl Into<PathBuf>) -> Options {
        Options {
            app_root: app_root.into(),
            handler: None,
            port: 7071,
            state_dir: None,
            partitions: 4,
            encoding: Encoding::Double,
            extra_settings: BTreeMap::new(),
            setting_overrides: BTreeMap::new(),
            summary_every: Some(Duration::from_secs(5)),
        }
    }
}

/// A running devhost.
pub struct Devhost {
    ctx: Arc<Ctx>,
    tasks: Vec<JoinHandle<()>>,
}

impl Devhost {
    /// Starts everything; the handler becomes ready in the background.
    pub async fn start(mut options: Options) -> anyhow::Result<Devhost> {
        // Absolute paths: the handler runs in the app root, where relative ones would move.
        options.app_root = std::path::absolute(&options.app_root)?;
        options.handler = options.handler.map(std::path::absolute).transpose()?;
        let app = App::load(
            &options.app_root,
            &options.extra_settings,
            &options.setting_overrides,
        )
        .with_context(|| format!("loading the app at {}", options.app_root.display()))?;
        app.check_keys()?;
        let state_dir = options
            .state_dir
            .clone()
            .unwrap_or_else(|| app.root.join(".local/devhost"));
        let spec = handler_spec(&app, options.handler.as_deref());
        anyhow::ensure!(
            spec.executable.is_file(),
            "handler executable {} not found: build it, or pass --handler PATH",
            spec.executable.display()
        );
        let hubs = open_hubs(&app, &state_dir, options.partitions)?;
        let shutdown = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        for f in &app.functions {
            stats.register_function(&f.name);
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{}", options.port))?;
        let addr = listener.local_addr()?;
        let (handler, handler_task) = Handler::start(
            spec,
            app.host.function_timeout,
            stats.clone(),
            shutdown.clone(),
        );
        let mut http_functions: Vec<FunctionDef> = app
            .functions
            .iter()
            .filter(|f| matches!(f.trigger, Trigger::Http { .. }))
            .cloned()
            .collect();
        http_functions.sort_by_key(|f| match &f.trigger {
            Trigger::Http { route, .. } => route.precedence(),
            _ => (usize::MAX, usize::MAX),
        });
        let ctx = Arc::new(Ctx {
            namespace: namespace(&app),
            app,
            hubs,
            handler,
            stats,
            state_dir,
            encoding: options.encoding,
            addr,
            http_functions,
            shutdown: shutdown.clone(),
        });
        let mut tasks = vec![handler_task, serve(ctx.clone(), listener)];
        tasks.extend(start_triggers(&ctx));
        if let Some(every) = options.summary_every {
            tasks.push(tokio::spawn(summaries(ctx.clone(), every)));
        }
        announce(&ctx);
        Ok(Devhost { ctx, tasks })
    }

    pub fn addr(&self) -> SocketAddr {
        self.ctx.addr
    }

    pub fn status(&self) -> Value {
        status_json(&self.ctx)
    }

    /// Waits until the handler answers (for tests and scripts).
    pub async fn handler_ready(&self) -> bool {
        self.ctx.handler.ready().await.is_some()
    }

    /// Stops taking requests, stops consumers without checkpointing what is in flight, stops
    /// the handler.
    pub async fn shutdown(self) {
        self.ctx.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn open_hubs(
    app: &App,
    state_dir: &std::path::Path,
    partitions: u32,
) -> anyhow::Result<BTreeMap<String, Arc<Hub>>> {
    anyhow::ensure!(partitions > 0, "--partitions must be at least 1");
    let mut hubs = BTreeMap::new();
    for name in app.hub_names() {
        let dir = state_dir.join("hubs").join(&name);
        let hub = Hub::open(&dir, &name, partitions)?;
        hubs.insert(name, Arc::new(hub));
    }
    Ok(hubs)
}

fn handler_spec(app: &App, executable: Option<&std::path::Path>) -> HandlerSpec {
    let executable = executable.map_or_else(|| app.root.join(&app.host.executable), PathBuf::from);
    HandlerSpec {
        executable,
        arguments: app.host.arguments.clone(),
        working_dir: app.root.join(&app.host.working_directory),
        env: app.values.clone(),
    }
}

/// The namespace shown in `PartitionContext`: the host of the connection's `Endpoint`.
fn namespace(app: &App) -> String {
    app.functions
        .iter()
        .find_map(|f| match &f.trigger {
            Trigger::EventHub { connection, .. } => app.values.get(connection),
            _ => None,
        })
        .and_then(|c| {
            c.split(';')
                .find_map(|part| part.trim().strip_prefix("Endpoint="))
        })
        .map(|e| {
            e.trim_start_matches("sb://")
                .trim_end_matches('/')
                .to_string()
        })
        .unwrap_or_else(|| "localhost".to_string())
}

fn serve(ctx: Arc<Ctx>, listener: tokio::net::TcpListener) -> JoinHandle<()> {
    let shutdown = ctx.shutdown.clone();
    let router = crate::front::app(ctx);
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP front stopped");
        }
    })
}

fn start_triggers(ctx: &Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for function in &ctx.app.functions {
        let function = Arc::new(function.clone());
        match &function.trigger {
            Trigger::EventHub { hub, .. } => {
                let Some(hub) = ctx.hubs.get(hub) else {
                    continue;
                };
                for partition in &hub.partitions {
                    tasks.push(tokio::spawn(crate::consumer::run(
                        ctx.clone(),
                        function.clone(),
                        partition.clone(),
                    )));
                }
            }
            Trigger::Timer { .. } => tasks.push(tokio::spawn(crate::timer::run(
                ctx.clone(),
                function.clone(),
            ))),
            Trigger::Http { .. } => {}
        }
    }
    tasks
}

fn announce(ctx: &Ctx) {
    println!("devhost listening on http://{}", ctx.addr);
    for f in &ctx.app.functions {
        let what = match &f.trigger {
            Trigger::Http {
                route,
                methods,
                auth,
                ..
            } => {
                let prefix = &ctx.app.host.route_prefix;
                let methods = if methods.is_empty() {
                    "ANY".to_string()
                } else {
                    methods.join(",")
                };
                let mode = if f.forwarded { "forwarded" } else { "envelope" };
                format!(
                    "http {methods} /{prefix}/{} ({mode}, auth {auth:?})",
                    route.as_str()
                )
            }
            Trigger::Timer { schedule, .. } => format!("timer {schedule} (UTC)"),
            Trigger::EventHub {
                hub,
                consumer_group,
                ..
            } => format!("eventHub {hub} ({consumer_group})"),
        };
        println!("  {}: {what}", f.name);
    }
}

/// One line: events and lag per hub, invocations and failures per function.
fn summary_line(ctx: &Ctx) -> String {
    let status = status_json(ctx);
    let mut parts = Vec::new();
    for (name, hub) in status["hubs"].as_object().into_iter().flatten() {
        let mut events = 0;
        let mut lag = 0;
        for p in hub["partitions"].as_array().into_iter().flatten() {
            events += p["lastEnqueuedSequence"].as_i64().map_or(0, |s| s + 1);
            for c in p["consumers"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, c)| c)
            {
                lag += c["lag"].as_i64().unwrap_or(0);
            }
        }
        parts.push(format!("{name}: {events} events, lag {lag}"));
    }
    for (name, f) in status["functions"].as_object().into_iter().flatten() {
        parts.push(format!(
            "{name}: {} runs, {} failed",
            f["invocations"], f["failures"]
        ));
    }
    parts.push(format!(
        "handler restarts {}",
        status["handler"]["restarts"]
    ));
    parts.join(" | ")
}

async fn summaries(ctx: Arc<Ctx>, every: Duration) {
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let line = summary_line(&ctx);
        if line != last {
            println!("[devhost] {line}");
            last = line;
        }
    }
}
