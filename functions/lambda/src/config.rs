//! The Lambda host's settings: the core's [`Settings`] (the same names and validation as under
//! Azure), read after secret ARNs are resolved, plus the few that only this host has.

use crate::aws::{Aws, AwsError};
use remarketable_core::config::ConfigError;
use remarketable_core::Settings;
use std::collections::HashMap;
use std::fmt;

/// What one deployed function does (`LAMBDA_ROLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Kafka (MSK or self-managed) and Kinesis event source mappings.
    Ingest,
    /// API Gateway HTTP API (payload v2) and Function URLs.
    Http,
    /// EventBridge Scheduler or rule: the rollups.
    Rollup,
    /// EventBridge Scheduler or rule: partitions, ledger, retention.
    Maintenance,
}

impl Role {
    pub const NAMES: &'static str = "ingest, http, rollup or maintenance";

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s.trim() {
            "ingest" => Role::Ingest,
            "http" => Role::Http,
            "rollup" => Role::Rollup,
            "maintenance" => Role::Maintenance,
            _ => return None,
        })
    }
}

/// Settings of the Lambda host.
#[derive(Clone)]
pub struct LambdaSettings {
    pub role: Role,
    pub core: Settings,
    /// `KAFKA_SOURCE_NAME`: the name of a self-managed Kafka cluster in stream positions (MSK
    /// events name their cluster by ARN). Required to ingest `aws:SelfManagedKafka` events.
    pub kafka_source_name: Option<String>,
    /// `REPORT_BATCH_ITEM_FAILURES` (`true`/`false`, default false): set it to true exactly
    /// when the event source mapping has `FunctionResponseTypes: ["ReportBatchItemFailures"]`.
    /// Then a partition that could not be written is reported as a batch item failure (from
    /// its first record) instead of failing the whole invocation.
    pub report_batch_item_failures: bool,
    /// `COLLECT_KINESIS_STREAM`: the stream (name or ARN) `collect` publishes to. Without it,
    /// the HTTP role serves no collect route (404).
    pub collect_stream: Option<String>,
}

impl fmt::Debug for LambdaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaSettings")
            .field("role", &self.role)
            .field("core", &self.core)
            .field("kafka_source_name", &self.kafka_source_name)
            .field(
                "report_batch_item_failures",
                &self.report_batch_item_failures,
            )
            .field("collect_stream", &self.collect_stream)
            .finish()
    }
}

/// A setting that stops the function from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("setting {name}: the secret {arn} could not be read: {cause}")]
    Secret {
        name: &'static str,
        arn: String,
        cause: AwsError,
    },
    #[error("setting {name}: {why}")]
    Invalid { name: &'static str, why: String },
}

/// Settings that may hold a Secrets Manager secret ARN or an SSM parameter ARN instead of
/// their value.
pub const SECRET_SETTINGS: [&str; 2] = ["DATABASE_URL", "SHARE_TOKEN_SECRET"];

/// Whether a setting's value is an ARN to resolve, and of which service.
fn secret_service(value: &str) -> Option<&'static str> {
    let mut parts = value.trim().splitn(6, ':');
    let (arn, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    if arn != "arn" {
        return None;
    }
    match service {
        "secretsmanager" => Some("secretsmanager"),
        "ssm" => Some("ssm"),
        _ => None,
    }
}

