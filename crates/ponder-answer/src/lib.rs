//! Answer handling: extraction from model text, normalisation and equivalence, and voting.
//!
//! Model output is data: nothing here returns an error or panics on odd text.

pub mod equivalence;
pub mod extract;
pub mod vote;

pub use equivalence::{equivalent, normalize, AnswerKey};
pub use extract::{extract_answer, last_boxed, ExtractOptions, Extracted, Method};
pub use vote::{vote, Cluster, TieBreak, Vote, VoteOptions};
