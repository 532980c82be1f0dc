//! Step generation over any backend with prefix continuation (reference §2.1): one call per
//! expanded trajectory with `n` candidates, continuing the chat-templated request plus the steps
//! so far, either as an assistant prefill on a chat endpoint or as raw text on the completions
//! endpoint (the prompt is rendered once, so the prefix is byte-identical across steps and a
//! server's prefix cache hits).
//!
//! The stop string that ends a step is not thrown away: it is the start of the next step (a
//! sentence-start marker such as `"\nSo "`, a `"\nStep"` header), so it is carried into the
//! next call's prefix instead of being sampled again. The call asks the server to keep the
//! matched stop string in the text (`include_stop_str_in_output`), which tells a stop-string
//! stop from an end of sequence on servers that do not report `stop_reason`; stop strings
//! beyond the server's limit are matched client-side by the backend, which reports the match.

use std::sync::Arc;

use ponder_core::{
    Backend, Completion, FinishReason, GenerationRequest, Message, Prompt, Role, SamplingParams,
    StrategyError, TokenLogprob,
};
use serde::{Deserialize, Serialize};

use crate::baseline::{Thinking, THINK_END};
use crate::scoring::token_spans;
use crate::step::detector::{Detector, StepEnd};

/// Tokens kept for the answer phase of a thinking model (§2.1.5).
const ANSWER_RESERVE: u64 = 512;

/// How the steps so far are continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuation {
    /// The steps so far are an assistant message the chat endpoint continues.
    #[default]
    Prefill,
    /// The request is rendered with a ChatML template (`<|im_start|>role\n…<|im_end|>\n`,
    /// then `<|im_start|>assistant\n`) and continued as raw text on `/completions`.
    Text,
}

/// Renders chat messages with the ChatML template and the generation prompt.
pub fn render_chatml(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(m.role.as_str());
        out.push('\n');
        out.push_str(&m.content);
        out.push_str("<|im_end|>\n");
    }
    out.push_str("<|im_start|>assistant\n");
    out
}

/// One generated step candidate (reference §0.3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCandidate {
    /// Position among the call's `n` completions.
    pub index: usize,
    /// The marker carried over from the parent step, which this step starts with.
    pub lead: String,
    /// The text generated in this call, without the stop string that ended it.
    pub generated: String,
    /// The stop string that ended the step; it starts the next step.
    pub marker: Option<String>,
    /// Per-token records of `generated` (stop-string tokens left out), for logprob scorers.
    #[serde(skip)]
    pub tokens: Option<Vec<TokenLogprob>>,
    /// Completion tokens the call spent on this candidate (stop-string tokens included).
    pub completion_tokens: u64,
    pub finish_reason: FinishReason,
    pub end: StepEnd,
}

impl StepCandidate {
    /// The step's raw text, appended to the trajectory: lead marker plus generated text.
    pub fn raw_text(&self) -> String {
        format!("{}{}", self.lead, self.generated)
    }

    /// The step as a PRM or a reader sees it: the raw text, trimmed.
    pub fn step_text(&self) -> String {
        self.raw_text().trim().to_string()
    }
}

/// Generates step and answer candidates for one request.
#[derive(Debug, Clone)]
pub struct StepGenerator {
    messages: Vec<Message>,
    continuation: Continuation,
    /// ChatML rendering of `messages` (text continuation only).
    rendered: String,
    /// Sampling of a step call; `n`, `seed`, `stop`, `min_tokens`, `max_tokens` set per call.
    pub sampling: SamplingParams,
    pub detector: Detector,
    pub min_step_tokens: u32,
    pub max_step_tokens: u32,
    /// Carry the matched stop string into the next step (asks for
    /// `include_stop_str_in_output`).
    pub keep_marker: bool,
    /// The model's context in tokens, for the headroom check after a step call (§2.1.5).
    /// Default: unlimited.
    pub context_budget: Option<u64>,
    /// `off` asks the chat template to disable thinking. Default: `none`.
    pub thinking: Thinking,
}

