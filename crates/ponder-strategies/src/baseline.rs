//! Baseline / chain-of-thought: one trace, its answer extracted (reference §1.1), with the
//! two-phase generation of thinking models (§0.4).
//!
//! `chain-of-thought` is the same strategy with the legacy defaults of the upstream
//! `chain_of_thought` (512 tokens, temperature 0.1, repetition penalty 1.1).

use std::sync::Arc;

use ponder_answer::extract_answer;
use ponder_core::{
    parse_params, Backend, BoxFuture, BuildError, Candidate, Capabilities, Capability,
    FinishReason, GenerationRequest, Message, ParamSpec, Params, Prompt, SamplingParams, Strategy,
    StrategyError, StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome,
};
use serde::Deserialize;

use crate::common::{extract_options, with_system_prompt};
use crate::self_consistency::DEFAULT_SYSTEM_PROMPT;

/// The marker that closes a thinking block.
pub const THINK_END: &str = "</think>";

/// Whether the model has a thinking block (§0.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Thinking {
    /// The model has none: one phase.
    #[default]
    None,
    /// Reason until `</think>`, then generate the answer in a second phase.
    On,
    /// The model has one but it is switched off (`chat_template_kwargs.enable_thinking`).
    Off,
}

impl Thinking {
    fn as_str(self) -> &'static str {
        match self {
            Thinking::None => "none",
            Thinking::On => "on",
            Thinking::Off => "off",
        }
    }
}

/// What a user writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    /// Stop strings that end the response. Default: `["<end of response>"]`.
    #[serde(default = "default_eos")]
    pub eos_patterns: Vec<String>,
    /// `none`, `on` or `off`. Default: `none`.
    #[serde(default)]
    pub thinking: Thinking,
    /// Most tokens of the answer phase. Default: `max_tokens`.
    #[serde(default)]
    pub answer_max_tokens: Option<u32>,
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    #[serde(default = "default_true")]
    pub last_number_fallback: bool,
}

fn default_eos() -> Vec<String> {
    vec!["<end of response>".into()]
}
fn default_system_prompt() -> String {
    DEFAULT_SYSTEM_PROMPT.into()
}
fn default_true() -> bool {
    true
}

/// Defaults that differ between `baseline` and `chain-of-thought`.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    max_tokens: u32,
    temperature: f64,
    top_p: Option<f64>,
    top_k: Option<u32>,
    repetition_penalty: Option<f64>,
}

const BASELINE: Defaults = Defaults {
    max_tokens: 4096,
    temperature: 0.7,
    top_p: Some(0.8),
    top_k: Some(20),
    repetition_penalty: None,
};

const LEGACY_COT: Defaults = Defaults {
    max_tokens: 512,
    temperature: 0.1,
    top_p: None,
    top_k: None,
    repetition_penalty: Some(1.1),
};

