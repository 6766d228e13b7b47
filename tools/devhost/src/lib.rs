//! `devhost`: a local stand-in for the Azure Functions host, driven by the same `host.json`,
//! `functions/*/function.json` and `local.settings.json` as the deployed app.
//!
//! It starts the custom handler (all Values as environment, `FUNCTIONS_CUSTOMHANDLER_PORT`),
//! waits for `GET /` to answer, restarts it when it dies, and drives it like the host does:
//!
//! - **HTTP** ([`front`]): routes under `extensions.http.routePrefix`, `methods`, `authLevel`
//!   (keys in the settings [`app::FUNCTION_KEY_SETTING`] and [`app::MASTER_KEY_SETTING`]);
//!   forwarding only for functions whose bindings are exactly httpTrigger + http out, envelope
//!   mode otherwise, with Event Hubs outputs appended to the local hubs.
//! - **Timers** ([`timer`]): six-field NCRONTAB in UTC ([`ncrontab`]), status kept on disk so a
//!   run missed while devhost was down fires at start with `IsPastDue`.
//! - **Event Hubs** ([`hub`], [`consumer`]): durable append-only logs per partition (fsync before
//!   a producer is acknowledged), one consumer per function and partition, checkpoints written
//!   atomically and moved exactly when the real host moves them (see [`consumer`]).
//!
//! Admin endpoints, beside the function routes:
//!
//! - `POST /admin/hubs/{hub}/events[?partitionKey=K | ?partition=N]`: a JSON array (an object
//!   element is sent as its compact JSON text, a string element as the string) or NDJSON
//!   (`Content-Type: application/x-ndjson`, each non-blank line verbatim). Answers
//!   `202 {"accepted": n}` once durable; `400`/`404`/`413` with `{"error": {"code", "message"}}`.
//! - `GET /admin/status`: `{"handler": {ready, restarts}, "hubs": {hub: {"partitions": [{partition,
//!   lastEnqueuedSequence, consumers: {function: {consumerGroup, lastCheckpointedSequence, lag,
//!   retrying}}}]}}, "functions": {name: {invocations, failures, lastError}}}`.
//!
//! State (hub logs, checkpoints, timer status) lives under `--state-dir`, by default
//! `<app root>/.local/devhost`.

pub mod app;
pub mod consumer;
pub mod ctx;
pub mod envelope;
pub mod front;
pub mod handler;
pub mod host;
pub mod hub;
pub mod invoke;
pub mod lambda_api;
pub mod ncrontab;
pub mod route;
pub mod state;
pub mod status;
pub mod timer;
pub mod timespan;

pub use host::{Devhost, Options};

/// A builder of HTTP clients for devhost's loopback peers (handlers, tests). It first makes
/// rustls on ring the process's crypto provider: in a workspace build reqwest also gets the
/// Lambda host's `rustls-no-provider` feature, under which no client can be built without one.
/// (devhost knows nothing of the core, which does the same for the product's programs in
/// `db::tls::install_crypto_provider`.)
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
