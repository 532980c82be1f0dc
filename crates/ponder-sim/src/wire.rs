//! Request bodies of the OpenAI-compatible endpoints, read field by field into validated
//! requests, so that every refusal is a 400 in OpenAI's shape naming the offending parameter.
//! Unknown fields are ignored.

use serde_json::{Map, Value};

use crate::config::SimConfig;
use crate::error::ApiError;

/// Which generation endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
}

/// A chat message as the simulator needs it.
#[derive(Debug, Clone)]
pub(crate) struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// The prompt of a validated request.
#[derive(Debug, Clone)]
pub(crate) enum PromptInput {
    Chat {
        messages: Vec<ChatMessage>,
        /// The last (assistant) message is continued, not closed.
        prefill: bool,
        add_generation_prompt: bool,
    },
    Text(String),
}

/// A validated generation request.
#[derive(Debug, Clone)]
pub(crate) struct GenRequest {
    pub model: String,
    pub prompt: PromptInput,
    pub n: usize,
    pub max_tokens: usize,
    pub min_tokens: usize,
    pub stop: Vec<String>,
    /// vLLM's `include_stop_str_in_output`: keep the matched stop string in the text.
    pub include_stop: bool,
    pub seed: Option<u64>,
    pub temperature: f64,
    /// `None`: no logprobs; `Some(k)`: logprobs with `k` top alternatives.
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Field access on a JSON object with OpenAI-shaped errors.
struct Fields<'a>(&'a Map<String, Value>);

fn type_error(name: &str, expected: &str) -> ApiError {
    ApiError::invalid(format!("`{name}` must be {expected}"), Some(name))
}

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => integer(v)
                .and_then(|i| u64::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| type_error(name, "a non-negative integer")),
        }
    }

    fn i128(&self, name: &str) -> Result<Option<i128>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => integer(v)
                .map(Some)
                .ok_or_else(|| type_error(name, "an integer")),
        }
    }

    fn f64(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| type_error(name, "a number")),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| type_error(name, "a boolean")),
        }
    }

    fn str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| type_error(name, "a string")),
        }
    }
}

/// An integer, also when written as a float with no fraction (`5.0`).
fn integer(v: &Value) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = v.as_u64() {
        return Some(i128::from(u));
    }
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 1e18).then_some(f as i128)
}

/// Parses a JSON body into an object.
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid(
            "the request body must be a JSON object",
            None,
        )),
        Err(e) => Err(ApiError::invalid(
            format!("the request body is not valid JSON: {e}"),
            None,
        )),
    }
}

/// Reads and validates a chat or completions request.
pub(crate) fn parse_generation(
    endpoint: Endpoint,
    body: &Map<String, Value>,
    config: &SimConfig,
) -> Result<GenRequest, ApiError> {
    let f = Fields(body);
    let model = f
        .str("model")?
        .map_or_else(|| config.model_names[0].clone(), str::to_string);

    let prompt = match endpoint {
        Endpoint::Chat => parse_chat_prompt(&f)?,
        Endpoint::Completions => PromptInput::Text(parse_text_prompt(&f)?),
    };

    let n = f.u64("n")?.unwrap_or(1);
    if n == 0 || n > 128 {
        return Err(ApiError::invalid(
            format!("`n` must lie in 1..=128, got {n}"),
            Some("n"),
        ));
    }
    if config.reject_n && n > 1 {
        return Err(ApiError::invalid(
            "only one completion choice is allowed",
            Some("n"),
        ));
    }

    let max_completion = f.u64("max_completion_tokens")?;
    let (max_name, max_tokens) = match max_completion {
        Some(m) => ("max_completion_tokens", Some(m)),
        None => ("max_tokens", f.u64("max_tokens")?),
    };
    let max_tokens = max_tokens.unwrap_or(u64::from(config.default_max_tokens));
    if max_tokens == 0 {
        return Err(ApiError::invalid(
            format!("`{max_name}` must be at least 1"),
            Some(max_name),
        ));
    }
    // vLLM's `ignore_eos`: generate exactly `max_tokens` (stop strings still apply).
    let min_tokens = if f.bool("ignore_eos")?.unwrap_or(false) {
        max_tokens
    } else {
        f.u64("min_tokens")?.unwrap_or(0)
    };
    if min_tokens > max_tokens {
        return Err(ApiError::invalid(
            format!("`min_tokens` ({min_tokens}) must not exceed `{max_name}` ({max_tokens})"),
            Some("min_tokens"),
        ));
    }

    let stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| type_error("stop", "a string or a list of strings"))?,
        Some(_) => return Err(type_error("stop", "a string or a list of strings")),
    };
    if let Some(max) = config.max_stop {
        if stop.len() > max {
            return Err(ApiError::invalid(
                format!(
                    "`stop` has {} strings, at most {max} are allowed",
                    stop.len()
                ),
                Some("stop"),
            ));
        }
    }
    let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
    let include_stop = f.bool("include_stop_str_in_output")?.unwrap_or(false);

    let seed = f.i128("seed")?.map(|s| s as u64);
    let temperature = f.f64("temperature")?.unwrap_or(1.0);
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(ApiError::invalid(
            format!("`temperature` must be a non-negative number, got {temperature}"),
            Some("temperature"),
        ));
    }
    if let Some(top_p) = f.f64("top_p")? {
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                format!("`top_p` must lie in (0, 1], got {top_p}"),
                Some("top_p"),
            ));
        }
    }
    if let Some(top_k) = f.i128("top_k")? {
        if top_k < -1 {
            return Err(ApiError::invalid(
                format!("`top_k` must be -1 (off), 0 (off) or positive, got {top_k}"),
                Some("top_k"),
            ));
        }
    }

    let max_logprobs = usize::from(config.max_logprobs);
    let logprobs = match endpoint {
        Endpoint::Chat => {
            let on = f.bool("logprobs")?.unwrap_or(false);
            let k = f.u64("top_logprobs")?;
            if k.is_some_and(|k| k > 0) && !on {
                return Err(ApiError::invalid(
                    "`top_logprobs` requires `logprobs` to be true",
                    Some("top_logprobs"),
                ));
            }
            let k = k.unwrap_or(0);
            if k > max_logprobs as u64 {
                return Err(ApiError::invalid(
                    format!("`top_logprobs` must be at most {max_logprobs}, got {k}"),
                    Some("top_logprobs"),
                ));
            }
            on.then_some(k as usize)
        }
        Endpoint::Completions => match f.u64("logprobs")? {
            None => None,
            Some(k) if k > max_logprobs as u64 => {
                return Err(ApiError::invalid(
                    format!("`logprobs` must be at most {max_logprobs}, got {k}"),
                    Some("logprobs"),
                ))
            }
            Some(k) => Some(k as usize),
        },
    };

    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(opts)) => {
            if !stream {
                return Err(ApiError::invalid(
                    "`stream_options` is only allowed when `stream` is true",
                    Some("stream_options"),
                ));
            }
            Fields(opts).bool("include_usage")?.unwrap_or(false)
        }
        Some(_) => return Err(type_error("stream_options", "an object")),
    };

    Ok(GenRequest {
        model,
        prompt,
        n: n as usize,
        max_tokens: usize::try_from(max_tokens).unwrap_or(usize::MAX),
        min_tokens: usize::try_from(min_tokens).unwrap_or(usize::MAX),
        stop,
        include_stop,
        seed,
        temperature,
        logprobs,
        stream,
        include_usage,
    })
}