macro_rules! params {
    ($max:literal, $temp:literal, $top_p:literal, $top_k:literal, $rep:literal) => {
        &[
            ParamSpec {
                name: "max_tokens",
                default: $max,
                description: "most tokens of the trace (of phase 1 when thinking)",
            },
            ParamSpec {
                name: "temperature",
                default: $temp,
                description: "sampling temperature",
            },
            ParamSpec {
                name: "top_p",
                default: $top_p,
                description: "nucleus sampling mass",
            },
            ParamSpec {
                name: "top_k",
                default: $top_k,
                description: "top-k sampling cut",
            },
            ParamSpec {
                name: "repetition_penalty",
                default: $rep,
                description: "passed to the server as is (vLLM, SGLang)",
            },
            ParamSpec {
                name: "eos_patterns",
                default: "[\"<end of response>\"]",
                description: "stop strings that end the response",
            },
            ParamSpec {
                name: "thinking",
                default: "none",
                description: "none | on (reason until </think>, then answer) | off (switch it off)",
            },
            ParamSpec {
                name: "answer_max_tokens",
                default: "max_tokens",
                description: "most tokens of the answer phase (thinking on)",
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
        ]
    };
}

const BASELINE_PARAMS: &[ParamSpec] = params!("4096", "0.7", "0.8", "20", "unset");
const COT_PARAMS: &[ParamSpec] = params!("512", "0.1", "unset", "unset", "1.1");

/// Builds [`Baseline`] under either name.
#[derive(Debug, Clone, Copy)]
pub struct BaselineFactory {
    name: &'static str,
    defaults: Defaults,
    params: &'static [ParamSpec],
}

impl BaselineFactory {
    /// `baseline`: one trace with the reference defaults.
    pub fn baseline() -> Self {
        BaselineFactory {
            name: "baseline",
            defaults: BASELINE,
            params: BASELINE_PARAMS,
        }
    }

    /// `chain-of-thought`: one trace with the legacy defaults.
    pub fn chain_of_thought() -> Self {
        BaselineFactory {
            name: "chain-of-thought",
            defaults: LEGACY_COT,
            params: COT_PARAMS,
        }
    }
}

impl StrategyFactory for BaselineFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: self.name,
            summary: if self.name == "baseline" {
                "one trace, its answer extracted (two phases for thinking models)"
            } else {
                "baseline with the legacy chain-of-thought defaults (512 tokens, temperature 0.1)"
            },
            params: self.params.to_vec(),
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
        let config: BaselineConfig = parse_params(self.name, params, self.params)?;
        if config.thinking == Thinking::On && !capabilities.has(Capability::PrefixContinuation) {
            // The answer phase continues the closed thinking block.
            return Err(BuildError::MissingCapability {
                strategy: self.name.to_string(),
                backend: backend_name.to_string(),
                capability: Capability::PrefixContinuation,
            });
        }
        let d = self.defaults;
        let max_tokens = config.max_tokens.unwrap_or(d.max_tokens);
        let mut stop = config.eos_patterns.clone();
        if config.thinking == Thinking::On {
            stop.push(THINK_END.into());
        }
        let sampling = SamplingParams {
            temperature: Some(config.temperature.unwrap_or(d.temperature)),
            top_p: config.top_p.or(d.top_p),
            top_k: config.top_k.or(d.top_k),
            max_tokens: Some(max_tokens),
            stop,
            ..SamplingParams::default()
        };
        sampling.validate().map_err(|e| BuildError::InvalidParam {
            strategy: self.name.into(),
            param: e.field.into(),
            reason: e.reason,
        })?;
        let mut extra = serde_json::Map::new();
        if let Some(p) = config.repetition_penalty.or(d.repetition_penalty) {
            extra.insert("repetition_penalty".into(), serde_json::json!(p));
        }
        if config.thinking == Thinking::Off {
            extra.insert(
                "chat_template_kwargs".into(),
                serde_json::json!({"enable_thinking": false}),
            );
        }
        let answer_max_tokens = config.answer_max_tokens.unwrap_or(max_tokens);
        Ok(Arc::new(Baseline {
            name: self.name,
            config,
            sampling,
            extra,
            answer_max_tokens,
        }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct Baseline {
    name: &'static str,
    config: BaselineConfig,
    sampling: SamplingParams,
    extra: serde_json::Map<String, serde_json::Value>,
    answer_max_tokens: u32,
}

impl Baseline {
    fn messages(&self, input: &StrategyInput) -> Vec<Message> {
        with_system_prompt(&input.messages, &self.config.system_prompt)
    }

    fn request(&self, prompt: Prompt, sampling: SamplingParams) -> GenerationRequest {
        let mut request = GenerationRequest::new(prompt, sampling);
        request.extra = self.extra.clone();
        request
    }
}

impl Strategy for Baseline {
    fn name(&self) -> &str {
        self.name
    }

    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
        Box::pin(async move {
            let messages = self.messages(input);
            let mut sampling = self.sampling.clone();
            sampling.seed = Some(input.seed);
            let first = backend
                .generate(self.request(
                    Prompt::Chat {
                        messages: messages.clone(),
                        continue_final_message: false,
                    },
                    sampling,
                ))
                .await?;
            let Some(phase1) = first.completions.into_iter().next() else {
                return Err(StrategyError::Backend(
                    ponder_core::BackendError::Protocol {
                        endpoint: backend.name().to_string(),
                        message: "the reply had no completion".into(),
                    },
                ));
            };
            let mut text = phase1.text;
            let mut finish_reason = phase1.finish_reason;
            let mut completion_tokens = phase1.completion_tokens;
            let mut phases = 1;
            let thinking_closed = phase1.stop.as_deref() == Some(THINK_END);
            if self.config.thinking == Thinking::On && thinking_closed {
                // Phase 2: close the thinking block and generate the answer after it.
                text.push_str(THINK_END);
                let answer_params = SamplingParams {
                    max_tokens: Some(self.answer_max_tokens),
                    min_tokens: None,
                    stop: self.config.eos_patterns.clone(),
                    seed: Some(input.seed),
                    ..self.sampling.clone()
                };
                let second = backend
                    .generate(self.request(Prompt::prefill(messages, text.clone()), answer_params))
                    .await?;
                if let Some(answer) = second.completions.into_iter().next() {
                    text.push_str(&answer.text);
                    finish_reason = answer.finish_reason;
                    completion_tokens = match (completion_tokens, answer.completion_tokens) {
                        (Some(a), Some(b)) => Some(a + b),
                        _ => None,
                    };
                }
                phases = 2;
            }
            let options = extract_options(self.config.last_number_fallback);
            let answer = extract_answer(&text, &options).map(|e| e.answer);
            let completion_reason = match (finish_reason, phases) {
                (FinishReason::Length, _) => "max_tokens",
                (FinishReason::Stop, _) => "eos_pattern",
                (FinishReason::Aborted, _) => "cancelled",
                (FinishReason::Error, _) => "error",
            };
            Ok(StrategyOutcome {
                selected: Some(0),
                candidates: vec![Candidate {
                    text,
                    answer: answer.clone(),
                    votes: None,
                    score: None,
                    finish_reason,
                    completion_tokens,
                }],
                details: serde_json::json!({
                    "thinking": self.config.thinking.as_str(),
                    "phases": phases,
                    "completed": answer.is_some(),
                    "completion_reason": completion_reason,
                }),
                answer,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ponder_core::{run_strategy, BackendError, CompletionStream, StreamEvent};

    use super::*;

    /// Replies to call `k` with `replies[k]` (text, stop string that ended it).
    struct TwoPhase {
        replies: Vec<(&'static str, Option<&'static str>)>,
        seen: Mutex<Vec<GenerationRequest>>,
        prefix: bool,
    }

    impl Backend for TwoPhase {
        fn name(&self) -> &str {
            "two-phase"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: None,
                multiple_samples: false,
                prefix_continuation: self.prefix,
                process_rewards: false,
                streaming: true,
                max_stop_strings: None,
            }
        }
        fn stream(
            &self,
            request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
            let mut seen = self.seen.lock().expect("lock");
            let (text, stop) = self.replies[seen.len() % self.replies.len()];
            seen.push(request);
            let events = vec![
                Ok(StreamEvent::Delta {
                    index: 0,
                    text: text.into(),
                    token_count: 10,
                    tokens: vec![],
                }),
                Ok(StreamEvent::Finished {
                    index: 0,
                    reason: FinishReason::Stop,
                    stop: stop.map(String::from),
                }),
            ];
            Box::pin(
                async move { Ok(CompletionStream::new(1, futures_util::stream::iter(events))) },
            )
        }
    }

    fn params(pairs: &[(&str, serde_json::Value)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn input() -> StrategyInput {
        StrategyInput {
            messages: vec![Message::user("What is 6 * 7?")],
            seed: 3,
        }
    }

    #[tokio::test]
    async fn thinking_on_runs_an_answer_phase_after_the_closed_block() {
        let backend = Arc::new(TwoPhase {
            replies: vec![
                ("<think>6 * 7 is 42, maybe \\boxed{41}?", Some(THINK_END)),
                ("\n\nThe answer is \\boxed{42}.", None),
            ],
            seen: Mutex::default(),
            prefix: true,
        });
        let caps = backend.capabilities();
        let strategy = BaselineFactory::baseline()
            .build(&params(&[("thinking", "on".into())]), "two-phase", &caps)
            .expect("builds");
        let r = run_strategy(strategy.as_ref(), backend.clone(), &input())
            .await
            .expect("runs");
        // The boxed guess inside the thinking block does not count; the answer phase's does.
        assert_eq!(r.outcome.answer.as_deref(), Some("42"));
        assert_eq!(r.outcome.details["phases"], 2);
        assert_eq!(r.cost.requests, 2);
        assert_eq!(r.outcome.candidates[0].completion_tokens, Some(20));
        assert!(r.outcome.candidates[0]
            .text
            .contains("?</think>\n\nThe answer"));
        let seen = backend.seen.lock().expect("lock");
        assert!(seen[0].params.stop.contains(&THINK_END.to_string()));
        assert_eq!(seen[0].params.top_k, Some(20));
        match &seen[1].prompt {
            Prompt::Chat {
                messages,
                continue_final_message,
            } => {
                assert!(continue_final_message);
                let last = messages.last().expect("a message");
                assert_eq!(last.role, ponder_core::Role::Assistant);
                assert!(last.content.ends_with("?</think>"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!seen[1].params.stop.contains(&THINK_END.to_string()));
        assert_eq!(seen[1].params.min_tokens, None);
    }

    #[tokio::test]
    async fn one_phase_without_thinking_and_legacy_cot_defaults() {
        let backend = Arc::new(TwoPhase {
            replies: vec![("so \\boxed{42}", None)],
            seen: Mutex::default(),
            prefix: false,
        });
        let caps = backend.capabilities();
        let strategy = BaselineFactory::chain_of_thought()
            .build(&Params::new(), "two-phase", &caps)
            .expect("builds");
        let r = run_strategy(strategy.as_ref(), backend.clone(), &input())
            .await
            .expect("runs");
        assert_eq!(r.outcome.answer.as_deref(), Some("42"));
        assert_eq!(r.cost.requests, 1);
        let seen = backend.seen.lock().expect("lock");
        assert_eq!(seen[0].params.max_tokens, Some(512));
        assert_eq!(seen[0].params.temperature, Some(0.1));
        assert_eq!(seen[0].extra["repetition_penalty"], serde_json::json!(1.1));
        assert_eq!(seen[0].params.seed, Some(3));
    }

    #[test]
    fn thinking_on_needs_prefix_continuation_at_build_time() {
        let caps = Capabilities {
            max_top_logprobs: None,
            multiple_samples: false,
            prefix_continuation: false,
            process_rewards: false,
            streaming: true,
            max_stop_strings: None,
        };
        let err = BaselineFactory::baseline()
            .build(&params(&[("thinking", "on".into())]), "plain", &caps)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("prefix_continuation"), "{err}");
        let off = BaselineFactory::baseline().build(
            &params(&[("thinking", "off".into())]),
            "plain",
            &caps,
        );
        assert!(off.is_ok());
    }
}
