//! Streaming generation: events as tokens arrive, and a handle that stops the work upstream.
//!
//! # Stopping is asynchronous
//!
//! [`CompletionStream::stop`] (or dropping the stream) tells the backend to stop: the HTTP
//! backend closes the connection, the embedded engine frees the sequence. The upstream server
//! notices only when it next writes, so it may generate a few more tokens after the stop, and
//! tokens already in flight are discarded rather than delivered. Usage reported for a stopped
//! stream is what Ponder received, not what the server spent.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt;

use crate::completion::{Completion, FinishReason, GenerationResponse, TokenLogprob, Usage};
use crate::error::BackendError;

/// Something that happened on a generation stream. Events of different completions (`index`)
/// may interleave.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// New text for completion `index`, with the records of the tokens that produced it when
    /// log-probabilities were requested.
    Delta {
        index: u32,
        text: String,
        /// Tokens this delta stands for (servers send about one token per chunk).
        token_count: u32,
        /// Per-token records, when log-probabilities were requested.
        tokens: Vec<TokenLogprob>,
    },
    /// Completion `index` ended.
    Finished {
        index: u32,
        reason: FinishReason,
        /// The stop string that matched, when known.
        stop: Option<String>,
    },
    /// Token usage of the whole call (the final usage-only chunk).
    Usage(Usage),
}

type BoxedEvents = Pin<Box<dyn Stream<Item = Result<StreamEvent, BackendError>> + Send>>;

/// A running generation. Dropping it stops the generation (see the module docs: asynchronously).
pub struct CompletionStream {
    events: Option<BoxedEvents>,
    n: u32,
    /// Upstream requests made to open this stream.
    requests: u32,
    retries: u32,
}

impl fmt::Debug for CompletionStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionStream")
            .field("n", &self.n)
            .field("open", &self.events.is_some())
            .finish()
    }
}

impl CompletionStream {
    /// Wraps a stream of events for `n` completions. Dropping the inner stream must release the
    /// upstream work.
    pub fn new<S>(n: u32, events: S) -> Self
    where
        S: Stream<Item = Result<StreamEvent, BackendError>> + Send + 'static,
    {
        CompletionStream {
            events: Some(Box::pin(events)),
            n,
            requests: 1,
            retries: 0,
        }
    }

    /// Records how many upstream requests (and retries) opening this stream took.
    pub fn with_request_counts(mut self, requests: u32, retries: u32) -> Self {
        self.requests = requests;
        self.retries = retries;
        self
    }

    /// Number of completions on this stream.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// Upstream requests and retries made so far for this stream.
    pub fn request_counts(&self) -> (u32, u32) {
        (self.requests, self.retries)
    }

    /// The next event; `None` once the stream has ended or was stopped.
    pub async fn next_event(&mut self) -> Option<Result<StreamEvent, BackendError>> {
        let events = self.events.as_mut()?;
        let item = events.next().await;
        if item.is_none() {
            self.events = None;
        }
        item
    }

    /// Stops the generation: drops the upstream connection or sequence. Asynchronous: see the
    /// module docs.
    pub fn stop(&mut self) {
        self.events = None;
    }

    /// Reads the stream to its end and assembles the completions.
    pub async fn collect(mut self) -> Result<GenerationResponse, BackendError> {
        let mut acc = StreamAccumulator::new(self.n);
        while let Some(event) = self.next_event().await {
            acc.push(event?);
        }
        let mut response = acc.finish();
        response.requests = self.requests;
        response.retries = self.retries;
        Ok(response)
    }
}

impl Stream for CompletionStream {
    type Item = Result<StreamEvent, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(events) = self.events.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = events.as_mut().poll_next(cx);
        if let Poll::Ready(None) = polled {
            self.events = None;
        }
        polled
    }
}

/// Builds [`Completion`]s from stream events.
#[derive(Debug)]
pub struct StreamAccumulator {
    completions: Vec<Completion>,
    finished: Vec<bool>,
    usage: Option<Usage>,
}

