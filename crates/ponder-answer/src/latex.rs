//! Tokens for math answers written in LaTeX or plain notation.
//!
//! The lexer is where surface clean-up happens: spacing commands, `\left`/`\right`, `\dfrac`,
//! dollars, degrees, thousands separators, unit words and `\text{…}` are resolved here, so the
//! parser sees one small vocabulary whatever notation the answer used. It never fails: a
//! character it does not know becomes [`Tok::Unknown`], which the parser rejects.

/// A relation between two expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelOp {
    Eq,
    Approx,
    Lt,
    Le,
    Gt,
    Ge,
    Ne,
    In,
}

impl RelOp {
    pub fn symbol(self) -> &'static str {
        match self {
            RelOp::Eq => "=",
            RelOp::Approx => "≈",
            RelOp::Lt => "<",
            RelOp::Le => "≤",
            RelOp::Gt => ">",
            RelOp::Ge => "≥",
            RelOp::Ne => "≠",
            RelOp::In => "∈",
        }
    }
}

/// A function known to the evaluator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Log,
    Exp,
    Sqrt,
    Abs,
    Floor,
    Ceil,
}

impl Func {
    pub fn name(self) -> &'static str {
        match self {
            Func::Sin => "sin",
            Func::Cos => "cos",
            Func::Tan => "tan",
            Func::Sec => "sec",
            Func::Csc => "csc",
            Func::Cot => "cot",
            Func::Asin => "arcsin",
            Func::Acos => "arccos",
            Func::Atan => "arctan",
            Func::Sinh => "sinh",
            Func::Cosh => "cosh",
            Func::Tanh => "tanh",
            Func::Ln => "ln",
            Func::Log => "log",
            Func::Exp => "exp",
            Func::Sqrt => "sqrt",
            Func::Abs => "abs",
            Func::Floor => "floor",
            Func::Ceil => "ceil",
        }
    }

    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" => Func::Tan,
            "sec" => Func::Sec,
            "csc" => Func::Csc,
            "cot" => Func::Cot,
            "arcsin" | "asin" => Func::Asin,
            "arccos" | "acos" => Func::Acos,
            "arctan" | "atan" => Func::Atan,
            "sinh" => Func::Sinh,
            "cosh" => Func::Cosh,
            "tanh" => Func::Tanh,
            "ln" => Func::Ln,
            "log" | "lg" => Func::Log,
            "exp" => Func::Exp,
            "sqrt" => Func::Sqrt,
            "abs" => Func::Abs,
            _ => return None,
        })
    }
}

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Unsigned decimal digits with an optional fractional part, separators removed: `1234.5`.
    Num(String),
    /// A variable or an unknown command: `x`, `alpha`, `zzz`.
    Ident(String),
    /// A word of text (from `\text{…}` or a plain word of four letters or more).
    Word(String),
    Func(Func),
    Frac,
    Sqrt,
    Binom,
    Pi,
    Inf,
    Plus,
    Minus,
    PlusMinus,
    Star,
    Slash,
    Caret,
    Underscore,
    Bang,
    LParen,
    RParen,
    LBrack,
    RBrack,
    LBrace,
    RBrace,
    LSet,
    RSet,
    Bar,
    LFloor,
    RFloor,
    LCeil,
    RCeil,
    Comma,
    Semicolon,
    Amp,
    RowSep,
    Rel(RelOp),
    Cup,
    Cap,
    Setminus,
    Percent,
    Begin(String),
    End(String),
    Unknown(char),
}

/// Words read as units of measure and dropped (with a following power such as `^2`).
const UNITS: &[&str] = &[
    "cm",
    "mm",
    "km",
    "m",
    "meter",
    "meters",
    "metre",
    "metres",
    "centimeter",
    "centimeters",
    "kilometer",
    "kilometers",
    "inch",
    "inches",
    "in",
    "ft",
    "foot",
    "feet",
    "yard",
    "yards",
    "mile",
    "miles",
    "mph",
    "kg",
    "g",
    "gram",
    "grams",
    "kilogram",
    "kilograms",
    "lb",
    "lbs",
    "pound",
    "pounds",
    "ounce",
    "ounces",
    "oz",
    "l",
    "ml",
    "liter",
    "liters",
    "litre",
    "litres",
    "gallon",
    "gallons",
    "s",
    "sec",
    "second",
    "seconds",
    "min",
    "minute",
    "minutes",
    "h",
    "hr",
    "hrs",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "degree",
    "degrees",
    "deg",
    "radian",
    "radians",
    "rad",
    "dollar",
    "dollars",
    "cent",
    "cents",
    "unit",
    "units",
    "sq",
    "square",
    "cubic",
];

