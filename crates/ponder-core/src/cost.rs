//! What a strategy run cost: requests, tokens, early stops, time and seed.
//!
//! [`Metered`] is a layer around any [`Backend`] that counts every call made through it, so
//! strategies never count for themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BoxFuture, Capabilities, RewardRequest, RewardResponse};
use crate::completion::{FinishReason, GenerationResponse};
use crate::error::BackendError;
use crate::request::GenerationRequest;
use crate::stream::{CompletionStream, StreamEvent};

/// The cost of one strategy run, as reported with its result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunCost {
    /// Upstream generation and reward requests (a split `n > 1` counts each part), retries excluded.
    pub requests: u64,
    /// Upstream attempts that were retried.
    pub retries: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens the server served from its prefix cache, when it reports them.
    pub cached_tokens: u64,
    /// Prompt tokens read by process reward models.
    pub reward_tokens: u64,
    /// Generations stopped early by the strategy.
    pub aborted: u64,
    /// Upper bound on the completion tokens early stops saved: Σ (max_tokens − tokens received)
    /// over stopped generations that had a `max_tokens`.
    pub tokens_saved: u64,
    pub elapsed_ms: u64,
    /// The seed that reproduces the run.
    pub seed: u64,
}

/// Shared counters behind a [`Metered`] backend.
#[derive(Debug, Default)]
pub struct CostMeter {
    requests: AtomicU64,
    retries: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    reward_tokens: AtomicU64,
    aborted: AtomicU64,
    tokens_saved: AtomicU64,
}

impl CostMeter {
    fn add(counter: &AtomicU64, v: u64) {
        counter.fetch_add(v, Ordering::Relaxed);
    }

    fn record_response(&self, r: &GenerationResponse) {
        Self::add(&self.requests, u64::from(r.requests));
        Self::add(&self.retries, u64::from(r.retries));
        Self::add(&self.prompt_tokens, r.usage.prompt_tokens);
        Self::add(&self.completion_tokens, r.usage.completion_tokens);
        Self::add(&self.cached_tokens, r.usage.cached_tokens.unwrap_or(0));
        let aborted = r
            .completions
            .iter()
            .filter(|c| c.finish_reason == FinishReason::Aborted)
            .count();
        Self::add(&self.aborted, aborted as u64);
    }

    /// A snapshot of the counters, with the run's time and seed.
    pub fn snapshot(&self, started: Instant, seed: u64) -> RunCost {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RunCost {
            requests: get(&self.requests),
            retries: get(&self.retries),
            prompt_tokens: get(&self.prompt_tokens),
            completion_tokens: get(&self.completion_tokens),
            cached_tokens: get(&self.cached_tokens),
            reward_tokens: get(&self.reward_tokens),
            aborted: get(&self.aborted),
            tokens_saved: get(&self.tokens_saved),
            elapsed_ms: started.elapsed().as_millis() as u64,
            seed,
        }
    }
}

/// A backend wrapped so that every call is counted in a [`CostMeter`].
pub struct Metered {
    inner: Arc<dyn Backend>,
    meter: Arc<CostMeter>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Metered {
            inner,
            meter: Arc::new(CostMeter::default()),
        }
    }

    pub fn meter(&self) -> Arc<CostMeter> {
        self.meter.clone()
    }
}

/// Per-stream bookkeeping; on drop it books what the stream consumed, and counts completions
/// that never finished as stopped early.
struct StreamTally {
    meter: Arc<CostMeter>,
    max_tokens: Option<u32>,
    received: Vec<u64>,
    finished: Vec<bool>,
    usage_seen: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
}

impl StreamTally {
    fn observe(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Delta {
                index, token_count, ..
            } => {
                let i = *index as usize;
                if i >= self.received.len() {
                    self.received.resize(i + 1, 0);
                    self.finished.resize(i + 1, false);
                }
                self.received[i] += u64::from(*token_count);
            }
            StreamEvent::Finished { index, .. } => {
                let i = *index as usize;
                if i >= self.finished.len() {
                    self.received.resize(i + 1, 0);
                    self.finished.resize(i + 1, false);
                }
                self.finished[i] = true;
            }
            StreamEvent::Usage(u) => {
                self.usage_seen = true;
                self.prompt_tokens = u.prompt_tokens;
                self.completion_tokens = u.completion_tokens;
                self.cached_tokens = u.cached_tokens.unwrap_or(0);
            }
        }
    }
}