impl StreamAccumulator {
    pub fn new(n: u32) -> Self {
        let completions = (0..n)
            .map(|index| Completion {
                index,
                text: String::new(),
                tokens: None,
                finish_reason: FinishReason::Error,
                stop: None,
                completion_tokens: Some(0),
            })
            .collect();
        StreamAccumulator {
            completions,
            finished: vec![false; n as usize],
            usage: None,
        }
    }

    fn slot(&mut self, index: u32) -> &mut Completion {
        let i = index as usize;
        while self.completions.len() <= i {
            let index = self.completions.len() as u32;
            self.completions
                .push(Completion::text(index, "", FinishReason::Error));
            self.completions[index as usize].completion_tokens = Some(0);
            self.finished.push(false);
        }
        &mut self.completions[i]
    }

    pub fn push(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Delta {
                index,
                text,
                token_count,
                tokens,
            } => {
                let c = self.slot(index);
                c.text.push_str(&text);
                *c.completion_tokens.get_or_insert(0) += u64::from(token_count);
                if !tokens.is_empty() {
                    c.tokens.get_or_insert_with(Vec::new).extend(tokens);
                }
            }
            StreamEvent::Finished {
                index,
                reason,
                stop,
            } => {
                let c = self.slot(index);
                c.finish_reason = reason;
                c.stop = stop;
                self.finished[index as usize] = true;
            }
            StreamEvent::Usage(u) => self.usage = Some(u),
        }
    }

    /// Completions that never saw their `Finished` event end as [`FinishReason::Error`].
    pub fn finish(self) -> GenerationResponse {
        let mut completions = self.completions;
        let usage = match self.usage {
            Some(u) => u,
            None => Usage {
                prompt_tokens: 0,
                completion_tokens: completions.iter().filter_map(|c| c.completion_tokens).sum(),
                cached_tokens: None,
            },
        };
        for (c, done) in completions.iter_mut().zip(self.finished) {
            if !done {
                c.finish_reason = FinishReason::Error;
            }
        }
        GenerationResponse {
            completions,
            usage,
            requests: 1,
            retries: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(index: u32, text: &str, n_tokens: usize) -> Result<StreamEvent, BackendError> {
        Ok(StreamEvent::Delta {
            index,
            text: text.into(),
            token_count: n_tokens as u32,
            tokens: vec![TokenLogprob::default(); n_tokens],
        })
    }

    #[tokio::test]
    async fn collect_interleaved_choices() {
        let events = vec![
            delta(0, "Step 1", 2),
            delta(1, "Hello", 1),
            delta(0, ": 2", 2),
            Ok(StreamEvent::Finished {
                index: 1,
                reason: FinishReason::Length,
                stop: None,
            }),
            Ok(StreamEvent::Finished {
                index: 0,
                reason: FinishReason::Stop,
                stop: Some("\n".into()),
            }),
            Ok(StreamEvent::Usage(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: Some(8),
            })),
        ];
        let stream = CompletionStream::new(2, futures_util::stream::iter(events));
        let r = stream.collect().await.expect("no error");
        assert_eq!(r.completions[0].text, "Step 1: 2");
        assert_eq!(r.completions[0].completion_tokens, Some(4));
        assert_eq!(r.completions[0].stop.as_deref(), Some("\n"));
        assert_eq!(r.completions[1].finish_reason, FinishReason::Length);
        assert_eq!(r.usage.cached_tokens, Some(8));
    }

    #[tokio::test]
    async fn a_cut_stream_ends_in_error_not_stop() {
        let stream = CompletionStream::new(1, futures_util::stream::iter(vec![delta(0, "x", 1)]));
        let r = stream.collect().await.expect("no error");
        assert_eq!(r.completions[0].finish_reason, FinishReason::Error);
        assert_eq!(r.usage.completion_tokens, 1);
    }

    #[tokio::test]
    async fn stop_drops_the_upstream() {
        struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for DropFlag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let events =
            futures_util::stream::unfold(
                flag,
                |flag| async move { Some((delta(0, "tok", 1), flag)) },
            );
        let mut stream = CompletionStream::new(1, events);
        assert!(stream.next_event().await.is_some());
        stream.stop();
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(stream.next_event().await.is_none());
    }
}
