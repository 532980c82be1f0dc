//! The fixed solution format: rendering step and answer lines, reading step lines back, and
//! checking a solution against a problem.

use serde::Serialize;

use crate::problem::{Op, Problem, Step};

/// One solution step line: `Step <k>: <word> <lhs> <op> <rhs> = <result>.` with the word
/// from [`Op::word`], e.g. `Step 2: subtract 17 - 4 = 13.` The one function that writes step
/// lines, for reference solutions and for simulated (possibly wrong) ones alike; nothing here
/// checks that the arithmetic holds.
pub fn render_step(k: usize, op: Op, lhs: i64, rhs: i64, result: i64) -> String {
    format!(
        "Step {k}: {} {lhs} {} {rhs} = {result}.",
        op.word(),
        op.symbol()
    )
}

/// The final line of a solution: `The answer is \boxed{<answer>}.` `answer` is written as
/// given (a simulator may write a non-number).
pub fn render_answer(answer: &str) -> String {
    format!("The answer is \\boxed{{{answer}}}.")
}

/// The numbers and operation of a step line, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParsedStep {
    /// The `k` of `Step k:`.
    pub index: usize,
    pub lhs: i64,
    pub op: Op,
    pub rhs: i64,
    pub result: i64,
}

impl ParsedStep {
    /// The line in the canonical format ([`render_step`]).
    pub fn render(&self) -> String {
        render_step(self.index, self.op, self.lhs, self.rhs, self.result)
    }
}

/// Reads a step line: `Step <k>:`, any words, then `<lhs> <op> <rhs> = <result>`. The first
/// `Step <k>:` header of the line counts.
///
/// Tolerant of what models vary: `step` in any case and anywhere in the line, as a word of
/// its own (so `- Step 1:` and `**Step 1:**` work), any spaces around `k`, `:`, the operator
/// and `=` (including none), signed numbers (`-3`), the operators `×`, `÷` and `−` besides
/// `+ - * /`, and anything after the result (a period, words). The expression is the first
/// `a op b = c` after the colon that starts a term (not right after a digit, `=`, or an
/// operator that follows a digit), so `12 + 5 + 3 = 20` and `17 - 4 = 13.5` are not misread as `5 + 3 = 20` or
/// `17 - 4 = 13`. Integers only, each fitting in `i64`. `None` when there is no such line;
/// never panics.
pub fn parse_step_line(line: &str) -> Option<ParsedStep> {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(found) = find_ignore_ascii_case(bytes, from, b"step") {
        from = found + 1;
        if found > 0 && bytes.get(found - 1).is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        let mut c = Cursor::new(line, found + 4);
        c.skip_spaces();
        let Some(index) = c.unsigned() else { continue };
        c.skip_spaces();
        if !c.eat(':') {
            continue;
        }
        // A later header could not find an expression this one missed: its search would
        // cover a suffix of this one's, with the same candidates.
        let (lhs, op, rhs, result) = find_expression(line, c.pos)?;
        return Some(ParsedStep {
            index,
            lhs,
            op,
            rhs,
            result,
        });
    }
    None
}

/// The result of checking one step line.
///
/// For a solution whose step 2 writes a wrong result and whose later steps carry it on
/// correctly (`17 - 4 = 14`, then `14 * 3 = 42`), step 2 has `arithmetic_ok = false` and
/// `consistent = true`, and step 3 has `arithmetic_ok = true` and `consistent = true`:
/// exactly the step that introduced the error is flagged, both later steps have
/// `matches_reference = false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepCheck {
    /// The `k` of `Step k:` as written (it need not count up from 1).
    pub index: usize,
    /// The line, with surrounding whitespace trimmed.
    pub line: String,
    /// The numbers as written.
    pub parsed: ParsedStep,
    /// `lhs op rhs = result` holds as written (exactly, for division; [`Op::apply`]).
    pub arithmetic_ok: bool,
    /// The step follows from what was written before it and from the problem: its `lhs` equals
    /// the written `result` of the previous step line (the problem's start value for the first
    /// step line), and its operator and `rhs` equal those of the problem's step `k`
    /// (false when the problem has no step `k`).
    pub consistent: bool,
    /// `lhs`, operator, `rhs` and `result` all equal the problem's step `k`: the step is what
    /// the reference solution writes.
    pub matches_reference: bool,
}

