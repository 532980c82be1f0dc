//! `Tap`: a backend layer that counts what flows through it, live, for the server's metrics
//! and the progress lines of a streamed strategy response. It changes nothing it forwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use ponder_core::{
    Backend, BackendError, BoxFuture, Capabilities, CompletionStream, GenerationRequest,
    RewardRequest, RewardResponse, StreamEvent,
};

use crate::metrics::Metrics;

/// Live counters of one request.
#[derive(Debug, Default)]
pub struct Progress {
    /// Generation and reward calls opened.
    pub calls: AtomicU64,
    /// Completion tokens received so far.
    pub tokens: AtomicU64,
    /// Completions finished so far.
    pub finished: AtomicU64,
}

impl Progress {
    pub fn line(&self, elapsed_ms: u128) -> String {
        format!(
            ": progress elapsed_ms={elapsed_ms} calls={} finished={} tokens={}\n\n",
            self.calls.load(Ordering::Relaxed),
            self.finished.load(Ordering::Relaxed),
            self.tokens.load(Ordering::Relaxed)
        )
    }
}

/// A backend whose calls are counted into a request's [`Progress`] and the server's
/// [`Metrics`].
pub struct Tap {
    inner: Arc<dyn Backend>,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
}

impl Tap {
    pub fn new(inner: Arc<dyn Backend>, progress: Arc<Progress>, metrics: Arc<Metrics>) -> Self {
        Tap {
            inner,
            progress,
            metrics,
        }
    }
}

impl Backend for Tap {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn stream(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
        Box::pin(async move {
            let stream = self.inner.stream(request).await?;
            let (requests, retries) = stream.request_counts();
            self.progress.calls.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .upstream_requests
                .fetch_add(u64::from(requests), Ordering::Relaxed);
            let n = stream.n();
            let progress = self.progress.clone();
            let metrics = self.metrics.clone();
            let events = stream.map(move |event| {
                match &event {
                    Ok(StreamEvent::Delta { token_count, .. }) => {
                        let t = u64::from(*token_count);
                        progress.tokens.fetch_add(t, Ordering::Relaxed);
                        metrics
                            .upstream_completion_tokens
                            .fetch_add(t, Ordering::Relaxed);
                    }
                    Ok(StreamEvent::Finished { .. }) => {
                        progress.finished.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(StreamEvent::Usage(u)) => {
                        metrics
                            .upstream_prompt_tokens
                            .fetch_add(u.prompt_tokens, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
                event
            });
            Ok(CompletionStream::new(n, events).with_request_counts(requests, retries))
        })
    }

    fn rewards(
        &self,
        requests: Vec<RewardRequest>,
    ) -> BoxFuture<'_, Result<Vec<RewardResponse>, BackendError>> {
        Box::pin(async move {
            let n = requests.len() as u64;
            let out = self.inner.rewards(requests).await?;
            self.progress.calls.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .upstream_requests
                .fetch_add(n, Ordering::Relaxed);
            let tokens: u64 = out.iter().map(|r| r.prompt_tokens).sum();
            self.metrics
                .upstream_prompt_tokens
                .fetch_add(tokens, Ordering::Relaxed);
            Ok(out)
        })
    }
}
