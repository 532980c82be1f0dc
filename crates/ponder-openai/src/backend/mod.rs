//! [`OpenAiBackend`]: a [`Backend`] over OpenAI-compatible HTTP servers (vLLM, SGLang,
//! llama.cpp server, OpenAI and compatible services).
//!
//! # What a call does
//!
//! 1. The request is checked against the configuration ([`body::plan`]) and written as a chat
//!    or completions body that always streams (`stream_options.include_usage = true`).
//! 2. A concurrency permit is taken (one per upstream request), then an endpoint is chosen
//!    (least outstanding requests among healthy replicas) and the request is sent.
//! 3. The call waits for the first event. Everything that fails before it (connection errors,
//!    timeouts, 408/429/5xx, malformed payloads) is retried with jittered exponential backoff on
//!    the best endpoint at that time; other 4xx are returned at once.
//! 4. The stream is handed out. From then on nothing is retried: a cut, a stall or a malformed
//!    payload ends the unfinished choices with [`FinishReason::Error`](ponder_core::FinishReason)
//!    and the stream ends cleanly.
//!
//! A stream holds its permit and its endpoint until it ends or is dropped, so a caller that
//! opens more than `max_concurrency` streams before reading any of them waits (until the
//! deadline, if one is set). Dropping a stream closes its connection; the server stops
//! generating when it next writes (see [`ponder_core::stream`] on asynchronous stops).

mod body;
mod decode;
mod replicas;
mod retry;
mod reward;
mod upstream;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use ponder_core::{
    Backend, BackendError, BoxFuture, Capabilities, Capability, CompletionStream,
    GenerationRequest, InvalidRequest, RewardRequest, RewardResponse, SeededRng, StreamEvent,
    Usage,
};

use crate::config::{ConfigError, NMode, OpenAiConfig, RewardConfig};
use crate::wire::{PoolingRequest, PoolingResponse, PromptInput};
use body::Plan;
use decode::ChunkDecoder;
use replicas::{Lease, ReplicaPool};
use upstream::{ApiKey, Deadline, Sender, Upstream};

/// A backend over one or more OpenAI-compatible servers serving the same model.
pub struct OpenAiBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: OpenAiConfig,
    name: String,
    sender: Sender,
    generation: Arc<ReplicaPool>,
    reward: Option<(RewardConfig, Arc<ReplicaPool>)>,
    permits: Arc<Semaphore>,
    /// The server answered `n > 1` with a 4xx about `n`: split from now on.
    n_rejected: AtomicBool,
    /// Backoff jitter.
    rng: Mutex<SeededRng>,
}

