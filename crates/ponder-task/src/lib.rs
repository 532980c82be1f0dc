//! The synthetic multi-step arithmetic word-problem task: the single source of truth for its
//! problems, their reference solutions, and how text is read back and checked.
//!
//! The simulated LLM server, the evaluation harness and the training data of the bundled
//! model all use this crate, so a question, a step line or an answer line means the same
//! thing everywhere. Everything is a pure function: no I/O, no clock, no panics on any input.
//!
//! # Problems
//!
//! A problem is a starting quantity and a chain of operations on a running total. Its
//! question is one line of sentences separated by single spaces:
//!
//! ```text
//! Omar has 12 coins. He buys 5 more coins. He gives away 4 coins. He multiplies his coins by 3. How many coins does Omar have now?
//! ```
//!
//! - the opening sentence `<Name> has <start> <items>.`;
//! - one sentence per step, from fixed templates with exactly one number, the right operand
//!   (`He`/`She`, `him`/`her`, `his`/`her` follow the person):
//!   - `+`: `She buys N more apples.`, `She finds N more apples.`,
//!     `A friend gives her N more apples.`
//!   - `-`: `She gives away N apples.`, `She sells N apples.`, `She loses N apples.`
//!   - `*`: `She multiplies her apples by N.`,
//!     `She ends up with N times as many apples as before.`,
//!     `She buys enough apples to have N times as many as before.`
//!   - `/`: `She splits her apples into N equal groups and keeps one group.`,
//!     `She keeps only one of every N apples.`,
//!     `She packs her apples into N equal boxes and keeps one box.`
//! - the question sentence `How many <items> does <Name> have now?`
//!
//! Names: Mia, Liam, Ava, Noah, Zoe, Omar, Lena, Ravi, Sofia, Ken, Nora, Hugo. Each difficulty
//! has its own items, so the item tells the difficulty: easy apples, marbles, stickers,
//! pencils, crayons; medium coins, beads, stamps, cards, shells; hard bricks, bottles, seeds,
//! nails, tickets.
//!
//! | difficulty | steps | ops       | start, `+`/`-` operand | `*` by | `/` by | running total |
//! |------------|-------|-----------|------------------------|--------|--------|---------------|
//! | easy       | 2–3   | `+ -`     | 2–20                   | –      | –      | 1–1 000       |
//! | medium     | 3–5   | `+ - * /` | 2–100                  | 2–5    | 2–10   | 1–10 000      |
//! | hard       | 5–8   | `+ - * /` | 2–1000                 | 2–12   | 2–20   | 1–1 000 000   |
//!
//! Every operand is at least 2; division is always exact (the divisor is drawn among the
//! divisors of the running total); subtraction always leaves at least 1. Each step's operation
//! is uniform among those feasible at the current total.
//!
//! [`generate`]`(seed, difficulty, n)` gives problems `0..n`; problem `i` depends only on
//! `(seed, difficulty, i)` (its own [`ponder_core::SeededRng::derive`] stream) and has id
//! `synth-<difficulty>-<seed>-<i:06>`, e.g. `synth-hard-7-000042`.
//! [`parse_question`] finds a problem inside any text (a chat-templated prompt, a prompt
//! followed by partial steps) and recomputes it from the text alone.
//!
//! # Solutions
//!
//! One line per step, then the answer line, separated by `"\n"`:
//!
//! ```text
//! Step 1: add 12 + 5 = 17.
//! Step 2: subtract 17 - 4 = 13.
//! Step 3: multiply 13 * 3 = 39.
//! The answer is \boxed{39}.
//! ```
//!
//! A step line is `Step <k>: <word> <lhs> <op> <rhs> = <result>.` with `k` counting from 1,
//! the word `add`, `subtract`, `multiply` or `divide` and the symbol `+`, `-`, `*` or `/`
//! ([`render_step`]); the answer line is `The answer is \boxed{<answer>}.` ([`render_answer`]).
//! [`SOLUTION_INSTRUCTIONS`] asks a model for exactly this format.
//!
//! # Checking
//!
//! [`check_solution`] reads every line holding a step ([`parse_step_line`], tolerant of
//! spacing, case and decoration) and the integer in the last balanced `\boxed{...}`
//! ([`final_answer`]). A step is `arithmetic_ok` when its own `lhs op rhs = result` holds, and
//! `consistent` when its `lhs` is the result written on the previous step line (the start
//! value for the first) and its operator and `rhs` are those of the problem's step `k`. So a
//! wrong result that later steps carry on correctly flags only the step that made it; compare
//! with the reference through `matches_reference`. The solution is `correct` when the final
//! answer equals the gold answer, whatever the steps say.
//!
//! # Records
//!
//! [`Problem::to_record`] writes the JSONL record (version [`RECORD_VERSION`]) with `id`,
//! `difficulty`, `question`, `start`, `steps` (`[{"op": "+", "lhs": 12, "rhs": 5,
//! "result": 17}, ...]`), `answer` (a number), `solution` (the reference solution), `seed` and
//! `index`; [`Problem::from_record`] reads it back. `ponder task generate --worked SEED` adds a
//! `worked_solution` ([`worked_solution`]: the reference with work lines along randomly chosen
//! routes, training data for the bundled policy), which `from_record` ignores.
//!
//! ```
//! use ponder_task::{check_solution, generate, parse_question, Difficulty};
//!
//! let problem = &generate(7, Difficulty::Medium, 1)[0];
//! let reread = parse_question(&problem.prompt()).expect("a generated question parses");
//! assert_eq!((reread.steps.clone(), reread.answer), (problem.steps.clone(), problem.answer));
//! let check = check_solution(problem, &problem.reference_solution());
//! assert!(check.correct && check.all_steps_valid);
//! ```

mod error;
mod generate;
mod parse;
mod problem;
mod solution;
mod templates;
mod worked;

pub use error::TaskError;
pub use generate::{generate, generate_one};
pub use parse::parse_question;
pub use problem::{problem_id, Difficulty, Limits, Op, Problem, Step, RECORD_VERSION};
pub use solution::{
    check_solution, final_answer, last_boxed, parse_step_line, render_answer, render_step,
    ParsedStep, SolutionCheck, StepCheck,
};
pub use worked::{render_work, routes, worked_solution, DIRECT_PROBABILITY, WORK_PREFIX};

/// The instruction that asks a model for the solution format, appended to the question by
/// [`Problem::prompt`]. It contains no `Step <digits>:` line and no integer `\boxed{}`, so it
/// never counts as part of a solution.
pub const SOLUTION_INSTRUCTIONS: &str = "Solve it step by step. Write one line per operation \
in the form \"Step k: <word> a <op> b = c.\" (word: add, subtract, multiply or divide; op: \
+, -, * or /), then finish with \"The answer is \\boxed{N}.\" where N is the final number.";