impl LambdaSettings {
    /// Resolves secret ARNs (once, at cold start), then reads and validates every setting.
    /// `aws` is needed only when a secret setting holds an ARN or collect has a stream.
    pub async fn load(
        mut map: HashMap<String, String>,
        aws: Option<&Aws>,
    ) -> Result<LambdaSettings, StartError> {
        let role_text = map
            .get("LAMBDA_ROLE")
            .ok_or(ConfigError::Missing("LAMBDA_ROLE"))?;
        let role = Role::parse(role_text).ok_or_else(|| StartError::Invalid {
            name: "LAMBDA_ROLE",
            why: format!("must be one of {}", Role::NAMES),
        })?;
        for name in SECRET_SETTINGS {
            let Some(value) = map.get(name).cloned() else {
                continue;
            };
            let Some(service) = secret_service(&value) else {
                continue;
            };
            let arn = value.trim().to_string();
            let aws = aws.ok_or_else(|| StartError::Invalid {
                name,
                why: "holds an AWS ARN, but AWS_REGION and the function's credentials \
                      (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) are not set"
                    .into(),
            })?;
            let resolved = resolve(aws, service, &arn)
                .await
                .map_err(|cause| StartError::Secret { name, arn, cause })?;
            map.insert(name.to_string(), resolved);
        }
        let core = Settings::from_map(&map)?;
        let text = |name: &str| {
            map.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let report_batch_item_failures = match text("REPORT_BATCH_ITEM_FAILURES").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(StartError::Invalid {
                    name: "REPORT_BATCH_ITEM_FAILURES",
                    why: "must be true or false".into(),
                })
            }
        };
        Ok(LambdaSettings {
            role,
            core,
            kafka_source_name: text("KAFKA_SOURCE_NAME"),
            report_batch_item_failures,
            collect_stream: text("COLLECT_KINESIS_STREAM"),
        })
    }
}

/// A secret's text: Secrets Manager `SecretString`, or an SSM parameter's (decrypted) value.
async fn resolve(aws: &Aws, service: &str, arn: &str) -> Result<String, AwsError> {
    let (target, body, pointer) = if service == "secretsmanager" {
        (
            "secretsmanager.GetSecretValue",
            serde_json::json!({"SecretId": arn}),
            "/SecretString",
        )
    } else {
        (
            "AmazonSSM.GetParameter",
            serde_json::json!({"Name": arn, "WithDecryption": true}),
            "/Parameter/Value",
        )
    };
    let answer = aws.call(service, target, &body).await?;
    answer
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| AwsError::Service {
            target,
            status: 200,
            kind: "NoText".into(),
            message: format!("the answer has no {pointer} (a binary secret is not supported)"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_secret_arns() {
        assert_eq!(
            secret_service("arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"),
            Some("secretsmanager")
        );
        assert_eq!(
            secret_service("arn:aws:ssm:eu-west-1:123456789012:parameter/rmk/db"),
            Some("ssm")
        );
        assert_eq!(secret_service("postgres://u:p@h/db"), None);
        assert_eq!(secret_service("arn:aws:s3:::bucket"), None);
    }

    fn base() -> HashMap<String, String> {
        [
            ("LAMBDA_ROLE", "ingest"),
            ("DATABASE_URL", "postgres://u:p@127.0.0.1:5432/db"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[tokio::test]
    async fn names_the_bad_setting() {
        let mut map = base();
        map.insert("LAMBDA_ROLE".into(), "web".into());
        let e = LambdaSettings::load(map, None).await.unwrap_err();
        assert!(e.to_string().contains("LAMBDA_ROLE"), "{e}");

        let mut map = base();
        map.insert("REPORT_BATCH_ITEM_FAILURES".into(), "yes".into());
        let e = LambdaSettings::load(map, None).await.unwrap_err();
        assert!(e.to_string().contains("REPORT_BATCH_ITEM_FAILURES"), "{e}");

        // The core's validation, as under Azure.
        let mut map = base();
        map.insert("DB_POOL_SIZE".into(), "0".into());
        let e = LambdaSettings::load(map, None).await.unwrap_err();
        assert!(e.to_string().contains("DB_POOL_SIZE"), "{e}");

        let mut map = base();
        map.insert(
            "DATABASE_URL".into(),
            "arn:aws:secretsmanager:eu-west-1:1:secret:db".into(),
        );
        let e = LambdaSettings::load(map, None).await.unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL"), "{e}");
    }

    #[tokio::test]
    async fn reads_the_lambda_settings() {
        let mut map = base();
        map.insert("REPORT_BATCH_ITEM_FAILURES".into(), "true".into());
        map.insert("KAFKA_SOURCE_NAME".into(), "onprem".into());
        let s = LambdaSettings::load(map, None).await.unwrap();
        assert_eq!(s.role, Role::Ingest);
        assert!(s.report_batch_item_failures);
        assert_eq!(s.kafka_source_name.as_deref(), Some("onprem"));
        assert_eq!(s.collect_stream, None);
    }
}