/// Unit words that are also common variable names: only dropped inside `\text{…}`.
const SHORT_UNITS: &[&str] = &["m", "g", "l", "s", "h", "in", "min", "sec", "rad", "deg"];

fn is_unit(word: &str, in_text: bool) -> bool {
    let lower = word.to_ascii_lowercase();
    UNITS.contains(&lower.as_str()) && (in_text || !SHORT_UNITS.contains(&lower.as_str()))
}

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

/// Tokenises `src`. At most `max_tokens` tokens are produced; `None` when there would be more.
pub fn lex(src: &str, max_tokens: usize) -> Option<Vec<Tok>> {
    let mut lexer = Lexer {
        s: src.as_bytes(),
        src,
        i: 0,
        out: Vec::new(),
        max: max_tokens,
        depth: 0,
    };
    lexer.run()?;
    Some(lexer.out)
}

struct Lexer<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
    out: Vec<Tok>,
    max: usize,
    /// Open brackets: inside them a plain comma separates items, never thousands.
    depth: usize,
}

impl Lexer<'_> {
    fn push(&mut self, t: Tok) -> Option<()> {
        if self.out.len() >= self.max {
            return None;
        }
        self.out.push(t);
        Some(())
    }

    fn peek(&self, k: usize) -> u8 {
        self.s.get(self.i + k).copied().unwrap_or(0)
    }

    fn run(&mut self) -> Option<()> {
        while self.i < self.s.len() {
            let b = self.s[self.i];
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b'~' | 0x0c => self.i += 1,
                b'0'..=b'9' => self.number()?,
                b'.' if self.peek(1).is_ascii_digit() => self.number()?,
                b'a'..=b'z' | b'A'..=b'Z' => self.word()?,
                b'\\' => self.command()?,
                b'$' => self.i += 1,
                b'+' => self.single(Tok::Plus)?,
                b'-' => self.single(Tok::Minus)?,
                b'*' => self.single(Tok::Star)?,
                b'/' => self.single(Tok::Slash)?,
                b':' => self.single(Tok::Slash)?,
                b'^' => {
                    if self.degree_after_caret() {
                        continue;
                    }
                    self.single(Tok::Caret)?
                }
                b'_' => self.single(Tok::Underscore)?,
                b'(' | b'[' => {
                    self.depth += 1;
                    self.single(if b == b'(' { Tok::LParen } else { Tok::LBrack })?
                }
                b')' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.single(if b == b')' { Tok::RParen } else { Tok::RBrack })?
                }
                b'{' => self.single(Tok::LBrace)?,
                b'}' => self.single(Tok::RBrace)?,
                b'|' => self.single(Tok::Bar)?,
                b',' => self.single(Tok::Comma)?,
                b';' => self.single(Tok::Semicolon)?,
                b'&' => self.single(Tok::Amp)?,
                b'%' => self.single(Tok::Percent)?,
                b'\'' | b'"' => self.i += 1,
                b'!' => {
                    if self.peek(1) == b'=' {
                        self.i += 2;
                        self.push(Tok::Rel(RelOp::Ne))?;
                    } else {
                        self.single(Tok::Bang)?;
                    }
                }
                b'=' => {
                    // `==`, `=<`, `=>` are read as `=`, `≤`, `≥`.
                    let (tok, len) = match self.peek(1) {
                        b'=' => (RelOp::Eq, 2),
                        b'<' => (RelOp::Le, 2),
                        b'>' => (RelOp::Ge, 2),
                        _ => (RelOp::Eq, 1),
                    };
                    self.i += len;
                    self.push(Tok::Rel(tok))?;
                }
                b'<' | b'>' => {
                    let eq = self.peek(1) == b'=';
                    let op = match (b, eq) {
                        (b'<', true) => RelOp::Le,
                        (b'<', false) => RelOp::Lt,
                        (_, true) => RelOp::Ge,
                        _ => RelOp::Gt,
                    };
                    self.i += if eq { 2 } else { 1 };
                    self.push(Tok::Rel(op))?;
                }
                _ if b < 0x80 => self.single(Tok::Unknown(b as char))?,
                _ => self.unicode()?,
            }
        }
        Some(())
    }

    fn single(&mut self, t: Tok) -> Option<()> {
        self.i += 1;
        self.push(t)
    }

    /// `^\circ`, `^{\circ}`, `^{ \circ }`: degrees, dropped. Returns whether it consumed one.
    fn degree_after_caret(&mut self) -> bool {
        let rest = &self.src[self.i + 1..];
        let rest_trim = rest.trim_start();
        let skipped = rest.len() - rest_trim.len();
        for pat in [
            "\\circ",
            "{\\circ}",
            "{ \\circ }",
            "{\\circ }",
            "{ \\circ}",
            "\\degree",
        ] {
            if let Some(after) = rest_trim.strip_prefix(pat) {
                if pat == "\\circ" && after.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    continue;
                }
                self.i += 1 + skipped + pat.len();
                return true;
            }
        }
        false
    }

    fn unicode(&mut self) -> Option<()> {
        let c = self.src[self.i..].chars().next().unwrap_or(' ');
        self.i += c.len_utf8();
        let tok = match c {
            '−' | '–' => Tok::Minus,
            '×' | '·' | '⋅' => Tok::Star,
            '÷' => Tok::Slash,
            '≤' => Tok::Rel(RelOp::Le),
            '≥' => Tok::Rel(RelOp::Ge),
            '≠' => Tok::Rel(RelOp::Ne),
            '≈' => Tok::Rel(RelOp::Approx),
            '∈' => Tok::Rel(RelOp::In),
            '∪' => Tok::Cup,
            '∩' => Tok::Cap,
            '±' => Tok::PlusMinus,
            '√' => Tok::Sqrt,
            'π' => Tok::Pi,
            '∞' => Tok::Inf,
            '°' | '€' | '£' | '¥' | '₹' | '\u{a0}' | '²' | '³' => {
                // Degrees and currency are dropped; a superscript after a unit is part of it.
                return Some(());
            }
            other => Tok::Unknown(other),
        };
        self.push(tok)
    }

    /// Digits with thousands separators (`1,234,567`, `1 234`, `14{,}916`, `11,\!111`) and a
    /// decimal part.
    fn number(&mut self) -> Option<()> {
        let mut digits = String::new();
        let start_group = self.i;
        while self.peek(0).is_ascii_digit() {
            digits.push(self.peek(0) as char);
            self.i += 1;
        }
        let first_group_len = self.i - start_group;
        // Thousands groups: only after a first group of 1–3 digits not starting with 0.
        if (1..=3).contains(&first_group_len) && !digits.starts_with('0') {
            while let Some((sep_len, _)) = self.thousands_sep() {
                let g = self.i + sep_len;
                let group = self.s.get(g..g + 3);
                let next = self.s.get(g + 3).copied().unwrap_or(0);
                match group {
                    Some(d) if d.iter().all(u8::is_ascii_digit) && !next.is_ascii_digit() => {
                        digits.push_str(&self.src[g..g + 3]);
                        self.i = g + 3;
                    }
                    _ => break,
                }
            }
        }
        if self.peek(0) == b'.' && self.peek(1).is_ascii_digit() {
            digits.push('.');
            self.i += 1;
            while self.peek(0).is_ascii_digit() {
                digits.push(self.peek(0) as char);
                self.i += 1;
            }
        }
        if digits.starts_with('.') {
            digits.insert(0, '0');
        }
        // `1.5e-3`, `2E5`: scientific notation, when the exponent is digits not followed by a
        // letter (so `2e` and `3ex` stay products).
        if matches!(self.peek(0), b'e' | b'E') {
            let mut j = self.i + 1;
            if matches!(self.s.get(j), Some(b'+') | Some(b'-')) {
                j += 1;
            }
            let exp_start = j;
            while self.s.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            let next_letter = self.s.get(j).is_some_and(u8::is_ascii_alphabetic);
            if j > exp_start && j - exp_start <= 4 && !next_letter {
                let exp: i32 = self.src[exp_start..j].parse().unwrap_or(0);
                let exp = if self.s[self.i + 1] == b'-' {
                    -exp
                } else {
                    exp
                };
                self.i = j;
                return self.scientific(&digits, exp);
            }
        }
        self.push(Tok::Num(digits))
    }

    /// `m × 10^e` as tokens: `(m * 10 ^ e)`, kept exact.
    fn scientific(&mut self, mantissa: &str, exp: i32) -> Option<()> {
        self.push(Tok::LParen)?;
        self.push(Tok::Num(mantissa.to_string()))?;
        self.push(Tok::Star)?;
        self.push(Tok::Num("10".into()))?;
        self.push(Tok::Caret)?;
        self.push(Tok::LBrace)?;
        if exp < 0 {
            self.push(Tok::Minus)?;
        }
        self.push(Tok::Num(exp.unsigned_abs().to_string()))?;
        self.push(Tok::RBrace)?;
        self.push(Tok::RParen)
    }

    /// The length of a thousands separator at the cursor, if there is one.
    fn thousands_sep(&self) -> Option<(usize, ())> {
        let rest = &self.src[self.i..];
        for sep in [",\\!", ", \\!", "{,}", ",\\,", "\\,", ","] {
            if rest.starts_with(sep) && !(sep == "," && self.depth > 0) {
                // `, ` followed by spaces is a list, except in the LaTeX forms.
                let mut len = sep.len();
                if sep != "," {
                    while self.s.get(self.i + len) == Some(&b' ') {
                        len += 1;
                    }
                }
                return Some((len, ()));
            }
        }
        // `14 {, }916`: braces with spaces.
        let trimmed = rest.trim_start_matches(' ');
        if let Some(after) = trimmed.strip_prefix('{') {
            let after_t = after.trim_start_matches(' ');
            if let Some(after_c) = after_t.strip_prefix(',') {
                let after_ct = after_c.trim_start_matches(' ');
                if let Some(after_b) = after_ct.strip_prefix('}') {
                    let rest_t = after_b.trim_start_matches(' ');
                    return Some((rest.len() - rest_t.len(), ()));
                }
            }
        }
        // `1 000`: a single space.
        if rest.starts_with(' ') {
            return Some((1, ()));
        }
        None
    }

    fn word(&mut self) -> Option<()> {
        let start = self.i;
        while self.peek(0).is_ascii_alphabetic() {
            self.i += 1;
        }
        let word = &self.src[start..self.i];
        self.plain_word(word, false)
    }

    /// A run of letters outside `\text{}` (or inside, with `in_text`).
    fn plain_word(&mut self, word: &str, in_text: bool) -> Option<()> {
        let lower = word.to_ascii_lowercase();
        match lower.as_str() {
            "and" | "or" => return self.push(Tok::Comma),
            "percent" | "percentage" | "pct" => return self.push(Tok::Percent),
            "pi" => return self.push(Tok::Pi),
            "inf" | "infty" | "infinity" | "oo" => return self.push(Tok::Inf),
            _ => {}
        }
        if let Some(f) = Func::from_name(&lower) {
            if !in_text {
                return self.push(Tok::Func(f));
            }
        }
        if is_unit(word, in_text) {
            self.skip_unit_power();
            return Some(());
        }
        if in_text || word.len() >= 4 {
            return self.push(Tok::Word(word.to_string()));
        }
        for c in word.chars() {
            self.push(Tok::Ident(c.to_string()))?;
        }
        Some(())
    }

    /// Skips `^2`, `^{3}` or `²` after a unit.
    fn skip_unit_power(&mut self) {
        let rest = &self.src[self.i..];
        let trimmed = rest.trim_start_matches(['}', ' ']);
        let closing = &rest[..rest.len() - trimmed.len()];
        // Only braces that close the unit's own group may be skipped over; keep them.
        if !closing.is_empty() && closing.contains('}') {
            return;
        }
        for pat in ["^2", "^3", "^{2}", "^{3}", "²", "³"] {
            if trimmed.starts_with(pat) {
                self.i += closing.len() + pat.len();
                return;
            }
        }
    }

    fn command(&mut self) -> Option<()> {
        // `\\` followed by a letter is a doubly escaped command (`\\frac` → `\frac`).
        if self.peek(1) == b'\\' {
            if self.peek(2).is_ascii_alphabetic() {
                self.i += 1;
                return self.command();
            }
            self.i += 2;
            return self.push(Tok::RowSep);
        }
        let start = self.i + 1;
        let mut end = start;
        while self.s.get(end).is_some_and(u8::is_ascii_alphabetic) {
            end += 1;
        }
        if end == start {
            // A one-character command: `\{`, `\,`, `\%`, `\$` …
            let c = self.peek(1);
            self.i += 2;
            return match c {
                b'{' => {
                    self.depth += 1;
                    self.push(Tok::LSet)
                }
                b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.push(Tok::RSet)
                }
                b'%' => self.push(Tok::Percent),
                b'|' => self.push(Tok::Bar),
                b'(' | b')' | b'[' | b']' | b'$' | b',' | b';' | b':' | b'!' | b' ' | b'>' => {
                    Some(())
                }
                0 => Some(()),
                _ => {
                    if c >= 0x80 {
                        // Step back so the multi-byte character is read whole.
                        self.i -= 1;
                        Some(())
                    } else {
                        self.push(Tok::Unknown(c as char))
                    }
                }
            };
        }
        let name = &self.src[start..end];
        self.i = end;
        match name {
            "frac" | "dfrac" | "tfrac" | "cfrac" => self.push(Tok::Frac),
            "sqrt" => self.push(Tok::Sqrt),
            "binom" | "dbinom" | "tbinom" => self.push(Tok::Binom),
            "pi" => self.push(Tok::Pi),
            "infty" | "infin" | "infinity" => self.push(Tok::Inf),
            "cdot" | "times" | "ast" => self.push(Tok::Star),
            "div" => self.push(Tok::Slash),
            "pm" | "mp" => self.push(Tok::PlusMinus),
            "le" | "leq" | "leqslant" | "leqq" => self.push(Tok::Rel(RelOp::Le)),
            "ge" | "geq" | "geqslant" | "geqq" => self.push(Tok::Rel(RelOp::Ge)),
            "lt" => self.push(Tok::Rel(RelOp::Lt)),
            "gt" => self.push(Tok::Rel(RelOp::Gt)),
            "ne" | "neq" => self.push(Tok::Rel(RelOp::Ne)),
            "approx" | "simeq" | "thickapprox" => self.push(Tok::Rel(RelOp::Approx)),
            "in" => self.push(Tok::Rel(RelOp::In)),
            "cup" => self.push(Tok::Cup),
            "cap" => self.push(Tok::Cap),
            "setminus" | "backslash" => self.push(Tok::Setminus),
            "lfloor" => self.push(Tok::LFloor),
            "rfloor" => self.push(Tok::RFloor),
            "lceil" => self.push(Tok::LCeil),
            "rceil" => self.push(Tok::RCeil),
            "lvert" | "rvert" | "vert" | "mid" => self.push(Tok::Bar),
            "lbrace" => self.push(Tok::LSet),
            "rbrace" => self.push(Tok::RSet),
            "langle" => self.push(Tok::LParen),
            "rangle" => self.push(Tok::RParen),
            "emptyset" | "varnothing" => {
                self.push(Tok::LSet)?;
                self.push(Tok::RSet)
            }
            "n" | "left" | "right" | "big" | "Big" | "bigg" | "Bigg" | "bigl" | "bigr" | "Bigl"
            | "Bigr" | "biggl" | "biggr" | "middle" | "displaystyle" | "textstyle" | "limits"
            | "quad" | "qquad" | "hspace" | "space" | "enspace" | "thinspace" | "nonumber"
            | "notag" | "circ" | "degree" | "dollar" | "boxed" | "fbox" | "mathbf"
            | "boldsymbol" | "bm" | "mathit" | "mathsf" | "mathcal" | "mathbb" | "vec"
            | "overline" | "bar" | "hat" | "tilde" | "underline" | "overrightarrow" | "widehat"
            | "displaylines" | "color" => {
                if matches!(name, "hspace" | "color") {
                    self.skip_group();
                }
                Some(())
            }
            "text" | "textbf" | "textit" | "textnormal" | "textrm" | "textsf" | "texttt"
            | "mbox" | "hbox" | "mathrm" | "operatorname" | "emph" => self.text_group(name),
            "begin" | "end" => {
                let env = self.group_content().unwrap_or_default();
                let env = env.trim_end_matches('*').to_string();
                self.push(if name == "begin" {
                    Tok::Begin(env)
                } else {
                    Tok::End(env)
                })
            }
            _ => {
                if let Some(f) = Func::from_name(name) {
                    return self.push(Tok::Func(f));
                }
                if GREEK.contains(&name) {
                    return self.push(Tok::Ident(name.to_string()));
                }
                // `\cotx`, `\sinx`, `\pix`: a known command run into its argument.
                for split in (2..name.len()).rev() {
                    let (head, tail) = name.split_at(split);
                    let tok = match head {
                        "pi" => Some(Tok::Pi),
                        _ => Func::from_name(head).map(Tok::Func),
                    };
                    if let Some(tok) = tok {
                        self.push(tok)?;
                        return self.plain_word(tail, false);
                    }
                }
                self.push(Tok::Ident(format!("\\{name}")))
            }
        }
    }

    /// The raw content of a `{…}` group at the cursor (after optional spaces), consuming it.
    fn group_content(&mut self) -> Option<String> {
        while self.peek(0) == b' ' {
            self.i += 1;
        }
        if self.peek(0) != b'{' {
            return None;
        }
        let open = self.i + 1;
        let mut depth = 1usize;
        let mut j = open;
        while j < self.s.len() {
            match self.s[j] {
                b'\\' => j += 1,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i = j + 1;
                        return Some(self.src[open..j].to_string());
                    }
                }
                _ => {}
            }
            j += 1;
        }
        None
    }

    fn skip_group(&mut self) {
        let _ = self.group_content();
    }

    /// `\text{…}` and friends: units are dropped, `and`/`or` separate items, numbers are
    /// numbers, `\operatorname{sin}` is a function, anything else is a word.
    fn text_group(&mut self, command: &str) -> Option<()> {
        let Some(content) = self.group_content() else {
            return Some(());
        };
        let trimmed = content.trim();
        if trimmed.is_empty() {
            return Some(());
        }
        if command == "operatorname" || command == "mathrm" {
            if let Some(f) = Func::from_name(trimmed) {
                return self.push(Tok::Func(f));
            }
        }
        // Numbers, math and single letters inside text are read as math.
        let is_math = trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || " .,+-/()".contains(c))
            || (command == "mathrm" && trimmed.len() == 1);
        if is_math {
            let toks = lex(trimmed, self.max.saturating_sub(self.out.len()))?;
            for t in toks {
                self.push(t)?;
            }
            return Some(());
        }
        // `4 apples`: a number followed by words is the number with its unit.
        let mut words = trimmed.split_whitespace();
        if let Some(first) = words.next() {
            let numeric = first
                .chars()
                .all(|c| c.is_ascii_digit() || ".,-".contains(c))
                && first.chars().any(|c| c.is_ascii_digit());
            if numeric && words.all(|w| w.chars().all(|c| c.is_alphabetic())) {
                for t in lex(first, self.max.saturating_sub(self.out.len()))? {
                    self.push(t)?;
                }
                return Some(());
            }
        }
        // `(C)` → the letter C.
        let unwrapped = trimmed
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(trimmed);
        let words: Vec<&str> = unwrapped.split_whitespace().collect();
        if words.iter().all(|w| {
            let l = w.to_ascii_lowercase();
            is_unit(w, true) || l == "and" || l == "or" || l == "percent"
        }) {
            for w in words {
                let l = w.to_ascii_lowercase();
                if l == "and" || l == "or" {
                    self.push(Tok::Comma)?;
                } else if l == "percent" {
                    self.push(Tok::Percent)?;
                }
            }
            self.skip_unit_power();
            return Some(());
        }
        self.push(Tok::Word(
            unwrapped.split_whitespace().collect::<Vec<_>>().join(" "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s, 10_000).expect("within limits")
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(toks("7,425,000"), vec![Tok::Num("7425000".into())]);
        assert_eq!(toks("14{,}916"), vec![Tok::Num("14916".into())]);
        assert_eq!(toks("14 {, }916"), vec![Tok::Num("14916".into())]);
        assert_eq!(
            toks("11,\\! 111,\\! 111,\\! 100"),
            vec![Tok::Num("11111111100".into())]
        );
        assert_eq!(toks("1 000"), vec![Tok::Num("1000".into())]);
        // A space after the comma makes a list.
        assert_eq!(
            toks("32, 349"),
            vec![Tok::Num("32".into()), Tok::Comma, Tok::Num("349".into())]
        );
        assert_eq!(toks(".4"), vec![Tok::Num("0.4".into())]);
    }

    #[test]
    fn text_units_and_degrees() {
        assert_eq!(
            toks("125\\textnormal{ miles}"),
            vec![Tok::Num("125".into())]
        );
        assert_eq!(toks("15\\mbox{ cm}^2"), vec![Tok::Num("15".into())]);
        assert_eq!(toks("90^\\circ"), vec![Tok::Num("90".into())]);
        assert_eq!(
            toks("12\\text{ and }13"),
            vec![Tok::Num("12".into()), Tok::Comma, Tok::Num("13".into())]
        );
        assert_eq!(toks("\\text{(C)}"), vec![Tok::Word("C".into())]);
        assert_eq!(toks("\\\\frac"), vec![Tok::Frac]);
        assert_eq!(
            toks("\\cotx"),
            vec![Tok::Func(Func::Cot), Tok::Ident("x".into())]
        );
        assert_eq!(toks("\\zzz"), vec![Tok::Ident("\\zzz".into())]);
    }
}