impl fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("OpenAiBackend")
            .field("name", &inner.name)
            .field("endpoints", &inner.config.endpoints)
            .field("model", &inner.config.model)
            .field(
                "api_key",
                &inner.sender.api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("n_rejected", &inner.n_rejected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl OpenAiBackend {
    /// Builds the backend, reading the API key from the environment variable
    /// `config.api_key_env` (unset or empty: no key).
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let key = config
            .api_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|k| !k.is_empty());
        Self::with_api_key(config, key)
    }

    /// Builds the backend with an explicit API key (`config.api_key_env` is not read).
    pub fn with_api_key(
        config: OpenAiConfig,
        api_key: Option<String>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let api_key = match api_key {
            None => None,
            Some(k) => Some(ApiKey::new(k).ok_or_else(|| ConfigError {
                field: "api_key_env",
                reason: "the API key is not a valid HTTP header value".into(),
            })?),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout())
            .tcp_nodelay(true)
            .user_agent(concat!("ponder/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError {
                field: "endpoints",
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let bases: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        let generation = Arc::new(ReplicaPool::new(
            bases.clone(),
            config.endpoints.clone(),
            config.eject_after_failures,
            config.eject_for(),
        ));
        let reward = match &config.reward {
            None => None,
            Some(r) => {
                let names = if r.endpoints.is_empty() {
                    config.endpoints.clone()
                } else {
                    r.endpoints.clone()
                };
                let urls = names
                    .iter()
                    .map(|base| pooling_url(base, &r.path))
                    .collect::<Result<Vec<_>, _>>()?;
                let pool =
                    ReplicaPool::new(urls, names, config.eject_after_failures, config.eject_for());
                Some((r.clone(), Arc::new(pool)))
            }
        };
        let name = match config.endpoints.len() {
            1 => config.endpoints[0].clone(),
            n => format!("{} (+{} replicas)", config.endpoints[0], n - 1),
        };
        let inner = Inner {
            name,
            sender: Sender {
                client,
                api_key,
                connect_timeout: config.connect_timeout(),
                request_timeout: config.request_timeout(),
            },
            generation,
            reward,
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
            n_rejected: AtomicBool::new(false),
            rng: Mutex::new(SeededRng::derive(config.backoff_seed, "openai-backoff")),
            config,
        };
        Ok(OpenAiBackend {
            inner: Arc::new(inner),
        })
    }

    /// The configuration the backend was built from.
    pub fn config(&self) -> &OpenAiConfig {
        &self.inner.config
    }
}

/// The pooling URL of a base URL: `path` replaces the base URL's path.
fn pooling_url(base: &str, path: &str) -> Result<String, ConfigError> {
    reqwest::Url::parse(base)
        .and_then(|u| u.join(path))
        .map(String::from)
        .map_err(|e| ConfigError {
            field: "reward.path",
            reason: format!("cannot join `{path}` to `{base}`: {e}"),
        })
}

impl Backend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        let c = &self.inner.config;
        Capabilities {
            max_top_logprobs: c.max_top_logprobs,
            multiple_samples: match c.n_mode {
                NMode::Native => true,
                NMode::Split => false,
                NMode::Auto => !self.inner.n_rejected.load(Ordering::Relaxed),
            },
            prefix_continuation: c.prefix_continuation,
            process_rewards: self.inner.reward.is_some(),
            streaming: true,
            max_stop_strings: c.max_stop_strings,
        }
    }

    fn stream(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
        Box::pin(self.inner.stream(request))
    }

    fn rewards(
        &self,
        requests: Vec<RewardRequest>,
    ) -> BoxFuture<'_, Result<Vec<RewardResponse>, BackendError>> {
        Box::pin(self.inner.rewards(requests))
    }
}

/// An opened upstream: its first event (already read, to know the attempt worked) and the rest.
type Opened = (Option<StreamEvent>, Upstream);

impl Inner {
    async fn stream(&self, request: GenerationRequest) -> Result<CompletionStream, BackendError> {
        let plan = body::plan(&self.config, &self.name, &request)?;
        let deadline = self.config.deadline().map(Deadline::after);
        let n = request.params.n;
        let seed = request.params.seed;
        let mut fallback_attempts = 0;
        let split = n > 1
            && match self.config.n_mode {
                NMode::Native => false,
                NMode::Split => true,
                NMode::Auto => self.n_rejected.load(Ordering::Relaxed),
            };
        if !split {
            let body = body::build_body(&self.config, &request, &plan, n, seed)?;
            let permit = self.acquire(1, deadline).await?;
            match self.open(&plan, body, n, 0, deadline).await {
                Ok(((first, mut upstream), retries)) => {
                    upstream.hold(permit);
                    return Ok(CompletionStream::new(n, single(first, upstream))
                        .with_request_counts(1, retries));
                }
                Err(e) if n > 1 && self.config.n_mode == NMode::Auto && retry::rejects_n(&e) => {
                    // Remembered for the backend's lifetime; the rejected attempt counts as a
                    // retry of this call.
                    self.n_rejected.store(true, Ordering::Relaxed);
                    fallback_attempts = 1;
                }
                Err(e) => return Err(e),
            }
        }
        // `n` single requests with seeds `seed + i`, all permits taken at once so that two split
        // calls cannot each hold part of what the other needs.
        if n as usize > self.config.max_concurrency {
            return Err(InvalidRequest {
                field: "n",
                reason: format!(
                    "{n} completions must be sent as single requests to `{}`, more than \
                     max_concurrency ({})",
                    self.name, self.config.max_concurrency
                ),
            }
            .into());
        }
        let mut permits = self.acquire(n, deadline).await?;
        let opens = (0..n).map(|i| {
            let permit = permits.split(1);
            let body = body::build_body(
                &self.config,
                &request,
                &plan,
                1,
                seed.map(|s| s.wrapping_add(u64::from(i))),
            );
            let plan = &plan;
            async move {
                let ((first, mut upstream), retries) =
                    self.open(plan, body?, 1, i, deadline).await?;
                if let Some(p) = permit {
                    upstream.hold(p);
                }
                Ok::<_, BackendError>(((first, upstream), retries))
            }
        });
        let opened = futures_util::future::try_join_all(opens).await?;
        let retries = opened.iter().map(|(_, r)| r).sum::<u32>() + fallback_attempts;
        let subs = opened.into_iter().map(|(o, _)| o).collect();
        Ok(CompletionStream::new(n, merged(subs)).with_request_counts(n, retries))
    }