/// The result of checking a solution against a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SolutionCheck {
    /// Every line holding a step ([`parse_step_line`]), in text order.
    pub steps: Vec<StepCheck>,
    /// The integer in the last balanced `\boxed{...}` ([`final_answer`]).
    pub final_answer: Option<i64>,
    /// `final_answer` equals the problem's answer.
    pub correct: bool,
    /// The step lines are exactly steps `1..=n` of the problem in order (as many as it has),
    /// each `arithmetic_ok` and `consistent`. Then every step also matches the reference.
    pub all_steps_valid: bool,
}

impl SolutionCheck {
    /// Position in [`SolutionCheck::steps`] of the first step line that is not both
    /// `arithmetic_ok` and `consistent`.
    pub fn first_error(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| !(s.arithmetic_ok && s.consistent))
    }
}

/// Checks `solution` against `problem`: every line holding a step is read with
/// [`parse_step_line`] (at most one step per line; other lines are ignored) and checked as
/// [`StepCheck`] documents, and the final answer is read with [`final_answer`]. Never panics,
/// whatever the text.
pub fn check_solution(problem: &Problem, solution: &str) -> SolutionCheck {
    let mut steps = Vec::new();
    let mut previous = problem.start;
    for line in solution.lines() {
        let Some(parsed) = parse_step_line(line) else {
            continue;
        };
        let gold: Option<&Step> = parsed
            .index
            .checked_sub(1)
            .and_then(|i| problem.steps.get(i));
        let consistent = parsed.lhs == previous
            && gold.is_some_and(|g| g.op == parsed.op && g.rhs == parsed.rhs);
        let matches_reference = gold.is_some_and(|g| {
            *g == Step {
                op: parsed.op,
                lhs: parsed.lhs,
                rhs: parsed.rhs,
                result: parsed.result,
            }
        });
        steps.push(StepCheck {
            index: parsed.index,
            line: line.trim().to_string(),
            parsed,
            arithmetic_ok: parsed.op.apply(parsed.lhs, parsed.rhs) == Some(parsed.result),
            consistent,
            matches_reference,
        });
        previous = parsed.result;
    }
    let all_steps_valid = steps.len() == problem.steps.len()
        && steps
            .iter()
            .enumerate()
            .all(|(i, s)| s.index == i + 1 && s.arithmetic_ok && s.consistent);
    let final_answer = final_answer(solution);
    SolutionCheck {
        steps,
        final_answer,
        correct: final_answer == Some(problem.answer),
        all_steps_valid,
    }
}

/// The integer in the last balanced `\boxed{...}` of `text` (the one that opens last; an
/// unclosed `\boxed{` is skipped), or `None` when there is none or its content is not an
/// integer. The content may have surrounding spaces and `$`, a sign, and commas between
/// groups of three digits (`\boxed{1,234}`).
pub fn final_answer(text: &str) -> Option<i64> {
    parse_integer(last_boxed(text)?)
}

/// The content of the last balanced `\boxed{...}` of `text`, braces inside it balanced.
pub fn last_boxed(text: &str) -> Option<&str> {
    const OPEN: &[u8] = b"\\boxed{";
    let bytes = text.as_bytes();
    // One pass matching braces with a stack: `(position of '{', opens a \boxed)`.
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut best: Option<(usize, usize)> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' => {
                let boxed = i + 1 >= OPEN.len() && bytes.get(i + 1 - OPEN.len()..=i) == Some(OPEN);
                stack.push((i, boxed));
            }
            b'}' => {
                if let Some((open, true)) = stack.pop() {
                    if best.is_none_or(|(b, _)| open > b) {
                        best = Some((open, i));
                    }
                }
            }
            _ => {}
        }
    }
    let (open, close) = best?;
    text.get(open + 1..close)
}

