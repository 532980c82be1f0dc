//! Step scorers (reference §2.4–§2.6): a process reward model through `Backend::rewards`, one
//! batched call for every candidate of a step, each scored in context (`parent steps +
//! [candidate]`, the last step's reward); an uncertainty estimator over the candidate's own
//! tokens with the validity transform (`crate::scoring`); or an LLM critic (value mode) that
//! labels each new step `sure`, `likely` or `impossible`. A candidate that cannot be scored is
//! `None` (never a magic number) and loses to every scored one.
//!
//! PRM inputs are tail-truncated to `prm_max_tokens` (§2.5.4, [`prm_kept_from`]): the leading
//! steps that do not fit are not sent, and each score call records how many were dropped.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use ponder_core::{
    Backend, BoxFuture, Capability, GenerationRequest, Message, Prompt, RewardRequest,
    SamplingParams, StrategyError,
};
use serde::{Deserialize, Serialize};

use crate::scoring::{aggregate, uncertainty, validity, Aggregation, Uncertainty};
use crate::step::generator::StepCandidate;

/// Which step scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepScorerKind {
    /// Process reward model: reward of the candidate as the last step of its trajectory.
    #[default]
    Prm,
    /// `1 / (1 + mean top-k entropy)`.
    Entropy,
    /// `1 / (1 + mean NLL)`.
    #[serde(alias = "mean_nll")]
    Perplexity,
    /// `1 / (1 + NLL)` (length-biased).
    SequenceProb,
    /// `1 / (1 + mean PD-gap)`.
    PdGap,
    /// The backend's model judges each new step (§2.6, value mode).
    LlmCritic,
}

impl StepScorerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepScorerKind::Prm => "prm",
            StepScorerKind::Entropy => "entropy",
            StepScorerKind::Perplexity => "perplexity",
            StepScorerKind::SequenceProb => "sequence_prob",
            StepScorerKind::PdGap => "pd_gap",
            StepScorerKind::LlmCritic => "llm_critic",
        }
    }

    /// The backend capability this scorer needs beyond text generation.
    pub fn needs(self) -> Option<Capability> {
        match self {
            StepScorerKind::Prm => Some(Capability::ProcessRewards),
            StepScorerKind::LlmCritic => None,
            _ => Some(Capability::Logprobs),
        }
    }

    pub(crate) fn uncertainty(self) -> Option<Uncertainty> {
        match self {
            StepScorerKind::Prm | StepScorerKind::LlmCritic => None,
            StepScorerKind::Entropy => Some(Uncertainty::Entropy),
            StepScorerKind::Perplexity => Some(Uncertainty::Perplexity),
            StepScorerKind::SequenceProb => Some(Uncertainty::SequenceProb),
            StepScorerKind::PdGap => Some(Uncertainty::PdGap),
        }
    }
}

/// One candidate to score: the step texts of its parent trajectory, then the candidate, and
/// optional extra steps appended only for scoring (lookahead).
#[derive(Debug, Clone, Copy)]
pub struct ScoreItem<'a> {
    pub parent_steps: &'a [String],
    pub candidate: &'a StepCandidate,
    pub lookahead: &'a [String],
}

/// What one scoring call did, for the search record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreCall {
    pub scorer: &'static str,
    /// Candidates scored.
    pub items: usize,
    /// Of those, left unscored (empty step, missing data, reply without the step's row).
    pub unscored: usize,
    /// Backend reward calls made (0 or 1).
    pub reward_calls: usize,
    /// PRM prompt tokens.
    pub reward_tokens: u64,
    /// LLM critic: generation calls (samples and re-asks).
    #[serde(skip_serializing_if = "is_zero")]
    pub critic_calls: u64,
    /// LLM critic: prompt and completion tokens of those calls.
    #[serde(skip_serializing_if = "is_zero")]
    pub critic_tokens: u64,
    /// LLM critic: samples still unreadable after every re-ask (dropped, not 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub critic_parse_failures: u64,
    /// PRM: items whose input was tail-truncated to `prm_max_tokens`.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub prm_truncated: usize,
    /// PRM: per item, the leading steps not sent (0 for an item sent whole or not sent at
    /// all). Left out of the record when nothing was truncated.
    #[serde(skip_serializing_if = "all_zero")]
    pub prm_dropped_steps: Vec<usize>,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