fn parse_text_prompt(f: &Fields<'_>) -> Result<String, ApiError> {
    match f.get("prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => Ok(s.clone()),
            [] => Err(ApiError::invalid("`prompt` is empty", Some("prompt"))),
            [_] => Err(type_error("prompt", "a string or a list of one string")),
            _ => Err(ApiError::invalid(
                "the simulator takes one prompt per request (`prompt` lists several)",
                Some("prompt"),
            )),
        },
        Some(_) => Err(type_error("prompt", "a string or a list of one string")),
        None => Err(ApiError::invalid("`prompt` is required", Some("prompt"))),
    }
}

fn parse_chat_prompt(f: &Fields<'_>) -> Result<PromptInput, ApiError> {
    let messages = match f.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid("`messages` is empty", Some("messages")))
        }
        Some(_) => return Err(type_error("messages", "a list of messages")),
        None => {
            return Err(ApiError::invalid(
                "`messages` is required",
                Some("messages"),
            ))
        }
    };
    let messages = parse_messages(messages)?;
    let continue_final = f.bool("continue_final_message")?.unwrap_or(false);
    let add_generation_prompt = f.bool("add_generation_prompt")?;
    if continue_final && add_generation_prompt == Some(true) {
        return Err(ApiError::invalid(
            "`continue_final_message` and `add_generation_prompt` cannot both be true",
            Some("continue_final_message"),
        ));
    }
    let last_is_assistant = messages.last().is_some_and(|m| m.role == "assistant");
    if continue_final && !last_is_assistant {
        return Err(ApiError::invalid(
            "`continue_final_message` needs the last message to be from the assistant",
            Some("continue_final_message"),
        ));
    }
    // Prefill: asked for explicitly, or implied by a final assistant message with no
    // generation prompt.
    let prefill = continue_final || (last_is_assistant && add_generation_prompt == Some(false));
    Ok(PromptInput::Chat {
        messages,
        prefill,
        add_generation_prompt: !prefill && add_generation_prompt.unwrap_or(true),
    })
}

/// Reads chat messages; `content` may be a string, a list of `{"type":"text","text":…}` parts,
/// or null.
pub(crate) fn parse_messages(items: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    items
        .iter()
        .map(|item| {
            let Value::Object(obj) = item else {
                return Err(type_error("messages", "a list of message objects"));
            };
            let role = match obj.get("role").and_then(Value::as_str) {
                Some(r @ ("system" | "developer" | "user" | "assistant" | "tool")) => r,
                Some(r) => {
                    return Err(ApiError::invalid(
                        format!("unknown message role `{r}`"),
                        Some("messages"),
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        "every message needs a string `role`",
                        Some("messages"),
                    ))
                }
            };
            let content = match obj.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match part.get("text").and_then(Value::as_str) {
                            Some(t) => text.push_str(t),
                            None if part.get("type").and_then(Value::as_str) == Some("text") => {
                                return Err(type_error("messages", "text parts with a `text`"))
                            }
                            None => {}
                        }
                    }
                    text
                }
                Some(_) => {
                    return Err(type_error(
                        "messages",
                        "messages whose `content` is a string or a list of parts",
                    ))
                }
            };
            Ok(ChatMessage {
                role: role.to_string(),
                content,
            })
        })
        .collect()
}