/// An integer written as `42`, `-42`, `+42`, `−42`, `1,234`, with surrounding whitespace and
/// `$` ignored.
fn parse_integer(s: &str) -> Option<i64> {
    let s = s.trim().trim_matches('$').trim();
    let (negative, digits) = if let Some(rest) = s.strip_prefix('-') {
        (true, rest)
    } else if let Some(rest) = s.strip_prefix('\u{2212}') {
        (true, rest)
    } else {
        (false, s.strip_prefix('+').unwrap_or(s))
    };
    let groups: Vec<&str> = digits.split(',').collect();
    let grouping_ok = groups.iter().enumerate().all(|(i, g)| {
        !g.is_empty()
            && g.bytes().all(|b| b.is_ascii_digit())
            && (groups.len() == 1 || (i == 0 && g.len() <= 3) || g.len() == 3)
    });
    if !grouping_ok {
        return None;
    }
    let joined: String = groups.concat();
    let magnitude: i128 = joined.parse().ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Position of the first ASCII-case-insensitive occurrence of `needle` at or after `from`.
fn find_ignore_ascii_case(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let last = hay.len().checked_sub(needle.len())?;
    (from..=last).find(|&i| {
        hay.get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// The first `a op b = c` in `line` from byte `from` that starts a term: not right after a
/// digit, an `=`, or an operator that follows a digit (`12 + 5 + 3` has no term start after
/// `12`, but `** 12` does).
fn find_expression(line: &str, from: usize) -> Option<(i64, Op, i64, i64)> {
    // The last two non-space characters before the current one, the last first.
    let mut prev: [Option<char>; 2] = [None, None];
    for (offset, ch) in line.get(from..)?.char_indices() {
        let pos = from + offset;
        let starts_number = ch.is_ascii_digit()
            || (ch == '-'
                && line
                    .get(pos + 1..)
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())));
        let after_term = match prev {
            [Some(p), _] if p.is_ascii_digit() || p == '=' => true,
            [Some(p), Some(q)] => Op::from_symbol(p).is_some() && q.is_ascii_digit(),
            _ => false,
        };
        if starts_number && !after_term {
            if let Some(found) = expression_at(line, pos) {
                return Some(found);
            }
        }
        if !ch.is_whitespace() {
            prev = [Some(ch), prev[0]];
        }
    }
    None
}

/// `a op b = c` exactly at `pos`, with the result not running on into more digits.
fn expression_at(line: &str, pos: usize) -> Option<(i64, Op, i64, i64)> {
    let mut c = Cursor::new(line, pos);
    let lhs = c.signed()?;
    c.skip_spaces();
    let op = Op::from_symbol(c.next_char()?)?;
    c.skip_spaces();
    let rhs = c.signed()?;
    c.skip_spaces();
    if !c.eat('=') {
        return None;
    }
    c.skip_spaces();
    let result = c.signed()?;
    let rest = c.rest();
    let runs_on = rest.starts_with(|ch: char| ch.is_ascii_digit())
        || ((rest.starts_with('.') || rest.starts_with(','))
            && rest
                .get(1..)
                .is_some_and(|r| r.starts_with(|ch: char| ch.is_ascii_digit())));
    (!runs_on).then_some((lhs, op, rhs, result))
}

/// A read position in a line.
struct Cursor<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a str, pos: usize) -> Self {
        Cursor { line, pos }
    }

    fn rest(&self) -> &'a str {
        self.line.get(self.pos..).unwrap_or("")
    }

    fn next_char(&mut self) -> Option<char> {
        let ch = self.rest().chars().next()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn eat(&mut self, want: char) -> bool {
        if self.rest().starts_with(want) {
            self.pos += want.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t']).len();
    }

    fn digits(&mut self) -> Option<&'a str> {
        let rest = self.rest();
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        self.pos += n;
        rest.get(..n)
    }

    fn unsigned(&mut self) -> Option<usize> {
        self.digits()?.parse().ok()
    }

    fn signed(&mut self) -> Option<i64> {
        let negative = self.eat('-');
        let digits = self.digits()?;
        if negative {
            format!("-{digits}").parse().ok()
        } else {
            digits.parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_line(line: &str, expected: Option<(usize, i64, char, i64, i64)>) {
        let got = parse_step_line(line).map(|p| (p.index, p.lhs, p.op.symbol(), p.rhs, p.result));
        assert_eq!(got, expected, "line {line:?}");
    }

    #[test]
    fn step_lines() {
        check_line("Step 1: add 12 + 5 = 17.", Some((1, 12, '+', 5, 17)));
        check_line("Step 2: subtract 17 - 4 = 13.", Some((2, 17, '-', 4, 13)));
        check_line("Step 3: multiply 13 * 3 = 39.", Some((3, 13, '*', 3, 39)));
        check_line("Step 4: divide 39 / 3 = 13.", Some((4, 39, '/', 3, 13)));
        // Spacing, case, markdown, no words, no period, trailing words.
        check_line("  Step   12 :  add   12+5=17", Some((12, 12, '+', 5, 17)));
        check_line(
            "- **step 1:** 12 + 5 = 17 apples",
            Some((1, 12, '+', 5, 17)),
        );
        check_line("STEP 1:12 + 5 = 17.", Some((1, 12, '+', 5, 17)));
        // Signed numbers, Unicode operators.
        check_line("Step 2: subtract -3 - -4 = 1.", Some((2, -3, '-', -4, 1)));
        check_line("Step 2: 17 -4 = 13", Some((2, 17, '-', 4, 13)));
        check_line("Step 3: 13 × 3 = 39.", Some((3, 13, '*', 3, 39)));
        check_line("Step 3: 39 ÷ 3 = 13.", Some((3, 39, '/', 3, 13)));
        check_line("Step 3: 17 − 4 = 13.", Some((3, 17, '-', 4, 13)));
        // Wrong arithmetic is still read as written.
        check_line("Step 2: subtract 17 - 4 = 14.", Some((2, 17, '-', 4, 14)));
        // Words with a number before the expression.
        check_line(
            "Step 2: from step 1, 17 - 4 = 13.",
            Some((2, 17, '-', 4, 13)),
        );
        // A first "step" that is not a header.
        check_line(
            "Let me go step by step. Step 1: 2 + 2 = 4.",
            Some((1, 2, '+', 2, 4)),
        );
        // Not step lines.
        check_line("", None);
        check_line("Step 1: add 12 + 5 =", None);
        check_line("Step 1: add 12 + 5", None);
        check_line("Step 1 add 12 + 5 = 17.", None);
        check_line("Step: add 12 + 5 = 17.", None);
        check_line("Footstep 1: 12 + 5 = 17.", None);
        check_line("12 + 5 = 17.", None);
        check_line("Step 1: 12 + 5 + 3 = 20.", None);
        check_line("Step 1: 12 + 5 = 17.5", None);
        check_line("Step 1: 12 + 5 = 1,700", None);
        check_line("Step 1: 12 % 5 = 2.", None);
        check_line("Step 99999999999999999999999: 1 + 1 = 2.", None);
        check_line("Step 1: 1 + 1 = 99999999999999999999.", None);
    }

    #[test]
    fn rendered_steps_read_back() {
        for (k, op, lhs, rhs, result) in [
            (1, Op::Add, 12, 5, 17),
            (2, Op::Sub, 17, 4, -13),
            (7, Op::Mul, -13, -3, 39),
            (8, Op::Div, i64::MIN, 1, i64::MIN),
        ] {
            let line = render_step(k, op, lhs, rhs, result);
            let parsed = parse_step_line(&line);
            assert_eq!(
                parsed,
                Some(ParsedStep {
                    index: k,
                    lhs,
                    op,
                    rhs,
                    result
                }),
                "{line}"
            );
            assert_eq!(parsed.map(|p| p.render()), Some(line));
        }
    }

    #[test]
    fn rendering() {
        assert_eq!(
            render_step(2, Op::Sub, 17, 4, 13),
            "Step 2: subtract 17 - 4 = 13."
        );
        assert_eq!(render_answer("42"), "The answer is \\boxed{42}.");
        assert_eq!(render_answer("x"), "The answer is \\boxed{x}.");
    }

    fn check_answer(text: &str, expected: Option<i64>) {
        assert_eq!(final_answer(text), expected, "text {text:?}");
    }

    #[test]
    fn final_answers() {
        check_answer("The answer is \\boxed{42}.", Some(42));
        check_answer("\\boxed{ -7 }", Some(-7));
        check_answer("\\boxed{$1,234$}", Some(1234));
        check_answer("\\boxed{+5}", Some(5));
        check_answer("\\boxed{1} then \\boxed{2}", Some(2));
        // The last balanced one; an unclosed one at the end is skipped.
        check_answer("\\boxed{42} and \\boxed{4", Some(42));
        // The last one is not an integer: no answer, no fall back to an earlier one.
        check_answer("\\boxed{42} \\boxed{forty}", None);
        check_answer("\\boxed{4.5}", None);
        check_answer("\\boxed{12,34}", None);
        check_answer("\\boxed{}", None);
        check_answer("The answer is 42.", None);
        check_answer("\\boxed{99999999999999999999}", None);
        check_answer("\\boxed{-9223372036854775808}", Some(i64::MIN));
        // Braces inside are balanced; the inner box opens last.
        check_answer("\\boxed{\\boxed{3}}", Some(3));
        check_answer("\\boxed{{3}}", None);
        check_answer("} \\boxed{8} {", Some(8));
    }
}
