//! The strategy contract: a built strategy turns a question into an answer through a backend.
//!
//! A strategy is configured and checked once ([`StrategyFactory::build`], which fails on a
//! missing capability or a bad parameter), then run any number of times, concurrently, each run
//! against a metered backend so that its cost is reported with its result ([`run_strategy`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BoxFuture, Capabilities, Capability};
use crate::completion::FinishReason;
use crate::cost::{Metered, RunCost};
use crate::error::{BuildError, StrategyError};
use crate::request::Message;

/// What a strategy is asked to solve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyInput {
    /// The chat to answer (system prompt, if any, and the question).
    pub messages: Vec<Message>,
    /// Base seed of the run; sample `i` uses `seed + i`, other random choices derive from it.
    pub seed: u64,
}

/// One candidate a strategy considered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub text: String,
    /// The extracted answer; `None` when the text has none.
    pub answer: Option<String>,
    /// Votes of the answer cluster this candidate belongs to (voting strategies).
    pub votes: Option<u32>,
    /// The candidate's score (reward, confidence), when the strategy computes one.
    pub score: Option<f64>,
    pub finish_reason: FinishReason,
    /// Completion tokens of this candidate, when known.
    pub completion_tokens: Option<u64>,
}

/// What a strategy decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyOutcome {
    /// The chosen answer; `None` when no candidate produced one.
    pub answer: Option<String>,
    /// The index into `candidates` of the selected trace, if any.
    pub selected: Option<usize>,
    pub candidates: Vec<Candidate>,
    /// Strategy-specific details (vote distribution, thresholds, …).
    pub details: serde_json::Value,
}

/// An outcome with its cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyResult {
    pub strategy: String,
    #[serde(flatten)]
    pub outcome: StrategyOutcome,
    pub cost: RunCost,
}

/// A built, validated strategy. Cheap to share; runs may overlap.
pub trait Strategy: Send + Sync {
    fn name(&self) -> &str;

    /// Solves one input through `backend` (already metered by the caller).
    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>>;
}

/// Runs `strategy` on `input`, metering every backend call, and returns the outcome with its cost.
pub async fn run_strategy(
    strategy: &dyn Strategy,
    backend: Arc<dyn Backend>,
    input: &StrategyInput,
) -> Result<StrategyResult, StrategyError> {
    let started = Instant::now();
    let metered = Metered::new(backend);
    let meter = metered.meter();
    let metered: Arc<dyn Backend> = Arc::new(metered);
    let outcome = strategy.run(&metered, input).await?;
    drop(metered);
    Ok(StrategyResult {
        strategy: strategy.name().to_string(),
        outcome,
        cost: meter.snapshot(started, input.seed),
    })
}

/// One parameter as `ponder strategies` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    pub name: &'static str,
    /// The default, as the user would write it.
    pub default: &'static str,
    pub description: &'static str,
}

/// A strategy's name, parameters and needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: Vec<ParamSpec>,
    /// Capabilities the backend must have.
    pub requires: Vec<Capability>,
}

/// Parameter values as the user gave them (`--set key=value`, a config file, a request body).
pub type Params = BTreeMap<String, serde_json::Value>;

/// Parses a `--set` value: JSON when it parses (`8`, `0.7`, `true`, `["a"]`), else a string.
pub fn parse_param_value(raw: &str) -> serde_json::Value {
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()))
}

/// Builds a strategy from parameters after checking them and the backend's capabilities.
pub trait StrategyFactory: Send + Sync {
    fn info(&self) -> StrategyInfo;

    /// Validates `params` and builds the strategy for a backend with `capabilities`.
    fn build(
        &self,
        params: &Params,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError>;

    /// Fails with the first capability of [`StrategyFactory::info`] the backend lacks.
    fn check_capabilities(
        &self,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<(), BuildError> {
        let info = self.info();
        match info.requires.iter().find(|c| !capabilities.has(**c)) {
            Some(missing) => Err(BuildError::MissingCapability {
                strategy: info.name.to_string(),
                backend: backend_name.to_string(),
                capability: *missing,
            }),
            None => Ok(()),
        }
    }
}

/// Deserialises `params` into a strategy's config type (which should use
/// `#[serde(deny_unknown_fields)]`), mapping serde's message to a [`BuildError`] naming the key.
pub fn parse_params<T: serde::de::DeserializeOwned>(
    strategy: &str,
    params: &Params,
    known: &[ParamSpec],
) -> Result<T, BuildError> {
    let names: Vec<&str> = known.iter().map(|p| p.name).collect();
    if let Some(unknown) = params.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(BuildError::UnknownParam {
            strategy: strategy.to_string(),
            param: unknown.clone(),
            known: names.join(", "),
        });
    }
    let object: serde_json::Map<String, serde_json::Value> =
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(|e| {
        let message = e.inner().to_string();
        // The path names the parameter whose value failed; a failure of the whole object
        // (a missing required key) has none, so fall back to a key the message names.
        let path = e.path().to_string();
        let first = path.split(['.', '[']).next().unwrap_or("");
        let param = names
            .iter()
            .find(|n| **n == first)
            .or_else(|| names.iter().find(|n| message.contains(&format!("`{n}`"))))
            .map(|n| n.to_string())
            .unwrap_or_else(|| names.join("/"));
        BuildError::InvalidParam {
            strategy: strategy.to_string(),
            param,
            reason: message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_parse_as_json_or_string() {
        assert_eq!(parse_param_value("8"), serde_json::json!(8));
        assert_eq!(parse_param_value("0.5"), serde_json::json!(0.5));
        assert_eq!(parse_param_value("majority"), serde_json::json!("majority"));
        assert_eq!(parse_param_value("[1,2]"), serde_json::json!([1, 2]));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(default)]
        n: u32,
    }

    const DEMO: &[ParamSpec] = &[ParamSpec {
        name: "n",
        default: "1",
        description: "count",
    }];

    #[test]
    fn unknown_and_invalid_params_are_named() {
        let mut p = Params::new();
        p.insert("m".into(), serde_json::json!(3));
        match parse_params::<Demo>("demo", &p, DEMO) {
            Err(BuildError::UnknownParam { param, known, .. }) => {
                assert_eq!(param, "m");
                assert_eq!(known, "n");
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut p = Params::new();
        p.insert("n".into(), serde_json::json!("many"));
        match parse_params::<Demo>("demo", &p, DEMO) {
            Err(BuildError::InvalidParam { param, .. }) => assert_eq!(param, "n"),
            other => panic!("unexpected {other:?}"),
        }
        let mut p = Params::new();
        p.insert("n".into(), serde_json::json!(4));
        assert_eq!(parse_params::<Demo>("demo", &p, DEMO).map(|d| d.n), Ok(4));
    }

    #[test]
    fn a_wrong_type_names_its_own_param_among_several() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Two {
            #[serde(default)]
            n: u32,
            #[serde(default)]
            temperature: f64,
        }
        let specs = [
            ParamSpec {
                name: "n",
                default: "8",
                description: "",
            },
            ParamSpec {
                name: "temperature",
                default: "0.7",
                description: "",
            },
        ];
        let mut p = Params::new();
        p.insert("n".into(), serde_json::json!(4));
        p.insert("temperature".into(), serde_json::json!("hot"));
        match parse_params::<Two>("demo", &p, &specs) {
            Err(BuildError::InvalidParam { param, .. }) => assert_eq!(param, "temperature"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