fn is_zero_usize(x: &usize) -> bool {
    *x == 0
}

fn all_zero(x: &[usize]) -> bool {
    x.iter().all(|d| *d == 0)
}

/// Default of `prm_max_tokens`: the PRM input budget in tokens (TB, for a PRM served with
/// `max_model_len = 4096`).
pub const DEFAULT_PRM_MAX_TOKENS: u64 = 4000;

/// Tokens the PRM input spends outside the question and the steps: the chat template and the
/// PRM's system prompt (which the backend adds and the scorer cannot see). Qwen2.5-Math-PRM's
/// frame is about 40 tokens; 64 leaves a margin.
pub const PRM_FRAME_OVERHEAD_TOKENS: u64 = 64;

/// Tokens kept free below `prm_max_tokens` besides the frame (§2.5.4).
const PRM_SAFETY_TOKENS: u64 = 10;

/// A conservative token count for text the scorer cannot tokenise (no tokenizer is reachable
/// through the backend trait): UTF-8 bytes / 3, rounded up. BPE tokenizers average about four
/// bytes a token on English and math text, so this over-counts and truncation errs towards
/// sending less.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(3)
}

/// Tail truncation to the PRM context (§2.5.4): the index of the first step sent. Walking from
/// the last step backwards, each step costs `estimate_tokens(step) + 1` (its step tag); steps
/// are kept while the total stays within `max_tokens − frame_tokens − 10`. The last step is
/// always sent, even alone over the budget; the leading steps before the returned index are
/// not sent (their scores are `None`).
pub fn prm_kept_from(steps: &[String], frame_tokens: u64, max_tokens: u64) -> usize {
    let Some(last) = steps.len().checked_sub(1) else {
        return 0;
    };
    let budget = max_tokens
        .saturating_sub(frame_tokens)
        .saturating_sub(PRM_SAFETY_TOKENS);
    let mut used = estimate_tokens(&steps[last]) + 1;
    let mut first = last;
    while first > 0 {
        let cost = estimate_tokens(&steps[first - 1]) + 1;
        if used + cost > budget {
            break;
        }
        used += cost;
        first -= 1;
    }
    first
}

/// Tail-truncates a PRM request in place to `max_tokens` (§2.5.4): the frame is its question
/// plus [`PRM_FRAME_OVERHEAD_TOKENS`], then [`prm_kept_from`] decides. Returns how many leading
/// steps were dropped (give it to [`map_rewards`] with the step count from before).
pub fn truncate_prm_request(request: &mut RewardRequest, max_tokens: u64) -> usize {
    let frame = estimate_tokens(&request.question) + PRM_FRAME_OVERHEAD_TOKENS;
    let dropped = prm_kept_from(&request.steps, frame, max_tokens);
    request.steps.drain(..dropped);
    dropped
}

/// The per-step rewards of a trajectory of `total` steps whose first `dropped` were not sent:
/// `None` for those, then the PRM's rewards in order (non-finite ones `None`). `None` when the
/// reply does not have one row per step sent (§2.5.2: rejected).
pub fn map_rewards(total: usize, dropped: usize, rewards: &[f64]) -> Option<Vec<Option<f64>>> {
    if dropped > total || rewards.len() != total - dropped {
        return None;
    }
    let mut out = vec![None; dropped];
    out.extend(rewards.iter().map(|r| Some(*r).filter(|r| r.is_finite())));
    Some(out)
}

/// Settings of the LLM critic (reference §2.6, value mode).
#[derive(Debug, Clone, PartialEq)]
pub struct CriticSettings {
    /// `value` (a label per candidate) or `vote` (the best of each sibling group).
    pub method: CriticMethod,
    /// Critic samples per candidate (value) or per group (vote). Default: 3.
    pub samples: u32,
    pub temperature: f64,
    pub max_tokens: u32,
    /// Over the samples: `min`, `mean`, `max` or `sum`. Default: `min`.
    pub aggregation: Aggregation,
    /// Last trajectory steps shown (0: all). Default: 5.
    pub context_window: usize,
    /// Re-asks of a sample whose reply has no label. Default: 2.
    pub max_reask: u32,
}