/// What one call generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A reasoning step: detector stop strings, `min_step_tokens`.
    Step,
    /// A step generated to the end (no step stops; S&L's last iteration).
    ToEnd,
    /// The answer phase: stop at the end markers, `min_tokens` 0.
    Answer,
}

impl StepGenerator {
    pub fn new(
        messages: Vec<Message>,
        continuation: Continuation,
        sampling: SamplingParams,
        detector: Detector,
        min_step_tokens: u32,
        max_step_tokens: u32,
        keep_marker: bool,
    ) -> Self {
        let rendered = match continuation {
            Continuation::Text => render_chatml(&messages),
            Continuation::Prefill => String::new(),
        };
        StepGenerator {
            messages,
            continuation,
            rendered,
            sampling,
            detector,
            min_step_tokens,
            max_step_tokens,
            keep_marker,
            context_budget: None,
            thinking: Thinking::None,
        }
    }

    /// This generator with `note` appended to the last user message (or as a new user message
    /// when there is none): the steps so far are continued the same way, but the model reads
    /// the note first. MUR's `critic_revise` asks for a revised step like this.
    pub fn with_note(&self, note: &str) -> Self {
        let mut messages = self.messages.clone();
        match messages.iter_mut().rev().find(|m| m.role == Role::User) {
            Some(m) => {
                m.content.push_str("\n\n");
                m.content.push_str(note);
            }
            None => messages.push(Message::user(note)),
        }
        let mut generator = self.clone();
        generator.rendered = match self.continuation {
            Continuation::Text => render_chatml(&messages),
            Continuation::Prefill => String::new(),
        };
        generator.messages = messages;
        generator
    }

    fn prompt(&self, prefix: &str) -> Prompt {
        match self.continuation {
            Continuation::Text => Prompt::Text(format!("{}{prefix}", self.rendered)),
            Continuation::Prefill if prefix.is_empty() => Prompt::Chat {
                messages: self.messages.clone(),
                continue_final_message: false,
            },
            Continuation::Prefill => Prompt::prefill(self.messages.clone(), prefix),
        }
    }

    /// Generates `n` candidates continuing `trajectory` (the raw text of the steps so far),
    /// each starting with `lead` (the marker the last step stopped at).
    pub async fn generate(
        &self,
        backend: &Arc<dyn Backend>,
        trajectory: &str,
        lead: &str,
        n: u32,
        seed: u64,
        kind: CallKind,
    ) -> Result<Vec<StepCandidate>, StrategyError> {
        let mut params = self.sampling.clone();
        params.n = n.max(1);
        params.seed = Some(seed);
        params.max_tokens = Some(self.max_step_tokens);
        let (stops, min_tokens) = match kind {
            CallKind::Step => (self.detector.stop_strings.clone(), self.min_step_tokens),
            CallKind::ToEnd | CallKind::Answer => (self.detector.eos_patterns.clone(), 0),
        };
        params.stop = stops;
        params.min_tokens = (min_tokens > 0).then_some(min_tokens.min(self.max_step_tokens));
        let mut request =
            GenerationRequest::new(self.prompt(&format!("{trajectory}{lead}")), params);
        if self.thinking == Thinking::Off {
            request.extra.insert(
                "chat_template_kwargs".into(),
                serde_json::json!({"enable_thinking": false}),
            );
        }
        if self.keep_marker {
            request.extra.insert(
                "include_stop_str_in_output".into(),
                serde_json::Value::Bool(true),
            );
        }
        let response = backend.generate(request).await?;
        let before = format!("{trajectory}{lead}");
        // Prompt tokens of one request (a split `n` reports the sum over its requests).
        let prompt_tokens = response.usage.prompt_tokens / u64::from(response.requests.max(1));
        let mut candidates: Vec<StepCandidate> = response
            .completions
            .into_iter()
            .enumerate()
            .map(|(i, c)| self.candidate(i, c, &before, lead, kind))
            .collect();
        // Headroom check (§2.1.5): when the longest candidate leaves less than
        // `max_step_tokens` of context (inside a thinking block: that plus the 512-token answer
        // reserve), no further step fits and every candidate ends its trajectory. Only when
        // the server reported the prompt's size.
        if let (Some(budget), CallKind::Step, true) = (self.context_budget, kind, prompt_tokens > 0)
        {
            let longest = candidates
                .iter()
                .map(|c| c.completion_tokens)
                .max()
                .unwrap_or(0);
            let remaining = budget.saturating_sub(prompt_tokens + longest);
            let reserve = if self.detector.thinking {
                ANSWER_RESERVE
            } else {
                0
            };
            if remaining < u64::from(self.max_step_tokens) + reserve {
                for c in candidates
                    .iter_mut()
                    .filter(|c| !c.end.is_trajectory_complete)
                {
                    c.end = StepEnd {
                        is_complete: true,
                        is_trajectory_complete: true,
                        reason: Some(super::CompletionReason::ContextLimit),
                    };
                }
            }
        }
        Ok(candidates)
    }

