//! Errors: build-time problems (naming the YAML path and line), stage failures and function
//! failures. Model output is never a reason for an error (see `parse`).

use ponder_core::BackendError;

use crate::item::{PipelineType, StageType};
use crate::template::TemplateError;

/// A workflow that cannot be built; `path` is the YAML key path (`ttc_strategies.pick.k`),
/// `line` its line in the file when it could be located.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {kind}", display_path(path), display_line(*line))]
pub struct BuildError {
    pub path: String,
    pub line: Option<usize>,
    pub kind: BuildErrorKind,
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "workflow file".to_string()
    } else {
        format!("`{path}`")
    }
}

fn display_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl BuildError {
    /// An error at `path` (the line is filled in by the loader when it knows the file).
    pub fn at(path: impl Into<String>, kind: BuildErrorKind) -> Self {
        BuildError {
            path: path.into(),
            line: None,
            kind,
        }
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildErrorKind {
    #[error("{message}")]
    Syntax { message: String },
    #[error("{message}")]
    Field { message: String },
    #[error("unknown section (known: general, llms, functions, strategies, its_strategies, ttc_strategies, workflow)")]
    UnknownSection,
    #[error("missing `_type`")]
    MissingType,
    #[error("unknown {what} type `{name}` (known: {known})")]
    UnknownType {
        what: &'static str,
        name: String,
        known: String,
    },
    #[error("{what} type `{name}` is registered twice")]
    DuplicateType { what: &'static str, name: String },
    #[error("`{name}` is declared in both `its_strategies` and `ttc_strategies`")]
    DuplicateName { name: String },
    #[error("unknown {what} `{name}` (known: {known})")]
    UnknownReference {
        what: &'static str,
        name: String,
        known: String,
    },
    #[error("strategy `{strategy}` ({strategy_type}) is a {actual} strategy, but this slot takes a {expected} strategy")]
    WrongStage {
        strategy: String,
        strategy_type: String,
        actual: StageType,
        expected: StageType,
    },
    #[error("strategy `{strategy}` ({strategy_type}) does not support the {pipeline} pipeline (supported: {supported})")]
    UnsupportedPipeline {
        strategy: String,
        strategy_type: String,
        pipeline: PipelineType,
        supported: String,
    },
    #[error(
        "strategy `{strategy}` ({strategy_type}) needs `{needs}`, which this slot does not provide"
    )]
    MissingContext {
        strategy: String,
        strategy_type: String,
        needs: &'static str,
    },
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    #[error("out of range: {reason}")]
    Range { reason: String },
    #[error("invalid stage chain: {reason}")]
    Chain { reason: String },
    #[error("reference cycle: {chain}")]
    Cycle { chain: String },
    #[error("cannot create LLM `{name}`: {message}")]
    Llm { name: String, message: String },
    #[error("no `workflow` section")]
    NoWorkflow,
}

/// Why a stage could not return items. Per-item failures are item status, not stage errors.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("strategy `{strategy}` got no candidates to work on")]
    NoCandidates { strategy: String },
    #[error("every call of strategy `{strategy}` failed: {}", messages.join("; "))]
    AllFailed {
        strategy: String,
        messages: Vec<String>,
    },
    #[error("strategy `{strategy}`: {reason}")]
    Invalid { strategy: String, reason: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Failure of a function call.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("function `{function}`, slot `{slot}`: {source}")]
    Stage {
        function: String,
        slot: String,
        #[source]
        source: StageError,
    },
    #[error("function `{function}`: {source}")]
    Backend {
        function: String,
        #[source]
        source: BackendError,
    },
    #[error("tool `{tool}` failed: {message}")]
    Tool { tool: String, message: String },
    #[error("tool `{tool}` timed out after {after_ms} ms")]
    Timeout { tool: String, after_ms: u64 },
    #[error("function `{function}`: not enough information to build its input: {reason}")]
    InsufficientInformation { function: String, reason: String },
    #[error("function `{function}`: invalid input: {reason}")]
    InvalidInput { function: String, reason: String },
    #[error("function `{function}`: {reason}")]
    Output { function: String, reason: String },
    #[error("function `{function}`: every execution failed: {}", messages.join("; "))]
    AllFailed {
        function: String,
        messages: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_error_names_path_and_line() {
        let e = BuildError {
            path: "workflow.scorer".into(),
            line: Some(12),
            kind: BuildErrorKind::WrongStage {
                strategy: "pick".into(),
                strategy_type: "best_of_n_selection".into(),
                actual: StageType::Selection,
                expected: StageType::Scoring,
            },
        };
        assert_eq!(
            e.to_string(),
            "`workflow.scorer` (line 12): strategy `pick` (best_of_n_selection) is a selection \
             strategy, but this slot takes a scoring strategy"
        );
    }
}
