//! Extended thinking by budget forcing (s1, Muennighoff et al., arXiv 2501.19393; reference
//! §1.13): suppress the end of thinking and append a continuation cue a number of times (or
//! until a minimum of thinking tokens), or close the thinking block once a token budget is
//! spent; then generate the answer.
//!
//! Every segment after the first continues the assistant message (prefix continuation), so
//! the backend must offer it; the strategy fails at build time otherwise.

use std::sync::Arc;

use ponder_answer::extract_answer;
use ponder_core::{
    parse_params, Backend, BackendError, BoxFuture, BuildError, Candidate, Capabilities,
    Capability, FinishReason, GenerationRequest, Message, ParamSpec, Params, Prompt,
    SamplingParams, Strategy, StrategyError, StrategyFactory, StrategyInfo, StrategyInput,
    StrategyOutcome,
};
use serde::Deserialize;

use crate::baseline::THINK_END;
use crate::common::{extract_options, invalid};

/// What a user writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetForcingConfig {
    /// Times the end of thinking is suppressed. Default: 3.
    #[serde(default = "default_max_continuations")]
    pub max_continuations: u32,
    /// Appended in place of `</think>`. Default: "\nWait, ".
    #[serde(default = "default_continuation_text")]
    pub continuation_text: String,
    /// Suppress the end of thinking until this many thinking tokens exist. Default: 0.
    #[serde(default)]
    pub min_thinking_tokens: u64,
    /// Close the thinking block once this many thinking tokens exist. Default: none.
    #[serde(default)]
    pub max_thinking_tokens: Option<u64>,
    /// Appended after a forced `</think>` (s1 uses an answer lead-in). Default: none.
    #[serde(default)]
    pub answer_lead_in: Option<String>,
    /// Most thinking segments. Default: 50.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Most tokens per segment (the generation limit). Default: 32768.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Most tokens of the answer phase. Default: 4096.
    #[serde(default = "default_answer_max_tokens")]
    pub answer_max_tokens: u32,
    #[serde(default = "default_eos")]
    pub eos_patterns: Vec<String>,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    #[serde(default = "default_top_k")]
    pub top_k: u32,
    #[serde(default = "default_true")]
    pub last_number_fallback: bool,
}

fn default_max_continuations() -> u32 {
    3
}
fn default_continuation_text() -> String {
    "\nWait, ".into()
}
fn default_max_steps() -> u32 {
    50
}
fn default_max_tokens() -> u32 {
    32_768
}
fn default_answer_max_tokens() -> u32 {
    4096
}
fn default_eos() -> Vec<String> {
    vec!["<end of response>".into()]
}
fn default_temperature() -> f64 {
    0.6
}
fn default_top_p() -> f64 {
    0.95
}
fn default_top_k() -> u32 {
    20
}
fn default_true() -> bool {
    true
}

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "max_continuations",
        default: "3",
        description: "times the end of thinking is suppressed",
    },
    ParamSpec {
        name: "continuation_text",
        default: "\"\\nWait, \"",
        description: "appended in place of </think>",
    },
    ParamSpec {
        name: "min_thinking_tokens",
        default: "0",
        description: "suppress the end of thinking until this many thinking tokens",
    },
    ParamSpec {
        name: "max_thinking_tokens",
        default: "unset",
        description: "force </think> once this many thinking tokens exist",
    },
    ParamSpec {
        name: "answer_lead_in",
        default: "unset",
        description: "text after a forced </think> (e.g. \"Final Answer:\")",
    },
    ParamSpec {
        name: "max_steps",
        default: "50",
        description: "most thinking segments",
    },
    ParamSpec {
        name: "max_tokens",
        default: "32768",
        description: "most tokens per segment",
    },
    ParamSpec {
        name: "answer_max_tokens",
        default: "4096",
        description: "most tokens of the answer phase",
    },
    ParamSpec {
        name: "eos_patterns",
        default: "[\"<end of response>\"]",
        description: "stop strings that end the response",
    },
    ParamSpec {
        name: "temperature",
        default: "0.6",
        description: "sampling temperature (thinking-model defaults)",
    },
    ParamSpec {
        name: "top_p",
        default: "0.95",
        description: "nucleus sampling mass",
    },
    ParamSpec {
        name: "top_k",
        default: "20",
        description: "top-k sampling cut",
    },
    ParamSpec {
        name: "last_number_fallback",
        default: "true",
        description: "use the last number when no answer marker is found",
    },
];

