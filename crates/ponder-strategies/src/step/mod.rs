//! Step-level search (reference §1.6–§1.8, §2.1–§2.5): strategies that generate a solution one
//! step at a time, score each candidate step and decide which trajectories to keep.
//!
//! * [`detector`]: where a step ends (stop strings), why a trajectory ends, answer content;
//! * [`generator`]: step and answer candidates over any backend with prefix continuation;
//! * [`scorer`]: PRM (batched per step) and uncertainty step scorers;
//! * [`trace`]: the search tree with every score and decision, for `details["search"]`;
//! * the strategies [`online_best_of_n`], [`beam_search`], [`dvts`],
//!   [`particle_filtering`], [`phi_decoding`], [`adaptive_scaling`] and [`uncertainty_cot`].
//!
//! The parameters every step strategy shares are in [`StepConfig`]; each strategy adds its own
//! and sets its defaults for the shared ones (DVTS samples hotter, with longer steps, than beam
//! search).

pub mod adaptive_scaling;
pub mod beam_search;
pub mod detector;
pub mod dvts;
pub mod generator;
pub mod online_best_of_n;
pub mod particle_filtering;
pub mod phi_decoding;
pub mod scorer;
pub mod trace;
pub mod uncertainty_cot;

use std::sync::Arc;

use ponder_answer::extract_answer;
use ponder_core::{
    parse_params, Backend, BuildError, Capabilities, Capability, Message, ParamSpec, Params, Role,
    SamplingParams, SeededRng, StrategyError, StrategyInput, MAX_TOP_LOGPROBS,
};
use serde::{Deserialize, Serialize};

pub use adaptive_scaling::{AdaptiveScaling, AdaptiveScalingFactory};
pub use beam_search::{BeamSearch, BeamSearchFactory};
pub use detector::{CompletionReason, Detector, DetectorKind, MarkerCategory};
pub use dvts::{Dvts, DvtsFactory};
pub use generator::{CallKind, Continuation, StepCandidate, StepGenerator};
pub use online_best_of_n::{OnlineBestOfN, OnlineBestOfNFactory};
pub use particle_filtering::{ParticleFiltering, ParticleFilteringFactory};
pub use phi_decoding::{PhiDecoding, PhiDecodingFactory};
pub use scorer::{StepScorer, StepScorerKind};
pub use trace::{NodeDecision, SearchTrace};
pub use uncertainty_cot::{UncertaintyCot, UncertaintyCotFactory};

use crate::baseline::{Thinking, THINK_END};
use crate::scoring::Aggregation;
use crate::self_consistency::DEFAULT_SYSTEM_PROMPT;

/// Tokens kept free before the context budget when deciding whether another step fits
/// (the pre-step cutoff of §1.6 and §1.7.1).
const PRE_STEP_CUTOFF: u64 = 200;

/// Which script the model is expected to write; `latin` turns the garbage rule on (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Script {
    #[default]
    Latin,
    Any,
}

