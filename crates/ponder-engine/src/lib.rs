//! Ponder's embedded engine: GGUF models run in-process on llama.cpp, behind the same
//! [`ponder_core::Backend`] trait as HTTP servers.
//!
//! Test-time scaling re-reads the same prefixes all the time: `n` samples share a prompt, beam
//! candidates share a trajectory, a process reward model re-reads every partial solution. In
//! process, a prefix is decoded once and shared: forks copy no data (llama.cpp's unified KV
//! cache lets sequences share cells), a trie of cached token sequences finds the longest
//! reusable prefix of every request, rollback truncates a sequence, and the PRM scores new
//! steps only.
//!
//! * [`Engine`]: load a model, serve generations and rewards (`engine`).
//! * [`runner`]: the only module that touches llama.cpp types.
//! * [`sampler`], [`trie`], [`template`], [`gguf`]: pure Rust parts, tested without a model.
//! * `align` (private): text-aligned prefix reuse, matching cached token paths against a
//!   prompt's text.
//! * [`tiny`]: tiny random-weight models for tests and benchmarks.

mod align;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod runner;
pub mod sampler;
pub mod template;
pub mod tiny;
pub mod trie;

pub use engine::{prm_text, Engine, EngineConfig, EngineStats, ModelInfo, PrmTokens};
pub use error::EngineError;
pub use runner::{BatchItem, DecodeFailure, Runner, RunnerConfig};