    /// Takes `n` concurrency permits, waiting at most until the deadline.
    async fn acquire(
        &self,
        n: u32,
        deadline: Option<Deadline>,
    ) -> Result<OwnedSemaphorePermit, BackendError> {
        let wait = self.permits.clone().acquire_many_owned(n);
        let permit = match deadline {
            None => wait.await,
            Some(d) => tokio::time::timeout_at(d.tokio(), wait)
                .await
                .map_err(|_| BackendError::Deadline(d.total))?,
        };
        // The semaphore is never closed.
        permit.map_err(|_| BackendError::Cancelled)
    }

    /// Sends one streamed request (with retries) and reads its first event.
    async fn open(
        &self,
        plan: &Plan,
        body: bytes::Bytes,
        n: u32,
        index_base: u32,
        deadline: Option<Deadline>,
    ) -> Result<(Opened, u32), BackendError> {
        self.with_retries(&self.generation, deadline, |lease: Lease| {
            let body = body.clone();
            async move {
                let url = format!("{}{}", lease.url(), plan.route.path());
                let name = lease.name().clone();
                let resp = self.sender.post(&url, &name, body, true, deadline).await?;
                let decoder = ChunkDecoder::new(
                    plan.route,
                    n,
                    &plan.client_stops,
                    plan.min_tokens,
                    index_base,
                );
                let mut upstream = Upstream::new(resp, decoder, lease, &self.sender, deadline);
                match upstream.next().await {
                    Some(Ok(first)) => Ok((Some(first), upstream)),
                    Some(Err(e)) => Err(e),
                    None => Ok((None, upstream)),
                }
            }
        })
        .await
    }