/// Parameters every step strategy shares. `None` fields take the strategy's default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// `prm`, `entropy`, `perplexity`, `sequence_prob` or `pd_gap`. Default: `prm`.
    #[serde(default)]
    pub scorer: StepScorerKind,
    /// `thinking_markers` or `structured`. Default: per strategy.
    #[serde(default)]
    pub detector: Option<DetectorKind>,
    /// Marker categories of the thinking-marker detector. Default: sequence, conclusion,
    /// thinking, verification, reasoning.
    #[serde(default)]
    pub markers: Option<Vec<MarkerCategory>>,
    /// Extra markers (raw when they start with a newline or have no letter). Default: none.
    #[serde(default)]
    pub custom_markers: Vec<String>,
    /// Accepted spelling of `custom_markers` (upstream configs use it).
    #[serde(default)]
    pub custom_words: Vec<String>,
    /// Structured detector's step patterns. Default: per strategy (§2.2.1 list).
    #[serde(default)]
    pub step_patterns: Option<Vec<String>>,
    /// Answer patterns. Default: per detector.
    #[serde(default)]
    pub answer_patterns: Option<Vec<String>>,
    /// End-of-response patterns. Default: per detector.
    #[serde(default)]
    pub eos_patterns: Option<Vec<String>>,
    #[serde(default)]
    pub min_step_tokens: Option<u32>,
    #[serde(default)]
    pub max_step_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Top-k of the logprob scorers. Default: 20.
    #[serde(default = "default_top_logprobs")]
    pub top_logprobs: u8,
    /// Context window of the model in tokens. Default: 32768.
    #[serde(default = "default_context_budget")]
    pub context_budget: u64,
    /// Tokens reserved for the prompt. Default: 500.
    #[serde(default = "default_prompt_buffer")]
    pub prompt_buffer: u64,
    /// `prefill` (assistant prefill on the chat endpoint) or `text` (ChatML-rendered raw
    /// prompt on `/completions`). Default: `prefill`.
    #[serde(default)]
    pub continuation: Continuation,
    /// Carry the stop string that ended a step into the next one. Default: true.
    #[serde(default = "default_true")]
    pub keep_marker: bool,
    /// `latin` (garbage rule on) or `any`. Default: `latin`.
    #[serde(default)]
    pub expected_script: Script,
    /// System message when the input has none; empty for none.
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    /// Fall back to the last number when no answer marker is found. Default: true.
    #[serde(default = "default_true")]
    pub last_number_fallback: bool,
    /// Most generation calls of one run in flight. Default: 16.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// `none` (no thinking block), `on` (steps inside the block, then an answer phase) or
    /// `off` (the chat template's switch turns it off). Default: `none`.
    #[serde(default)]
    pub thinking: Thinking,
    /// `llm_critic`: `value` (label per candidate) or `vote` (best of each sibling group).
    /// Default: `value`.
    #[serde(default)]
    pub critic_method: scorer::CriticMethod,
    /// `llm_critic`: samples per candidate (value) or per group (vote). Default: 3.
    #[serde(default = "default_critic_samples")]
    pub critic_samples: u32,
    /// `llm_critic`: sampling temperature. Default: 0.7.
    #[serde(default = "default_critic_temperature")]
    pub critic_temperature: f64,
    /// `llm_critic`: most tokens per reply. Default: 300.
    #[serde(default = "default_critic_max_tokens")]
    pub critic_max_tokens: u32,
    /// `llm_critic`: over the samples, `min`, `mean`, `max` or `sum`. Default: `min`.
    #[serde(default = "default_critic_aggregation")]
    pub critic_aggregation: Aggregation,
    /// `llm_critic`: last trajectory steps shown, 0 for all. Default: 5.
    #[serde(default = "default_critic_context_window")]
    pub critic_context_window: usize,
    /// `llm_critic`: re-asks of a reply without a label. Default: 2.
    #[serde(default = "default_critic_max_reask")]
    pub critic_max_reask: u32,
    /// `prm`: PRM input budget in tokens; a longer input loses its leading steps (the last
    /// step is always sent; token counts are estimated as UTF-8 bytes / 3, rounded up).
    /// Default: 4000.
    #[serde(default = "default_prm_max_tokens")]
    pub prm_max_tokens: u64,
}

fn default_prm_max_tokens() -> u64 {
    scorer::DEFAULT_PRM_MAX_TOKENS
}

fn default_critic_samples() -> u32 {
    3
}
fn default_critic_temperature() -> f64 {
    0.7
}
fn default_critic_max_tokens() -> u32 {
    300
}
fn default_critic_aggregation() -> Aggregation {
    Aggregation::Min
}
fn default_critic_context_window() -> usize {
    5
}
fn default_critic_max_reask() -> u32 {
    2
}

fn default_top_logprobs() -> u8 {
    MAX_TOP_LOGPROBS
}
fn default_context_budget() -> u64 {
    32_768
}
fn default_prompt_buffer() -> u64 {
    500
}
fn default_true() -> bool {
    true
}
fn default_system_prompt() -> String {
    DEFAULT_SYSTEM_PROMPT.into()
}
fn default_parallelism() -> usize {
    16
}

