//! Evaluation: datasets, the runner, summaries and reports, re-scoring of saved samples, and
//! the replay backend that serves saved traces to strategies offline.
//!
//! The crate sees backends and strategies only through `ponder_core`'s traits (it takes an
//! `Arc<dyn Backend>` and an `Arc<dyn Strategy>`); the CLI builds them. It reaches no transport.
//!
//! - [`dataset`]: presets and the JSONL loader.
//! - [`record`]: the per-problem record of `records.jsonl`.
//! - [`store`]: a run's directory (`run.json`, `records.jsonl`, `summary.json`), resume.
//! - [`shard`]: `--shard I/N`.
//! - [`runner`]: concurrent solving with a single writer.
//! - [`summary`]: accuracy with a Wilson interval, pass@k, maj@k, tokens, latency.
//! - [`report`]: merging shards, comparing runs, the HTML page and its SVG plot.

pub mod dataset;
pub mod record;
pub mod replay;
pub mod report;
pub mod rescore;
pub mod runner;
pub mod shard;
pub mod store;
pub mod summary;

pub use dataset::{choose, preset_names, Dataset, EvalProblem, FieldOverrides, LoadOptions};
pub use record::{Record, RecordCandidate, RecordUsage};
pub use shard::Shard;
pub use store::{RunDir, RunSettings};
pub use summary::{summarize, Summary};
