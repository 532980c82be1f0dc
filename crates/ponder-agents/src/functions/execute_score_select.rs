//! `execute_score_select_function`: runs a function several times (bounded concurrency, each
//! run with its own derived seed, optionally a temperature ramp), scores the outputs, selects
//! one and maps it back to the typed result by item id. A merged output is returned as text if
//! the function's output is text, else parsed as JSON and checked against its output schema.

use std::sync::Arc;

use futures_util::StreamExt;
use ponder_core::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use super::check_chain;
use super::schema::{extract_json, validate};
use crate::error::FunctionError;
use crate::function::{schema_is_text, Function};
use crate::item::{render_value, Item, PipelineType, StageType};
use crate::registry::{Builder, Registry};
use crate::run::RunCtx;
use crate::strategies::temperature_ramp;
use crate::strategy::{Bound, Fields, Needs};

pub(crate) fn register(r: &mut Registry) {
    r.register_function(
        "execute_score_select_function",
        &["execute_score_select"],
        |c: ExecuteScoreSelectConfig, b: &mut Builder<'_>| {
            b.check(
                "num_executions",
                c.num_executions >= 1,
                "`num_executions` must be at least 1",
            )?;
            if let Some(m) = c.max_concurrency {
                b.check(
                    "max_concurrency",
                    m >= 1,
                    "`max_concurrency` must be at least 1",
                )?;
            }
            b.check(
                "min_temperature",
                c.min_temperature.is_finite()
                    && c.min_temperature >= 0.0
                    && c.min_temperature <= c.max_temperature,
                "need 0 ≤ `min_temperature` ≤ `max_temperature`",
            )?;
            let inner = b.function("augmented_fn", &c.augmented_fn)?;
            let provides = Needs {
                original_prompt: true,
                agent_context: true,
            };
            let p = PipelineType::AgentExecution;
            let scorer = b.bind_opt(
                "scorer",
                c.scorer.as_deref(),
                StageType::Scoring,
                p,
                provides,
            )?;
            let selector = b.bind("selector", &c.selector, StageType::Selection, p, provides)?;
            let outputs = Fields {
                output: true,
                ..Fields::default()
            };
            check_chain(b, outputs, &[scorer.as_ref(), Some(&selector)])?;
            Ok(Arc::new(ExecuteScoreSelect {
                name: c.augmented_fn,
                inner,
                scorer,
                selector,
                num_executions: c.num_executions,
                max_concurrency: c.max_concurrency.unwrap_or(c.num_executions),
                temperatures: match c.diversity {
                    Diversity::None => vec![None; c.num_executions],
                    Diversity::TemperatureRamp => {
                        temperature_ramp(c.num_executions, c.min_temperature, c.max_temperature)
                            .into_iter()
                            .map(Some)
                            .collect()
                    }
                },
            }) as Arc<dyn Function>)
        },
    )
    .expect("built-in function names are unique");
}

fn d_n() -> usize {
    3
}
fn d_min_t() -> f64 {
    0.5
}
fn d_max_t() -> f64 {
    1.0
}

/// How repeated executions differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Diversity {
    /// Only by their seeds (execution `i` derives its own seed from the run seed).
    #[default]
    None,
    /// Also by temperature: a linear ramp from `min_temperature` to `max_temperature` applied
    /// to the function's LLM-chat calls.
    TemperatureRamp,
}

/// `execute_score_select_function` (alias `execute_score_select`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteScoreSelectConfig {
    /// The function to run repeatedly. Required.
    pub augmented_fn: String,
    /// Executions per call (≥ 1; alias `num_iterations`). Default: 3.
    #[serde(default = "d_n", alias = "num_iterations")]
    pub num_executions: usize,
    /// Agent-execution scoring. Default: none.
    #[serde(default)]
    pub scorer: Option<String>,
    /// Agent-execution selection. Required.
    pub selector: String,
    /// Executions in flight at once. Default: `num_executions`.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// `none` or `temperature_ramp`. Default: `none`.
    #[serde(default)]
    pub diversity: Diversity,
    /// Low end of the ramp. Default: 0.5.
    #[serde(default = "d_min_t")]
    pub min_temperature: f64,
    /// High end of the ramp. Default: 1.0.
    #[serde(default = "d_max_t")]
    pub max_temperature: f64,
}

struct ExecuteScoreSelect {
    name: String,
    inner: Arc<dyn Function>,
    scorer: Option<Bound>,
    selector: Bound,
    num_executions: usize,
    max_concurrency: usize,
    temperatures: Vec<Option<f64>>,
}

impl Function for ExecuteScoreSelect {
    fn description(&self) -> &str {
        "Runs a function several times, scores the outputs and returns the best one."
    }
    fn input_schema(&self) -> Value {
        self.inner.input_schema()
    }
    fn output_schema(&self) -> Value {
        self.inner.output_schema()
    }
    fn tools(&self) -> Vec<(String, String)> {
        self.inner.tools()
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        Box::pin(async move {
            let function = ctx.function().to_string();
            let runs = futures_util::stream::iter((0..self.num_executions).map(|i| {
                let child = ctx
                    .in_function(&self.name)
                    .child(&format!("exec{i}"))
                    .with_temperature(self.temperatures[i]);
                let input = input.clone();
                async move { self.inner.invoke(input, &child).await }
            }))
            .buffered(self.max_concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
            let mut results: Vec<(u64, Value)> = Vec::new();
            let mut errors = Vec::new();
            for r in runs {
                match r {
                    Ok(v) => results.push((ctx.new_id(), v)),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            if results.is_empty() {
                return Err(FunctionError::AllFailed {
                    function,
                    messages: errors,
                });
            }
            let items: Vec<Item> = results
                .iter()
                .map(|(id, v)| Item {
                    id: *id,
                    input: Some(input.clone()),
                    output: Some(v.clone()),
                    ..Item::default()
                })
                .collect();
            let prompt = render_value(&input);
            let context = self.inner.description().to_string();
            let stage_err = |slot: &str, source| FunctionError::Stage {
                function: function.clone(),
                slot: slot.to_string(),
                source,
            };
            let mut items = items;
            if let Some(s) = &self.scorer {
                items = s
                    .invoke(items, ctx, Some(&prompt), Some(&context))
                    .await
                    .map_err(|e| stage_err(&s.slot, e))?;
            }
            let selected = self
                .selector
                .invoke(items, ctx, Some(&prompt), Some(&context))
                .await
                .map_err(|e| stage_err(&self.selector.slot, e))?;
            let Some(best) = selected.into_iter().next() else {
                return Err(FunctionError::Output {
                    function,
                    reason: "the selector returned no item".into(),
                });
            };
            if let Some((_, v)) = results.iter().find(|(id, _)| *id == best.id) {
                return Ok(v.clone());
            }
            // A merged output: convert it to the function's output type.
            let text = best.output_text();
            let schema = self.inner.output_schema();
            if schema_is_text(&schema) || schema.as_object().is_some_and(|o| o.is_empty()) {
                return Ok(Value::String(text));
            }
            let value = extract_json(&text).ok_or_else(|| FunctionError::Output {
                function: function.clone(),
                reason:
                    "the merged output is not JSON, but the function's output type is structured"
                        .into(),
            })?;
            let errors = validate(&schema, &value, "output");
            if errors.is_empty() {
                Ok(value)
            } else {
                Err(FunctionError::Output {
                    function,
                    reason: format!(
                        "the merged output does not match the output schema: {}",
                        errors.join("; ")
                    ),
                })
            }
        })
    }
}
