//! The one error type of the handler's HTTP surface, mapped once to status and stable code.
//!
//! Clients see `{"error": {"code", "message"}}` with a safe message; the detail (database
//! errors, panics) is logged once, here, and never sent.

use crate::envelope::{EnvelopeError, InvocationRequest};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use remarketable_core::IngestError;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::any::Any;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such function or route",
        )
    }

    /// The host sent an envelope we cannot decode.
    pub fn envelope(e: EnvelopeError) -> Self {
        tracing::error!(error = %e, "invocation envelope not understood");
        ApiError::new(StatusCode::BAD_REQUEST, "bad_envelope", e.0)
    }

    pub fn pool(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "no database connection");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; retry later",
        )
    }

    pub fn database(e: tokio_postgres::Error) -> Self {
        ApiError::ingest(IngestError::from(e))
    }

    pub fn ingest(e: IngestError) -> Self {
        let detail = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        if e.is_retryable() {
            tracing::warn!(error = %e, %detail, "database unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is unavailable; retry later",
            )
        } else {
            tracing::error!(error = %e, %detail, "database error");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "database_error",
                "the database refused the operation; see the handler log",
            )
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Answer of [`tower_http::catch_panic::CatchPanicLayer`]: a panic is a failed invocation.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(%detail, "request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error; see the handler log",
    )
    .into_response()
}

/// Extracts an invocation envelope (an [`InvocationRequest`] unless a trigger has its own
/// type), answering bad bodies with our error shape instead of axum's plain-text rejections.
pub struct Envelope<T = InvocationRequest>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Envelope<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "invocation body is too large",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_envelope",
                    "invocation body could not be read",
                )
            }
        })?;
        serde_json::from_slice(&bytes).map(Envelope).map_err(|e| {
            ApiError::envelope(EnvelopeError(format!(
                "invocation body is not a JSON envelope: {e}"
            )))
        })
    }
}
