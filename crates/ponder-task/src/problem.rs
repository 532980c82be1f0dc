//! The task's data model: difficulty levels, operations, steps, problems and their JSONL record.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::TaskError;
use crate::solution::{render_answer, render_step};

/// Version of the JSONL record written by [`Problem::to_record`] (field `version`).
pub const RECORD_VERSION: u64 = 1;

/// How hard a problem is: the number of steps, the operations and the size of the numbers.
///
/// | difficulty | steps | ops          | start, `+`/`-` operand | `*` by | `/` by | running total ≤ |
/// |------------|-------|--------------|------------------------|--------|--------|-----------------|
/// | easy       | 2–3   | `+ -`        | 2–20                   | –      | –      | 1 000           |
/// | medium     | 3–5   | `+ - * /`    | 2–100                  | 2–5    | 2–10   | 10 000          |
/// | hard       | 5–8   | `+ - * /`    | 2–1000                 | 2–12   | 2–20   | 1 000 000       |
///
/// Serialised and displayed as `"easy"`, `"medium"`, `"hard"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    Easy,
    Medium,
    Hard,
}

/// The numeric limits of one [`Difficulty`] (see the table there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Number of steps of a problem (inclusive).
    pub steps: RangeInclusive<usize>,
    /// Operations a step may use.
    pub ops: &'static [Op],
    /// Largest starting quantity and largest `+`/`-` operand (the smallest is 2).
    pub max_operand: i64,
    /// Largest multiplier (the smallest is 2); 0 where `*` is not used.
    pub max_multiplier: i64,
    /// Largest divisor (the smallest is 2); 0 where `/` is not used.
    pub max_divisor: i64,
    /// The running total never exceeds this.
    pub max_value: i64,
}

impl Difficulty {
    pub const ALL: [Difficulty; 3] = [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard];

    pub fn as_str(self) -> &'static str {
        match self {
            Difficulty::Easy => "easy",
            Difficulty::Medium => "medium",
            Difficulty::Hard => "hard",
        }
    }

    /// Number of steps of a problem of this difficulty: easy 2..=3, medium 3..=5, hard 5..=8.
    pub fn step_range(self) -> RangeInclusive<usize> {
        self.limits().steps
    }

    /// All the numeric limits of this difficulty.
    pub fn limits(self) -> Limits {
        match self {
            Difficulty::Easy => Limits {
                steps: 2..=3,
                ops: &[Op::Add, Op::Sub],
                max_operand: 20,
                max_multiplier: 0,
                max_divisor: 0,
                max_value: 1_000,
            },
            Difficulty::Medium => Limits {
                steps: 3..=5,
                ops: &Op::ALL,
                max_operand: 100,
                max_multiplier: 5,
                max_divisor: 10,
                max_value: 10_000,
            },
            Difficulty::Hard => Limits {
                steps: 5..=8,
                ops: &Op::ALL,
                max_operand: 1_000,
                max_multiplier: 12,
                max_divisor: 20,
                max_value: 1_000_000,
            },
        }
    }
}

impl fmt::Display for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Difficulty {
    type Err = TaskError;

    /// Accepts `easy`, `medium`, `hard` in any ASCII case, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Difficulty::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| TaskError::UnknownDifficulty {
                given: s.to_string(),
            })
    }
}

