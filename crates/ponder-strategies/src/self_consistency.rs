//! Self-consistency (Wang et al., 2022): sample N full traces, extract each answer, group the
//! answers by equivalence and take the majority (reference §1.2), optionally stopping early
//! once the vote is decided (§1.3: ESC, Adaptive-Consistency's Beta and Dirichlet rules,
//! doubling rounds).

use std::sync::Arc;

use ponder_answer::{extract_answer, vote, ExtractOptions, TieBreak, VoteOptions};
use ponder_core::{
    parse_params, Backend, BoxFuture, BuildError, Candidate, Capabilities, FinishReason,
    GenerationRequest, Message, ParamSpec, Params, Prompt, SamplingParams, SeededRng, Strategy,
    StrategyError, StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome, TokenLogprob,
};

use crate::common::{extract_options, invalid, with_system_prompt};
use crate::early_stop::{Dispatch, EarlyStop, StopRule};
use crate::sampler::{Decision, SampledTrace, Sampler, TraceEnd};
use serde::Deserialize;

/// The instruction sent as the system message when the input has none.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "Work through the problem one step at a time, then give the final answer as \\boxed{ANSWER}.";

/// What a user writes (`--set key=value`, `strategy.params` in a config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfConsistencyConfig {
    /// Number of sampled traces. Default: 8.
    #[serde(default = "default_n")]
    pub n: u32,
    /// Sampling temperature. Default: 0.7.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Nucleus mass. Default: unset (the backend's default).
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k cut. Default: unset.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Most tokens per trace. Default: 4096.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Extra stop strings. Default: none.
    #[serde(default)]
    pub stop: Vec<String>,
    /// System message used when the input has none; empty for none. Default: a one-line
    /// step-by-step instruction asking for `\boxed{}`.
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    /// Whether traces without an answer vote (as a "no answer" cluster). Default: false.
    #[serde(default)]
    pub count_empty_answers: bool,
    /// `score_then_first`, `first` or `random`. Default: `score_then_first`.
    #[serde(default)]
    pub tie_break: TieBreak,
    /// Fall back to the last number when no answer marker is found. Default: true.
    #[serde(default = "default_true")]
    pub last_number_fallback: bool,
    /// `none`, `esc`, `beta`, `dirichlet` or `doubling`; `n` is the budget. Default: `none`.
    #[serde(default)]
    pub early_stop: EarlyStop,
    /// `sequential_windows` or `all_at_once_cancel`. Default: sequential for `esc` and
    /// `doubling`, all-at-once for `beta` and `dirichlet`.
    #[serde(default)]
    pub dispatch: Option<Dispatch>,
    /// ESC window. Default: 5.
    #[serde(default = "default_window_size")]
    pub window_size: u32,
    /// Beta/Dirichlet: stop when P(leader stays leader) ≥ this, in (0.5, 1]. Default: 0.95.
    #[serde(default = "default_confidence_threshold")]
    pub confidence_threshold: f64,
    /// Beta/Dirichlet: answers needed before the first check. Default: 2.
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// Doubling: stop when the top cluster's share ≥ this, in (0.5, 1]. Default: 0.75.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Dirichlet: Monte-Carlo draws per check. Default: 1024.
    #[serde(default = "default_dirichlet_draws")]
    pub dirichlet_draws: u32,
    /// `majority` (one vote per trace) or `weighted` (each trace weighs its mean token
    /// confidence, DeepConf's `C_avg`; needs logprobs). Default: `majority`.
    #[serde(default)]
    pub vote: VoteRule,
    /// Top-k logprobs requested for `vote = weighted`. Default: 20.
    #[serde(default = "default_top_logprobs")]
    pub top_logprobs: u8,
}

/// How traces vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteRule {
    #[default]
    Majority,
    Weighted,
}

fn default_top_logprobs() -> u8 {
    ponder_core::MAX_TOP_LOGPROBS
}

fn default_window_size() -> u32 {
    5
}
fn default_confidence_threshold() -> f64 {
    0.95
}
fn default_min_samples() -> u32 {
    2
}
fn default_threshold() -> f64 {
    0.75
}
fn default_dirichlet_draws() -> u32 {
    1024
}

