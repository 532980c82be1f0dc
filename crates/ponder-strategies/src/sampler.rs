//! Streamed single-sample traces with bounded parallelism, per-token watchers and a stop-all
//! decision: the engine of every strategy that decides while traces are still being generated
//! (early-stopping self-consistency, online DeepConf).
//!
//! Trace `i` is one request with `n = 1` and seed `base_seed + i`, so a run is reproducible
//! whatever order the traces finish in. A trace stopped by its watcher, or cancelled because
//! the caller decided to stop, has its stream stopped, which closes the upstream connection
//! (asynchronously); the `Metered` layer counts it as aborted.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use ponder_core::{
    Backend, FinishReason, GenerationRequest, Prompt, SamplingParams, StrategyError, StreamEvent,
    TokenLogprob,
};

/// Go on, or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Stop,
}

/// Looks at a trace while it streams.
pub trait TokenWatch: Send {
    /// Called for each delta; `Stop` ends this trace now.
    fn on_delta(&mut self, text: &str, tokens: &[TokenLogprob], token_count: u32) -> Decision;
}

/// How a trace ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEnd {
    /// The server ended it (`stop`, `length`, or `error` for a stream that broke).
    Finished,
    /// Its watcher stopped it.
    Watched,
    /// It was in flight when the caller decided to stop.
    Cancelled,
}

/// One trace, finished or not.
#[derive(Debug, Clone)]
pub struct SampledTrace {
    pub index: usize,
    pub seed: u64,
    /// The text received (empty for a cancelled trace: partial text is discarded).
    pub text: String,
    /// Token records, when log-probabilities were asked for.
    pub tokens: Vec<TokenLogprob>,
    /// Completion tokens received.
    pub completion_tokens: u64,
    pub finish_reason: FinishReason,
    pub end: TraceEnd,
}

/// The fixed part of every trace's request.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub prompt: Prompt,
    /// `n` and `seed` are set per trace.
    pub params: SamplingParams,
    pub base_seed: u64,
}

impl Sampler {
    /// Runs the traces `indices` with at most `parallelism` in flight. `watch(i)` gives trace
    /// `i` a watcher (or none). `on_finished` sees each trace that ended (naturally or by its
    /// watcher) in the order they end; `Stop` cancels every trace in flight and launches no
    /// more. Returns every launched trace in index order, cancelled ones included.
    pub async fn run(
        &self,
        backend: &Arc<dyn Backend>,
        indices: Range<usize>,
        parallelism: usize,
        mut watch: impl FnMut(usize) -> Option<Box<dyn TokenWatch>>,
        mut on_finished: impl FnMut(&SampledTrace) -> Decision,
    ) -> Result<Vec<SampledTrace>, StrategyError> {
        let parallelism = parallelism.max(1);
        let mut pending = indices.clone();
        let mut in_flight = FuturesUnordered::new();
        let mut launched: BTreeMap<usize, u64> = BTreeMap::new();
        let mut done: BTreeMap<usize, SampledTrace> = BTreeMap::new();
        loop {
            while in_flight.len() < parallelism {
                let Some(i) = pending.next() else { break };
                let seed = self.base_seed.wrapping_add(i as u64);
                launched.insert(i, seed);
                in_flight.push(self.trace(backend, i, seed, watch(i)));
            }
            let Some(result) = in_flight.next().await else {
                break;
            };
            let trace = result?;
            let decision = on_finished(&trace);
            done.insert(trace.index, trace);
            if decision == Decision::Stop {
                break;
            }
        }
        // Dropping the futures drops their streams, which stops the upstream work.
        drop(in_flight);
        Ok(launched
            .into_iter()
            .map(|(i, seed)| {
                done.remove(&i).unwrap_or(SampledTrace {
                    index: i,
                    seed,
                    text: String::new(),
                    tokens: Vec::new(),
                    completion_tokens: 0,
                    finish_reason: FinishReason::Aborted,
                    end: TraceEnd::Cancelled,
                })
            })
            .collect())
    }

