//! Worked solutions: the reference solution with some steps computed through a work line
//! first, along one of several routes chosen at random (training data for the bundled policy).
//!
//! A greedy decoder follows one route; samples take different routes whose arithmetic fails in
//! different places, so wrong answers scatter while right ones agree. That is what lets a vote
//! over samples beat the single greedy answer (issue 8).
//!
//! A work line comes right before the step line it computes, and its last expression's result is
//! the step's result:
//!
//! ```text
//! Work: 393 * 10 = 3930, 393 * 2 = 786, 3930 + 786 = 4716.
//! Step 2: multiply 393 * 12 = 4716.
//! ```
//!
//! Work lines have no `Step k:` header, so [`crate::check_solution`] and
//! [`crate::parse_step_line`] ignore them: a worked solution checks exactly as the reference one
//! does. Every expression in a work line is `a op b = c` in the step format's spelling and
//! holds exactly.
//!
//! Routes, per operation (`lead(v)` is `v`'s leading digit times its place, `lead(153) = 100`;
//! `tens(v)` is `v` without its last digit, `tens(153) = 150`):
//!
//! | op | route | work line |
//! |----|-------|-----------|
//! | `a + b` | split `b` at its lead | `a + lead(b) = x, x + (b - lead(b)) = c` |
//! | `a + b` | split off `b`'s last digit (`b` ≥ 100) | `a + tens(b) = x, x + (b % 10) = c` |
//! | `a - b` | the same two splits of `b` | `a - lead(b) = x, x - (b - lead(b)) = c` |
//! | `a * m` | split `a` at its lead | `lead(a) * m = x, (a - lead(a)) * m = y, x + y = c` |
//! | `a * m` | split `m` (10 + k, or two halves when `m` < 10) | `a * m1 = x, a * m2 = y, x + y = c` |
//! | `a / d` | long division by `q`'s lead | `d * lead(q) = x, a - x = y, y / d = r, lead(q) + r = q` |
//! | `a / d` | long division by `tens(q)` (`q` ≥ 100) | `d * tens(q) = x, a - x = y, y / d = q % 10, tens(q) + q % 10 = q` |
//!
//! A route applies only when all its parts are positive (no `+ 0` or `* 0` parts) and it differs
//! from the other route of the same step; a step is written directly with probability
//! [`DIRECT_PROBABILITY`], otherwise through one of its routes, uniformly.

use ponder_core::SeededRng;

use crate::problem::{Op, Problem, Step};
use crate::solution::{render_answer, render_step};

/// Probability that a step with at least one route is written without a work line.
pub const DIRECT_PROBABILITY: f64 = 0.4;

/// Word that opens every work line.
pub const WORK_PREFIX: &str = "Work:";

/// One `a op b = c` of a work line.
type Part = (i64, Op, i64, i64);

/// `v`'s leading digit times its place value (`lead(153) = 100`, `lead(7) = 7`); `v` ≥ 1.
fn lead(v: i64) -> i64 {
    let mut place = 1;
    while v / place >= 10 {
        place *= 10;
    }
    v / place * place
}

/// The two-part split `b = p + q` of each applicable route for `b` (parts positive, distinct
/// splits only).
fn splits(b: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    if b >= 10 && b - lead(b) > 0 {
        out.push((lead(b), b - lead(b)));
    }
    let (tens, ones) = (b - b % 10, b % 10);
    if b >= 100 && ones > 0 && tens != lead(b) {
        out.push((tens, ones));
    }
    out
}

/// The work lines' parts of every route of `step` (possibly none).
pub fn routes(step: &Step) -> Vec<Vec<Part>> {
    let Step {
        op,
        lhs: a,
        rhs: b,
        result: c,
    } = *step;
    if a < 1 || b < 1 || c < 1 {
        return Vec::new();
    }
    match op {
        Op::Add | Op::Sub => splits(b)
            .into_iter()
            .map(|(p, q)| {
                let x = if op == Op::Add { a + p } else { a - p };
                vec![(a, op, p, x), (x, op, q, c)]
            })
            .filter(|parts| parts.iter().all(|&(_, _, _, r)| r >= 1))
            .collect(),
        Op::Mul => {
            let mut out = Vec::new();
            if a >= 10 && a - lead(a) > 0 {
                let (h, r) = (lead(a), a - lead(a));
                out.push(vec![
                    (h, Op::Mul, b, h * b),
                    (r, Op::Mul, b, r * b),
                    (h * b, Op::Add, r * b, c),
                ]);
            }
            let m_split = if b > 10 {
                Some((10, b - 10))
            } else if (4..10).contains(&b) {
                Some((b - b / 2, b / 2))
            } else {
                None
            };
            if let Some((m1, m2)) = m_split {
                out.push(vec![
                    (a, Op::Mul, m1, a * m1),
                    (a, Op::Mul, m2, a * m2),
                    (a * m1, Op::Add, a * m2, c),
                ]);
            }
            out
        }
        Op::Div => splits(c)
            .into_iter()
            .map(|(p, q)| {
                let x = b * p;
                vec![
                    (b, Op::Mul, p, x),
                    (a, Op::Sub, x, a - x),
                    (a - x, Op::Div, b, q),
                    (p, Op::Add, q, c),
                ]
            })
            .collect(),
    }
}

/// The work line of `parts`: `Work: a op b = c, a op b = c.`
pub fn render_work(parts: &[Part]) -> String {
    let body: Vec<String> = parts
        .iter()
        .map(|&(a, op, b, c)| format!("{a} {} {b} = {c}", op.symbol()))
        .collect();
    format!("{WORK_PREFIX} {}.", body.join(", "))
}