/// One arithmetic operation on the running total. Serialised as its symbol (`"+"`, `"-"`,
/// `"*"`, `"/"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "+")]
    Add,
    #[serde(rename = "-")]
    Sub,
    #[serde(rename = "*")]
    Mul,
    #[serde(rename = "/")]
    Div,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Add, Op::Sub, Op::Mul, Op::Div];

    /// `'+'`, `'-'`, `'*'`, `'/'`: the symbol written in solutions.
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }

    /// The short word that opens a solution step: `add`, `subtract`, `multiply`, `divide`.
    pub fn word(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Sub => "subtract",
            Op::Mul => "multiply",
            Op::Div => "divide",
        }
    }

    /// The operation written as `c`: the four ASCII symbols, and also `×`, `÷` and the Unicode
    /// minus `−`, which models sometimes write.
    pub fn from_symbol(c: char) -> Option<Op> {
        match c {
            '+' => Some(Op::Add),
            '-' | '\u{2212}' => Some(Op::Sub),
            '*' | '×' => Some(Op::Mul),
            '/' | '÷' => Some(Op::Div),
            _ => None,
        }
    }

    /// `lhs op rhs`, or `None` on overflow, division by zero or an inexact division (the task
    /// only has exact divisions).
    pub fn apply(self, lhs: i64, rhs: i64) -> Option<i64> {
        match self {
            Op::Add => lhs.checked_add(rhs),
            Op::Sub => lhs.checked_sub(rhs),
            Op::Mul => lhs.checked_mul(rhs),
            Op::Div => match lhs.checked_rem(rhs) {
                Some(0) => lhs.checked_div(rhs),
                _ => None,
            },
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.symbol())
    }
}

/// One step of a problem: `result = lhs op rhs`, where `lhs` is the running total before it.
/// Serialised as `{"op": "+", "lhs": 12, "rhs": 5, "result": 17}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Step {
    pub op: Op,
    pub lhs: i64,
    pub rhs: i64,
    pub result: i64,
}

/// One word problem: a starting quantity and a chain of operations on the running total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `synth-<difficulty>-<seed>-<index:06>` for generated problems (see [`problem_id`]),
    /// `synth-<difficulty>-parsed-<hash:016x>` for problems read back by
    /// [`crate::parse_question`].
    pub id: String,
    pub difficulty: Difficulty,
    /// The problem text (sentences separated by one space; see the crate docs).
    pub question: String,
    /// The starting quantity (`steps[0].lhs`).
    pub start: i64,
    pub steps: Vec<Step>,
    /// The final running total: `steps.last().result`, or `start` without steps.
    pub answer: i64,
}

/// The id of generated problem `index` of `(seed, difficulty)`: `synth-hard-7-000042`.
pub fn problem_id(seed: u64, difficulty: Difficulty, index: usize) -> String {
    format!("synth-{difficulty}-{seed}-{index:06}")
}

