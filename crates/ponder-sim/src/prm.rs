//! The simulated process reward model behind `POST /pooling` and `POST /v1/pooling`, answering
//! in vLLM's pooling response shape with one row per step tag.
//!
//! Two input forms are recognised, per input text:
//! * **Qwen** (`Qwen2.5-Math-PRM`): steps separated *and* terminated by `<extra_0>`; each row is
//!   `[p_neg, p_pos]` (softmax over the two labels; the step reward is `row[1]`).
//! * **Math-Shepherd**: each step followed by the step tag ` ки`; each row is `[p(+), p(-)]`
//!   (the order of `returned_token_ids = [648, 387]`; the step reward is `row[0]`).
//!
//! A text with `<extra_0>` is read as Qwen, else one with `ки` as Math-Shepherd, else it has no
//! step tag and gets no rows (like vLLM's STEP pooling). Rows sum to 1.
//!
//! The reward of a step follows the simulated judgement of the synthetic task: when the text
//! holds a task question ([`ponder_task::parse_question`]), the step lines of each tagged
//! segment are checked as [`ponder_task::check_solution`] does (arithmetic holds, starts from
//! the previous written result, operator and operand of the problem's step `k`; a boxed answer
//! must equal the last written result and the gold answer). A right step scores
//! 0.75–0.98; the first wrong step and every step after it score 0.05–0.4; a segment with no
//! step line scores 0.45–0.65 (0.05–0.4 after an error). Without a task question every row
//! is 0.5 ± 0.15. The noise is drawn from the server seed and the text, so a text always gets
//! the same rows.

use ponder_core::{stable_hash, SeededRng};
use ponder_task::{final_answer, parse_question, parse_step_line, Problem};

use crate::math::question_end;

/// Which PRM's input and row layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrmForm {
    /// Rows `[p_neg, p_pos]`.
    Qwen,
    /// Rows `[p(+), p(-)]`.
    MathShepherd,
}

/// The Qwen PRM's step separator.
pub(crate) const QWEN_TAG: &str = "<extra_0>";
/// Math-Shepherd's step tag (written after a space).
pub(crate) const SHEPHERD_TAG: &str = "ки";