/// How the critic scores (§2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriticMethod {
    /// Each candidate is labelled sure / likely / impossible (3.0 / 1.0 / 0.1); the samples
    /// are aggregated.
    #[default]
    Value,
    /// The critic sees the candidates of one parent together and names the best; a
    /// candidate's score is the number of samples that chose it.
    Vote,
}

/// The marker the critic prompt asks for.
pub const CRITIC_MARKER: &str = "JUDGEMENT";

/// The marker the vote prompt asks for.
pub const VOTE_MARKER: &str = "BEST CANDIDATE";

/// Reads a vote reply for `n` candidates: the last in-range value of a `BEST CANDIDATE`
/// marker; else the last in-range number after "choice is", "answer is" or "candidate is";
/// else the last standalone number in range. 1-based; `None` when there is none.
pub fn parse_vote(reply: &str, n: usize) -> Option<usize> {
    let top = n as f64;
    if let Some(v) = crate::judge::parse_score(reply, VOTE_MARKER, 1.0, top) {
        if v.fract() == 0.0 {
            return Some(v as usize);
        }
    }
    let text = reply.to_lowercase();
    let number_after = |rest: &str| -> Option<usize> {
        let rest = rest.trim_start_matches(|c: char| c.is_whitespace() || "*#:([".contains(c));
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<usize>().ok().filter(|k| (1..=n).contains(k))
    };
    let mut phrase = None;
    for lead in ["choice is", "answer is", "candidate is"] {
        for (pos, _) in text.match_indices(lead) {
            if let Some(k) = number_after(&text[pos + lead.len()..]) {
                if phrase.is_none_or(|(p, _)| pos > p) {
                    phrase = Some((pos, k));
                }
            }
        }
    }
    if let Some((_, k)) = phrase {
        return Some(k);
    }
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_digit()))
        .filter_map(|w| w.parse::<usize>().ok())
        .rfind(|k| (1..=n).contains(k))
}

/// The critic's question about the candidate next steps of one trajectory (§2.6 vote prompt).
fn vote_prompt(problem: &str, context: &[String], steps: &[String]) -> String {
    let trajectory = if context.is_empty() {
        "(no steps yet)".to_string()
    } else {
        context.join("\n")
    };
    let listed: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {}", i + 1, s.replace('\n', " ")))
        .collect();
    format!(
        "Problem:\n{problem}\n\nSolution steps so far:\n{trajectory}\n\n{} candidate next \
         steps:\n{}\n\nAnalyse the candidates and choose the one most likely to be correct. \
         End your reply with the line `{VOTE_MARKER}: <number>`.",
        steps.len(),
        listed.join("\n")
    )
}

/// Label words and their values (`value_map` with the upstream synonyms).
const LABELS: &[(&str, f64)] = &[
    ("sure", 3.0),
    ("correct", 3.0),
    ("definitely", 3.0),
    ("likely", 1.0),
    ("maybe", 1.0),
    ("impossible", 0.1),
    ("unlikely", 0.1),
    ("incorrect", 0.1),
    ("wrong", 0.1),
];

fn label_value(word: &str) -> Option<f64> {
    LABELS.iter().find(|(l, _)| *l == word).map(|(_, v)| *v)
}

/// Reads a critic reply (robust-marker rules): case-insensitive; after a `JUDGEMENT`
/// marker, the first label word is its value, and the last marker with a label wins; with no
/// such marker, the last label word of the reply. `None` when there is no label.
pub fn parse_label(reply: &str) -> Option<f64> {
    let text: String = reply
        .chars()
        .filter(|c| !matches!(c, '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{feff}'))
        .collect::<String>()
        .to_lowercase();
    // Words with their byte offsets.
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphabetic(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, &text[s..]));
    }
    let is_marker = |w: &str| w == "judgement" || w == "judgment";
    let mut from_marker = None;
    for (k, (_, w)) in words.iter().enumerate() {
        if is_marker(w) {
            // The value follows the marker, before the next marker.
            let value = words[k + 1..]
                .iter()
                .take_while(|(_, w)| !is_marker(w))
                .find_map(|(_, w)| label_value(w));
            if value.is_some() {
                from_marker = value;
            }
        }
    }
    from_marker.or_else(|| words.iter().rev().find_map(|(_, w)| label_value(w)))
}