    /// Splits the stop string off a completion and classifies the step.
    fn candidate(
        &self,
        index: usize,
        c: Completion,
        before: &str,
        lead: &str,
        kind: CallKind,
    ) -> StepCandidate {
        let stops: &[String] = match kind {
            CallKind::Step => &self.detector.stop_strings,
            _ => &self.detector.eos_patterns,
        };
        let mut text = c.text;
        let mut marker = None;
        if let Some(stop) = c.stop.clone() {
            if text.ends_with(&stop) {
                text.truncate(text.len() - stop.len());
            }
            marker = Some(stop);
        } else if self.keep_marker && c.finish_reason == FinishReason::Stop {
            // The server kept the matched stop string: the longest stop string the text ends
            // with is it. Without one, the call ended at EOS.
            if let Some(stop) = stops
                .iter()
                .filter(|s| text.ends_with(s.as_str()))
                .max_by_key(|s| s.len())
            {
                text.truncate(text.len() - stop.len());
                marker = Some(stop.clone());
            }
        }
        if self.detector.thinking && kind == CallKind::Step {
            // `min_tokens` can make the model run past `</think>`: cut after it (§2.1.5).
            if let Some(pos) = text.find(THINK_END) {
                text.truncate(pos);
                marker = Some(THINK_END.to_string());
            } else if c.finish_reason == FinishReason::Length
                && !super::detector::repetitive(&text, c.completion_tokens.unwrap_or(0))
            {
                // A step cut by the length limit goes on from its last sentence boundary.
                let keep = super::detector::truncate_at_sentence(&text).len();
                text.truncate(keep);
            }
        }
        let tokens = c.tokens.map(|tokens| {
            let whole = 0..text.len();
            let span = token_spans(&tokens, std::slice::from_ref(&whole));
            span.first().map(|s| s.to_vec()).unwrap_or_default()
        });
        let completion_tokens = c
            .completion_tokens
            .unwrap_or_else(|| tokens.as_ref().map_or(0, |t| t.len() as u64));
        let step = format!("{lead}{text}");
        let end = match kind {
            CallKind::Step => self.detector.classify(
                &before[..before.len() - lead.len()],
                &step,
                marker.as_deref(),
                c.finish_reason,
                completion_tokens,
            ),
            // The last step and the answer phase end the trajectory whatever stopped them.
            CallKind::ToEnd | CallKind::Answer => {
                let mut end = self.detector.classify(
                    &before[..before.len() - lead.len()],
                    &step,
                    marker.as_deref(),
                    c.finish_reason,
                    completion_tokens,
                );
                end.is_trajectory_complete = true;
                end
            }
        };
        // `</think>` closes the step it ended (it is re-appended to its text); an
        // end-of-sequence marker is not carried either: nothing follows it.
        if marker.as_deref() == Some(THINK_END) {
            text.push_str(THINK_END);
        }
        // Without `keep_marker` the next step samples its marker again (upstream behaviour).
        let carried = marker.filter(|m| {
            self.keep_marker && m != THINK_END && !self.detector.eos_patterns.contains(m)
        });
        StepCandidate {
            index,
            lead: lead.to_string(),
            generated: text,
            marker: carried,
            tokens,
            completion_tokens,
            finish_reason: c.finish_reason,
            end,
        }
    }
}
