//! What the simulated model writes: a draft reply for a prompt (a task solution, a judge's
//! verdict or a generic reply), then the completion actually returned under `max_tokens`,
//! `min_tokens` and `stop`, with per-token log-probabilities.

use std::ops::Range;

use ponder_core::{stable_hash, SeededRng};

use crate::config::StepAccuracy;
use crate::marker::{self, Marker, MarkerKind};
use crate::math;
use crate::tokenizer;
use crate::wire::{ChatMessage, PromptInput};

/// The prompt as the simulated model reads it.
#[derive(Debug, Clone)]
pub(crate) struct PromptView {
    /// The whole prompt as the model sees it (chat rendered with a ChatML-like template): what
    /// prompt tokens, the prefix cache and the seeds are computed from.
    pub rendered: String,
    /// The instructions and question: system and user messages (chat) or the raw prompt.
    pub context: String,
    /// The last user message (chat), where a question is looked for first.
    pub last_user: Option<String>,
    /// The assistant message being continued (chat prefill).
    pub prefill: Option<String>,
    /// Whether this is a raw prompt (`/v1/completions`): text after the question in it is
    /// continued.
    pub raw: bool,
}

impl PromptView {
    pub fn new(prompt: &PromptInput) -> Self {
        match prompt {
            PromptInput::Text(text) => PromptView {
                rendered: text.clone(),
                context: text.clone(),
                last_user: None,
                prefill: None,
                raw: true,
            },
            PromptInput::Chat {
                messages,
                prefill,
                add_generation_prompt,
            } => {
                let rendered = render_chat(messages, *prefill, *add_generation_prompt);
                let context = messages
                    .iter()
                    .filter(|m| m.role != "assistant")
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n");
                let last_user = messages
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .map(|m| m.content.clone());
                let prefill = prefill
                    .then(|| messages.last().map(|m| m.content.clone()))
                    .flatten();
                PromptView {
                    rendered,
                    context,
                    last_user,
                    prefill,
                    raw: false,
                }
            }
        }
    }
}

/// Renders chat messages with a ChatML-like template:
/// `<|im_start|>{role}\n{content}<|im_end|>\n` per message; a prefilled last message is left
/// open; the generation prompt is `<|im_start|>assistant\n`.
pub(crate) fn render_chat(
    messages: &[ChatMessage],
    prefill: bool,
    add_generation_prompt: bool,
) -> String {
    let mut out = String::new();
    for (i, m) in messages.iter().enumerate() {
        out.push_str("<|im_start|>");
        out.push_str(&m.role);
        out.push('\n');
        out.push_str(&m.content);
        if !(prefill && i + 1 == messages.len()) {
            out.push_str("<|im_end|>\n");
        }
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

/// A step the model got wrong, located in the draft text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrongSpan {
    /// The whole step line.
    pub line: Range<usize>,
    /// The wrong number in it (without its leading space).
    pub number: Range<usize>,
    /// The number that would have been right.
    pub correct: String,
}

/// The reply the model would write with no limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Draft {
    pub text: String,
    /// Wrong steps, in text order.
    pub wrong: Vec<WrongSpan>,
    /// Whether the model is sure of its text (task solutions) or not (generic prose); sets the
    /// range of sampled-token logprobs.
    pub confident: bool,
}

/// What the model makes of a prompt, decided once per request.
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    marker: Option<Marker>,
    problem: Option<ponder_task::Problem>,
    /// Byte offset after the question in `view.context`.
    question_end: Option<usize>,
    /// Reply as a judge or selector (prose and a marker value) rather than solving.
    judge: bool,
    /// For a judge shown a solution: whether that solution is right.
    verdict: Option<bool>,
}

/// Reads the prompt: the marker it asks for ([`marker::find_marker`]) and the task question in
/// it ([`ponder_task::parse_question`], in the last user message first). A prompt that asks for
/// a score or an index marker, or for a word marker after showing solution steps, gets a
/// judge's reply; another prompt with a task question gets a solution; anything else prose.
pub(crate) fn analyse(view: &PromptView) -> Analysis {
    let marker = marker::find_marker(&view.context);
    let problem = view
        .last_user
        .as_deref()
        .and_then(ponder_task::parse_question)
        .or_else(|| ponder_task::parse_question(&view.context));
    let question_end = problem
        .as_ref()
        .and_then(|p| math::question_end(&view.context, p));
    let shown = question_end.map_or("", |end| &view.context[end..]);
    let shows_steps = problem.is_some() && !view.raw && math::has_step_lines(shown);
    let judge = match marker.as_ref().map(|m| m.kind) {
        Some(MarkerKind::Score | MarkerKind::Index) => true,
        Some(MarkerKind::Word) => shows_steps || problem.is_none(),
        Some(MarkerKind::Answer) => problem.is_none(),
        None => false,
    };
    let verdict = match (&problem, judge && shows_steps) {
        (Some(p), true) => Some(math::solution_is_right(p, shown)),
        _ => None,
    };
    Analysis {
        marker,
        problem,
        question_end,
        judge,
        verdict,
    }
}

