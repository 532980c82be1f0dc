//! Online DeepConf (reference §1.4.3) on a stock OpenAI-compatible server: warm-up traces set a
//! confidence threshold; further traces are streamed with logprobs and each is stopped
//! client-side as soon as the mean confidence of its last `n` tokens falls below the threshold;
//! sampling ends when the confidence-weighted vote reaches the consensus `τ` or the budget is
//! spent.
//!
//! # Threshold direction
//!
//! `η` (`keep_percent`) is the percentage of warm-up traces that would survive. The threshold is
//! `s = pct({C_least of the warm-up traces}, 100 − η)`: DeepConf-low (η = 10) uses the 90th
//! percentile and stops aggressively; DeepConf-high (η = 90, the default) uses the 10th.

use std::sync::Arc;

use ponder_core::{
    parse_params, Backend, BoxFuture, BuildError, Candidate, Capabilities, Capability,
    FinishReason, GenerationRequest, ParamSpec, Params, Prompt, SamplingParams, Strategy,
    StrategyError, StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome, TokenLogprob,
};
use serde::{Deserialize, Serialize};

use super::confidence::{
    percentile, token_confidence, ConfidenceMetric, RollingWindow, TraceFilter,
};
use super::offline::{
    check_top_logprobs, decide, default_max_tokens, default_system_prompt, default_temperature,
    default_top_logprobs, default_top_p, default_true, default_window, score_trace, ScoredTrace,
    Selection, Weighting,
};
use super::WeightedVote;
use crate::common::{extract_options, with_system_prompt};
use crate::sampler::{Decision, SampledTrace, Sampler, TokenWatch, TraceEnd};

/// Largest `total_budget` accepted.
pub const MAX_TOTAL_BUDGET: u32 = 1024;

/// The two presets of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// η = 10: the threshold is the 90th percentile of warm-up `C_least`.
    Low,
    /// η = 90: the threshold is the 10th percentile. The default.
    High,
}

impl Variant {
    fn keep_percent(self) -> f64 {
        match self {
            Variant::Low => 10.0,
            Variant::High => 90.0,
        }
    }
}

/// Which warm-up traces vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmupVote {
    /// Only those with `C_least ≥ s`. The default (DeepConf's).
    #[default]
    Filtered,
    /// Every answered warm-up trace.
    All,
}

/// How a trace is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMechanism {
    /// Close the stream when the rule fires. The default and the only one offered.
    #[default]
    ClientAbort,
    /// A vLLM logits processor (not offered: it needs a server plug-in).
    ServerProcessor,
}

/// What a user writes (`--set key=value`, `strategy.params` in a config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepConfOnlineConfig {
    /// `low` (η = 10) or `high` (η = 90). Default: `high`.
    #[serde(default)]
    pub variant: Option<Variant>,
    /// `η`, the percent of warm-up traces that would survive; overrides the variant's.
    /// Default: 90 (from `variant`).
    #[serde(default)]
    pub keep_percent: Option<f64>,
    /// Alias of `keep_percent` with DeepConf `main`'s meaning (p = 90 → 10th percentile).
    #[serde(default)]
    pub confidence_percentile: Option<f64>,
    /// Full traces that set the threshold (`N_init`). Default: 16.
    #[serde(default = "default_warmup")]
    pub warmup_traces: u32,
    /// Most traces, warm-up included (`B`). Default: 64.
    #[serde(default = "default_total_budget")]
    pub total_budget: u32,
    /// Window `n` in tokens. Default: 2048.
    #[serde(default = "default_window")]
    pub window_size: usize,
    /// Stop sampling once `β ≥ τ`; above 1 never stops. Default: 0.95.
    #[serde(default = "default_consensus")]
    pub consensus_threshold: f64,
    /// Adaptive traces in flight at once. Default: 16.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// `filtered` or `all`. Default: `filtered`.
    #[serde(default)]
    pub warmup_vote: WarmupVote,
    /// `k`. Default: 20.
    #[serde(default = "default_top_logprobs")]
    pub top_logprobs: u8,
    /// Default: 0.6.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Default: 0.95.
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    /// Most tokens per trace. Default: 32000.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Extra stop strings. Default: none.
    #[serde(default)]
    pub stop: Vec<String>,
    /// System message used when the input has none; empty for none. Default: the step-by-step
    /// `\boxed{}` instruction of self-consistency.
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    /// `client_abort` (the only one offered). Default: `client_abort`.
    #[serde(default)]
    pub stop_mechanism: StopMechanism,
    /// Count the sampled token as an extra entry when it is outside the top-k. Default: false.
    #[serde(default)]
    pub include_sampled_if_outside_topk: bool,
    /// Fall back to the last number when no answer marker is found. Default: true.
    #[serde(default = "default_true")]
    pub last_number_fallback: bool,
}

