//! Counters of what the simulated server did, readable in-process and at `GET /stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the server's counters. Token counts are in the simulator's tokenizer
/// ([`crate::tokenizer`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests to the generation and pooling endpoints, rejected ones included.
    pub requests: u64,
    /// Of those, to `/v1/chat/completions`.
    pub chat_requests: u64,
    /// Of those, to `/v1/completions`.
    pub completion_requests: u64,
    /// Of those, to `/pooling` or `/v1/pooling`.
    pub pooling_requests: u64,
    /// Choices generated to their end (finish reason `stop` or `length`) and delivered.
    pub completions: u64,
    /// Prompt tokens of accepted generation requests (counted once per request, whatever `n`).
    pub prompt_tokens: u64,
    /// Of those, tokens served from the simulated prefix cache.
    pub cached_tokens: u64,
    /// Completion tokens produced: returned in a body, or generated for a stream before it
    /// ended or its client left.
    pub tokens_generated: u64,
    /// Streaming responses begun.
    pub streams_started: u64,
    /// Streams that reached `[DONE]`.
    pub streams_completed: u64,
    /// Streams whose client went away before the end.
    pub streams_aborted: u64,
    /// Planned completion tokens never produced because the client left.
    pub tokens_not_generated: u64,
    /// Requests answered with an injected error status.
    pub errors_injected: u64,
    /// Requests stalled before their first byte.
    pub stalls_injected: u64,
    /// Responses cut off on purpose.
    pub cuts_injected: u64,
    /// Responses given invalid JSON on purpose.
    pub malformed_injected: u64,
    /// Requests refused as invalid (400 and 404 answers).
    pub invalid_requests: u64,
    /// Step rows returned by the pooling endpoints.
    pub pooling_rows: u64,
    /// Generations holding a slot now.
    pub active: u64,
    /// Most generations that held a slot at once.
    pub active_peak: u64,
    /// Generations waiting for a slot now.
    pub queued: u64,
}

/// The live counters behind [`SimStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub chat_requests: AtomicU64,
    pub completion_requests: AtomicU64,
    pub pooling_requests: AtomicU64,
    pub completions: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub tokens_generated: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    pub streams_aborted: AtomicU64,
    pub tokens_not_generated: AtomicU64,
    pub errors_injected: AtomicU64,
    pub stalls_injected: AtomicU64,
    pub cuts_injected: AtomicU64,
    pub malformed_injected: AtomicU64,
    pub invalid_requests: AtomicU64,
    pub pooling_rows: AtomicU64,
    pub active: AtomicU64,
    pub active_peak: AtomicU64,
    pub queued: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            requests: get(&self.requests),
            chat_requests: get(&self.chat_requests),
            completion_requests: get(&self.completion_requests),
            pooling_requests: get(&self.pooling_requests),
            completions: get(&self.completions),
            prompt_tokens: get(&self.prompt_tokens),
            cached_tokens: get(&self.cached_tokens),
            tokens_generated: get(&self.tokens_generated),
            streams_started: get(&self.streams_started),
            streams_completed: get(&self.streams_completed),
            streams_aborted: get(&self.streams_aborted),
            tokens_not_generated: get(&self.tokens_not_generated),
            errors_injected: get(&self.errors_injected),
            stalls_injected: get(&self.stalls_injected),
            cuts_injected: get(&self.cuts_injected),
            malformed_injected: get(&self.malformed_injected),
            invalid_requests: get(&self.invalid_requests),
            pooling_rows: get(&self.pooling_rows),
            active: get(&self.active),
            active_peak: get(&self.active_peak),
            queued: get(&self.queued),
        }
    }

    /// A generation took a slot.
    pub fn enter_active(&self) {
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.active_peak.fetch_max(now, Ordering::Relaxed);
    }

    /// A generation gave its slot back.
    pub fn leave_active(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}