/// The critic's question about one new step (structure of §2.6's value prompt).
fn critic_prompt(problem: &str, context: &[String], step: &str) -> String {
    let trajectory = if context.is_empty() {
        "(no steps yet)".to_string()
    } else {
        context.join("\n")
    };
    format!(
        "Problem:\n{problem}\n\nSolution steps so far:\n{trajectory}\n\nNew step:\n{step}\n\n\
         Is the new step correct? Answer with one label: sure (the step is right), likely \
         (plausible, but incomplete or not checkable) or impossible (the step has a mistake). \
         End your reply with the line `{CRITIC_MARKER}: <label>`."
    )
}

const REASK: &str = "Your reply had no label. Reply with one line only: \
`JUDGEMENT: sure`, `JUDGEMENT: likely` or `JUDGEMENT: impossible`.";

/// A step scorer for one request.
#[derive(Debug, Clone)]
pub struct StepScorer {
    pub kind: StepScorerKind,
    /// The question the PRM and the critic are shown.
    pub question: String,
    /// Settings of the `llm_critic` scorer.
    pub critic: Option<CriticSettings>,
    /// Base seed of critic calls.
    pub seed: u64,
    /// Most critic calls in flight.
    pub parallelism: usize,
    /// PRM input budget in tokens; longer trajectories lose their leading steps
    /// ([`prm_kept_from`]). Default: 4000.
    pub prm_max_tokens: u64,
}

/// A critic's score of one step and what it cost.
type Judged = Result<(Option<f64>, CriticTally), StrategyError>;

/// A group's votes (1-based candidate per sample) and what they cost.
type Voted = Result<(Vec<Option<usize>>, CriticTally), StrategyError>;

/// What one critic judgement cost.
#[derive(Debug, Clone, Copy, Default)]
struct CriticTally {
    calls: u64,
    tokens: u64,
    failures: u64,
}

impl StepScorer {
    /// Scores `items`, all in one backend call for a PRM.
    pub async fn score(
        &self,
        backend: &Arc<dyn Backend>,
        items: &[ScoreItem<'_>],
    ) -> Result<(Vec<Option<f64>>, ScoreCall), StrategyError> {
        let mut scores = vec![None; items.len()];
        let mut call = ScoreCall {
            scorer: self.kind.as_str(),
            items: items.len(),
            unscored: 0,
            reward_calls: 0,
            reward_tokens: 0,
            critic_calls: 0,
            critic_tokens: 0,
            critic_parse_failures: 0,
            prm_truncated: 0,
            prm_dropped_steps: vec![0; items.len()],
        };
        if self.kind == StepScorerKind::LlmCritic {
            self.critic_scores(backend, items, &mut scores, &mut call)
                .await?;
            call.unscored = scores.iter().filter(|s| s.is_none()).count();
            return Ok((scores, call));
        }
        match self.kind.uncertainty() {
            Some(kind) => {
                for (slot, item) in scores.iter_mut().zip(items) {
                    *slot = item
                        .candidate
                        .tokens
                        .as_deref()
                        .and_then(|t| uncertainty(kind, t))
                        .map(validity);
                }
            }
            None => {
                // Empty candidates are not sent; they stay unscored. Each input is
                // tail-truncated to the PRM context.
                let mut sent = Vec::new();
                let mut requests = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let step = item.candidate.step_text();
                    if step.is_empty() {
                        continue;
                    }
                    let mut steps: Vec<String> = item
                        .parent_steps
                        .iter()
                        .filter(|s| !s.is_empty())
                        .cloned()
                        .collect();
                    steps.push(step);
                    steps.extend(item.lookahead.iter().filter(|s| !s.is_empty()).cloned());
                    let total = steps.len();
                    let mut request = RewardRequest {
                        question: self.question.clone(),
                        steps,
                    };
                    let dropped = truncate_prm_request(&mut request, self.prm_max_tokens);
                    if dropped > 0 {
                        call.prm_truncated += 1;
                        call.prm_dropped_steps[i] = dropped;
                    }
                    sent.push((i, total, dropped));
                    requests.push(request);
                }
                if !requests.is_empty() {
                    let replies = backend.rewards(requests).await?;
                    call.reward_calls = 1;
                    for ((i, total, dropped), reply) in sent.into_iter().zip(replies) {
                        call.reward_tokens += reply.prompt_tokens;
                        // A reply without one row per step sent is rejected (§2.5.2). The
                        // candidate (or its lookahead) is the last step, always sent.
                        scores[i] = map_rewards(total, dropped, &reply.step_rewards)
                            .and_then(|r| r.last().copied().flatten());
                    }
                }
            }
        }
        call.unscored = scores.iter().filter(|s| s.is_none()).count();
        Ok((scores, call))
    }
}

