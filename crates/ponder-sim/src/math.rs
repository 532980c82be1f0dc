//! The simulated model's solutions to the synthetic task, in the task's own format
//! ([`ponder_task::render_step`], [`ponder_task::render_answer`]), with seeded mistakes that
//! propagate.

use ponder_core::SeededRng;
use ponder_task::{check_solution, final_answer, parse_step_line, Difficulty, Op, Problem};

use crate::config::StepAccuracy;
use crate::generate::{Draft, WrongSpan};
use crate::marker;

/// Byte offset just after the question sentence of `problem` in `text` (its last occurrence).
pub(crate) fn question_end(text: &str, problem: &Problem) -> Option<usize> {
    let last_sentence = problem
        .question
        .rsplit_once(". ")
        .map_or(problem.question.as_str(), |(_, q)| q);
    if let Some(pos) = text.rfind(last_sentence) {
        return Some(pos + last_sentence.len());
    }
    text.rfind("have now?").map(|pos| pos + "have now?".len())
}

/// Whether `text` holds at least one solution step line.
pub(crate) fn has_step_lines(text: &str) -> bool {
    text.lines().any(|l| parse_step_line(l).is_some())
}

/// Whether the solution shown in `text` is right: the right final answer and no wrong step.
pub(crate) fn solution_is_right(problem: &Problem, text: &str) -> bool {
    let check = check_solution(problem, text);
    check.correct && check.first_error().is_none()
}

/// The numbered items (`1..=k`, see [`marker::count_numbered_items`]) of `context` whose text
/// holds the right final answer in a `\boxed{}`.
pub(crate) fn items_with_answer(context: &str, problem: &Problem, k: usize) -> Vec<usize> {
    let mut current: Option<usize> = None;
    let mut start = 0;
    let mut right = Vec::new();
    let close = |item: Option<usize>, body: &str, right: &mut Vec<usize>| {
        if let Some(n) = item {
            if n <= k && final_answer(body) == Some(problem.answer) && !right.contains(&n) {
                right.push(n);
            }
        }
    };
    let mut pos = 0;
    for line in context.split_inclusive('\n') {
        if let Some(n) = marker::item_number(line) {
            close(current, &context[start..pos], &mut right);
            current = Some(n);
            start = pos;
        }
        pos += line.len();
    }
    close(current, &context[start..], &mut right);
    right
}

fn accuracy_of(accuracy: &StepAccuracy, difficulty: Difficulty) -> f64 {
    match difficulty {
        Difficulty::Easy => accuracy.easy,
        Difficulty::Medium => accuracy.medium,
        Difficulty::Hard => accuracy.hard,
    }
}

/// `lhs op rhs` as a model that carries a wrong value on would write it: exact where
/// possible, saturating on overflow, and for an inexact division the quotient rounded down,
/// or up where rounding down would land on `gold` (the problem's result for this step), so a
/// wrong running value never turns right again.
fn carry_on(op: Op, lhs: i64, rhs: i64, gold: i64) -> i64 {
    op.apply(lhs, rhs).unwrap_or(match op {
        Op::Add => lhs.saturating_add(rhs),
        Op::Sub => lhs.saturating_sub(rhs),
        Op::Mul => lhs.saturating_mul(rhs),
        Op::Div => match lhs.checked_div(rhs) {
            Some(q) if q == gold => q.saturating_add(1),
            Some(q) => q,
            None => lhs,
        },
    })
}