/// Drafts one reply to `view` (see [`analyse`] for which kind).
pub(crate) fn draft(
    view: &PromptView,
    analysis: &Analysis,
    accuracy: &StepAccuracy,
    rng: &mut SeededRng,
) -> Draft {
    let problem = match (&analysis.problem, analysis.judge) {
        (Some(p), false) => p,
        _ => {
            return generic_reply(
                rng,
                analysis.marker.as_ref(),
                analysis.problem.as_ref(),
                analysis.verdict,
                &view.context,
            )
        }
    };
    let shown = analysis.question_end.map_or("", |end| &view.context[end..]);
    let prefix: &str = match (&view.prefill, view.raw) {
        (Some(p), _) => p,
        (None, true) => shown,
        (None, false) => "",
    };
    let answer_marker = analysis
        .marker
        .as_ref()
        .filter(|m| m.kind == MarkerKind::Answer)
        .map(|m| m.text.as_str());
    math::solve(problem, prefix, accuracy, answer_marker, rng)
}

const SENTENCES: [&str; 24] = [
    "Let me think about this carefully.",
    "The question asks for a short, clear answer.",
    "There are a few points worth considering here.",
    "First, it helps to restate the problem in simpler terms.",
    "Second, each part can be checked on its own.",
    "The details depend on the context that was given.",
    "Nothing in the prompt contradicts this reading.",
    "A careful reader would check each claim before accepting it.",
    "Overall, the reasoning holds together.",
    "This is a simulated reply from ponder-sim.",
    "Some of the steps could be explained more clearly.",
    "The main idea is simple once it is written down.",
    "It is worth comparing the options side by side.",
    "Each option has its own strengths and weaknesses.",
    "The evidence points in one direction.",
    "In summary, the approach is sound.",
    "A quick check confirms the result.",
    "One could also look at it from the other side.",
    "The numbers given are consistent with each other.",
    "Small mistakes early on tend to carry through to the end.",
    "The answer follows from the facts stated above.",
    "More context would make a firmer judgement possible.",
    "The wording of the question matters here.",
    "That settles the main point.",
];

/// Appends 2–5 (or `count`) sentences of prose to `out`.
fn push_sentences(out: &mut String, rng: &mut SeededRng, count: usize) {
    for i in 0..count {
        if i > 0 || !out.is_empty() && !out.ends_with(['\n', ' ']) {
            out.push(' ');
        }
        out.push_str(SENTENCES[rng.below(SENTENCES.len() as u64) as usize]);
    }
}

/// A few sentences of prose, ending with the marker line the prompt asks for, if any.
/// `problem` is the task question in the prompt and `verdict`, when the prompt shows a
/// solution to it, whether that solution is right: scores (right 7–10, wrong 1–4) and word
/// verdicts (`correct`/`incorrect`) follow it; a selection picks, with probability 0.85, an
/// item holding the right boxed answer when there is one.
fn generic_reply(
    rng: &mut SeededRng,
    marker: Option<&Marker>,
    problem: Option<&ponder_task::Problem>,
    verdict: Option<bool>,
    context: &str,
) -> Draft {
    if let Some(text) = marker.and_then(|m| crate::agent::content_reply(m, rng)) {
        return Draft {
            text,
            wrong: Vec::new(),
            confident: false,
        };
    }
    let mut text = String::new();
    let count = 2 + rng.below(4) as usize;
    push_sentences(&mut text, rng, count);
    if let Some(marker) = marker {
        let value = marker_value(marker, problem, verdict, context, rng);
        text.push_str("\n\n");
        text.push_str(&marker.text);
        text.push_str(": ");
        text.push_str(&value);
    }
    Draft {
        text,
        wrong: Vec::new(),
        confident: false,
    }
}