    async fn trace(
        &self,
        backend: &Arc<dyn Backend>,
        index: usize,
        seed: u64,
        mut watch: Option<Box<dyn TokenWatch>>,
    ) -> Result<SampledTrace, StrategyError> {
        let mut params = self.params.clone();
        params.n = 1;
        params.seed = Some(seed);
        let mut stream = backend
            .stream(GenerationRequest::new(self.prompt.clone(), params))
            .await?;
        let mut trace = SampledTrace {
            index,
            seed,
            text: String::new(),
            tokens: Vec::new(),
            completion_tokens: 0,
            finish_reason: FinishReason::Error,
            end: TraceEnd::Finished,
        };
        let mut finished = false;
        let mut reported_tokens = None;
        while let Some(event) = stream.next_event().await {
            match event {
                Ok(StreamEvent::Delta {
                    text,
                    token_count,
                    tokens,
                    ..
                }) => {
                    trace.text.push_str(&text);
                    trace.completion_tokens += u64::from(token_count);
                    let verdict = watch.as_mut().map_or(Decision::Continue, |w| {
                        w.on_delta(&text, &tokens, token_count)
                    });
                    trace.tokens.extend(tokens);
                    if verdict == Decision::Stop && !finished {
                        stream.stop();
                        trace.finish_reason = FinishReason::Aborted;
                        trace.end = TraceEnd::Watched;
                        return Ok(trace);
                    }
                }
                Ok(StreamEvent::Finished { reason, .. }) => {
                    trace.finish_reason = reason;
                    finished = true;
                }
                Ok(StreamEvent::Usage(usage)) => reported_tokens = Some(usage.completion_tokens),
                // A stream that breaks after it started is model output cut short, not a
                // failure of the run.
                Err(_) => {
                    trace.finish_reason = FinishReason::Error;
                    break;
                }
            }
        }
        if let Some(t) = reported_tokens {
            trace.completion_tokens = t;
        }
        Ok(trace)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use ponder_core::{BackendError, BoxFuture, Capabilities, CompletionStream, Message};

    use super::*;

    /// Streams `tokens` deltas "t" per trace, one every millisecond; trace seed s answers
    /// with `s`. Counts open streams.
    struct Ticker {
        tokens: usize,
        open: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    struct Open(Arc<AtomicUsize>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Backend for Ticker {
        fn name(&self) -> &str {
            "ticker"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: None,
                multiple_samples: false,
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
            let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let guard = Open(self.open.clone());
            let seed = request.params.seed.unwrap_or(0);
            let tokens = self.tokens + seed as usize % 3;
            let events =
                futures_util::stream::unfold((0usize, guard), move |(k, guard)| async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let event = if k < tokens {
                        StreamEvent::Delta {
                            index: 0,
                            text: if k + 1 == tokens {
                                format!(" {seed}")
                            } else {
                                "t".into()
                            },
                            token_count: 1,
                            tokens: vec![],
                        }
                    } else if k == tokens {
                        StreamEvent::Finished {
                            index: 0,
                            reason: FinishReason::Stop,
                            stop: None,
                        }
                    } else {
                        return None;
                    };
                    Some((Ok(event), (k + 1, guard)))
                });
            Box::pin(async move { Ok(CompletionStream::new(1, events)) })
        }
    }

    fn sampler() -> Sampler {
        Sampler {
            prompt: Prompt::Chat {
                messages: vec![Message::user("q")],
                continue_final_message: false,
            },
            params: SamplingParams::default(),
            base_seed: 100,
        }
    }

    fn ticker(tokens: usize) -> (Arc<dyn Backend>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let b: Arc<dyn Backend> = Arc::new(Ticker {
            tokens,
            open: open.clone(),
            most: most.clone(),
        });
        (b, open, most)
    }

    #[tokio::test]
    async fn runs_every_trace_with_bounded_parallelism() {
        let (b, open, most) = ticker(5);
        let traces = sampler()
            .run(&b, 0..10, 3, |_| None, |_| Decision::Continue)
            .await
            .expect("runs");
        assert_eq!(traces.len(), 10);
        for (i, t) in traces.iter().enumerate() {
            assert_eq!(t.index, i);
            assert_eq!(t.seed, 100 + i as u64);
            assert_eq!(t.end, TraceEnd::Finished);
            assert_eq!(t.finish_reason, FinishReason::Stop);
            assert!(t.text.ends_with(&format!(" {}", 100 + i)), "{}", t.text);
        }
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(open.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn stop_cancels_the_traces_in_flight() {
        let (b, open, _) = ticker(50);
        let mut seen = 0;
        let traces = sampler()
            .run(
                &b,
                0..20,
                4,
                |_| None,
                |_| {
                    seen += 1;
                    if seen == 2 {
                        Decision::Stop
                    } else {
                        Decision::Continue
                    }
                },
            )
            .await
            .expect("runs");
        // Four launched at first; each finished one was replaced until the second finish.
        let finished = traces
            .iter()
            .filter(|t| t.end == TraceEnd::Finished)
            .count();
        let cancelled: Vec<&SampledTrace> = traces
            .iter()
            .filter(|t| t.end == TraceEnd::Cancelled)
            .collect();
        assert_eq!(finished, 2);
        assert_eq!(
            traces.len(),
            5,
            "4 + 1 replacement launched before the stop"
        );
        assert_eq!(cancelled.len(), 3);
        assert!(cancelled
            .iter()
            .all(|t| t.finish_reason == FinishReason::Aborted && t.text.is_empty()));
        assert_eq!(
            open.load(Ordering::SeqCst),
            0,
            "cancelled streams were dropped"
        );
    }

    #[tokio::test]
    async fn a_watcher_stops_its_trace() {
        struct After(u32);
        impl TokenWatch for After {
            fn on_delta(&mut self, _: &str, _: &[TokenLogprob], n: u32) -> Decision {
                self.0 = self.0.saturating_sub(n);
                if self.0 == 0 {
                    Decision::Stop
                } else {
                    Decision::Continue
                }
            }
        }
        let (b, open, _) = ticker(30);
        let traces = sampler()
            .run(
                &b,
                0..4,
                4,
                |i| (i % 2 == 0).then(|| Box::new(After(7)) as Box<dyn TokenWatch>),
                |_| Decision::Continue,
            )
            .await
            .expect("runs");
        for t in &traces {
            if t.index % 2 == 0 {
                assert_eq!(t.end, TraceEnd::Watched);
                assert_eq!(t.finish_reason, FinishReason::Aborted);
                assert_eq!(t.completion_tokens, 7);
                assert_eq!(t.text, "ttttttt");
            } else {
                assert_eq!(t.end, TraceEnd::Finished);
            }
        }
        assert_eq!(open.load(Ordering::SeqCst), 0);
    }
}
