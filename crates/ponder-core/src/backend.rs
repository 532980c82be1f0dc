//! The backend trait: anything that generates completions (an HTTP server, the embedded engine).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::completion::GenerationResponse;
use crate::error::BackendError;
use crate::request::GenerationRequest;
use crate::stream::CompletionStream;

/// A boxed, sendable future, for object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A capability a strategy may need from its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Per-token log-probabilities with top-k alternatives.
    Logprobs,
    /// Several completions of one prompt in one call (`n > 1`) sharing the prefill.
    MultipleSamples,
    /// Continuing a partial answer (raw-prompt completion or assistant prefill).
    PrefixContinuation,
    /// Per-step scores from a process reward model.
    ProcessRewards,
    /// Token-by-token streaming with early stop.
    Streaming,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Logprobs => "logprobs",
            Capability::MultipleSamples => "multiple_samples",
            Capability::PrefixContinuation => "prefix_continuation",
            Capability::ProcessRewards => "process_rewards",
            Capability::Streaming => "streaming",
        })
    }
}

/// What a backend can do. Strategies check these when they are built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Largest `top_logprobs` the backend returns; `None` means no log-probabilities at all.
    pub max_top_logprobs: Option<u8>,
    /// `n > 1` is served natively. Backends without it still accept `n > 1` and split it into
    /// single requests; this flag says whether the prefill is shared.
    pub multiple_samples: bool,
    /// Raw-prompt continuation or assistant prefill is available.
    pub prefix_continuation: bool,
    /// A process reward model can score steps.
    pub process_rewards: bool,
    /// Streaming with early stop is available.
    pub streaming: bool,
    /// Most stop strings the backend enforces itself; the rest are matched client-side.
    /// `None`: no limit.
    pub max_stop_strings: Option<usize>,
}

impl Capabilities {
    /// Whether this backend offers `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::Logprobs => self.max_top_logprobs.is_some(),
            Capability::MultipleSamples => self.multiple_samples,
            Capability::PrefixContinuation => self.prefix_continuation,
            Capability::ProcessRewards => self.process_rewards,
            Capability::Streaming => self.streaming,
        }
    }
}

/// One request to a process reward model: a question and the steps of a partial solution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardRequest {
    pub question: String,
    pub steps: Vec<String>,
}

/// Per-step rewards in [0, 1], one per step sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardResponse {
    pub step_rewards: Vec<f64>,
    pub prompt_tokens: u64,
}

/// Something that generates completions.
///
/// Two methods are required: [`Backend::capabilities`] and [`Backend::stream`]. The others have
/// provided versions that backends override when they can do better (a non-streaming call, a
/// native reward endpoint).
pub trait Backend: Send + Sync {
    /// A short name for messages (`http://127.0.0.1:8000/v1`, `engine:model.gguf`).
    fn name(&self) -> &str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Starts a generation whose events arrive as they are produced. Dropping or stopping the
    /// returned stream stops the upstream work (asynchronously).
    fn stream(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<CompletionStream, BackendError>>;

    /// Generates all completions of a request.
    fn generate(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<GenerationResponse, BackendError>> {
        Box::pin(async move { self.stream(request).await?.collect().await })
    }

    /// Scores the steps of partial solutions with a process reward model.
    fn rewards(
        &self,
        requests: Vec<RewardRequest>,
    ) -> BoxFuture<'_, Result<Vec<RewardResponse>, BackendError>> {
        let _ = requests;
        Box::pin(async move {
            Err(BackendError::Unsupported {
                backend: self.name().to_string(),
                capability: Capability::ProcessRewards,
            })
        })
    }
}