fn default_n() -> u32 {
    8
}
fn default_temperature() -> f64 {
    0.7
}
fn default_max_tokens() -> u32 {
    4096
}
fn default_system_prompt() -> String {
    DEFAULT_SYSTEM_PROMPT.to_string()
}
fn default_true() -> bool {
    true
}

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "n",
        default: "8",
        description: "number of sampled traces (1–1024)",
    },
    ParamSpec {
        name: "temperature",
        default: "0.7",
        description: "sampling temperature",
    },
    ParamSpec {
        name: "top_p",
        default: "unset",
        description: "nucleus sampling mass",
    },
    ParamSpec {
        name: "top_k",
        default: "unset",
        description: "top-k sampling cut",
    },
    ParamSpec {
        name: "max_tokens",
        default: "4096",
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
        name: "count_empty_answers",
        default: "false",
        description: "traces without an answer vote as their own cluster",
    },
    ParamSpec {
        name: "tie_break",
        default: "score_then_first",
        description: "score_then_first | first | random",
    },
    ParamSpec {
        name: "last_number_fallback",
        default: "true",
        description: "use the last number when no answer marker is found",
    },
    ParamSpec {
        name: "early_stop",
        default: "none",
        description: "none | esc | beta | dirichlet | doubling (n is the budget)",
    },
    ParamSpec {
        name: "dispatch",
        default: "by rule",
        description: "sequential_windows (esc, doubling) | all_at_once_cancel (beta, dirichlet)",
    },
    ParamSpec {
        name: "window_size",
        default: "5",
        description: "esc: samples per window",
    },
    ParamSpec {
        name: "confidence_threshold",
        default: "0.95",
        description: "beta, dirichlet: stop when P(leader stays leader) ≥ this",
    },
    ParamSpec {
        name: "min_samples",
        default: "2",
        description: "beta, dirichlet: answers before the first check",
    },
    ParamSpec {
        name: "threshold",
        default: "0.75",
        description: "doubling: stop when the top cluster's share ≥ this",
    },
    ParamSpec {
        name: "vote",
        default: "majority",
        description: "majority | weighted (weight = mean token confidence; needs logprobs)",
    },
    ParamSpec {
        name: "top_logprobs",
        default: "20",
        description: "top-k logprobs requested for the weighted vote",
    },
    ParamSpec {
        name: "dirichlet_draws",
        default: "1024",
        description: "dirichlet: Monte-Carlo draws per check (seeded)",
    },
];

/// Largest `n` accepted (a guard against typos that would fan out thousands of requests).
pub const MAX_N: u32 = 1024;

/// Builds [`SelfConsistency`].
#[derive(Debug, Default)]
pub struct SelfConsistencyFactory;