impl Problem {
    /// The fixed-format reference solution: one [`render_step`] line per step, then the
    /// [`render_answer`] line, joined by `"\n"` (no trailing newline).
    pub fn reference_solution(&self) -> String {
        let mut lines: Vec<String> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| render_step(i + 1, s.op, s.lhs, s.rhs, s.result))
            .collect();
        lines.push(render_answer(&self.answer.to_string()));
        lines.join("\n")
    }

    /// The default user prompt: the question, a blank line, then
    /// [`crate::SOLUTION_INSTRUCTIONS`]. [`crate::parse_question`] recognises the question
    /// inside it.
    pub fn prompt(&self) -> String {
        format!("{}\n\n{}", self.question, crate::SOLUTION_INSTRUCTIONS)
    }

    /// `(seed, index)` read back from a generated problem's id; `None` for any other id.
    pub fn seed_info(&self) -> Option<(u64, usize)> {
        let mut parts = self.id.split('-');
        let (Some("synth"), Some(d), Some(seed), Some(index), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        d.parse::<Difficulty>().ok()?;
        Some((seed.parse().ok()?, index.parse().ok()?))
    }

    /// The JSONL record of this problem (`serde_json` orders keys alphabetically):
    ///
    /// ```json
    /// {"answer": 39, "difficulty": "medium", "id": "synth-medium-7-000000", "index": 0,
    ///  "question": "...", "seed": 7, "solution": "Step 1: add 12 + 5 = 17.\n...",
    ///  "start": 12, "steps": [{"op": "+", "lhs": 12, "rhs": 5, "result": 17}, ...],
    ///  "version": 1}
    /// ```
    ///
    /// `seed` and `index` come from [`Problem::seed_info`] and are `null` when the id is not a
    /// generated one.
    pub fn to_record(&self) -> Value {
        let (seed, index) = match self.seed_info() {
            Some((s, i)) => (json!(s), json!(i)),
            None => (Value::Null, Value::Null),
        };
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "op": s.op.symbol().to_string(),
                    "lhs": s.lhs,
                    "rhs": s.rhs,
                    "result": s.result,
                })
            })
            .collect();
        json!({
            "version": RECORD_VERSION,
            "id": self.id,
            "difficulty": self.difficulty.as_str(),
            "question": self.question,
            "start": self.start,
            "steps": steps,
            "answer": self.answer,
            "solution": self.reference_solution(),
            "seed": seed,
            "index": index,
        })
    }

    /// Reads a record written by [`Problem::to_record`] back, checking that the steps form a
    /// valid chain (see [`Problem::validate`]). `solution`, `seed` and `index` are not needed
    /// and not read; unknown fields are ignored.
    pub fn from_record(record: &Value) -> Result<Problem, TaskError> {
        fn field<'a>(record: &'a Value, name: &'static str) -> Result<&'a Value, TaskError> {
            record.get(name).ok_or(TaskError::InvalidRecord {
                field: name,
                reason: "is missing".to_string(),
            })
        }
        fn string(record: &Value, name: &'static str) -> Result<String, TaskError> {
            field(record, name)?
                .as_str()
                .map(str::to_string)
                .ok_or(TaskError::InvalidRecord {
                    field: name,
                    reason: "is not a string".to_string(),
                })
        }
        fn int(record: &Value, name: &'static str) -> Result<i64, TaskError> {
            field(record, name)?
                .as_i64()
                .ok_or(TaskError::InvalidRecord {
                    field: name,
                    reason: "is not an integer".to_string(),
                })
        }
        if let Some(v) = record.get("version") {
            if v.as_u64() != Some(RECORD_VERSION) {
                return Err(TaskError::InvalidRecord {
                    field: "version",
                    reason: format!("is {v}, expected {RECORD_VERSION}"),
                });
            }
        }
        let difficulty = string(record, "difficulty")?
            .parse()
            .map_err(|e: TaskError| TaskError::InvalidRecord {
                field: "difficulty",
                reason: e.to_string(),
            })?;
        let steps: Vec<Step> =
            serde_json::from_value(field(record, "steps")?.clone()).map_err(|e| {
                TaskError::InvalidRecord {
                    field: "steps",
                    reason: e.to_string(),
                }
            })?;
        let problem = Problem {
            id: string(record, "id")?,
            difficulty,
            question: string(record, "question")?,
            start: int(record, "start")?,
            steps,
            answer: int(record, "answer")?,
        };
        problem.validate()?;
        Ok(problem)
    }

    /// Checks that the steps form a chain: `steps[0].lhs == start`, each step's `lhs` is the
    /// previous `result`, each `lhs op rhs = result` holds ([`Op::apply`]), and `answer` is the
    /// last result (or `start` without steps).
    pub fn validate(&self) -> Result<(), TaskError> {
        let mut running = self.start;
        for (i, s) in self.steps.iter().enumerate() {
            if s.lhs != running {
                return Err(TaskError::InvalidRecord {
                    field: "steps",
                    reason: format!("step {} starts from {}, expected {running}", i + 1, s.lhs),
                });
            }
            if s.op.apply(s.lhs, s.rhs) != Some(s.result) {
                return Err(TaskError::InvalidRecord {
                    field: "steps",
                    reason: format!(
                        "step {} says {} {} {} = {}, which is false",
                        i + 1,
                        s.lhs,
                        s.op,
                        s.rhs,
                        s.result
                    ),
                });
            }
            running = s.result;
        }
        if self.answer != running {
            return Err(TaskError::InvalidRecord {
                field: "answer",
                reason: format!("is {}, the steps give {running}", self.answer),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_difficulty(input: &str, expected: Option<Difficulty>) {
        assert_eq!(
            input.parse::<Difficulty>().ok(),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn difficulty_from_str() {
        check_difficulty("easy", Some(Difficulty::Easy));
        check_difficulty("medium", Some(Difficulty::Medium));
        check_difficulty("hard", Some(Difficulty::Hard));
        check_difficulty(" Hard ", Some(Difficulty::Hard));
        check_difficulty("HARD", Some(Difficulty::Hard));
        check_difficulty("", None);
        check_difficulty("extreme", None);
        check_difficulty("hardd", None);
    }

    #[test]
    fn difficulty_error_lists_valid_values() {
        let err = "extreme".parse::<Difficulty>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown difficulty `extreme`: expected one of easy, medium, hard")
        );
    }

    #[test]
    fn difficulty_display_and_serde_agree() {
        for d in Difficulty::ALL {
            assert_eq!(d.to_string(), d.as_str());
            assert_eq!(serde_json::to_value(d).ok(), Some(json!(d.as_str())));
            assert_eq!(d.as_str().parse::<Difficulty>().ok(), Some(d));
        }
    }

    #[test]
    fn step_ranges() {
        assert_eq!(Difficulty::Easy.step_range(), 2..=3);
        assert_eq!(Difficulty::Medium.step_range(), 3..=5);
        assert_eq!(Difficulty::Hard.step_range(), 5..=8);
    }

    fn check_apply(op: Op, lhs: i64, rhs: i64, expected: Option<i64>) {
        assert_eq!(op.apply(lhs, rhs), expected, "{lhs} {op} {rhs}");
    }

    #[test]
    fn apply() {
        check_apply(Op::Add, 12, 5, Some(17));
        check_apply(Op::Sub, 17, 4, Some(13));
        check_apply(Op::Sub, 4, 17, Some(-13));
        check_apply(Op::Mul, 13, 3, Some(39));
        check_apply(Op::Div, 39, 3, Some(13));
        check_apply(Op::Div, 7, 2, None); // inexact
        check_apply(Op::Div, 7, 0, None);
        check_apply(Op::Div, i64::MIN, -1, None);
        check_apply(Op::Add, i64::MAX, 1, None);
        check_apply(Op::Mul, i64::MAX, 2, None);
    }

    #[test]
    fn op_symbols_and_serde() {
        for (op, sym) in [
            (Op::Add, '+'),
            (Op::Sub, '-'),
            (Op::Mul, '*'),
            (Op::Div, '/'),
        ] {
            assert_eq!(op.symbol(), sym);
            assert_eq!(Op::from_symbol(sym), Some(op));
            assert_eq!(serde_json::to_value(op).ok(), Some(json!(sym.to_string())));
        }
        assert_eq!(Op::from_symbol('×'), Some(Op::Mul));
        assert_eq!(Op::from_symbol('÷'), Some(Op::Div));
        assert_eq!(Op::from_symbol('x'), None);
    }

    #[test]
    fn seed_info_from_id() {
        let mut p = Problem {
            id: problem_id(7, Difficulty::Hard, 42),
            difficulty: Difficulty::Hard,
            question: String::new(),
            start: 1,
            steps: vec![],
            answer: 1,
        };
        assert_eq!(p.id, "synth-hard-7-000042");
        assert_eq!(p.seed_info(), Some((7, 42)));
        p.id = "synth-hard-parsed-00000000000000ab".to_string();
        assert_eq!(p.seed_info(), None);
        p.id = "synth-hard-7-42-1".to_string();
        assert_eq!(p.seed_info(), None);
        p.id = "other-hard-7-42".to_string();
        assert_eq!(p.seed_info(), None);
    }
}