/// The worked solution of `problem` with routes drawn from the problem's own stream of `seed`,
/// `SeededRng::derive(seed, "ponder-task/worked/v1/<problem id>")`: per step, with probability
/// [`DIRECT_PROBABILITY`] (or always, when the step has no route) the step line alone, else a
/// uniformly chosen route's work line and then the step line; then the answer line. Lines are
/// joined by `"\n"`, no trailing newline.
pub fn worked_solution(problem: &Problem, seed: u64) -> String {
    let rng = &mut SeededRng::derive(seed, &format!("ponder-task/worked/v1/{}", problem.id));
    let mut lines = Vec::new();
    for (i, step) in problem.steps.iter().enumerate() {
        let options = routes(step);
        if !options.is_empty() && !rng.chance(DIRECT_PROBABILITY) {
            let pick = rng.below(options.len() as u64) as usize;
            lines.push(render_work(&options[pick]));
        }
        lines.push(render_step(i + 1, step.op, step.lhs, step.rhs, step.result));
    }
    lines.push(render_answer(&problem.answer.to_string()));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_solution, generate, parse_step_line, Difficulty};

    fn step(op: Op, lhs: i64, rhs: i64) -> Step {
        Step {
            op,
            lhs,
            rhs,
            result: op.apply(lhs, rhs).expect("an exact step"),
        }
    }

    fn lines(s: &Step) -> Vec<String> {
        routes(s).iter().map(|r| render_work(r)).collect()
    }

    #[test]
    fn routes_of_each_operation() {
        assert_eq!(lead(153), 100);
        assert_eq!(lead(7), 7);
        assert_eq!(lead(4716), 4000);
        assert_eq!(
            lines(&step(Op::Add, 240, 153)),
            [
                "Work: 240 + 100 = 340, 340 + 53 = 393.",
                "Work: 240 + 150 = 390, 390 + 3 = 393."
            ]
        );
        // 53 has one split only (50 + 3 both ways); 50 and 7 have none.
        assert_eq!(
            lines(&step(Op::Sub, 100, 53)),
            ["Work: 100 - 50 = 50, 50 - 3 = 47."]
        );
        assert!(lines(&step(Op::Sub, 100, 50)).is_empty());
        assert!(lines(&step(Op::Add, 100, 7)).is_empty());
        assert_eq!(
            lines(&step(Op::Mul, 393, 12)),
            [
                "Work: 300 * 12 = 3600, 93 * 12 = 1116, 3600 + 1116 = 4716.",
                "Work: 393 * 10 = 3930, 393 * 2 = 786, 3930 + 786 = 4716."
            ]
        );
        assert_eq!(
            lines(&step(Op::Mul, 27, 7)),
            [
                "Work: 20 * 7 = 140, 7 * 7 = 49, 140 + 49 = 189.",
                "Work: 27 * 4 = 108, 27 * 3 = 81, 108 + 81 = 189."
            ]
        );
        // 1261 / 13 = 97: 97 = 90 + 7 (one split).
        assert_eq!(
            lines(&step(Op::Div, 1261, 13)),
            ["Work: 13 * 90 = 1170, 1261 - 1170 = 91, 91 / 13 = 7, 90 + 7 = 97."]
        );
        // 4185 / 3 = 1395: 1000 + 395 and 1390 + 5.
        assert_eq!(
            lines(&step(Op::Div, 4185, 3)),
            [
                "Work: 3 * 1000 = 3000, 4185 - 3000 = 1185, 1185 / 3 = 395, 1000 + 395 = 1395.",
                "Work: 3 * 1390 = 4170, 4185 - 4170 = 15, 15 / 3 = 5, 1390 + 5 = 1395."
            ]
        );
        // 203 = 200 + 3 has one split: its tens part is its lead.
        assert_eq!(
            lines(&step(Op::Sub, 250, 203)),
            ["Work: 250 - 200 = 50, 50 - 3 = 47."]
        );
    }

    #[test]
    fn every_work_expression_holds_and_ends_at_the_step_result() {
        for difficulty in Difficulty::ALL {
            for p in generate(5, difficulty, 300) {
                for s in &p.steps {
                    for parts in routes(s) {
                        assert_eq!(parts.last().map(|p| p.3), Some(s.result), "{s:?}");
                        for &(a, op, b, c) in &parts {
                            assert_eq!(op.apply(a, b), Some(c), "{s:?}: {a} {op} {b} = {c}");
                            assert!(a >= 1 && b >= 1 && c >= 1, "{s:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn worked_solutions_check_like_the_reference() {
        let mut worked_lines = 0;
        let mut direct_lines = 0;
        for p in generate(11, Difficulty::Hard, 200) {
            let text = worked_solution(&p, 3);
            let check = check_solution(&p, &text);
            assert!(check.correct && check.all_steps_valid, "{text}");
            // Without its work lines, a worked solution is the reference.
            let plain: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with(WORK_PREFIX))
                .collect();
            assert_eq!(plain.join("\n"), p.reference_solution());
            for line in text.lines().filter(|l| l.starts_with(WORK_PREFIX)) {
                assert_eq!(parse_step_line(line), None, "{line}");
                worked_lines += 1;
            }
            direct_lines += p.steps.len();
            // The same seed gives the same text.
            assert_eq!(worked_solution(&p, 3), text);
        }
        // About 60% of the steps that have a route get a work line.
        let share = worked_lines as f64 / direct_lines as f64;
        assert!((0.4..0.65).contains(&share), "{share}");
    }
}
