//! The math grader: is a prediction the same answer as the gold one?
//!
//! Both sides go through extraction ([`crate::extract`]) and parsing ([`crate::expr`]); the
//! parsed forms are compared by shape (numbers, expressions, tuples, intervals, sets, matrices,
//! equations, inequalities). Numbers compare exactly when both are exact, by rounding to
//! [`GradeOptions::precision`] decimal places when either side was written as a decimal, and
//! expressions with variables by evaluation at seeded pseudo-random points. The policy is in
//! `docs/grading.md`.
//!
//! Every comparison is bounded: parsing has length, token, depth and node limits, exact
//! arithmetic refuses big results, and a time budget turns a long comparison into
//! [`Verdict::Undecided`].

use std::time::{Duration, Instant};

use ponder_core::rng::stable_hash;
use serde::{Deserialize, Serialize};

use crate::expr::{
    eval_exact, eval_f64, has_approx, parse, symbols, visit, Constant, Literal, Node, ParseError,
    ParseLimits, Q,
};
use crate::extract::{extract_answer, Extracted, Extractor, Method};
use crate::latex::RelOp;
use crate::poly::rational_equal;

/// The outcome of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Equivalent,
    NotEquivalent,
    /// A limit was reached (size, depth, time) or the evaluation could not decide.
    Undecided,
}

impl Verdict {
    /// `true` only for [`Verdict::Equivalent`].
    pub fn is_equivalent(self) -> bool {
        self == Verdict::Equivalent
    }

    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::NotEquivalent, _) | (_, Verdict::NotEquivalent) => Verdict::NotEquivalent,
            (Verdict::Undecided, _) | (_, Verdict::Undecided) => Verdict::Undecided,
            _ => Verdict::Equivalent,
        }
    }
}

/// Grading settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradeOptions {
    /// Decimal places to which both numbers are rounded when either was written as a decimal
    /// with a fractional part (`0.333333` against `1/3`). Default: 6.
    pub precision: u32,
    /// Relative tolerance for exact-looking values that had to be evaluated in floating point
    /// (`\sqrt{8}` against `2\sqrt{2}`). Default: 1e-9.
    pub rel_tol: f64,
    /// Variables must have the same names on both sides. When false, `f(x)` matches `f(y)` (the
    /// prediction's variables are renamed to the gold's, in sorted order, when there are as many).
    /// Default: true.
    pub strict: bool,
    /// Let an inequality in the prediction answer a gold interval (`-2 ≤ x ≤ 7` for `[-2, 7]`).
    /// The other direction is always allowed. Default: false.
    pub allow_set_relation: bool,
    /// Let `p%` on one side match `p/100` on the other (as well as `p`). Default: true.
    pub percent_fraction: bool,
    /// Run extraction on the gold text as well (a gold without a recognisable answer is used
    /// whole). Default: true.
    pub extract_gold: bool,
    /// How answers are found in the texts. Default: [`Extractor::default`].
    pub extract: Extractor,
    /// Seed of the evaluation points. Default: 0.
    pub seed: u64,
    /// Evaluation points for expressions with variables. Default: 8.
    pub n_points: usize,
    /// Time budget of one comparison, in milliseconds. Default: 200.
    pub budget_ms: u64,
    /// Longest answer that is parsed, in bytes (longer ones only compare as text). Default: 20000.
    pub max_answer_len: usize,
}

impl Default for GradeOptions {
    fn default() -> Self {
        GradeOptions {
            precision: 6,
            rel_tol: 1e-9,
            strict: true,
            allow_set_relation: false,
            percent_fraction: true,
            extract_gold: true,
            extract: Extractor::default(),
            seed: 0,
            n_points: 8,
            budget_ms: 200,
            max_answer_len: 20_000,
        }
    }
}

impl GradeOptions {
    /// Settings for clustering answers that were already extracted (voting, through
    /// `AnswerKey`): no percent-as-fraction, a short budget.
    pub fn clustering() -> Self {
        GradeOptions {
            percent_fraction: false,
            extract_gold: false,
            budget_ms: 50,
            ..GradeOptions::default()
        }
    }

    fn limits(&self) -> ParseLimits {
        ParseLimits {
            max_len: self.max_answer_len,
            ..ParseLimits::default()
        }
    }
}

/// One side of a grade: what was extracted and how it reads after normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Form {
    /// The extracted answer; `None` when the text had none.
    pub extracted: Option<String>,
    /// How it was found.
    pub method: Option<Method>,
    /// The normalised form (a canonical rendering of the parsed answer, or the cleaned text
    /// when it did not parse).
    pub normalized: Option<String>,
    /// Whether the answer parsed as math.
    pub parsed: bool,
}

/// The verdict with both sides' forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    pub verdict: Verdict,
    pub gold: Form,
    pub prediction: Form,
}

/// Grades `prediction` (model text or an answer) against `gold` (an answer or a solution).
pub fn grade(gold: &str, prediction: &str, options: &GradeOptions) -> Grade {
    let gold_ex = if options.extract_gold {
        extract_answer(gold, &options.extract).or_else(|| whole(gold))
    } else {
        whole(gold)
    };
    let pred_ex = extract_answer(prediction, &options.extract).or_else(|| short_answer(prediction));
    let g = gold_ex.as_ref().map(|e| Prepared::new(&e.answer, options));
    let p = pred_ex.as_ref().map(|e| Prepared::new(&e.answer, options));
    let verdict = match (&g, &p) {
        (Some(g), Some(p)) => compare_prepared(g, p, options),
        _ => Verdict::NotEquivalent,
    };
    let form = |ex: &Option<Extracted>, pr: &Option<Prepared>| Form {
        extracted: ex.as_ref().map(|e| e.answer.clone()),
        method: ex.as_ref().map(|e| e.method),
        normalized: pr.as_ref().map(|p| p.key.clone()),
        parsed: pr.as_ref().is_some_and(|p| p.node.is_ok()),
    };
    Grade {
        verdict,
        gold: form(&gold_ex, &g),
        prediction: form(&pred_ex, &p),
    }
}

/// Whether an already extracted `answer` is right for `gold`: the comparison of [`grade`] with
/// default options (gold extracted when it is a solution text, `p%` may match `p/100`, 200 ms
/// budget), without extracting from `answer` again. An evaluation's `correct` means this; the
/// lighter `equivalent` (clustering options) is for grouping votes.
pub fn is_correct(gold: &str, answer: &str) -> bool {
    static OPTIONS: std::sync::OnceLock<GradeOptions> = std::sync::OnceLock::new();
    let options = OPTIONS.get_or_init(GradeOptions::default);
    let (Some(g), Some(a)) = (
        extract_answer(gold, &options.extract).or_else(|| whole(gold)),
        whole(answer),
    ) else {
        return false;
    };
    compare_prepared(
        &Prepared::new(&g.answer, options),
        &Prepared::new(&a.answer, options),
        options,
    )
    .is_equivalent()
}

