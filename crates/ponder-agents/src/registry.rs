//! The registry of strategy and function kinds, keyed by `_type` (canonical code names plus the
//! reference's doc names as aliases), and the [`Builder`] that factories use to resolve
//! references, bind strategies to slots and check templates and ranges at build time.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{BuildError, BuildErrorKind};
use crate::function::Function;
use crate::item::{PipelineType, StageType};
use crate::llm::Llm;
use crate::strategy::{pipeline_list, Bound, Needs, Strategy};
use crate::template::Template;

type StrategyBuild =
    dyn Fn(Value, &mut Builder<'_>) -> Result<Arc<dyn Strategy>, BuildError> + Send + Sync;
/// Built functions and strategies by name.
pub(crate) type Built = (
    BTreeMap<String, Arc<dyn Function>>,
    BTreeMap<String, Arc<dyn Strategy>>,
);

type FunctionBuild =
    dyn Fn(Value, &mut Builder<'_>) -> Result<Arc<dyn Function>, BuildError> + Send + Sync;

/// A registered strategy kind.
#[derive(Clone)]
pub struct StrategyKind {
    /// The canonical `_type`.
    pub name: String,
    /// Other accepted names.
    pub aliases: Vec<String>,
    pub stage: StageType,
    pub pipelines: Vec<PipelineType>,
    build: Arc<StrategyBuild>,
}

/// A registered function kind.
#[derive(Clone)]
pub struct FunctionKind {
    /// The canonical `_type`.
    pub name: String,
    /// Other accepted names.
    pub aliases: Vec<String>,
    build: Arc<FunctionBuild>,
}

/// Strategy and function kinds by `_type`.
#[derive(Clone, Default)]
pub struct Registry {
    strategies: Vec<StrategyKind>,
    functions: Vec<FunctionKind>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("strategies", &self.strategy_names())
            .field("functions", &self.function_names())
            .finish()
    }
}

/// Deserialises a component's config (its map without `_type`), naming the full path on error.
fn config_of<C: DeserializeOwned>(value: Value, path: &str) -> Result<C, BuildError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let mut full = if inner == "." || inner.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{inner}")
        };
        let message = e.inner().to_string();
        if let Some(field) = message
            .split("unknown field `")
            .nth(1)
            .and_then(|r| r.split('`').next())
        {
            if !full.ends_with(&format!(".{field}")) {
                full = format!("{full}.{field}");
            }
        }
        BuildError::at(full, BuildErrorKind::Field { message })
    })
}

