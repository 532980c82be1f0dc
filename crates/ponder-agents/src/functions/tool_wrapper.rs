//! `ttc_tool_wrapper`: wraps a typed function as a tool that takes free text; an LLM turns the
//! text into the function's JSON input (validated against its input schema, with bounded
//! re-asks listing the validation errors). The sentinel `NOT ENOUGH INFORMATION` (anywhere,
//! any case) or exhausted re-asks give `FunctionError::InsufficientInformation`, never a value
//! of the wrong type.

use std::sync::Arc;

use ponder_core::{BoxFuture, Message};
use serde::Deserialize;
use serde_json::Value;

use super::schema::{describe_fields, extract_json, validate};
use crate::error::FunctionError;
use crate::function::Function;
use crate::item::render_value;
use crate::llm::Llm;
use crate::registry::{Builder, Registry};
use crate::run::RunCtx;
use crate::strategies::templates;
use crate::template::Template;

/// The sentinel a model writes when the task lacks information.
pub const SENTINEL: &str = "NOT ENOUGH INFORMATION";

pub(crate) fn register(r: &mut Registry) {
    r.register_function(
        "ttc_tool_wrapper",
        &[
            "its_tool_wrapper",
            "its_tool_wrapper_function",
            "ttc_tool_wrapper_function",
        ],
        |c: ToolWrapperConfig, b: &mut Builder<'_>| {
            let inner = b.function("augmented_fn", &c.augmented_fn)?;
            let llm = b.llm("input_llm", &c.input_llm)?;
            let template = b.template(
                "downstream_template",
                c.downstream_template.as_deref(),
                templates::TOOL_WRAPPER,
                &[
                    "function_description",
                    "input_schema",
                    "output_schema",
                    "task_description",
                ],
            )?;
            let description = if !inner.description().trim().is_empty() {
                inner.description().to_string()
            } else {
                c.tool_description.clone().ok_or_else(|| {
                    b.error(
                        "tool_description",
                        crate::error::BuildErrorKind::Range {
                            reason: format!(
                                "function `{}` has no description; set `tool_description`",
                                c.augmented_fn
                            ),
                        },
                    )
                })?
            };
            Ok(Arc::new(ToolWrapper {
                name: c.augmented_fn,
                inner,
                llm,
                template,
                description,
                verbose: c.verbose,
                max_reask: c.max_reask,
            }) as Arc<dyn Function>)
        },
    )
    .expect("built-in function names are unique");
}

fn d_reask() -> u32 {
    crate::strategy::DEFAULT_MAX_REASK
}

/// `ttc_tool_wrapper` (aliases `its_tool_wrapper`, `…_function`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolWrapperConfig {
    /// The function to wrap. Required.
    pub augmented_fn: String,
    /// The LLM that builds the structured input. Required.
    pub input_llm: String,
    /// Log the rendered prompt to stderr. Default: false.
    #[serde(default)]
    pub verbose: bool,
    /// Variables `function_description`, `input_schema`, `output_schema`, `task_description`.
    /// Default: built-in.
    #[serde(default)]
    pub downstream_template: Option<String>,
    /// Description used when the function has none. Default: none.
    #[serde(default)]
    pub tool_description: Option<String>,
    /// Re-asks after invalid JSON. Default: 2.
    #[serde(default = "d_reask")]
    pub max_reask: u32,
}

struct ToolWrapper {
    name: String,
    inner: Arc<dyn Function>,
    llm: Llm,
    template: Template,
    description: String,
    verbose: bool,
    max_reask: u32,
}

/// What one reply gave.
enum Reading {
    Valid(Value),
    Sentinel,
    Invalid(Vec<String>),
}

impl ToolWrapper {
    fn read(&self, reply: &str) -> Reading {
        let text = crate::parse::clean(reply);
        if text.to_ascii_uppercase().contains(SENTINEL) {
            return Reading::Sentinel;
        }
        match extract_json(&text) {
            None => Reading::Invalid(vec!["the reply holds no JSON value".into()]),
            Some(v) => {
                let errors = validate(&self.inner.input_schema(), &v, "");
                if errors.is_empty() {
                    Reading::Valid(v)
                } else {
                    Reading::Invalid(errors)
                }
            }
        }
    }
}

impl Function for ToolWrapper {
    fn description(&self) -> &str {
        &self.description
    }
    fn input_schema(&self) -> Value {
        serde_json::json!({"type": "string", "description": format!(
            "Describe the task thoroughly. The tool needs:\n{}",
            describe_fields(&self.inner.input_schema())
        )})
    }
    fn output_schema(&self) -> Value {
        self.inner.output_schema()
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        Box::pin(async move {
            let function = ctx.function().to_string();
            let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
            let prompt = self.template.render(&[
                ("function_description", &self.description),
                ("input_schema", &pretty(&self.inner.input_schema())),
                ("output_schema", &pretty(&self.inner.output_schema())),
                ("task_description", &render_value(&input)),
            ]);
            if self.verbose {
                eprintln!("ponder: tool wrapper `{function}` prompt:\n{prompt}");
            }
            let mut messages = vec![Message::user(prompt)];
            let mut last_errors = Vec::new();
            for attempt in 0..=self.max_reask {
                let reply = self
                    .llm
                    .chat(
                        ctx,
                        None,
                        messages.clone(),
                        None,
                        ctx.seed_for(&format!("wrap{attempt}")),
                    )
                    .await
                    .map_err(|source| FunctionError::Backend {
                        function: function.clone(),
                        source,
                    })?;
                match self.read(&reply) {
                    Reading::Valid(v) => {
                        return self.inner.invoke(v, &ctx.in_function(&self.name)).await
                    }
                    Reading::Sentinel => {
                        return Err(FunctionError::InsufficientInformation {
                            function,
                            reason: "the model said the task description lacks required details"
                                .into(),
                        })
                    }
                    Reading::Invalid(errors) => {
                        messages.push(Message::assistant(reply));
                        messages.push(Message::user(format!(
                            "That is not a valid input: {}. Reply with JSON matching the input \
                             schema only, or with exactly {SENTINEL}.",
                            errors.join("; ")
                        )));
                        last_errors = errors;
                    }
                }
            }
            Err(FunctionError::InsufficientInformation {
                function,
                reason: format!(
                    "no valid input after {} attempts: {}",
                    self.max_reask + 1,
                    last_errors.join("; ")
                ),
            })
        })
    }
}
