//! Generation requests: a prompt (chat messages or raw text) plus sampling parameters.

use serde::{Deserialize, Serialize};

use crate::error::InvalidRequest;

/// Largest number of top log-probabilities a request may ask for (OpenAI and vLLM's default cap).
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The wire name (`system`, `user`, `assistant`, `tool`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// What the model continues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// A chat. When the last message is from the assistant and `continue_final_message` is set,
    /// the model continues that message (assistant prefill) instead of starting a new turn.
    Chat {
        messages: Vec<Message>,
        #[serde(default)]
        continue_final_message: bool,
    },
    /// Raw text continued as is (the `/v1/completions` path). The caller renders any chat
    /// template itself, which keeps prefixes byte-identical across step calls.
    Text(String),
}

impl Prompt {
    /// A chat with one user message.
    pub fn user(question: impl Into<String>) -> Self {
        Prompt::Chat {
            messages: vec![Message::user(question)],
            continue_final_message: false,
        }
    }

    /// A chat whose final assistant message is continued (assistant prefill).
    pub fn prefill(mut messages: Vec<Message>, partial_answer: impl Into<String>) -> Self {
        messages.push(Message::assistant(partial_answer));
        Prompt::Chat {
            messages,
            continue_final_message: true,
        }
    }

    /// Whether continuing this prompt needs the prefix-continuation capability.
    pub fn needs_prefix_continuation(&self) -> bool {
        matches!(
            self,
            Prompt::Chat {
                continue_final_message: true,
                ..
            }
        )
    }
}

/// Sampling parameters. `None` means "the backend's default" and is not sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// Sampling temperature (≥ 0; 0 is greedy). Default: backend default.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass in (0, 1]. Default: backend default.
    pub top_p: Option<f64>,
    /// Keep only the `top_k` most likely tokens (≥ 1). Default: backend default.
    pub top_k: Option<u32>,
    /// Drop tokens whose probability is below `min_p` × the top token's, in [0, 1].
    pub min_p: Option<f64>,
    /// Most tokens to generate per completion. Default: backend default.
    pub max_tokens: Option<u32>,
    /// Fewest tokens to generate before a stop may end the completion. Default: 0.
    pub min_tokens: Option<u32>,
    /// Stop strings, any number; backends that accept fewer detect the rest client-side.
    pub stop: Vec<String>,
    /// Seed for the sampler. Completion `i` of a request with `n > 1` that is split into single
    /// requests uses `seed + i`.
    pub seed: Option<u64>,
    /// Number of completions of this prompt (≥ 1). Default: 1.
    pub n: u32,
    /// `None`: no log-probabilities. `Some(k)`: the sampled token's logprob plus the top `k`
    /// alternatives, `k` in 0..=20.
    pub top_logprobs: Option<u8>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: None,
            top_p: None,
            top_k: None,
            min_p: None,
            max_tokens: None,
            min_tokens: None,
            stop: Vec::new(),
            seed: None,
            n: 1,
            top_logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        fn bad(field: &'static str, reason: String) -> Result<(), InvalidRequest> {
            Err(InvalidRequest { field, reason })
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return bad(
                    "temperature",
                    format!("must be a finite number ≥ 0, got {t}"),
                );
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top_p", format!("must be in (0, 1], got {p}"));
            }
        }
        if self.top_k == Some(0) {
            return bad("top_k", "must be ≥ 1".into());
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return bad("min_p", format!("must be in [0, 1], got {p}"));
            }
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens", "must be ≥ 1".into());
        }
        if let (Some(min), Some(max)) = (self.min_tokens, self.max_tokens) {
            if min > max {
                return bad(
                    "min_tokens",
                    format!("{min} is larger than max_tokens {max}"),
                );
            }
        }
        if self.n == 0 {
            return bad("n", "must be ≥ 1".into());
        }
        if let Some(k) = self.top_logprobs {
            if k > MAX_TOP_LOGPROBS {
                return bad(
                    "top_logprobs",
                    format!("must be in 0..={MAX_TOP_LOGPROBS}, got {k}"),
                );
            }
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop", "stop strings must not be empty".into());
        }
        Ok(())
    }
}

/// One call to a backend: a prompt, its sampling parameters and fields passed through untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub params: SamplingParams,
    /// Extra body fields sent as they are (vLLM's `add_generation_prompt`,
    /// `include_stop_str_in_output`, `chat_template_kwargs`, …). Fields Ponder sets itself win.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl GenerationRequest {
    pub fn new(prompt: Prompt, params: SamplingParams) -> Self {
        GenerationRequest {
            prompt,
            params,
            extra: serde_json::Map::new(),
        }
    }

    /// Checks the parameters and the prompt's shape.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        self.params.validate()?;
        if let Prompt::Chat {
            messages,
            continue_final_message,
        } = &self.prompt
        {
            if messages.is_empty() {
                return Err(InvalidRequest {
                    field: "messages",
                    reason: "a chat needs at least one message".into(),
                });
            }
            if *continue_final_message && messages.last().map(|m| m.role) != Some(Role::Assistant) {
                return Err(InvalidRequest {
                    field: "continue_final_message",
                    reason: "the last message must be from the assistant to be continued".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(params: SamplingParams, field: Option<&str>) {
        assert_eq!(
            params.validate().err().map(|e| e.field),
            field,
            "{params:?}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        check(SamplingParams::default(), None);
        check(
            SamplingParams {
                top_logprobs: Some(20),
                ..Default::default()
            },
            None,
        );
        check(
            SamplingParams {
                top_logprobs: Some(21),
                ..Default::default()
            },
            Some("top_logprobs"),
        );
        check(
            SamplingParams {
                n: 0,
                ..Default::default()
            },
            Some("n"),
        );
        check(
            SamplingParams {
                temperature: Some(-0.1),
                ..Default::default()
            },
            Some("temperature"),
        );
        check(
            SamplingParams {
                top_p: Some(0.0),
                ..Default::default()
            },
            Some("top_p"),
        );
        check(
            SamplingParams {
                min_tokens: Some(9),
                max_tokens: Some(8),
                ..Default::default()
            },
            Some("min_tokens"),
        );
        check(
            SamplingParams {
                stop: vec![String::new()],
                ..Default::default()
            },
            Some("stop"),
        );
    }

    #[test]
    fn prefill_needs_an_assistant_message_last() {
        let ok = GenerationRequest::new(
            Prompt::prefill(vec![Message::user("q")], "Step 1:"),
            SamplingParams::default(),
        );
        assert!(ok.validate().is_ok());
        assert!(ok.prompt.needs_prefix_continuation());
        let bad = GenerationRequest::new(
            Prompt::Chat {
                messages: vec![Message::user("q")],
                continue_final_message: true,
            },
            SamplingParams::default(),
        );
        assert_eq!(
            bad.validate().err().map(|e| e.field),
            Some("continue_final_message")
        );
    }
}
