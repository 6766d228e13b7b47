//! Starting the real `lambda` binary behind its own Runtime API stand-in.

use remarketable_devhost::lambda_api::{LambdaApi, Outcome};
use remarketable_tests::RETENTION_DAYS;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// One `lambda` process behind its own Runtime API stand-in.
pub struct Function {
    pub api: LambdaApi,
    pub child: tokio::process::Child,
}

impl Function {
    pub async fn start(role: &str, database_url: &str, extra: &[(&str, &str)]) -> Function {
        let api = LambdaApi::start()
            .await
            .expect("start the Runtime API stand-in");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lambda"));
        command
            .env("AWS_LAMBDA_RUNTIME_API", api.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("rmk-{role}"))
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/02/[$LATEST]local")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/rmk-{role}"),
            )
            .env("LAMBDA_ROLE", role)
            .env("DATABASE_URL", database_url)
            .env("DB_POOL_SIZE", "2")
            .env("DB_CONNECT_TIMEOUT_SECONDS", "2")
            .env("EVENT_RETENTION_DAYS", RETENTION_DAYS.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("start the lambda binary");
        Function { api, child }
    }

    pub async fn invoke(&self, payload: &Value) -> Outcome {
        self.api
            .invoke(serde_json::to_vec(payload).unwrap(), TIMEOUT)
            .await
            .expect("the function answers")
    }

    /// The response JSON; panics on an error outcome.
    pub async fn ok(&self, payload: &Value) -> Value {
        match self.invoke(payload).await {
            Outcome::Response(body) => serde_json::from_slice(&body).unwrap(),
            other => panic!("invocation failed: {other:?}"),
        }
    }
}