fn default_warmup() -> u32 {
    16
}
fn default_total_budget() -> u32 {
    64
}
fn default_consensus() -> f64 {
    0.95
}
fn default_parallelism() -> u32 {
    16
}

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "variant",
        default: "high",
        description:
            "low (keep 10%: threshold = 90th percentile) | high (keep 90%: 10th percentile)",
    },
    ParamSpec {
        name: "keep_percent",
        default: "90",
        description: "η, percent of warm-up traces that would survive (overrides variant)",
    },
    ParamSpec {
        name: "confidence_percentile",
        default: "unset",
        description: "alias of keep_percent (DeepConf main: 90 → 10th percentile)",
    },
    ParamSpec {
        name: "warmup_traces",
        default: "16",
        description: "full traces that set the threshold",
    },
    ParamSpec {
        name: "total_budget",
        default: "64",
        description: "most traces, warm-up included (1–1024)",
    },
    ParamSpec {
        name: "window_size",
        default: "2048",
        description: "tokens in the rolling confidence window",
    },
    ParamSpec {
        name: "consensus_threshold",
        default: "0.95",
        description: "stop sampling when the weighted vote share β reaches it (>1: never)",
    },
    ParamSpec {
        name: "parallelism",
        default: "16",
        description: "adaptive traces in flight at once",
    },
    ParamSpec {
        name: "warmup_vote",
        default: "filtered",
        description: "filtered (warm-up votes only above the threshold) | all",
    },
    ParamSpec {
        name: "top_logprobs",
        default: "20",
        description: "top log-probabilities per token (k)",
    },
    ParamSpec {
        name: "temperature",
        default: "0.6",
        description: "sampling temperature",
    },
    ParamSpec {
        name: "top_p",
        default: "0.95",
        description: "nucleus sampling mass",
    },
    ParamSpec {
        name: "max_tokens",
        default: "32000",
        description: "most tokens per trace",
    },
    ParamSpec {
        name: "stop",
        default: "[]",
        description: "extra stop strings",
    },
    ParamSpec {
        name: "system_prompt",
        default: "step-by-step, answer in \\boxed{}",
        description: "system message when the input has none (empty: none)",
    },
    ParamSpec {
        name: "stop_mechanism",
        default: "client_abort",
        description: "client_abort (close the stream); server_processor is not offered",
    },
    ParamSpec {
        name: "include_sampled_if_outside_topk",
        default: "false",
        description: "add the sampled token's logprob when it is outside the top-k",
    },
    ParamSpec {
        name: "last_number_fallback",
        default: "true",
        description: "use the last number when no answer marker is found",
    },
];

const NAME: &str = "deepconf-online";

fn invalid(param: &str, reason: impl Into<String>) -> BuildError {
    crate::common::invalid(NAME, param, reason)
}

/// Builds [`DeepConfOnline`].
#[derive(Debug, Default)]
pub struct DeepConfOnlineFactory;

impl StrategyFactory for DeepConfOnlineFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: NAME,
            summary: "warm-up traces set a confidence threshold; streamed traces stop when their window confidence drops below it; sampling stops at consensus (DeepConf online)",
            params: PARAMS.to_vec(),
            requires: vec![Capability::Logprobs, Capability::Streaming],
        }
    }

    fn build(
        &self,
        params: &Params,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        self.check_capabilities(backend_name, capabilities)?;
        let config: DeepConfOnlineConfig = parse_params(NAME, params, PARAMS)?;
        let eta = match (config.keep_percent, config.confidence_percentile) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "confidence_percentile",
                    "is an alias of keep_percent; give one of them",
                ))
            }
            (Some(p), None) | (None, Some(p)) => {
                if let Some(v) = config.variant {
                    if v.keep_percent() != p {
                        return Err(invalid(
                            "variant",
                            format!(
                                "`{}` means keep_percent {}, but keep_percent is {p}",
                                if v == Variant::Low { "low" } else { "high" },
                                v.keep_percent()
                            ),
                        ));
                    }
                }
                p
            }
            (None, None) => config.variant.unwrap_or(Variant::High).keep_percent(),
        };
        if !(eta > 0.0 && eta <= 100.0) {
            let param = if config.confidence_percentile.is_some() {
                "confidence_percentile"
            } else {
                "keep_percent"
            };
            return Err(invalid(param, format!("must be in (0, 100], got {eta}")));
        }
        if config.total_budget == 0 || config.total_budget > MAX_TOTAL_BUDGET {
            return Err(invalid(
                "total_budget",
                format!(
                    "must be in 1..={MAX_TOTAL_BUDGET}, got {}",
                    config.total_budget
                ),
            ));
        }
        if config.warmup_traces == 0 || config.warmup_traces > config.total_budget {
            return Err(invalid(
                "warmup_traces",
                format!(
                    "must be in 1..=total_budget ({}), got {}",
                    config.total_budget, config.warmup_traces
                ),
            ));
        }
        if config.window_size == 0 {
            return Err(invalid("window_size", "must be ≥ 1"));
        }
        if config.parallelism == 0 {
            return Err(invalid("parallelism", "must be ≥ 1"));
        }
        if !(config.consensus_threshold.is_finite() && config.consensus_threshold > 0.0) {
            return Err(invalid(
                "consensus_threshold",
                format!("must be a number > 0, got {}", config.consensus_threshold),
            ));
        }
        if config.stop_mechanism == StopMechanism::ServerProcessor {
            return Err(invalid(
                "stop_mechanism",
                "server_processor needs a vLLM logits-processor plug-in, which Ponder does not drive; use client_abort",
            ));
        }
        check_top_logprobs(NAME, config.top_logprobs, capabilities)?;
        let sampling = SamplingParams {
            temperature: Some(config.temperature),
            top_p: Some(config.top_p),
            max_tokens: Some(config.max_tokens),
            stop: config.stop.clone(),
            top_logprobs: Some(config.top_logprobs),
            ..Default::default()
        };
        sampling
            .validate()
            .map_err(|e| invalid(e.field, e.reason))?;
        let mut warnings = Vec::new();
        if config.window_size >= config.max_tokens as usize {
            warnings.push(format!(
                "window_size {} ≥ max_tokens {}: no trace can be stopped for low confidence",
                config.window_size, config.max_tokens
            ));
        }
        let variant = if eta == 10.0 {
            "low"
        } else if eta == 90.0 {
            "high"
        } else {
            "custom"
        };
        Ok(Arc::new(DeepConfOnline {
            config,
            eta,
            variant,
            sampling,
            warnings,
        }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct DeepConfOnline {
    config: DeepConfOnlineConfig,
    /// Resolved `η`.
    eta: f64,
    /// `low`, `high` or `custom`.
    variant: &'static str,
    sampling: SamplingParams,
    warnings: Vec<String>,
}

/// What became of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Finished, answered, above the threshold: it votes.
    Voted,
    /// Finished and answered but `C_least < s` (or a filtered warm-up trace): no vote.
    BelowThreshold,
    /// Finished without an answer (or without logprobs).
    NoAnswer,
    /// Stopped by the window check.
    ConfidenceStop,
    /// Cancelled when the vote reached consensus.
    ConsensusStop,
    /// The stream broke.
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Voted => "voted",
            Status::BelowThreshold => "below_threshold",
            Status::NoAnswer => "no_answer",
            Status::ConfidenceStop => "confidence_stop",
            Status::ConsensusStop => "consensus_stop",
            Status::Error => "error",
        }
    }
}

