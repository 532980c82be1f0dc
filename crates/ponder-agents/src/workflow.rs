//! Workflow files: YAML with `general`, `llms`, `functions`, `strategies` (also
//! `its_strategies` / `ttc_strategies`, merged) and `workflow`; loading, build-time validation
//! (errors name the YAML path and line) and running.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{BuildError, BuildErrorKind, FunctionError};
use crate::function::{Function, TextStream};
use crate::llm::{BackendFactory, Llm, LlmConfig};
use crate::registry::{Builder, Raw, Registry};
use crate::run::{Cost, RunCtx, StageRecord};
use crate::strategy::Strategy;

/// The `general` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneralConfig {
    /// Base seed of every run (a `--seed` flag overrides it). Default: 0.
    #[serde(default)]
    pub seed: Option<u64>,
    /// What the workflow does, for people. Default: none.
    #[serde(default)]
    pub description: Option<String>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowFile {
    #[serde(default)]
    general: GeneralConfig,
    #[serde(default)]
    llms: BTreeMap<String, Value>,
    #[serde(default)]
    functions: BTreeMap<String, Value>,
    #[serde(default)]
    strategies: BTreeMap<String, Value>,
    #[serde(default)]
    its_strategies: BTreeMap<String, Value>,
    #[serde(default)]
    ttc_strategies: BTreeMap<String, Value>,
    #[serde(default)]
    workflow: Option<Value>,
}

/// A built workflow: its root function plus every named component.
pub struct Workflow {
    root: Arc<dyn Function>,
    functions: BTreeMap<String, Arc<dyn Function>>,
    strategies: BTreeMap<String, Arc<dyn Strategy>>,
    general: GeneralConfig,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("strategies", &self.strategies.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a run returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunOutput {
    /// The root function's output.
    pub output: Value,
    /// Every stage's items in and out, in completion order.
    pub trace: Vec<StageRecord>,
    /// LLM cost of the whole run (stages and agents).
    pub cost: Cost,
    /// The seed that reproduces the run.
    pub seed: u64,
}

/// Loads workflows: a registry, a backend factory for `llms`, and functions supplied from Rust.
pub struct Loader<'a> {
    registry: &'a Registry,
    backends: &'a BackendFactory<'a>,
    functions: BTreeMap<String, Arc<dyn Function>>,
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> Loader<'a> {
    /// A loader over `registry` that creates each LLM's backend with `backends`.
    pub fn new(registry: &'a Registry, backends: &'a BackendFactory<'a>) -> Self {
        Loader {
            registry,
            backends,
            functions: BTreeMap::new(),
        }
    }

    /// Adds a function built in Rust (a closure, a custom tool) under `name`; workflow files
    /// reference it like any other function.
    pub fn with_function(mut self, name: impl Into<String>, f: Arc<dyn Function>) -> Self {
        self.functions.insert(name.into(), f);
        self
    }

    /// Loads and builds the workflow in `text` (the YAML of a workflow file).
    pub fn load_str(&self, text: &str) -> Result<Workflow, BuildError> {
        self.build(text).map_err(|mut e| {
            if e.line.is_none() {
                e.line = locate_line(text, &e.path);
            }
            e
        })
    }

    fn build(&self, text: &str) -> Result<Workflow, BuildError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let file: WorkflowFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut path = e.path().to_string();
            if path == "." {
                path.clear();
            }
            let message = e.inner().to_string();
            let line = e.inner().location().map(|l| l.line());
            let clean = match message.find(" at line ") {
                Some(p) => message[..p].to_string(),
                None => message,
            };
            let kind = if clean.starts_with("unknown field") && !path.contains('.') {
                if let Some(f) = clean.split('`').nth(1) {
                    path = f.to_string();
                }
                BuildErrorKind::UnknownSection
            } else {
                BuildErrorKind::Syntax { message: clean }
            };
            BuildError { path, line, kind }
        })?;
        // Strategies: three section names, one namespace.
        let mut raw_strategies = BTreeMap::new();
        for (section, entries) in [
            ("strategies", &file.strategies),
            ("its_strategies", &file.its_strategies),
            ("ttc_strategies", &file.ttc_strategies),
        ] {
            for (name, value) in entries {
                let path = format!("{section}.{name}");
                if raw_strategies.contains_key(name) {
                    return Err(BuildError::at(
                        path,
                        BuildErrorKind::DuplicateName { name: name.clone() },
                    ));
                }
                raw_strategies.insert(
                    name.clone(),
                    Raw {
                        path,
                        value: value.clone(),
                    },
                );
            }
        }
        let mut llms = BTreeMap::new();
        for (name, value) in &file.llms {
            let path = format!("llms.{name}");
            let config: LlmConfig =
                serde_path_to_error::deserialize(value.clone()).map_err(|e| {
                    let inner = e.path().to_string();
                    let p = if inner == "." {
                        path.clone()
                    } else {
                        format!("{path}.{inner}")
                    };
                    BuildError::at(
                        p,
                        BuildErrorKind::Field {
                            message: e.inner().to_string(),
                        },
                    )
                })?;
            if !matches!(config.kind.as_str(), "openai" | "nim") {
                return Err(BuildError::at(
                    format!("{path}._type"),
                    BuildErrorKind::UnknownType {
                        what: "llm",
                        name: config.kind.clone(),
                        known: "openai, nim".into(),
                    },
                ));
            }
            let backend = (self.backends)(name, &config).map_err(|message| {
                BuildError::at(
                    path.clone(),
                    BuildErrorKind::Llm {
                        name: name.clone(),
                        message,
                    },
                )
            })?;
            llms.insert(name.clone(), Llm::new(name.clone(), backend, config));
        }
        let raw_functions = file
            .functions
            .iter()
            .map(|(name, value)| {
                (
                    name.clone(),
                    Raw {
                        path: format!("functions.{name}"),
                        value: value.clone(),
                    },
                )
            })
            .collect();
        let mut b = Builder::new(
            self.registry,
            llms,
            raw_functions,
            raw_strategies,
            self.functions.clone(),
        );
        let Some(workflow) = file.workflow else {
            return Err(BuildError::at("workflow", BuildErrorKind::NoWorkflow));
        };
        let root_raw = Raw {
            path: "workflow".into(),
            value: workflow.clone(),
        };
        let root = match &workflow {
            // `workflow: name` reuses a function.
            Value::String(name) => b.function("workflow", name)?,
            _ => {
                b.set_path("workflow");
                let r = b.build_function_raw(&root_raw)?;
                b.set_path("");
                r
            }
        };
        b.build_rest()?;
        let (functions, strategies) = b.into_parts();
        Ok(Workflow {
            root,
            functions,
            strategies,
            general: file.general,
        })
    }
}

