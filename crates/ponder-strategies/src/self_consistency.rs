//! Self-consistency (Wang et al., 2022): sample N full traces, extract each answer, group the
//! answers by equivalence and take the majority (reference §1.2).

use std::sync::Arc;

use ponder_answer::{extract_answer, vote, ExtractOptions, TieBreak, VoteOptions};
use ponder_core::{
    parse_params, Backend, BoxFuture, BuildError, Candidate, Capabilities, GenerationRequest,
    Message, ParamSpec, Params, Prompt, Role, SamplingParams, SeededRng, Strategy, StrategyError,
    StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome, TokenLogprob,
};
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
        let invalid = |param: &str, reason: String| BuildError::InvalidParam {
            strategy: "self-consistency".into(),
            param: param.into(),
            reason,
        };
        if config.n == 0 || config.n > MAX_N {
            return Err(invalid(
                "n",
                format!("must be in 1..={MAX_N}, got {}", config.n),
            ));
        }
        let sampling = SamplingParams {
            temperature: Some(config.temperature),
            top_p: config.top_p,
            top_k: config.top_k,
            max_tokens: Some(config.max_tokens),
            stop: config.stop.clone(),
            n: config.n,
            ..Default::default()
        };
        sampling
            .validate()
            .map_err(|e| invalid(e.field, e.reason))?;
        Ok(Arc::new(SelfConsistency { config, sampling }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct SelfConsistency {
    config: SelfConsistencyConfig,
    sampling: SamplingParams,
}

impl SelfConsistency {
    fn messages(&self, input: &StrategyInput) -> Vec<Message> {
        let has_system = input.messages.iter().any(|m| m.role == Role::System);
        let mut messages = Vec::with_capacity(input.messages.len() + 1);
        if !has_system && !self.config.system_prompt.is_empty() {
            messages.push(Message::system(self.config.system_prompt.clone()));
        }
        messages.extend(input.messages.iter().cloned());
        messages
    }
}

/// Mean sampled-token logprob, the secondary score of a trace when logprobs are present.
fn mean_logprob(tokens: &[TokenLogprob]) -> Option<f64> {
    let lps: Vec<f64> = tokens.iter().filter_map(|t| t.logprob).collect();
    (!lps.is_empty()).then(|| lps.iter().sum::<f64>() / lps.len() as f64)
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
            let mut sampling = self.sampling.clone();
            sampling.seed = Some(input.seed);
            let request = GenerationRequest::new(
                Prompt::Chat {
                    messages: self.messages(input),
                    continue_final_message: false,
                },
                sampling,
            );
            let response = backend.generate(request).await?;
            let options = ExtractOptions {
                last_number_fallback: self.config.last_number_fallback,
            };
            let extracted: Vec<Option<String>> = response
                .completions
                .iter()
                .map(|c| extract_answer(&c.text, &options).map(|e| e.answer))
                .collect();
            let scores: Vec<Option<f64>> = response
                .completions
                .iter()
                .map(|c| c.tokens.as_deref().and_then(mean_logprob))
                .collect();
            let voting: Vec<Option<String>> = if self.config.count_empty_answers {
                extracted
                    .iter()
                    .map(|a| Some(a.clone().unwrap_or_default()))
                    .collect()
            } else {
                extracted.clone()
            };
            let all_scored = scores.iter().all(Option::is_some);
            // Confidences are log-probabilities (≤ 0); shift by +1 per trace is not meaningful,
            // so tie breaks use exp(mean logprob), the geometric-mean token probability.
            let tie_scores: Option<Vec<f64>> =
                all_scored.then(|| scores.iter().map(|s| s.unwrap_or(0.0).exp()).collect());
            let mut rng = SeededRng::derive(input.seed, "self-consistency/tie-break");
            let result = vote(
                &voting,
                tie_scores.as_deref(),
                VoteOptions {
                    weighted: false,
                    tie_break: self.config.tie_break,
                },
                &mut rng,
            );
            let candidates: Vec<Candidate> = response
                .completions
                .iter()
                .enumerate()
                .map(|(i, c)| Candidate {
                    text: c.text.clone(),
                    answer: extracted[i].clone(),
                    votes: result.cluster_of(i).map(|k| result.clusters[k].votes),
                    score: scores[i],
                    finish_reason: c.finish_reason,
                    completion_tokens: c.completion_tokens,
                })
                .collect();
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
                .map(|c| serde_json::json!({"answer": c.representative, "votes": c.votes}))
                .collect();
            Ok(StrategyOutcome {
                answer,
                selected,
                candidates,
                details: serde_json::json!({
                    "consensus": result.consensus(),
                    "voters": result.voters,
                    "distribution": distribution,
                }),
            })
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
                assert_eq!(messages[0].role, Role::System);
                assert_eq!(messages[1].content, "what is one half?");
            }
            other => panic!("unexpected prompt {other:?}"),
        }
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