const WORDS: [&str; 3] = ["yes", "no", "done"];

fn marker_value(
    marker: &Marker,
    problem: Option<&ponder_task::Problem>,
    verdict: Option<bool>,
    context: &str,
    rng: &mut SeededRng,
) -> String {
    match marker.kind {
        MarkerKind::Score => match verdict {
            Some(true) => rng.range_inclusive(7, 10),
            Some(false) => rng.range_inclusive(1, 4),
            None => rng.range_inclusive(1, 10),
        }
        .to_string(),
        MarkerKind::Index => {
            let k = crate::agent::candidate_count(context)
                .unwrap_or_else(|| marker::count_numbered_items(context))
                .max(1);
            let right = problem.map_or_else(Vec::new, |p| math::items_with_answer(context, p, k));
            let pick = if !right.is_empty() && rng.chance(0.85) {
                right[rng.below(right.len() as u64) as usize]
            } else {
                1 + rng.below(k as u64) as usize
            };
            pick.to_string()
        }
        MarkerKind::Answer => rng.range_inclusive(1, 100).to_string(),
        MarkerKind::Word => match verdict {
            Some(true) => "correct".to_string(),
            Some(false) => "incorrect".to_string(),
            None => WORDS[rng.below(WORDS.len() as u64) as usize].to_string(),
        },
    }
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// How sure the model was of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenClass {
    /// Ordinary text.
    Plain,
    /// Part of a wrong step, not the wrong number.
    WrongContext,
    /// A token of a wrong number; the right token is `corrections[i]`.
    WrongNumber(u32),
}

/// The log-probability of one sampled token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TokenScore {
    pub logprob: f64,
    pub class: TokenClass,
}

/// One choice of a response, fully decided before anything is sent.
#[derive(Debug, Clone)]
pub(crate) struct ChoicePlan {
    /// The text returned (stop strings and what follows them removed).
    pub text: String,
    /// End offsets of the returned tokens in `text`; a token starts where the previous ends.
    pub ends: Vec<u32>,
    /// Completion tokens generated, including tokens of a matched stop string that are not
    /// returned.
    pub total_tokens: usize,
    pub finish: Finish,
    /// Per returned token, when logprobs were asked for.
    pub scores: Vec<TokenScore>,
    /// Right tokens for `TokenClass::WrongNumber`.
    pub corrections: Vec<String>,
    /// Seed of this choice's top-logprob alternatives.
    pub alt_seed: u64,
}

impl ChoicePlan {
    /// Returned token `i`.
    pub fn token(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// Byte offset of returned token `i` in the text.
    pub fn offset(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }
}

/// Limits applied to a draft.
#[derive(Debug, Clone)]
pub(crate) struct Limits<'a> {
    pub max_tokens: usize,
    pub min_tokens: usize,
    pub stop: &'a [String],
    /// Keep a matched stop string in the returned text.
    pub include_stop: bool,
    pub logprobs: bool,
}

/// Turns a draft into the completion returned under `limits`:
/// * a draft shorter than `min_tokens` goes on with prose up to exactly `min_tokens` tokens
///   (the end-of-text token is suppressed until then);
/// * longer than `max_tokens`, it is cut there (finish reason `length`);
/// * a stop string is detected once the token completing it is generated, and only from token
///   `min_tokens` on; the text stops before it (finish reason `stop`); its tokens count as
///   generated but are not returned (unless `include_stop`: then the text ends with it).
pub(crate) fn plan(mut draft: Draft, limits: &Limits<'_>, seed: u64) -> ChoicePlan {
    let mut rng = SeededRng::derive(seed, "plan");
    let mut ends = token_ends(&draft.text);
    if ends.len() < limits.min_tokens {
        // Prose until at least `min_tokens`, then cut there.
        let mut text = std::mem::take(&mut draft.text);
        while ends.len() < limits.min_tokens {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            push_sentences(&mut text, &mut rng, 4);
            ends = token_ends(&text);
        }
        ends.truncate(limits.min_tokens);
        text.truncate(ends.last().map_or(0, |&e| e as usize));
        draft.text = text;
    }
    let natural = ends.len();
    let limit = natural.min(limits.max_tokens);
    let mut finish = if natural <= limits.max_tokens {
        Finish::Stop
    } else {
        Finish::Length
    };
    let limit_end = if limit == 0 {
        0
    } else {
        ends[limit - 1] as usize
    };

    // Stop strings: the match detected at the earliest token wins; then the earliest start.
    let mut best: Option<(usize, usize, usize)> = None;
    let first_checked = limits.min_tokens.max(1);
    for stop in limits.stop {
        for (start, _) in draft.text[..limit_end].match_indices(stop.as_str()) {
            let end = start + stop.len();
            let token = ends.partition_point(|&e| (e as usize) < end) + 1;
            if token < first_checked {
                continue;
            }
            if best.is_none_or(|(t, s, _)| (token, start) < (t, s)) {
                best = Some((token, start, end));
            }
            break;
        }
    }
    let (visible_len, total_tokens) = match best {
        Some((token, start, end)) => {
            finish = Finish::Stop;
            (if limits.include_stop { end } else { start }, token)
        }
        None => (limit_end, limit),
    };
    let mut visible: Vec<u32> = Vec::with_capacity(total_tokens);
    for &e in &ends {
        let start = visible.last().copied().unwrap_or(0) as usize;
        if start >= visible_len {
            break;
        }
        visible.push((e as usize).min(visible_len) as u32);
    }
    draft.text.truncate(visible_len);

    let mut plan = ChoicePlan {
        text: draft.text,
        ends: visible,
        total_tokens,
        finish,
        scores: Vec::new(),
        corrections: Vec::new(),
        alt_seed: SeededRng::derive(seed, "alternatives").next_u64(),
    };
    if limits.logprobs {
        score_tokens(&mut plan, &draft.wrong, draft.confident, seed);
    }
    plan
}

