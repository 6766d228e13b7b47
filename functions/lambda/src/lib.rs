//! The AWS Lambda host: one binary, `lambda` (deployed as `bootstrap`), whose role the setting
//! `LAMBDA_ROLE` chooses.
//!
//! | role | event source | work |
//! |---|---|---|
//! | `ingest` | Kafka (MSK, self-managed) and Kinesis event source mappings | [`ingest`] → the core's `Ingestor` |
//! | `http` | API Gateway HTTP API v2, Function URLs (`lambda_http`) | [`http`] → the API router, collect → Kinesis |
//! | `rollup` | EventBridge Scheduler or rule | `jobs::rollup` |
//! | `maintenance` | EventBridge Scheduler or rule | `jobs::maintenance` |
//!
//! Stream events never go through `lambda_http` (its `pass_through` would make a failed batch a
//! successful HTTP 500). A failed invocation returns a [`Failure`] whose `errorType` is the
//! core's error code, so the event source retries and the log says why.

pub mod aws;
pub mod config;
pub mod http;
pub mod ingest;
pub mod kinesis;
pub mod schedule;

use crate::config::LambdaSettings;
use crate::ingest::{BatchSummary, IngestAnswer, ItemFailure};
use lambda_runtime::{Diagnostic, LambdaEvent};
use remarketable_api::ApiState;
use remarketable_core::telemetry::{BatchIngested, Event, MaintenanceDone, RollupsAdvanced};
use remarketable_core::{jobs, Error, Ingestor};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// Shared by every invocation of one execution environment; built once at cold start.
pub struct Host {
    pub settings: LambdaSettings,
    pub api: Arc<ApiState>,
    pub ingestor: Ingestor,
}

/// A failed invocation: the core's error, reported with its code as `errorType`.
#[derive(Debug)]
pub struct Failure(pub Error);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(e)
    }
}

impl From<Failure> for Diagnostic {
    fn from(Failure(e): Failure) -> Self {
        // The detail (a database error's text) goes to the log, not into the error object.
        tracing::error!(code = %e.code, message = %e.message, detail = e.detail().unwrap_or(""), "invocation failed");
        Diagnostic {
            error_type: e.code.as_str().to_string(),
            error_message: e.message.clone(),
        }
    }
}

impl Host {
    /// Builds the state without touching the database (the pool connects on first use).
    pub fn new(settings: LambdaSettings) -> Self {
        let ingestor = Ingestor::new(settings.core.limits.clone(), settings.core.tenant_cache_ttl);
        Host {
            api: Arc::new(ApiState::new(settings.core.clone())),
            settings,
            ingestor,
        }
    }

    /// One `ingest` invocation: every partition of the event, in sorted order.
    pub async fn ingest(
        &self,
        event: LambdaEvent<Box<serde_json::value::RawValue>>,
    ) -> Result<Value, Failure> {
        let decoded = ingest::decode(
            event.payload.get(),
            self.settings.kafka_source_name.as_deref(),
        )?;
        let mut answer = IngestAnswer {
            batch_item_failures: Vec::new(),
            batches: Vec::new(),
        };
        let mut client = match self.api.pool.get().await {
            Ok(c) => Some(c),
            Err(e) if self.settings.report_batch_item_failures => {
                tracing::warn!(error = %e, "no database connection: every partition reported failed");
                None
            }
            Err(e) => return Err(Error::pool(&e).into()),
        };
        for (batch, first) in decoded.batches.iter().zip(decoded.first_items) {
            let started = Instant::now();
            let result = match client.as_mut() {
                Some(c) => self
                    .ingestor
                    .ingest(c, batch, chrono::Utc::now())
                    .await
                    .map_err(Error::from),
                None => Err(Error::new(
                    remarketable_core::ErrorCode::DatabaseUnavailable,
                    "the database is unavailable; retry later",
                )),
            };
            match result {
                Ok(report) => {
                    BatchIngested {
                        report: &report,
                        took_ms: started.elapsed().as_millis(),
                    }
                    .emit();
                    answer.batches.push(BatchSummary::from(&report));
                }
                Err(e) if self.settings.report_batch_item_failures => {
                    tracing::warn!(
                        source = %batch.source,
                        partition = %batch.partition,
                        code = %e.code,
                        detail = e.detail().unwrap_or(""),
                        "partition not written; reported as a batch item failure"
                    );
                    answer.batch_item_failures.push(ItemFailure {
                        item_identifier: first,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(serde_json::to_value(&answer).unwrap_or_default())
    }

    /// One `rollup` or `maintenance` invocation.
    pub async fn scheduled(
        &self,
        job: schedule::Job,
        event: LambdaEvent<Value>,
    ) -> Result<Value, Failure> {
        let trigger = schedule::decode(&event.payload, job)?;
        let mut client = self.api.pool.get().await.map_err(|e| Error::pool(&e))?;
        let result = match job {
            schedule::Job::Rollup => {
                let run = jobs::rollup(&mut client).await?;
                RollupsAdvanced {
                    run: &run,
                    past_due: false,
                }
                .emit();
                serde_json::to_value(&run).unwrap_or_default()
            }
            schedule::Job::Maintenance => {
                let run = jobs::maintenance(&client).await?;
                MaintenanceDone {
                    run: &run,
                    past_due: false,
                }
                .emit();
                run.summary()
            }
        };
        Ok(json!({
            "job": job.name(),
            "via": trigger.via,
            "scheduled_time": trigger.scheduled_time,
            "result": result,
        }))
    }
}