    /// Runs `attempt` on the best endpoint until it succeeds, fails for good, runs out of
    /// retries or passes the deadline. Returns the result and the number of retries.
    async fn with_retries<T, F, Fut>(
        &self,
        pool: &Arc<ReplicaPool>,
        deadline: Option<Deadline>,
        mut attempt: F,
    ) -> Result<(T, u32), BackendError>
    where
        F: FnMut(Lease) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let base = std::time::Duration::from_millis(self.config.backoff_base_ms);
        let max = std::time::Duration::from_millis(self.config.backoff_max_ms);
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let lease = pool.lease();
            let idx = lease.idx();
            let run = attempt(lease);
            let result = match deadline {
                None => run.await,
                Some(d) => tokio::time::timeout_at(d.tokio(), run)
                    .await
                    .unwrap_or(Err(BackendError::Deadline(d.total))),
            };
            let error = match result {
                Ok(value) => {
                    pool.record_success(idx);
                    return Ok((value, attempts - 1));
                }
                Err(e) => e,
            };
            if !error.is_retryable() {
                if matches!(error, BackendError::Status { .. }) {
                    // The endpoint answered; the request was at fault.
                    pool.record_success(idx);
                }
                return Err(error);
            }
            pool.record_failure(idx);
            if attempts > self.config.max_retries {
                return Err(BackendError::RetriesExhausted {
                    attempts,
                    last: Box::new(error),
                });
            }
            let wait = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                retry::retry_wait(&error, &mut rng, attempts - 1, base, max)
            };
            if let Some(d) = deadline {
                if wait >= d.left() {
                    // The next attempt could only start after the deadline.
                    return Err(BackendError::Deadline(d.total));
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn rewards(
        &self,
        requests: Vec<RewardRequest>,
    ) -> Result<Vec<RewardResponse>, BackendError> {
        let Some((config, pool)) = &self.reward else {
            return Err(BackendError::Unsupported {
                backend: self.name.clone(),
                capability: Capability::ProcessRewards,
            });
        };
        let mut responses: Vec<RewardResponse> = requests
            .iter()
            .map(|_| RewardResponse {
                step_rewards: Vec::new(),
                prompt_tokens: 0,
            })
            .collect();
        // Trajectories without steps have nothing to score and are not sent.
        let scored: Vec<usize> = (0..requests.len())
            .filter(|&i| !requests[i].steps.is_empty())
            .collect();
        if scored.is_empty() {
            return Ok(responses);
        }
        let inputs: Vec<String> = scored
            .iter()
            .map(|&i| reward::render(config, &requests[i]))
            .collect();
        let input_lens: Vec<usize> = inputs.iter().map(String::len).collect();
        let body = serde_json::to_vec(&PoolingRequest {
            model: config.model.clone(),
            input: Some(PromptInput::Texts(inputs)),
            task: config.task.clone(),
            ..Default::default()
        })
        .map(bytes::Bytes::from)
        .map_err(|e| BackendError::Protocol {
            endpoint: self.name.clone(),
            message: format!("cannot write the pooling request: {e}"),
        })?;
        let deadline = self.config.deadline().map(Deadline::after);
        let permit = self.acquire(1, deadline).await?;
        let ((endpoint, reply), _retries) = self
            .with_retries(pool, deadline, |lease: Lease| {
                let body = body.clone();
                async move {
                    let name = lease.name().clone();
                    let resp = self
                        .sender
                        .post(lease.url(), &name, body, false, deadline)
                        .await?;
                    let bytes = self.sender.read_all(&name, resp, deadline).await?;
                    let reply: PoolingResponse =
                        serde_json::from_slice(&bytes).map_err(|e| BackendError::Protocol {
                            endpoint: name.to_string(),
                            message: format!("not a pooling response: {e}"),
                        })?;
                    Ok((name, reply))
                }
            })
            .await?;
        drop(permit);
        let protocol = |message: String| BackendError::Protocol {
            endpoint: endpoint.to_string(),
            message,
        };
        if reply.data.len() != scored.len() {
            return Err(protocol(format!(
                "{} pooled outputs for {} inputs",
                reply.data.len(),
                scored.len()
            )));
        }
        let mut items = reply.data;
        items.sort_by_key(|item| item.index);
        let tokens = reward::split_tokens(reply.usage.map_or(0, |u| u.prompt_tokens), &input_lens);
        for (k, item) in items.into_iter().enumerate() {
            if item.index as usize != k {
                return Err(protocol(format!(
                    "pooled output indices are not 0..{}",
                    scored.len()
                )));
            }
            let i = scored[k];
            let rewards = reward::step_rewards(config.format, item.data, requests[i].steps.len())
                .map_err(|m| protocol(format!("trajectory {i}: {m}")))?;
            responses[i] = RewardResponse {
                step_rewards: rewards,
                prompt_tokens: tokens[k],
            };
        }
        Ok(responses)
    }
}

/// The events of one upstream: the first (already read), then the rest. Dropping it drops the
/// connection.
fn single(
    first: Option<StreamEvent>,
    upstream: Upstream,
) -> impl futures_util::Stream<Item = Result<StreamEvent, BackendError>> + Send + 'static {
    stream::unfold((first, upstream), |(first, mut upstream)| async move {
        if let Some(event) = first {
            return Some((Ok(event), (None, upstream)));
        }
        let item = upstream.next().await?;
        Some((item, (None, upstream)))
    })
}

/// The events of split single requests, interleaved as they arrive; their usage chunks are
/// summed into one `Usage` event at the end.
fn merged(
    subs: Vec<Opened>,
) -> impl futures_util::Stream<Item = Result<StreamEvent, BackendError>> + Send + 'static {
    let n = subs.len();
    let all = stream::select_all(
        subs.into_iter()
            .enumerate()
            .map(|(i, (first, upstream))| single(first, upstream).map(move |e| (i, e)).boxed()),
    );
    let usages: Vec<Option<Usage>> = vec![None; n];
    stream::unfold(Some((all, usages)), |state| async move {
        let (mut all, mut usages) = state?;
        loop {
            match all.next().await {
                Some((i, Ok(StreamEvent::Usage(u)))) => usages[i] = Some(u),
                Some((_, item)) => return Some((item, Some((all, usages)))),
                None => {
                    let mut seen = usages.iter().flatten().peekable();
                    seen.peek()?;
                    let mut total = Usage::default();
                    for u in seen {
                        total.add(u);
                    }
                    return Some((Ok(StreamEvent::Usage(total)), None));
                }
            }
        }
    })
}
