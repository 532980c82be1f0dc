//! Completions: generated text, per-token log-probabilities, finish reasons and usage.

use serde::{Deserialize, Serialize};

/// One alternative at a token position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    /// Natural-log probability. Servers may report very unlikely tokens as −9999.
    pub logprob: f64,
}

/// The record of one generated token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    /// The sampled token's logprob; `None` when the server sent `null` (never a magic number).
    pub logprob: Option<f64>,
    /// The top-k alternatives, most likely first (as the server ordered them).
    pub top: Vec<TopLogprob>,
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop string, EOS or the end of the turn.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
    /// The client stopped the generation early (a strategy decided it was no longer needed).
    Aborted,
    /// The generation failed part-way (stream cut, server error after the first token).
    Error,
}

impl FinishReason {
    /// Maps an OpenAI `finish_reason` string; unknown values (`content_filter`, `tool_calls`, …)
    /// count as a normal stop.
    pub fn from_openai(reason: &str) -> Self {
        match reason {
            "length" => FinishReason::Length,
            "abort" | "aborted" | "cancelled" => FinishReason::Aborted,
            "error" => FinishReason::Error,
            _ => FinishReason::Stop,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Aborted => "aborted",
            FinishReason::Error => "error",
        }
    }
}

/// Token counts as the server reported them (or as Ponder counted them where it did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from a prefix cache, when the server reports it.
    pub cached_tokens: Option<u64>,
}

impl Usage {
    /// Adds `other` into `self`; cached tokens stay `None` only if both are `None`.
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens = match (self.cached_tokens, other.cached_tokens) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
    }
}

/// One generated completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Position among the request's `n` completions.
    pub index: u32,
    /// The text, without a matched stop string.
    pub text: String,
    /// Per-token records when log-probabilities were requested.
    pub tokens: Option<Vec<TokenLogprob>>,
    pub finish_reason: FinishReason,
    /// The stop string that ended the completion, when known.
    pub stop: Option<String>,
    /// Tokens generated for this completion (including a matched stop string's tokens), when known.
    pub completion_tokens: Option<u64>,
}

impl Completion {
    /// A finished completion with just text (handy in tests and simple backends).
    pub fn text(index: u32, text: impl Into<String>, finish_reason: FinishReason) -> Self {
        Completion {
            index,
            text: text.into(),
            tokens: None,
            finish_reason,
            stop: None,
            completion_tokens: None,
        }
    }
}

/// The answer to one [`GenerationRequest`](crate::GenerationRequest).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GenerationResponse {
    /// Completions ordered by `index`.
    pub completions: Vec<Completion>,
    /// Summed over every upstream request made for this call.
    pub usage: Usage,
    /// Upstream requests this call needed (more than one when `n > 1` was split), retries excluded.
    pub requests: u32,
    /// Upstream attempts that were retried.
    pub retries: u32,
}
