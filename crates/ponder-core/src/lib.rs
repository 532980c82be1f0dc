//! Ponder's core model: requests, completions, streams, backends, strategies and their cost.
//!
//! This crate knows nothing about HTTP, servers or tensors (a test in `tests/layering.rs`
//! enforces it). Backends (the OpenAI-compatible HTTP client, the embedded engine) implement
//! [`Backend`]; strategies implement [`Strategy`] and see backends only through that trait.

pub mod backend;
pub mod completion;
pub mod cost;
pub mod error;
pub mod request;
pub mod rng;
pub mod stop;
pub mod strategy;
pub mod stream;

pub use backend::{Backend, BoxFuture, Capabilities, Capability, RewardRequest, RewardResponse};
pub use completion::{
    Completion, FinishReason, GenerationResponse, TokenLogprob, TopLogprob, Usage,
};
pub use cost::{CostMeter, Metered, RunCost};
pub use error::{BackendError, BuildError, InvalidRequest, StrategyError};
pub use request::{GenerationRequest, Message, Prompt, Role, SamplingParams, MAX_TOP_LOGPROBS};
pub use rng::{stable_hash, SeededRng};
pub use stop::{StopMatcher, StopScan};
pub use strategy::{
    parse_param_value, parse_params, run_strategy, Candidate, ParamSpec, Params, Strategy,
    StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome, StrategyResult,
};
pub use stream::{CompletionStream, StreamAccumulator, StreamEvent};
