//! The function contract (async, JSON in and out, with a description and input/output schemas)
//! and the basic functions: an LLM chat function, an HTTP tool, a command tool and Rust
//! closures. The pre-built test-time-compute functions are in `functions`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use ponder_core::{BoxFuture, Message, Metered, Role};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::error::FunctionError;
use crate::item::render_value;
use crate::llm::Llm;
use crate::run::RunCtx;

/// A stream of text chunks from a streaming function.
pub type TextStream<'a> = Pin<Box<dyn Stream<Item = Result<String, FunctionError>> + Send + 'a>>;

/// Something a workflow can call: an agent, a tool, a pre-built test-time-compute function.
pub trait Function: Send + Sync {
    /// What the function does (shown to planners and selectors).
    fn description(&self) -> &str;
    /// JSON Schema of the input. Default: any value (`{}`).
    fn input_schema(&self) -> Value {
        json!({})
    }
    /// JSON Schema of the output. Default: any value (`{}`).
    fn output_schema(&self) -> Value {
        json!({})
    }
    /// Tools the function can call, as `(name, description)`; planners see them. Default: none.
    fn tools(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Calls the function.
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>>;
    /// Whether [`Function::stream`] yields text as it is produced (not just one chunk).
    fn streams(&self) -> bool {
        false
    }
    /// Calls the function and yields its text output in chunks. Default: one chunk, the
    /// rendered output of [`Function::invoke`].
    fn stream<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<TextStream<'a>, FunctionError>> {
        Box::pin(async move {
            let out = self.invoke(input, ctx).await?;
            let s: TextStream<'a> =
                Box::pin(futures_util::stream::once(
                    async move { Ok(render_value(&out)) },
                ));
            Ok(s)
        })
    }
}

/// Whether a schema says the value is text.
pub fn schema_is_text(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("string")
}

/// Reads chat messages from a function input: a string is one user message; an object with
/// `messages: [{role, content}]` a conversation; an object with `input` its text.
pub fn input_messages(input: &Value) -> Option<Vec<Message>> {
    match input {
        Value::String(s) => Some(vec![Message::user(s.clone())]),
        Value::Object(o) => {
            if let Some(list) = o.get("messages").and_then(Value::as_array) {
                let mut out = Vec::new();
                for m in list {
                    let role = match m.get("role").and_then(Value::as_str)? {
                        "system" => Role::System,
                        "user" => Role::User,
                        "assistant" => Role::Assistant,
                        "tool" => Role::Tool,
                        _ => return None,
                    };
                    let content = m.get("content").map(render_value).unwrap_or_default();
                    out.push(Message::new(role, content));
                }
                (!out.is_empty()).then_some(out)
            } else {
                o.get("input").map(|v| vec![Message::user(render_value(v))])
            }
        }
        Value::Null => None,
        other => Some(vec![Message::user(render_value(other))]),
    }
}

/// Renders messages as `role: content` lines.
pub fn render_messages(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| format!("{}: {}", m.role.as_str(), m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `llm_chat`: sends its input to an LLM (with an optional system prompt) and returns the reply
/// text. Streams when asked to.
pub struct LlmChat {
    llm: Llm,
    description: String,
    system_prompt: Option<String>,
}

/// Configuration of `llm_chat`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmChatConfig {
    /// The LLM (a key of `llms`). Required.
    #[serde(alias = "llm_name")]
    pub llm: String,
    /// What the agent does; planners see it. Default: "Answers with an LLM.".
    #[serde(default)]
    pub description: Option<String>,
    /// A system message sent first. Default: none.
    #[serde(default)]
    pub system_prompt: Option<String>,
}

impl LlmChat {
    /// A chat function over `llm`.
    pub fn new(llm: Llm, description: Option<String>, system_prompt: Option<String>) -> Self {
        LlmChat {
            llm,
            description: description.unwrap_or_else(|| "Answers with an LLM.".into()),
            system_prompt,
        }
    }

    fn messages(&self, input: &Value) -> Result<Vec<Message>, FunctionError> {
        let mut messages = input_messages(input).ok_or_else(|| FunctionError::InvalidInput {
            function: "llm_chat".into(),
            reason: "expected a string or an object with `messages` or `input`".into(),
        })?;
        if let Some(system) = &self.system_prompt {
            messages.insert(0, Message::system(system.clone()));
        }
        Ok(messages)
    }
}

impl Function for LlmChat {
    fn description(&self) -> &str {
        &self.description
    }
    fn input_schema(&self) -> Value {
        json!({"type": "string"})
    }
    fn output_schema(&self) -> Value {
        json!({"type": "string"})
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        Box::pin(async move {
            let messages = self.messages(&input)?;
            let text = self
                .llm
                .chat(
                    ctx,
                    None,
                    messages,
                    ctx.temperature(),
                    ctx.seed_for("llm_chat"),
                )
                .await
                .map_err(|source| FunctionError::Backend {
                    function: ctx.function().to_string(),
                    source,
                })?;
            Ok(Value::String(crate::parse::clean(&text)))
        })
    }
    fn streams(&self) -> bool {
        true
    }
    fn stream<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<TextStream<'a>, FunctionError>> {
        Box::pin(async move {
            let messages = self.messages(&input)?;
            let request = self
                .llm
                .request(messages, ctx.temperature(), ctx.seed_for("llm_chat"));
            let metered = Arc::new(Metered::new(self.llm.backend().clone()));
            let started = std::time::Instant::now();
            let function = ctx.function().to_string();
            let stream = ponder_core::Backend::stream(metered.as_ref(), request)
                .await
                .map_err(|source| FunctionError::Backend {
                    function: function.clone(),
                    source,
                })?;
            // Book the call's cost when the stream ends (dropping the stream books its usage).
            let ctx2 = ctx.clone();
            let seed = ctx.seed_for("llm_chat");
            let mut inner = Some(stream);
            let chunks = futures_util::stream::poll_fn(move |cx| {
                let Some(s) = inner.as_mut() else {
                    return std::task::Poll::Ready(None);
                };
                loop {
                    match s.poll_next_unpin(cx) {
                        std::task::Poll::Ready(Some(Ok(ponder_core::StreamEvent::Delta {
                            text,
                            ..
                        }))) => {
                            if !text.is_empty() {
                                return std::task::Poll::Ready(Some(Ok(text)));
                            }
                        }
                        std::task::Poll::Ready(Some(Ok(_))) => continue,
                        std::task::Poll::Ready(Some(Err(source))) => {
                            inner = None;
                            return std::task::Poll::Ready(Some(Err(FunctionError::Backend {
                                function: function.clone(),
                                source,
                            })));
                        }
                        std::task::Poll::Ready(None) => {
                            inner = None;
                            ctx2.record_call(&metered.meter().snapshot(started, seed));
                            return std::task::Poll::Ready(None);
                        }
                        std::task::Poll::Pending => return std::task::Poll::Pending,
                    }
                }
            });
            let s: TextStream<'a> = Box::pin(chunks);
            Ok(s)
        })
    }
}

