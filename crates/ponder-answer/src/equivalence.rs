//! Answer equivalence as used to group votes, and the light normalisation helpers.
//!
//! [`equivalent`] and [`AnswerKey`] decide with the math grader ([`mod@crate::grade`], clustering
//! settings). The light helpers ([`normalize`], [`parse_number`], [`numbers_equal`]: string
//! normalisation, exact rationals and a relative tolerance) are kept for callers that read them;
//! they no longer decide equivalence.

use std::sync::OnceLock;

use crate::grade::{compare_prepared, GradeOptions, Prepared};

/// Relative tolerance for numbers that are not exact rationals (reference §2.7.2: 1e−4).
pub const REL_TOL: f64 = 1e-4;

/// Normalises an answer's surface form: LaTeX wrappers and spacing removed, `\dfrac`/`\tfrac`
/// read as `\frac`, thousands separators and a trailing full stop dropped, lower-cased.
pub fn normalize(answer: &str) -> String {
    let mut s = answer.trim().to_string();
    for (from, to) in [
        ("\\left", ""),
        ("\\right", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\ ", ""),
        ("{,}", ""),
        ("\\%", "%"),
        ("\\$", ""),
        ("$", ""),
    ] {
        s = s.replace(from, to);
    }
    s = unwrap_command(&s, "\\text{");
    s = unwrap_command(&s, "\\mathrm{");
    s = unwrap_command(&s, "\\textbf{");
    s.retain(|c| !c.is_whitespace());
    let s = s.trim_end_matches('.');
    let s = strip_thousands(s);
    s.to_lowercase()
}

/// Replaces `\cmd{x}` by `x` (balanced braces), everywhere.
fn unwrap_command(s: &str, command: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(command) {
        out.push_str(&rest[..pos]);
        let inner_start = pos + command.len();
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in rest[inner_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(inner_start + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(end) => {
                out.push_str(&rest[inner_start..end]);
                rest = &rest[end + 1..];
            }
            None => {
                out.push_str(&rest[pos..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Drops commas that separate thousands groups (`1,234,567` → `1234567`), leaving tuples alone.
fn strip_thousands(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        if c == ',' {
            let before = i > 0 && bytes[i - 1].is_ascii_digit();
            let group = bytes.len() >= i + 4
                && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
                && bytes.get(i + 4).is_none_or(|b| !b.is_ascii_digit());
            if before && group {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// A number read from a normalised answer: an exact rational when it is one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// `num / den` in lowest terms, `den > 0`.
    Rational {
        num: i128,
        den: i128,
    },
    Real(f64),
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn rational(num: i128, den: i128) -> Option<Number> {
    if den == 0 {
        return None;
    }
    let g = gcd(num, den).max(1);
    let sign = if den < 0 { -1 } else { 1 };
    Some(Number::Rational {
        num: sign * num / g,
        den: sign * den / g,
    })
}

impl Number {
    pub fn to_f64(self) -> f64 {
        match self {
            Number::Rational { num, den } => num as f64 / den as f64,
            Number::Real(x) => x,
        }
    }
}

/// Reads a normalised answer as a number: integers, decimals, `a/b`, `\frac{a}{b}`, `\frac ab`,
/// a leading sign, and a trailing `%` (kept as the number itself, not divided by 100).
pub fn parse_number(normalized: &str) -> Option<Number> {
    let s = normalized.strip_suffix('%').unwrap_or(normalized);
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let value = if let Some(frac) = s.strip_prefix("\\frac") {
        let (a, b) = split_frac(frac)?;
        divide(parse_plain(a)?, parse_plain(b)?)?
    } else if let Some((a, b)) = s.split_once('/') {
        divide(parse_plain(a)?, parse_plain(b)?)?
    } else {
        parse_plain(s)?
    };
    Some(if negative { negate(value) } else { value })
}

fn negate(n: Number) -> Number {
    match n {
        Number::Rational { num, den } => Number::Rational { num: -num, den },
        Number::Real(x) => Number::Real(-x),
    }
}

fn divide(a: Number, b: Number) -> Option<Number> {
    match (a, b) {
        (Number::Rational { num: an, den: ad }, Number::Rational { num: bn, den: bd }) => {
            rational(an.checked_mul(bd)?, ad.checked_mul(bn)?)
        }
        _ => {
            let d = b.to_f64();
            (d != 0.0).then(|| Number::Real(a.to_f64() / d))
        }
    }
}

/// `{a}{b}` or `ab` (single digits) after `\frac`.
fn split_frac(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('{') {
        let close = rest.find('}')?;
        let a = &rest[..close];
        let rest = rest[close + 1..].strip_prefix('{')?;
        let b = rest.strip_suffix('}')?;
        (!b.contains('{')).then_some((a, b))
    } else if s.len() == 2 && s.is_ascii() {
        Some((&s[..1], &s[1..]))
    } else {
        None
    }
}

/// An unsigned decimal: `12`, `0.5`, `.5`, `3.` → exact rational.
fn parse_plain(s: &str) -> Option<Number> {
    if s.is_empty() || s.len() > 30 {
        return s
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Number::Real);
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if !(int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    let num: i128 = digits.parse().ok()?;
    let den = 10i128.checked_pow(frac.len() as u32)?;
    rational(num, den)
}

/// Whether two numbers are equal: exactly for rationals, else within [`REL_TOL`].
pub fn numbers_equal(a: Number, b: Number) -> bool {
    match (a, b) {
        (Number::Rational { num: an, den: ad }, Number::Rational { num: bn, den: bd }) => {
            an == bn && ad == bd
        }
        _ => {
            let (x, y) = (a.to_f64(), b.to_f64());
            let scale = x.abs().max(y.abs());
            (x - y).abs() <= REL_TOL * scale || (x - y).abs() < 1e-12
        }
    }
}

/// An answer prepared once for repeated comparison (voting): its light normalised form and
/// number (kept for callers that read them), and its parsed form, which decides equivalence.
#[derive(Debug, Clone)]
pub struct AnswerKey {
    pub normalized: String,
    pub number: Option<Number>,
    prepared: Prepared,
}

impl PartialEq for AnswerKey {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized && self.prepared.key == other.prepared.key
    }
}

fn clustering_options() -> &'static GradeOptions {
    static OPTIONS: OnceLock<GradeOptions> = OnceLock::new();
    OPTIONS.get_or_init(GradeOptions::clustering)
}

impl AnswerKey {
    pub fn new(answer: &str) -> Self {
        let normalized = normalize(answer);
        let number = parse_number(&normalized);
        let prepared = Prepared::new(answer, clustering_options());
        AnswerKey {
            normalized,
            number,
            prepared,
        }
    }

    /// The grader's canonical form: equal keys are equivalent answers (a cheap first test).
    pub fn canonical(&self) -> &str {
        &self.prepared.key
    }

    /// The exact value when the answer is an exact rational number.
    pub fn exact_value(&self) -> Option<(i128, i128)> {
        self.prepared.exact().map(|q| (q.num, q.den))
    }

    /// Equivalent by the math grader with the clustering settings (numbers, expressions,
    /// tuples, sets, intervals, matrices; no percent-as-fraction; no extraction).
    pub fn equivalent(&self, other: &AnswerKey) -> bool {
        compare_prepared(&self.prepared, &other.prepared, clustering_options()).is_equivalent()
    }
}

/// Whether two answers are the same answer.
pub fn equivalent(a: &str, b: &str) -> bool {
    AnswerKey::new(a).equivalent(&AnswerKey::new(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str, same: bool) {
        assert_eq!(equivalent(a, b), same, "{a:?} vs {b:?}");
    }

    #[test]
    fn equivalence_cases() {
        check("42", "42.0", true);
        check("0.5", "\\frac{1}{2}", true);
        check("0.5", "\\dfrac12", true);
        check("1/3", "\\frac{2}{6}", true);
        check("-3", "- 3", true);
        check("1,234", "1234", true);
        check("\\text{12 }", "12", true);
        check("\\$5", "5", true);
        check("50\\%", "50%", true);
        check("3.0", "3", true);
        check("1/3", "0.3333", false); // exact rationals must match exactly
        check("7", "8", false);
        check("(1,2)", "(1, 2)", true);
        check("(1,2)", "(2,1)", false);
        check("x+1", "x + 1", true);
        check("x+1", "1+x", true);
        check("\\text{Evelyn}", "evelyn", true);
        check("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", true);
        check("x^2-1", "(x-1)(x+1)", true);
        check("x^2+1", "(x+1)^2", false);
    }

    #[test]
    fn exact_decimals_differ_when_not_equal() {
        // Both are exact rationals, so the tolerance does not apply to them.
        assert!(!numbers_equal(
            parse_number("3.14159").expect("number"),
            parse_number("3.14160").expect("number")
        ));
    }

    #[test]
    fn reals_compare_with_relative_tolerance() {
        // 1e-4 relative: 100000 vs 100000.5 differ by 5e-6 relative → equal; vs 100020 → 2e-4 → not.
        assert!(numbers_equal(
            Number::Real(100000.0),
            Number::Real(100000.5)
        ));
        assert!(!numbers_equal(
            Number::Real(100000.0),
            Number::Real(100020.0)
        ));
        assert!(numbers_equal(
            Number::Real(0.5),
            Number::Rational { num: 1, den: 2 }
        ));
    }

    #[test]
    fn thousands_only_in_groups_of_three() {
        assert_eq!(normalize("1,234,567"), "1234567");
        assert_eq!(normalize("1,23"), "1,23");
        assert_eq!(normalize("12,345.5"), "12345.5");
    }

    #[test]
    fn numbers_parse_exactly() {
        assert_eq!(
            parse_number("12"),
            Some(Number::Rational { num: 12, den: 1 })
        );
        assert_eq!(
            parse_number("-0.25"),
            Some(Number::Rational { num: -1, den: 4 })
        );
        assert_eq!(
            parse_number("\\frac{3}{6}"),
            Some(Number::Rational { num: 1, den: 2 })
        );
        assert_eq!(parse_number("1/0"), None);
        assert_eq!(parse_number("abc"), None);
        assert_eq!(parse_number(""), None);
    }
}
