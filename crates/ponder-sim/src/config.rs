//! What a simulated server does: seed, latency model, injected faults, model quality, quirks.

use serde::{Deserialize, Serialize};

/// Configuration of one simulated server. `SimConfig::default()` is a fast, faultless server:
/// no latency, no faults, no quirks, seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every random choice the server makes. Default 0.
    pub seed: u64,
    /// Port to bind on 127.0.0.1; 0 picks a free one. Default 0.
    pub port: u16,
    /// Time model. Default: no latency, unlimited concurrency.
    pub latency: LatencyConfig,
    /// Injected faults. Default: none.
    pub faults: FaultConfig,
    /// Probability that one solution step of the synthetic task is right, per difficulty.
    /// Default easy 0.97, medium 0.9, hard 0.8.
    pub step_accuracy: StepAccuracy,
    /// Emulate llama.cpp: any `n > 1` is answered 400 "only one completion choice is allowed".
    /// Default false.
    pub reject_n: bool,
    /// Emulate OpenAI: more stop strings than this are answered 400 naming `stop`.
    /// Default `None` (any number).
    pub max_stop: Option<usize>,
    /// Largest `top_logprobs` (chat) or `logprobs` (completions) accepted; above it, 400.
    /// Default 20 (vLLM's `--max-logprobs` and OpenAI's limit).
    pub max_logprobs: u8,
    /// Model names listed by `/v1/models`. Requests may name any model; the response echoes
    /// the requested name, or the first of these when the request names none.
    /// Default `["ponder-sim", "ponder-sim-prm"]`.
    pub model_names: Vec<String>,
    /// `max_tokens` used when a request sets none. Default 4096.
    pub default_max_tokens: u32,
    /// Blocks of 16 prompt tokens the simulated prefix cache remembers. Default 65,536
    /// (about a million tokens; a few MiB of memory).
    pub prefix_cache_blocks: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            port: 0,
            latency: LatencyConfig::default(),
            faults: FaultConfig::default(),
            step_accuracy: StepAccuracy::default(),
            reject_n: false,
            max_stop: None,
            max_logprobs: 20,
            model_names: vec!["ponder-sim".to_string(), "ponder-sim-prm".to_string()],
            default_max_tokens: 4096,
            prefix_cache_blocks: 65_536,
        }
    }
}

/// The time model: a request waits for a free slot, then its first token comes after `ttft_ms`
/// and each further token `tpot_ms` later. Choices of one request (`n > 1`) are generated
/// side by side in one slot. Non-streaming responses take as long as the stream would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyConfig {
    /// Time to first token, in milliseconds. Default 0.
    pub ttft_ms: u64,
    /// Time per output token after the first, in milliseconds. Default 0.
    pub tpot_ms: u64,
    /// Requests generated at once; later ones wait in a queue. 0 = unlimited. Default 0.
    pub slots: usize,
}

/// Faults injected into generation requests (chat and completions; not pooling). Each request
/// draws its faults from the server seed and its arrival number, so a retried request can
/// succeed where the first try failed. Rates are probabilities in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Fraction of requests answered at once with an error status. Default 0.
    pub error_rate: f64,
    /// The status of injected errors; `None` draws 429 (with `Retry-After: 0` or `1`), 500 or
    /// 503 at random. Default `None`.
    pub error_status: Option<u16>,
    /// Fraction of requests that wait `stall_ms` before the first byte. Default 0.
    pub stall_rate: f64,
    /// Length of a stall, in milliseconds. Default 5,000.
    pub stall_ms: u64,
    /// Fraction of responses whose connection is closed half-way (streams end without
    /// `[DONE]`; bodies are truncated). Default 0.
    pub cut_rate: f64,
    /// Fraction of responses with invalid JSON in one chunk (streams) or in the body. Default 0.
    pub malformed_rate: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            error_rate: 0.0,
            error_status: None,
            stall_rate: 0.0,
            stall_ms: 5_000,
            cut_rate: 0.0,
            malformed_rate: 0.0,
        }
    }
}

/// Per-step accuracy of the simulated model on the synthetic task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepAccuracy {
    /// Default 0.97.
    pub easy: f64,
    /// Default 0.9.
    pub medium: f64,
    /// Default 0.8.
    pub hard: f64,
}

impl Default for StepAccuracy {
    fn default() -> Self {
        StepAccuracy {
            easy: 0.97,
            medium: 0.9,
            hard: 0.8,
        }
    }
}

impl SimConfig {
    /// Checks ranges; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("faults.error_rate", self.faults.error_rate),
            ("faults.stall_rate", self.faults.stall_rate),
            ("faults.cut_rate", self.faults.cut_rate),
            ("faults.malformed_rate", self.faults.malformed_rate),
            ("step_accuracy.easy", self.step_accuracy.easy),
            ("step_accuracy.medium", self.step_accuracy.medium),
            ("step_accuracy.hard", self.step_accuracy.hard),
        ];
        for (name, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} must lie in [0, 1], got {value}"));
            }
        }
        if let Some(status) = self.faults.error_status {
            if !(400..=599).contains(&status) {
                return Err(format!(
                    "faults.error_status must be an HTTP error status (400..=599), got {status}"
                ));
            }
        }
        if self.model_names.is_empty() {
            return Err("model_names must name at least one model".to_string());
        }
        if self.default_max_tokens == 0 {
            return Err("default_max_tokens must be at least 1".to_string());
        }
        Ok(())
    }
}
