//! Offline best-of-N (reference §1.5): sample N full traces, score each with a process reward
//! model, an outcome reward, an LLM judge or an uncertainty estimator, aggregate the step scores, pick the best
//! trace (or the answer cluster with the largest total score).

use std::sync::Arc;

use ponder_answer::{extract_answer, vote, TieBreak, VoteOptions};
use ponder_core::{
    parse_params, Backend, BoxFuture, BuildError, Candidate, Capabilities, Capability,
    GenerationRequest, Message, ParamSpec, Params, Prompt, RewardRequest, Role, SamplingParams,
    SeededRng, Strategy, StrategyError, StrategyFactory, StrategyInfo, StrategyInput,
    StrategyOutcome, MAX_TOP_LOGPROBS,
};
use serde::Deserialize;

use crate::common::{extract_options, invalid, with_system_prompt};
use crate::judge::Judge;
use crate::scoring::{
    aggregate, self_certainty, split_steps, token_spans, uncertainty, validity, Aggregation,
    Uncertainty,
};
use crate::self_consistency::{DEFAULT_SYSTEM_PROMPT, MAX_N};
use crate::step::scorer::{map_rewards, truncate_prm_request};

/// What scores a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scorer {
    /// Per-step rewards from a process reward model (`Backend::rewards`).
    Prm,
    /// The reward model's score of the whole solution as one step (an outcome reward).
    Orm,
    Entropy,
    #[serde(alias = "mean_nll")]
    Perplexity,
    SequenceProb,
    PdGap,
    /// Self-certainty from the top-k (approximated, §2.4.1); higher is better, no transform.
    SelfCertainty,
    /// The backend's model rates each whole trace 1–10 (`FINAL SCORE:`), scaled to [0, 1].
    LlmJudge,
}

impl Scorer {
    fn as_str(self) -> &'static str {
        match self {
            Scorer::Prm => "prm",
            Scorer::Orm => "orm",
            Scorer::Entropy => "entropy",
            Scorer::Perplexity => "perplexity",
            Scorer::SequenceProb => "sequence_prob",
            Scorer::PdGap => "pd_gap",
            Scorer::SelfCertainty => "self_certainty",
            Scorer::LlmJudge => "llm_judge",
        }
    }

    fn needs(self) -> Option<Capability> {
        match self {
            Scorer::Prm | Scorer::Orm => Some(Capability::ProcessRewards),
            Scorer::LlmJudge => None,
            _ => Some(Capability::Logprobs),
        }
    }

    fn uncertainty(self) -> Option<Uncertainty> {
        match self {
            Scorer::Entropy => Some(Uncertainty::Entropy),
            Scorer::Perplexity => Some(Uncertainty::Perplexity),
            Scorer::SequenceProb => Some(Uncertainty::SequenceProb),
            Scorer::PdGap => Some(Uncertainty::PdGap),
            _ => None,
        }
    }
}

/// How the winner is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The best-scored trace (ties: lowest index; unscored traces last).
    #[default]
    Argmax,
    /// The answer cluster with the largest sum of trace scores.
    WeightedVote,
}

/// What a user writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestOfNConfig {
    #[serde(default = "default_n")]
    pub n: u32,
    #[serde(default = "default_scorer")]
    pub scorer: Scorer,
    #[serde(default)]
    pub score_aggregation: Aggregation,
    #[serde(default)]
    pub scoring_window: Option<usize>,
    #[serde(default)]
    pub selection: Selection,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Top-k of the logprob scorers. Default: 20.
    #[serde(default = "default_top_logprobs")]
    pub top_logprobs: u8,
    /// Vocabulary size for `self_certainty`. Default: 151936 (Qwen2.5/Qwen3).
    #[serde(default = "default_vocab")]
    pub vocab_size: u64,
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    #[serde(default = "default_true")]
    pub last_number_fallback: bool,
    /// PRM input budget in tokens (§2.5.4): longer traces lose their leading steps, which stay
    /// unscored and out of the aggregation. Default: 4000.
    #[serde(default = "default_prm_max_tokens")]
    pub prm_max_tokens: u64,
}

fn default_prm_max_tokens() -> u64 {
    crate::step::scorer::DEFAULT_PRM_MAX_TOKENS
}