/// A plausibly wrong result instead of `v`: off by a little (±1, ±2, ±3, ±10) or a digit slip
/// (one digit off by one, or two neighbouring digits swapped). Never `v` nor `avoid` (the right
/// result, when `v` is already wrong), never negative.
pub(crate) fn plausible_mistake(v: i64, avoid: i64, rng: &mut SeededRng) -> i64 {
    for _ in 0..16 {
        let sign = if rng.chance(0.5) { 1 } else { -1 };
        let candidate = match rng.below(5) {
            0 | 1 => v.saturating_add(sign),
            2 => v.saturating_add(sign * rng.range_inclusive(2, 3)),
            3 if v.abs() >= 20 => v.saturating_add(sign * 10),
            _ => digit_slip(v, rng).unwrap_or_else(|| v.saturating_add(sign * 2)),
        };
        if candidate != v && candidate != avoid && candidate >= 0 {
            return candidate;
        }
    }
    if v.saturating_add(1) != avoid {
        v.saturating_add(1)
    } else {
        v.saturating_add(2)
    }
}

fn digit_slip(v: i64, rng: &mut SeededRng) -> Option<i64> {
    let digits: Vec<u8> = v.checked_abs()?.to_string().into_bytes();
    if digits.len() < 2 {
        return None;
    }
    let mut d = digits.clone();
    let i = rng.below(d.len() as u64) as usize;
    if rng.chance(0.5) && i + 1 < d.len() && d[i] != d[i + 1] {
        d.swap(i, i + 1);
    } else {
        let up = rng.chance(0.5);
        d[i] = match (d[i], up) {
            (b'9', true) => b'8',
            (b'0', false) => b'1',
            (x, true) => x + 1,
            (x, false) => x - 1,
        };
    }
    if d[0] == b'0' {
        return None;
    }
    let n: i64 = std::str::from_utf8(&d).ok()?.parse().ok()?;
    Some(if v < 0 { -n } else { n })
}

