//! LLMs as workflows see them: a name, an `Arc<dyn Backend>` and default sampling settings;
//! every call goes through `ponder_core::Metered` (cost counted once), under a per-call
//! timeout, with a seed derived from the run seed; bounded re-asks for unparsable replies.
//!
//! The crate knows no concrete backend: the `llms` section is read into [`LlmConfig`] and a
//! [`BackendFactory`] supplied by the caller (the CLI builds `OpenAiBackend`s, tests build
//! scripted backends) turns each entry into a backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ponder_core::{
    Backend, BackendError, GenerationRequest, Message, Metered, Prompt, SamplingParams,
};
use serde::Deserialize;

use crate::run::RunCtx;

/// One entry of the `llms` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Client kind: `openai` or `nim` (both OpenAI-compatible). Required.
    #[serde(rename = "_type")]
    pub kind: String,
    /// Model name sent to the server (alias `model_name`). Required.
    #[serde(alias = "model_name")]
    pub model: String,
    /// Base URL including `/v1`. Default: the `--backend` flag (or `PONDER_BACKEND`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key. Default: `PONDER_API_KEY`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Sampling temperature of ordinary calls. Default: 0.0.
    #[serde(default)]
    pub temperature: f64,
    /// Nucleus mass. Default: 1.0.
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    /// Most tokens per reply. Default: 300.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Per-call timeout in milliseconds (across the backend's retries). Default: 120000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of transport errors, 429 and 5xx after the first attempt (done by the backend,
    /// with exponential backoff and jitter). Default: 2 (three attempts).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Most calls in flight to this LLM at once, over the whole run. Default: 16.
    #[serde(default = "default_llm_concurrency")]
    pub max_concurrency: usize,
}

fn default_top_p() -> f64 {
    1.0
}
fn default_max_tokens() -> u32 {
    300
}
fn default_timeout_ms() -> u64 {
    120_000
}
fn default_max_retries() -> u32 {
    2
}
fn default_llm_concurrency() -> usize {
    16
}

/// Builds the backend of an `llms` entry: `(name, config) → backend` or a message.
pub type BackendFactory<'a> =
    dyn Fn(&str, &LlmConfig) -> Result<Arc<dyn Backend>, String> + Send + Sync + 'a;

/// A named LLM with its defaults.
#[derive(Clone)]
pub struct Llm {
    name: String,
    backend: Arc<dyn Backend>,
    config: LlmConfig,
    limit: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm").field("name", &self.name).finish()
    }
}

/// The outcome of a call with re-asks.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked<T> {
    /// The parsed value, `None` when no attempt parsed.
    pub value: Option<T>,
    /// The last raw reply.
    pub raw: String,
    /// Calls made (1 + re-asks).
    pub attempts: u32,
}

impl Llm {
    /// An LLM named `name` over `backend` with `config`'s defaults.
    pub fn new(name: impl Into<String>, backend: Arc<dyn Backend>, config: LlmConfig) -> Self {
        let permits = config.max_concurrency.max(1);
        Llm {
            name: name.into(),
            backend,
            config,
            limit: Arc::new(tokio::sync::Semaphore::new(permits)),
        }
    }

    /// The LLM's key in `llms`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured temperature.
    pub fn temperature(&self) -> f64 {
        self.config.temperature
    }

    /// The backend (for streaming calls).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The request for `messages` at `temperature` (default: the configured one) and `seed`.
    pub fn request(
        &self,
        messages: Vec<Message>,
        temperature: Option<f64>,
        seed: u64,
    ) -> GenerationRequest {
        GenerationRequest::new(
            Prompt::Chat {
                messages,
                continue_final_message: false,
            },
            SamplingParams {
                temperature: Some(temperature.unwrap_or(self.config.temperature)),
                top_p: Some(self.config.top_p),
                max_tokens: Some(self.config.max_tokens),
                seed: Some(seed),
                ..SamplingParams::default()
            },
        )
    }

    /// One call: the reply text. The call is metered and booked into `run` (and `stage`, when
    /// given); it fails after the per-call timeout.
    pub async fn chat(
        &self,
        run: &RunCtx,
        stage: Option<&std::sync::Mutex<crate::run::Cost>>,
        messages: Vec<Message>,
        temperature: Option<f64>,
        seed: u64,
    ) -> Result<String, BackendError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| BackendError::Cancelled)?;
        let metered = Metered::new(self.backend.clone());
        let started = Instant::now();
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let result = tokio::time::timeout(
            timeout,
            metered.generate(self.request(messages, temperature, seed)),
        )
        .await;
        let cost = metered.meter().snapshot(started, seed);
        run.record_call(&cost);
        if let Some(stage) = stage {
            if let Ok(mut s) = stage.lock() {
                s.add_call(&cost);
            }
        }
        let response = result.map_err(|_| BackendError::Timeout {
            endpoint: format!("llm `{}`", self.name),
            after: timeout,
        })??;
        Ok(response
            .completions
            .into_iter()
            .next()
            .map(|c| c.text)
            .unwrap_or_default())
    }

    /// Calls with `messages`, parses the reply with `parse`, and on a parse failure re-asks up
    /// to `max_reask` times with the reply and `correction` appended. Transport errors end the
    /// call with `Err`.
    #[allow(clippy::too_many_arguments)]
    pub async fn ask<T>(
        &self,
        run: &RunCtx,
        stage: Option<&std::sync::Mutex<crate::run::Cost>>,
        mut messages: Vec<Message>,
        temperature: Option<f64>,
        seed: u64,
        max_reask: u32,
        parse: impl Fn(&str) -> Option<T>,
        correction: &str,
    ) -> Result<Asked<T>, BackendError> {
        let mut raw = String::new();
        for attempt in 0..=max_reask {
            let reply = self
                .chat(
                    run,
                    stage,
                    messages.clone(),
                    temperature,
                    seed.wrapping_add(u64::from(attempt)),
                )
                .await?;
            if let Some(value) = parse(&reply) {
                return Ok(Asked {
                    value: Some(value),
                    raw: reply,
                    attempts: attempt + 1,
                });
            }
            messages.push(Message::assistant(reply.clone()));
            messages.push(Message::user(correction.to_string()));
            raw = reply;
        }
        Ok(Asked {
            value: None,
            raw,
            attempts: max_reask + 1,
        })
    }
}