/// The window check of one adaptive trace: stop once `n` tokens were seen and the mean of the
/// last `n` token confidences is below `s`.
struct WindowCheck {
    window: RollingWindow,
    threshold: f64,
    include_sampled: bool,
}

impl TokenWatch for WindowCheck {
    fn on_delta(&mut self, _text: &str, tokens: &[TokenLogprob], _count: u32) -> Decision {
        for t in tokens {
            if let Some(c) = token_confidence(t, self.include_sampled) {
                if let Some(mean) = self.window.push(c) {
                    if mean < self.threshold {
                        return Decision::Stop;
                    }
                }
            }
        }
        Decision::Continue
    }
}

/// The votes so far: a trace's answer and weight, for every trace that votes.
struct Ballot {
    answers: Vec<Option<String>>,
    weights: Vec<Option<f64>>,
    seed: u64,
}

impl Ballot {
    fn cast(&mut self, i: usize, answer: Option<String>, weight: Option<f64>) {
        if self.answers.len() <= i {
            self.answers.resize(i + 1, None);
            self.weights.resize(i + 1, None);
        }
        self.answers[i] = answer;
        self.weights[i] = weight;
    }

    fn count(&self) -> WeightedVote {
        WeightedVote::count(&self.answers, &self.weights, self.seed)
    }
}

/// One trace as the outcome reports it.
struct TraceRecord {
    text: String,
    answer: Option<String>,
    least: Option<f64>,
    finish_reason: FinishReason,
    completion_tokens: Option<u64>,
    status: Status,
}

impl DeepConfOnline {
    fn score(&self, text: &str, tokens: Option<&[TokenLogprob]>) -> ScoredParts {
        let extract = extract_options(self.config.last_number_fallback);
        let (answer, confidence) = score_trace(
            text,
            tokens,
            self.config.window_size,
            self.config.include_sampled_if_outside_topk,
            &extract,
        );
        ScoredParts { answer, confidence }
    }

    /// Status of a trace that finished on its own, and whether it votes (post-hoc rule).
    fn finished_status(
        &self,
        finish_reason: FinishReason,
        parts: &ScoredParts,
        threshold: Option<f64>,
        warmup: bool,
    ) -> Status {
        if finish_reason == FinishReason::Error || finish_reason == FinishReason::Aborted {
            return Status::Error;
        }
        let (Some(_), Some(c)) = (&parts.answer, parts.confidence) else {
            return Status::NoAnswer;
        };
        let passes = match threshold {
            Some(s) => c.lowest_group >= s,
            None => false,
        };
        if passes || (warmup && self.config.warmup_vote == WarmupVote::All) {
            Status::Voted
        } else {
            Status::BelowThreshold
        }
    }
}

struct ScoredParts {
    answer: Option<String>,
    confidence: Option<super::TraceConfidence>,
}

