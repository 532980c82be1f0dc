//! `ponder-server`: an OpenAI-compatible HTTP server that runs a test-time scaling strategy
//! behind each request, in front of any [`ponder_core::Backend`] (the upstream).
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`, `POST /v1/completions`: OpenAI's request and response shapes,
//!   JSON or Server-Sent Events (`stream: true`).
//! - `POST /v1/{strategy}/chat/completions`, `POST /v1/{strategy}/completions`: the same with
//!   the strategy named in the path.
//! - `GET /v1/models`: the upstream model and every alias.
//! - `GET /health`: `{"status":"ok"}`, without authentication.
//! - `GET /metrics`: Prometheus text (requests by endpoint and status, strategy runs, upstream
//!   tokens, in-flight and queued requests, 429s).
//!
//! # Choosing a strategy
//!
//! A request runs a strategy when the path names one, when its body carries
//! `"ponder": {"strategy": "self-consistency", "n": 8, "seed": 3, "details": true}` (what the
//! official SDKs send through `extra_body`), or when its `model` is an alias from the
//! configuration. Otherwise it is passed through to the upstream as it is (`n`, logprobs and
//! stop strings included). `ponder` keys other than `strategy`, `seed`, `details` and
//! `deadline_ms` are strategy parameters; an unknown one is a 400 naming it.
//!
//! A strategy answer is one choice whose content is the chosen candidate's full text; `usage`
//! counts every token the run spent upstream (reward-model reads count as prompt tokens);
//! `ponder.details: true` adds a `ponder` object (answer, candidates with votes and scores,
//! usage breakdown, seed). The `x-ponder-seed` header always gives the run's seed; a request
//! without a seed gets a fresh one. Streamed, the answer is sent as ordinary chunks once
//! decided (role, content, finish, usage when `stream_options.include_usage`, `[DONE]`), with
//! `: progress …` comment lines while the strategy runs; an error after the headers is sent
//! as an OpenAI error event. The OpenAI fields `temperature`, `top_p`, `max_tokens` and `stop`
//! fill the strategy parameters of the same name unless `ponder` sets them; `n > 1` and
//! `logprobs` are refused with a strategy (it returns one choice).
//!
//! # Load and safety
//!
//! Strategy requests pass an admission gate (`limits.max_concurrent` running, `limits.queue`
//! waiting, then 429 with `Retry-After`); pass-through requests have their own gate. A request
//! takes its permit once, before any upstream call. A client that disconnects cancels its work:
//! the run lives in the handler future or the response body, both dropped by the HTTP layer.
//! Per-request limits cap `n`, `max_tokens` and the time to answer (504). With a token
//! configured, every route but `/health` needs `Authorization: Bearer TOKEN` (401 otherwise);
//! [`spawn`] refuses a non-loopback address without one. All errors use OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}` ([`ApiError`]).

pub mod admission;
pub mod config;
pub mod error;
pub mod metrics;
mod request;
mod respond;
pub mod state;
mod tap;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ponder_core::Backend;
use serde_json::json;

pub use config::{check_exposure, AliasConfig, ConfigError, LimitsConfig, ServerConfig, TOKEN_ENV};
pub use error::ApiError;
pub use state::AppState;

/// Largest request body accepted. Default of the server: 16 MiB.
const BODY_LIMIT: usize = 16 << 20;

/// How long [`ServerHandle::shutdown`] waits for open responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The routes of the server over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/{strategy}/chat/completions", post(strategy_chat))
        .route("/v1/{strategy}/completions", post(strategy_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(state.clone(), gatekeeper))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The metrics label of a path.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat_completions",
        "/v1/completions" => "completions",
        "/v1/models" => "models",
        "/health" => "health",
        "/metrics" => "metrics",
        p if p.starts_with("/v1/") && p.ends_with("/chat/completions") => {
            "strategy_chat_completions"
        }
        p if p.starts_with("/v1/") && p.ends_with("/completions") => "strategy_completions",
        _ => "other",
    }
}

/// Compares in time that depends only on the lengths.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Authentication (every route but `/health`) and request counting, in one layer.
async fn gatekeeper(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let label = endpoint_label(request.uri().path());
    let response = match &state.token {
        Some(token) if label != "health" => {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match given {
                Some(g) if same_token(g.as_bytes(), token.as_bytes()) => next.run(request).await,
                _ => {
                    let mut r = ApiError::unauthorized().into_response();
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    r
                }
            }
        }
        _ => next.run(request).await,
    };
    state
        .metrics
        .record_request(label, response.status().as_u16());
    response
}

async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    generation(state, request::Endpoint::Chat, None, body).await
}

async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    generation(state, request::Endpoint::Completions, None, body).await
}

async fn strategy_chat(
    State(state): State<Arc<AppState>>,
    Path(strategy): Path<String>,
    body: Bytes,
) -> Response {
    generation(state, request::Endpoint::Chat, Some(strategy), body).await
}

async fn strategy_completions(
    State(state): State<Arc<AppState>>,
    Path(strategy): Path<String>,
    body: Bytes,
) -> Response {
    generation(state, request::Endpoint::Completions, Some(strategy), body).await
}

async fn generation(
    state: Arc<AppState>,
    endpoint: request::Endpoint,
    path_strategy: Option<String>,
    body: Bytes,
) -> Response {
    let in_flight = state.metrics.in_flight();
    let job = match endpoint {
        request::Endpoint::Chat => request::parse_chat(&state, &body, path_strategy.as_deref()),
        request::Endpoint::Completions => {
            request::parse_completion(&state, &body, path_strategy.as_deref())
        }
    };
    match job {
        Ok(job) => respond::answer(state, job, in_flight).await,
        Err(e) => e.into_response(),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let created = state::now_unix();
    let mut data = vec![json!({
        "id": state.model,
        "object": "model",
        "created": created,
        "owned_by": "upstream",
    })];
    for (name, alias) in &state.config.aliases {
        data.push(json!({
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "ponder",
            "root": state.model,
            "ponder": {"strategy": alias.strategy, "params": alias.params, "seed": alias.seed},
        }));
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(
        (state.strategy_gate.running(), state.strategy_gate.queued()),
        (
            state.passthrough_gate.running(),
            state.passthrough_gate.queued(),
        ),
    );
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn no_route(method: Method, uri: Uri) -> Response {
    let mut e = ApiError::no_route(uri.path());
    if method != Method::POST && method != Method::GET {
        e.message = format!("no route for {method} {}", uri.path());
    }
    e.into_response()
}

/// A running server. Dropping it stops serving (without waiting).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Checks the configuration, binds `addr` (port 0: a free one) and serves in a task of the
/// current tokio runtime. `token` is the bearer token in force (see
/// [`ServerConfig::effective_token`]); without one, only a loopback address is allowed.
pub async fn spawn(
    addr: SocketAddr,
    backend: Arc<dyn Backend>,
    model: String,
    config: ServerConfig,
    token: Option<String>,
) -> Result<ServerHandle, SpawnError> {
    check_exposure(addr, token.as_deref())?;
    let state = Arc::new(AppState::new(backend, model, config, token)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SpawnError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SpawnError::Bind { addr, source })?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = router(state);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ServerHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://HOST:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Serves until the task ends (it does not end on its own).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops accepting connections, waits up to 2 s for open responses, then stops.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_tokens() {
        assert_eq!(endpoint_label("/v1/chat/completions"), "chat_completions");
        assert_eq!(
            endpoint_label("/v1/self-consistency/chat/completions"),
            "strategy_chat_completions"
        );
        assert_eq!(endpoint_label("/nope"), "other");
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
    }
}
