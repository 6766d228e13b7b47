//! The custom handler process: started with the app settings as environment, probed on `GET /`
//! until it answers, restarted with a backoff when it dies, and called over HTTP.

use crate::status::Stats;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long the handler has to answer its first `GET /`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start the handler.
#[derive(Debug, Clone)]
pub struct HandlerSpec {
    pub executable: PathBuf,
    pub arguments: Vec<String>,
    pub working_dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// Where the handler listens, once it is ready. `generation` counts starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerState {
    Starting,
    Ready { base: String, generation: u64 },
    Stopped,
}

/// An HTTP answer of the handler.
#[derive(Debug)]
pub struct HandlerResponse {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

/// Why a call to the handler did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection broke or was refused: the handler crashed or is restarting.
    #[error("handler unavailable: {reason}")]
    CutOff { reason: String, generation: u64 },
    /// functionTimeout elapsed.
    #[error("handler did not answer within the function timeout")]
    Timeout,
    #[error("devhost is shutting down")]
    Shutdown,
}

/// The running handler, shared by every trigger.
pub struct Handler {
    state: watch::Receiver<HandlerState>,
    client: reqwest::Client,
    timeout: Option<Duration>,
    shutdown: CancellationToken,
}

impl Handler {
    /// Starts the supervisor task; the handler becomes ready in the background.
    pub fn start(
        spec: HandlerSpec,
        timeout: Option<Duration>,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) -> (Arc<Handler>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(HandlerState::Starting);
        // Redirects are the client's to follow: a forwarded answer passes through as it is.
        let client = crate::http_client_builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let handler = Arc::new(Handler {
            state: rx,
            client: client.clone(),
            timeout,
            shutdown: shutdown.clone(),
        });
        let task = tokio::spawn(supervise(spec, client, tx, stats, shutdown));
        (handler, task)
    }

    /// Waits until the handler is ready; `None` on shutdown.
    pub async fn ready(&self) -> Option<(String, u64)> {
        let mut rx = self.state.clone();
        loop {
            match &*rx.borrow_and_update() {
                HandlerState::Ready { base, generation } => {
                    return Some((base.clone(), *generation))
                }
                HandlerState::Stopped => return None,
                HandlerState::Starting => {}
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                changed = rx.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// After a cut-off call: waits (bounded) until a handler other than `generation` is ready,
    /// so callers do not spin on a process that is already gone.
    pub async fn wait_replaced(&self, generation: u64, limit: Duration) {
        let wait = async {
            while let Some((_, current)) = self.ready().await {
                if current != generation {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    pub fn is_ready(&self) -> bool {
        matches!(&*self.state.borrow(), HandlerState::Ready { .. })
    }

    /// Sends one request to the handler once it is ready.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: reqwest::header::HeaderMap,
        body: Bytes,
    ) -> Result<HandlerResponse, CallError> {
        let (base, generation) = self.ready().await.ok_or(CallError::Shutdown)?;
        let mut request = self
            .client
            .request(method, format!("{base}{path_and_query}"))
            .headers(headers)
            .body(body);
        if let Some(t) = self.timeout {
            request = request.timeout(t);
        }
        let send = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(HandlerResponse {
                status,
                headers,
                body,
            })
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(CallError::Shutdown),
            result = send => result.map_err(|e| if e.is_timeout() {
                CallError::Timeout
            } else {
                CallError::CutOff { reason: error_chain(&e), generation }
            }),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Starts, watches and restarts the handler until shutdown.
async fn supervise(
    spec: HandlerSpec,
    client: reqwest::Client,
    state: watch::Sender<HandlerState>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut generation = 0u64;
    let mut backoff = Duration::from_millis(200);
    loop {
        generation += 1;
        let started = Instant::now();
        match run_once(&spec, &client, &state, generation, &shutdown).await {
            Exit::Shutdown => break,
            Exit::Died(reason) => {
                state.send_replace(HandlerState::Starting);
                stats.handler_restarted();
                // A handler that ran a while gets restarted quickly; one that keeps dying
                // at start waits longer each time.
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(200);
                }
                tracing::warn!(%reason, restart_in_ms = backoff.as_millis() as u64, "handler stopped; restarting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    state.send_replace(HandlerState::Stopped);
}

enum Exit {
    Shutdown,
    Died(String),
}

async fn run_once(
    spec: &HandlerSpec,
    client: &reqwest::Client,
    state: &watch::Sender<HandlerState>,
    generation: u64,
    shutdown: &CancellationToken,
) -> Exit {
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => return Exit::Died(format!("no free port: {e}")),
    };
    let mut child = match spawn(spec, port) {
        Ok(c) => c,
        Err(e) => return Exit::Died(format!("cannot start {}: {e}", spec.executable.display())),
    };
    let base = format!("http://127.0.0.1:{port}");
    tracing::info!(pid = child.id(), port, "handler started");
    // Decide inside select!, act after it: the futures borrow the child until it ends.
    let phase = tokio::select! {
        _ = shutdown.cancelled() => Phase::Shutdown,
        status = child.wait() => Phase::Exited(describe(status)),
        ready = wait_ready(client, &base) => Phase::Probed(ready),
    };
    match phase {
        Phase::Shutdown => return stop(&mut child).await,
        Phase::Exited(how) => return Exit::Died(format!("exited before ready: {how}")),
        Phase::Probed(false) => {
            let _ = child.kill().await;
            return Exit::Died(format!(
                "no answer on GET / within {} s",
                READY_TIMEOUT.as_secs()
            ));
        }
        Phase::Probed(true) => {}
    }
    tracing::info!(port, "handler ready");
    state.send_replace(HandlerState::Ready { base, generation });
    let phase = tokio::select! {
        _ = shutdown.cancelled() => Phase::Shutdown,
        status = child.wait() => Phase::Exited(describe(status)),
    };
    match phase {
        Phase::Exited(how) => Exit::Died(format!("exited: {how}")),
        _ => stop(&mut child).await,
    }
}

enum Phase {
    Shutdown,
    Exited(String),
    Probed(bool),
}

/// How long the handler gets to finish after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// SIGTERM first, so the handler can close its pool; SIGKILL if it does not exit in time.
async fn stop(child: &mut Child) -> Exit {
    let pid = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return Exit::Shutdown;
        }
        tracing::warn!("handler ignored SIGTERM; killing it");
    }
    let _ = child.kill().await;
    Exit::Shutdown
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

fn spawn(spec: &HandlerSpec, port: u16) -> std::io::Result<Child> {
    let mut command = Command::new(&spec.executable);
    command
        .args(&spec.arguments)
        .current_dir(&spec.working_dir)
        .envs(&spec.env)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, "handler"));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, "handler!"));
    }
    Ok(child)
}

/// Shows the handler's output lines with a prefix.
async fn pump(stream: impl AsyncRead + Unpin, prefix: &'static str) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("[{prefix}] {line}");
    }
}

/// Polls `GET /` until any HTTP answer (404 counts) or the timeout.
async fn wait_ready(client: &reqwest::Client, base: &str) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        let probe = client
            .get(format!("{base}/"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if probe.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A port nobody listens on right now (the handler binds it a moment later).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
