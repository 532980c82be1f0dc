//! Expression trees for math answers: parsing from tokens, exact and floating evaluation, and a
//! canonical rendering.
//!
//! Everything here is bounded: the parser stops at a nesting depth and a node count, exact
//! arithmetic refuses results beyond 127 bits, and floating evaluation of a huge power is just
//! `inf`. A refusal is reported as [`ParseError::Limit`], never as a panic or a hang.

use std::fmt;

use crate::latex::{lex, Func, RelOp, Tok};

/// An exact rational number `num / den` in lowest terms, `den > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Q {
    pub num: i128,
    pub den: i128,
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    i128::try_from(a).unwrap_or(1)
}

impl Q {
    pub fn new(num: i128, den: i128) -> Option<Q> {
        if den == 0 || num == i128::MIN || den == i128::MIN {
            return None;
        }
        let g = gcd(num, den).max(1);
        let sign = if den < 0 { -1 } else { 1 };
        Some(Q {
            num: sign * (num / g),
            den: sign * (den / g),
        })
    }

    pub fn int(n: i128) -> Q {
        Q { num: n, den: 1 }
    }

    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    pub(crate) fn add(self, o: Q) -> Option<Q> {
        let g = gcd(self.den, o.den).max(1);
        let l = self.den / g;
        Q::new(
            self.num
                .checked_mul(o.den / g)?
                .checked_add(o.num.checked_mul(l)?)?,
            l.checked_mul(o.den)?,
        )
    }

    pub(crate) fn mul(self, o: Q) -> Option<Q> {
        let g1 = gcd(self.num, o.den).max(1);
        let g2 = gcd(o.num, self.den).max(1);
        Q::new(
            (self.num / g1).checked_mul(o.num / g2)?,
            (self.den / g2).checked_mul(o.den / g1)?,
        )
    }

    pub(crate) fn neg(self) -> Q {
        Q {
            num: -self.num,
            den: self.den,
        }
    }

    pub(crate) fn recip(self) -> Option<Q> {
        Q::new(self.den, self.num)
    }

    fn pow(self, e: i128) -> Option<Q> {
        if e.unsigned_abs() > 512 {
            return None;
        }
        let base = if e < 0 { self.recip()? } else { self };
        let mut acc = Q::int(1);
        for _ in 0..e.unsigned_abs() {
            acc = acc.mul(base)?;
        }
        Some(acc)
    }

    fn is_integer(self) -> bool {
        self.den == 1
    }
}

/// A numeric literal: its exact value when it has one and whether it was written as a decimal
/// with a fractional part (which marks it as possibly rounded).
#[derive(Debug, Clone, PartialEq)]
pub struct Literal {
    pub exact: Option<Q>,
    pub value: f64,
    pub approx: bool,
    pub text: String,
}

impl Literal {
    pub fn parse(text: &str) -> Literal {
        let value = text.parse::<f64>().unwrap_or(f64::NAN);
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let frac_t = frac.trim_end_matches('0');
        let exact = (int.len() + frac_t.len() <= 36)
            .then(|| {
                let digits = format!("{int}{frac_t}");
                let num: i128 = digits.parse().ok()?;
                let den = 10i128.checked_pow(frac_t.len() as u32)?;
                Q::new(num, den)
            })
            .flatten();
        Literal {
            exact,
            value,
            approx: !frac_t.is_empty(),
            text: text.to_string(),
        }
    }

    fn from_q(q: Q) -> Literal {
        Literal {
            exact: Some(q),
            value: q.to_f64(),
            approx: false,
            text: if q.den == 1 {
                q.num.to_string()
            } else {
                format!("{}/{}", q.num, q.den)
            },
        }
    }
}

/// Named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Constant {
    Pi,
    E,
    Infinity,
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Num(Literal),
    Sym(String),
    Const(Constant),
    /// A word answer, such as `\text{Evelyn}` or a choice letter in text.
    Text(String),
    Add(Vec<Node>),
    Mul(Vec<Node>),
    Neg(Box<Node>),
    Div(Box<Node>, Box<Node>),
    Pow(Box<Node>, Box<Node>),
    /// `n`-th root (`\sqrt[n]{x}`); square roots use `Func(Sqrt)`.
    Root(Box<Node>, Box<Node>),
    Func(Func, Box<Node>),
    Factorial(Box<Node>),
    Binom(Box<Node>, Box<Node>),
    /// `a ± b` (a unary `±b` has `a = 0`).
    PlusMinus(Box<Node>, Box<Node>),
    Percent(Box<Node>),
    /// `(a, b, …)`: ordered. A pair may also be read as an open interval.
    Tuple(Vec<Node>),
    /// `a, b, …` without brackets: takes the kind of what it is compared with.
    List(Vec<Node>),
    /// `\{a, b, …\}`: unordered.
    Set(Vec<Node>),
    Interval {
        lo: Box<Node>,
        hi: Box<Node>,
        lo_closed: bool,
        hi_closed: bool,
    },
    Union(Vec<Node>),
    Matrix(Vec<Vec<Node>>),
    /// `a op b op c …`; `texts` holds the source text of each part.
    Relation {
        parts: Vec<Node>,
        ops: Vec<RelOp>,
    },
}

