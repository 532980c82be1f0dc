//! OpenAI-compatible wire types and the HTTP backend for vLLM, SGLang, the llama.cpp server,
//! OpenAI and compatible services.
//!
//! - [`wire`]: the JSON bodies at the edge (requests, responses, streamed chunks, logprobs,
//!   error bodies, pooling), with hand-written conversions to and from `ponder_core` types.
//!   Ponder's own server reuses them.
//! - [`sse`]: an incremental Server-Sent Events parser.
//! - [`OpenAiBackend`] (module `backend`): [`ponder_core::Backend`] over one or more replicas,
//!   with retries, replica ejection, `n` splitting, client-side stop strings and process reward
//!   models through the pooling API; configured by [`OpenAiConfig`].

mod backend;
pub mod config;
pub mod sse;
pub mod wire;

pub use backend::OpenAiBackend;
pub use config::{
    Api, ConfigError, NMode, OpenAiConfig, RewardConfig, RewardFormat, QWEN_MATH_SYSTEM_PROMPT,
};