impl Workflow {
    /// The root function.
    pub fn root(&self) -> &Arc<dyn Function> {
        &self.root
    }

    /// Names of the built strategies.
    pub fn strategy_names(&self) -> Vec<String> {
        self.strategies.keys().cloned().collect()
    }

    /// The built strategy named `name` (its key in the strategies sections).
    pub fn strategy(&self, name: &str) -> Option<Arc<dyn Strategy>> {
        self.strategies.get(name).cloned()
    }

    /// The built function named `name`.
    pub fn function(&self, name: &str) -> Option<Arc<dyn Function>> {
        self.functions.get(name).cloned()
    }

    /// Names of the built functions.
    pub fn function_names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    /// The seed from `general.seed` (default 0).
    pub fn default_seed(&self) -> u64 {
        self.general.seed.unwrap_or(0)
    }

    /// Runs the root function on `input` in `ctx`.
    pub async fn run(&self, input: Value, ctx: &RunCtx) -> Result<RunOutput, FunctionError> {
        let output = self.root.invoke(input, ctx).await?;
        Ok(RunOutput {
            output,
            trace: ctx.trace(),
            cost: ctx.total_cost(),
            seed: ctx.seed(),
        })
    }

    /// Runs the root function on `input`, streaming its text output.
    pub async fn stream<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> Result<TextStream<'a>, FunctionError> {
        self.root.stream(input, ctx).await
    }
}

/// Best-effort line (1-based) of the key `path` (`a.b[2].c`) in YAML `text`: walks the keys
/// in order, each at a deeper indentation (block style) or later on the same line (flow style).
pub fn locate_line(text: &str, path: &str) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut line = 0usize;
    let mut indent: isize = -1;
    let mut found = None;
    for seg in path.split('.') {
        let key = seg.split('[').next().unwrap_or(seg);
        if key.is_empty() {
            continue;
        }
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(line) {
            let trimmed = l.trim_start();
            let ind = (l.len() - trimmed.len()) as isize;
            if i > line
                && !trimmed.is_empty()
                && !trimmed.starts_with('#')
                && ind <= indent
                && found.is_some()
            {
                // Left the parent's block.
                if !lines[found.unwrap_or(0)].contains('{') {
                    break;
                }
            }
            let t = trimmed.trim_start_matches("- ");
            let block = ind > indent
                && (t.starts_with(&format!("{key}:")) || t.starts_with(&format!("\"{key}\":")));
            let flow = [
                format!("{{{key}:"),
                format!("{{ {key}:"),
                format!(", {key}:"),
                format!(",{key}:"),
            ]
            .iter()
            .any(|p| l.contains(p.as_str()));
            if block || (flow && (i == line || found.is_none() || ind > indent)) {
                hit = Some((i, ind));
                break;
            }
        }
        match hit {
            Some((i, ind)) => {
                found = Some(i);
                line = i;
                indent = ind;
            }
            None => break,
        }
    }
    found.map(|l| l + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_block_and_flow_keys() {
        let text = "llms:\n  a: {_type: openai, model: m}\nstrategies:\n  pick:\n    _type: best_of_n_selection\n    k: 0\nworkflow:\n  _type: x\n  scorer: pick\n";
        assert_eq!(locate_line(text, "strategies.pick.k"), Some(6));
        assert_eq!(locate_line(text, "workflow.scorer"), Some(9));
        assert_eq!(locate_line(text, "llms.a.model"), Some(2));
        assert_eq!(locate_line(text, "strategies.pick"), Some(4));
        assert_eq!(locate_line(text, ""), None);
    }
}