/// The model's solution of `problem`, continuing `prefix` (an assistant prefill, or the text
/// after the question in a raw prompt; empty for a fresh answer).
///
/// The last complete `Step k:` line of `prefix` sets where to go on: step `k + 1` starts from
/// the result written there. A partial last line that the next step's line starts with is
/// completed; otherwise the solution starts on a new line. Each step is right with the
/// difficulty's probability; a wrong one writes a plausibly wrong result, and later steps carry
/// the wrong value on, so the boxed answer is the wrong chain's result. A prefix that already
/// holds a boxed answer is complete: the draft is empty (the model ends at once).
pub(crate) fn solve(
    problem: &Problem,
    prefix: &str,
    accuracy: &StepAccuracy,
    answer_marker: Option<&str>,
    rng: &mut SeededRng,
) -> Draft {
    let p = accuracy_of(accuracy, problem.difficulty);
    if final_answer(prefix).is_some() {
        return Draft {
            confident: true,
            ..Draft::default()
        };
    }
    let (complete, tail) = match prefix.rfind('\n') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    let tail_step = parse_step_line(tail).filter(|_| tail.trim_end().ends_with('.'));
    let last = tail_step.or_else(|| complete.lines().rev().find_map(parse_step_line));
    let (mut running, first_k) = match last {
        Some(s) => (s.result, s.index + 1),
        None => (problem.start, 1),
    };

    let mut lines: Vec<(String, Option<(usize, String)>)> = Vec::new();
    for k in first_k..=problem.steps.len() {
        let gold = problem.steps[k - 1];
        let truth = carry_on(gold.op, running, gold.rhs, gold.result);
        let right = rng.chance(p);
        let result = if right {
            truth
        } else {
            plausible_mistake(truth, gold.result, rng)
        };
        let line = ponder_task::render_step(k, gold.op, running, gold.rhs, result);
        let mistake = (!right).then(|| {
            let written = result.to_string();
            // The line ends with `= <result>.`
            (line.len() - 1 - written.len(), truth.to_string())
        });
        lines.push((line, mistake));
        running = result;
    }
    lines.push((ponder_task::render_answer(&running.to_string()), None));
    if let Some(marker) = answer_marker {
        lines.push((format!("{marker}: {running}"), None));
    }

    let mut text = String::new();
    let mut wrong = Vec::new();
    let mut skip_first = 0;
    if !tail.trim().is_empty() && tail_step.is_none() {
        if lines[0].0.starts_with(tail) {
            skip_first = tail.len();
        } else {
            text.push('\n');
        }
    } else if tail_step.is_some() {
        text.push('\n');
    }
    for (i, (line, mistake)) in lines.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        let skip = if i == 0 { skip_first } else { 0 };
        let line_start = text.len() as isize - skip as isize;
        text.push_str(&line[skip..]);
        if let Some((number_at, correct)) = mistake {
            let at = |off: usize| (line_start + off as isize).max(0) as usize;
            let number_len = line.len() - 1 - number_at;
            wrong.push(WrongSpan {
                line: at(0)..at(line.len()),
                number: at(*number_at)..at(number_at + number_len),
                correct: correct.clone(),
            });
        }
    }
    Draft {
        text,
        wrong,
        confident: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_task::generate;

    #[test]
    fn mistakes_are_plausible() {
        let mut rng = SeededRng::new(1);
        for v in [0, 1, 9, 10, 17, 99, 1234, 500_000] {
            for _ in 0..50 {
                let m = plausible_mistake(v, v + 1, &mut rng);
                assert_ne!(m, v + 1);
                assert_ne!(m, v);
                assert!(m >= 0);
                assert!((m - v).abs() <= 10 || m.to_string().len() == v.to_string().len());
            }
        }
    }

    #[test]
    fn a_perfect_model_writes_the_reference_solution() {
        let problem = &generate(3, Difficulty::Hard, 1)[0];
        let perfect = StepAccuracy {
            easy: 1.0,
            medium: 1.0,
            hard: 1.0,
        };
        let draft = solve(problem, "", &perfect, None, &mut SeededRng::new(5));
        assert_eq!(draft.text, problem.reference_solution());
        assert!(draft.wrong.is_empty());
    }

    #[test]
    fn continues_from_the_written_value() {
        let problem = &generate(3, Difficulty::Medium, 1)[0];
        let s = problem.steps[0];
        let perfect = StepAccuracy {
            easy: 1.0,
            medium: 1.0,
            hard: 1.0,
        };
        // Step 1 written with a wrong result: step 2 starts from it.
        let prefix = format!(
            "{}\n",
            ponder_task::render_step(1, s.op, s.lhs, s.rhs, s.result + 1)
        );
        let draft = solve(problem, &prefix, &perfect, None, &mut SeededRng::new(5));
        let first = draft.text.lines().next().unwrap_or_default();
        let parsed = parse_step_line(first).expect("a step line");
        assert_eq!((parsed.index, parsed.lhs), (2, s.result + 1));
        // A partial line is completed.
        let partial = "Step 1: ";
        let draft = solve(problem, partial, &perfect, None, &mut SeededRng::new(5));
        assert!(draft
            .text
            .starts_with(&problem.reference_solution()[partial.len()..]));
        // A finished solution ends at once.
        let done = solve(
            problem,
            &problem.reference_solution(),
            &perfect,
            None,
            &mut SeededRng::new(5),
        );
        assert!(done.text.is_empty());
    }

    #[test]
    fn wrong_spans_point_at_the_wrong_number() {
        let problem = &generate(9, Difficulty::Hard, 1)[0];
        let sloppy = StepAccuracy {
            easy: 0.0,
            medium: 0.0,
            hard: 0.0,
        };
        let draft = solve(problem, "", &sloppy, None, &mut SeededRng::new(5));
        assert_eq!(draft.wrong.len(), problem.steps.len());
        for w in &draft.wrong {
            let line = &draft.text[w.line.clone()];
            let number = &draft.text[w.number.clone()];
            assert!(line.ends_with(&format!("= {number}.")), "{line} / {number}");
            assert_ne!(number, w.correct);
        }
        let check = check_solution(problem, &draft.text);
        assert_eq!(check.first_error(), Some(0));
    }
}