/// A prediction in which extraction found nothing is used whole when it is one short line
/// (`Evelyn`, `yes`).
fn short_answer(text: &str) -> Option<Extracted> {
    let t = text.trim();
    (t.len() <= 100 && !t.contains('\n'))
        .then(|| whole(t))
        .flatten()
}

fn whole(text: &str) -> Option<Extracted> {
    let t = text.trim();
    (!t.is_empty()).then(|| Extracted {
        answer: t.to_string(),
        method: Method::Whole,
    })
}

/// An answer parsed once for repeated comparison (voting caches these).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Cheap key: equal keys are equivalent answers.
    pub key: String,
    pub node: Result<Node, ParseError>,
    scalar: Option<ScalarInfo>,
}

impl Prepared {
    pub fn new(answer: &str, options: &GradeOptions) -> Prepared {
        let node = parse(answer, &options.limits()).map(normalize_pm);
        let key = match &node {
            Ok(n) => n.to_string(),
            Err(_) => clean_text(answer),
        };
        let scalar = match &node {
            Ok(n) if is_scalar(n) => Some(ScalarInfo::new(n, options)),
            _ => None,
        };
        Prepared { key, node, scalar }
    }

    /// The exact value, when the answer is an exact rational.
    pub fn exact(&self) -> Option<Q> {
        self.scalar.as_ref().and_then(|s| s.exact)
    }
}

/// Compares two prepared answers (gold first).
pub fn compare_prepared(g: &Prepared, p: &Prepared, options: &GradeOptions) -> Verdict {
    if g.key == p.key {
        return Verdict::Equivalent;
    }
    match (&g.node, &p.node) {
        (Ok(gn), Ok(pn)) => {
            let mut cx = Cx::new(options);
            if let (Some(gs), Some(ps)) = (&g.scalar, &p.scalar) {
                if !matches!(gn, Node::Percent(_)) && !matches!(pn, Node::Percent(_)) {
                    return cx.scalar_info(gn, gs, pn, ps);
                }
            }
            cx.cmp(gn, pn)
        }
        (Err(ParseError::Limit), _) | (_, Err(ParseError::Limit)) => Verdict::Undecided,
        _ => {
            if clean_text(&g.key).eq_ignore_ascii_case(&clean_text(&p.key)) {
                Verdict::Equivalent
            } else {
                Verdict::NotEquivalent
            }
        }
    }
}

/// Whitespace, `$`, `\left`/`\right` and spacing commands removed: the key of an answer that
/// does not parse.
fn clean_text(s: &str) -> String {
    let mut out = s.replace("\\left", "").replace("\\right", "");
    for sp in ["\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "\\ ", "$"] {
        out = out.replace(sp, "");
    }
    out.retain(|c| !c.is_whitespace());
    out.trim_end_matches(['.', ',', ';']).to_string()
}

fn is_scalar(n: &Node) -> bool {
    let mut ok = true;
    visit(n, &mut |m| {
        if matches!(
            m,
            Node::Tuple(_)
                | Node::List(_)
                | Node::Set(_)
                | Node::Interval { .. }
                | Node::Union(_)
                | Node::Matrix(_)
                | Node::Relation { .. }
                | Node::Text(_)
                | Node::PlusMinus(..)
        ) {
            ok = false;
        }
    });
    ok
}

fn has_matrix(n: &Node) -> bool {
    let mut found = false;
    visit(n, &mut |m| found |= matches!(m, Node::Matrix(_)));
    found
}

fn has_structure(n: &Node) -> bool {
    let mut found = false;
    visit(n, &mut |m| {
        found |= matches!(
            m,
            Node::Tuple(_)
                | Node::List(_)
                | Node::Set(_)
                | Node::Interval { .. }
                | Node::Union(_)
                | Node::Matrix(_)
                | Node::Relation { .. }
                | Node::Text(_)
        )
    });
    found
}

fn has_infinity(n: &Node) -> bool {
    let mut found = false;
    visit(n, &mut |m| {
        found |= matches!(m, Node::Const(Constant::Infinity))
    });
    found
}

/// What is cached about a scalar expression.
#[derive(Debug, Clone)]
struct ScalarInfo {
    exact: Option<Q>,
    approx: bool,
    infinity: bool,
    syms: Vec<String>,
    /// Values at the seeded points (one value when there are no variables).
    values: Vec<f64>,
}

/// The value of variable `sym` at evaluation point `k`: sign and magnitude in ±[0.2, 3.0),
/// from a hash of the seed, the name and the point, so every expression sees the same values.
fn point_value(seed: u64, sym: &str, k: usize) -> f64 {
    let mut rng = ponder_core::SeededRng::new(
        seed ^ stable_hash(sym.as_bytes()) ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
    sign * (0.2 + 2.8 * rng.next_f64())
}

impl ScalarInfo {
    fn new(n: &Node, o: &GradeOptions) -> ScalarInfo {
        let syms = symbols(n);
        let values = if syms.is_empty() {
            vec![eval_f64(n, &|_| f64::NAN)]
        } else {
            (0..o.n_points)
                .map(|k| eval_f64(n, &|s| point_value(o.seed, s, k)))
                .collect()
        };
        ScalarInfo {
            exact: if syms.is_empty() { eval_exact(n) } else { None },
            approx: has_approx(n),
            infinity: has_infinity(n),
            syms,
            values,
        }
    }
}

/// Comparison context: options and the deadline.
struct Cx<'a> {
    o: &'a GradeOptions,
    deadline: Instant,
    steps: usize,
}

