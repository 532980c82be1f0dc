//! What a user writes to configure the HTTP backend ([`OpenAiConfig`]), and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Configuration of an [`OpenAiBackend`](crate::OpenAiBackend), as written in a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URLs including the API prefix, e.g. `http://127.0.0.1:8000/v1`. Several URLs are
    /// replicas of one model. Required, at least one (a front end may fill it from a flag, so
    /// a file may leave it out).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The model name sent in every request. Required (a file may leave it to a flag).
    #[serde(default)]
    pub model: String,
    /// Endpoint used for chat prompts. Default: `chat`. A text prompt always uses
    /// `/completions`.
    #[serde(default)]
    pub api: Api,
    /// Environment variable holding the API key, read once at construction; `null` sends no
    /// key. An unset or empty variable sends no key. Default: `PONDER_API_KEY`.
    #[serde(default = "default_api_key_env")]
    pub api_key_env: Option<String>,
    /// Most upstream requests in flight at once, over all endpoints. Default: 256.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// TCP (and TLS) connect timeout per attempt, in milliseconds. Default: 5000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Per attempt: longest wait for the response headers, and then between two received
    /// chunks, in milliseconds; a stalled stream is a timeout. Default: 120000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Overall limit for one call, across retries and including streaming, in milliseconds.
    /// Default: none.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Retries after the first attempt (connection errors, timeouts before the first event,
    /// HTTP 408, 429 and 5xx). Default: 4.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Base of the exponential backoff between retries, in milliseconds (retry `k` waits a
    /// uniformly random time in `[0, min(max, base · 2^k)]`). Default: 200.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Cap of the backoff, in milliseconds. `Retry-After` on 429/503 overrides the backoff and
    /// is capped only by the deadline. Default: 10000.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Seed of the backoff jitter generator. Default: 0.
    #[serde(default)]
    pub backoff_seed: u64,
    /// Most stop strings sent to the server; the rest are matched client-side. Default: none
    /// (no limit). OpenAI's hosted API accepts 4.
    #[serde(default)]
    pub max_stop_strings: Option<usize>,
    /// How `n > 1` is served. Default: `auto`.
    #[serde(default)]
    pub n_mode: NMode,
    /// Largest `top_logprobs` the server returns; `null` for a server without logprobs.
    /// Default: 20.
    #[serde(default = "default_max_top_logprobs")]
    pub max_top_logprobs: Option<u8>,
    /// The server continues a final assistant message (vLLM's and SGLang's
    /// `continue_final_message`) or a raw text prompt. Default: true.
    #[serde(default = "default_true")]
    pub prefix_continuation: bool,
    /// A process reward model served through the pooling API. Default: none.
    #[serde(default)]
    pub reward: Option<RewardConfig>,
    /// Consecutive retryable failures after which an endpoint is ejected. Default: 3.
    #[serde(default = "default_eject_after_failures")]
    pub eject_after_failures: u32,
    /// How long an ejected endpoint is left out, in milliseconds. Default: 10000.
    #[serde(default = "default_eject_for_ms")]
    pub eject_for_ms: u64,
}

/// Which endpoint chat prompts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/chat/completions`: the server applies the chat template.
    #[default]
    Chat,
    /// `/completions` only: the server has no chat endpoint, so chat prompts are refused (the
    /// caller renders the template and sends text).
    Completions,
}

/// How a request with `n > 1` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NMode {
    /// Send `n`; if the server rejects it (a 4xx about `n`), split into `n` single requests
    /// from then on, for the backend's lifetime.
    #[default]
    Auto,
    /// Always send `n`.
    Native,
    /// Always send `n` concurrent single requests with seeds `seed + i`.
    Split,
}

