//! Evaluation: datasets, the runner, summaries and reports, re-scoring of saved samples, and
//! the replay backend that serves saved traces to strategies offline.

pub mod replay;
pub mod rescore;
