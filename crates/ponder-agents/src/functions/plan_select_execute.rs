//! `plan_select_execute_function`: plans (search → optional editing → optional scoring →
//! selection) with the conversation and the downstream agent's description as context, then
//! runs the agent with the selected plan, streaming its answer when the agent streams.

use std::sync::Arc;

use ponder_core::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use super::check_chain;
use crate::error::{BuildErrorKind, FunctionError};
use crate::function::{input_messages, render_messages, Function, TextStream};
use crate::item::{Item, PipelineType, StageType};
use crate::registry::{Builder, Registry};
use crate::run::RunCtx;
use crate::strategies::templates;
use crate::strategy::{Bound, Fields, Needs};
use crate::template::Template;

pub(crate) fn register(r: &mut Registry) {
    r.register_function(
        "plan_select_execute_function",
        &["plan_select_execute"],
        |c: PlanSelectExecuteConfig, b: &mut Builder<'_>| {
            let agent = b.function("augmented_fn", &c.augmented_fn)?;
            if agent.description().trim().is_empty() {
                return Err(b.error(
                    "augmented_fn",
                    BuildErrorKind::Range {
                        reason: format!("function `{}` needs a non-empty description", c.augmented_fn),
                    },
                ));
            }
            let context_template = b.template(
                "agent_context_prompt_template",
                c.agent_context_prompt_template.as_deref(),
                templates::AGENT_CONTEXT,
                &["description", "tools"],
            )?;
            let downstream = b.template(
                "downstream_template",
                c.downstream_template.as_deref(),
                templates::DOWNSTREAM,
                &["input_text", "reasoning_output"],
            )?;
            let no_plan = Template::checked(templates::DOWNSTREAM_NO_PLAN, &["input_text"])
                .map_err(|e| b.error("downstream_template", BuildErrorKind::Template(e)))?;
            let provides = Needs {
                original_prompt: true,
                agent_context: true,
            };
            let p = PipelineType::Planning;
            let planner = b.bind("planner", &c.planner, StageType::Search, p, provides)?;
            let editor = b.bind_opt("editor", c.editor.as_deref(), StageType::Editing, p, provides)?;
            let scorer = b.bind_opt("scorer", c.scorer.as_deref(), StageType::Scoring, p, provides)?;
            let selector = b.bind("selector", &c.selector, StageType::Selection, p, provides)?;
            let chain = [Some(&planner), editor.as_ref(), scorer.as_ref(), Some(&selector)];
            check_chain(b, Fields::default(), &chain)?;
            // The downstream agent reads the selected plan.
            let fills_plan = chain.iter().flatten().any(|s| s.strategy.writes(p).plan);
            if !fills_plan {
                return Err(b.error(
                    "planner",
                    BuildErrorKind::Chain {
                        reason: format!(
                            "no stage fills `plan`, which the downstream agent reads (strategy `{}` ({}) \
                             fills `output`; set `use_output_as_plan: true`)",
                            planner.name,
                            planner.strategy.kind()
                        ),
                    },
                ));
            }
            let tools = agent.tools();
            let tools_text = if tools.is_empty() {
                "Tools: none".to_string()
            } else {
                format!(
                    "Tool: Description\n{}",
                    tools
                        .iter()
                        .map(|(n, d)| format!("- {n}: {d}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            };
            let context = context_template.render(&[
                ("description", agent.description()),
                ("tools", &tools_text),
            ]);
            Ok(Arc::new(PlanSelectExecute {
                agent,
                planner,
                editor,
                scorer,
                selector,
                context,
                downstream,
                no_plan,
                verbose: c.verbose,
            }) as Arc<dyn Function>)
        },
    )
    .expect("built-in function names are unique");
}

/// `plan_select_execute_function` (alias `plan_select_execute`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSelectExecuteConfig {
    /// The downstream agent; needs a non-empty description. Required.
    pub augmented_fn: String,
    /// Planning search. Required.
    pub planner: String,
    /// Planning editing. Default: none.
    #[serde(default)]
    pub editor: Option<String>,
    /// Planning scoring. Default: none.
    #[serde(default)]
    pub scorer: Option<String>,
    /// Planning selection. Required.
    pub selector: String,
    /// Log the downstream prompt to stderr. Default: false.
    #[serde(default)]
    pub verbose: bool,
    /// Variables `description`, `tools`. Default: built-in.
    #[serde(default)]
    pub agent_context_prompt_template: Option<String>,
    /// Variables `input_text`, `reasoning_output`. Default: built-in.
    #[serde(default)]
    pub downstream_template: Option<String>,
}

struct PlanSelectExecute {
    agent: Arc<dyn Function>,
    planner: Bound,
    editor: Option<Bound>,
    scorer: Option<Bound>,
    selector: Bound,
    context: String,
    downstream: Template,
    no_plan: Template,
    verbose: bool,
}

impl PlanSelectExecute {
    /// Runs the plan pipeline; returns the downstream prompt.
    async fn plan(&self, input: &Value, ctx: &RunCtx) -> Result<String, FunctionError> {
        let function = ctx.function().to_string();
        let messages = input_messages(input).ok_or_else(|| FunctionError::InvalidInput {
            function: function.clone(),
            reason: "expected a string or an object with `messages`".into(),
        })?;
        let input_text = render_messages(&messages);
        let err = |slot: &str, source| FunctionError::Stage {
            function: function.clone(),
            slot: slot.to_string(),
            source,
        };
        let mut items = vec![Item::new(ctx.new_id())];
        for b in [
            Some(&self.planner),
            self.editor.as_ref(),
            self.scorer.as_ref(),
            Some(&self.selector),
        ]
        .into_iter()
        .flatten()
        {
            items = b
                .invoke(items, ctx, Some(&input_text), Some(&self.context))
                .await
                .map_err(|e| err(&b.slot, e))?;
        }
        let plan = items
            .first()
            .and_then(|i| i.plan.clone())
            .map(|p| p.trim().to_string())
            .unwrap_or_default();
        let prompt = if plan.is_empty() {
            eprintln!(
                "ponder: `{function}`: the selected plan is empty; running the agent without one"
            );
            self.no_plan.render(&[("input_text", &input_text)])
        } else {
            self.downstream
                .render(&[("input_text", &input_text), ("reasoning_output", &plan)])
        };
        if self.verbose {
            eprintln!("ponder: `{function}` downstream prompt:\n{prompt}");
        }
        Ok(prompt)
    }
}

impl Function for PlanSelectExecute {
    fn description(&self) -> &str {
        self.agent.description()
    }
    fn input_schema(&self) -> Value {
        serde_json::json!({"type": "string"})
    }
    fn output_schema(&self) -> Value {
        self.agent.output_schema()
    }
    fn tools(&self) -> Vec<(String, String)> {
        self.agent.tools()
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        Box::pin(async move {
            let prompt = self.plan(&input, ctx).await?;
            // The same context as `stream`, so both paths give the same answer for a seed.
            self.agent.invoke(Value::String(prompt), ctx).await
        })
    }
    fn streams(&self) -> bool {
        self.agent.streams()
    }
    fn stream<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<TextStream<'a>, FunctionError>> {
        Box::pin(async move {
            let prompt = self.plan(&input, ctx).await?;
            // Planning never streams; the agent's answer streams as it is generated.
            self.agent.stream(Value::String(prompt), ctx).await
        })
    }
}
