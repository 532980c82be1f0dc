//! `multi_llm_judge_function`: several LLMs answer a query (custom-pipeline search) and a judge
//! picks the best answer (custom-pipeline selection). Failed generations are excluded; if every
//! generation failed the call fails. The judge's reasoning stays in the trace.

use std::sync::Arc;

use ponder_core::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::error::FunctionError;
use crate::function::Function;
use crate::item::{render_value, Item, PipelineType, StageType};
use crate::registry::{Builder, Registry};
use crate::run::RunCtx;
use crate::strategy::{Bound, Needs};

pub(crate) fn register(r: &mut Registry) {
    r.register_function(
        "multi_llm_judge_function",
        &["multi_llm_judge"],
        |c: MultiLlmJudgeConfig, b: &mut Builder<'_>| {
            let provides = Needs {
                original_prompt: true,
                agent_context: false,
            };
            let p = PipelineType::Custom;
            let search = b.bind(
                "search_strategy",
                &c.search_strategy,
                StageType::Search,
                p,
                provides,
            )?;
            let selection = b.bind(
                "selection_strategy",
                &c.selection_strategy,
                StageType::Selection,
                p,
                provides,
            )?;
            super::check_chain(b, Default::default(), &[Some(&search), Some(&selection)])?;
            Ok(Arc::new(MultiLlmJudge { search, selection }) as Arc<dyn Function>)
        },
    )
    .expect("built-in function names are unique");
}

/// `multi_llm_judge_function` (alias `multi_llm_judge`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiLlmJudgeConfig {
    /// Custom-pipeline search (e.g. `multi_llm_generation`). Required.
    pub search_strategy: String,
    /// Custom-pipeline selection (e.g. `llm_judge_selection`). Required.
    pub selection_strategy: String,
}

struct MultiLlmJudge {
    search: Bound,
    selection: Bound,
}

impl Function for MultiLlmJudge {
    fn description(&self) -> &str {
        "Queries several LLMs and lets a judge LLM pick the best response."
    }
    fn input_schema(&self) -> Value {
        serde_json::json!({"type": "string"})
    }
    fn output_schema(&self) -> Value {
        serde_json::json!({"type": "string"})
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        Box::pin(async move {
            let function = ctx.function().to_string();
            let query = render_value(&input);
            let err = |slot: &str, source| FunctionError::Stage {
                function: function.clone(),
                slot: slot.to_string(),
                source,
            };
            let seed = Item {
                id: ctx.new_id(),
                input: Some(Value::String(query.clone())),
                ..Item::default()
            };
            let generated = self
                .search
                .invoke(vec![seed], ctx, Some(&query), None)
                .await
                .map_err(|e| err(&self.search.slot, e))?;
            let candidates: Vec<Item> = generated.into_iter().filter(Item::is_candidate).collect();
            let selected = self
                .selection
                .invoke(candidates, ctx, Some(&query), None)
                .await
                .map_err(|e| err(&self.selection.slot, e))?;
            let best = selected
                .into_iter()
                .next()
                .ok_or_else(|| FunctionError::Output {
                    function: function.clone(),
                    reason: "the judge returned no item".into(),
                })?;
            Ok(Value::String(best.output_text()))
        })
    }
}