/// What a node is, for comparison.
enum Shape<'a> {
    Scalar(&'a Node),
    /// Items and whether order matters (`None`: bare list, takes the other side's kind).
    Seq(Vec<&'a Node>, Option<bool>),
    Interval(&'a Node),
    Union(&'a [Node]),
    Matrix(Vec<Vec<Node>>),
    Text(&'a str),
    Relation(&'a [Node], &'a [RelOp]),
}

impl<'a> Cx<'a> {
    fn new(o: &'a GradeOptions) -> Self {
        Cx {
            o,
            deadline: Instant::now() + Duration::from_millis(o.budget_ms),
            steps: 0,
        }
    }

    fn out_of_time(&mut self) -> bool {
        self.steps += 1;
        self.steps > 100_000 || Instant::now() > self.deadline
    }

    fn cmp(&mut self, g: &Node, p: &Node) -> Verdict {
        if self.out_of_time() {
            return Verdict::Undecided;
        }
        // Percentages: `28%` is 28 (and, unless turned off, also 0.28 against a plain number).
        if let Node::Percent(x) = g {
            if let Node::Percent(y) = p {
                return self.cmp(x, y);
            }
            let v = self.cmp(x, p);
            if v != Verdict::Equivalent && self.o.percent_fraction {
                let frac = Node::Div(x.clone(), Box::new(hundred()));
                if self.cmp(&frac, p) == Verdict::Equivalent {
                    return Verdict::Equivalent;
                }
            }
            return v;
        }
        if let Node::Percent(y) = p {
            let v = self.cmp(g, y);
            if v != Verdict::Equivalent && self.o.percent_fraction {
                let frac = Node::Div(y.clone(), Box::new(hundred()));
                if self.cmp(g, &frac) == Verdict::Equivalent {
                    return Verdict::Equivalent;
                }
            }
            return v;
        }
        let (gs, ps) = (shape(g), shape(p));
        match (gs, ps) {
            (Shape::Relation(gp, go), Shape::Relation(pp, po)) => self.relations(gp, go, pp, po),
            (Shape::Relation(gp, go), _) => self.gold_relation(gp, go, p),
            (_, Shape::Relation(pp, po)) => self.pred_relation(g, pp, po),
            (Shape::Text(a), Shape::Text(b)) => verdict(text_eq(a, b)),
            (Shape::Text(_), _) | (_, Shape::Text(_)) => Verdict::NotEquivalent,
            (Shape::Matrix(a), Shape::Matrix(b)) => self.matrices(&a, &b),
            (Shape::Matrix(a), Shape::Seq(items, ord))
            | (Shape::Seq(items, ord), Shape::Matrix(a))
                if ord != Some(false) =>
            {
                match vector(&a) {
                    Some(v) if v.len() == items.len() => {
                        let v: Vec<&Node> = v.into_iter().collect();
                        self.ordered(&v, &items)
                    }
                    _ => Verdict::NotEquivalent,
                }
            }
            (Shape::Seq(a, ao), Shape::Seq(b, bo)) => match (ao, bo) {
                (Some(true), Some(false)) | (Some(false), Some(true)) => Verdict::NotEquivalent,
                (Some(true), _) | (_, Some(true)) => self.ordered(&a, &b),
                _ => self.unordered(&a, &b),
            },
            (Shape::Interval(a), Shape::Interval(b)) => self.intervals(a, b),
            (Shape::Interval(a), Shape::Seq(b, Some(true))) if b.len() == 2 => {
                self.intervals(a, &open_interval(b[0], b[1]))
            }
            (Shape::Seq(a, Some(true)), Shape::Interval(b)) if a.len() == 2 => {
                self.intervals(&open_interval(a[0], a[1]), b)
            }
            (Shape::Union(a), Shape::Union(b)) => {
                let a: Vec<&Node> = a.iter().collect();
                let b: Vec<&Node> = b.iter().collect();
                self.unordered(&a, &b)
            }
            (Shape::Scalar(a), Shape::Scalar(b)) => self.scalar(a, b),
            _ => Verdict::NotEquivalent,
        }
    }

    fn ordered(&mut self, a: &[&Node], b: &[&Node]) -> Verdict {
        if a.len() != b.len() {
            return Verdict::NotEquivalent;
        }
        let mut v = Verdict::Equivalent;
        for (x, y) in a.iter().zip(b) {
            v = v.and(self.cmp(x, y));
            if v == Verdict::NotEquivalent {
                break;
            }
        }
        v
    }

    /// A one-to-one matching, greedy: each gold item takes the first unused equivalent item.
    fn unordered(&mut self, a: &[&Node], b: &[&Node]) -> Verdict {
        if a.len() != b.len() || a.len() > 256 {
            return if a.len() == b.len() {
                Verdict::Undecided
            } else {
                Verdict::NotEquivalent
            };
        }
        let mut used = vec![false; b.len()];
        let mut undecided = false;
        for x in a {
            let mut found = false;
            for (j, y) in b.iter().enumerate() {
                if used[j] {
                    continue;
                }
                match self.cmp(x, y) {
                    Verdict::Equivalent => {
                        used[j] = true;
                        found = true;
                        break;
                    }
                    Verdict::Undecided => undecided = true,
                    Verdict::NotEquivalent => {}
                }
            }
            if !found {
                return if undecided {
                    Verdict::Undecided
                } else {
                    Verdict::NotEquivalent
                };
            }
        }
        Verdict::Equivalent
    }

    fn matrices(&mut self, a: &[Vec<Node>], b: &[Vec<Node>]) -> Verdict {
        if a.len() != b.len() || a.iter().zip(b).any(|(r, s)| r.len() != s.len()) {
            return Verdict::NotEquivalent;
        }
        let x: Vec<&Node> = a.iter().flatten().collect();
        let y: Vec<&Node> = b.iter().flatten().collect();
        self.ordered(&x, &y)
    }

    fn intervals(&mut self, a: &Node, b: &Node) -> Verdict {
        match (a, b) {
            (
                Node::Interval {
                    lo: al,
                    hi: ah,
                    lo_closed: alc,
                    hi_closed: ahc,
                },
                Node::Interval {
                    lo: bl,
                    hi: bh,
                    lo_closed: blc,
                    hi_closed: bhc,
                },
            ) => {
                if alc != blc || ahc != bhc {
                    return Verdict::NotEquivalent;
                }
                self.cmp(al, bl).and(self.cmp(ah, bh))
            }
            _ => Verdict::NotEquivalent,
        }
    }

    fn scalar(&mut self, a: &Node, b: &Node) -> Verdict {
        // A matrix expression that could not be evaluated (too big, mismatched sizes) decides
        // nothing; a word or another structure inside arithmetic (`-[0,1)`, `AZYUK·2·A`) is
        // never a number.
        if has_matrix(a) || has_matrix(b) {
            return Verdict::Undecided;
        }
        if has_structure(a) || has_structure(b) {
            return Verdict::NotEquivalent;
        }
        let ai = ScalarInfo::new(a, self.o);
        let bi = ScalarInfo::new(b, self.o);
        self.scalar_info(a, &ai, b, &bi)
    }

    fn scalar_info(&mut self, a: &Node, ai: &ScalarInfo, b: &Node, bi: &ScalarInfo) -> Verdict {
        let approx = ai.approx || bi.approx;
        // Integers too long for exact arithmetic compare by their digits.
        if let (Node::Num(x), Node::Num(y)) = (a, b) {
            if !approx && (x.exact.is_none() || y.exact.is_none()) {
                let digits = |s: &str| s.trim_start_matches('0').to_string();
                return verdict(digits(&x.text) == digits(&y.text));
            }
        }
        if let (Some(x), Some(y)) = (ai.exact, bi.exact) {
            if x == y {
                return Verdict::Equivalent;
            }
            if !approx {
                return Verdict::NotEquivalent;
            }
        }
        if ai.syms.is_empty() && bi.syms.is_empty() {
            let (x, y) = (ai.values[0], bi.values[0]);
            return self.numbers(x, y, approx, ai.infinity || bi.infinity);
        }
        // Expressions with variables: compare at the seeded points.
        let renamed;
        let b_values: &[f64] =
            if ai.syms != bi.syms && !self.o.strict && ai.syms.len() == bi.syms.len() {
                let map: Vec<(String, String)> = bi
                    .syms
                    .iter()
                    .cloned()
                    .zip(ai.syms.iter().cloned())
                    .collect();
                let seed = self.o.seed;
                renamed = (0..self.o.n_points)
                    .map(|k| {
                        eval_f64(b, &|s| {
                            let target = map.iter().find(|(from, _)| from == s).map(|(_, to)| to);
                            point_value(seed, target.map_or(s, |t| t.as_str()), k)
                        })
                    })
                    .collect::<Vec<f64>>();
                &renamed
            } else {
                &bi.values
            };
        let a_values: Vec<f64> = if ai.syms.is_empty() {
            vec![ai.values[0]; self.o.n_points]
        } else {
            ai.values.clone()
        };
        let b_values: Vec<f64> = if b_values.len() == 1 {
            vec![b_values[0]; self.o.n_points]
        } else {
            b_values.to_vec()
        };
        let tol = if approx {
            10f64.powi(-(self.o.precision.min(15) as i32))
        } else {
            1e-8
        };
        let mut valid = 0;
        let mut mismatch = false;
        for (x, y) in a_values.iter().zip(&b_values) {
            if !x.is_finite() || !y.is_finite() {
                continue;
            }
            valid += 1;
            let diff = (x - y).abs() / 1f64.max(x.abs()).max(y.abs());
            if diff > 1e-3 {
                // Far beyond rounding error: different, without further work.
                return Verdict::NotEquivalent;
            }
            mismatch |= diff > tol;
        }
        let sampled = !mismatch && valid >= 3.min(self.o.n_points) && valid > 0;
        // Exact where possible: rational functions are compared by expanding `n₁·d₂ = n₂·d₁`,
        // which confirms the sampled verdict or settles a near miss that could be rounding
        // error (`(x+1)^{20}` against its expansion near x = −1).
        let same_names = ai.syms == bi.syms || self.o.strict;
        if !approx && same_names {
            if let Some(equal) = rational_equal(a, b) {
                return verdict(equal);
            }
        }
        if mismatch {
            Verdict::NotEquivalent
        } else if sampled {
            Verdict::Equivalent
        } else {
            Verdict::Undecided
        }
    }

    fn numbers(&self, x: f64, y: f64, approx: bool, infinity: bool) -> Verdict {
        if x.is_nan() || y.is_nan() {
            return Verdict::Undecided;
        }
        if x.is_infinite() || y.is_infinite() {
            // An infinity written as such compares by sign; an overflow decides nothing.
            return if !infinity {
                Verdict::Undecided
            } else {
                verdict(x == y)
            };
        }
        if approx {
            let scale = 10f64.powi(self.o.precision.min(15) as i32);
            let (rx, ry) = ((x * scale).round(), (y * scale).round());
            if rx == ry {
                return Verdict::Equivalent;
            }
        }
        let close = (x - y).abs() <= self.o.rel_tol * x.abs().max(y.abs()) || x == y;
        // Beyond 2^53 a float no longer tells neighbouring integers apart (`30!` against
        // `30! + 1`): closeness there decides nothing.
        if close && !approx && x.abs().max(y.abs()) > 9.0e15 {
            return Verdict::Undecided;
        }
        verdict(close)
    }

    // --- relations ----------------------------------------------------------------------------

    fn relations(&mut self, gp: &[Node], go: &[RelOp], pp: &[Node], po: &[RelOp]) -> Verdict {
        let (gp, go) = chain(gp, go);
        let (pp, po) = chain(pp, po);
        let g_eq = go.iter().all(|o| *o == RelOp::Eq);
        let p_eq = po.iter().all(|o| *o == RelOp::Eq);
        if g_eq && p_eq {
            let g_subject = subject(&gp);
            let p_subject = subject(&pp);
            if let (Some(a), Some(b)) = (g_subject, p_subject) {
                if a.to_string() == b.to_string() {
                    return self.cmp(last(&gp), last(&pp));
                }
            }
            if gp.len() == 2 && pp.len() == 2 {
                return self.equations(&gp, &pp);
            }
            return self.cmp(last(&gp), last(&pp));
        }
        if g_eq || p_eq {
            return Verdict::NotEquivalent;
        }
        // Inequalities.
        if gp.len() == 2 && pp.len() == 2 {
            return self.inequalities(&gp, go[0], &pp, po[0]);
        }
        if gp.len() == pp.len() {
            let same = go.iter().zip(&po).all(|(a, b)| a == b);
            if same {
                let a: Vec<&Node> = gp.iter().collect();
                let b: Vec<&Node> = pp.iter().collect();
                return self.ordered(&a, &b);
            }
            let flipped = go.iter().zip(po.iter().rev()).all(|(a, b)| *a == flip(*b));
            if flipped {
                let a: Vec<&Node> = gp.iter().collect();
                let b: Vec<&Node> = pp.iter().rev().collect();
                return self.ordered(&a, &b);
            }
        }
        match (to_interval(&gp, &go), to_interval(&pp, &po)) {
            (Some(a), Some(b)) => self.intervals(&a, &b),
            _ => Verdict::NotEquivalent,
        }
    }

    /// Gold is a relation, the prediction is not.
    fn gold_relation(&mut self, gp: &[Node], go: &[RelOp], p: &Node) -> Verdict {
        let (gp, go) = chain(gp, go);
        if go.iter().all(|o| *o == RelOp::Eq) {
            // `k = 1` against `1`; `1 = \zzz = x = 0` against `0`. An equation whose left side
            // is not a variable (`2x + z = 1`) is not answered by a value.
            if gp.len() >= 3 || subject(&gp).is_some() {
                return self.cmp(last(&gp), p);
            }
            return Verdict::NotEquivalent;
        }
        match (to_interval(&gp, &go), p) {
            (Some(i), Node::Interval { .. }) => self.intervals(&i, p),
            (Some(i), Node::Tuple(items)) if items.len() == 2 => {
                self.intervals(&i, &open_interval(&items[0], &items[1]))
            }
            _ => Verdict::NotEquivalent,
        }
    }

    /// The prediction is a relation, the gold is not: a prediction may show its working
    /// (`x = 5 + 5 + 1 = 11`), so the last side of an equation chain is its answer.
    fn pred_relation(&mut self, g: &Node, pp: &[Node], po: &[RelOp]) -> Verdict {
        let (pp, po) = chain(pp, po);
        if po.iter().all(|o| *o == RelOp::Eq) {
            return self.cmp(g, last(&pp));
        }
        if !self.o.allow_set_relation {
            return Verdict::NotEquivalent;
        }
        match (to_interval(&pp, &po), g) {
            (Some(i), Node::Interval { .. }) => self.intervals(g, &i),
            _ => Verdict::NotEquivalent,
        }
    }

    /// `a = b` against `c = d`: `a − b` is a non-zero constant multiple of `c − d`.
    fn equations(&mut self, g: &[Node], p: &[Node]) -> Verdict {
        let dg = diff(&g[0], &g[1]);
        let dp = diff(&p[0], &p[1]);
        self.proportional(&dg, &dp, false)
    }

    fn inequalities(&mut self, g: &[Node], go: RelOp, p: &[Node], po: RelOp) -> Verdict {
        let (Some((dg, kg)), Some((dp, kp))) = (normal_ineq(g, go), normal_ineq(p, po)) else {
            return Verdict::NotEquivalent;
        };
        if kg != kp {
            return Verdict::NotEquivalent;
        }
        self.proportional(&dg, &dp, kg != RelOp::Ne)
    }

    /// Whether `a = λ·b` for a constant λ ≠ 0 (λ > 0 when `positive`).
    fn proportional(&mut self, a: &Node, b: &Node, positive: bool) -> Verdict {
        let mut syms = symbols(a);
        syms.extend(symbols(b));
        syms.sort();
        syms.dedup();
        let seed = self.o.seed;
        let mut ratio: Option<f64> = None;
        let mut valid = 0;
        for k in 0..self.o.n_points.max(4) {
            if self.out_of_time() {
                return Verdict::Undecided;
            }
            let env = |s: &str| point_value(seed, s, k);
            let (x, y) = (eval_f64(a, &env), eval_f64(b, &env));
            if !x.is_finite() || !y.is_finite() {
                continue;
            }
            if y.abs() < 1e-12 {
                if x.abs() < 1e-12 {
                    continue;
                }
                return Verdict::NotEquivalent;
            }
            let r = x / y;
            valid += 1;
            match ratio {
                None => {
                    if r.abs() < 1e-12 || (positive && r < 0.0) {
                        return Verdict::NotEquivalent;
                    }
                    ratio = Some(r);
                }
                Some(r0) => {
                    if (r - r0).abs() > 1e-8 * r0.abs().max(1.0) {
                        return Verdict::NotEquivalent;
                    }
                }
            }
        }
        if valid >= 2 {
            Verdict::Equivalent
        } else {
            Verdict::Undecided
        }
    }
}

fn verdict(b: bool) -> Verdict {
    if b {
        Verdict::Equivalent
    } else {
        Verdict::NotEquivalent
    }
}

fn hundred() -> Node {
    Node::Num(Literal::parse("100"))
}

fn text_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    norm(a) == norm(b)
}

fn shape(n: &Node) -> Shape<'_> {
    match n {
        Node::Tuple(v) => Shape::Seq(v.iter().collect(), Some(true)),
        Node::Set(v) => Shape::Seq(v.iter().collect(), Some(false)),
        Node::List(v) => Shape::Seq(v.iter().collect(), None),
        Node::Interval { .. } => Shape::Interval(n),
        Node::Union(v) => Shape::Union(v),
        Node::Matrix(rows) => Shape::Matrix(rows.clone()),
        Node::Text(t) => Shape::Text(t),
        Node::Sym(s) if s.chars().count() == 1 && s.chars().all(|c| c.is_ascii_uppercase()) => {
            // A lone capital letter is a choice: it matches `\text{C}` case-insensitively.
            Shape::Text(s)
        }
        Node::Relation { parts, ops } => Shape::Relation(parts, ops),
        _ => match matrix_value(n) {
            Some(m) => Shape::Matrix(m),
            None => Shape::Scalar(n),
        },
    }
}

/// A matrix expression (`A + B`, `A B`, `2A`, `-A`) evaluated to a matrix of expressions.
fn matrix_value(n: &Node) -> Option<Vec<Vec<Node>>> {
    let mut has = false;
    visit(n, &mut |m| has |= matches!(m, Node::Matrix(_)));
    if !has {
        return None;
    }
    enum V {
        S(Node),
        M(Vec<Vec<Node>>),
    }
    fn go(n: &Node) -> Option<V> {
        Some(match n {
            Node::Matrix(rows) => V::M(rows.clone()),
            Node::Neg(x) => match go(x)? {
                V::M(m) => V::M(
                    m.into_iter()
                        .map(|r| r.into_iter().map(|e| Node::Neg(Box::new(e))).collect())
                        .collect(),
                ),
                V::S(s) => V::S(Node::Neg(Box::new(s))),
            },
            Node::Add(ts) => {
                let mut acc: Option<V> = None;
                for t in ts {
                    let v = go(t)?;
                    acc = Some(match (acc, v) {
                        (None, v) => v,
                        (Some(V::M(a)), V::M(b)) => {
                            if a.len() != b.len() || a[0].len() != b[0].len() {
                                return None;
                            }
                            V::M(
                                a.into_iter()
                                    .zip(b)
                                    .map(|(r, s)| {
                                        r.into_iter()
                                            .zip(s)
                                            .map(|(x, y)| Node::Add(vec![x, y]))
                                            .collect()
                                    })
                                    .collect(),
                            )
                        }
                        (Some(V::S(a)), V::S(b)) => V::S(Node::Add(vec![a, b])),
                        _ => return None,
                    });
                }
                acc?
            }
            Node::Mul(fs) => {
                let mut acc: Option<V> = None;
                for f in fs {
                    let v = go(f)?;
                    acc = Some(match (acc, v) {
                        (None, v) => v,
                        (Some(V::S(a)), V::S(b)) => V::S(Node::Mul(vec![a, b])),
                        (Some(V::S(s)), V::M(m)) | (Some(V::M(m)), V::S(s)) => V::M(
                            m.into_iter()
                                .map(|r| {
                                    r.into_iter()
                                        .map(|e| Node::Mul(vec![s.clone(), e]))
                                        .collect()
                                })
                                .collect(),
                        ),
                        (Some(V::M(a)), V::M(b)) => {
                            let (n, k, m) = (a.len(), b.len(), b.first()?.len());
                            if a[0].len() != k || n * m * k > 4096 {
                                return None;
                            }
                            V::M(
                                (0..n)
                                    .map(|i| {
                                        (0..m)
                                            .map(|j| {
                                                Node::Add(
                                                    (0..k)
                                                        .map(|l| {
                                                            Node::Mul(vec![
                                                                a[i][l].clone(),
                                                                b[l][j].clone(),
                                                            ])
                                                        })
                                                        .collect(),
                                                )
                                            })
                                            .collect()
                                    })
                                    .collect(),
                            )
                        }
                    });
                }
                acc?
            }
            other => {
                let mut has = false;
                visit(other, &mut |m| has |= matches!(m, Node::Matrix(_)));
                if has {
                    return None;
                }
                V::S(other.clone())
            }
        })
    }
    match go(n)? {
        V::M(m) => Some(m),
        V::S(_) => None,
    }
}

/// A matrix with one row or one column, as a list.
fn vector(m: &[Vec<Node>]) -> Option<Vec<&Node>> {
    if m.len() == 1 {
        Some(m[0].iter().collect())
    } else if m.iter().all(|r| r.len() == 1) {
        Some(m.iter().map(|r| &r[0]).collect())
    } else {
        None
    }
}

fn open_interval(lo: &Node, hi: &Node) -> Node {
    Node::Interval {
        lo: Box::new(lo.clone()),
        hi: Box::new(hi.clone()),
        lo_closed: false,
        hi_closed: false,
    }
}

/// An equation chain with approximations: `x = 1/3 ≈ 0.33` keeps the exact part (`x = 1/3`);
/// a chain of `≈` alone reads as `=`.
fn chain(parts: &[Node], ops: &[RelOp]) -> (Vec<Node>, Vec<RelOp>) {
    let mut parts = parts.to_vec();
    let mut ops = ops.to_vec();
    if ops.contains(&RelOp::Eq) {
        if let Some(i) = ops.iter().position(|o| *o == RelOp::Approx) {
            ops.truncate(i);
            parts.truncate(i + 1);
        }
    }
    for o in &mut ops {
        if *o == RelOp::Approx {
            *o = RelOp::Eq;
        }
    }
    (parts, ops)
}

fn last(parts: &[Node]) -> &Node {
    &parts[parts.len() - 1]
}

/// The variable an equation assigns: `x = …`, `f(x) = …`, or any chain of three or more parts.
fn subject(parts: &[Node]) -> Option<&Node> {
    let lhs = parts.first()?;
    let is_var = match lhs {
        Node::Sym(_) => true,
        Node::Mul(fs) => fs.iter().all(|f| matches!(f, Node::Sym(_))),
        _ => false,
    };
    if is_var {
        Some(lhs)
    } else if parts.len() >= 3 {
        Some(&parts[0])
    } else {
        None
    }
}

fn diff(a: &Node, b: &Node) -> Node {
    Node::Add(vec![a.clone(), Node::Neg(Box::new(b.clone()))])
}

fn flip(o: RelOp) -> RelOp {
    match o {
        RelOp::Lt => RelOp::Gt,
        RelOp::Gt => RelOp::Lt,
        RelOp::Le => RelOp::Ge,
        RelOp::Ge => RelOp::Le,
        other => other,
    }
}

/// `a op b` as `d op' 0` with `op'` one of `<`, `≤`, `≠`.
fn normal_ineq(parts: &[Node], op: RelOp) -> Option<(Node, RelOp)> {
    let (a, b) = (&parts[0], &parts[1]);
    Some(match op {
        RelOp::Lt => (diff(a, b), RelOp::Lt),
        RelOp::Le => (diff(a, b), RelOp::Le),
        RelOp::Gt => (diff(b, a), RelOp::Lt),
        RelOp::Ge => (diff(b, a), RelOp::Le),
        RelOp::Ne => (diff(a, b), RelOp::Ne),
        _ => return None,
    })
}

/// `x > 5` → `(5, ∞)`, `-2 ≤ x ≤ 7` → `[-2, 7]`, `5 ≥ x` → `(-∞, 5]`.
fn to_interval(parts: &[Node], ops: &[RelOp]) -> Option<Node> {
    let is_var = |n: &Node| matches!(n, Node::Sym(_));
    let is_const = |n: &Node| symbols(n).is_empty();
    let inf = || Node::Const(Constant::Infinity);
    let neg_inf = || Node::Neg(Box::new(Node::Const(Constant::Infinity)));
    let make = |lo: Node, lo_closed: bool, hi: Node, hi_closed: bool| Node::Interval {
        lo: Box::new(lo),
        hi: Box::new(hi),
        lo_closed,
        hi_closed,
    };
    match (parts, ops) {
        ([a, b], [op]) => {
            // Put the variable on the left.
            let (c, op) = if is_var(a) && is_const(b) {
                (b, *op)
            } else if is_var(b) && is_const(a) {
                (a, flip(*op))
            } else {
                return None;
            };
            Some(match op {
                RelOp::Lt => make(neg_inf(), false, c.clone(), false),
                RelOp::Le => make(neg_inf(), false, c.clone(), true),
                RelOp::Gt => make(c.clone(), false, inf(), false),
                RelOp::Ge => make(c.clone(), true, inf(), false),
                _ => return None,
            })
        }
        ([a, x, b], [o1, o2]) if is_var(x) && is_const(a) && is_const(b) => {
            let lower = |o: RelOp| matches!(o, RelOp::Lt | RelOp::Le);
            let upper = |o: RelOp| matches!(o, RelOp::Gt | RelOp::Ge);
            if lower(*o1) && lower(*o2) {
                Some(make(
                    a.clone(),
                    *o1 == RelOp::Le,
                    b.clone(),
                    *o2 == RelOp::Le,
                ))
            } else if upper(*o1) && upper(*o2) {
                Some(make(
                    b.clone(),
                    *o2 == RelOp::Ge,
                    a.clone(),
                    *o1 == RelOp::Ge,
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Replaces `a ± b` by the bare list of its values (`a + b, a − b`; at most 16), at the top
/// level and inside lists and sets, so `1 \pm \sqrt{5}` matches `1+\sqrt5, 1-\sqrt5`.
fn normalize_pm(n: Node) -> Node {
    fn has_pm(n: &Node) -> bool {
        let mut found = false;
        visit(n, &mut |m| found |= matches!(m, Node::PlusMinus(..)));
        found
    }
    fn go(n: &Node) -> Vec<Node> {
        let combos = |parts: &[Node], make: &dyn Fn(Vec<Node>) -> Node| -> Vec<Node> {
            let mut acc: Vec<Vec<Node>> = vec![Vec::new()];
            for t in parts {
                let opts = go(t);
                let mut next = Vec::new();
                for a in &acc {
                    for o in &opts {
                        if next.len() < 16 {
                            let mut a = a.clone();
                            a.push(o.clone());
                            next.push(a);
                        }
                    }
                }
                acc = next;
            }
            acc.into_iter().map(make).collect()
        };
        match n {
            Node::PlusMinus(a, b) => {
                let mut v = Vec::new();
                for x in go(a) {
                    for y in go(b) {
                        if v.len() < 16 {
                            v.push(Node::Add(vec![x.clone(), y.clone()]));
                            v.push(Node::Add(vec![x.clone(), Node::Neg(Box::new(y))]));
                        }
                    }
                }
                v
            }
            Node::Add(ts) => combos(ts, &Node::Add),
            Node::Mul(fs) => combos(fs, &Node::Mul),
            Node::Div(a, b) => combos(&[(**a).clone(), (**b).clone()], &|mut v| {
                let d = v.pop().unwrap_or(Node::List(Vec::new()));
                let n = v.pop().unwrap_or(Node::List(Vec::new()));
                Node::Div(Box::new(n), Box::new(d))
            }),
            Node::Neg(x) => go(x).into_iter().map(|y| Node::Neg(Box::new(y))).collect(),
            other => vec![other.clone()],
        }
    }
    let set = matches!(n, Node::Set(_));
    match n {
        Node::List(items) | Node::Set(items) if items.iter().any(has_pm) => {
            let mut out = Vec::new();
            for it in &items {
                out.extend(go(it));
            }
            if set {
                Node::Set(out)
            } else {
                Node::List(out)
            }
        }
        other if has_pm(&other) && is_scalar_or_pm(&other) => Node::List(go(&other)),
        other => other,
    }
}

fn is_scalar_or_pm(n: &Node) -> bool {
    let mut ok = true;
    visit(n, &mut |m| {
        if matches!(
            m,
            Node::Tuple(_)
                | Node::List(_)
                | Node::Set(_)
                | Node::Interval { .. }
                | Node::Union(_)
                | Node::Matrix(_)
                | Node::Relation { .. }
                | Node::Text(_)
        ) {
            ok = false;
        }
    });
    ok
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn is_correct_uses_the_grading_rules_not_the_clustering_ones() {
        // A percentage may answer its fraction (grading), though votes keep them apart.
        assert!(is_correct("25\\%", "0.25"));
        assert!(!crate::equivalent("25\\%", "0.25"));
        // A gold that is a whole solution has its answer extracted.
        assert!(is_correct("so the total is \\boxed{\\frac{1}{2}}.", "0.5"));
        assert!(is_correct("72", "72"));
        assert!(!is_correct("72", "73"));
        // The answer is compared as given, never extracted again, and odd text is just wrong.
        assert!(!is_correct("7", ""));
        assert!(!is_correct("", "7"));
        assert!(!is_correct("7", "\\boxed{"));
    }

    fn verdict_of(gold: &str, pred: &str) -> Verdict {
        grade(gold, pred, &GradeOptions::default()).verdict
    }

    fn check(gold: &str, pred: &str, expected: Verdict) {
        assert_eq!(verdict_of(gold, pred), expected, "{gold:?} vs {pred:?}");
    }

    const EQ: Verdict = Verdict::Equivalent;
    const NE: Verdict = Verdict::NotEquivalent;
    const UN: Verdict = Verdict::Undecided;

    #[test]
    fn numbers() {
        check("42", "42.0", EQ);
        check("0.5", "\\frac{1}{2}", EQ);
        check("\\dfrac{3}{4}", "0.75", EQ);
        check("1/3", "0.333333", EQ); // rounded to 6 places: 0.333333 both
        check("1/3", "0.3333", NE);
        check("\\$1,000", "1000", EQ);
        check("12", "12\\text{ cm}", EQ);
        check("90^\\circ", "90", EQ);
        check("\\sqrt{8}", "2\\sqrt{2}", EQ);
        check("\\sqrt{17}", "4.123106", EQ);
        check("\\pi", "3.14", NE);
        check("7", "8", NE);
        check("2^{10}", "1024", EQ);
        check("5!", "120", EQ);
        check("2\\frac{1}{2}", "2.5", EQ);
        check("1.5 \\times 10^{3}", "1500", EQ);
        check("1.5e3", "1500", EQ);
        // Too long for exact arithmetic: compared digit by digit.
        check(&"9".repeat(50), &"9".repeat(50), EQ);
        check(&"9".repeat(50), &format!("{}8", "9".repeat(49)), NE);
        // Beyond 2^53 a float does not tell 30! from 30! + 1.
        check("40!", "40! + 1", UN);
    }

    #[test]
    fn percentages() {
        check("28\\%", "28", EQ);
        check("28\\%", "0.28", EQ);
        let no_fraction = GradeOptions {
            percent_fraction: false,
            ..GradeOptions::default()
        };
        assert_eq!(grade("28\\%", "0.28", &no_fraction).verdict, NE);
    }

    #[test]
    fn expressions() {
        check("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}", EQ);
        check("\\tan^2(y)+1", "\\sec^2(y)", EQ);
        check("(x+1)^2", "x^2+2x+1", EQ);
        check("(x+1)^2", "x^2+x+1", NE);
        // Exact: the expansion of (x+1)^20 loses precision near x = -1 in floating point.
        check(
            "(x+1)^{20}",
            concat!(
                "x^{20}+20x^{19}+190x^{18}+1140x^{17}+4845x^{16}+15504x^{15}+38760x^{14}",
                "+77520x^{13}+125970x^{12}+167960x^{11}+184756x^{10}+167960x^{9}+125970x^{8}",
                "+77520x^{7}+38760x^{6}+15504x^{5}+4845x^{4}+1140x^{3}+190x^{2}+20x+1"
            ),
            EQ,
        );
        check("\\sqrt{x^2}", "x", NE); // differs for negative x
        check("2\\sin b \\cos a", "\\sin(a+b)-\\sin(a-b)", EQ);
        check("f(x)", "f(y)", NE);
        let lenient = GradeOptions {
            strict: false,
            ..GradeOptions::default()
        };
        assert_eq!(grade("f(x)", "f(y)", &lenient).verdict, EQ);
    }

    #[test]
    fn equations_and_inequalities() {
        check("x=3", "3", EQ);
        check("3", "x = 3", EQ);
        check("2x+z=1", "1", NE);
        check("y = 2x + 1", "2x - y + 1 = 0", EQ);
        check("x > 5", "5 < x", EQ);
        check("x \\le 2", "-x \\ge -2", EQ);
        check("x < 1", "x > -1", NE);
        check("-2 \\le x \\le 7", "[-2, 7]", EQ);
        check("[-2, 7]", "-2 \\le x \\le 7", NE);
        let set_relation = GradeOptions {
            allow_set_relation: true,
            ..GradeOptions::default()
        };
        assert_eq!(
            grade("[-2, 7]", "-2 \\le x \\le 7", &set_relation).verdict,
            EQ
        );
    }

    #[test]
    fn collections() {
        // Tuples are ordered, sets and bare lists are not; a bare list takes the other side's kind.
        check("(1, 2)", "(1,2)", EQ);
        check("(1, 2)", "(2, 1)", NE);
        check("\\{1, 2\\}", "\\{2, 1\\}", EQ);
        check("1, 2", "2, 1", EQ);
        check("(1, 3)", "{1,3}", EQ);
        check("(3, 1)", "{1,3}", NE);
        check("(0, 1)", "[0, 1)", NE);
        check("[0, 1)", "[0,1)", EQ);
        check(
            "(-\\infty, 2] \\cup (3, \\infty)",
            "(3,\\infty)\\cup(-\\infty,2]",
            EQ,
        );
        check("1 \\pm \\sqrt{5}", "1-\\sqrt5, 1+\\sqrt5", EQ);
        check("1, 2", "x=1 \\text{ or } x=2", EQ);
        check("(1, 2)", "x = 1, y = 2", EQ);
        check("\\cot x", "\\cotx", EQ);
        check(
            "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
            "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}",
            EQ,
        );
        check("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)", EQ);
        check(
            "\\begin{pmatrix} 2 & 0 \\\\ 0 & 2 \\end{pmatrix}",
            "2\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}",
            EQ,
        );
    }

    #[test]
    fn text_answers() {
        check("\\text{Evelyn}", "Evelyn", EQ);
        check("\\text{(C)}", "C", EQ);
        check("\\text{yes}", "\\text{no}", NE);
        check("17", "no answer here", NE);
    }

    /// Runs `grade` and checks it finishes quickly: within a second in an optimised build (the
    /// comparison budget is 200 ms; extraction is linear), with room for unoptimised test builds
    /// on a loaded machine.
    fn quick(gold: &str, pred: &str) -> Verdict {
        let start = Instant::now();
        let v = verdict_of(gold, pred);
        let took = start.elapsed();
        let limit = if cfg!(debug_assertions) { 5 } else { 1 };
        assert!(took < Duration::from_secs(limit), "took {took:?}");
        v
    }

    #[test]
    fn huge_exponents_are_undecided_not_hangs() {
        assert_eq!(quick("2^{99999999}", "2^{99999998}"), UN);
        assert_eq!(quick("2^{99999999}", "2^{99999999}"), EQ);
        assert_eq!(quick("10^{10^{10^{10}}}", "10^{10^{10^{9}}}"), UN);
        assert_eq!(quick("100000000!", "99999999!"), UN);
        assert_eq!(quick("x^{99999999}", "x^{99999998}"), UN);
        assert_ne!(quick("2^{2^{2^{2^{2^{2^{2}}}}}}", "3"), EQ);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let braces = format!("{}1{}", "{".repeat(10_000), "}".repeat(10_000));
        let parens = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        let sqrt = format!("{}2{}", "\\sqrt{".repeat(10_000), "}".repeat(10_000));
        let frac = "\\frac{1}{".repeat(5_000) + "2" + &"}".repeat(5_000);
        for deep in [&braces, &parens, &sqrt, &frac] {
            // Unboxed, extraction finds the innermost number; boxed, the whole nest is the
            // answer, and it is too deep to parse.
            let _ = quick(deep, "1");
            let boxed = format!("\\boxed{{{deep}}}");
            assert_eq!(quick(&boxed, "\\boxed{1}"), UN);
            assert_eq!(quick("\\boxed{1}", &boxed), UN);
            assert_eq!(quick(&boxed, &boxed), EQ);
        }
    }

    #[test]
    fn long_strings_are_bounded() {
        let mb_digits = "7".repeat(1_000_000);
        let mb_sum = "x+".repeat(500_000) + "1";
        let mb_text = "so the answer is ".repeat(60_000);
        let mb_boxes = "\\boxed{".repeat(140_000);
        assert_eq!(quick(&mb_digits, &mb_digits), EQ);
        assert_ne!(quick(&mb_digits, "7"), EQ);
        assert_eq!(quick(&mb_sum, "1"), UN);
        assert_ne!(quick("1", &mb_text), EQ);
        assert_ne!(quick("1", &mb_boxes), EQ);
        let list = (0..5000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let boxed = format!("\\boxed{{{list}}}");
        assert_ne!(quick(&boxed, &boxed.replace('1', "2")), EQ);
        assert_eq!(quick(&boxed, &boxed), EQ);
    }

    #[test]
    fn odd_input_never_panics() {
        for s in [
            "",
            "\\",
            "{",
            "}",
            "\\frac",
            "\\sqrt[",
            "^",
            "_",
            "x^",
            "\\begin{pmatrix}",
            "\\end{pmatrix}",
            "(",
            "]",
            "[1,",
            "\\{",
            "|",
            "||",
            "1/0",
            "0^0",
            "0^{-1}",
            "\\log_0 1",
            "(-8)^{1/3}",
            "\\infty - \\infty",
            "=",
            "<",
            "x = = 1",
            "é",
            "\u{0}",
            "\\text{",
            "1 \\pm",
            "\\pm",
            "%",
            "\\left(",
            "\\binom{}{}",
            "2^{-99999999}",
            "1e999",
            "\\frac{1}{0}",
            "170!",
            "\\sqrt{-1}",
        ] {
            for other in ["1", "x", s] {
                let _ = grade(s, other, &GradeOptions::default());
                let _ = grade(other, s, &GradeOptions::default());
            }
        }
    }
}