/// Why an answer did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The text is not an expression this parser reads.
    Syntax,
    /// A size, depth or length limit was reached.
    Limit,
}

/// Limits on parsing.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_len: usize,
    pub max_tokens: usize,
    pub max_depth: usize,
    pub max_nodes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_len: 20_000,
            max_tokens: 5_000,
            max_depth: 250,
            max_nodes: 5_000,
        }
    }
}

/// Parses an answer (LaTeX or plain notation).
pub fn parse(src: &str, limits: &ParseLimits) -> Result<Node, ParseError> {
    if src.len() > limits.max_len {
        return Err(ParseError::Limit);
    }
    let toks = lex(src, limits.max_tokens).ok_or(ParseError::Limit)?;
    if toks.is_empty() {
        return Err(ParseError::Syntax);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        nodes: 0,
        limits: *limits,
        pending: None,
    };
    let node = p.list(&[])?;
    if p.pos < p.toks.len() || p.pending.is_some() {
        return Err(ParseError::Syntax);
    }
    Ok(node)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    nodes: usize,
    limits: ParseLimits,
    /// A token split off another (the second digit of `\frac94`).
    pending: Option<Tok>,
}

type PResult = Result<Node, ParseError>;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.pending.as_ref().or_else(|| self.toks.get(self.pos))
    }

    fn next(&mut self) -> Option<Tok> {
        if let Some(t) = self.pending.take() {
            return Some(t);
        }
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &Tok) -> Result<(), ParseError> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(ParseError::Syntax)
        }
    }

    fn node(&mut self, n: Node) -> PResult {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(ParseError::Limit);
        }
        Ok(n)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            Err(ParseError::Limit)
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Comma-separated items up to (not including) one of `close` or the end.
    fn list(&mut self, close: &[Tok]) -> PResult {
        let items = self.items(close)?;
        if items.len() == 1 {
            Ok(items.into_iter().next().unwrap_or(Node::List(Vec::new())))
        } else {
            self.node(Node::List(items))
        }
    }

    fn items(&mut self, close: &[Tok]) -> Result<Vec<Node>, ParseError> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some(t) if close.contains(t) => break,
                Some(Tok::Comma) | Some(Tok::Semicolon) => {
                    // Empty items (`1,,2`, a trailing comma) are skipped.
                    self.next();
                    continue;
                }
                _ => {}
            }
            items.push(self.relation()?);
            match self.peek() {
                Some(Tok::Comma) | Some(Tok::Semicolon) => {
                    self.next();
                }
                _ => break,
            }
        }
        self.leave();
        if items.is_empty() {
            return Err(ParseError::Syntax);
        }
        Ok(items)
    }

    fn relation(&mut self) -> PResult {
        let first = self.setop()?;
        let mut parts = vec![first];
        let mut ops = Vec::new();
        while let Some(Tok::Rel(op)) = self.peek() {
            let op = *op;
            self.next();
            ops.push(op);
            parts.push(self.setop()?);
        }
        if ops.is_empty() {
            return Ok(parts.pop().unwrap_or(Node::List(Vec::new())));
        }
        // `x \in S` is the set S.
        if ops == [RelOp::In] {
            return Ok(parts.pop().unwrap_or(Node::List(Vec::new())));
        }
        if ops.contains(&RelOp::In) {
            return Err(ParseError::Syntax);
        }
        self.node(Node::Relation { parts, ops })
    }

    fn setop(&mut self) -> PResult {
        let first = self.sum()?;
        if self.peek() != Some(&Tok::Cup) {
            if matches!(self.peek(), Some(Tok::Cap) | Some(Tok::Setminus)) {
                return Err(ParseError::Syntax);
            }
            return Ok(first);
        }
        let mut parts = vec![first];
        while self.eat(&Tok::Cup) {
            parts.push(self.sum()?);
        }
        self.node(Node::Union(parts))
    }

    fn sum(&mut self) -> PResult {
        self.enter()?;
        let mut terms = vec![self.product()?];
        loop {
            match self.peek() {
                Some(Tok::Plus) => {
                    self.next();
                    terms.push(self.product()?);
                }
                Some(Tok::Minus) => {
                    self.next();
                    let t = self.product()?;
                    terms.push(self.node(Node::Neg(Box::new(t)))?);
                }
                Some(Tok::PlusMinus) => {
                    self.next();
                    let t = self.product()?;
                    let left = if terms.len() == 1 {
                        terms.pop().unwrap_or(Node::List(Vec::new()))
                    } else {
                        Node::Add(std::mem::take(&mut terms))
                    };
                    terms = vec![self.node(Node::PlusMinus(Box::new(left), Box::new(t)))?];
                }
                _ => break,
            }
        }
        self.leave();
        if terms.len() == 1 {
            Ok(terms.pop().unwrap_or(Node::List(Vec::new())))
        } else {
            self.node(Node::Add(terms))
        }
    }

    fn starts_factor(t: &Tok) -> bool {
        matches!(
            t,
            Tok::Num(_)
                | Tok::Ident(_)
                | Tok::Func(_)
                | Tok::Frac
                | Tok::Sqrt
                | Tok::Binom
                | Tok::Pi
                | Tok::Inf
                | Tok::LParen
                | Tok::LBrace
                | Tok::Begin(_)
                | Tok::LFloor
                | Tok::LCeil
        )
    }

    /// Whether the tokens ahead are `\frac{int}{int}` and then the end of the item: with an
    /// integer just before, that is a mixed number (`2\frac{1}{2}` = 5/2).
    fn mixed_fraction_ahead(&self) -> bool {
        if self.pending.is_some() {
            return false;
        }
        let t = &self.toks[self.pos.min(self.toks.len())..];
        let int = |t: Option<&Tok>| matches!(t, Some(Tok::Num(n)) if !n.contains('.'));
        let shape = t.len() >= 7
            && t[0] == Tok::Frac
            && t[1] == Tok::LBrace
            && int(t.get(2))
            && t[3] == Tok::RBrace
            && t[4] == Tok::LBrace
            && int(t.get(5))
            && t[6] == Tok::RBrace;
        shape
            && matches!(
                t.get(7),
                None | Some(Tok::Comma)
                    | Some(Tok::Semicolon)
                    | Some(Tok::RParen)
                    | Some(Tok::RBrack)
                    | Some(Tok::RBrace)
                    | Some(Tok::Rel(_))
                    | Some(Tok::Word(_))
            )
    }

    fn product(&mut self) -> PResult {
        self.enter()?;
        let mut factors = vec![self.unary()?];
        if matches!(&factors[0], Node::Num(l) if !l.approx && l.exact.is_some_and(|q| q.den == 1))
            && self.mixed_fraction_ahead()
        {
            let frac = self.power()?;
            let whole = factors.pop().unwrap_or(Node::List(Vec::new()));
            self.leave();
            return self.node(Node::Add(vec![whole, frac]));
        }
        loop {
            match self.peek() {
                Some(Tok::Star) => {
                    self.next();
                    factors.push(self.unary()?);
                }
                Some(Tok::Slash) => {
                    self.next();
                    let d = self.unary()?;
                    let n = if factors.len() == 1 {
                        factors.pop().unwrap_or(Node::List(Vec::new()))
                    } else {
                        Node::Mul(std::mem::take(&mut factors))
                    };
                    factors = vec![self.node(Node::Div(Box::new(n), Box::new(d)))?];
                }
                Some(Tok::Word(_)) => {
                    // A word after a quantity is its unit: dropped.
                    self.next();
                }
                Some(Tok::Percent) => {
                    self.next();
                    let last = factors.pop().unwrap_or(Node::List(Vec::new()));
                    factors.push(self.node(Node::Percent(Box::new(last)))?);
                }
                Some(t) if Self::starts_factor(t) => {
                    factors.push(self.power()?);
                }
                _ => break,
            }
        }
        self.leave();
        if factors.len() == 1 {
            Ok(factors.pop().unwrap_or(Node::List(Vec::new())))
        } else {
            self.node(Node::Mul(factors))
        }
    }

    fn unary(&mut self) -> PResult {
        self.enter()?;
        let out = match self.peek() {
            Some(Tok::Minus) => {
                self.next();
                let x = self.unary()?;
                self.node(Node::Neg(Box::new(x)))
            }
            Some(Tok::Plus) => {
                self.next();
                self.unary()
            }
            Some(Tok::PlusMinus) => {
                self.next();
                let x = self.unary()?;
                let zero = Node::Num(Literal::from_q(Q::int(0)));
                self.node(Node::PlusMinus(Box::new(zero), Box::new(x)))
            }
            _ => self.power(),
        };
        self.leave();
        out
    }

    fn power(&mut self) -> PResult {
        let base = self.postfix()?;
        if self.eat(&Tok::Caret) {
            let exp = self.exponent()?;
            return self.node(Node::Pow(Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn exponent(&mut self) -> PResult {
        self.enter()?;
        let out = match self.peek() {
            Some(Tok::LBrace) => {
                self.next();
                let e = self.list(&[Tok::RBrace])?;
                self.expect(&Tok::RBrace)?;
                let e = self.postfix_ops(e)?;
                Ok(e)
            }
            Some(Tok::Minus) | Some(Tok::Plus) => self.unary(),
            _ => self.power(),
        };
        self.leave();
        out
    }

    fn postfix(&mut self) -> PResult {
        let p = self.primary()?;
        self.postfix_ops(p)
    }

    fn postfix_ops(&mut self, mut p: Node) -> PResult {
        loop {
            match self.peek() {
                Some(Tok::Bang) => {
                    self.next();
                    p = self.node(Node::Factorial(Box::new(p)))?;
                }
                Some(Tok::Percent) => {
                    self.next();
                    p = self.node(Node::Percent(Box::new(p)))?;
                }
                _ => return Ok(p),
            }
        }
    }

    /// A brace group or a single token (one digit of a number) as a command argument.
    fn argument(&mut self) -> PResult {
        self.enter()?;
        let out = match self.next() {
            Some(Tok::LBrace) => {
                let e = self.list(&[Tok::RBrace])?;
                self.expect(&Tok::RBrace)?;
                Ok(e)
            }
            Some(Tok::Num(n)) => {
                let mut chars = n.chars();
                let first = chars.next().unwrap_or('0');
                let rest: String = chars.collect();
                if !rest.is_empty() && first != '0' && !rest.starts_with('.') {
                    self.pending = Some(Tok::Num(rest));
                    self.node(Node::Num(Literal::parse(&first.to_string())))
                } else if !rest.is_empty() && !rest.starts_with('.') {
                    self.pending = Some(Tok::Num(rest));
                    self.node(Node::Num(Literal::parse("0")))
                } else {
                    self.node(Node::Num(Literal::parse(&n)))
                }
            }
            Some(Tok::Ident(s)) => self.symbol(s),
            Some(Tok::Pi) => self.node(Node::Const(Constant::Pi)),
            Some(Tok::Inf) => self.node(Node::Const(Constant::Infinity)),
            Some(t @ (Tok::Frac | Tok::Sqrt | Tok::Func(_))) => {
                self.pending = Some(t);
                self.primary()
            }
            _ => Err(ParseError::Syntax),
        };
        self.leave();
        out
    }

    fn symbol(&mut self, name: String) -> PResult {
        let mut name = name;
        if self.eat(&Tok::Underscore) {
            let sub = self.subscript()?;
            name = format!("{name}_{sub}");
        } else if name == "e" {
            return self.node(Node::Const(Constant::E));
        }
        self.node(Node::Sym(name))
    }

    /// A subscript as text: `_1`, `_{n+1}`, `_5`.
    fn subscript(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Tok::Num(n)) => Ok(n),
            Some(Tok::Ident(s)) => Ok(s),
            Some(Tok::LBrace) => {
                let mut depth = 1usize;
                let mut out = String::new();
                while let Some(t) = self.next() {
                    match &t {
                        Tok::LBrace => depth += 1,
                        Tok::RBrace => {
                            depth -= 1;
                            if depth == 0 {
                                return Ok(out);
                            }
                        }
                        _ => {}
                    }
                    out.push_str(&tok_text(&t));
                }
                Err(ParseError::Syntax)
            }
            _ => Err(ParseError::Syntax),
        }
    }

    fn primary(&mut self) -> PResult {
        self.enter()?;
        let out = self.primary_inner();
        self.leave();
        out
    }

    fn primary_inner(&mut self) -> PResult {
        let Some(t) = self.next() else {
            return Err(ParseError::Syntax);
        };
        match t {
            Tok::Num(n) => {
                if self.eat(&Tok::Underscore) {
                    // `204_5`: a numeral in another base, kept as written.
                    let sub = self.subscript()?;
                    return self.node(Node::Sym(format!("{n}_{sub}")));
                }
                self.node(Node::Num(Literal::parse(&n)))
            }
            Tok::Ident(s) => self.symbol(s),
            Tok::Word(w) => self.node(Node::Text(w)),
            Tok::Pi => self.node(Node::Const(Constant::Pi)),
            Tok::Inf => self.node(Node::Const(Constant::Infinity)),
            Tok::Frac => {
                let a = self.argument()?;
                let b = self.argument()?;
                self.node(Node::Div(Box::new(a), Box::new(b)))
            }
            Tok::Binom => {
                let a = self.argument()?;
                let b = self.argument()?;
                self.node(Node::Binom(Box::new(a), Box::new(b)))
            }
            Tok::Sqrt => {
                if self.eat(&Tok::LBrack) {
                    let n = self.list(&[Tok::RBrack])?;
                    self.expect(&Tok::RBrack)?;
                    let x = self.argument()?;
                    return self.node(Node::Root(Box::new(x), Box::new(n)));
                }
                let x = self.argument()?;
                self.node(Node::Func(Func::Sqrt, Box::new(x)))
            }
            Tok::Func(f) => self.function(f),
            Tok::LParen => self.bracketed(false),
            Tok::LBrack => self.bracketed(true),
            Tok::LBrace => {
                let e = self.list(&[Tok::RBrace])?;
                self.expect(&Tok::RBrace)?;
                Ok(e)
            }
            Tok::LSet => {
                if self.eat(&Tok::RSet) {
                    return self.node(Node::Set(Vec::new()));
                }
                let items = self.items(&[Tok::RSet])?;
                self.expect(&Tok::RSet)?;
                self.node(Node::Set(items))
            }
            Tok::Bar => {
                let e = self.sum()?;
                self.expect(&Tok::Bar)?;
                self.node(Node::Func(Func::Abs, Box::new(e)))
            }
            Tok::LFloor => {
                let e = self.sum()?;
                self.expect(&Tok::RFloor)?;
                self.node(Node::Func(Func::Floor, Box::new(e)))
            }
            Tok::LCeil => {
                let e = self.sum()?;
                self.expect(&Tok::RCeil)?;
                self.node(Node::Func(Func::Ceil, Box::new(e)))
            }
            Tok::Begin(env) => self.matrix(&env),
            _ => Err(ParseError::Syntax),
        }
    }

    /// `(…)` or `[…]`, closed by `)` or `]`: a group, a tuple or an interval.
    fn bracketed(&mut self, open_square: bool) -> PResult {
        let items = self.items(&[Tok::RParen, Tok::RBrack])?;
        let close_square = match self.next() {
            Some(Tok::RParen) => false,
            Some(Tok::RBrack) => true,
            _ => return Err(ParseError::Syntax),
        };
        if items.len() == 1 {
            if open_square != close_square {
                return Err(ParseError::Syntax);
            }
            return Ok(items.into_iter().next().unwrap_or(Node::List(Vec::new())));
        }
        if items.len() == 2 && (open_square || close_square) {
            let mut it = items.into_iter();
            let lo = it.next().unwrap_or(Node::List(Vec::new()));
            let hi = it.next().unwrap_or(Node::List(Vec::new()));
            return self.node(Node::Interval {
                lo: Box::new(lo),
                hi: Box::new(hi),
                lo_closed: open_square,
                hi_closed: close_square,
            });
        }
        if open_square != close_square {
            return Err(ParseError::Syntax);
        }
        self.node(Node::Tuple(items))
    }

    fn function(&mut self, f: Func) -> PResult {
        // `\sin^2 x`: the power applies to the value.
        let power = if self.eat(&Tok::Caret) {
            Some(self.exponent()?)
        } else {
            None
        };
        // `\log_2 8`
        let base = if f == Func::Log && self.eat(&Tok::Underscore) {
            Some(self.argument()?)
        } else {
            None
        };
        let arg = match self.peek() {
            Some(Tok::LParen) | Some(Tok::LBrace) => self.postfix()?,
            _ => {
                // An argument without brackets: the following factors up to the next function,
                // operator or relation (`\sin 2x`, `\sin b \cos a`).
                let mut factors = vec![self.power()?];
                while let Some(t) = self.peek() {
                    if matches!(t, Tok::Num(_) | Tok::Ident(_) | Tok::Pi) {
                        factors.push(self.power()?);
                    } else {
                        break;
                    }
                }
                if factors.len() == 1 {
                    factors.pop().unwrap_or(Node::List(Vec::new()))
                } else {
                    self.node(Node::Mul(factors))?
                }
            }
        };
        let mut value = self.node(Node::Func(f, Box::new(arg)))?;
        if let Some(b) = base {
            let ln_b = self.node(Node::Func(Func::Ln, Box::new(b)))?;
            let ln_x = match value {
                Node::Func(_, x) => Node::Func(Func::Ln, x),
                other => other,
            };
            value = self.node(Node::Div(Box::new(ln_x), Box::new(ln_b)))?;
        }
        if let Some(p) = power {
            value = self.node(Node::Pow(Box::new(value), Box::new(p)))?;
        }
        Ok(value)
    }

    fn matrix(&mut self, env: &str) -> PResult {
        if !matches!(
            env,
            "pmatrix"
                | "bmatrix"
                | "Bmatrix"
                | "vmatrix"
                | "Vmatrix"
                | "matrix"
                | "smallmatrix"
                | "array"
        ) {
            return Err(ParseError::Syntax);
        }
        if env == "array" && self.peek() == Some(&Tok::LBrace) {
            // Column specification `{cc}`.
            let mut depth = 0usize;
            while let Some(t) = self.next() {
                match t {
                    Tok::LBrace => depth += 1,
                    Tok::RBrace => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut rows: Vec<Vec<Node>> = Vec::new();
        let mut row: Vec<Node> = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::End(_)) => {
                    self.next();
                    if !row.is_empty() {
                        rows.push(row);
                    }
                    break;
                }
                Some(Tok::RowSep) => {
                    self.next();
                    if !row.is_empty() {
                        rows.push(std::mem::take(&mut row));
                    }
                }
                Some(Tok::Amp) => {
                    self.next();
                }
                None => return Err(ParseError::Syntax),
                _ => row.push(self.sum()?),
            }
        }
        if rows.is_empty() {
            return Err(ParseError::Syntax);
        }
        let cols = rows[0].len();
        if rows.iter().any(|r| r.len() != cols) {
            return Err(ParseError::Syntax);
        }
        self.node(Node::Matrix(rows))
    }
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Num(n) => n.clone(),
        Tok::Ident(s) | Tok::Word(s) => s.clone(),
        Tok::Plus => "+".into(),
        Tok::Minus => "-".into(),
        Tok::Comma => ",".into(),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// Exact value of a constant expression built from rationals with `+ − × ÷`, integer powers,
/// square roots of perfect squares, percentages and factorials. `None` when not exact or too big.
pub fn eval_exact(n: &Node) -> Option<Q> {
    match n {
        Node::Num(l) => l.exact,
        Node::Add(ts) => ts
            .iter()
            .try_fold(Q::int(0), |acc, t| acc.add(eval_exact(t)?)),
        Node::Mul(fs) => fs
            .iter()
            .try_fold(Q::int(1), |acc, f| acc.mul(eval_exact(f)?)),
        Node::Neg(x) => Some(eval_exact(x)?.neg()),
        Node::Div(a, b) => eval_exact(a)?.mul(eval_exact(b)?.recip()?),
        Node::Pow(b, e) => {
            let e = eval_exact(e)?;
            if !e.is_integer() {
                return None;
            }
            let b = eval_exact(b)?;
            // Refuse results beyond ~120 bits before computing them.
            let bits = (b.num.unsigned_abs().max(b.den.unsigned_abs()) as f64)
                .log2()
                .max(1.0);
            if bits * (e.num.unsigned_abs() as f64) > 120.0 {
                return None;
            }
            b.pow(e.num)
        }
        Node::Func(Func::Sqrt, x) => {
            let x = eval_exact(x)?;
            Some(Q::new(isqrt(x.num)?, isqrt(x.den)?)?)
        }
        Node::Func(Func::Abs, x) => {
            let x = eval_exact(x)?;
            Some(if x.num < 0 { x.neg() } else { x })
        }
        Node::Factorial(x) => {
            let x = eval_exact(x)?;
            if !x.is_integer() || x.num < 0 || x.num > 33 {
                return None;
            }
            (1..=x.num).try_fold(Q::int(1), |acc, k| acc.mul(Q::int(k)))
        }
        Node::Binom(a, b) => {
            let (a, b) = (eval_exact(a)?, eval_exact(b)?);
            if !a.is_integer() || !b.is_integer() || b.num < 0 || a.num < 0 || a.num > 120 {
                return None;
            }
            if b.num > a.num {
                return Some(Q::int(0));
            }
            let mut acc = Q::int(1);
            for k in 0..b.num {
                acc = acc.mul(Q::new(a.num - k, k + 1)?)?;
            }
            Some(acc)
        }
        Node::Percent(x) => eval_exact(x),
        _ => None,
    }
}

fn isqrt(n: i128) -> Option<i128> {
    if n < 0 {
        return None;
    }
    let r = (n as f64).sqrt().round() as i128;
    (r.checked_mul(r)? == n).then_some(r)
}

/// Whether the expression contains a decimal literal with a fractional part.
pub fn has_approx(n: &Node) -> bool {
    let mut found = false;
    visit(n, &mut |m| {
        if let Node::Num(l) = m {
            found |= l.approx;
        }
    });
    found
}

/// Calls `f` on every node, parents first.
pub fn visit(n: &Node, f: &mut dyn FnMut(&Node)) {
    f(n);
    match n {
        Node::Add(v)
        | Node::Mul(v)
        | Node::Tuple(v)
        | Node::List(v)
        | Node::Set(v)
        | Node::Union(v) => v.iter().for_each(|c| visit(c, f)),
        Node::Relation { parts, .. } => parts.iter().for_each(|c| visit(c, f)),
        Node::Neg(x) | Node::Func(_, x) | Node::Factorial(x) | Node::Percent(x) => visit(x, f),
        Node::Div(a, b)
        | Node::Pow(a, b)
        | Node::Root(a, b)
        | Node::Binom(a, b)
        | Node::PlusMinus(a, b) => {
            visit(a, f);
            visit(b, f);
        }
        Node::Interval { lo, hi, .. } => {
            visit(lo, f);
            visit(hi, f);
        }
        Node::Matrix(rows) => rows.iter().flatten().for_each(|c| visit(c, f)),
        Node::Num(_) | Node::Sym(_) | Node::Const(_) | Node::Text(_) => {}
    }
}

/// The free symbols of an expression, sorted and deduplicated.
pub fn symbols(n: &Node) -> Vec<String> {
    let mut out = Vec::new();
    visit(n, &mut |m| {
        if let Node::Sym(s) = m {
            out.push(s.clone());
        }
    });
    out.sort();
    out.dedup();
    out
}

/// Floating value of a scalar expression, with symbols valued by `env`. NaN when undefined.
pub fn eval_f64(n: &Node, env: &dyn Fn(&str) -> f64) -> f64 {
    match n {
        Node::Num(l) => l.value,
        Node::Sym(s) => env(s),
        Node::Const(Constant::Pi) => std::f64::consts::PI,
        Node::Const(Constant::E) => std::f64::consts::E,
        Node::Const(Constant::Infinity) => f64::INFINITY,
        Node::Add(ts) => ts.iter().map(|t| eval_f64(t, env)).sum(),
        Node::Mul(fs) => fs.iter().map(|f| eval_f64(f, env)).product(),
        Node::Neg(x) => -eval_f64(x, env),
        Node::Div(a, b) => {
            let d = eval_f64(b, env);
            if d == 0.0 {
                f64::NAN
            } else {
                eval_f64(a, env) / d
            }
        }
        Node::Pow(b, e) => {
            let (b, e) = (eval_f64(b, env), eval_f64(e, env));
            if b < 0.0 && e.fract() != 0.0 {
                // Real odd roots of negative numbers: (-8)^(1/3) = -2.
                let inv = 1.0 / e;
                if (inv.round() - inv).abs() < 1e-9 && (inv.round() as i64) % 2 != 0 {
                    return -(-b).powf(e);
                }
                return f64::NAN;
            }
            b.powf(e)
        }
        Node::Root(x, k) => {
            let (x, k) = (eval_f64(x, env), eval_f64(k, env));
            if x < 0.0 && k.fract() == 0.0 && (k as i64) % 2 != 0 {
                -(-x).powf(1.0 / k)
            } else {
                x.powf(1.0 / k)
            }
        }
        Node::Func(f, x) => {
            let x = eval_f64(x, env);
            match f {
                Func::Sin => x.sin(),
                Func::Cos => x.cos(),
                Func::Tan => x.tan(),
                Func::Sec => 1.0 / x.cos(),
                Func::Csc => 1.0 / x.sin(),
                Func::Cot => 1.0 / x.tan(),
                Func::Asin => x.asin(),
                Func::Acos => x.acos(),
                Func::Atan => x.atan(),
                Func::Sinh => x.sinh(),
                Func::Cosh => x.cosh(),
                Func::Tanh => x.tanh(),
                Func::Ln => x.ln(),
                Func::Log => x.log10(),
                Func::Exp => x.exp(),
                Func::Sqrt => x.sqrt(),
                Func::Abs => x.abs(),
                Func::Floor => x.floor(),
                Func::Ceil => x.ceil(),
            }
        }
        Node::Factorial(x) => {
            let x = eval_f64(x, env);
            if x < 0.0 || x.fract() != 0.0 {
                return f64::NAN;
            }
            if x > 170.0 {
                return f64::INFINITY;
            }
            (1..=x as u64).map(|k| k as f64).product()
        }
        Node::Binom(a, b) => {
            let (a, b) = (eval_f64(a, env), eval_f64(b, env));
            if b < 0.0 || b.fract() != 0.0 || b > 1000.0 {
                return f64::NAN;
            }
            (0..b as u64)
                .map(|k| (a - k as f64) / (k as f64 + 1.0))
                .product()
        }
        Node::Percent(x) => eval_f64(x, env),
        _ => f64::NAN,
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join(f: &mut fmt::Formatter<'_>, items: &[Node], sep: &str) -> fmt::Result {
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{it}")?;
            }
            Ok(())
        }
        match self {
            Node::Num(l) => match l.exact {
                Some(q) if !l.approx && q.den == 1 => write!(f, "{}", q.num),
                _ => f.write_str(&l.text),
            },
            Node::Sym(s) => f.write_str(s),
            Node::Const(Constant::Pi) => f.write_str("pi"),
            Node::Const(Constant::E) => f.write_str("e"),
            Node::Const(Constant::Infinity) => f.write_str("oo"),
            Node::Text(t) => write!(f, "\"{t}\""),
            Node::Add(ts) => {
                f.write_str("(")?;
                for (i, t) in ts.iter().enumerate() {
                    match t {
                        Node::Neg(x) => write!(f, "-{x}")?,
                        _ if i > 0 => write!(f, "+{t}")?,
                        _ => write!(f, "{t}")?,
                    }
                }
                f.write_str(")")
            }
            Node::Mul(fs) => {
                f.write_str("(")?;
                join(f, fs, "*")?;
                f.write_str(")")
            }
            Node::Neg(x) => write!(f, "-{x}"),
            Node::Div(a, b) => write!(f, "({a}/{b})"),
            Node::Pow(a, b) => write!(f, "{a}^{b}"),
            Node::Root(x, n) => write!(f, "root({x},{n})"),
            Node::Func(func, x) => write!(f, "{}({x})", func.name()),
            Node::Factorial(x) => write!(f, "{x}!"),
            Node::Binom(a, b) => write!(f, "binom({a},{b})"),
            Node::PlusMinus(a, b) => write!(f, "({a}±{b})"),
            Node::Percent(x) => write!(f, "{x}%"),
            Node::Tuple(v) => {
                f.write_str("(")?;
                join(f, v, ",")?;
                f.write_str(")")
            }
            Node::List(v) => join(f, v, ","),
            Node::Set(v) => {
                f.write_str("{")?;
                join(f, v, ",")?;
                f.write_str("}")
            }
            Node::Interval {
                lo,
                hi,
                lo_closed,
                hi_closed,
            } => write!(
                f,
                "{}{lo},{hi}{}",
                if *lo_closed { "[" } else { "(" },
                if *hi_closed { "]" } else { ")" }
            ),
            Node::Union(v) => join(f, v, "∪"),
            Node::Matrix(rows) => {
                f.write_str("[")?;
                for (i, r) in rows.iter().enumerate() {
                    if i > 0 {
                        f.write_str(";")?;
                    }
                    join(f, r, ",")?;
                }
                f.write_str("]")
            }
            Node::Relation { parts, ops } => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(ops[i - 1].symbol())?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Node {
        parse(s, &ParseLimits::default()).unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
    }

    fn exact(s: &str) -> Option<Q> {
        eval_exact(&p(s))
    }

    #[test]
    fn exact_values() {
        assert_eq!(exact("\\frac{1}{3}"), Q::new(1, 3));
        assert_eq!(exact("\\frac94"), Q::new(9, 4));
        assert_eq!(exact("\\frac3{3}"), Q::new(1, 1));
        assert_eq!(exact("-\\frac{10}{9}"), Q::new(-10, 9));
        assert_eq!(exact("(9+1)"), Q::new(10, 1));
        assert_eq!(exact("2^{10}"), Q::new(1024, 1));
        assert_eq!(exact("\\sqrt{16}"), Q::new(4, 1));
        assert_eq!(exact("5!"), Q::new(120, 1));
        assert_eq!(exact("\\binom{5}{2}"), Q::new(10, 1));
        assert_eq!(exact("2^{99999999}"), None);
        // Mixed numbers: an integer directly before a numeric fraction, alone.
        assert_eq!(exact("2\\frac{1}{2}"), Q::new(5, 2));
        assert_eq!(exact("2\\frac{1}{2}x"), None);
        assert_eq!(exact("1.5e3"), Q::new(1500, 1));
        assert_eq!(exact("2E-2"), Q::new(1, 50));
    }

    #[test]
    fn shapes() {
        assert!(matches!(p("(1,2)"), Node::Tuple(_)));
        assert!(matches!(p("[0,1)"), Node::Interval { .. }));
        assert!(matches!(p("\\{1,2\\}"), Node::Set(_)));
        assert!(matches!(p("1,2"), Node::List(_)));
        assert!(matches!(p("{1,3}"), Node::List(_)));
        assert!(matches!(p("x \\in [-2,7]"), Node::Interval { .. }));
        assert!(matches!(
            p("\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}"),
            Node::Matrix(_)
        ));
        assert!(matches!(p("x \\geq 5"), Node::Relation { .. }));
        assert!(matches!(p("[-1,2) \\cup (3, \\infty)"), Node::Union(_)));
    }

    #[test]
    fn deep_nesting_is_a_limit_not_a_crash() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        let limits = ParseLimits {
            max_len: 1_000_000,
            max_tokens: 100_000,
            ..ParseLimits::default()
        };
        assert_eq!(parse(&deep, &limits), Err(ParseError::Limit));
    }
}