fn default_n() -> u32 {
    8
}
fn default_scorer() -> Scorer {
    Scorer::Prm
}
fn default_temperature() -> f64 {
    0.7
}
fn default_max_tokens() -> u32 {
    4096
}
fn default_top_logprobs() -> u8 {
    MAX_TOP_LOGPROBS
}
fn default_vocab() -> u64 {
    151_936
}
fn default_system_prompt() -> String {
    DEFAULT_SYSTEM_PROMPT.into()
}
fn default_true() -> bool {
    true
}

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "n",
        default: "8",
        description: "number of sampled traces",
    },
    ParamSpec {
        name: "scorer",
        default: "prm",
        description:
            "prm | orm | llm_judge | entropy | perplexity | sequence_prob | pd_gap | self_certainty",
    },
    ParamSpec {
        name: "score_aggregation",
        default: "mean",
        description: "step scores → trace score: last | sum | mean | product | max | min",
    },
    ParamSpec {
        name: "scoring_window",
        default: "unset",
        description: "aggregate only the last W step scores",
    },
    ParamSpec {
        name: "selection",
        default: "argmax",
        description: "argmax | weighted_vote (sum of scores per answer cluster)",
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
        name: "top_logprobs",
        default: "20",
        description: "top-k of the logprob scorers (1–20)",
    },
    ParamSpec {
        name: "vocab_size",
        default: "151936",
        description: "vocabulary size for self_certainty",
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
        name: "prm_max_tokens",
        default: "4000",
        description: "prm: input budget in tokens (≥ 1); leading steps that do not fit are not \
                      sent and stay out of the aggregation (tokens estimated as UTF-8 bytes / 3, \
                      rounded up)",
    },
];

/// Builds [`BestOfN`].
#[derive(Debug, Default)]
pub struct BestOfNFactory;

