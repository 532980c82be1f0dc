//! Errors of the engine crate.

use crate::gguf::GgufError;
use crate::template::TemplateError;

/// Why the engine could not load a model or serve a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    File(#[from] GgufError),
    #[error("cannot load model {path}: {message}")]
    Load { path: String, message: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("model {path} is not a process reward model: {reason}")]
    NotPrm { path: String, reason: String },
    #[error("the engine's worker thread has stopped")]
    Stopped,
}