/// Configuration of `http_tool`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolConfig {
    /// The URL the input is POSTed to as JSON. Required.
    pub url: String,
    /// What the tool does. Required.
    pub description: String,
    /// JSON Schema of the input. Default: `{}` (any value).
    #[serde(default = "any_schema")]
    pub input_schema: Value,
    /// JSON Schema of the output. Default: `{}` (any value).
    #[serde(default = "any_schema")]
    pub output_schema: Value,
    /// Timeout of one call in milliseconds. Default: 30000.
    #[serde(default = "default_tool_timeout_ms")]
    pub timeout_ms: u64,
}

fn any_schema() -> Value {
    json!({})
}
fn default_tool_timeout_ms() -> u64 {
    30_000
}

/// `http_tool`: POSTs its input as JSON to a URL; a JSON reply is the output, any other reply
/// its text. Non-2xx answers are tool errors.
pub struct HttpTool {
    config: HttpToolConfig,
    client: reqwest::Client,
}

impl HttpTool {
    /// A tool calling `config.url`.
    pub fn new(config: HttpToolConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpTool { config, client })
    }
}

impl Function for HttpTool {
    fn description(&self) -> &str {
        &self.config.description
    }
    fn input_schema(&self) -> Value {
        self.config.input_schema.clone()
    }
    fn output_schema(&self) -> Value {
        self.config.output_schema.clone()
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        Box::pin(async move {
            let tool = ctx.function().to_string();
            let fail = |message: String| FunctionError::Tool {
                tool: tool.clone(),
                message,
            };
            let body = serde_json::to_vec(&input).map_err(|e| fail(e.to_string()))?;
            let response = self
                .client
                .post(&self.config.url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        FunctionError::Timeout {
                            tool: tool.clone(),
                            after_ms: self.config.timeout_ms,
                        }
                    } else {
                        fail(format!("POST {}: {e}", self.config.url))
                    }
                })?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| fail(format!("reading the reply: {e}")))?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if !status.is_success() {
                return Err(fail(format!("HTTP {}: {}", status.as_u16(), text.trim())));
            }
            Ok(serde_json::from_slice(&bytes).unwrap_or(Value::String(text)))
        })
    }
}

/// Configuration of `command_tool`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandToolConfig {
    /// The program and its arguments, e.g. `[python3, tools/search.py]`. Required, non-empty.
    pub command: Vec<String>,
    /// What the tool does. Required.
    pub description: String,
    /// JSON Schema of the input. Default: `{}`.
    #[serde(default = "any_schema")]
    pub input_schema: Value,
    /// JSON Schema of the output. Default: `{}`.
    #[serde(default = "any_schema")]
    pub output_schema: Value,
    /// The program is killed after this many milliseconds. Default: 30000.
    #[serde(default = "default_tool_timeout_ms")]
    pub timeout_ms: u64,
}

/// `command_tool`: runs a local program with the input as JSON on stdin; its stdout (JSON, or
/// else text) is the output. A non-zero exit or the timeout is a tool error; the program is
/// killed on timeout.
pub struct CommandTool {
    config: CommandToolConfig,
}

