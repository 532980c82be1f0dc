//! Exact equality of rational functions with rational coefficients.
//!
//! An expression built from numbers, variables, `π`, `e`, `+ − × ÷` and integer powers is a
//! quotient of two polynomials; two such expressions are equal (wherever both are defined) exactly
//! when `n₁·d₂ = n₂·d₁` as polynomials. `π` and `e` are transcendental, so they can be treated as
//! independent indeterminates. Anything else (roots, functions, decimals, too many terms, a
//! coefficient beyond 128 bits) gives `None`, and the caller falls back to evaluation.

use std::collections::BTreeMap;

use crate::expr::{Constant, Node, Q};

/// Most terms a polynomial may have before the exact check gives up.
const MAX_TERMS: usize = 256;
/// Highest power expanded.
const MAX_POWER: i128 = 24;

/// A polynomial: monomial (exponent of each variable, by index) → coefficient.
#[derive(Debug, Clone, PartialEq)]
struct Poly(BTreeMap<Vec<u32>, Q>);

struct Vars(Vec<String>);

impl Vars {
    fn index(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|v| v == name)
    }
}

impl Poly {
    fn constant(q: Q, n: usize) -> Poly {
        let mut m = BTreeMap::new();
        if q.num != 0 {
            m.insert(vec![0; n], q);
        }
        Poly(m)
    }

    fn var(i: usize, n: usize) -> Poly {
        let mut e = vec![0; n];
        e[i] = 1;
        Poly(BTreeMap::from([(e, Q::int(1))]))
    }

    fn add(&self, o: &Poly) -> Option<Poly> {
        let mut m = self.0.clone();
        for (k, v) in &o.0 {
            let sum = match m.get(k) {
                Some(a) => a.add(*v)?,
                None => *v,
            };
            if sum.num == 0 {
                m.remove(k);
            } else {
                m.insert(k.clone(), sum);
            }
        }
        (m.len() <= MAX_TERMS).then_some(Poly(m))
    }

    fn neg(&self) -> Poly {
        Poly(self.0.iter().map(|(k, v)| (k.clone(), v.neg())).collect())
    }

    fn mul(&self, o: &Poly) -> Option<Poly> {
        if self.0.len().saturating_mul(o.0.len()) > MAX_TERMS * MAX_TERMS {
            return None;
        }
        let mut m: BTreeMap<Vec<u32>, Q> = BTreeMap::new();
        for (ka, va) in &self.0 {
            for (kb, vb) in &o.0 {
                let k: Vec<u32> = ka.iter().zip(kb).map(|(a, b)| a + b).collect();
                let p = va.mul(*vb)?;
                let sum = match m.get(&k) {
                    Some(a) => a.add(p)?,
                    None => p,
                };
                if sum.num == 0 {
                    m.remove(&k);
                } else {
                    m.insert(k, sum);
                }
            }
            if m.len() > MAX_TERMS {
                return None;
            }
        }
        Some(Poly(m))
    }

    fn pow(&self, e: i128, n: usize) -> Option<Poly> {
        let mut acc = Poly::constant(Q::int(1), n);
        for _ in 0..e {
            acc = acc.mul(self)?;
        }
        Some(acc)
    }
}