/// The rows for one input text.
pub(crate) fn score_text(text: &str, seed: u64) -> Vec<[f64; 2]> {
    let (form, tag) = if text.contains(QWEN_TAG) {
        (PrmForm::Qwen, QWEN_TAG)
    } else if text.contains(SHEPHERD_TAG) {
        (PrmForm::MathShepherd, SHEPHERD_TAG)
    } else {
        return Vec::new();
    };
    let mut rng = SeededRng::new(seed ^ stable_hash(text.as_bytes()));
    let segments: Vec<&str> = text.split(tag).collect();
    let n_rows = segments.len() - 1;
    let rewards = step_rewards(text, &segments[..n_rows], tag.len(), &mut rng);
    rewards
        .into_iter()
        .map(|p| {
            let p = (p * 1e6).round() / 1e6;
            match form {
                PrmForm::Qwen => [round6(1.0 - p), p],
                PrmForm::MathShepherd => [p, round6(1.0 - p)],
            }
        })
        .collect()
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn uniform(rng: &mut SeededRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.next_f64()
}

/// P(step is right) for each tagged segment (`segments` are consecutive pieces of `text`, each
/// followed by a tag of `tag_len` bytes).
fn step_rewards(text: &str, segments: &[&str], tag_len: usize, rng: &mut SeededRng) -> Vec<f64> {
    let Some(problem) = parse_question(text) else {
        return segments.iter().map(|_| uniform(rng, 0.35, 0.65)).collect();
    };
    // Text up to the end of the question is not part of any step.
    let question_end = question_end(text, &problem).unwrap_or(0);
    let mut judge = StepJudge::new(&problem);
    let mut out = Vec::with_capacity(segments.len());
    let mut offset = 0;
    for segment in segments {
        let skip = question_end.saturating_sub(offset).min(segment.len());
        let body = segment.get(skip..).unwrap_or("");
        offset += segment.len() + tag_len;
        out.push(match judge.segment(body) {
            Verdict::Right => uniform(rng, 0.75, 0.98),
            Verdict::Wrong => uniform(rng, 0.05, 0.4),
            Verdict::Neutral => uniform(rng, 0.45, 0.65),
        });
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Right,
    Wrong,
    Neutral,
}

/// Judges segments in order, remembering the last written result and whether an error was
/// seen.
struct StepJudge<'a> {
    problem: &'a Problem,
    previous: i64,
    failed: bool,
}

impl<'a> StepJudge<'a> {
    fn new(problem: &'a Problem) -> Self {
        StepJudge {
            problem,
            previous: problem.start,
            failed: false,
        }
    }

    fn segment(&mut self, body: &str) -> Verdict {
        let mut saw_step = false;
        for line in body.lines() {
            let Some(step) = parse_step_line(line) else {
                continue;
            };
            saw_step = true;
            let gold = step
                .index
                .checked_sub(1)
                .and_then(|i| self.problem.steps.get(i));
            let ok = step.op.apply(step.lhs, step.rhs) == Some(step.result)
                && step.lhs == self.previous
                && gold.is_some_and(|g| g.op == step.op && g.rhs == step.rhs);
            if !ok {
                self.failed = true;
            }
            self.previous = step.result;
        }
        let answer = final_answer(body);
        if let Some(a) = answer {
            if a != self.previous || a != self.problem.answer {
                self.failed = true;
            }
        }
        if self.failed {
            Verdict::Wrong
        } else if saw_step || answer.is_some() {
            Verdict::Right
        } else {
            Verdict::Neutral
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_task::{generate, Difficulty};

    fn shepherd(problem: &Problem, steps: &[String]) -> String {
        let mut text = format!("{} ", problem.question);
        for s in steps {
            text.push_str(s);
            text.push_str(" ки\n");
        }
        text
    }

    #[test]
    fn right_steps_score_high_and_errors_stick() {
        let problem = &generate(4, Difficulty::Hard, 1)[0];
        let mut lines: Vec<String> = problem
            .reference_solution()
            .lines()
            .map(str::to_string)
            .collect();
        let rows = score_text(&shepherd(problem, &lines), 1);
        assert_eq!(rows.len(), lines.len());
        assert!(rows
            .iter()
            .all(|r| r[0] >= 0.75 && (r[0] + r[1] - 1.0).abs() < 1e-6));

        // Break step 2: it and everything after score low.
        let s = problem.steps[1];
        lines[1] = ponder_task::render_step(2, s.op, s.lhs, s.rhs, s.result + 1);
        let rows = score_text(&shepherd(problem, &lines), 1);
        assert!(rows[0][0] >= 0.75);
        assert!(rows[1..].iter().all(|r| r[0] <= 0.4), "{rows:?}");
    }

    #[test]
    fn qwen_rows_are_negative_then_positive() {
        let problem = &generate(4, Difficulty::Easy, 1)[0];
        let steps = problem.reference_solution().replace('\n', "<extra_0>") + "<extra_0>";
        let text = format!(
            "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n{steps}<|im_end|>",
            problem.question
        );
        let rows = score_text(&text, 1);
        assert_eq!(rows.len(), problem.steps.len() + 1);
        assert!(rows.iter().all(|r| r[1] >= 0.75), "{rows:?}");
    }

    #[test]
    fn generic_text_is_near_a_half_and_untagged_text_has_no_rows() {
        let rows = score_text("one ки two ки", 1);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| (0.35..=0.65).contains(&r[0])));
        assert!(score_text("no tags at all", 1).is_empty());
        assert_eq!(score_text("one ки two ки", 1), rows);
    }
}