/// A strategy's defaults for the shared parameters (and their `ponder strategies` text).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepDefaults {
    pub temperature: (f64, &'static str),
    pub top_p: (f64, &'static str),
    pub top_k: (Option<u32>, &'static str),
    pub min_step_tokens: (u32, &'static str),
    pub max_step_tokens: (u32, &'static str),
    pub detector: (DetectorKind, &'static str),
    pub step_patterns: (Option<&'static [&'static str]>, &'static str),
    /// With `thinking = on`, sample with the thinking defaults (T 0.6, top-p 0.95, top-k 20).
    pub thinking_sampling: bool,
}

/// Online best-of-N and beam search (§1.6, §1.7, §2.1.2 non-thinking sampling).
pub(crate) const ONLINE_DEFAULTS: StepDefaults = StepDefaults {
    temperature: (0.7, "0.7"),
    top_p: (0.8, "0.8"),
    top_k: (Some(20), "20"),
    min_step_tokens: (50, "50"),
    max_step_tokens: (1024, "1024"),
    detector: (DetectorKind::ThinkingMarkers, "thinking_markers"),
    step_patterns: (None, "§2.2.1 list"),
    thinking_sampling: true,
};

pub(crate) fn common_params(d: &StepDefaults) -> Vec<ParamSpec> {
    vec![
        ParamSpec {
            name: "scorer",
            default: "prm",
            description:
                "step scorer: prm | llm_critic | entropy | perplexity | sequence_prob | pd_gap",
        },
        ParamSpec {
            name: "detector",
            default: d.detector.1,
            description: "step boundaries: thinking_markers | structured",
        },
        ParamSpec {
            name: "markers",
            default: "[sequence, conclusion, thinking, verification, reasoning]",
            description: "thinking_markers categories (also structure, correction)",
        },
        ParamSpec {
            name: "custom_markers",
            default: "[]",
            description: "extra markers; a newline-led or letterless one is a raw stop string",
        },
        ParamSpec {
            name: "custom_words",
            default: "[]",
            description: "alias of custom_markers",
        },
        ParamSpec {
            name: "step_patterns",
            default: d.step_patterns.1,
            description: "structured: stop strings that start a new step",
        },
        ParamSpec {
            name: "answer_patterns",
            default: "per detector",
            description: "a step stopping at one of these is followed by the answer",
        },
        ParamSpec {
            name: "eos_patterns",
            default: "per detector",
            description: "end-of-response markers (the answer phase stops there)",
        },
        ParamSpec {
            name: "min_step_tokens",
            default: d.min_step_tokens.1,
            description: "min_tokens of a step call (stops not checked before)",
        },
        ParamSpec {
            name: "max_step_tokens",
            default: d.max_step_tokens.1,
            description: "max_tokens of a step call",
        },
        ParamSpec {
            name: "temperature",
            default: d.temperature.1,
            description: "sampling temperature",
        },
        ParamSpec {
            name: "top_p",
            default: d.top_p.1,
            description: "nucleus sampling mass",
        },
        ParamSpec {
            name: "top_k",
            default: d.top_k.1,
            description: "top-k sampling cut",
        },
        ParamSpec {
            name: "top_logprobs",
            default: "20",
            description: "top-k of the logprob scorers (1–20)",
        },
        ParamSpec {
            name: "context_budget",
            default: "32768",
            description: "model context in tokens",
        },
        ParamSpec {
            name: "prompt_buffer",
            default: "500",
            description: "tokens reserved for the prompt",
        },
        ParamSpec {
            name: "continuation",
            default: "prefill",
            description: "prefill (chat assistant prefill) | text (ChatML raw prompt)",
        },
        ParamSpec {
            name: "keep_marker",
            default: "true",
            description: "carry the stop string that ended a step into the next step",
        },
        ParamSpec {
            name: "expected_script",
            default: "latin",
            description: "latin (garbage rule on) | any",
        },
        ParamSpec {
            name: "system_prompt",
            default: "step-by-step, answer in \\boxed{}",
            description: "system message when the input has none (empty: none)",
        },
        ParamSpec {
            name: "last_number_fallback",
            default: "true",
            description: "use the last number when no answer marker is found",
        },
        ParamSpec {
            name: "parallelism",
            default: "16",
            description: "most generation calls of one run in flight",
        },
        ParamSpec {
            name: "thinking",
            default: "none",
            description:
                "none | on (steps inside <think>, then the answer) | off (template switch)",
        },
        ParamSpec {
            name: "critic_method",
            default: "value",
            description: "llm_critic: value (sure/likely/impossible) | vote (best of siblings)",
        },
        ParamSpec {
            name: "critic_samples",
            default: "3",
            description: "llm_critic: judgements per candidate or sibling group (1–16)",
        },
        ParamSpec {
            name: "critic_temperature",
            default: "0.7",
            description: "llm_critic: sampling temperature",
        },
        ParamSpec {
            name: "critic_max_tokens",
            default: "300",
            description: "llm_critic: most tokens per judgement",
        },
        ParamSpec {
            name: "critic_aggregation",
            default: "min",
            description: "llm_critic: over the samples, min | mean | max | sum",
        },
        ParamSpec {
            name: "critic_context_window",
            default: "5",
            description: "llm_critic: last trajectory steps shown (0: all)",
        },
        ParamSpec {
            name: "critic_max_reask",
            default: "2",
            description: "llm_critic: re-asks of a reply without a label",
        },
        ParamSpec {
            name: "prm_max_tokens",
            default: "4000",
            description: "prm: input budget in tokens (≥ 1); leading steps that do not fit are \
                          not sent and stay unscored, the last step always is (tokens \
                          estimated as UTF-8 bytes / 3, rounded up)",
        },
    ]
}

/// Splits `params` into the shared and the strategy's own, checks every key is known, and
/// parses both.
pub(crate) fn parse_step_params<T: serde::de::DeserializeOwned>(
    strategy: &str,
    params: &Params,
    common: &[ParamSpec],
    own: &[ParamSpec],
) -> Result<(StepConfig, T), BuildError> {
    let is_common = |k: &str| common.iter().any(|p| p.name == k);
    let is_own = |k: &str| own.iter().any(|p| p.name == k);
    if let Some(unknown) = params.keys().find(|k| !is_common(k) && !is_own(k)) {
        let known: Vec<&str> = common.iter().chain(own).map(|p| p.name).collect();
        return Err(BuildError::UnknownParam {
            strategy: strategy.into(),
            param: unknown.clone(),
            known: known.join(", "),
        });
    }
    let (mine, shared): (Params, Params) = params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| is_own(k));
    Ok((
        parse_params(strategy, &shared, common)?,
        parse_params(strategy, &mine, own)?,
    ))
}

/// The shared parameters, resolved and checked against the backend.
#[derive(Debug, Clone)]
pub(crate) struct StepSetup {
    pub config: StepConfig,
    pub detector: Detector,
    pub sampling: SamplingParams,
    pub min_step_tokens: u32,
    pub max_step_tokens: u32,
}

pub(crate) use crate::common::invalid;

impl StepSetup {
    /// Resolves `config` with `defaults` and checks the backend offers prefix continuation and
    /// what the scorer needs.
    pub fn build(
        strategy: &str,
        config: StepConfig,
        defaults: &StepDefaults,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Self, BuildError> {
        let needed = [Some(Capability::PrefixContinuation), config.scorer.needs()];
        for capability in needed.into_iter().flatten() {
            if !capabilities.has(capability) {
                return Err(BuildError::MissingCapability {
                    strategy: strategy.into(),
                    backend: backend_name.into(),
                    capability,
                });
            }
        }
        let logprobs = config.scorer.needs() == Some(Capability::Logprobs);
        if logprobs {
            let most = capabilities.max_top_logprobs.unwrap_or(0);
            if config.top_logprobs == 0 || config.top_logprobs > most {
                return Err(invalid(
                    strategy,
                    "top_logprobs",
                    format!(
                        "must be in 1..={most} on this backend, got {}",
                        config.top_logprobs
                    ),
                ));
            }
        }
        let min_step_tokens = config.min_step_tokens.unwrap_or(defaults.min_step_tokens.0);
        let max_step_tokens = config.max_step_tokens.unwrap_or(defaults.max_step_tokens.0);
        if max_step_tokens == 0 {
            return Err(invalid(strategy, "max_step_tokens", "must be at least 1"));
        }
        if min_step_tokens > max_step_tokens {
            return Err(invalid(
                strategy,
                "min_step_tokens",
                format!("must not exceed max_step_tokens ({max_step_tokens})"),
            ));
        }
        if config.prompt_buffer + PRE_STEP_CUTOFF >= config.context_budget {
            return Err(invalid(
                strategy,
                "context_budget",
                format!(
                    "must exceed prompt_buffer + {PRE_STEP_CUTOFF} ({})",
                    config.prompt_buffer + PRE_STEP_CUTOFF
                ),
            ));
        }
        if config.parallelism == 0 {
            return Err(invalid(strategy, "parallelism", "must be at least 1"));
        }
        if !(1..=16).contains(&config.critic_samples) {
            return Err(invalid(
                strategy,
                "critic_samples",
                format!("must be in 1..=16, got {}", config.critic_samples),
            ));
        }
        if !matches!(
            config.critic_aggregation,
            Aggregation::Min | Aggregation::Mean | Aggregation::Max | Aggregation::Sum
        ) {
            return Err(invalid(
                strategy,
                "critic_aggregation",
                "must be min, mean, max or sum",
            ));
        }
        if !(config.critic_temperature.is_finite() && config.critic_temperature >= 0.0) {
            return Err(invalid(
                strategy,
                "critic_temperature",
                "must be a finite number ≥ 0",
            ));
        }
        if config.critic_max_tokens == 0 {
            return Err(invalid(strategy, "critic_max_tokens", "must be at least 1"));
        }
        if config.prm_max_tokens == 0 {
            return Err(invalid(strategy, "prm_max_tokens", "must be at least 1"));
        }
        let kind = config.detector.unwrap_or(defaults.detector.0);
        let mut custom = config.custom_markers.clone();
        custom.extend(config.custom_words.iter().cloned());
        let mut detector = match kind {
            DetectorKind::ThinkingMarkers => Detector::thinking_markers(
                config
                    .markers
                    .as_deref()
                    .unwrap_or(detector::DEFAULT_MARKERS),
                &custom,
                config.answer_patterns.clone(),
                config.eos_patterns.clone().unwrap_or_else(|| {
                    detector::DEFAULT_EOS_PATTERNS
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
            ),
            DetectorKind::Structured => Detector::structured(
                config.step_patterns.clone().or_else(|| {
                    defaults
                        .step_patterns
                        .0
                        .map(|p| p.iter().map(|s| s.to_string()).collect())
                }),
                config.answer_patterns.clone(),
                config.eos_patterns.clone(),
            ),
        };
        if detector.stop_strings.iter().any(String::is_empty) {
            return Err(invalid(
                strategy,
                "step_patterns",
                "stop strings must not be empty",
            ));
        }
        detector.latin_only = config.expected_script == Script::Latin;
        let thinking = config.thinking == Thinking::On;
        if thinking {
            detector = detector.with_thinking();
        }
        // Thinking models sample with T 0.6, top-p 0.95, top-k 20 (§2.1.2).
        let (t, p, k) = if thinking && defaults.thinking_sampling {
            (0.6, 0.95, Some(20))
        } else {
            (defaults.temperature.0, defaults.top_p.0, defaults.top_k.0)
        };
        let sampling = SamplingParams {
            temperature: Some(config.temperature.unwrap_or(t)),
            top_p: Some(config.top_p.unwrap_or(p)),
            top_k: config.top_k.or(k),
            top_logprobs: logprobs.then_some(config.top_logprobs),
            ..SamplingParams::default()
        };
        sampling
            .validate()
            .map_err(|e| invalid(strategy, e.field, e.reason))?;
        Ok(StepSetup {
            config,
            detector,
            sampling,
            min_step_tokens,
            max_step_tokens,
        })
    }

    /// The chat of a run: the configured system prompt when the input has none, then the input.
    pub fn messages(&self, input: &StrategyInput) -> Vec<Message> {
        crate::common::with_system_prompt(&input.messages, &self.config.system_prompt)
    }

    pub fn generator(&self, input: &StrategyInput) -> StepGenerator {
        let mut generator = StepGenerator::new(
            self.messages(input),
            self.config.continuation,
            self.sampling.clone(),
            self.detector.clone(),
            self.min_step_tokens,
            self.max_step_tokens,
            self.config.keep_marker,
        );
        generator.context_budget = Some(self.config.context_budget);
        generator.thinking = self.config.thinking;
        generator
    }

    pub fn scorer(&self, input: &StrategyInput) -> StepScorer {
        let question = input
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let c = &self.config;
        StepScorer {
            kind: c.scorer,
            question,
            critic: (c.scorer == StepScorerKind::LlmCritic).then_some(scorer::CriticSettings {
                method: c.critic_method,
                samples: c.critic_samples,
                temperature: c.critic_temperature,
                max_tokens: c.critic_max_tokens,
                aggregation: c.critic_aggregation,
                context_window: c.critic_context_window,
                max_reask: c.critic_max_reask,
            }),
            seed: input.seed,
            parallelism: c.parallelism,
            prm_max_tokens: c.prm_max_tokens,
        }
    }

    /// `min(context_budget − prompt_buffer, max_steps × max_step_tokens)` (§1.6).
    pub fn max_trajectory_tokens(&self, max_steps: u32) -> u64 {
        (self.config.context_budget - self.config.prompt_buffer)
            .min(u64::from(max_steps) * u64::from(self.max_step_tokens))
    }

    /// Whether a trajectory of `tokens` has no room for another step (pre-step cutoff).
    pub fn out_of_context(&self, tokens: u64, max_steps: u32) -> bool {
        tokens
            >= self
                .max_trajectory_tokens(max_steps)
                .saturating_sub(PRE_STEP_CUTOFF)
    }

    pub fn extract(&self, text: &str) -> Option<String> {
        let options = crate::common::extract_options(self.config.last_number_fallback);
        extract_answer(text, &options).map(|e| e.answer)
    }
}

/// The outcome of a search that ends in one trajectory: that trajectory is the only candidate.
pub(crate) fn one_trajectory(
    text: String,
    answer: Option<String>,
    score: Option<f64>,
    tokens: u64,
    details: serde_json::Value,
) -> ponder_core::StrategyOutcome {
    ponder_core::StrategyOutcome {
        answer: answer.clone(),
        selected: Some(0),
        candidates: vec![ponder_core::Candidate {
            text,
            answer,
            votes: None,
            score,
            finish_reason: ponder_core::FinishReason::Stop,
            completion_tokens: Some(tokens),
        }],
        details,
    }
}

/// The seed of a generation call, derived from the run's seed and a label naming the call's
/// place in the search (so concurrent calls get the same seeds whatever order they run in).
pub(crate) fn call_seed(seed: u64, label: &str) -> u64 {
    SeededRng::derive(seed, label).next_u64()
}

/// A partial solution: the chosen steps so far.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trajectory {
    /// Trace node of the last step (0: the empty trajectory).
    pub node: usize,
    /// Raw text: the concatenation of the steps' raw texts.
    pub text: String,
    /// Step texts as the PRM sees them.
    pub steps: Vec<String>,
    /// One score per step.
    pub scores: Vec<Option<f64>>,
    /// Completion tokens of the chosen steps.
    pub tokens: u64,
    /// The marker the last step stopped at; the next step starts with it.
    pub lead: String,
    pub complete: bool,
    pub reason: Option<CompletionReason>,
    /// Text of an answer phase generated after the steps (not a scored step).
    pub answer_step: Option<String>,
}

impl Trajectory {
    pub fn empty() -> Self {
        Trajectory {
            node: 0,
            text: String::new(),
            steps: Vec::new(),
            scores: Vec::new(),
            tokens: 0,
            lead: String::new(),
            complete: false,
            reason: None,
            answer_step: None,
        }
    }

    /// This trajectory extended by `candidate`, recorded as trace node `node`.
    pub fn child(&self, candidate: &StepCandidate, score: Option<f64>, node: usize) -> Self {
        let mut next = self.clone();
        next.node = node;
        next.text.push_str(&candidate.raw_text());
        next.steps.push(candidate.step_text());
        next.scores.push(score);
        next.tokens += candidate.completion_tokens;
        next.lead = candidate.marker.clone().unwrap_or_default();
        next.complete = candidate.end.is_trajectory_complete;
        next.reason = candidate.end.reason;
        next
    }

    /// The full text: steps and the answer phase.
    pub fn full_text(&self) -> String {
        match &self.answer_step {
            Some(a) => format!("{}{}{a}", self.text, self.lead),
            None => self.text.clone(),
        }
    }
}

/// Gives a finished trajectory its answer when it has none (§2.2.6): a trajectory that stopped
/// at an answer marker is continued after the marker; one whose last step ended the sequence
/// (or was repetition or garbage) without answer content loses that step (its node is marked
/// `replaced`) and is continued from the step before; one cut by `max_steps` or the context is
/// continued as it is. In thinking mode the answer comes after `</think>` (added when the steps
/// did not close the block), and a reply that ended inside the block gets none. `n` answer
/// candidates are generated; with `score`, they are scored and the best is kept, else the
/// first. The answer is recorded as a child node marked `selected`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn answer_phase(
    setup: &StepSetup,
    generator: &StepGenerator,
    scorer: &StepScorer,
    backend: &Arc<dyn Backend>,
    trace: &mut SearchTrace,
    trajectory: Trajectory,
    n: u32,
    score: bool,
    seed: u64,
) -> Result<Trajectory, StrategyError> {
    let thinking = setup.detector.thinking;
    // A thinking model that ended its whole reply inside the block gets no answer phase.
    let ended = thinking && trajectory.reason == Some(CompletionReason::EosPattern);
    if ended || setup.detector.has_answer_content(&trajectory.text) {
        trace.decide(trajectory.node, NodeDecision::Selected);
        return Ok(trajectory);
    }
    let mut base = trajectory.clone();
    if thinking {
        // Phase 2 (§0.4): close the block if the steps did not, then answer after it.
        if !base.text.contains(THINK_END) {
            base.lead = format!("\n{THINK_END}\n\n");
        }
        return answer_after(generator, scorer, backend, trace, base, n, score, seed).await;
    }
    // A step that ended the sequence (or was cut as repetition or garbage) without an answer
    // is replaced; a trajectory stopped at an answer marker, by the context or by the step
    // cap keeps its steps.
    let ended_without_answer = matches!(
        trajectory.reason,
        Some(
            CompletionReason::EosPattern
                | CompletionReason::RepetitionDetected
                | CompletionReason::GarbageDetected
        )
    ) && !trajectory.steps.is_empty();
    if ended_without_answer {
        // Drop the last step: rebuild the trajectory up to its parent.
        trace.decide(trajectory.node, NodeDecision::Replaced);
        let last_raw = trace.nodes.get(trajectory.node).map_or(0, |n| n.text.len());
        let parent = trace
            .nodes
            .get(trajectory.node)
            .and_then(|n| n.parent)
            .unwrap_or(0);
        base.node = parent;
        base.text.truncate(base.text.len().saturating_sub(last_raw));
        base.steps.pop();
        base.scores.pop();
        base.lead = trace
            .nodes
            .get(parent)
            .and_then(|n| n.marker.clone())
            .unwrap_or_default();
    }
    answer_after(generator, scorer, backend, trace, base, n, score, seed).await
}

/// Thinking mode, `answer_all_beams` (§1.7 "Finish"): the answer phase of every trajectory in
/// `trajectories` at once. Each one that needs an answer (none yet after `</think>`, and its
/// reply did not end inside the block) gets one call with `n = 1`, unscored, after `</think>`
/// (added when its steps did not close the block); the calls run together, at most
/// `parallelism` in flight, with `seeds[i]` for trajectory `i`. Each answer is a child node of
/// its trajectory, marked `selected` under trajectory `chosen` and `finished` under the others;
/// a trajectory that needed no answer keeps its last node (`selected` for `chosen`). Returns
/// the trajectories with their answers and how many answer calls were made.
pub(crate) async fn answer_all_thinking(
    setup: &StepSetup,
    generator: &StepGenerator,
    backend: &Arc<dyn Backend>,
    trace: &mut SearchTrace,
    trajectories: Vec<Trajectory>,
    chosen: usize,
    seeds: &[u64],
) -> Result<(Vec<Trajectory>, usize), StrategyError> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};

    let mut bases: Vec<(usize, Trajectory)> = Vec::new();
    for (i, t) in trajectories.iter().enumerate() {
        let ended = t.reason == Some(CompletionReason::EosPattern);
        if ended || setup.detector.has_answer_content(&t.text) {
            if i == chosen {
                trace.decide(t.node, NodeDecision::Selected);
            }
            continue;
        }
        let mut base = t.clone();
        if !base.text.contains(THINK_END) {
            base.lead = format!("\n{THINK_END}\n\n");
        }
        bases.push((i, base));
    }
    let calls: Vec<ponder_core::BoxFuture<'_, Result<Vec<StepCandidate>, StrategyError>>> = bases
        .iter()
        .map(|(i, base)| {
            let seed = seeds.get(*i).copied().unwrap_or(0);
            Box::pin(generator.generate(backend, &base.text, &base.lead, 1, seed, CallKind::Answer))
                as ponder_core::BoxFuture<'_, _>
        })
        .collect();
    let n_calls = calls.len();
    let answers: Vec<Vec<StepCandidate>> = stream::iter(calls)
        .buffered(setup.config.parallelism.max(1))
        .try_collect()
        .await?;
    let mut out = trajectories;
    let mut record = trace::IterationRecord {
        step: bases
            .iter()
            .map(|(_, b)| b.steps.len() + 1)
            .max()
            .unwrap_or(1),
        expanded: bases.iter().map(|(_, b)| b.node).collect(),
        ..trace::IterationRecord::default()
    };
    for ((i, base), answer) in bases.into_iter().zip(answers) {
        let Some(c) = answer.into_iter().next() else {
            if i == chosen {
                trace.decide(base.node, NodeDecision::Selected);
            }
            continue;
        };
        let group = trace.nodes.get(base.node).map_or(0, |n| n.group);
        let id = trace.add(base.node, group, &c, None, None, true);
        record.children.push(id);
        if i == chosen {
            trace.decide(id, NodeDecision::Selected);
            record.kept.push(id);
        } else {
            trace.decide(id, NodeDecision::Finished);
            record.finished.push(id);
        }
        let mut t = base;
        t.node = id;
        t.answer_step = Some(c.generated.clone());
        t.tokens += c.completion_tokens;
        t.complete = true;
        t.reason = c.end.reason;
        out[i] = t;
    }
    if n_calls > 0 {
        trace.iteration(record);
    }
    Ok((out, n_calls))
}

/// Generates `n` answer candidates continuing `base` (its text and lead) and keeps the best
/// (or the first when not scoring) as the answer step.
#[allow(clippy::too_many_arguments)]
async fn answer_after(
    generator: &StepGenerator,
    scorer: &StepScorer,
    backend: &Arc<dyn Backend>,
    trace: &mut SearchTrace,
    mut base: Trajectory,
    n: u32,
    score: bool,
    seed: u64,
) -> Result<Trajectory, StrategyError> {
    let answers = generator
        .generate(
            backend,
            &base.text,
            &base.lead,
            n.max(1),
            seed,
            CallKind::Answer,
        )
        .await?;
    let mut scores = vec![None; answers.len()];
    let mut call = None;
    if score && answers.len() > 1 {
        let items: Vec<scorer::ScoreItem<'_>> = answers
            .iter()
            .map(|c| scorer::ScoreItem {
                parent_steps: &base.steps,
                candidate: c,
                lookahead: &[],
            })
            .collect();
        let (s, c) = scorer.score(backend, &items).await?;
        scores = s;
        call = Some(c);
    }
    let best = argmax(&scores).unwrap_or(0);
    let mut children = Vec::new();
    let mut chosen = None;
    for (i, (c, s)) in answers.iter().zip(&scores).enumerate() {
        let group = trace.nodes.get(base.node).map_or(0, |n| n.group);
        let id = trace.add(base.node, group, c, *s, None, true);
        children.push(id);
        if i == best {
            chosen = Some((id, c.clone()));
            trace.decide(id, NodeDecision::Selected);
        } else {
            trace.decide(id, NodeDecision::Pruned);
        }
    }
    trace.iteration(trace::IterationRecord {
        step: base.steps.len() + 1,
        group: None,
        expanded: vec![base.node],
        children: children.clone(),
        kept: chosen.iter().map(|(id, _)| *id).collect(),
        finished: Vec::new(),
        pruned: children
            .iter()
            .copied()
            .filter(|id| chosen.as_ref().is_none_or(|(c, _)| c != id))
            .collect(),
        scoring: call,
        resampled: Vec::new(),
        ess: None,
    });
    if let Some((id, c)) = chosen {
        base.node = id;
        base.answer_step = Some(c.generated.clone());
        base.tokens += c.completion_tokens;
        base.complete = true;
        base.reason = c.end.reason;
    }
    Ok(base)
}

/// Index of the best score; ties go to the lower index; unscored entries lose to scored ones;
/// `None` when nothing is scored.
pub(crate) fn argmax(scores: &[Option<f64>]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, s) in scores.iter().enumerate() {
        if let Some(s) = s.filter(|s| s.is_finite()) {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_scored_then_lower_index() {
        assert_eq!(argmax(&[None, Some(0.2), Some(0.7), Some(0.7)]), Some(2));
        assert_eq!(argmax(&[None, None]), None);
        assert_eq!(argmax(&[Some(f64::NAN), Some(0.1)]), Some(1));
    }
}
