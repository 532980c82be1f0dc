//! Deterministic generation of problems from `(seed, difficulty, index)`.
//!
//! Problem `index` draws every choice from its own stream,
//! `SeededRng::derive(seed, "ponder-task/v1/<difficulty>/<index>")`, so it does not depend on
//! how many problems are generated or on any other problem. The draws, in order: person, item,
//! number of steps, starting quantity, then per step the operation (uniform among those
//! feasible at the current total), its operand and its sentence template.

use ponder_core::SeededRng;

use crate::problem::{problem_id, Difficulty, Limits, Op, Problem, Step};
use crate::templates::{self, items, render, templates_for, PEOPLE, QUESTION, START};

/// The smallest operand of any step, and the smallest starting quantity (so no sentence ever
/// says "1 apples" or multiplies by 1).
const MIN_OPERAND: i64 = 2;

/// Problems `0..n` of `(seed, difficulty)`; problem `i` is [`generate_one`]`(seed, difficulty, i)`.
pub fn generate(seed: u64, difficulty: Difficulty, n: usize) -> Vec<Problem> {
    (0..n).map(|i| generate_one(seed, difficulty, i)).collect()
}

/// Problem `index` of `(seed, difficulty)`, with id `synth-<difficulty>-<seed>-<index:06>`.
pub fn generate_one(seed: u64, difficulty: Difficulty, index: usize) -> Problem {
    let mut rng = SeededRng::derive(seed, &format!("ponder-task/v1/{difficulty}/{index}"));
    let limits = difficulty.limits();
    let person = PEOPLE[pick(&mut rng, PEOPLE.len())];
    let item_list = items(difficulty);
    let item = item_list[pick(&mut rng, item_list.len())];
    let n_steps = pick_in(&mut rng, *limits.steps.start(), *limits.steps.end());
    let start = rng.range_inclusive(MIN_OPERAND, limits.max_operand);

    let mut sentences = vec![render(START, &person, item, start)];
    let mut steps = Vec::with_capacity(n_steps);
    let mut running = start;
    for _ in 0..n_steps {
        let step = choose_step(&mut rng, &limits, running);
        let options: Vec<&templates::Template> = templates_for(step.op).collect();
        let template = options[pick(&mut rng, options.len())];
        sentences.push(render(template.text, &person, item, step.rhs));
        running = step.result;
        steps.push(step);
    }
    sentences.push(render(QUESTION, &person, item, 0));

    Problem {
        id: problem_id(seed, difficulty, index),
        difficulty,
        question: sentences.join(" "),
        start,
        steps,
        answer: running,
    }
}

/// Uniform index in `0..len` (`len` ≥ 1).
fn pick(rng: &mut SeededRng, len: usize) -> usize {
    rng.below(len.max(1) as u64) as usize
}

/// Uniform in `lo..=hi`.
fn pick_in(rng: &mut SeededRng, lo: usize, hi: usize) -> usize {
    lo + pick(rng, hi.saturating_sub(lo) + 1)
}

/// One step from `running`: an operation chosen uniformly among those of `limits.ops` that
/// are feasible, then its operand.
///
/// Feasible means: `+` keeps the total ≤ `max_value`; `-` leaves at least 1 (so the total
/// never reaches 0 or below); `*` keeps the total ≤ `max_value`; `/` has a divisor in
/// `2..=max_divisor` of the total, so division is always exact. `+` or `-` is always feasible
/// (`max_value` ≥ 1000 and the total is ≥ 1), so every problem has its full number of steps.
fn choose_step(rng: &mut SeededRng, limits: &Limits, running: i64) -> Step {
    let add_max = limits.max_operand.min(limits.max_value - running);
    let sub_max = limits.max_operand.min(running - 1);
    let mul_max = limits.max_multiplier.min(limits.max_value / running.max(1));
    let divisors: Vec<i64> = (MIN_OPERAND..=limits.max_divisor)
        .filter(|d| running % d == 0)
        .collect();
    let feasible: Vec<Op> = limits
        .ops
        .iter()
        .copied()
        .filter(|op| match op {
            Op::Add => add_max >= MIN_OPERAND,
            Op::Sub => sub_max >= MIN_OPERAND,
            Op::Mul => mul_max >= MIN_OPERAND,
            Op::Div => !divisors.is_empty(),
        })
        .collect();
    // Never empty (see above); adding is the fallback that keeps this total.
    let op = feasible
        .get(pick(rng, feasible.len()))
        .copied()
        .unwrap_or(Op::Add);
    let (rhs, result) = match op {
        Op::Add => {
            let rhs = rng.range_inclusive(MIN_OPERAND, add_max.max(MIN_OPERAND));
            (rhs, running + rhs)
        }
        Op::Sub => {
            let rhs = rng.range_inclusive(MIN_OPERAND, sub_max);
            (rhs, running - rhs)
        }
        Op::Mul => {
            let rhs = rng.range_inclusive(MIN_OPERAND, mul_max);
            (rhs, running * rhs)
        }
        Op::Div => {
            let rhs = divisors[pick(rng, divisors.len())];
            (rhs, running / rhs)
        }
    };
    Step {
        op,
        lhs: running,
        rhs,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_respect_their_difficulty() {
        for d in Difficulty::ALL {
            let limits = d.limits();
            for p in generate(11, d, 500) {
                assert!(limits.steps.contains(&p.steps.len()), "{p:?}");
                assert!(
                    (MIN_OPERAND..=limits.max_operand).contains(&p.start),
                    "{p:?}"
                );
                assert_eq!(p.validate(), Ok(()), "{p:?}");
                for s in &p.steps {
                    assert!(limits.ops.contains(&s.op), "{p:?}");
                    let max = match s.op {
                        Op::Add | Op::Sub => limits.max_operand,
                        Op::Mul => limits.max_multiplier,
                        Op::Div => limits.max_divisor,
                    };
                    assert!((MIN_OPERAND..=max).contains(&s.rhs), "{p:?}");
                    assert!((1..=limits.max_value).contains(&s.result), "{p:?}");
                }
            }
        }
    }

    #[test]
    fn every_op_and_step_count_occurs() {
        for d in Difficulty::ALL {
            let problems = generate(3, d, 500);
            for op in d.limits().ops {
                assert!(
                    problems.iter().any(|p| p.steps.iter().any(|s| s.op == *op)),
                    "{d} never uses {op}"
                );
            }
            for n in d.step_range() {
                assert!(
                    problems.iter().any(|p| p.steps.len() == n),
                    "{d} never has {n} steps"
                );
            }
        }
    }

    #[test]
    fn problem_does_not_depend_on_n() {
        let few = generate(5, Difficulty::Hard, 3);
        let many = generate(5, Difficulty::Hard, 50);
        assert_eq!(few[..], many[..3]);
        assert_eq!(many[42], generate_one(5, Difficulty::Hard, 42));
    }

    #[test]
    fn ids() {
        let p = generate(7, Difficulty::Hard, 43);
        assert_eq!(p[42].id, "synth-hard-7-000042");
        assert_eq!(p[0].id, "synth-hard-7-000000");
    }
}
