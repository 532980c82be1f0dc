//! Errors of the core model: invalid requests, backend failures, missing capabilities.

use std::time::Duration;

use crate::backend::Capability;

/// A request field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request field `{field}`: {reason}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub reason: String,
}

/// Failure of a backend call. Model output is never a reason for an error: these are
/// infrastructure failures, exhausted limits and cancellation.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    #[error("backend `{backend}` lacks the capability `{capability}`")]
    Unsupported {
        backend: String,
        capability: Capability,
    },
    #[error("could not connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("{endpoint} answered HTTP {status}: {message}")]
    Status {
        endpoint: String,
        status: u16,
        message: String,
        /// How long the server asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    #[error("{endpoint} sent a reply Ponder cannot read: {message}")]
    Protocol { endpoint: String, message: String },
    #[error("request to {endpoint} timed out after {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        last: Box<BackendError>,
    },
    #[error("the overall deadline of {0:?} passed")]
    Deadline(Duration),
    #[error("the generation was cancelled")]
    Cancelled,
    /// An in-process engine failed (the model could not decode, the KV cache is full).
    #[error("{backend}: {message}")]
    Engine { backend: String, message: String },
}

impl BackendError {
    /// Whether trying the same request again may succeed: connection errors, timeouts, 408, 429
    /// and 5xx. Validation errors (other 4xx) are never retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Connect { .. }
            | BackendError::Timeout { .. }
            | BackendError::Protocol { .. } => true,
            BackendError::Status { status, .. } => {
                *status == 408 || *status == 429 || (500..=599).contains(status)
            }
            _ => false,
        }
    }
}

/// A strategy that cannot run as configured; raised when it is built, never mid-run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    #[error("strategy `{strategy}` needs the backend capability `{capability}`, which `{backend}` does not offer")]
    MissingCapability {
        strategy: String,
        backend: String,
        capability: Capability,
    },
    #[error("unknown parameter `{param}` for strategy `{strategy}` (known: {known})")]
    UnknownParam {
        strategy: String,
        param: String,
        known: String,
    },
    #[error("parameter `{param}` of strategy `{strategy}`: {reason}")]
    InvalidParam {
        strategy: String,
        param: String,
        reason: String,
    },
    #[error("unknown strategy `{name}` (known: {known})")]
    UnknownStrategy { name: String, known: String },
}

/// Failure of a strategy run.
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("budget exhausted: {0}")]
    Budget(String),
}