impl StrategyFactory for BestOfNFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: "best-of-n",
            summary:
                "sample n traces, score them (PRM, outcome reward or uncertainty), keep the best",
            params: PARAMS.to_vec(),
            // The scorer decides: process_rewards for prm/orm, logprobs for the others.
            requires: vec![],
        }
    }

    fn build(
        &self,
        params: &Params,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        let config: BestOfNConfig = parse_params("best-of-n", params, PARAMS)?;
        let needed = config.scorer.needs();
        if let Some(capability) = needed.filter(|c| !capabilities.has(*c)) {
            return Err(BuildError::MissingCapability {
                strategy: "best-of-n".into(),
                backend: backend_name.into(),
                capability,
            });
        }
        let invalid = |param: &str, reason: String| invalid("best-of-n", param, reason);
        if config.n == 0 || config.n > MAX_N {
            return Err(invalid(
                "n",
                format!("must be in 1..={MAX_N}, got {}", config.n),
            ));
        }
        if config.scoring_window == Some(0) {
            return Err(invalid("scoring_window", "must be at least 1".into()));
        }
        if config.prm_max_tokens == 0 {
            return Err(invalid("prm_max_tokens", "must be at least 1".into()));
        }
        let logprobs = needed == Some(Capability::Logprobs);
        if logprobs {
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
        if config.scorer == Scorer::SelfCertainty
            && config.vocab_size <= u64::from(config.top_logprobs)
        {
            return Err(invalid("vocab_size", "must exceed top_logprobs".into()));
        }
        let sampling = SamplingParams {
            temperature: Some(config.temperature),
            top_p: config.top_p,
            max_tokens: Some(config.max_tokens),
            stop: config.stop.clone(),
            n: config.n,
            top_logprobs: logprobs.then_some(config.top_logprobs),
            ..SamplingParams::default()
        };
        sampling
            .validate()
            .map_err(|e| invalid(e.field, e.reason))?;
        Ok(Arc::new(BestOfN { config, sampling }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct BestOfN {
    config: BestOfNConfig,
    sampling: SamplingParams,
}

/// The question a reward model is shown: the last user message.
fn question(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

impl Strategy for BestOfN {
    fn name(&self) -> &str {
        "best-of-n"
    }

    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
        Box::pin(async move {
            let messages = with_system_prompt(&input.messages, &self.config.system_prompt);
            let mut sampling = self.sampling.clone();
            sampling.seed = Some(input.seed);
            let response = backend
                .generate(GenerationRequest::new(
                    Prompt::Chat {
                        messages,
                        continue_final_message: false,
                    },
                    sampling,
                ))
                .await?;
            let traces = &response.completions;
            let steps: Vec<Vec<(std::ops::Range<usize>, &str)>> =
                traces.iter().map(|c| split_steps(&c.text)).collect();

            // Step scores per trace.
            let mut prm_truncated = 0usize;
            let step_scores: Vec<Vec<Option<f64>>> = match self.config.scorer {
                Scorer::Prm | Scorer::Orm => {
                    let q = question(&input.messages);
                    let requests: Vec<RewardRequest> = traces
                        .iter()
                        .zip(&steps)
                        .map(|(c, s)| RewardRequest {
                            question: q.clone(),
                            steps: if self.config.scorer == Scorer::Orm {
                                vec![c.text.trim().to_string()]
                            } else {
                                s.iter().map(|(_, text)| text.to_string()).collect()
                            },
                        })
                        .collect();
                    // Traces without steps are not sent; they stay unscored. Each input is
                    // tail-truncated to the PRM context (§2.5.4): the steps not sent are `None`.
                    let mut sent = Vec::new();
                    let mut idx = Vec::new();
                    for (i, mut r) in requests.into_iter().enumerate() {
                        if r.steps.iter().all(|s| s.is_empty()) {
                            continue;
                        }
                        let total = r.steps.len();
                        let dropped = truncate_prm_request(&mut r, self.config.prm_max_tokens);
                        if dropped > 0 {
                            prm_truncated += 1;
                        }
                        sent.push(r);
                        idx.push((i, total, dropped));
                    }
                    let mut scores = vec![Vec::new(); traces.len()];
                    if !sent.is_empty() {
                        let replies = backend.rewards(sent).await?;
                        for ((i, total, dropped), reply) in idx.into_iter().zip(replies) {
                            // A reply without one row per step sent is rejected (§2.5.2).
                            scores[i] = map_rewards(total, dropped, &reply.step_rewards)
                                .unwrap_or_default();
                        }
                    }
                    scores
                }
                Scorer::LlmJudge => {
                    let q = question(&input.messages);
                    let judge = Judge::default();
                    let ratings =
                        futures_util::future::join_all(traces.iter().enumerate().map(|(i, c)| {
                            let seed = SeededRng::derive(input.seed, "best-of-n/judge")
                                .next_u64()
                                .wrapping_add(i as u64 * 1_000);
                            judge.rate(backend, &q, &c.text, seed)
                        }))
                        .await;
                    let mut scores = Vec::with_capacity(ratings.len());
                    for r in ratings {
                        scores.push(vec![r?.score]);
                    }
                    scores
                }
                scorer => traces
                    .iter()
                    .zip(&steps)
                    .map(|(c, s)| {
                        let Some(tokens) = c.tokens.as_deref() else {
                            return Vec::new();
                        };
                        let ranges: Vec<_> = s.iter().map(|(r, _)| r.clone()).collect();
                        token_spans(tokens, &ranges)
                            .into_iter()
                            .map(|span| match scorer.uncertainty() {
                                Some(kind) => uncertainty(kind, span).map(validity),
                                None => self_certainty(span, self.config.vocab_size as f64),
                            })
                            .collect()
                    })
                    .collect(),
            };
            let scores: Vec<Option<f64>> = step_scores
                .iter()
                .map(|s| aggregate(s, self.config.score_aggregation, self.config.scoring_window))
                .collect();
            let options = extract_options(self.config.last_number_fallback);
            let answers: Vec<Option<String>> = traces
                .iter()
                .map(|c| extract_answer(&c.text, &options).map(|e| e.answer))
                .collect();

            let argmax = |among: &[usize]| -> Option<usize> {
                among
                    .iter()
                    .copied()
                    .filter(|&i| scores[i].is_some())
                    .max_by(|&a, &b| {
                        let (sa, sb) = (scores[a].unwrap_or(0.0), scores[b].unwrap_or(0.0));
                        sa.total_cmp(&sb).then(b.cmp(&a))
                    })
            };
            let all: Vec<usize> = (0..traces.len()).collect();
            let (selected, distribution) = match self.config.selection {
                Selection::Argmax => (argmax(&all).or((!all.is_empty()).then_some(0)), None),
                Selection::WeightedVote => {
                    // Unscored traces weigh nothing; a negative score (self-certainty can be)
                    // is floored at 0 so that it never counts against its cluster.
                    let weights: Vec<f64> =
                        scores.iter().map(|s| s.unwrap_or(0.0).max(0.0)).collect();
                    let mut rng = SeededRng::derive(input.seed, "best-of-n/tie-break");
                    let v = vote(
                        &answers,
                        Some(&weights),
                        VoteOptions {
                            weighted: true,
                            tie_break: TieBreak::ScoreThenFirst,
                        },
                        &mut rng,
                    );
                    let dist: Vec<serde_json::Value> = v
                        .clusters
                        .iter()
                        .map(|c| serde_json::json!({"answer": c.representative, "weight": c.weight, "votes": c.votes}))
                        .collect();
                    let pick = v
                        .winning()
                        .and_then(|c| argmax(&c.members).or(c.members.first().copied()));
                    (pick, Some(dist))
                }
            };
            let answer = selected.and_then(|i| answers[i].clone());
            let candidates: Vec<Candidate> = traces
                .iter()
                .enumerate()
                .map(|(i, c)| Candidate {
                    text: c.text.clone(),
                    answer: answers[i].clone(),
                    votes: None,
                    score: scores[i],
                    finish_reason: c.finish_reason,
                    completion_tokens: c.completion_tokens,
                })
                .collect();
            let mut details = serde_json::json!({
                "scorer": self.config.scorer.as_str(),
                "score_aggregation": format!("{:?}", self.config.score_aggregation).to_lowercase(),
                "step_scores": step_scores,
                "unscored": scores.iter().filter(|s| s.is_none()).count(),
            });
            if let Some(d) = distribution {
                details["distribution"] = serde_json::Value::Array(d);
            }
            if prm_truncated > 0 {
                details["prm_truncated"] = prm_truncated.into();
            }
            Ok(StrategyOutcome {
                answer,
                selected,
                candidates,
                details,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ponder_core::{
        run_strategy, BackendError, CompletionStream, FinishReason, RewardResponse, StreamEvent,
    };

    use super::*;

    /// Serves fixed traces; rewards each step 0.9 unless it contains "wrong" (0.1).
    struct Fixed {
        texts: Vec<&'static str>,
        rewards: Mutex<Vec<RewardRequest>>,
    }

    impl Backend for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: None,
                multiple_samples: true,
                prefix_continuation: false,
                process_rewards: true,
                streaming: true,
                max_stop_strings: None,
            }
        }
        fn stream(
            &self,
            request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
            let n = request.params.n;
            let mut events = Vec::new();
            for i in 0..n {
                events.push(Ok(StreamEvent::Delta {
                    index: i,
                    text: self.texts[i as usize % self.texts.len()].into(),
                    token_count: 5,
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
        fn rewards(
            &self,
            requests: Vec<RewardRequest>,
        ) -> BoxFuture<'_, Result<Vec<RewardResponse>, BackendError>> {
            let replies = requests
                .iter()
                .map(|r| RewardResponse {
                    step_rewards: r
                        .steps
                        .iter()
                        .map(|s| if s.contains("wrong") { 0.1 } else { 0.9 })
                        .collect(),
                    prompt_tokens: 10,
                })
                .collect();
            self.rewards.lock().expect("lock").extend(requests);
            Box::pin(async move { Ok(replies) })
        }
    }

    fn params(pairs: &[(&str, serde_json::Value)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    async fn run(
        backend: Arc<Fixed>,
        p: &[(&str, serde_json::Value)],
    ) -> ponder_core::StrategyResult {
        let caps = backend.capabilities();
        let s = BestOfNFactory
            .build(&params(p), "fixed", &caps)
            .expect("builds");
        let input = StrategyInput {
            messages: vec![Message::user("Q?")],
            seed: 1,
        };
        run_strategy(s.as_ref(), backend, &input)
            .await
            .expect("runs")
    }

    #[tokio::test]
    async fn prm_inputs_are_tail_truncated_to_prm_max_tokens() {
        // Frame: "Q?" (1 token) + 64 = 65. Steps cost bytes/3 rounded up, + 1 for the tag:
        // "wrong a" 4, "a" 2, "b" 2, "so \boxed{N}" (12 bytes) 5. prm_max_tokens 82 leaves
        // 82 − 65 − 10 = 7: the last two steps of each trace (7) are sent, the first is not.
        let texts = vec!["wrong a\nb\nso \\boxed{1}", "a\nb\nso \\boxed{2}"];
        let full = run(
            Arc::new(Fixed {
                texts: texts.clone(),
                rewards: Mutex::default(),
            }),
            &[("n", 2.into()), ("score_aggregation", "min".into())],
        )
        .await;
        // Whole traces: trace 0's first step (0.1) sinks it.
        assert_eq!(full.outcome.selected, Some(1));
        assert!(full.outcome.details.get("prm_truncated").is_none());

        let b = Arc::new(Fixed {
            texts,
            rewards: Mutex::default(),
        });
        let cut = run(
            b.clone(),
            &[
                ("n", 2.into()),
                ("score_aggregation", "min".into()),
                ("prm_max_tokens", 82.into()),
            ],
        )
        .await;
        let sent = b.rewards.lock().expect("lock").clone();
        assert_eq!(sent[0].steps, vec!["b", "so \\boxed{1}"]);
        assert_eq!(sent[1].steps, vec!["b", "so \\boxed{2}"]);
        // The dropped steps are unscored and left out of the minimum: a tie, the first wins.
        assert_eq!(
            cut.outcome.details["step_scores"][0],
            serde_json::json!([null, 0.9, 0.9])
        );
        assert_eq!(cut.outcome.details["prm_truncated"], 2);
        assert_eq!(cut.outcome.selected, Some(0));

        let caps = b.capabilities();
        let err = BestOfNFactory
            .build(&params(&[("prm_max_tokens", 0.into())]), "fixed", &caps)
            .err()
            .expect("rejected")
            .to_string();
        assert!(err.contains("prm_max_tokens"), "{err}");
    }

    #[tokio::test]
    async fn prm_min_and_last_pick_different_traces() {
        // Trace 0: steps 0.9, 0.1, 0.9 (mean 0.633, min 0.1, last 0.9).
        // Trace 1: steps 0.9, 0.9 (mean 0.9, min 0.9, last 0.9).
        // Trace 2: one wrong step: 0.1.
        let texts = vec![
            "a\nwrong b\nso \\boxed{1}",
            "a\nso \\boxed{2}",
            "wrong \\boxed{3}",
        ];
        let b = Arc::new(Fixed {
            texts: texts.clone(),
            rewards: Mutex::default(),
        });
        let r = run(
            b.clone(),
            &[("n", 3.into()), ("score_aggregation", "min".into())],
        )
        .await;
        assert_eq!(r.outcome.selected, Some(1));
        assert_eq!(r.outcome.answer.as_deref(), Some("2"));
        let scores: Vec<Option<f64>> = r.outcome.candidates.iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![Some(0.1), Some(0.9), Some(0.1)]);
        // PRM input: the question and each trace's lines as steps.
        let sent = b.rewards.lock().expect("lock").clone();
        assert_eq!(sent[0].question, "Q?");
        assert_eq!(sent[0].steps, vec!["a", "wrong b", "so \\boxed{1}"]);
        // `last` ties traces 0 and 1 at 0.9: the lowest index wins.
        let r = run(b, &[("n", 3.into()), ("score_aggregation", "last".into())]).await;
        assert_eq!(r.outcome.selected, Some(0));
    }

    #[tokio::test]
    async fn weighted_vote_sums_scores_per_answer() {
        // Two traces answer 5 with min scores 0.1 and 0.1 (sum 0.2); one answers 7 with 0.9.
        let b = Arc::new(Fixed {
            texts: vec!["wrong \\boxed{5}", "wrong \\boxed{5.0}", "right \\boxed{7}"],
            rewards: Mutex::default(),
        });
        let r = run(
            b,
            &[
                ("n", 3.into()),
                ("score_aggregation", "min".into()),
                ("selection", "weighted_vote".into()),
            ],
        )
        .await;
        assert_eq!(r.outcome.answer.as_deref(), Some("7"));
        assert_eq!(r.outcome.details["distribution"][0]["votes"], 2);
    }

    #[test]
    fn a_scorer_needs_its_capability_at_build_time() {
        let none = Capabilities {
            max_top_logprobs: None,
            multiple_samples: true,
            prefix_continuation: false,
            process_rewards: false,
            streaming: true,
            max_stop_strings: None,
        };
        let err = BestOfNFactory
            .build(&params(&[]), "plain", &none)
            .err()
            .expect("no PRM");
        assert!(err.to_string().contains("process_rewards"), "{err}");
        let err = BestOfNFactory
            .build(&params(&[("scorer", "entropy".into())]), "plain", &none)
            .err()
            .expect("no logprobs");
        assert!(err.to_string().contains("logprobs"), "{err}");
        let err = BestOfNFactory
            .build(
                &params(&[("score_aggregation", "median".into())]),
                "plain",
                &none,
            )
            .err()
            .expect("unknown aggregation");
        assert!(err.to_string().contains("score_aggregation"), "{err}");
    }
}
