//! `ttc_tool_orchestration`: runs requested tool calls through an optional search (query
//! rewriting), the tools themselves (concurrently), optional editing and scoring, and
//! selection — per tool by default. Unknown tool names are rejected before any call; failed
//! tool calls become error items that never compete.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use ponder_core::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::check_chain;
use crate::error::FunctionError;
use crate::function::Function;
use crate::item::{render_value, Item, ItemStatus, PipelineType, StageType};
use crate::registry::{Builder, Registry};
use crate::run::RunCtx;
use crate::strategy::{Bound, Fields, Needs};

pub(crate) fn register(r: &mut Registry) {
    r.register_function(
        "ttc_tool_orchestration",
        &[
            "its_tool_orchestration",
            "its_tool_orchestration_function",
            "ttc_tool_orchestration_function",
        ],
        |c: OrchestrationConfig, b: &mut Builder<'_>| {
            b.check(
                "augmented_fns",
                !c.augmented_fns.is_empty(),
                "at least one tool is required",
            )?;
            let mut tools = BTreeMap::new();
            for (i, name) in c.augmented_fns.iter().enumerate() {
                let f = b.function(&format!("augmented_fns[{i}]"), name)?;
                tools.insert(name.clone(), f);
            }
            let provides = Needs {
                original_prompt: true,
                agent_context: true,
            };
            let p = PipelineType::ToolUse;
            let search = b.bind_opt(
                "search_strategy",
                c.search_strategy.as_deref(),
                StageType::Search,
                p,
                provides,
            )?;
            let editing = b.bind_opt(
                "editing_strategy",
                c.editing_strategy.as_deref(),
                StageType::Editing,
                p,
                provides,
            )?;
            let scoring = b.bind_opt(
                "scoring_strategy",
                c.scoring_strategy.as_deref(),
                StageType::Scoring,
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
            // Tool calls fill `output` between search and editing.
            check_chain(b, Fields::default(), &[search.as_ref()])?;
            let after_tools = Fields {
                output: true,
                ..Fields::default()
            };
            check_chain(
                b,
                after_tools,
                &[editing.as_ref(), scoring.as_ref(), Some(&selection)],
            )?;
            let description = format!(
                "Calls tools for tasks, with query rewriting, scoring and selection. Tools:\n{}",
                tools
                    .iter()
                    .map(|(n, f)| {
                        let d = f.description();
                        format!("- {n}: {}", if d.is_empty() { "no description" } else { d })
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            Ok(Arc::new(Orchestration {
                tools,
                search,
                editing,
                scoring,
                selection,
                select_per_tool: c.select_per_tool,
                max_concurrency: c.max_concurrency.max(1),
                description,
            }) as Arc<dyn Function>)
        },
    )
    .expect("built-in function names are unique");
}

fn d_true() -> bool {
    true
}
fn d_conc() -> usize {
    crate::strategy::DEFAULT_MAX_CONCURRENCY
}

/// `ttc_tool_orchestration` (aliases `its_tool_orchestration`, `…_function`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestrationConfig {
    /// Tool functions. Required, at least one.
    pub augmented_fns: Vec<String>,
    /// Tool-use search (e.g. `multi_query_retrieval_search`). Default: none.
    #[serde(default)]
    pub search_strategy: Option<String>,
    /// Tool-use editing (e.g. `motivation_aware_editing`). Default: none.
    #[serde(default)]
    pub editing_strategy: Option<String>,
    /// Tool-use scoring (e.g. `motivation_aware_scoring`). Default: none.
    #[serde(default)]
    pub scoring_strategy: Option<String>,
    /// Tool-use selection (`threshold_selection`, `best_of_n_selection`). Required.
    pub selection_strategy: String,
    /// Select per tool name (false: over all items, as upstream). Default: true.
    #[serde(default = "d_true")]
    pub select_per_tool: bool,
    /// Tool calls in flight at once. Default: 8.
    #[serde(default = "d_conc")]
    pub max_concurrency: usize,
}

/// One requested tool call.
#[derive(Debug, Clone, Deserialize)]
struct ToolRequest {
    tool_name: String,
    task_description: String,
    #[serde(default)]
    motivation: Option<String>,
    #[serde(default)]
    output: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ToolList {
    tools: Vec<ToolRequest>,
}

struct Orchestration {
    tools: BTreeMap<String, Arc<dyn Function>>,
    search: Option<Bound>,
    editing: Option<Bound>,
    scoring: Option<Bound>,
    selection: Bound,
    select_per_tool: bool,
    max_concurrency: usize,
    description: String,
}

impl Orchestration {
    fn stage_err(
        &self,
        ctx: &RunCtx,
        slot: &str,
        source: crate::error::StageError,
    ) -> FunctionError {
        FunctionError::Stage {
            function: ctx.function().to_string(),
            slot: slot.to_string(),
            source,
        }
    }
}

impl Function for Orchestration {
    fn description(&self) -> &str {
        &self.description
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object", "required": ["tools"], "properties": {"tools": {"type": "array",
            "items": {"type": "object", "required": ["tool_name", "task_description"],
            "properties": {"tool_name": {"type": "string"}, "task_description": {"type": "string"},
            "motivation": {"type": ["string", "null"]}, "output": {"type": ["string", "null"]}}}}}})
    }
    fn output_schema(&self) -> Value {
        self.input_schema()
    }
    fn tools(&self) -> Vec<(String, String)> {
        self.tools
            .iter()
            .map(|(n, f)| (n.clone(), f.description().to_string()))
            .collect()
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        Box::pin(async move {
            let function = ctx.function().to_string();
            let input = match input {
                Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                v => v,
            };
            let list: ToolList =
                serde_json::from_value(input).map_err(|e| FunctionError::InvalidInput {
                    function: function.clone(),
                    reason: format!(
                        "expected {{\"tools\": [{{\"tool_name\", \"task_description\", …}}]}}: {e}"
                    ),
                })?;
            if let Some(bad) = list
                .tools
                .iter()
                .find(|t| !self.tools.contains_key(&t.tool_name))
            {
                return Err(FunctionError::InvalidInput {
                    function,
                    reason: format!(
                        "unknown tool `{}` (known: {})",
                        bad.tool_name,
                        self.tools.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            let prompt = list
                .tools
                .iter()
                .map(|t| t.task_description.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let context = self
                .tools()
                .iter()
                .map(|(n, d)| format!("- {n}: {d}"))
                .collect::<Vec<_>>()
                .join("\n");
            let mut items: Vec<Item> = list
                .tools
                .into_iter()
                .map(|t| Item {
                    id: ctx.new_id(),
                    input: Some(Value::String(t.task_description)),
                    output: t.output.map(Value::String),
                    motivation: t.motivation,
                    name: Some(t.tool_name),
                    ..Item::default()
                })
                .collect();
            if let Some(s) = &self.search {
                items = s
                    .invoke(items, ctx, Some(&prompt), Some(&context))
                    .await
                    .map_err(|e| self.stage_err(ctx, &s.slot, e))?;
            }
            // Call every tool: the search's query when there is one, else the task.
            items = futures_util::stream::iter(items.into_iter().enumerate().map(
                |(i, mut item)| async move {
                    if !item.is_candidate() {
                        return item;
                    }
                    let name = item.name.clone().unwrap_or_default();
                    let arg = item
                        .output
                        .clone()
                        .or_else(|| item.input.clone())
                        .unwrap_or(Value::Null);
                    let tool = &self.tools[&name];
                    let child = ctx.in_function(&name).child(&format!("call{i}"));
                    match tool.invoke(arg.clone(), &child).await {
                        Ok(v) => {
                            item.metadata
                                .insert("query".into(), Value::String(render_value(&arg)));
                            item.output = Some(v);
                        }
                        Err(e) => {
                            item.status = ItemStatus::Error {
                                message: e.to_string(),
                            }
                        }
                    }
                    item
                },
            ))
            .buffered(self.max_concurrency)
            .collect()
            .await;
            for b in [&self.editing, &self.scoring].into_iter().flatten() {
                items = b
                    .invoke(items, ctx, Some(&prompt), Some(&context))
                    .await
                    .map_err(|e| self.stage_err(ctx, &b.slot, e))?;
            }
            let groups: Vec<Vec<Item>> = if self.select_per_tool {
                let mut g: Vec<(String, Vec<Item>)> = Vec::new();
                for item in items {
                    let n = item.name.clone().unwrap_or_default();
                    match g.iter_mut().find(|(k, _)| *k == n) {
                        Some((_, v)) => v.push(item),
                        None => g.push((n, vec![item])),
                    }
                }
                g.into_iter().map(|(_, v)| v).collect()
            } else {
                vec![items]
            };
            let mut out = Vec::new();
            for group in groups {
                if !group.iter().any(Item::is_candidate) {
                    // Every call of this tool failed: report the errors, select nothing.
                    out.extend(group);
                    continue;
                }
                let selected = self
                    .selection
                    .invoke(group, ctx, Some(&prompt), Some(&context))
                    .await
                    .map_err(|e| self.stage_err(ctx, &self.selection.slot, e))?;
                out.extend(selected);
            }
            let tools: Vec<Value> = out
                .iter()
                .map(|i| {
                    let output = match &i.status {
                        ItemStatus::Error { message } => format!("error: {message}"),
                        _ => i.output_text(),
                    };
                    json!({
                        "tool_name": i.name,
                        "task_description": i.input_text(),
                        "motivation": i.motivation,
                        "output": output,
                        "score": i.score,
                    })
                })
                .collect();
            Ok(json!({ "tools": tools }))
        })
    }
}