/// Builds [`BudgetForcing`].
#[derive(Debug, Default)]
pub struct BudgetForcingFactory;

impl StrategyFactory for BudgetForcingFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: "budget-forcing",
            summary: "s1 extended thinking: suppress </think> with \"Wait\", or force it at a token budget",
            params: PARAMS.to_vec(),
            requires: vec![Capability::PrefixContinuation],
        }
    }

    fn build(
        &self,
        params: &Params,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        self.check_capabilities(backend_name, capabilities)?;
        let config: BudgetForcingConfig = parse_params("budget-forcing", params, PARAMS)?;
        let invalid = |param: &str, reason: String| invalid("budget-forcing", param, reason);
        if config.max_steps == 0 {
            return Err(invalid("max_steps", "must be at least 1".into()));
        }
        if config.max_thinking_tokens == Some(0) {
            return Err(invalid("max_thinking_tokens", "must be at least 1".into()));
        }
        if let Some(max) = config.max_thinking_tokens {
            if config.min_thinking_tokens > max {
                return Err(invalid(
                    "min_thinking_tokens",
                    format!("must not exceed max_thinking_tokens ({max})"),
                ));
            }
        }
        let sampling = SamplingParams {
            temperature: Some(config.temperature),
            top_p: Some(config.top_p),
            top_k: Some(config.top_k),
            max_tokens: Some(config.max_tokens),
            ..SamplingParams::default()
        };
        sampling
            .validate()
            .map_err(|e| invalid(e.field, e.reason))?;
        Ok(Arc::new(BudgetForcing { config, sampling }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct BudgetForcing {
    config: BudgetForcingConfig,
    sampling: SamplingParams,
}

/// Why the thinking phase ended.
fn reason_str(reason: ThinkingEnd) -> &'static str {
    match reason {
        ThinkingEnd::Closed => "thinking_complete",
        ThinkingEnd::Budget => "budget_exhausted",
        ThinkingEnd::MaxSteps => "max_steps",
        ThinkingEnd::Response => "eos_pattern",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThinkingEnd {
    /// The model closed the block and no more continuations were due.
    Closed,
    /// `max_thinking_tokens` was reached: the block was closed for it.
    Budget,
    /// `max_steps` segments: the block was closed for it.
    MaxSteps,
    /// The model ended the whole response (EOS or an end marker) without an answer phase.
    Response,
}

impl BudgetForcing {
    async fn segment(
        &self,
        backend: &Arc<dyn Backend>,
        messages: &[Message],
        text: &str,
        params: SamplingParams,
    ) -> Result<ponder_core::Completion, StrategyError> {
        let prompt = if text.is_empty() {
            Prompt::Chat {
                messages: messages.to_vec(),
                continue_final_message: false,
            }
        } else {
            Prompt::prefill(messages.to_vec(), text)
        };
        let response = backend
            .generate(GenerationRequest::new(prompt, params))
            .await?;
        response.completions.into_iter().next().ok_or_else(|| {
            StrategyError::Backend(BackendError::Protocol {
                endpoint: backend.name().to_string(),
                message: "the reply had no completion".into(),
            })
        })
    }
}

impl Strategy for BudgetForcing {
    fn name(&self) -> &str {
        "budget-forcing"
    }

    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
        Box::pin(async move {
            let c = &self.config;
            let messages: Vec<Message> = input.messages.clone();
            let mut text = String::new();
            let mut thinking_tokens = 0u64;
            let mut continuations = 0u32;
            let mut segments = 0u32;
            let mut stop = c.eos_patterns.clone();
            stop.push(THINK_END.into());
            let end = loop {
                segments += 1;
                let mut params = self.sampling.clone();
                params.stop = stop.clone();
                params.seed = Some(input.seed.wrapping_add(u64::from(segments - 1)));
                if let Some(max) = c.max_thinking_tokens {
                    let left = max.saturating_sub(thinking_tokens).max(1);
                    params.max_tokens = Some(u64::from(c.max_tokens).min(left) as u32);
                }
                let seg = self.segment(backend, &messages, &text, params).await?;
                text.push_str(&seg.text);
                thinking_tokens += seg.completion_tokens.unwrap_or(0);
                let budget_spent = c.max_thinking_tokens.is_some_and(|m| thinking_tokens >= m);
                if seg.stop.as_deref() == Some(THINK_END) {
                    let more = continuations < c.max_continuations
                        || thinking_tokens < c.min_thinking_tokens;
                    if more && !budget_spent && segments < c.max_steps {
                        text.push_str(&c.continuation_text);
                        continuations += 1;
                        continue;
                    }
                    text.push_str(THINK_END);
                    break if budget_spent {
                        ThinkingEnd::Budget
                    } else {
                        ThinkingEnd::Closed
                    };
                }
                if budget_spent {
                    text.push_str(THINK_END);
                    if let Some(lead) = &c.answer_lead_in {
                        text.push_str(lead);
                    }
                    break ThinkingEnd::Budget;
                }
                if seg.finish_reason != FinishReason::Length {
                    break ThinkingEnd::Response;
                }
                if segments >= c.max_steps {
                    text.push_str(THINK_END);
                    break ThinkingEnd::MaxSteps;
                }
            };
            let mut answer_tokens = 0;
            let mut finish_reason = FinishReason::Stop;
            if end != ThinkingEnd::Response {
                let params = SamplingParams {
                    max_tokens: Some(c.answer_max_tokens),
                    min_tokens: None,
                    stop: c.eos_patterns.clone(),
                    seed: Some(input.seed.wrapping_add(u64::from(segments))),
                    ..self.sampling.clone()
                };
                let seg = self.segment(backend, &messages, &text, params).await?;
                text.push_str(&seg.text);
                answer_tokens = seg.completion_tokens.unwrap_or(0);
                finish_reason = seg.finish_reason;
            }
            let options = extract_options(c.last_number_fallback);
            let answer = extract_answer(&text, &options).map(|e| e.answer);
            Ok(StrategyOutcome {
                selected: Some(0),
                candidates: vec![Candidate {
                    text,
                    answer: answer.clone(),
                    votes: None,
                    score: None,
                    finish_reason,
                    completion_tokens: Some(thinking_tokens + answer_tokens),
                }],
                details: serde_json::json!({
                    "continuations": continuations,
                    "segments": segments,
                    "thinking_tokens": thinking_tokens,
                    "answer_tokens": answer_tokens,
                    "thinking_end": reason_str(end),
                }),
                answer,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ponder_core::{run_strategy, CompletionStream, StreamEvent};

    use super::*;

    /// Replies to call `k` with `replies[k]`: (text, tokens, stop string, finish reason).
    struct Script {
        replies: Vec<(&'static str, u32, Option<&'static str>, FinishReason)>,
        seen: Mutex<Vec<GenerationRequest>>,
    }

    impl Backend for Script {
        fn name(&self) -> &str {
            "script"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: None,
                multiple_samples: false,
                prefix_continuation: true,
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
            let (text, tokens, stop, reason) = self.replies[seen.len().min(self.replies.len() - 1)];
            seen.push(request);
            let events = vec![
                Ok(StreamEvent::Delta {
                    index: 0,
                    text: text.into(),
                    token_count: tokens,
                    tokens: vec![],
                }),
                Ok(StreamEvent::Finished {
                    index: 0,
                    reason,
                    stop: stop.map(String::from),
                }),
            ];
            Box::pin(
                async move { Ok(CompletionStream::new(1, futures_util::stream::iter(events))) },
            )
        }
    }

    async fn run(
        replies: Vec<(&'static str, u32, Option<&'static str>, FinishReason)>,
        params: serde_json::Value,
    ) -> (ponder_core::StrategyResult, Vec<GenerationRequest>) {
        let backend = Arc::new(Script {
            replies,
            seen: Mutex::default(),
        });
        let params: Params = serde_json::from_value(params).expect("params");
        let s = BudgetForcingFactory
            .build(&params, "script", &backend.capabilities())
            .expect("builds");
        let input = StrategyInput {
            messages: vec![Message::user("What is 6 * 7?")],
            seed: 10,
        };
        let r = run_strategy(s.as_ref(), backend.clone(), &input)
            .await
            .expect("runs");
        let seen = backend.seen.lock().expect("lock").clone();
        (r, seen)
    }

    const STOP: FinishReason = FinishReason::Stop;

    #[tokio::test]
    async fn the_end_of_thinking_is_suppressed_then_accepted() {
        // Two continuations: three thinking segments, then the answer phase.
        let (r, seen) = run(
            vec![
                ("<think>6*7=42", 5, Some(THINK_END), STOP),
                ("or 43?", 3, Some(THINK_END), STOP),
                ("no, 42.", 4, Some(THINK_END), STOP),
                ("\\boxed{42}", 4, None, STOP),
            ],
            serde_json::json!({"max_continuations": 2}),
        )
        .await;
        let text = &r.outcome.candidates[0].text;
        assert_eq!(
            text,
            "<think>6*7=42\nWait, or 43?\nWait, no, 42.</think>\\boxed{42}"
        );
        assert_eq!(r.outcome.answer.as_deref(), Some("42"));
        assert_eq!(r.outcome.details["continuations"], 2);
        assert_eq!(r.outcome.details["thinking_tokens"], 12);
        assert_eq!(r.outcome.details["thinking_end"], "thinking_complete");
        assert_eq!(seen.len(), 4);
        // Later segments continue the assistant message; seeds differ per segment.
        match &seen[1].prompt {
            Prompt::Chat {
                messages,
                continue_final_message,
            } => {
                assert!(continue_final_message);
                assert_eq!(
                    messages.last().map(|m| m.content.as_str()),
                    Some("<think>6*7=42\nWait, ")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(seen[0].params.seed, Some(10));
        assert_eq!(seen[1].params.seed, Some(11));
        assert!(seen[0].params.stop.contains(&THINK_END.to_string()));
        assert!(!seen[3].params.stop.contains(&THINK_END.to_string()));
        assert_eq!(r.cost.requests, 4);
    }

    #[tokio::test]
    async fn the_thinking_budget_forces_the_end() {
        // Budget 10: the first segment may use 10 tokens and uses them all (length).
        let (r, seen) = run(
            vec![
                ("<think>long thought", 10, None, FinishReason::Length),
                (" 42", 2, None, STOP),
            ],
            serde_json::json!({"max_thinking_tokens": 10, "answer_lead_in": "\nFinal Answer:"}),
        )
        .await;
        assert_eq!(seen[0].params.max_tokens, Some(10));
        assert_eq!(
            r.outcome.candidates[0].text,
            "<think>long thought</think>\nFinal Answer: 42"
        );
        assert_eq!(r.outcome.details["thinking_end"], "budget_exhausted");
        assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    }

    #[tokio::test]
    async fn min_thinking_tokens_keep_it_going_past_the_count() {
        // max_continuations 0 but 8 thinking tokens are required: one continuation.
        let (r, _) = run(
            vec![
                ("a", 5, Some(THINK_END), STOP),
                ("b", 5, Some(THINK_END), STOP),
                ("\\boxed{1}", 3, None, STOP),
            ],
            serde_json::json!({"max_continuations": 0, "min_thinking_tokens": 8}),
        )
        .await;
        assert_eq!(r.outcome.details["continuations"], 1);
        assert_eq!(r.outcome.candidates[0].text, "a\nWait, b</think>\\boxed{1}");
    }

    #[test]
    fn needs_prefix_continuation() {
        let caps = Capabilities {
            max_top_logprobs: None,
            multiple_samples: false,
            prefix_continuation: false,
            process_rewards: false,
            streaming: true,
            max_stop_strings: None,
        };
        let err = BudgetForcingFactory
            .build(&Params::new(), "plain", &caps)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("prefix_continuation"), "{err}");
    }
}
