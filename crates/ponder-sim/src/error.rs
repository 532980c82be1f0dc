//! Errors of the simulator: API errors in OpenAI's JSON shape, mapped to responses in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answered to the client as `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header, if any.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// 400 about request parameter `param` (if any).
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after: None,
        }
    }

    /// 404 for an unknown path.
    pub fn not_found(path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no route for {path}"),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
            retry_after: None,
        }
    }

    /// An injected fault with the given status.
    pub fn injected(status: u16, retry_after: Option<u32>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (kind, code, message) = match status.as_u16() {
            429 => (
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                "rate limit reached (injected by ponder-sim)",
            ),
            503 => (
                "server_error",
                Some("service_unavailable"),
                "the server is overloaded (injected by ponder-sim)",
            ),
            400..=499 => (
                "invalid_request_error",
                None,
                "request refused (injected by ponder-sim)",
            ),
            _ => (
                "server_error",
                None,
                "internal server error (injected by ponder-sim)",
            ),
        };
        ApiError {
            status,
            message: message.to_string(),
            kind,
            param: None,
            code,
            retry_after,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