impl Strategy for DeepConfOnline {
    fn name(&self) -> &str {
        NAME
    }

    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
        Box::pin(async move {
            let c = &self.config;
            let prompt = Prompt::Chat {
                messages: with_system_prompt(&input.messages, &c.system_prompt),
                continue_final_message: false,
            };
            let tau = c.consensus_threshold;
            let n_warm = c.warmup_traces as usize;
            let mut warnings = self.warnings.clone();

            // 1. Warm-up: N_init full traces in one call (seeds seed + 0 … seed + N_init − 1).
            let mut warm_params = self.sampling.clone();
            warm_params.n = c.warmup_traces;
            warm_params.seed = Some(input.seed);
            let response = backend
                .generate(GenerationRequest::new(prompt.clone(), warm_params))
                .await?;
            let warm: Vec<(ScoredParts, &ponder_core::Completion)> = response
                .completions
                .iter()
                .map(|comp| (self.score(&comp.text, comp.tokens.as_deref()), comp))
                .collect();

            // 2. Threshold s = pct(C_least, 100 − η).
            let percentile_q = 100.0 - self.eta;
            let least: Vec<f64> = warm
                .iter()
                .filter_map(|(p, _)| p.confidence.map(|c| c.lowest_group))
                .collect();
            let threshold = percentile(&least, percentile_q);
            if threshold.is_none() {
                warnings.push(
                    "no warm-up trace had logprobs: no threshold, no trace votes".to_string(),
                );
            }

            // 3. Initial vote.
            let mut ballot = Ballot {
                answers: Vec::new(),
                weights: Vec::new(),
                seed: input.seed,
            };
            let mut records: Vec<TraceRecord> = Vec::new();
            for (i, (parts, comp)) in warm.iter().enumerate() {
                let status = self.finished_status(comp.finish_reason, parts, threshold, true);
                let least = parts.confidence.map(|c| c.lowest_group);
                if status == Status::Voted {
                    ballot.cast(i, parts.answer.clone(), least);
                }
                records.push(TraceRecord {
                    text: comp.text.clone(),
                    answer: parts.answer.clone(),
                    least,
                    finish_reason: comp.finish_reason,
                    completion_tokens: comp.completion_tokens,
                    status,
                });
            }
            // The warm-up call may return fewer completions than asked; adaptive traces are
            // numbered after the ones that came back.
            let first_adaptive = records.len().max(n_warm);

            // 4. Consensus check.
            let mut beta = ballot.count().beta();
            let mut consensus = beta >= tau;

            // 5.–7. Adaptive phase.
            let adaptive_budget = (c.total_budget as usize).saturating_sub(n_warm);
            let mut launched = 0usize;
            if let (false, Some(s), true) = (consensus, threshold, adaptive_budget > 0) {
                let sampler = Sampler {
                    prompt: prompt.clone(),
                    params: self.sampling.clone(),
                    base_seed: input.seed,
                };
                let window = c.window_size;
                let include = c.include_sampled_if_outside_topk;
                let mut finished_parts: Vec<(usize, ScoredParts, Status)> = Vec::new();
                let traces: Vec<SampledTrace> = sampler
                    .run(
                        backend,
                        first_adaptive..first_adaptive + adaptive_budget,
                        c.parallelism as usize,
                        |_| {
                            Some(Box::new(WindowCheck {
                                window: RollingWindow::new(window),
                                threshold: s,
                                include_sampled: include,
                            }) as Box<dyn TokenWatch>)
                        },
                        |trace| {
                            if trace.end != TraceEnd::Finished {
                                return Decision::Continue;
                            }
                            let parts = self.score(&trace.text, Some(&trace.tokens));
                            let status =
                                self.finished_status(trace.finish_reason, &parts, Some(s), false);
                            if status == Status::Voted {
                                ballot.cast(
                                    trace.index,
                                    parts.answer.clone(),
                                    parts.confidence.map(|c| c.lowest_group),
                                );
                            }
                            finished_parts.push((trace.index, parts, status));
                            if status != Status::Voted {
                                return Decision::Continue;
                            }
                            beta = ballot.count().beta();
                            if beta >= tau {
                                consensus = true;
                                Decision::Stop
                            } else {
                                Decision::Continue
                            }
                        },
                    )
                    .await?;
                launched = traces.len();
                for trace in traces {
                    let (answer, least, status) = match trace.end {
                        TraceEnd::Finished => {
                            match finished_parts
                                .iter()
                                .position(|(i, _, _)| *i == trace.index)
                            {
                                Some(k) => {
                                    let (_, parts, status) = finished_parts.swap_remove(k);
                                    (
                                        parts.answer,
                                        parts.confidence.map(|c| c.lowest_group),
                                        status,
                                    )
                                }
                                None => (None, None, Status::Error),
                            }
                        }
                        TraceEnd::Watched => {
                            // Stopped traces never vote; their score is C_least of what came.
                            let parts = self.score("", Some(&trace.tokens));
                            (
                                None,
                                parts.confidence.map(|c| c.lowest_group),
                                Status::ConfidenceStop,
                            )
                        }
                        TraceEnd::Cancelled => (None, None, Status::ConsensusStop),
                    };
                    let index = trace.index;
                    while records.len() < index {
                        // Only when the warm-up came back short: keep indices aligned.
                        records.push(TraceRecord {
                            text: String::new(),
                            answer: None,
                            least: None,
                            finish_reason: FinishReason::Error,
                            completion_tokens: Some(0),
                            status: Status::Error,
                        });
                    }
                    records.push(TraceRecord {
                        text: trace.text,
                        answer,
                        least,
                        finish_reason: trace.finish_reason,
                        completion_tokens: Some(trace.completion_tokens),
                        status,
                    });
                }
            }

            // 8. Answer: weighted vote over every voting trace; else the offline fallback.
            let result = ballot.count();
            let mut fallback: Option<&str> = None;
            let (answer, selected, votes, distribution, agreement) = if result.winner.is_some() {
                let votes: Vec<Option<u32>> =
                    (0..records.len()).map(|i| result.votes_of(i)).collect();
                let selected = result.selected(|i| records[i].least.unwrap_or(f64::NEG_INFINITY));
                (
                    result.winning().map(|w| w.representative.clone()),
                    selected,
                    votes,
                    result.distribution(),
                    result.agreement_rate(),
                )
            } else {
                fallback = Some("no_voting_traces");
                let decision = fallback_decide(&records, input.seed);
                (
                    decision.answer,
                    decision.selected,
                    decision.votes,
                    decision.details["vote_distribution"].clone(),
                    decision.details["agreement_rate"].as_f64().unwrap_or(0.0),
                )
            };
            beta = result.beta();
            let count = |s: Status| records.iter().filter(|r| r.status == s).count();
            let voting_least: Vec<f64> = records
                .iter()
                .filter(|r| r.status == Status::Voted)
                .filter_map(|r| r.least)
                .collect();
            let confidence_score = (!voting_least.is_empty())
                .then(|| voting_least.iter().sum::<f64>() / voting_least.len() as f64);
            let candidates: Vec<Candidate> = records
                .iter()
                .enumerate()
                .map(|(i, r)| Candidate {
                    text: r.text.clone(),
                    answer: r.answer.clone(),
                    votes: votes.get(i).copied().flatten(),
                    score: r.least,
                    finish_reason: r.finish_reason,
                    completion_tokens: r.completion_tokens,
                })
                .collect();
            let details = serde_json::json!({
                "variant": self.variant,
                "keep_percent": self.eta,
                "percentile": percentile_q,
                "threshold": threshold,
                "window_size": c.window_size,
                "warmup_traces": n_warm,
                "warmup_vote": match c.warmup_vote { WarmupVote::Filtered => "filtered", WarmupVote::All => "all" },
                "total_budget": c.total_budget,
                "traces_launched": launched,
                "traces_total": records.len(),
                "confidence_stopped": count(Status::ConfidenceStop),
                "consensus_stopped": count(Status::ConsensusStop),
                "below_threshold": count(Status::BelowThreshold),
                "voting_traces": count(Status::Voted),
                "beta": beta,
                "consensus": beta,
                "consensus_threshold": tau,
                "stop_reason": if consensus { "consensus" } else { "budget" },
                "parallelism": c.parallelism,
                "confidence_score": confidence_score,
                "vote_distribution": distribution,
                "agreement_rate": agreement,
                "fallback": fallback,
                "trace_status": records.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
                "warnings": warnings,
            });
            Ok(StrategyOutcome {
                answer,
                selected,
                candidates,
                details,
            })
        })
    }
}