impl CommandTool {
    /// A tool running `config.command`.
    pub fn new(config: CommandToolConfig) -> Result<Self, String> {
        if config.command.is_empty() || config.command[0].is_empty() {
            return Err("`command` needs at least the program".into());
        }
        Ok(CommandTool { config })
    }
}

impl Function for CommandTool {
    fn description(&self) -> &str {
        &self.config.description
    }
    fn input_schema(&self) -> Value {
        self.config.input_schema.clone()
    }
    fn output_schema(&self) -> Value {
        self.config.output_schema.clone()
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        Box::pin(async move {
            let tool = ctx.function().to_string();
            let fail = |message: String| FunctionError::Tool {
                tool: tool.clone(),
                message,
            };
            let mut child = tokio::process::Command::new(&self.config.command[0])
                .args(&self.config.command[1..])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| fail(format!("cannot start `{}`: {e}", self.config.command[0])))?;
            let body = serde_json::to_vec(&input).map_err(|e| fail(e.to_string()))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(&body)
                    .await
                    .map_err(|e| fail(format!("writing stdin: {e}")))?;
            }
            let out = tokio::time::timeout(
                Duration::from_millis(self.config.timeout_ms),
                child.wait_with_output(),
            )
            .await
            .map_err(|_| FunctionError::Timeout {
                tool: tool.clone(),
                after_ms: self.config.timeout_ms,
            })?
            .map_err(|e| fail(e.to_string()))?;
            if !out.status.success() {
                return Err(fail(format!(
                    "exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
        })
    }
}

type ClosureFn =
    dyn Fn(Value, RunCtx) -> BoxFuture<'static, Result<Value, FunctionError>> + Send + Sync;

/// A function made from a Rust closure.
pub struct ClosureFunction {
    description: String,
    input_schema: Value,
    output_schema: Value,
    f: Arc<ClosureFn>,
}

impl ClosureFunction {
    /// A function that runs `f`; schemas default to `{}`.
    pub fn new<F, Fut>(description: impl Into<String>, f: F) -> Self
    where
        F: Fn(Value, RunCtx) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, FunctionError>> + Send + 'static,
    {
        ClosureFunction {
            description: description.into(),
            input_schema: json!({}),
            output_schema: json!({}),
            f: Arc::new(move |v, c| Box::pin(f(v, c))),
        }
    }

    /// Sets the schemas.
    pub fn with_schemas(mut self, input: Value, output: Value) -> Self {
        self.input_schema = input;
        self.output_schema = output;
        self
    }
}

impl Function for ClosureFunction {
    fn description(&self) -> &str {
        &self.description
    }
    fn input_schema(&self) -> Value {
        self.input_schema.clone()
    }
    fn output_schema(&self) -> Value {
        self.output_schema.clone()
    }
    fn invoke<'a>(
        &'a self,
        input: Value,
        ctx: &'a RunCtx,
    ) -> BoxFuture<'a, Result<Value, FunctionError>> {
        (self.f)(input, ctx.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_messages_accepts_strings_and_conversations() {
        let m = input_messages(&json!("hi")).expect("string");
        assert_eq!(m, vec![Message::user("hi")]);
        let m = input_messages(&json!({"messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}
        ]}))
        .expect("conversation");
        assert_eq!(render_messages(&m), "system: be brief\nuser: q");
        assert!(
            input_messages(&json!({"messages": [{"role": "robot", "content": "x"}]})).is_none()
        );
        assert!(input_messages(&Value::Null).is_none());
    }

    #[tokio::test]
    async fn command_tool_round_trips_json_and_times_out() {
        let ctx = RunCtx::new(0);
        let cat = CommandTool::new(CommandToolConfig {
            command: vec!["cat".into()],
            description: "echo".into(),
            input_schema: json!({}),
            output_schema: json!({}),
            timeout_ms: 5_000,
        })
        .expect("valid");
        let out = cat.invoke(json!({"q": 1}), &ctx).await.expect("runs");
        assert_eq!(out, json!({"q": 1}));
        let slow = CommandTool::new(CommandToolConfig {
            command: vec!["sleep".into(), "5".into()],
            description: "slow".into(),
            input_schema: json!({}),
            output_schema: json!({}),
            timeout_ms: 100,
        })
        .expect("valid");
        let err = slow.invoke(json!(null), &ctx).await.expect_err("times out");
        assert!(
            matches!(err, FunctionError::Timeout { after_ms: 100, .. }),
            "{err}"
        );
        let failing = CommandTool::new(CommandToolConfig {
            command: vec!["false".into()],
            description: "fails".into(),
            input_schema: json!({}),
            output_schema: json!({}),
            timeout_ms: 5_000,
        })
        .expect("valid");
        assert!(matches!(
            failing.invoke(json!(1), &ctx).await,
            Err(FunctionError::Tool { .. })
        ));
    }

    #[tokio::test]
    async fn closures_are_functions() {
        let f = ClosureFunction::new("doubles", |v: Value, _ctx| async move {
            Ok(json!(v.as_i64().unwrap_or(0) * 2))
        });
        assert_eq!(
            f.invoke(json!(21), &RunCtx::new(0)).await.expect("ok"),
            json!(42)
        );
        assert_eq!(f.description(), "doubles");
    }
}