fn token_ends(text: &str) -> Vec<u32> {
    let mut ends = Vec::new();
    let mut pos = 0;
    for t in tokenizer::tokens(text) {
        pos += t.len();
        ends.push(pos as u32);
    }
    ends
}

/// Sampled-token logprobs: ordinary tokens of a task solution −0.005…−0.3, of prose
/// −0.05…−1.2; a wrong number's tokens −0.8…−3; the rest of a wrong step −0.1…−0.9.
fn score_tokens(plan: &mut ChoicePlan, wrong: &[WrongSpan], confident: bool, seed: u64) {
    let mut rng = SeededRng::derive(seed, "logprobs");
    // The tokens of each wrong number (with the space before it, as the tokenizer cuts it) that
    // differ from the right number's tokens: (offset in the text, right token).
    let mut fixes: Vec<(usize, String)> = Vec::new();
    for w in wrong {
        let from = w.number.start.saturating_sub(1);
        let to = w.number.end.min(plan.text.len());
        if from >= to {
            continue;
        }
        let right = format!(" {}", w.correct);
        let right_tokens: Vec<&str> = tokenizer::tokens(&right).collect();
        let mut pos = from;
        for (k, t) in tokenizer::tokens(&plan.text[from..to]).enumerate() {
            let r = right_tokens
                .get(k)
                .or(right_tokens.last())
                .copied()
                .unwrap_or("");
            if r != t {
                fixes.push((pos, r.to_string()));
            }
            pos += t.len();
        }
    }
    let mut scores = Vec::with_capacity(plan.ends.len());
    let mut corrections = Vec::new();
    let (mut span_idx, mut fix_idx) = (0, 0);
    for i in 0..plan.ends.len() {
        let start = plan.offset(i);
        let end = plan.ends[i] as usize;
        while span_idx < wrong.len() && wrong[span_idx].line.end <= start {
            span_idx += 1;
        }
        while fix_idx < fixes.len() && fixes[fix_idx].0 < start {
            fix_idx += 1;
        }
        let class = if fixes.get(fix_idx).is_some_and(|f| f.0 == start) {
            corrections.push(std::mem::take(&mut fixes[fix_idx].1));
            TokenClass::WrongNumber(corrections.len() as u32 - 1)
        } else if wrong
            .get(span_idx)
            .is_some_and(|w| start < w.line.end && end > w.line.start)
        {
            TokenClass::WrongContext
        } else {
            TokenClass::Plain
        };
        let (lo, hi) = match class {
            TokenClass::Plain if confident => (0.005, 0.3),
            TokenClass::Plain => (0.05, 1.2),
            TokenClass::WrongContext => (0.1, 0.9),
            TokenClass::WrongNumber(_) => (0.8, 3.0),
        };
        let logprob = -(lo + (hi - lo) * rng.next_f64());
        scores.push(TokenScore {
            logprob: round6(logprob),
            class,
        });
    }
    plan.scores = scores;
    plan.corrections = corrections;
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The top-`k` alternatives of returned token `i`: the sampled token and `k − 1` other
/// distinct tokens, in descending order of logprob, with probabilities summing below 1.
/// A wrong number's right token is among them with most of the remaining probability.
pub(crate) fn top_logprobs(plan: &ChoicePlan, i: usize, k: usize) -> Vec<(String, f64)> {
    if k == 0 {
        return Vec::new();
    }
    let token = plan.token(i);
    let score = plan.scores[i];
    let mut rng =
        SeededRng::new(plan.alt_seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let p_sampled = score.logprob.exp();
    let mut out: Vec<(String, f64)> = Vec::with_capacity(k);
    out.push((token.to_string(), score.logprob));
    let mut remaining = (1.0 - p_sampled).max(1e-9);
    if let TokenClass::WrongNumber(c) = score.class {
        if let Some(right) = plan.corrections.get(c as usize) {
            if k > 1 && right != token && !right.is_empty() {
                let p = remaining * (0.5 + 0.35 * rng.next_f64());
                out.push((right.clone(), round6(p.ln())));
                remaining -= p;
            }
        }
    }
    let mut candidates = Alternatives::new(token, &mut rng);
    let mut share = 0.5;
    while out.len() < k {
        let Some(alt) = candidates.next(&mut rng) else {
            break;
        };
        if out.iter().any(|(t, _)| *t == alt) {
            continue;
        }
        let p = remaining * share * (0.6 + 0.35 * rng.next_f64());
        share *= 0.5;
        out.push((alt, round6(p.max(1e-300).ln().max(-9999.0))));
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

const VOCAB: [&str; 32] = [
    "the", "a", "so", "then", "we", "it", "is", "and", "to", "of", "that", "this", "first", "next",
    "now", "total", "result", "answer", "step", "add", "subtract", "multiply", "divide", "which",
    "gives", "equals", "left", "more", "each", "number", "value", "also",
];
const PUNCTUATION: [&str; 14] = [
    ".", ",", ":", ";", "!", "?", "-", ")", "(", "=", "+", "*", "/", "\n",
];

/// Plausible other tokens for a sampled token, in a deterministic order.
struct Alternatives {
    space: bool,
    capital: bool,
    number: Option<i64>,
    digits: usize,
    step: usize,
}

impl Alternatives {
    fn new(token: &str, rng: &mut SeededRng) -> Self {
        let space = token.starts_with(' ');
        let body = token.trim_start_matches(' ');
        let number = body
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| body.parse::<i64>().ok())
            .flatten();
        Alternatives {
            space,
            capital: body.chars().next().is_some_and(char::is_uppercase),
            number,
            digits: body.len().max(1),
            step: rng.below(4) as usize,
        }
    }

    fn next(&mut self, rng: &mut SeededRng) -> Option<String> {
        self.step += 1;
        if self.step > 400 {
            return None;
        }
        let sp = if self.space { " " } else { "" };
        if let Some(n) = self.number {
            // Nearby numbers first, then random ones of the same length, then words.
            let deltas = [1, -1, 2, -2, 10, -10, 3, -3, 5, -5];
            let candidate = if self.step <= deltas.len() {
                n + deltas[self.step - 1]
            } else if self.step < 60 {
                let hi = 10i64.pow(self.digits.min(3) as u32) - 1;
                rng.range_inclusive(0, hi)
            } else {
                return Some(format!("{sp}{}", VOCAB[self.step % VOCAB.len()]));
            };
            if candidate < 0 {
                return Some(format!("{sp}{}", n + 20 + self.step as i64));
            }
            return Some(format!("{sp}{candidate}"));
        }
        let pick = (self.step * 7 + rng.below(5) as usize) % (VOCAB.len() + PUNCTUATION.len());
        if pick < VOCAB.len() {
            let w = VOCAB[pick];
            if self.capital {
                let mut c = w.chars();
                let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or('A');
                Some(format!("{sp}{first}{}", c.as_str()))
            } else {
                Some(format!("{sp}{w}"))
            }
        } else {
            Some(PUNCTUATION[pick - VOCAB.len()].to_string())
        }
    }
}

/// The seed of choice `index` of a request.
pub(crate) fn choice_seed(request_seed: u64, prompt_hash: u64, index: usize) -> u64 {
    let mut rng = SeededRng::new(
        request_seed
            ^ prompt_hash.rotate_left(17)
            ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    rng.next_u64()
}

/// A stable hash of the rendered prompt.
pub(crate) fn prompt_hash(rendered: &str) -> u64 {
    stable_hash(rendered.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_plan(
        text: &str,
        (max_tokens, min_tokens, stop): (usize, usize, &[&str]),
        expected: (&str, usize, Finish),
    ) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let draft = Draft {
            text: text.to_string(),
            wrong: Vec::new(),
            confident: true,
        };
        let limits = Limits {
            max_tokens,
            min_tokens,
            stop: &stop,
            include_stop: false,
            logprobs: true,
        };
        let plan = plan(draft, &limits, 1);
        assert_eq!(
            (plan.text.as_str(), plan.total_tokens, plan.finish),
            expected,
            "{text:?} max {max_tokens} min {min_tokens} stop {stop:?}"
        );
        let tokens: String = (0..plan.ends.len()).map(|i| plan.token(i)).collect();
        assert_eq!(tokens, plan.text);
        assert_eq!(plan.scores.len(), plan.ends.len());
    }

    #[test]
    fn limits_cut_drafts() {
        // "Step 1: add 2 + 3 = 5." is 10 tokens: Step, " 1", ":", " add", " 2", " +", " 3",
        // " =", " 5", "."; then "\n" (token 11) and 10 more.
        let text = "Step 1: add 2 + 3 = 5.\nStep 2: add 5 + 1 = 6.";
        check_plan(text, (100, 0, &[]), (text, 21, Finish::Stop));
        check_plan(text, (3, 0, &[]), ("Step 1:", 3, Finish::Length));
        // The stop string's tokens are generated (token 12 completes "\n") but not returned.
        check_plan(
            text,
            (100, 0, &["\n"]),
            ("Step 1: add 2 + 3 = 5.", 11, Finish::Stop),
        );
        check_plan(
            text,
            (100, 0, &["+ 3"]),
            ("Step 1: add 2 ", 7, Finish::Stop),
        );
        // Earliest detection wins over list order.
        check_plan(text, (100, 0, &["6", "add"]), ("Step 1: ", 4, Finish::Stop));
        // Not checked before min_tokens: the first "add" is skipped, the second one cuts.
        check_plan(
            text,
            (100, 5, &["add"]),
            ("Step 1: add 2 + 3 = 5.\nStep 2: ", 15, Finish::Stop),
        );
        // A match that completes after max_tokens does not count.
        check_plan(text, (3, 0, &["add"]), ("Step 1:", 3, Finish::Length));
        // min_tokens extends a short draft with prose, to exactly min_tokens.
        let short = Draft {
            text: "Hi.".to_string(),
            ..Draft::default()
        };
        let limits = Limits {
            max_tokens: 100,
            min_tokens: 30,
            stop: &[],
            include_stop: false,
            logprobs: false,
        };
        let p = plan(short, &limits, 1);
        assert_eq!((p.total_tokens, p.finish), (30, Finish::Stop));
        assert!(p.text.starts_with("Hi.\n\n"));
        assert_eq!(tokenizer::count_tokens(&p.text), 30);
    }

    #[test]
    fn top_logprobs_lists_k_distinct_tokens_in_order() {
        let draft = Draft {
            text: "Step 12: multiply 345 * 7 = 2415.\nThe answer is \\boxed{2415}. Done!\n\n"
                .to_string(),
            wrong: vec![WrongSpan {
                line: 0..33,
                number: 28..32,
                correct: "2415".to_string(),
            }],
            confident: true,
        };
        let limits = Limits {
            max_tokens: 100,
            min_tokens: 0,
            stop: &[],
            include_stop: false,
            logprobs: true,
        };
        let plan = plan(draft, &limits, 3);
        for k in [1, 2, 5, 20] {
            for i in 0..plan.ends.len() {
                let top = top_logprobs(&plan, i, k);
                assert_eq!(top.len(), k, "token {:?}", plan.token(i));
                for (j, (t, lp)) in top.iter().enumerate() {
                    assert!(top[..j].iter().all(|(u, _)| u != t), "{top:?}");
                    assert!(j == 0 || top[j - 1].1 >= *lp);
                }
                assert!(top
                    .iter()
                    .any(|(t, lp)| t == plan.token(i) && *lp == plan.scores[i].logprob));
                assert!(top.iter().map(|(_, lp)| lp.exp()).sum::<f64>() < 1.0);
            }
        }
    }
}