impl StrategyFactory for SelfConsistencyFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: "self-consistency",
            summary: "sample n traces and take the majority answer (equivalent answers grouped)",
            params: PARAMS.to_vec(),
            requires: vec![],
        }
    }

    fn build(
        &self,
        params: &Params,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        self.check_capabilities(backend_name, capabilities)?;
        let config: SelfConsistencyConfig = parse_params("self-consistency", params, PARAMS)?;
        let invalid = |param: &str, reason: String| invalid("self-consistency", param, reason);
        if config.n == 0 || config.n > MAX_N {
            return Err(invalid(
                "n",
                format!("must be in 1..={MAX_N}, got {}", config.n),
            ));
        }
        for (name, value) in [
            ("confidence_threshold", config.confidence_threshold),
            ("threshold", config.threshold),
        ] {
            if !(value > 0.5 && value <= 1.0) {
                return Err(invalid(name, format!("must be in (0.5, 1], got {value}")));
            }
        }
        if config.window_size == 0 {
            return Err(invalid("window_size", "must be at least 1".into()));
        }
        if config.min_samples == 0 {
            return Err(invalid("min_samples", "must be at least 1".into()));
        }
        if config.dirichlet_draws == 0 || config.dirichlet_draws > 1_000_000 {
            return Err(invalid(
                "dirichlet_draws",
                format!("must be in 1..=1000000, got {}", config.dirichlet_draws),
            ));
        }
        let rule = StopRule {
            kind: config.early_stop,
            window_size: config.window_size as usize,
            confidence_threshold: config.confidence_threshold,
            min_samples: config.min_samples as usize,
            threshold: config.threshold,
            dirichlet_draws: config.dirichlet_draws,
        };
        let dispatch = config.dispatch.unwrap_or(match config.early_stop {
            EarlyStop::Beta | EarlyStop::Dirichlet => Dispatch::AllAtOnceCancel,
            _ => Dispatch::SequentialWindows,
        });
        let weighted = config.vote == VoteRule::Weighted;
        if weighted {
            if !capabilities.has(ponder_core::Capability::Logprobs) {
                return Err(BuildError::MissingCapability {
                    strategy: "self-consistency".into(),
                    backend: backend_name.into(),
                    capability: ponder_core::Capability::Logprobs,
                });
            }
            let most = capabilities.max_top_logprobs.unwrap_or(0);
            if config.top_logprobs == 0 || config.top_logprobs > most {
                return Err(invalid(
                    "top_logprobs",
                    format!(
                        "must be in 1..={most} on this backend, got {}",
                        config.top_logprobs
                    ),
                ));
            }
        }
        let sampling = SamplingParams {
            temperature: Some(config.temperature),
            top_p: config.top_p,
            top_k: config.top_k,
            max_tokens: Some(config.max_tokens),
            stop: config.stop.clone(),
            n: config.n,
            top_logprobs: weighted.then_some(config.top_logprobs),
            ..Default::default()
        };
        sampling
            .validate()
            .map_err(|e| invalid(e.field, e.reason))?;
        Ok(Arc::new(SelfConsistency {
            config,
            sampling,
            rule,
            dispatch,
        }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct SelfConsistency {
    config: SelfConsistencyConfig,
    sampling: SamplingParams,
    rule: StopRule,
    dispatch: Dispatch,
}

/// One trace as the vote sees it.
struct TraceView {
    text: String,
    tokens: Option<Vec<TokenLogprob>>,
    finish_reason: FinishReason,
    completion_tokens: Option<u64>,
    /// Cancelled in flight: it has no text and does not vote.
    cancelled: bool,
}

impl From<SampledTrace> for TraceView {
    fn from(t: SampledTrace) -> Self {
        TraceView {
            cancelled: t.end == TraceEnd::Cancelled,
            tokens: (!t.tokens.is_empty()).then_some(t.tokens),
            text: t.text,
            finish_reason: t.finish_reason,
            completion_tokens: Some(t.completion_tokens),
        }
    }
}

impl SelfConsistency {
    fn messages(&self, input: &StrategyInput) -> Vec<Message> {
        with_system_prompt(&input.messages, &self.config.system_prompt)
    }
}

/// Mean token confidence `C_avg` of a trace (DeepConf §1.4.1), when it has usable top-k data.
fn mean_confidence(tokens: &[TokenLogprob]) -> Option<f64> {
    let c = crate::deepconf::confidence::token_confidences(tokens, false);
    (!c.is_empty()).then(|| c.iter().sum::<f64>() / c.len() as f64)
}

/// Mean sampled-token logprob, the secondary score of a trace when logprobs are present.
fn mean_logprob(tokens: &[TokenLogprob]) -> Option<f64> {
    let lps: Vec<f64> = tokens.iter().filter_map(|t| t.logprob).collect();
    (!lps.is_empty()).then(|| lps.iter().sum::<f64>() / lps.len() as f64)
}

impl SelfConsistency {
    fn extract_options(&self) -> ExtractOptions {
        extract_options(self.config.last_number_fallback)
    }

    /// The answer a trace votes with: its extracted answer, or the empty answer for a trace
    /// without one when `count_empty_answers` is set.
    fn voting_answer(&self, text: &str, options: &ExtractOptions) -> Option<String> {
        let answer = extract_answer(text, options).map(|e| e.answer);
        if self.config.count_empty_answers {
            Some(answer.unwrap_or_default())
        } else {
            answer
        }
    }

    /// Samples with early stopping; returns the traces and what the rule did.
    async fn run_early(
        &self,
        backend: &Arc<dyn Backend>,
        prompt: Prompt,
        seed: u64,
    ) -> Result<(Vec<TraceView>, serde_json::Value), StrategyError> {
        let sampler = Sampler {
            prompt,
            params: self.sampling.clone(),
            base_seed: seed,
        };
        let budget = self.config.n as usize;
        let options = self.extract_options();
        let mut rng = SeededRng::derive(seed, "self-consistency/early-stop");
        let mut answers: Vec<Option<String>> = Vec::new();
        let mut stopped = false;
        let mut rounds = 0u32;
        let traces = match self.dispatch {
            Dispatch::SequentialWindows => {
                let mut all: Vec<SampledTrace> = Vec::new();
                loop {
                    let batch = self.rule.next_batch(all.len(), budget);
                    if batch == 0 {
                        break;
                    }
                    let start = all.len();
                    let got = sampler
                        .run(
                            backend,
                            start..start + batch,
                            batch,
                            |_| None,
                            |_| Decision::Continue,
                        )
                        .await?;
                    rounds += 1;
                    answers.extend(got.iter().map(|t| self.voting_answer(&t.text, &options)));
                    all.extend(got);
                    if all.len() < budget && self.rule.should_stop(&answers, &mut rng) {
                        stopped = true;
                        break;
                    }
                }
                all
            }
            Dispatch::AllAtOnceCancel => {
                rounds = 1;
                sampler
                    .run(
                        backend,
                        0..budget,
                        budget,
                        |_| None,
                        |t| {
                            answers.push(self.voting_answer(&t.text, &options));
                            if self.rule.checks_at(answers.len(), budget)
                                && self.rule.should_stop(&answers, &mut rng)
                            {
                                stopped = true;
                                Decision::Stop
                            } else {
                                Decision::Continue
                            }
                        },
                    )
                    .await?
            }
        };
        let cancelled = traces
            .iter()
            .filter(|t| t.end == TraceEnd::Cancelled)
            .count();
        let info = serde_json::json!({
            "rule": self.rule.kind.as_str(),
            "dispatch": self.dispatch.as_str(),
            "budget": budget,
            "launched": traces.len(),
            "completed": traces.len() - cancelled,
            "cancelled": cancelled,
            "rounds": rounds,
            "stopped_early": stopped,
        });
        Ok((traces.into_iter().map(TraceView::from).collect(), info))
    }

    /// Votes over `traces` and assembles the outcome.
    fn outcome(
        &self,
        traces: Vec<TraceView>,
        seed: u64,
        early_stop: serde_json::Value,
    ) -> StrategyOutcome {
        let options = self.extract_options();
        let extracted: Vec<Option<String>> = traces
            .iter()
            .map(|t| {
                if t.cancelled {
                    None
                } else {
                    extract_answer(&t.text, &options).map(|e| e.answer)
                }
            })
            .collect();
        let scores: Vec<Option<f64>> = traces
            .iter()
            .map(|t| t.tokens.as_deref().and_then(mean_logprob))
            .collect();
        let voting: Vec<Option<String>> = traces
            .iter()
            .zip(&extracted)
            .map(
                |(t, a)| match (t.cancelled, self.config.count_empty_answers) {
                    (true, _) => None,
                    (false, true) => Some(a.clone().unwrap_or_default()),
                    (false, false) => a.clone(),
                },
            )
            .collect();
        let all_scored = scores.iter().all(Option::is_some);
        let weighted = self.config.vote == VoteRule::Weighted;
        // Weighted vote: each trace weighs its mean token confidence (0 without logprobs).
        // Majority: tie breaks use exp(mean logprob), the geometric-mean token probability.
        let vote_scores: Option<Vec<f64>> = if weighted {
            Some(
                traces
                    .iter()
                    .map(|t| t.tokens.as_deref().and_then(mean_confidence).unwrap_or(0.0))
                    .collect(),
            )
        } else {
            all_scored.then(|| scores.iter().map(|s| s.unwrap_or(0.0).exp()).collect())
        };
        let mut rng = SeededRng::derive(seed, "self-consistency/tie-break");
        let result = vote(
            &voting,
            vote_scores.as_deref(),
            VoteOptions {
                weighted,
                tie_break: self.config.tie_break,
            },
            &mut rng,
        );
        // The selected trace: the best-scored member of the winning cluster, else its first.
        let selected = result.winning().and_then(|cluster| {
            cluster.members.iter().copied().max_by(|&a, &b| {
                let (sa, sb) = (scores[a].unwrap_or(0.0), scores[b].unwrap_or(0.0));
                sa.total_cmp(&sb).then(b.cmp(&a))
            })
        });
        let answer = result
            .winning()
            .map(|c| c.representative.clone())
            .filter(|a| !a.is_empty());
        let distribution: Vec<serde_json::Value> = result
            .clusters
            .iter()
            .map(|c| {
                if weighted {
                    serde_json::json!({"answer": c.representative, "votes": c.votes, "weight": c.weight})
                } else {
                    serde_json::json!({"answer": c.representative, "votes": c.votes})
                }
            })
            .collect();
        let candidates: Vec<Candidate> = traces
            .into_iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                text: t.text,
                answer: extracted[i].clone(),
                votes: result.cluster_of(i).map(|k| result.clusters[k].votes),
                score: scores[i],
                finish_reason: t.finish_reason,
                completion_tokens: t.completion_tokens,
            })
            .collect();
        let mut details = serde_json::json!({
            "consensus": result.consensus(),
            "voters": result.voters,
            "distribution": distribution,
        });
        if !early_stop.is_null() {
            details["early_stop"] = early_stop;
        }
        StrategyOutcome {
            answer,
            selected,
            candidates,
            details,
        }
    }
}

impl Strategy for SelfConsistency {
    fn name(&self) -> &str {
        "self-consistency"
    }

    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
        Box::pin(async move {
            let prompt = Prompt::Chat {
                messages: self.messages(input),
                continue_final_message: false,
            };
            if self.rule.kind != EarlyStop::None {
                let (traces, info) = self.run_early(backend, prompt, input.seed).await?;
                return Ok(self.outcome(traces, input.seed, info));
            }
            let mut sampling = self.sampling.clone();
            sampling.seed = Some(input.seed);
            let response = backend
                .generate(GenerationRequest::new(prompt, sampling))
                .await?;
            let traces = response
                .completions
                .into_iter()
                .map(|c| TraceView {
                    text: c.text,
                    tokens: c.tokens,
                    finish_reason: c.finish_reason,
                    completion_tokens: c.completion_tokens,
                    cancelled: false,
                })
                .collect();
            Ok(self.outcome(traces, input.seed, serde_json::Value::Null))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_core::{run_strategy, Completion, CompletionStream, FinishReason, StreamEvent};

    /// Answers completion `i` with `texts[i]`.
    struct Scripted {
        texts: Vec<&'static str>,
        seen: std::sync::Mutex<Vec<GenerationRequest>>,
    }

    impl Backend for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: None,
                multiple_samples: true,
                prefix_continuation: false,
                process_rewards: false,
                streaming: true,
                max_stop_strings: None,
            }
        }
        fn stream(
            &self,
            request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, ponder_core::BackendError>> {
            let n = request.params.n;
            self.seen.lock().expect("lock").push(request);
            let mut events = Vec::new();
            for i in 0..n {
                let text = self.texts[i as usize % self.texts.len()];
                events.push(Ok(StreamEvent::Delta {
                    index: i,
                    text: text.into(),
                    token_count: 3,
                    tokens: vec![],
                }));
                events.push(Ok(StreamEvent::Finished {
                    index: i,
                    reason: FinishReason::Stop,
                    stop: None,
                }));
            }
            Box::pin(
                async move { Ok(CompletionStream::new(n, futures_util::stream::iter(events))) },
            )
        }
    }

    fn build(
        params: &[(&str, serde_json::Value)],
        caps: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        let params: Params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        SelfConsistencyFactory.build(&params, "scripted", caps)
    }

    #[tokio::test]
    async fn majority_over_equivalent_answers() {
        let backend = Arc::new(Scripted {
            texts: vec![
                "\\boxed{3}",
                "so \\boxed{0.5}",
                "The answer is \\frac{1}{2}",
                "nothing",
            ],
            seen: Default::default(),
        });
        let caps = backend.capabilities();
        let strategy = build(&[("n", serde_json::json!(4))], &caps).expect("builds");
        let input = StrategyInput {
            messages: vec![Message::user("what is one half?")],
            seed: 5,
        };
        let result = run_strategy(strategy.as_ref(), backend.clone(), &input)
            .await
            .expect("runs");
        // Votes: 3 → 1, one-half cluster → 2, "nothing" has no answer and does not vote.
        assert_eq!(result.outcome.answer.as_deref(), Some("0.5"));
        assert_eq!(result.outcome.selected, Some(1));
        let votes: Vec<Option<u32>> = result.outcome.candidates.iter().map(|c| c.votes).collect();
        assert_eq!(votes, vec![Some(1), Some(2), Some(2), None]);
        assert_eq!(
            result.outcome.details["consensus"],
            serde_json::json!(2.0 / 3.0)
        );
        assert_eq!(result.cost.completion_tokens, 12);
        assert_eq!(result.cost.requests, 1);
        assert_eq!(result.cost.seed, 5);
        let seen = backend.seen.lock().expect("lock");
        assert_eq!(seen[0].params.seed, Some(5));
        assert_eq!(seen[0].params.n, 4);
        match &seen[0].prompt {
            Prompt::Chat { messages, .. } => {
                assert_eq!(messages[0].role, ponder_core::Role::System);
                assert_eq!(messages[1].content, "what is one half?");
            }
            other => panic!("unexpected prompt {other:?}"),
        }
    }

    /// Each completion is one token whose top-2 logprobs are both `lp`, so its confidence is
    /// `−lp`.
    struct Confident {
        replies: Vec<(&'static str, f64)>,
    }

    impl Backend for Confident {
        fn name(&self) -> &str {
            "confident"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: Some(20),
                multiple_samples: true,
                prefix_continuation: false,
                process_rewards: false,
                streaming: true,
                max_stop_strings: None,
            }
        }
        fn stream(
            &self,
            request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, ponder_core::BackendError>> {
            assert_eq!(request.params.top_logprobs, Some(20));
            let n = request.params.n;
            let mut events = Vec::new();
            for i in 0..n {
                let (text, lp) = self.replies[i as usize % self.replies.len()];
                let top = vec![
                    ponder_core::TopLogprob {
                        token: text.into(),
                        logprob: lp,
                    };
                    2
                ];
                events.push(Ok(StreamEvent::Delta {
                    index: i,
                    text: text.into(),
                    token_count: 1,
                    tokens: vec![TokenLogprob {
                        token: text.into(),
                        logprob: Some(lp),
                        top,
                    }],
                }));
                events.push(Ok(StreamEvent::Finished {
                    index: i,
                    reason: FinishReason::Stop,
                    stop: None,
                }));
            }
            Box::pin(
                async move { Ok(CompletionStream::new(n, futures_util::stream::iter(events))) },
            )
        }
    }

    #[tokio::test]
    async fn weighted_vote_lets_confident_traces_outvote_a_majority() {
        // Answer 3 twice with confidence 0.5 each (total 1.0); answer 8 once with 2.5.
        let backend = Arc::new(Confident {
            replies: vec![
                ("\\boxed{3}", -0.5),
                ("\\boxed{3}", -0.5),
                ("\\boxed{8}", -2.5),
            ],
        });
        let caps = backend.capabilities();
        let input = StrategyInput {
            messages: vec![Message::user("q")],
            seed: 1,
        };
        let weighted = build(
            &[
                ("n", serde_json::json!(3)),
                ("vote", serde_json::json!("weighted")),
            ],
            &caps,
        )
        .expect("builds");
        let r = run_strategy(weighted.as_ref(), backend.clone(), &input)
            .await
            .expect("runs");
        assert_eq!(r.outcome.answer.as_deref(), Some("8"));
        assert_eq!(
            r.outcome.details["distribution"][1]["weight"],
            serde_json::json!(2.5)
        );
        // Without logprobs the weighted vote is refused at build time.
        let plain = Capabilities {
            max_top_logprobs: None,
            ..caps
        };
        let err = build(&[("vote", serde_json::json!("weighted"))], &plain)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("logprobs"), "{err}");
    }

    #[test]
    fn bad_params_fail_at_build_time() {
        let caps = Capabilities {
            max_top_logprobs: None,
            multiple_samples: false,
            prefix_continuation: false,
            process_rewards: false,
            streaming: false,
            max_stop_strings: None,
        };
        let err = build(&[("n", serde_json::json!(0))], &caps).err();
        assert!(
            matches!(err, Some(BuildError::InvalidParam { ref param, .. }) if param == "n"),
            "{err:?}"
        );
        let err = build(&[("nn", serde_json::json!(2))], &caps).err();
        assert!(
            matches!(err, Some(BuildError::UnknownParam { ref param, .. }) if param == "nn"),
            "{err:?}"
        );
        let err = build(&[("temperature", serde_json::json!(-1))], &caps).err();
        assert!(
            matches!(err, Some(BuildError::InvalidParam { ref param, .. }) if param == "temperature"),
            "{err:?}"
        );
        let _ = Completion::text(0, "", FinishReason::Stop);
    }
}