/// The offline vote over every trace that finished with an answer, weighted by its `C_least`
/// and unfiltered, for runs in which no trace voted. Stopped traces have no answer.
fn fallback_decide(records: &[TraceRecord], seed: u64) -> super::offline::OfflineDecision {
    let traces: Vec<ScoredTrace> = records
        .iter()
        .map(|r| ScoredTrace {
            text: String::new(),
            answer: match r.status {
                Status::Voted | Status::BelowThreshold => r.answer.clone(),
                _ => None,
            },
            // `decide` reads the measure from here; only C_least is known.
            confidence: r.least.map(|l| super::TraceConfidence {
                tokens: 0,
                mean: l,
                lowest_group: l,
                bottom_10_group: l,
                tail: l,
            }),
            finish_reason: r.finish_reason,
            completion_tokens: r.completion_tokens,
        })
        .collect();
    let selection = Selection {
        metric: ConfidenceMetric::LowestGroup,
        filter: TraceFilter::None,
        weighting: Weighting::Weighted,
        vote_mode: None,
        warnings: Vec::new(),
    };
    decide(&traces, &selection, seed)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use ponder_core::{
        run_strategy, BackendError, CompletionStream, Message, StreamEvent, TopLogprob,
    };

    /// A token whose confidence is exactly `c` (top-2 entries, both `−c`).
    fn flat(text: &str, c: f64) -> TokenLogprob {
        TokenLogprob {
            token: text.into(),
            logprob: Some(-c),
            top: vec![
                TopLogprob {
                    token: text.into(),
                    logprob: -c,
                },
                TopLogprob {
                    token: "~".into(),
                    logprob: -c,
                },
            ],
        }
    }

    /// One scripted trace: tokens `"w "` with confidences, then one answer token
    /// `\boxed{answer}` (or `" done"` when `answer` is empty) with the last confidence again.
    #[derive(Clone)]
    struct Script {
        /// Confidence of each token before the answer.
        conf: Vec<f64>,
        answer: &'static str,
    }

    /// Trace with seed `s` plays `script(s)`: single-sample streams, one token per delta,
    /// `delay` between tokens. Records every request and counts tokens sent and open streams.
    struct Scripted {
        script: Box<dyn Fn(u64) -> Script + Send + Sync>,
        delay: Duration,
        requests: Mutex<Vec<(u32, Option<u64>)>>,
        sent: Arc<AtomicU64>,
        open: Arc<AtomicU64>,
    }

    struct Open(Arc<AtomicU64>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Scripted {
        fn new(delay_ms: u64, script: impl Fn(u64) -> Script + Send + Sync + 'static) -> Self {
            Scripted {
                script: Box::new(script),
                delay: Duration::from_millis(delay_ms),
                requests: Mutex::new(Vec::new()),
                sent: Arc::new(AtomicU64::new(0)),
                open: Arc::new(AtomicU64::new(0)),
            }
        }
    }

    fn caps(logprobs: Option<u8>) -> Capabilities {
        Capabilities {
            max_top_logprobs: logprobs,
            multiple_samples: true,
            prefix_continuation: false,
            process_rewards: false,
            streaming: true,
            max_stop_strings: None,
        }
    }

    impl Backend for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn capabilities(&self) -> Capabilities {
            caps(Some(20))
        }
        fn stream(
            &self,
            request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
            let n = request.params.n;
            let seed = request.params.seed.unwrap_or(0);
            self.requests
                .lock()
                .expect("lock")
                .push((n, request.params.seed));
            // (choice, text, confidence) per token, choices interleaved; then Finished each.
            let mut events: Vec<StreamEvent> = Vec::new();
            let scripts: Vec<Script> = (0..n).map(|i| (self.script)(seed + u64::from(i))).collect();
            let longest = scripts.iter().map(|s| s.conf.len() + 1).max().unwrap_or(0);
            for k in 0..longest {
                for (i, s) in scripts.iter().enumerate() {
                    let event = if k < s.conf.len() {
                        Some(("w ".to_string(), s.conf[k]))
                    } else if k == s.conf.len() {
                        // The answer token has the confidence of the token before it.
                        let c = s.conf.last().copied().unwrap_or(1.0);
                        let text = match s.answer {
                            "" => " done".to_string(),
                            a => format!("\\boxed{{{a}}}"),
                        };
                        Some((text, c))
                    } else {
                        None
                    };
                    if let Some((text, c)) = event {
                        events.push(StreamEvent::Delta {
                            index: i as u32,
                            text: text.clone(),
                            token_count: 1,
                            tokens: vec![flat(&text, c)],
                        });
                    }
                }
            }
            for i in 0..n {
                events.push(StreamEvent::Finished {
                    index: i,
                    reason: FinishReason::Stop,
                    stop: None,
                });
            }
            self.open.fetch_add(1, Ordering::SeqCst);
            let guard = Open(self.open.clone());
            let sent = self.sent.clone();
            let delay = self.delay;
            let stream = futures_util::stream::unfold(
                (events.into_iter(), guard),
                move |(mut it, guard)| {
                    let sent = sent.clone();
                    async move {
                        let e = it.next()?;
                        if let StreamEvent::Delta { .. } = e {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            sent.fetch_add(1, Ordering::SeqCst);
                        }
                        Some((Ok(e), (it, guard)))
                    }
                },
            );
            Box::pin(async move { Ok(CompletionStream::new(n, stream)) })
        }
    }

    fn params(list: &[(&str, serde_json::Value)]) -> Params {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn build(list: &[(&str, serde_json::Value)]) -> Result<Arc<dyn Strategy>, BuildError> {
        DeepConfOnlineFactory.build(&params(list), "scripted", &caps(Some(20)))
    }

    async fn run(
        backend: Arc<Scripted>,
        list: &[(&str, serde_json::Value)],
    ) -> ponder_core::StrategyResult {
        let strategy = build(list).expect("builds");
        let input = StrategyInput {
            messages: vec![Message::user("q")],
            seed: 100,
        };
        run_strategy(strategy.as_ref(), backend, &input)
            .await
            .expect("runs")
    }

    /// Warm-up (seeds 100..110): trace 100 + j has 20 tokens of confidence j + 1 and answers
    /// `7`, so the warm-up C_least values are 1, 2, …, 10.
    fn warmup_script(seed: u64) -> Option<Script> {
        (seed < 110).then(|| Script {
            conf: vec![(seed - 99) as f64; 20],
            answer: "7",
        })
    }

    #[test]
    fn threshold_direction_of_the_variants() {
        // C_least = 1 … 10. High (η = 90): pct 10, r = 0.1 · 9 = 0.9 → 1 + 0.9 = 1.9.
        // Low (η = 10): pct 90, r = 8.1 → 9 + 0.1 = 9.1.
        let least: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!(
            (percentile(&least, 100.0 - Variant::High.keep_percent()).expect("s") - 1.9).abs()
                < 1e-12
        );
        assert!(
            (percentile(&least, 100.0 - Variant::Low.keep_percent()).expect("s") - 9.1).abs()
                < 1e-12
        );
    }

    #[tokio::test]
    async fn low_and_high_variants_set_the_threshold_from_the_right_percentile() {
        for (variant, s, voting) in [("high", 1.9, 9), ("low", 9.1, 1)] {
            let backend = Arc::new(Scripted::new(0, |seed| {
                warmup_script(seed).unwrap_or(Script {
                    conf: vec![50.0; 4],
                    answer: "7",
                })
            }));
            let r = run(
                backend,
                &[
                    ("variant", serde_json::json!(variant)),
                    ("warmup_traces", serde_json::json!(10)),
                    ("total_budget", serde_json::json!(10)),
                    ("window_size", serde_json::json!(8)),
                    ("max_tokens", serde_json::json!(100)),
                ],
            )
            .await;
            let d = &r.outcome.details;
            assert!(
                (d["threshold"].as_f64().expect("s") - s).abs() < 1e-12,
                "{variant}: {d}"
            );
            assert_eq!(d["variant"], variant);
            assert_eq!(d["percentile"], if variant == "high" { 10.0 } else { 90.0 });
            // Filtered warm-up vote: traces with C_least ≥ s.
            assert_eq!(d["voting_traces"], voting, "{variant}");
            assert_eq!(d["stop_reason"], "consensus");
            assert_eq!(r.outcome.answer.as_deref(), Some("7"));
        }
        // The alias keeps DeepConf main's meaning: p = 10 is η = 10, the 90th percentile.
        let backend = Arc::new(Scripted::new(0, |seed| {
            warmup_script(seed).unwrap_or(Script {
                conf: vec![50.0; 4],
                answer: "7",
            })
        }));
        let r = run(
            backend,
            &[
                ("confidence_percentile", serde_json::json!(10)),
                ("warmup_traces", serde_json::json!(10)),
                ("total_budget", serde_json::json!(10)),
            ],
        )
        .await;
        assert_eq!(r.outcome.details["variant"], "low");
        assert!((r.outcome.details["threshold"].as_f64().expect("s") - 9.1).abs() < 1e-12);
    }

    #[tokio::test]
    async fn a_low_confidence_trace_is_stopped_after_exactly_n_tokens() {
        // Warm-up C_least 1…10 with answers split 5/5 between 7 and 8 so no consensus;
        // high: s = 1.9. The single adaptive trace (seed 110) has 40 tokens of confidence 1:
        // the window of n = 8 is full at token 8 with mean 1 < 1.9 → stopped there.
        let backend = Arc::new(Scripted::new(0, |seed| {
            if seed < 110 {
                Script {
                    conf: vec![(seed - 99) as f64; 20],
                    answer: if seed % 2 == 0 { "7" } else { "8" },
                }
            } else {
                Script {
                    conf: vec![1.0; 40],
                    answer: "9",
                }
            }
        }));
        let r = run(
            backend.clone(),
            &[
                ("warmup_traces", serde_json::json!(10)),
                ("total_budget", serde_json::json!(11)),
                ("window_size", serde_json::json!(8)),
                ("max_tokens", serde_json::json!(100)),
            ],
        )
        .await;
        let o = &r.outcome;
        assert_eq!(o.details["confidence_stopped"], 1);
        assert_eq!(o.details["traces_launched"], 1);
        assert_eq!(o.details["stop_reason"], "budget");
        let stopped = &o.candidates[10];
        assert_eq!(stopped.finish_reason, FinishReason::Aborted);
        assert_eq!(stopped.completion_tokens, Some(8));
        assert_eq!(stopped.answer, None);
        assert_eq!(stopped.votes, None);
        assert_eq!(o.details["trace_status"][10], "confidence_stop");
        // Seeds: warm-up one call with seed 100 (n = 10), then seed 110 alone.
        let req = backend.requests.lock().expect("lock").clone();
        assert_eq!(req, vec![(10, Some(100)), (1, Some(110))]);
        // Metered: one aborted generation, 100 − 8 tokens saved.
        assert_eq!(r.cost.aborted, 1);
        assert_eq!(r.cost.tokens_saved, 92);
        // Warm-up 10 · 21 tokens + 8 received.
        assert_eq!(r.cost.completion_tokens, 218);
        // Votes: 7 from seeds 100, 102, … above s = 1.9 (C 3, 5, 7, 9: V = 24) against 8 from
        // 101, 103, … (C 2, 4, 6, 8, 10: V = 30) → 8; the C 1 trace (seed 100) is filtered.
        assert_eq!(o.answer.as_deref(), Some("8"));
        assert_eq!(o.selected, Some(9));
        assert!((o.details["beta"].as_f64().expect("β") - 30.0 / 54.0).abs() < 1e-12);
    }

    #[tokio::test]
    async fn a_short_trace_below_the_threshold_does_not_vote() {
        // Warm-up as above (s = 1.9). The adaptive trace has 5 tokens and its answer token
        // (6 < n = 8), so the window check never fires and C_least = its mean = c.
        // c = 2 ≥ 1.9 votes; c = 1 < 1.9 finishes but does not vote (post-hoc rule).
        for (c, votes) in [(2.0, true), (1.0, false)] {
            let backend = Arc::new(Scripted::new(0, move |seed| {
                if seed < 110 {
                    Script {
                        conf: vec![(seed - 99) as f64; 20],
                        answer: if seed % 2 == 0 { "7" } else { "8" },
                    }
                } else {
                    Script {
                        conf: vec![c; 5],
                        answer: "9",
                    }
                }
            }));
            let r = run(
                backend,
                &[
                    ("warmup_traces", serde_json::json!(10)),
                    ("total_budget", serde_json::json!(11)),
                    ("window_size", serde_json::json!(8)),
                    ("max_tokens", serde_json::json!(100)),
                ],
            )
            .await;
            let o = &r.outcome;
            assert_eq!(o.candidates[10].finish_reason, FinishReason::Stop);
            assert_eq!(o.candidates[10].answer.as_deref(), Some("9"));
            assert_eq!(o.candidates[10].votes.is_some(), votes, "c = {c}");
            assert_eq!(
                o.details["trace_status"][10],
                if votes { "voted" } else { "below_threshold" }
            );
            assert_eq!(r.cost.aborted, 0);
        }
    }

    #[tokio::test]
    async fn consensus_cancels_the_traces_in_flight() {
        // Warm-up: 4 traces of C_least 5, answers 7, 8, 7, 8: s = 5, all vote, β = 10 / 20.
        // Adaptive traces all answer 7 with confidence 20; trace 104 is short (4 tokens), the
        // others long (401 tokens, 1 ms apart). τ = 0.6: once 104 votes, V(7) = 30, V(8) = 10,
        // β = 0.75 ≥ 0.6 → stop: the three long traces in flight are cancelled.
        let backend = Arc::new(Scripted::new(1, |seed| {
            if seed < 104 {
                Script {
                    conf: vec![5.0; 6],
                    answer: if seed % 2 == 0 { "7" } else { "8" },
                }
            } else if seed == 104 {
                Script {
                    conf: vec![20.0; 3],
                    answer: "7",
                }
            } else {
                Script {
                    conf: vec![20.0; 400],
                    answer: "7",
                }
            }
        }));
        let r = run(
            backend.clone(),
            &[
                ("warmup_traces", serde_json::json!(4)),
                ("total_budget", serde_json::json!(40)),
                ("parallelism", serde_json::json!(4)),
                ("consensus_threshold", serde_json::json!(0.6)),
                ("window_size", serde_json::json!(8)),
                ("max_tokens", serde_json::json!(1000)),
            ],
        )
        .await;
        let o = &r.outcome;
        assert_eq!(o.details["stop_reason"], "consensus");
        assert_eq!(
            o.details["traces_launched"], 4,
            "no trace launched after the stop"
        );
        assert_eq!(o.details["consensus_stopped"], 3);
        assert!((o.details["beta"].as_f64().expect("β") - 0.75).abs() < 1e-12);
        assert_eq!(o.answer.as_deref(), Some("7"));
        for i in 5..8 {
            assert_eq!(o.candidates[i].finish_reason, FinishReason::Aborted);
            assert_eq!(o.details["trace_status"][i], "consensus_stop");
        }
        assert_eq!(r.cost.aborted, 3);
        assert!(r.cost.tokens_saved > 3 * 900, "{}", r.cost.tokens_saved);
        assert_eq!(
            backend.open.load(Ordering::SeqCst),
            0,
            "every stream was dropped"
        );
        // Far fewer tokens were sent than the cancelled traces would have produced.
        assert!(backend.sent.load(Ordering::SeqCst) < 4 * 7 + 4 + 3 * 200);
    }

    #[tokio::test]
    async fn no_voting_trace_falls_back_to_the_offline_vote() {
        // s is a percentile of the warm-up, so some warm-up trace always passes it; nothing
        // votes only when those have no answer. Warm-up C 1…10 without answers; the adaptive
        // traces (confidence 0.5 < s = 1.9) are all stopped at n tokens.
        let backend = Arc::new(Scripted::new(0, |seed| {
            if seed < 110 {
                Script {
                    conf: vec![(seed - 99) as f64; 20],
                    answer: "",
                }
            } else {
                Script {
                    conf: vec![0.5; 30],
                    answer: "3",
                }
            }
        }));
        let r = run(
            backend,
            &[
                ("warmup_traces", serde_json::json!(10)),
                ("total_budget", serde_json::json!(13)),
                ("window_size", serde_json::json!(8)),
                ("max_tokens", serde_json::json!(100)),
                ("last_number_fallback", serde_json::json!(false)),
            ],
        )
        .await;
        let o = &r.outcome;
        assert_eq!(o.details["fallback"], "no_voting_traces");
        assert_eq!(o.details["confidence_stopped"], 3);
        assert_eq!(o.answer, None, "nothing finished with an answer");
        assert_eq!(r.cost.aborted, 3);
    }

    #[tokio::test]
    async fn fallback_votes_over_finished_traces_below_the_threshold() {
        // warmup_vote = filtered, but the warm-up traces above s have no answer: the traces
        // with C 1 (answer 4) is below s = 1.9 and cannot vote. No adaptive budget. The
        // fallback votes over every finished answered trace unfiltered: answer 4.
        let backend = Arc::new(Scripted::new(0, |seed| Script {
            conf: vec![(seed - 99) as f64; 20],
            answer: if seed == 100 { "4" } else { "" },
        }));
        let r = run(
            backend,
            &[
                ("warmup_traces", serde_json::json!(10)),
                ("total_budget", serde_json::json!(10)),
                ("last_number_fallback", serde_json::json!(false)),
            ],
        )
        .await;
        let o = &r.outcome;
        assert_eq!(o.details["fallback"], "no_voting_traces");
        assert_eq!(o.answer.as_deref(), Some("4"));
        assert_eq!(o.selected, Some(0));
    }

    #[test]
    fn build_checks() {
        // No logprobs: fails naming the capability.
        let err = DeepConfOnlineFactory
            .build(&Params::new(), "plain", &caps(None))
            .err()
            .expect("fails");
        assert!(err.to_string().contains("logprobs"), "{err}");
        for (list, param) in [
            (
                vec![("warmup_traces", serde_json::json!(65))],
                "warmup_traces",
            ),
            (vec![("total_budget", serde_json::json!(0))], "total_budget"),
            (
                vec![
                    ("keep_percent", serde_json::json!(90)),
                    ("confidence_percentile", serde_json::json!(90)),
                ],
                "confidence_percentile",
            ),
            (
                vec![
                    ("variant", serde_json::json!("low")),
                    ("keep_percent", serde_json::json!(90)),
                ],
                "variant",
            ),
            (vec![("keep_percent", serde_json::json!(0))], "keep_percent"),
            (
                vec![("stop_mechanism", serde_json::json!("server_processor"))],
                "stop_mechanism",
            ),
            (vec![("parallelism", serde_json::json!(0))], "parallelism"),
        ] {
            let err = build(&list).err();
            assert!(
                matches!(err, Some(BuildError::InvalidParam { param: ref p, .. }) if p == param),
                "{list:?}: {err:?}"
            );
        }
        assert!(build(&[
            ("variant", serde_json::json!("low")),
            ("keep_percent", serde_json::json!(10))
        ])
        .is_ok());
    }

    #[tokio::test]
    async fn window_not_below_max_tokens_is_warned_about() {
        let backend = Arc::new(Scripted::new(0, |seed| {
            warmup_script(seed).unwrap_or(Script {
                conf: vec![50.0; 4],
                answer: "7",
            })
        }));
        let r = run(
            backend,
            &[
                ("warmup_traces", serde_json::json!(10)),
                ("total_budget", serde_json::json!(10)),
                ("window_size", serde_json::json!(512)),
                ("max_tokens", serde_json::json!(512)),
            ],
        )
        .await;
        let w = r.outcome.details["warnings"].as_array().expect("warnings");
        assert!(
            w.iter()
                .any(|m| m.as_str().is_some_and(|m| m.contains("window_size 512"))),
            "{w:?}"
        );
    }
}
