//! The per-problem result record, one JSON object per line of `records.jsonl`.
//!
//! This is a persisted wire format, kept apart from the core types and converted by hand
//! ([`Record::from_result`]). Its version is the `version` of the run's `run.json`. Readers
//! (the summary, `ponder report`, re-scoring) rely on `id`, `gold`, `candidates[].text`,
//! `candidates[].answer`, `candidates[].score` and `correct`; every other field has a default
//! so that older or hand-written files still read.

use ponder_answer::{extract_answer, is_correct, ExtractOptions};
use ponder_core::{RunCost, StrategyResult};
use serde::{Deserialize, Serialize};

use crate::dataset::EvalProblem;

/// One candidate the strategy considered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordCandidate {
    pub text: String,
    /// The extracted answer: the strategy's, or, where it gave none, the dataset's extraction
    /// preset applied to the text.
    #[serde(default)]
    pub answer: Option<String>,
    /// Votes of this candidate's answer cluster (voting strategies).
    #[serde(default)]
    pub votes: Option<u32>,
    /// Reward or confidence, when the strategy computes one.
    #[serde(default)]
    pub score: Option<f64>,
    /// `stop`, `length`, `aborted` or `error`.
    #[serde(default)]
    pub finish_reason: String,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    /// Whether `answer` is equivalent to the gold answer; `None` in files that lack it (the
    /// summary then grades the answer itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
}

/// What a problem cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordUsage {
    pub requests: u64,
    pub retries: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reward_tokens: u64,
    /// Generations the strategy stopped early.
    pub aborted: u64,
    /// Upper bound on the completion tokens the early stops saved.
    pub tokens_saved: u64,
}

impl From<&RunCost> for RecordUsage {
    fn from(c: &RunCost) -> Self {
        RecordUsage {
            requests: c.requests,
            retries: c.retries,
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            cached_tokens: c.cached_tokens,
            reward_tokens: c.reward_tokens,
            aborted: c.aborted,
            tokens_saved: c.tokens_saved,
        }
    }
}

/// The result of one problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Position of the problem in the dataset (after `--limit`, before sharding).
    #[serde(default)]
    pub index: usize,
    pub gold: String,
    /// The user message sent to the strategy.
    #[serde(default)]
    pub question: String,
    #[serde(default)]
    pub candidates: Vec<RecordCandidate>,
    /// The chosen answer; `None` when no candidate had one or the strategy failed.
    #[serde(default)]
    pub answer: Option<String>,
    /// Index into `candidates` of the chosen one.
    #[serde(default)]
    pub selected: Option<usize>,
    /// Whether `answer` is right for `gold` (`ponder_answer::is_correct`: the grading rules).
    #[serde(default)]
    pub correct: bool,
    #[serde(default)]
    pub usage: RecordUsage,
    /// The strategy's seed for this problem ([`crate::runner::problem_seed`]).
    #[serde(default)]
    pub seed: u64,
    /// Wall time of this problem, in milliseconds.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Why the strategy failed on this problem (then `correct` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The strategy's own account of the run (early-stop decisions, thresholds, search tree).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl Record {
    /// The record of a strategy result. Candidates without an answer get one extracted with
    /// `extract`; every candidate and the chosen answer are graded against the gold.
    pub fn from_result(
        problem: &EvalProblem,
        seed: u64,
        result: &StrategyResult,
        extract: &ExtractOptions,
        elapsed_ms: u64,
    ) -> Record {
        let gold = &problem.gold;
        let candidates = result
            .outcome
            .candidates
            .iter()
            .map(|c| {
                let answer = c
                    .answer
                    .clone()
                    .or_else(|| extract_answer(&c.text, extract).map(|e| e.answer));
                RecordCandidate {
                    correct: Some(answer.as_deref().is_some_and(|a| is_correct(gold, a))),
                    text: c.text.clone(),
                    answer,
                    votes: c.votes,
                    score: c.score.filter(|s| s.is_finite()),
                    finish_reason: c.finish_reason.as_str().to_string(),
                    completion_tokens: c.completion_tokens,
                }
            })
            .collect();
        let answer = result.outcome.answer.clone();
        Record {
            id: problem.id.clone(),
            index: problem.index,
            gold: gold.clone(),
            question: problem.question.clone(),
            candidates,
            correct: answer.as_deref().is_some_and(|a| is_correct(gold, a)),
            answer,
            selected: result.outcome.selected,
            usage: RecordUsage::from(&result.cost),
            seed,
            elapsed_ms,
            error: None,
            details: result.outcome.details.clone(),
        }
    }

    /// The record of a problem whose strategy failed: no candidates, not correct, the error kept.
    pub fn failed(problem: &EvalProblem, seed: u64, error: String, elapsed_ms: u64) -> Record {
        Record {
            id: problem.id.clone(),
            index: problem.index,
            gold: problem.gold.clone(),
            question: problem.question.clone(),
            candidates: Vec::new(),
            answer: None,
            selected: None,
            correct: false,
            usage: RecordUsage::default(),
            seed,
            elapsed_ms,
            error: Some(error),
            details: serde_json::Value::Null,
        }
    }

    /// Whether candidate `i` is correct: its stored verdict, else its answer graded now.
    pub fn candidate_correct(&self, i: usize) -> bool {
        match self.candidates.get(i) {
            Some(c) => c.correct.unwrap_or_else(|| {
                c.answer
                    .as_deref()
                    .is_some_and(|a| is_correct(&self.gold, a))
            }),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_records_read_with_defaults() {
        let r: Record = serde_json::from_str(
            r#"{"id": "a", "gold": "4", "candidates": [{"text": "so \\boxed{4}", "score": 0.5}]}"#,
        )
        .expect("reads");
        assert_eq!(r.candidates[0].score, Some(0.5));
        assert!(!r.correct);
        assert_eq!(r.usage, RecordUsage::default());
        assert_eq!(r.error, None);
    }

    #[test]
    fn a_failed_record_round_trips() {
        let p = EvalProblem {
            index: 3,
            id: "p3".into(),
            question: "q".into(),
            gold: "7".into(),
        };
        let r = Record::failed(&p, 11, "backend refused".into(), 5);
        let line = serde_json::to_string(&r).expect("writes");
        assert!(line.contains("\"error\":\"backend refused\""));
        let back: Record = serde_json::from_str(&line).expect("reads");
        assert_eq!(back, r);
    }
}