/// A process reward model behind vLLM's pooling API (`reasoning-strategies.md` §2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    /// Base URLs of the reward servers, like [`OpenAiConfig::endpoints`]. Default: empty, which
    /// means the generation endpoints.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Path of the pooling endpoint, relative to the host (the base URL's path is replaced).
    /// Default: `/pooling`.
    #[serde(default = "default_pooling_path")]
    pub path: String,
    /// The reward model's name. Required.
    pub model: String,
    /// How steps are marked in the input and how rows are read. Default: `qwen`.
    #[serde(default)]
    pub format: RewardFormat,
    /// `qwen` only: the system message of the PRM's chat template. Default: the Qwen2.5-Math
    /// chain-of-thought instruction the PRM was trained with.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Sent as the pooling request's `task` (newer vLLM: `token_classify`). Default: not sent.
    #[serde(default)]
    pub task: Option<String>,
}

/// Input format and score reading of a process reward model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardFormat {
    /// Qwen2.5-Math-PRM: chat template, steps joined and terminated by `<extra_0>`; each row is
    /// `[p_neg, p_pos]`.
    #[default]
    Qwen,
    /// Math-Shepherd: `question step1 ки\n\nstep2 ки`; each row is `[p(+), p(-)]`.
    MathShepherd,
}

/// The Qwen2.5-Math chain-of-thought instruction.
pub const QWEN_MATH_SYSTEM_PROMPT: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

fn default_api_key_env() -> Option<String> {
    Some("PONDER_API_KEY".into())
}
fn default_max_concurrency() -> usize {
    256
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    120_000
}
fn default_max_retries() -> u32 {
    4
}
fn default_backoff_base_ms() -> u64 {
    200
}
fn default_backoff_max_ms() -> u64 {
    10_000
}
fn default_max_top_logprobs() -> Option<u8> {
    Some(ponder_core::MAX_TOP_LOGPROBS)
}
fn default_true() -> bool {
    true
}
fn default_eject_after_failures() -> u32 {
    3
}
fn default_eject_for_ms() -> u64 {
    10_000
}
fn default_pooling_path() -> String {
    "/pooling".into()
}

impl Default for OpenAiConfig {
    /// Every default, with no endpoint and no model: not valid until both are set.
    fn default() -> Self {
        OpenAiConfig::new(Vec::new(), String::new())
    }
}

impl OpenAiConfig {
    /// A configuration with every default, for `endpoints` and `model`.
    pub fn new(endpoints: Vec<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            endpoints,
            model: model.into(),
            api: Api::default(),
            api_key_env: default_api_key_env(),
            max_concurrency: default_max_concurrency(),
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            deadline_ms: None,
            max_retries: default_max_retries(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            backoff_seed: 0,
            max_stop_strings: None,
            n_mode: NMode::default(),
            max_top_logprobs: default_max_top_logprobs(),
            prefix_continuation: true,
            reward: None,
            eject_after_failures: default_eject_after_failures(),
            eject_for_ms: default_eject_for_ms(),
        }
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub(crate) fn deadline(&self) -> Option<Duration> {
        self.deadline_ms.map(Duration::from_millis)
    }
    pub(crate) fn eject_for(&self) -> Duration {
        Duration::from_millis(self.eject_for_ms)
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError {
                field,
                reason: reason.into(),
            })
        }
        if self.endpoints.is_empty() {
            return bad("endpoints", "at least one endpoint is needed");
        }
        for e in &self.endpoints {
            check_base_url(e).map_err(|reason| ConfigError {
                field: "endpoints",
                reason,
            })?;
        }
        if self.model.trim().is_empty() {
            return bad("model", "must not be empty");
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency", "must be ≥ 1");
        }
        if self.connect_timeout_ms == 0 {
            return bad("connect_timeout_ms", "must be ≥ 1");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be ≥ 1");
        }
        if self.deadline_ms == Some(0) {
            return bad("deadline_ms", "must be ≥ 1");
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return bad(
                "backoff_base_ms",
                format!(
                    "{} is larger than backoff_max_ms {}",
                    self.backoff_base_ms, self.backoff_max_ms
                ),
            );
        }
        if let Some(k) = self.max_top_logprobs {
            if k > ponder_core::MAX_TOP_LOGPROBS {
                return bad(
                    "max_top_logprobs",
                    format!("must be in 0..={}, got {k}", ponder_core::MAX_TOP_LOGPROBS),
                );
            }
        }
        if self.eject_after_failures == 0 {
            return bad("eject_after_failures", "must be ≥ 1");
        }
        if let Some(r) = &self.reward {
            if r.model.trim().is_empty() {
                return bad("reward.model", "must not be empty");
            }
            if !r.path.starts_with('/') {
                return bad(
                    "reward.path",
                    format!("must start with `/`, got `{}`", r.path),
                );
            }
            for e in &r.endpoints {
                check_base_url(e).map_err(|reason| ConfigError {
                    field: "reward.endpoints",
                    reason,
                })?;
            }
        }
        Ok(())
    }
}

