//! Agent-level test-time compute for Ponder: Search → Editing → Scoring → Selection pipelines
//! over plans, tool calls and agent outputs, pre-built functions, and YAML workflows.
//!
//! * [`item`]: the item record, pipeline and stage types.
//! * [`strategy`]: the strategy contract, the per-invocation context and per-use binding.
//! * [`strategies`]: the sixteen built-in strategies and their default templates.
//! * [`function`]: the function contract and basic functions (LLM chat, HTTP tool, command
//!   tool, closures); [`functions`]: the pre-built test-time-compute functions.
//! * [`registry`]: kinds by `_type` and the build-time [`registry::Builder`].
//! * [`workflow`]: workflow files, loading with validation, running.
//! * [`parse`]: robust marker parsing; [`template`]: checked prompt templates.
//! * [`llm`], [`run`]: LLM calls (metered, timed out, seeded, re-asked) and run state (trace,
//!   cost, events).
//!
//! LLMs are reached only through `Arc<dyn ponder_core::Backend>`; the crate builds no HTTP
//! backend itself (the `http_tool` function is the only HTTP client, for tools).
//!
//! Registering a custom strategy takes a config type and a factory:
//!
//! ```
//! use std::sync::Arc;
//! use ponder_agents::{Builder, Item, PipelineType, Registry, StageCtx, StageError, StageType, Strategy};
//! use ponder_core::BoxFuture;
//!
//! #[derive(serde::Deserialize)]
//! struct KeepShortest { max_len: usize }
//!
//! struct Shortest(usize);
//! impl Strategy for Shortest {
//!     fn kind(&self) -> &str { "keep_shortest" }
//!     fn stage(&self) -> StageType { StageType::Selection }
//!     fn pipelines(&self) -> &[PipelineType] { &[PipelineType::AgentExecution] }
//!     fn invoke<'a>(&'a self, items: Vec<Item>, _ctx: &'a StageCtx)
//!         -> BoxFuture<'a, Result<Vec<Item>, StageError>> {
//!         Box::pin(async move {
//!             Ok(items.into_iter().filter(|i| i.output_text().len() <= self.0).take(1).collect())
//!         })
//!     }
//! }
//!
//! let mut registry = Registry::builtin();
//! registry.register_strategy("keep_shortest", &[], StageType::Selection,
//!     &[PipelineType::AgentExecution],
//!     |c: KeepShortest, _b: &mut Builder<'_>| Ok(Arc::new(Shortest(c.max_len)) as Arc<dyn Strategy>))
//!     .expect("a new name");
//! ```

pub mod error;
pub mod function;
pub mod functions;
pub mod item;
pub mod llm;
pub mod parse;
pub mod registry;
pub mod run;
pub mod strategies;
pub mod strategy;
pub mod template;
pub mod testing;
pub mod workflow;

pub use error::{BuildError, BuildErrorKind, FunctionError, StageError};
pub use function::{ClosureFunction, Function, TextStream};
pub use item::{Item, ItemStatus, PipelineType, Provenance, StageType};
pub use llm::{BackendFactory, Llm, LlmConfig};
pub use registry::{Builder, Registry};
pub use run::{Cost, Event, RunCtx, StageRecord};
pub use strategy::{Bound, Fields, Needs, StageCtx, Strategy};
pub use workflow::{Loader, RunOutput, Workflow};
