//! `lambda` (deployed as `bootstrap` on `provided.al2023`): reads the function's environment,
//! resolves secret ARNs, validates every setting (an error is reported to the Runtime API's
//! init error endpoint, naming the setting) and serves the role `LAMBDA_ROLE` names.

use remarketable_lambda::aws::Aws;
use remarketable_lambda::config::{LambdaSettings, Role};
use remarketable_lambda::kinesis::Publisher;
use remarketable_lambda::schedule::Job;
use remarketable_lambda::{http, Host};
use std::collections::HashMap;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// jemalloc, as the Azure handler (see its main.rs for the measurements behind the choice).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(false)
        // CloudWatch adds its own timestamps.
        .without_time()
        .init();
    // rustls on ring for every HTTPS client (AWS APIs, the init error report), as the
    // database connections.
    remarketable_core::db::tls::install_crypto_provider();
    let env: HashMap<String, String> = std::env::vars().collect();
    let host = match start(env).await {
        Ok(host) => host,
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!(error = %message, "cannot start");
            report_init_error(&message).await;
            return Err(message.into());
        }
    };
    tracing::info!(settings = ?host.0.settings, "lambda ready");
    let (host, publisher) = host;
    let host = Arc::new(host);
    match host.settings.role {
        Role::Http => {
            let router = http::app(host.api.clone(), publisher);
            lambda_http::run(lambda_http::service_fn(move |request| {
                http::serve(router.clone(), request)
            }))
            .await
        }
        Role::Ingest => {
            lambda_runtime::run(lambda_runtime::service_fn(move |event| {
                let host = host.clone();
                async move { host.ingest(event).await }
            }))
            .await
        }
        Role::Rollup | Role::Maintenance => {
            let job = if host.settings.role == Role::Rollup {
                Job::Rollup
            } else {
                Job::Maintenance
            };
            lambda_runtime::run(lambda_runtime::service_fn(move |event| {
                let host = host.clone();
                async move { host.scheduled(job, event).await }
            }))
            .await
        }
    }
}

async fn start(env: HashMap<String, String>) -> anyhow::Result<(Host, Option<Arc<Publisher>>)> {
    // Only built when a secret ARN or collect's stream needs it (it reads no file and makes no
    // connection until then).
    let needs_aws = remarketable_lambda::config::SECRET_SETTINGS
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| v.trim().starts_with("arn:")))
        || env.contains_key("COLLECT_KINESIS_STREAM");
    let aws = if needs_aws {
        Some(Aws::from_map(&env)?)
    } else {
        None
    };
    let settings = LambdaSettings::load(env, aws.as_ref()).await?;
    let publisher = match (&settings.collect_stream, settings.role, aws) {
        (Some(stream), Role::Http, Some(aws)) => Some(Arc::new(Publisher::new(aws, stream))),
        _ => None,
    };
    Ok((Host::new(settings), publisher))
}

/// `POST /2018-06-01/runtime/init/error`, so Lambda shows why the function could not start
/// (the message names the setting, never its value).
async fn report_init_error(message: &str) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({"errorType": "invalid_settings", "errorMessage": message});
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "invalid_settings")
        .body(body.to_string())
        .send()
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not report the init error");
    }
}