impl Registry {
    /// A registry with nothing in it.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// Every built-in strategy and function.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        crate::strategies::register(&mut r);
        crate::functions::register(&mut r);
        r
    }

    fn taken(&self, names: &[String]) -> Option<String> {
        let all = self
            .strategies
            .iter()
            .flat_map(|k| std::iter::once(&k.name).chain(&k.aliases))
            .chain(
                self.functions
                    .iter()
                    .flat_map(|k| std::iter::once(&k.name).chain(&k.aliases)),
            );
        let all: Vec<&String> = all.collect();
        names.iter().find(|n| all.contains(n)).cloned()
    }

    /// Registers a strategy kind: its config type `C` (deserialised from the YAML entry without
    /// `_type`) and a factory. Fails when a name or alias is already taken.
    pub fn register_strategy<C, F>(
        &mut self,
        name: &str,
        aliases: &[&str],
        stage: StageType,
        pipelines: &[PipelineType],
        factory: F,
    ) -> Result<(), BuildError>
    where
        C: DeserializeOwned + 'static,
        F: Fn(C, &mut Builder<'_>) -> Result<Arc<dyn Strategy>, BuildError> + Send + Sync + 'static,
    {
        let names: Vec<String> = std::iter::once(name)
            .chain(aliases.iter().copied())
            .map(str::to_string)
            .collect();
        if let Some(dup) = self.taken(&names) {
            return Err(BuildError::at(
                "",
                BuildErrorKind::DuplicateType {
                    what: "strategy",
                    name: dup,
                },
            ));
        }
        self.strategies.push(StrategyKind {
            name: name.to_string(),
            aliases: names[1..].to_vec(),
            stage,
            pipelines: pipelines.to_vec(),
            build: Arc::new(move |value, b| {
                let config: C = config_of(value, &b.path)?;
                factory(config, b)
            }),
        });
        Ok(())
    }

    /// Registers a function kind: its config type `C` and a factory.
    pub fn register_function<C, F>(
        &mut self,
        name: &str,
        aliases: &[&str],
        factory: F,
    ) -> Result<(), BuildError>
    where
        C: DeserializeOwned + 'static,
        F: Fn(C, &mut Builder<'_>) -> Result<Arc<dyn Function>, BuildError> + Send + Sync + 'static,
    {
        let names: Vec<String> = std::iter::once(name)
            .chain(aliases.iter().copied())
            .map(str::to_string)
            .collect();
        if let Some(dup) = self.taken(&names) {
            return Err(BuildError::at(
                "",
                BuildErrorKind::DuplicateType {
                    what: "function",
                    name: dup,
                },
            ));
        }
        self.functions.push(FunctionKind {
            name: name.to_string(),
            aliases: names[1..].to_vec(),
            build: Arc::new(move |value, b| {
                let config: C = config_of(value, &b.path)?;
                factory(config, b)
            }),
        });
        Ok(())
    }

    /// Canonical strategy names.
    pub fn strategy_names(&self) -> Vec<String> {
        self.strategies.iter().map(|k| k.name.clone()).collect()
    }

    /// Canonical function names.
    pub fn function_names(&self) -> Vec<String> {
        self.functions.iter().map(|k| k.name.clone()).collect()
    }

    /// The strategy kind named `name` (canonical, alias or `<package>/<name>`).
    pub fn strategy(&self, name: &str) -> Option<&StrategyKind> {
        let short = name.rsplit('/').next().unwrap_or(name);
        self.strategies
            .iter()
            .find(|k| k.name == short || k.aliases.iter().any(|a| a == short))
    }

    /// The function kind named `name` (canonical, alias or `<package>/<name>`).
    pub fn function(&self, name: &str) -> Option<&FunctionKind> {
        let short = name.rsplit('/').next().unwrap_or(name);
        self.functions
            .iter()
            .find(|k| k.name == short || k.aliases.iter().any(|a| a == short))
    }
}

/// A component's raw config: where it is and what it says.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub path: String,
    pub value: Value,
}

/// Splits `_type` off a component's map.
fn split_type(raw: &Raw) -> Result<(String, Value), BuildError> {
    let Value::Object(map) = &raw.value else {
        return Err(BuildError::at(
            raw.path.clone(),
            BuildErrorKind::Field {
                message: "expected a map with `_type`".into(),
            },
        ));
    };
    let mut map = map.clone();
    match map.remove("_type") {
        Some(Value::String(t)) => Ok((t, Value::Object(map))),
        Some(_) => Err(BuildError::at(
            format!("{}._type", raw.path),
            BuildErrorKind::Field {
                message: "`_type` must be a string".into(),
            },
        )),
        None => Err(BuildError::at(
            raw.path.clone(),
            BuildErrorKind::MissingType,
        )),
    }
}

/// What factories use while a workflow is built: reference resolution (building referenced
/// components on demand, detecting cycles), strategy binding with stage, pipeline and context
/// checks, template and range checks. Every error names the YAML path.
pub struct Builder<'r> {
    registry: &'r Registry,
    llms: BTreeMap<String, Llm>,
    raw_functions: BTreeMap<String, Raw>,
    raw_strategies: BTreeMap<String, Raw>,
    functions: BTreeMap<String, Arc<dyn Function>>,
    strategies: BTreeMap<String, Arc<dyn Strategy>>,
    building: Vec<String>,
    path: String,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("path", &self.path).finish()
    }
}

