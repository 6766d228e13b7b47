//! The HTTP mapping of the core's error vocabulary, done once: [`ErrorCode`] kind → status, and
//! `{"error": {"code", "message"}}` with a safe message. The detail of an infrastructure or
//! internal failure is logged once, here, inside the request's span, and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use remarketable_core::error::{ErrorCode, ErrorKind};
use remarketable_core::Error;
use serde_json::json;
use std::any::Any;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` where the code's own ([`ErrorCode::retry_after_seconds`])
    /// would be wrong.
    pub retry_after: Option<u32>,
}

/// The status every code of a kind answers with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code.kind() {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: status_of(code),
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The `Retry-After` of this answer, if any.
    pub fn retry_after_seconds(&self) -> Option<u32> {
        self.retry_after.or(self.code.retry_after_seconds())
    }

    pub fn not_found() -> Self {
        ApiError::new(ErrorCode::NotFound, "no such function or route")
    }

    pub fn bad_parameter(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadParameter, message)
    }

    pub fn pool(e: deadpool_postgres::PoolError) -> Self {
        Error::pool(&e).into()
    }

    pub fn database(e: tokio_postgres::Error) -> Self {
        Error::database(&e).into()
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code.as_str(), "message": self.message}})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let detail = e.detail().unwrap_or_default();
        match e.code.kind() {
            ErrorKind::Unavailable => tracing::warn!(code = %e.code, %detail, "{}", e.message),
            ErrorKind::Internal => tracing::error!(code = %e.code, %detail, "{}", e.message),
            _ => {}
        }
        ApiError::new(e.code, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_seconds() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Every error answer in the one JSON shape: what the framework answers by itself (axum's
/// extractor rejections: a bad path id, a malformed or duplicated query field, an integer out
/// of range, a body that is not JSON or not `application/json`, too large; 405 for a method
/// a route does not take) comes as `text/plain` or empty, and is rewritten here with a stable
/// code for its status. The framework's text, which names only the parameter and the parse
/// error, stays the message (cut to 300 bytes).
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if message.len() > 300 {
        let mut cut = 300;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::InternalError,
    };
    if message.is_empty() {
        message = match code {
            ErrorCode::MethodNotAllowed => "this route does not take that method".into(),
            ErrorCode::InternalError => "internal error; see the service log".into(),
            _ => status
                .canonical_reason()
                .unwrap_or("refused")
                .to_lowercase(),
        };
    }
    let mut answer = ApiError::new(code, message).into_response();
    // Headers the framework set that still apply (`Allow` of a 405).
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    answer
}

/// Answer of [`tower_http::catch_panic::CatchPanicLayer`]: a panic is an internal error.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(%detail, "request handler panicked");
    ApiError::new(
        ErrorCode::InternalError,
        "internal error; see the handler log",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_of_codes_clients_rely_on() {
        for (code, status) in [
            (ErrorCode::BadParameter, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::WrongTenant, 403),
            (ErrorCode::UnknownTenant, 404),
            (ErrorCode::TenantExists, 409),
            (ErrorCode::TooManyEvents, 413),
            (ErrorCode::UnsupportedMediaType, 415),
            (ErrorCode::DatabaseUnavailable, 503),
            (ErrorCode::ReplayConflict, 503),
            (ErrorCode::DatabaseError, 500),
        ] {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let e: ApiError = Error::internal("secret detail").into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.body().to_string().contains("secret"));
    }
}
