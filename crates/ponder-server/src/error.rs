//! Every error the server answers, and the one place where each becomes an HTTP status and an
//! OpenAI-shaped body `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ponder_core::{BackendError, BuildError, StrategyError};

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type` (`invalid_request_error`, `authentication_error`, …).
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 400 about request field `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param)
    }

    /// 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401: missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or invalid bearer token (send `Authorization: Bearer TOKEN`)",
        )
        .with_code("invalid_api_key")
    }

    /// 404 for a path the server does not have.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no route for {path}"),
        )
        .with_code("not_found")
    }

    /// 404 for a model that is neither the upstream model nor an alias.
    pub fn unknown_model(model: &str, known: &[String]) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model `{model}` does not exist (known: {})",
                known.join(", ")
            ),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 404 for an unknown strategy in the path.
    pub fn unknown_strategy_path(error: &BuildError) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            error.to_string(),
        )
        .with_code("strategy_not_found")
    }

    /// 429: over capacity.
    pub fn over_capacity(retry_after_s: u64, what: &str) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("the server is at capacity ({what}); retry after {retry_after_s} s"),
        )
        .with_code("rate_limit_exceeded");
        e.retry_after = Some(retry_after_s);
        e
    }

    /// 504: the request's deadline passed.
    pub fn deadline(ms: u128) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            format!("the request did not finish within its deadline of {ms} ms"),
        )
        .with_code("deadline_exceeded")
    }

    /// The body as JSON text: all four fields, `null` where unset (as OpenAI writes them).
    pub fn json(&self) -> String {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
        .to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.json()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<BuildError> for ApiError {
    /// A strategy that cannot be built as asked: the parameter is named as `ponder.PARAM`.
    fn from(e: BuildError) -> Self {
        let message = e.to_string();
        match &e {
            BuildError::UnknownStrategy { .. } => {
                ApiError::invalid("ponder.strategy", message).with_code("strategy_not_found")
            }
            BuildError::UnknownParam { param, .. } | BuildError::InvalidParam { param, .. } => {
                ApiError::invalid(format!("ponder.{param}"), message)
            }
            BuildError::MissingCapability { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                message,
            )
            .with_param("ponder.strategy")
            .with_code("missing_capability"),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let message = e.to_string();
        let root = match &e {
            BackendError::RetriesExhausted { last, .. } => last.as_ref(),
            other => other,
        };
        match root {
            BackendError::InvalidRequest(invalid) => {
                ApiError::invalid(invalid.field, invalid.to_string())
            }
            BackendError::Unsupported { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                message,
            )
            .with_code("missing_capability"),
            BackendError::Deadline(d) => ApiError::deadline(d.as_millis()),
            BackendError::Status {
                status: 429,
                retry_after,
                ..
            } => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                    .with_code("upstream_rate_limited");
                e.retry_after = Some(retry_after.map_or(1, |d| d.as_secs().max(1)));
                e
            }
            // The client's request was refused upstream (a bad parameter): relay it as 400.
            BackendError::Status { status, .. }
                if (400..500).contains(status) && !matches!(status, 401 | 403 | 404 | 408) =>
            {
                ApiError::bad_request(message).with_code("upstream_rejected")
            }
            _ => Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
                .with_code("upstream_error"),
        }
    }
}

impl From<StrategyError> for ApiError {
    fn from(e: StrategyError) -> Self {
        match e {
            StrategyError::Backend(b) => b.into(),
            StrategyError::Budget(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                e.to_string(),
            )
            .with_code("budget_exhausted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn status(e: BackendError) -> u16 {
        ApiError::from(e).status.as_u16()
    }

    #[test]
    fn backend_errors_map_to_statuses() {
        let upstream = |status| BackendError::Status {
            endpoint: "u".into(),
            status,
            message: "m".into(),
            retry_after: None,
        };
        assert_eq!(status(upstream(400)), 400);
        assert_eq!(status(upstream(401)), 502);
        assert_eq!(status(upstream(404)), 502);
        assert_eq!(status(upstream(503)), 502);
        assert_eq!(status(upstream(429)), 429);
        assert_eq!(
            status(BackendError::RetriesExhausted {
                attempts: 3,
                last: Box::new(upstream(500))
            }),
            502
        );
        assert_eq!(
            status(BackendError::Deadline(Duration::from_millis(5))),
            504
        );
        assert_eq!(
            status(BackendError::Connect {
                endpoint: "u".into(),
                message: "refused".into()
            }),
            502
        );
    }

    #[test]
    fn build_errors_name_the_param() {
        let e = ApiError::from(BuildError::InvalidParam {
            strategy: "s".into(),
            param: "n".into(),
            reason: "bad".into(),
        });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("ponder.n"));
    }

    #[test]
    fn body_is_openai_shaped() {
        let v: serde_json::Value =
            serde_json::from_str(&ApiError::over_capacity(2, "16 running").json()).expect("json");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert!(v["error"].get("param").is_some_and(|p| p.is_null()));
    }
}