fn check_base_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` must use http or https"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("`{url}` must not have a query or fragment"));
    }
    Ok(())
}

/// A configuration field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backend configuration `{field}`: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_a_minimal_file() {
        let c: OpenAiConfig =
            serde_json::from_str(r#"{"endpoints":["http://127.0.0.1:8000/v1"],"model":"m"}"#)
                .expect("parses");
        assert_eq!(
            c,
            OpenAiConfig::new(vec!["http://127.0.0.1:8000/v1".into()], "m")
        );
        assert_eq!(c.api_key_env.as_deref(), Some("PONDER_API_KEY"));
        assert_eq!(c.max_concurrency, 256);
        assert_eq!(c.max_retries, 4);
        assert_eq!(c.max_top_logprobs, Some(20));
        assert_eq!(c.n_mode, NMode::Auto);
        assert!(c.validate().is_ok());
        let no_key: OpenAiConfig =
            serde_json::from_str(r#"{"endpoints":["http://h/v1"],"model":"m","api_key_env":null}"#)
                .expect("parses");
        assert_eq!(no_key.api_key_env, None);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<OpenAiConfig>(
            r#"{"endpoints":["http://h/v1"],"model":"m","retries":3}"#,
        );
        assert!(e.is_err());
        let e = serde_json::from_str::<OpenAiConfig>(
            r#"{"endpoints":["http://h/v1"],"model":"m","reward":{"model":"p","fmt":"qwen"}}"#,
        );
        assert!(e.is_err());
    }

    #[test]
    fn validation_names_the_field() {
        fn field(f: impl FnOnce(&mut OpenAiConfig)) -> Option<&'static str> {
            let mut c = OpenAiConfig::new(vec!["http://127.0.0.1:1/v1".into()], "m");
            f(&mut c);
            c.validate().err().map(|e| e.field)
        }
        assert_eq!(field(|_| {}), None);
        assert_eq!(field(|c| c.endpoints.clear()), Some("endpoints"));
        assert_eq!(
            field(|c| c.endpoints = vec!["ftp://x".into()]),
            Some("endpoints")
        );
        assert_eq!(
            field(|c| c.endpoints = vec!["not a url".into()]),
            Some("endpoints")
        );
        assert_eq!(field(|c| c.model = " ".into()), Some("model"));
        assert_eq!(field(|c| c.max_concurrency = 0), Some("max_concurrency"));
        assert_eq!(
            field(|c| c.backoff_base_ms = 20_000),
            Some("backoff_base_ms")
        );
        assert_eq!(
            field(|c| c.max_top_logprobs = Some(21)),
            Some("max_top_logprobs")
        );
        assert_eq!(
            field(|c| {
                c.reward = Some(RewardConfig {
                    endpoints: vec![],
                    path: "pooling".into(),
                    model: "prm".into(),
                    format: RewardFormat::Qwen,
                    system_prompt: None,
                    task: None,
                })
            }),
            Some("reward.path")
        );
    }

    #[test]
    fn reward_format_names() {
        let r: RewardConfig =
            serde_json::from_str(r#"{"model":"p","format":"math-shepherd"}"#).expect("parses");
        assert_eq!(r.format, RewardFormat::MathShepherd);
        assert_eq!(r.path, "/pooling");
    }
}