impl<'r> Builder<'r> {
    pub(crate) fn new(
        registry: &'r Registry,
        llms: BTreeMap<String, Llm>,
        raw_functions: BTreeMap<String, Raw>,
        raw_strategies: BTreeMap<String, Raw>,
        prebuilt: BTreeMap<String, Arc<dyn Function>>,
    ) -> Self {
        Builder {
            registry,
            llms,
            raw_functions,
            raw_strategies,
            functions: prebuilt,
            strategies: BTreeMap::new(),
            building: Vec::new(),
            path: String::new(),
        }
    }

    /// The YAML path of the component being built.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of `field` in the component being built.
    pub fn field_path(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    /// An error at `field` of the component being built.
    pub fn error(&self, field: &str, kind: BuildErrorKind) -> BuildError {
        BuildError::at(self.field_path(field), kind)
    }

    /// Fails with a range error at `field` unless `ok`.
    pub fn check(
        &self,
        field: &str,
        ok: bool,
        reason: impl Into<String>,
    ) -> Result<(), BuildError> {
        if ok {
            Ok(())
        } else {
            Err(self.error(
                field,
                BuildErrorKind::Range {
                    reason: reason.into(),
                },
            ))
        }
    }

    /// The template in `field` (or `default`), checked to use exactly `vars`.
    pub fn template(
        &self,
        field: &str,
        text: Option<&str>,
        default: &str,
        vars: &[&str],
    ) -> Result<Template, BuildError> {
        Template::checked(text.unwrap_or(default), vars)
            .map_err(|e| self.error(field, BuildErrorKind::Template(e)))
    }

    /// The LLM named `name`, referenced from `field`.
    pub fn llm(&self, field: &str, name: &str) -> Result<Llm, BuildError> {
        self.llms.get(name).cloned().ok_or_else(|| {
            self.error(
                field,
                BuildErrorKind::UnknownReference {
                    what: "llm",
                    name: name.to_string(),
                    known: known(self.llms.keys()),
                },
            )
        })
    }

    /// The LLMs named in `names`, referenced from `field` (at least one).
    pub fn llm_list(&self, field: &str, names: &[String]) -> Result<Vec<Llm>, BuildError> {
        self.check(field, !names.is_empty(), "at least one LLM is required")?;
        names
            .iter()
            .enumerate()
            .map(|(i, n)| self.llm(&format!("{field}[{i}]"), n))
            .collect()
    }

    /// The function named `name`, referenced from `field`; built now if needed.
    pub fn function(&mut self, field: &str, name: &str) -> Result<Arc<dyn Function>, BuildError> {
        if let Some(f) = self.functions.get(name) {
            return Ok(f.clone());
        }
        let Some(raw) = self.raw_functions.get(name).cloned() else {
            return Err(self.error(
                field,
                BuildErrorKind::UnknownReference {
                    what: "function",
                    name: name.to_string(),
                    known: known(self.raw_functions.keys().chain(self.functions.keys())),
                },
            ));
        };
        let key = format!("function:{name}");
        self.enter(&key, field)?;
        let saved = std::mem::replace(&mut self.path, raw.path.clone());
        let built = self.build_function_raw(&raw);
        self.path = saved;
        self.building.pop();
        let f = built?;
        self.functions.insert(name.to_string(), f.clone());
        Ok(f)
    }

    fn enter(&mut self, key: &str, field: &str) -> Result<(), BuildError> {
        if self.building.iter().any(|k| k == key) {
            let mut chain: Vec<String> = self.building.clone();
            chain.push(key.to_string());
            return Err(self.error(
                field,
                BuildErrorKind::Cycle {
                    chain: chain.join(" → "),
                },
            ));
        }
        self.building.push(key.to_string());
        Ok(())
    }

    pub(crate) fn build_function_raw(
        &mut self,
        raw: &Raw,
    ) -> Result<Arc<dyn Function>, BuildError> {
        let (kind, value) = split_type(raw)?;
        let Some(k) = self.registry.function(&kind) else {
            return Err(BuildError::at(
                format!("{}._type", raw.path),
                BuildErrorKind::UnknownType {
                    what: "function",
                    name: kind,
                    known: self.registry.function_names().join(", "),
                },
            ));
        };
        let build = k.build.clone();
        build(value, self)
    }

    fn strategy_instance(
        &mut self,
        field: &str,
        name: &str,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        if let Some(s) = self.strategies.get(name) {
            return Ok(s.clone());
        }
        let Some(raw) = self.raw_strategies.get(name).cloned() else {
            return Err(self.error(
                field,
                BuildErrorKind::UnknownReference {
                    what: "strategy",
                    name: name.to_string(),
                    known: known(self.raw_strategies.keys()),
                },
            ));
        };
        let key = format!("strategy:{name}");
        self.enter(&key, field)?;
        let saved = std::mem::replace(&mut self.path, raw.path.clone());
        let built = self.build_strategy_raw(&raw);
        self.path = saved;
        self.building.pop();
        let s = built?;
        self.strategies.insert(name.to_string(), s.clone());
        Ok(s)
    }

    fn build_strategy_raw(&mut self, raw: &Raw) -> Result<Arc<dyn Strategy>, BuildError> {
        let (kind, value) = split_type(raw)?;
        let Some(k) = self.registry.strategy(&kind) else {
            return Err(BuildError::at(
                format!("{}._type", raw.path),
                BuildErrorKind::UnknownType {
                    what: "strategy",
                    name: kind,
                    known: self.registry.strategy_names().join(", "),
                },
            ));
        };
        let build = k.build.clone();
        build(value, self)
    }

    /// Binds the strategy `name` (referenced from `field`) to this slot: it must exist, belong
    /// to `stage`, support `pipeline`, and need no context beyond `provides`.
    pub fn bind(
        &mut self,
        field: &str,
        name: &str,
        stage: StageType,
        pipeline: PipelineType,
        provides: Needs,
    ) -> Result<Bound, BuildError> {
        let strategy = self.strategy_instance(field, name)?;
        let strategy_type = strategy.kind().to_string();
        if strategy.stage() != stage {
            return Err(self.error(
                field,
                BuildErrorKind::WrongStage {
                    strategy: name.to_string(),
                    strategy_type,
                    actual: strategy.stage(),
                    expected: stage,
                },
            ));
        }
        if !strategy.pipelines().contains(&pipeline) {
            return Err(self.error(
                field,
                BuildErrorKind::UnsupportedPipeline {
                    strategy: name.to_string(),
                    strategy_type,
                    pipeline,
                    supported: pipeline_list(strategy.pipelines()),
                },
            ));
        }
        let needs = strategy.needs();
        for (need, have, what) in [
            (
                needs.original_prompt,
                provides.original_prompt,
                "original_prompt",
            ),
            (needs.agent_context, provides.agent_context, "agent_context"),
        ] {
            if need && !have {
                return Err(self.error(
                    field,
                    BuildErrorKind::MissingContext {
                        strategy: name.to_string(),
                        strategy_type,
                        needs: what,
                    },
                ));
            }
        }
        Ok(Bound {
            strategy,
            name: name.to_string(),
            pipeline,
            stage,
            slot: field.to_string(),
        })
    }

    /// Like [`Builder::bind`] for an optional slot.
    pub fn bind_opt(
        &mut self,
        field: &str,
        name: Option<&str>,
        stage: StageType,
        pipeline: PipelineType,
        provides: Needs,
    ) -> Result<Option<Bound>, BuildError> {
        name.map(|n| self.bind(field, n, stage, pipeline, provides))
            .transpose()
    }

    /// Builds every component not built yet (so mistakes in unused ones surface too).
    pub(crate) fn build_rest(&mut self) -> Result<(), BuildError> {
        let names: Vec<String> = self.raw_strategies.keys().cloned().collect();
        for name in names {
            self.strategy_instance("", &name)?;
        }
        let names: Vec<String> = self.raw_functions.keys().cloned().collect();
        for name in names {
            self.function("", &name)?;
        }
        Ok(())
    }

    pub(crate) fn set_path(&mut self, path: &str) {
        self.path = path.to_string();
    }

    pub(crate) fn into_parts(self) -> Built {
        (self.functions, self.strategies)
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