impl StepScorer {
    /// Value-mode critic scores of `items`: the candidates of a step are judged concurrently;
    /// a candidate whose context and text equal an earlier one's reuses its score.
    async fn critic_scores(
        &self,
        backend: &Arc<dyn Backend>,
        items: &[ScoreItem<'_>],
        scores: &mut [Option<f64>],
        call: &mut ScoreCall,
    ) -> Result<(), StrategyError> {
        let Some(settings) = &self.critic else {
            return Ok(());
        };
        if settings.method == CriticMethod::Vote {
            return self
                .vote_scores(backend, settings, items, scores, call)
                .await;
        }
        // Unique (context, step) pairs, in order.
        let mut keys: Vec<(Vec<String>, String)> = Vec::new();
        let mut of_item: Vec<Option<usize>> = Vec::with_capacity(items.len());
        let mut index: HashMap<(Vec<String>, String), usize> = HashMap::new();
        for item in items {
            let step = item.candidate.step_text();
            if step.is_empty() {
                of_item.push(None);
                continue;
            }
            let context: Vec<String> = match settings.context_window {
                0 => item.parent_steps.to_vec(),
                w => item.parent_steps[item.parent_steps.len().saturating_sub(w)..].to_vec(),
            };
            let key = (context, step);
            let k = *index.entry(key.clone()).or_insert_with(|| {
                keys.push(key);
                keys.len() - 1
            });
            of_item.push(Some(k));
        }
        let calls: Vec<BoxFuture<'_, Judged>> = keys
            .iter()
            .map(|(context, step)| {
                let seed = ponder_core::SeededRng::derive(
                    self.seed,
                    &format!("critic/{}/{}", context.join("\n"), step),
                )
                .next_u64();
                Box::pin(self.judge(backend, settings, context, step, seed)) as BoxFuture<'_, _>
            })
            .collect();
        let judged: Vec<(Option<f64>, CriticTally)> = stream::iter(calls)
            .buffered(self.parallelism.max(1))
            .try_collect()
            .await?;
        for (slot, k) in scores.iter_mut().zip(&of_item) {
            *slot = k.and_then(|k| judged[k].0);
        }
        for (_, t) in &judged {
            call.critic_calls += t.calls;
            call.critic_tokens += t.tokens;
            call.critic_parse_failures += t.failures;
        }
        Ok(())
    }

    /// Vote-mode scores: candidates are grouped by their parent trajectory; each group gets
    /// `samples` votes (unreadable replies re-asked, then dropped); a candidate's score is its
    /// votes. A group whose every sample fails stays unscored.
    async fn vote_scores(
        &self,
        backend: &Arc<dyn Backend>,
        settings: &CriticSettings,
        items: &[ScoreItem<'_>],
        scores: &mut [Option<f64>],
        call: &mut ScoreCall,
    ) -> Result<(), StrategyError> {
        // Groups of non-empty candidates with the same parent steps, in order.
        let mut groups: Vec<(&[String], Vec<usize>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if item.candidate.step_text().is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(p, _)| *p == item.parent_steps) {
                Some((_, members)) => members.push(i),
                None => groups.push((item.parent_steps, vec![i])),
            }
        }
        let calls: Vec<BoxFuture<'_, Voted>> = groups
            .iter()
            .map(|(parent, members)| {
                let context: Vec<String> = match settings.context_window {
                    0 => parent.to_vec(),
                    w => parent[parent.len().saturating_sub(w)..].to_vec(),
                };
                let steps: Vec<String> = members
                    .iter()
                    .map(|&i| items[i].candidate.step_text())
                    .collect();
                let seed = ponder_core::SeededRng::derive(
                    self.seed,
                    &format!("critic-vote/{}/{}", context.join("\n"), steps.join("\n")),
                )
                .next_u64();
                Box::pin(async move {
                    let prompt = vote_prompt(&self.question, &context, &steps);
                    let n = steps.len();
                    self.sample(backend, settings, prompt, seed, move |r| parse_vote(r, n))
                        .await
                }) as BoxFuture<'_, _>
            })
            .collect();
        let voted: Vec<(Vec<Option<usize>>, CriticTally)> = stream::iter(calls)
            .buffered(self.parallelism.max(1))
            .try_collect()
            .await?;
        for ((_, members), (votes, tally)) in groups.iter().zip(&voted) {
            call.critic_calls += tally.calls;
            call.critic_tokens += tally.tokens;
            call.critic_parse_failures += tally.failures;
            if votes.iter().all(Option::is_none) {
                continue;
            }
            for (k, &i) in members.iter().enumerate() {
                let count = votes.iter().filter(|v| **v == Some(k + 1)).count();
                scores[i] = Some(count as f64);
            }
        }
        Ok(())
    }

    /// `samples` replies to `prompt` in one call, each re-asked up to `max_reask` times until
    /// `parse` reads it; unreadable samples are `None`.
    async fn sample<T>(
        &self,
        backend: &Arc<dyn Backend>,
        settings: &CriticSettings,
        prompt: String,
        seed: u64,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<(Vec<Option<T>>, CriticTally), StrategyError> {
        let mut tally = CriticTally::default();
        let params = |n: u32, seed: u64| SamplingParams {
            temperature: Some(settings.temperature),
            max_tokens: Some(settings.max_tokens),
            n,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let reask = match settings.method {
            CriticMethod::Value => REASK.to_string(),
            CriticMethod::Vote => format!(
                "Your reply named no candidate. Reply with one line only: `{VOTE_MARKER}: <number>`."
            ),
        };
        let first = backend
            .generate(GenerationRequest::new(
                Prompt::user(prompt.clone()),
                params(settings.samples, seed),
            ))
            .await?;
        tally.calls += 1;
        tally.tokens += first.usage.prompt_tokens + first.usage.completion_tokens;
        let mut values = Vec::new();
        for (i, c) in first.completions.iter().enumerate() {
            let mut value = parse(&c.text);
            let mut reply = c.text.clone();
            let mut attempt = 0;
            while value.is_none() && attempt < settings.max_reask {
                attempt += 1;
                let messages = vec![
                    Message::user(prompt.clone()),
                    Message::assistant(reply.clone()),
                    Message::user(reask.clone()),
                ];
                let again = backend
                    .generate(GenerationRequest::new(
                        Prompt::Chat {
                            messages,
                            continue_final_message: false,
                        },
                        params(
                            1,
                            seed.wrapping_add(1000 * (i as u64 + 1) + u64::from(attempt)),
                        ),
                    ))
                    .await?;
                tally.calls += 1;
                tally.tokens += again.usage.prompt_tokens + again.usage.completion_tokens;
                reply = again
                    .completions
                    .into_iter()
                    .next()
                    .map(|c| c.text)
                    .unwrap_or_default();
                value = parse(&reply);
            }
            if value.is_none() {
                tally.failures += 1;
            }
            values.push(value);
        }
        Ok((values, tally))
    }

    /// Judges one step: `samples` replies in one call, each re-asked up to `max_reask` times
    /// when it has no label; unreadable samples are dropped; no readable sample → `None`.
    async fn judge(
        &self,
        backend: &Arc<dyn Backend>,
        settings: &CriticSettings,
        context: &[String],
        step: &str,
        seed: u64,
    ) -> Result<(Option<f64>, CriticTally), StrategyError> {
        let prompt = critic_prompt(&self.question, context, step);
        let (values, tally) = self
            .sample(backend, settings, prompt, seed, parse_label)
            .await?;
        Ok((aggregate(&values, settings.aggregation, None), tally))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use ponder_core::{BackendError, Capabilities, CompletionStream, FinishReason, RewardResponse};

    use crate::step::detector::StepEnd;

    #[test]
    fn token_estimates_round_utf8_bytes_over_three_up() {
        let check = |text: &str, expected: u64| assert_eq!(estimate_tokens(text), expected);
        check("", 0);
        check("ab", 1);
        check("abc", 1);
        check("abcd", 2);
        // "é" is two bytes: 6 bytes → 2.
        check("ééé", 2);
    }

    /// `n` distinct steps of `bytes` ASCII bytes (30 bytes: 10 tokens, 11 with the step tag).
    fn steps(n: usize, bytes: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{i}{}", "x".repeat(bytes - 1)))
            .collect()
    }

    #[test]
    fn prm_truncation_keeps_the_tail_that_fits() {
        // Frame 65 (question "Q?" = 1 token + 64 of template): budget 100 − 65 − 10 = 25.
        // From the end: 11, 22 (fits), 33 (> 25): steps 2 and 3 are sent, 0 and 1 dropped.
        assert_eq!(prm_kept_from(&steps(4, 30), 65, 100), 2);
        // Budget 111 − 65 − 10 = 36: 11, 22, 33 fit, 44 does not: one dropped.
        assert_eq!(prm_kept_from(&steps(4, 30), 65, 111), 1);
        // Budget 97 − 65 − 10 = 22: two steps (22) fit exactly, a third (33) does not.
        assert_eq!(prm_kept_from(&steps(4, 30), 65, 97), 2);
        // The default budget sends everything.
        assert_eq!(prm_kept_from(&steps(4, 30), 65, DEFAULT_PRM_MAX_TOKENS), 0);
        // The last step alone (90 bytes = 30 tokens + 1 > 25) is still sent; the rest is not.
        let mut long_last = steps(3, 30);
        long_last.push("y".repeat(90));
        assert_eq!(prm_kept_from(&long_last, 65, 100), 3);
        // A frame larger than the budget leaves only the last step.
        assert_eq!(prm_kept_from(&steps(2, 3), 5000, 100), 1);
        assert_eq!(prm_kept_from(&[], 65, 100), 0);
    }

    #[test]
    fn returned_rewards_map_back_to_their_step_indices() {
        assert_eq!(
            map_rewards(4, 2, &[0.3, 0.9]),
            Some(vec![None, None, Some(0.3), Some(0.9)])
        );
        assert_eq!(
            map_rewards(2, 0, &[0.5, f64::NAN]),
            Some(vec![Some(0.5), None])
        );
        // A reply without one row per step sent is rejected.
        assert_eq!(map_rewards(4, 2, &[0.3]), None);
        assert_eq!(map_rewards(1, 2, &[]), None);
    }

    /// A PRM whose reward of the k-th step sent is (k + 1) / 10.
    #[derive(Default)]
    struct PositionPrm {
        requests: Mutex<Vec<RewardRequest>>,
    }

    impl Backend for PositionPrm {
        fn name(&self) -> &str {
            "position-prm"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: None,
                multiple_samples: true,
                prefix_continuation: true,
                process_rewards: true,
                streaming: true,
                max_stop_strings: None,
            }
        }
        fn stream(
            &self,
            _request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, ponder_core::BackendError>> {
            Box::pin(async move {
                Err(BackendError::Unsupported {
                    backend: "position-prm".into(),
                    capability: Capability::Streaming,
                })
            })
        }
        fn rewards(
            &self,
            requests: Vec<RewardRequest>,
        ) -> BoxFuture<'_, Result<Vec<ponder_core::RewardResponse>, BackendError>> {
            let replies = requests
                .iter()
                .map(|r| RewardResponse {
                    step_rewards: (0..r.steps.len()).map(|k| (k + 1) as f64 / 10.0).collect(),
                    prompt_tokens: 1,
                })
                .collect();
            self.requests.lock().expect("lock").extend(requests);
            Box::pin(async move { Ok(replies) })
        }
    }

    fn candidate(text: &str) -> StepCandidate {
        StepCandidate {
            index: 0,
            lead: String::new(),
            generated: text.to_string(),
            marker: None,
            tokens: None,
            completion_tokens: 1,
            finish_reason: FinishReason::Stop,
            end: StepEnd {
                is_complete: true,
                is_trajectory_complete: false,
                reason: None,
            },
        }
    }

    fn prm_scorer(max_tokens: u64) -> StepScorer {
        StepScorer {
            kind: StepScorerKind::Prm,
            question: "Q?".into(),
            critic: None,
            seed: 0,
            parallelism: 1,
            prm_max_tokens: max_tokens,
        }
    }

    #[tokio::test]
    async fn a_long_trajectory_sends_only_its_tail_and_records_the_dropped_steps() {
        let prm = Arc::new(PositionPrm::default());
        let backend: Arc<dyn Backend> = prm.clone();
        let parent = steps(3, 30);
        let long = candidate(&"c".repeat(30));
        let short = candidate("d");
        let items = [
            ScoreItem {
                parent_steps: &parent,
                candidate: &long,
                lookahead: &[],
            },
            ScoreItem {
                parent_steps: &[],
                candidate: &short,
                lookahead: &[],
            },
        ];
        // Budget 25 (see above): of the 4 steps of the first item, the last two are sent.
        let (scores, call) = prm_scorer(100)
            .score(&backend, &items)
            .await
            .expect("scores");
        let sent = prm.requests.lock().expect("lock").clone();
        assert_eq!(sent[0].steps, vec![parent[2].clone(), "c".repeat(30)]);
        assert_eq!(sent[1].steps, vec!["d".to_string()]);
        // The candidate is the second step sent (0.2), not the fourth (0.4).
        assert_eq!(scores, vec![Some(0.2), Some(0.1)]);
        assert_eq!(call.prm_truncated, 1);
        assert_eq!(call.prm_dropped_steps, vec![2, 0]);
        let json = serde_json::to_value(&call).expect("json");
        assert_eq!(json["prm_dropped_steps"], serde_json::json!([2, 0]));
        // Untruncated, nothing extra is recorded.
        let (scores, call) = prm_scorer(DEFAULT_PRM_MAX_TOKENS)
            .score(&backend, &items[..1])
            .await
            .expect("scores");
        assert_eq!(scores, vec![Some(0.4)]);
        let json = serde_json::to_value(&call).expect("json");
        assert!(json.get("prm_dropped_steps").is_none(), "{json}");
        assert!(json.get("prm_truncated").is_none(), "{json}");
    }

    #[tokio::test]
    async fn a_last_step_longer_than_the_budget_is_still_sent_alone() {
        let prm = Arc::new(PositionPrm::default());
        let backend: Arc<dyn Backend> = prm.clone();
        let parent = steps(2, 30);
        // 300 bytes = 100 tokens + 1, over the budget of 25 on its own.
        let huge = candidate(&"z".repeat(300));
        let items = [ScoreItem {
            parent_steps: &parent,
            candidate: &huge,
            lookahead: &[],
        }];
        let (scores, call) = prm_scorer(100)
            .score(&backend, &items)
            .await
            .expect("scores");
        let sent = prm.requests.lock().expect("lock").clone();
        assert_eq!(sent[0].steps, vec!["z".repeat(300)]);
        assert_eq!(scores, vec![Some(0.1)]);
        assert_eq!(call.prm_dropped_steps, vec![2]);
    }

    #[test]
    fn votes_follow_the_marker_then_phrases_then_the_last_number() {
        assert_eq!(parse_vote("BEST CANDIDATE: 2", 3), Some(2));
        assert_eq!(
            parse_vote("**Best candidate** - 3\nthough 1 was close", 3),
            Some(3)
        );
        // Out of range values are not matches; the earlier valid one is not a marker value.
        assert_eq!(parse_vote("BEST CANDIDATE: 7", 3), None);
        assert_eq!(
            parse_vote("I think the best choice is 2, not 1.", 3),
            Some(2)
        );
        assert_eq!(parse_vote("Between 1 and 3 I pick 3", 3), Some(3));
        assert_eq!(parse_vote("none of them", 3), None);
    }

    #[test]
    fn critic_labels_follow_the_marker_then_the_last_word() {
        let check = |reply: &str, expected: Option<f64>| {
            assert_eq!(parse_label(reply), expected, "{reply:?}");
        };
        check("JUDGEMENT: sure", Some(3.0));
        check("It is likely fine.\n**Judgement**: *impossible*", Some(0.1));
        // The marker's value wins over label words elsewhere; the last marker with a label.
        check("Wrong? No.\nJUDGEMENT: likely", Some(1.0));
        check(
            "JUDGEMENT: sure\nOn reflection... JUDGMENT - incorrect",
            Some(0.1),
        );
        // "incorrect" is not "correct"; "unlikely" is not "likely".
        check("This is incorrect.", Some(0.1));
        check("That seems unlikely", Some(0.1));
        // Without a marker: the last label word.
        check("Maybe. Actually definitely", Some(3.0));
        check("JUDGEMENT: unsure", None);
        check("no label here", None);
        check("", None);
    }
}
