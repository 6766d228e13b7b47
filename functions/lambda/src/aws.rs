//! The few AWS APIs this host calls (Kinesis `PutRecords`, Secrets Manager `GetSecretValue`,
//! SSM `GetParameter`), all JSON 1.1 protocol POSTs signed with Signature Version 4.
//!
//! A small client instead of the AWS SDK: three calls do not justify its build time and cold
//! start. Credentials come from the environment Lambda gives every function
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the region from
//! `AWS_REGION`; `AWS_ENDPOINT_URL` (the SDKs' name for it) points every service at one
//! endpoint, such as a local emulator in tests.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// Credentials of the function's execution role. The secret never leaves this type except to
/// the HMAC, and is not printed.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(access_key_id: &str, secret: &str, session_token: Option<&str>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret.into(),
            session_token: session_token.map(Into::into),
        }
    }
}

/// Why an AWS call failed. Each says what was called; none carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("AWS settings: {0}")]
    Config(String),
    // The cause is part of the text (and not also a `source`, which would print it twice).
    #[error("{target}: no answer: {cause}")]
    Transport {
        target: &'static str,
        cause: reqwest::Error,
    },
    /// AWS answered with an error (`__type` and message, as the JSON protocol sends them).
    #[error("{target}: HTTP {status}: {kind}: {message}")]
    Service {
        target: &'static str,
        status: u16,
        kind: String,
        message: String,
    },
    #[error("{target}: unexpected answer: {cause}")]
    Answer {
        target: &'static str,
        cause: serde_json::Error,
    },
}

impl AwsError {
    /// Throttling, server errors and transport failures: worth trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            AwsError::Transport { .. } => true,
            AwsError::Service { status, kind, .. } => {
                *status >= 500 || kind.contains("Throughput") || kind.contains("Throttl")
            }
            _ => false,
        }
    }
}

/// A client for the JSON-protocol AWS services of one region.
#[derive(Debug, Clone)]
pub struct Aws {
    http: reqwest::Client,
    region: String,
    credentials: Credentials,
    /// One endpoint for every service (an emulator), else `https://<service>.<region>.amazonaws.com`.
    endpoint: Option<String>,
}

impl Aws {
    /// From the function's environment (or a test's map).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Aws, AwsError> {
        let get = |k: &str| map.get(k).filter(|v| !v.trim().is_empty());
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .ok_or_else(|| AwsError::Config("AWS_REGION is not set".into()))?;
        let key = get("AWS_ACCESS_KEY_ID")
            .ok_or_else(|| AwsError::Config("AWS_ACCESS_KEY_ID is not set".into()))?;
        let secret = get("AWS_SECRET_ACCESS_KEY")
            .ok_or_else(|| AwsError::Config("AWS_SECRET_ACCESS_KEY is not set".into()))?;
        let credentials = Credentials::new(key, secret, get("AWS_SESSION_TOKEN").map(|s| &**s));
        // rustls on ring, as the database connections; the first caller installs it.
        remarketable_core::db::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| AwsError::Config(format!("HTTP client: {e}")))?;
        Ok(Aws {
            http,
            region: region.clone(),
            credentials,
            endpoint: get("AWS_ENDPOINT_URL").map(|e| e.trim_end_matches('/').to_string()),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// One JSON 1.1 call: `target` is e.g. `Kinesis_20131202.PutRecords`.
    pub async fn call(
        &self,
        service: &str,
        target: &'static str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, AwsError> {
        let (url, host) = match &self.endpoint {
            Some(e) => (
                format!("{e}/"),
                e.split("://").nth(1).unwrap_or(e).to_string(),
            ),
            None => {
                let host = format!("{service}.{}.amazonaws.com", self.region);
                (format!("https://{host}/"), host)
            }
        };
        let payload = serde_json::to_vec(body).expect("a JSON value serializes");
        let content_type = "application/x-amz-json-1.1";
        let now = Utc::now();
        let mut headers = vec![
            ("content-type", content_type.to_string()),
            ("host", host),
            ("x-amz-date", amz_date(now)),
            ("x-amz-target", target.to_string()),
        ];
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token", token.clone()));
        }
        let authorization = sign(
            &self.credentials,
            &Scope {
                region: &self.region,
                service,
                time: now,
            },
            "POST",
            "/",
            "",
            &headers,
            &payload,
        );
        let mut request = self
            .http
            .post(&url)
            .header("authorization", authorization)
            .body(payload);
        for (name, value) in &headers {
            if *name != "host" {
                request = request.header(*name, value);
            }
        }
        let response = request
            .send()
            .await
            .map_err(|cause| AwsError::Transport { target, cause })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|cause| AwsError::Transport { target, cause })?;
        let value: serde_json::Value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|cause| AwsError::Answer { target, cause })?
        };
        if !(200..300).contains(&status) {
            let text = |k: &str| {
                value
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let kind = text("__type");
            let message = if text("message").is_empty() {
                text("Message")
            } else {
                text("message")
            };
            return Err(AwsError::Service {
                target,
                status,
                kind: kind.rsplit('#').next().unwrap_or_default().to_string(),
                message,
            });
        }
        Ok(value)
    }
}

fn amz_date(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Where and when a request is signed.
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub time: DateTime<Utc>,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Authorization` header of Signature Version 4. `headers` are lower-case names with
/// their values (all of them signed); `query` is already canonical (sorted, encoded).
pub fn sign(
    credentials: &Credentials,
    scope: &Scope<'_>,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, String)],
    payload: &[u8],
) -> String {
    let mut sorted: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.trim())).collect();
    sorted.sort();
    let canonical_headers: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = sorted.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        hex(&Sha256::digest(payload))
    );
    let date = scope.time.format("%Y%m%d").to_string();
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{credential_scope}\n{}",
        amz_date(scope.time),
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex(&hmac(&k_signing, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// `get-vanilla-query-order-key-case` of AWS's Signature Version 4 test suite.
    #[test]
    fn signs_as_the_aws_test_suite_expects() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        );
        let scope = Scope {
            region: "us-east-1",
            service: "service",
            time: Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap(),
        };
        let headers = [
            ("host", "example.amazonaws.com".to_string()),
            ("x-amz-date", "20150830T123600Z".to_string()),
        ];
        let auth = sign(
            &credentials,
            &scope,
            "GET",
            "/",
            "Param1=value1&Param2=value2",
            &headers,
            b"",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn credentials_do_not_print_the_secret() {
        let c = Credentials::new("AKID", "very-secret", Some("token"));
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
