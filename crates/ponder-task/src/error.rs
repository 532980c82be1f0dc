//! Errors of the task crate: unknown difficulty names and unreadable dataset records.
//!
//! Model output is never a reason for an error here: [`crate::parse_question`],
//! [`crate::parse_step_line`] and [`crate::check_solution`] return values, not `Err`.

/// Failure to read a difficulty name or a dataset record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("unknown difficulty `{given}`: expected one of easy, medium, hard")]
    UnknownDifficulty { given: String },
    #[error("invalid task record: field `{field}` {reason}")]
    InvalidRecord { field: &'static str, reason: String },
}