/// `node` as numerator / denominator.
fn ratfun(node: &Node, vars: &Vars, depth: usize) -> Option<(Poly, Poly)> {
    if depth > 200 {
        return None;
    }
    let n = vars.0.len();
    let one = || Poly::constant(Q::int(1), n);
    Some(match node {
        Node::Num(l) => {
            if l.approx {
                return None;
            }
            (Poly::constant(l.exact?, n), one())
        }
        Node::Sym(s) => (Poly::var(vars.index(s)?, n), one()),
        Node::Const(Constant::Pi) => (Poly::var(vars.index("\u{3c0}")?, n), one()),
        Node::Const(Constant::E) => (Poly::var(vars.index("\u{212f}")?, n), one()),
        Node::Add(ts) => {
            let mut acc = (Poly::constant(Q::int(0), n), one());
            for t in ts {
                let (a, b) = ratfun(t, vars, depth + 1)?;
                acc = if acc.1 == b {
                    (acc.0.add(&a)?, b)
                } else {
                    (acc.0.mul(&b)?.add(&a.mul(&acc.1)?)?, acc.1.mul(&b)?)
                };
            }
            acc
        }
        Node::Mul(fs) => {
            let mut acc = (one(), one());
            for f in fs {
                let (a, b) = ratfun(f, vars, depth + 1)?;
                acc = (acc.0.mul(&a)?, acc.1.mul(&b)?);
            }
            acc
        }
        Node::Neg(x) => {
            let (a, b) = ratfun(x, vars, depth + 1)?;
            (a.neg(), b)
        }
        Node::Div(x, y) => {
            let (a, b) = ratfun(x, vars, depth + 1)?;
            let (c, d) = ratfun(y, vars, depth + 1)?;
            if c.0.is_empty() {
                return None;
            }
            (a.mul(&d)?, b.mul(&c)?)
        }
        Node::Pow(base, e) => {
            let (l, negative) = match e.as_ref() {
                Node::Num(l) => (l, false),
                Node::Neg(x) => match x.as_ref() {
                    Node::Num(l) => (l, true),
                    _ => return None,
                },
                _ => return None,
            };
            let q = l.exact.filter(|q| q.den == 1 && !l.approx)?;
            let q = if negative { q.neg() } else { q };
            if q.num.abs() > MAX_POWER {
                return None;
            }
            let (a, b) = ratfun(base, vars, depth + 1)?;
            let (a, b) = (a.pow(q.num.abs(), n)?, b.pow(q.num.abs(), n)?);
            if q.num < 0 {
                if a.0.is_empty() {
                    return None;
                }
                (b, a)
            } else {
                (a, b)
            }
        }
        Node::Percent(x) => ratfun(x, vars, depth + 1)?,
        _ => return None,
    })
}

fn collect_vars(n: &Node, out: &mut Vec<String>) {
    crate::expr::visit(n, &mut |m| match m {
        Node::Sym(s) => out.push(s.clone()),
        Node::Const(Constant::Pi) => out.push("\u{3c0}".into()),
        Node::Const(Constant::E) => out.push("\u{212f}".into()),
        _ => {}
    });
}

/// Whether `a` and `b` are the same rational function; `None` when either is not one (or is
/// too big to expand).
pub fn rational_equal(a: &Node, b: &Node) -> Option<bool> {
    let mut names = Vec::new();
    collect_vars(a, &mut names);
    collect_vars(b, &mut names);
    names.sort();
    names.dedup();
    if names.len() > 16 {
        return None;
    }
    let vars = Vars(names);
    let (n1, d1) = ratfun(a, &vars, 0)?;
    let (n2, d2) = ratfun(b, &vars, 0)?;
    Some(n1.mul(&d2)? == n2.mul(&d1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{parse, ParseLimits};

    fn eq(a: &str, b: &str) -> Option<bool> {
        let limits = ParseLimits::default();
        rational_equal(
            &parse(a, &limits).expect("parses"),
            &parse(b, &limits).expect("parses"),
        )
    }

    #[test]
    fn polynomial_identities() {
        assert_eq!(eq("(x+1)^2", "x^2+2x+1"), Some(true));
        assert_eq!(eq("(x+1)^2", "x^2+x+1"), Some(false));
        assert_eq!(eq("x^3-1", "(x-1)(x^2+x+1)"), Some(true));
        assert_eq!(
            eq("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}"),
            Some(true)
        );
        assert_eq!(
            eq("\\frac{1}{x}+\\frac{1}{y}", "\\frac{x+y}{xy}"),
            Some(true)
        );
        assert_eq!(eq("\\frac94\\pi", "\\frac{9\\pi}{4}"), Some(true));
        assert_eq!(eq("a^{-2}", "\\frac{1}{a^2}"), Some(true));
    }

    #[test]
    fn outside_the_fragment_is_none() {
        assert_eq!(eq("\\sqrt{x}", "x^{1/2}"), None);
        assert_eq!(eq("0.5x", "x/2"), None);
        assert_eq!(eq("\\sin x", "\\sin x"), None);
        assert_eq!(eq("(x+y+z+1)^{24}", "1"), None); // too many terms
        assert_eq!(eq("x^{99999999}", "x"), None);
    }
}