impl Drop for StreamTally {
    fn drop(&mut self) {
        let m = &self.meter;
        let received: u64 = self.received.iter().sum();
        let completion = if self.usage_seen {
            self.completion_tokens
        } else {
            received
        };
        CostMeter::add(&m.prompt_tokens, self.prompt_tokens);
        CostMeter::add(&m.completion_tokens, completion);
        CostMeter::add(&m.cached_tokens, self.cached_tokens);
        for (got, done) in self.received.iter().zip(&self.finished) {
            if !done {
                CostMeter::add(&m.aborted, 1);
                if let Some(max) = self.max_tokens {
                    CostMeter::add(&m.tokens_saved, u64::from(max).saturating_sub(*got));
                }
            }
        }
    }
}

impl Backend for Metered {
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
            let max_tokens = request.params.max_tokens;
            let stream = self.inner.stream(request).await?;
            let (requests, retries) = stream.request_counts();
            CostMeter::add(&self.meter.requests, u64::from(requests));
            CostMeter::add(&self.meter.retries, u64::from(retries));
            let n = stream.n();
            let mut tally = StreamTally {
                meter: self.meter.clone(),
                max_tokens,
                received: vec![0; n as usize],
                finished: vec![false; n as usize],
                usage_seen: false,
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
            };
            let events = stream.map(move |event| {
                if let Ok(e) = &event {
                    tally.observe(e);
                }
                event
            });
            Ok(CompletionStream::new(n, events).with_request_counts(requests, retries))
        })
    }

    fn generate(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<GenerationResponse, BackendError>> {
        Box::pin(async move {
            let response = self.inner.generate(request).await?;
            self.meter.record_response(&response);
            Ok(response)
        })
    }

    fn rewards(
        &self,
        requests: Vec<RewardRequest>,
    ) -> BoxFuture<'_, Result<Vec<RewardResponse>, BackendError>> {
        Box::pin(async move {
            let n = requests.len() as u64;
            let out = self.inner.rewards(requests).await?;
            CostMeter::add(&self.meter.requests, n);
            let tokens: u64 = out.iter().map(|r| r.prompt_tokens).sum();
            CostMeter::add(&self.meter.reward_tokens, tokens);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::TokenLogprob;
    use crate::request::{Prompt, SamplingParams};

    /// A backend that streams `n` completions of `len` one-token deltas each.
    struct Counting {
        len: u32,
    }

    impl Backend for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: None,
                multiple_samples: true,
                prefix_continuation: false,
                process_rewards: false,
                streaming: true,
                max_stop_strings: None,
            }
        }
        fn stream(
            &self,
            request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
            let n = request.params.n;
            let len = self.len;
            let mut events = Vec::new();
            for step in 0..len {
                for index in 0..n {
                    events.push(Ok(StreamEvent::Delta {
                        index,
                        text: format!("t{step} "),
                        token_count: 1,
                        tokens: vec![TokenLogprob::default()],
                    }));
                }
            }
            for index in 0..n {
                events.push(Ok(StreamEvent::Finished {
                    index,
                    reason: FinishReason::Stop,
                    stop: None,
                }));
            }
            Box::pin(
                async move { Ok(CompletionStream::new(n, futures_util::stream::iter(events))) },
            )
        }
    }

    fn request(n: u32) -> GenerationRequest {
        GenerationRequest::new(
            Prompt::user("q"),
            SamplingParams {
                n,
                max_tokens: Some(100),
                ..Default::default()
            },
        )
    }

    #[tokio::test]
    async fn full_streams_count_tokens_and_no_aborts() {
        let m = Metered::new(Arc::new(Counting { len: 5 }));
        let r = m.generate(request(3)).await.expect("generates");
        assert_eq!(r.completions.len(), 3);
        let cost = m.meter().snapshot(Instant::now(), 9);
        assert_eq!(cost.requests, 1);
        assert_eq!(cost.completion_tokens, 15);
        assert_eq!(cost.aborted, 0);
        assert_eq!(cost.seed, 9);
    }

    #[tokio::test]
    async fn stopped_stream_counts_aborts_and_saved_tokens() {
        let m = Metered::new(Arc::new(Counting { len: 5 }));
        let mut s = m.stream(request(2)).await.expect("opens");
        // Read 3 deltas (choice 0 twice, choice 1 once), then stop.
        for _ in 0..3 {
            s.next_event().await.expect("event").expect("ok");
        }
        s.stop();
        let cost = m.meter().snapshot(Instant::now(), 0);
        assert_eq!(cost.completion_tokens, 3);
        assert_eq!(cost.aborted, 2);
        // (100 − 2) + (100 − 1)
        assert_eq!(cost.tokens_saved, 197);
    }
}
