//! Answer handling: extraction from model text, normalisation and equivalence, the math grader,
//! and voting.
//!
//! Model output is data: nothing here returns an error or panics on odd text, and every
//! comparison is bounded in time and size.

pub mod equivalence;
pub mod expr;
pub mod extract;
pub mod grade;
pub mod latex;
pub mod poly;
pub mod vote;

pub use equivalence::{equivalent, normalize, AnswerKey};
pub use extract::{
    extract_answer, extract_with, last_boxed, ExtractOptions, ExtractSettings, Extracted,
    Extractor, Method,
};
pub use grade::{grade, is_correct, Form, Grade, GradeOptions, Verdict};
pub use vote::{vote, Cluster, TieBreak, Vote, VoteOptions};
