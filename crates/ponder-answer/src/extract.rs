//! Answer extraction: find the final answer in model text, and say how it was found.
//!
//! Pure and total: any text gives `Some(answer)` or `None`, never an error or a panic, and the
//! work is linear in the length of the text. Reasoning inside `<think>…</think>` is skipped
//! unless nothing follows the closing tag.
//!
//! The search goes from the strongest signal to the weakest, and within one kind of signal the
//! last occurrence wins:
//! 1. the last balanced `\boxed{…}` / `\fbox{…}` (boxes separated only by `and`, commas or
//!    spacing are read together as a list: `\boxed{-2} \text{ and } \boxed{1}` → `-2, 1`);
//! 2. markers: `<Answer>:`, `Final Answer:` / `The final answer is …`, GSM8K `#### n`,
//!    `The answer is …` / `Answer: …`, a line `A: n`;
//! 3. a multiple-choice letter (when choices are set);
//! 4. a short text that is itself an answer (`\frac{10}{9}`, `-5`);
//! 5. the last LaTeX math environment (`$…$`, `$$…$$`, `\(…\)`, `\[…\]`) or the last number,
//!    whichever ends later.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// How an answer was found, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The last complete, balanced `\boxed{…}` or `\fbox{…}` (with adjacent boxes).
    Boxed,
    /// `<Answer>: …`
    AnswerTag,
    /// `Final Answer: …` or `The final answer is …`.
    FinalAnswer,
    /// GSM8K's `#### n`.
    Hashes,
    /// `The answer is …` or `Answer: …`.
    AnswerIs,
    /// A line `A: …`.
    AnswerLine,
    /// A multiple-choice letter such as `(C)`.
    Choice,
    /// The whole (short) text is the answer.
    Whole,
    /// The last LaTeX math environment.
    Latex,
    /// The last number in the text (a fall-back that can be turned off).
    LastNumber,
}

/// An answer and how it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extracted {
    pub answer: String,
    pub method: Method,
}

/// Extraction settings kept for existing callers; [`Extractor`] has every setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractOptions {
    /// Fall back to the last number in the text. Default: true.
    pub last_number_fallback: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            last_number_fallback: true,
        }
    }
}

impl ExtractOptions {
    /// The full settings of a named preset (see [`Extractor::preset`]).
    pub fn preset(name: &str) -> Option<Extractor> {
        Extractor::preset(name)
    }
}

/// Where and how to look for an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Extractor {
    /// Look for `\boxed{…}` / `\fbox{…}`. Default: true.
    pub boxed: bool,
    /// Look for answer markers (`Final Answer:`, `####`, `The answer is`, …). Default: true.
    pub markers: bool,
    /// Fall back to the last LaTeX math environment. Default: true.
    pub latex: bool,
    /// Fall back to the last number. Default: true.
    pub last_number: bool,
    /// Take a short text that reads as an answer as a whole. Default: true.
    pub whole: bool,
    /// Multiple-choice letters (for example `"ABCD"`); answers are reduced to one of them.
    /// Default: none.
    pub choices: Option<String>,
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor {
            boxed: true,
            markers: true,
            latex: true,
            last_number: true,
            whole: true,
            choices: None,
        }
    }
}

impl Extractor {
    /// Settings per dataset: `gsm8k`, `math` / `math500`, `aime` (`aime24`, `aime25`), `amc`
    /// (`amc23`), `synthetic` (Ponder's task: `The answer is \boxed{N}.`), `multiple-choice`
    /// (letters A–E), and `default`.
    pub fn preset(name: &str) -> Option<Extractor> {
        let base = Extractor::default();
        Some(match name.to_ascii_lowercase().as_str() {
            "default" => base,
            "gsm8k" => Extractor {
                latex: false,
                ..base
            },
            "math" | "math500" | "aime" | "aime24" | "aime25" | "amc" | "amc23" => base,
            "synthetic" | "synthetic-easy" | "synthetic-medium" | "synthetic-hard" => Extractor {
                latex: false,
                whole: false,
                ..base
            },
            "multiple-choice" | "multiple_choice" | "mc" => Extractor {
                latex: false,
                last_number: false,
                whole: false,
                choices: Some("ABCDE".to_string()),
                ..base
            },
            _ => return None,
        })
    }
}

impl From<&ExtractOptions> for Extractor {
    fn from(o: &ExtractOptions) -> Self {
        Extractor {
            last_number: o.last_number_fallback,
            ..Extractor::default()
        }
    }
}

/// Settings that [`extract_answer`] accepts: [`Extractor`] or the older [`ExtractOptions`].
pub trait ExtractSettings {
    fn extractor(&self) -> Cow<'_, Extractor>;
}

impl ExtractSettings for Extractor {
    fn extractor(&self) -> Cow<'_, Extractor> {
        Cow::Borrowed(self)
    }
}

impl ExtractSettings for ExtractOptions {
    fn extractor(&self) -> Cow<'_, Extractor> {
        Cow::Owned(Extractor::from(self))
    }
}

/// The text after the reasoning block: the part after the last `</think>`, unless that part is
/// blank, in which case the reasoning itself (without the tags) is searched.
fn answer_region(text: &str) -> &str {
    match text.rfind("</think>") {
        Some(pos) => {
            let after = &text[pos + "</think>".len()..];
            if after.trim().is_empty() {
                let before = &text[..pos];
                match before.find("<think>") {
                    Some(open) => &before[open + "<think>".len()..],
                    None => before,
                }
            } else {
                after
            }
        }
        None => text,
    }
}

/// Finds the final answer in `text` (settings: an [`Extractor`] or the older [`ExtractOptions`]).
pub fn extract_answer<O: ExtractSettings + ?Sized>(text: &str, options: &O) -> Option<Extracted> {
    extract_with(text, &options.extractor())
}

/// Finds the final answer in `text`.
pub fn extract_with(text: &str, ex: &Extractor) -> Option<Extracted> {
    let region = answer_region(text);
    let found = |answer: Option<String>, method: Method| {
        answer
            .map(|a| clean(&a))
            .filter(|a| !a.is_empty())
            .map(|answer| Extracted { answer, method })
    };
    let mut result = None;
    if ex.boxed {
        if let Some((end, group)) = last_boxed_group(region) {
            // `The final answer is $x$. I hope it is correct.` after the last box wins over it.
            let minerva = if ex.markers {
                minerva(region).filter(|(pos, _)| *pos > end)
            } else {
                None
            };
            result = match minerva {
                Some((_, a)) => found(Some(a), Method::FinalAnswer),
                None => found(Some(group), Method::Boxed),
            };
        }
    }
    if result.is_none() && ex.markers {
        result = found(after_marker(region, "<Answer>:"), Method::AnswerTag)
            .or_else(|| found(final_answer(region), Method::FinalAnswer))
            .or_else(|| found(after_marker(region, "####"), Method::Hashes))
            .or_else(|| found(answer_is(region), Method::AnswerIs))
            .or_else(|| found(answer_line(region), Method::AnswerLine));
    }
    if let Some(choices) = &ex.choices {
        if let Some(r) = &result {
            if let Some(letter) = as_choice(&r.answer, choices) {
                return Some(Extracted {
                    answer: letter,
                    method: r.method,
                });
            }
        }
        if let Some(letter) = last_choice(region, choices) {
            return Some(Extracted {
                answer: letter,
                method: Method::Choice,
            });
        }
    }
    if result.is_some() {
        return result;
    }
    if ex.whole && is_bare_answer(region) {
        return found(Some(region.trim().to_string()), Method::Whole);
    }
    let env = if ex.latex {
        last_math_env(region)
    } else {
        None
    };
    let num = if ex.last_number {
        last_number(region)
    } else {
        None
    };
    match (env, num) {
        (Some((e_end, e)), Some((n_end, n))) => {
            if n_end > e_end {
                found(Some(n), Method::LastNumber)
            } else {
                found(Some(e), Method::Latex)
            }
        }
        (Some((_, e)), None) => found(Some(e), Method::Latex),
        (None, Some((_, n))) => found(Some(n), Method::LastNumber),
        (None, None) => None,
    }
}

/// A balanced box: where it starts, where its content starts and ends (the closing brace).
#[derive(Debug, Clone, Copy)]
struct BoxSpan {
    start: usize,
    content: usize,
    end: usize,
}

/// Every complete `\boxed{…}` / `\fbox{…}`, in one pass (escaped braces do not count).
fn boxes(text: &str) -> Vec<BoxSpan> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    // (depth of the box's opening brace, start, content start)
    let mut open: Vec<(usize, usize, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if b.get(i + 1) == Some(&b'\\') && b.get(i + 2).is_some_and(u8::is_ascii_alphabetic)
                {
                    // `\\boxed`: a doubly escaped command.
                    i += 1;
                    continue;
                }
                let rest = &text[i..];
                let cmd = ["\\boxed", "\\fbox"]
                    .into_iter()
                    .find(|c| rest.starts_with(c));
                if let Some(cmd) = cmd {
                    let mut j = i + cmd.len();
                    while b.get(j) == Some(&b' ') {
                        j += 1;
                    }
                    if b.get(j) == Some(&b'{') {
                        depth += 1;
                        open.push((depth, i, j + 1));
                        i = j + 1;
                        continue;
                    }
                    i += cmd.len();
                    continue;
                }
                // Skip the escaped character (`\{`, `\}`, `\\`).
                i += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                if let Some(&(d, start, content)) = open.last() {
                    if d == depth {
                        open.pop();
                        spans.push(BoxSpan {
                            start,
                            content,
                            end: i,
                        });
                    }
                }
                depth = depth.saturating_sub(1);
                // A closing brace below an open box's level means that box was never closed.
                while open.last().is_some_and(|&(d, _, _)| d > depth + 1) {
                    open.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    spans
}

/// The content of the last complete, balanced `\boxed{…}` or `\fbox{…}`.
pub fn last_boxed(text: &str) -> Option<String> {
    let spans = boxes(text);
    let last = spans.iter().max_by_key(|s| s.end)?;
    Some(text[last.content..last.end].to_string())
}

/// The Minerva-style ending `final answer is $x$. I hope`: (position, answer).
fn minerva(text: &str) -> Option<(usize, String)> {
    let pos = rfind_ci(text, "final answer is")?;
    let rest = text[pos + "final answer is".len()..].trim_start_matches([' ', ':']);
    let (_, end, content) = leading_env(rest)?;
    let after = rest[end..].trim_start_matches(['.', ' ']);
    after
        .starts_with("I hope")
        .then(|| (pos, content.to_string()))
}

/// The last box, joined (`, `) with the boxes before it that only spacing, commas or `and`/`or`
/// separate from it: (end of the last box, content).
fn last_boxed_group(text: &str) -> Option<(usize, String)> {
    let mut spans = boxes(text);
    // Outermost boxes only, in order of their end.
    spans.sort_by_key(|s| s.end);
    let mut outer: Vec<BoxSpan> = Vec::new();
    for s in spans {
        while outer.last().is_some_and(|o| o.start > s.start) {
            outer.pop();
        }
        outer.push(s);
    }
    let last = *outer.last()?;
    let mut group = vec![last];
    let mut cur = last;
    for prev in outer.iter().rev().skip(1) {
        if prev.end >= cur.start || !is_filler(&text[prev.end + 1..cur.start]) {
            break;
        }
        group.push(*prev);
        cur = *prev;
    }
    group.reverse();
    let parts: Vec<&str> = group.iter().map(|s| &text[s.content..s.end]).collect();
    Some((last.end, parts.join(", ")))
}

/// Text between two boxes that does not separate them into different statements: at most 40
/// bytes of spacing, punctuation, math delimiters and the words `and` / `or`.
fn is_filler(between: &str) -> bool {
    if between.len() > 40 {
        return false;
    }
    let mut s = between.to_string();
    for w in [
        "\\text", "\\quad", "\\qquad", "\\mbox", "\\;", "\\,", "\\!", "\\ ", "\\(", "\\)", "\\[",
        "\\]", "and", "or",
    ] {
        s = s.replace(w, "");
    }
    !s.chars().any(|c| c.is_alphanumeric())
}

/// Text from `rest` that states an answer: a box, a math environment, or the rest of the line
/// up to the end of its sentence. A sentence that starts with prose (`The largest $n$ is 34.`)
/// gives what follows its first `is`, or else its first math or number.
fn answer_span(rest: &str) -> Option<String> {
    answer_span_at(rest, 0)
}

fn answer_span_at(rest: &str, depth: usize) -> Option<String> {
    let mut r = rest.trim_start();
    for _ in 0..4 {
        let before = r;
        r = r.trim_start_matches([':', '*', ' ', '\t']);
        if let Some(x) = r.strip_prefix("is ").or_else(|| r.strip_prefix("is:")) {
            r = x;
        }
        if r == before {
            break;
        }
    }
    if r.starts_with("\\boxed") || r.starts_with("\\fbox") {
        if let Some(b) = boxes(r).into_iter().find(|s| s.start == 0) {
            return Some(r[b.content..b.end].to_string());
        }
    }
    if let Some((_, _, content)) = leading_env(r) {
        return Some(content.to_string());
    }
    let line = r.lines().next().unwrap_or("");
    let sentence = cut_sentence(line);
    if starts_with_prose(sentence) {
        if let Some(pos) = find_is(sentence).filter(|_| depth < 3) {
            return answer_span_at(&sentence[pos..], depth + 1);
        }
        if let Some((_, e)) = first_math(sentence) {
            return Some(e);
        }
    }
    Some(sentence.to_string())
}

/// A math environment at the very start of `s`: (start, end, content).
fn leading_env(s: &str) -> Option<(usize, usize, &str)> {
    for (open, close) in [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")] {
        if let Some(rest) = s.strip_prefix(open) {
            let mut from = 0;
            while let Some(rel) = rest[from..].find(close) {
                let at = from + rel;
                if open == "$" && at > 0 && rest.as_bytes()[at - 1] == b'\\' {
                    from = at + 1;
                    continue;
                }
                let content = &rest[..at];
                if open == "$" && content.contains('\n') {
                    return None;
                }
                return Some((0, open.len() + at + close.len(), content));
            }
            return None;
        }
    }
    None
}

/// The line up to the end of its first sentence (a full stop followed by a space), and before
/// `I hope` or a chat-template token.
fn cut_sentence(line: &str) -> &str {
    let mut end = line.len();
    for pat in [". ", ".\t", " I hope", "<|"] {
        if let Some(p) = line.find(pat) {
            end = end.min(p);
        }
    }
    line[..end].trim()
}

/// Whether a sentence opens with a word (two letters or more) rather than with math.
fn starts_with_prose(s: &str) -> bool {
    let word: String = s.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    word.len() >= 2 && s[word.len()..].starts_with(' ')
}

/// The position after the first ` is ` within the first 100 bytes.
fn find_is(s: &str) -> Option<usize> {
    let head = &s[..floor_boundary(s, 100)];
    head.find(" is ").map(|p| p + 4)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The first math environment or number in `s`, with its end.
fn first_math(s: &str) -> Option<(usize, String)> {
    let env = math_envs(s, true).into_iter().next();
    let num = numbers_from_left(s);
    match (env, num) {
        (Some((es, ee, e)), Some((ns, _, n))) => Some(if ns < es { (ns, n) } else { (ee, e) }),
        (Some((_, ee, e)), None) => Some((ee, e)),
        (None, Some((ns, _, n))) => Some((ns, n)),
        (None, None) => None,
    }
}

fn numbers_from_left(s: &str) -> Option<(usize, usize, String)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.' || b[j] == b',') {
                j += 1;
            }
            let t = s[i..j].trim_end_matches(['.', ',']);
            if prefix_ok(b, i) {
                return Some((i, i + t.len(), canonical_number(t)));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

/// The rest of the line after the last occurrence of `marker` (case-insensitive).
fn after_marker(text: &str, marker: &str) -> Option<String> {
    let pos = rfind_ci(text, marker)?;
    answer_span(&text[pos + marker.len()..])
}

/// `Final Answer: …`, `The final answer is …` (the last one).
fn final_answer(text: &str) -> Option<String> {
    let pos = rfind_ci(text, "final answer")?;
    let mut rest = &text[pos + "final answer".len()..];
    rest = rest.trim_start_matches(['*', ':', ' ']);
    // `Final Answer: The final answer is $x$.`: the inner phrase was the last match already.
    answer_span(rest)
}

/// `The answer is …` or `answer: …`, whichever comes last.
fn answer_is(text: &str) -> Option<String> {
    let a = rfind_ci(text, "answer is").map(|p| (p, p + "answer is".len()));
    let b = rfind_ci(text, "answer:").map(|p| (p, p + "answer:".len()));
    let (_, after) = match (a, b) {
        (Some(x), Some(y)) => {
            if x.0 > y.0 {
                x
            } else {
                y
            }
        }
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => return None,
    };
    answer_span(&text[after..])
}

/// The last line that starts with `A:`.
fn answer_line(text: &str) -> Option<String> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("A:"))?;
    answer_span(&line.trim_start()[2..])
}

/// Case-insensitive (ASCII) `rfind`.
fn rfind_ci(text: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    let h = text.as_bytes();
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    let first = n[0].to_ascii_lowercase();
    (0..=h.len() - n.len()).rev().find(|&i| {
        h[i].to_ascii_lowercase() == first
            && h[i..i + n.len()].eq_ignore_ascii_case(n)
            && text.is_char_boundary(i)
    })
}

/// A choice letter from an answer such as `C`, `(C)`, `\text{(C)}`, `C) 42`, `**C**`.
fn as_choice(answer: &str, choices: &str) -> Option<String> {
    let mut a = answer.trim();
    for w in ["\\text{", "\\textbf{", "\\mathrm{"] {
        if let Some(x) = a.strip_prefix(w) {
            a = x.strip_suffix('}').unwrap_or(x);
        }
    }
    let a = a.trim_matches(|c: char| c == '*' || c == ' ' || c == '$');
    let a = a.strip_prefix('(').unwrap_or(a);
    let mut chars = a.chars();
    let first = chars.next()?.to_ascii_uppercase();
    let rest: String = chars.collect();
    let rest = rest.trim_start();
    let ok_rest = rest.is_empty()
        || rest.starts_with(')')
        || rest.starts_with('.')
        || rest.starts_with(':')
        || rest.starts_with(' ');
    (choices.contains(first) && ok_rest).then(|| first.to_string())
}

/// The last `(C)` or `**C**` in the text.
fn last_choice(text: &str, choices: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = b.len();
    while i >= 3 {
        i -= 1;
        if b[i] == b')' && b[i - 2] == b'(' {
            let c = (b[i - 1] as char).to_ascii_uppercase();
            if choices.contains(c) && b[i - 1].is_ascii_alphabetic() {
                return Some(c.to_string());
            }
        }
    }
    None
}

/// Whether the whole text reads as an answer: one short line without math delimiters and
/// without prose (words of four letters or more other than units and function names).
fn is_bare_answer(text: &str) -> bool {
    let t = text.trim();
    if t.is_empty() || t.len() > 1000 || t.contains('\n') || has_unescaped_dollar(t) {
        return false;
    }
    if ["\\(", "\\[", "\\boxed", "\\fbox"]
        .iter()
        .any(|d| t.contains(d))
    {
        return false;
    }
    if t.chars()
        .any(|c| !c.is_ascii() && !"π√≤≥±∞·×−≠≈∈∪".contains(c))
    {
        return false;
    }
    let b = t.as_bytes();
    let mut i = 0;
    let mut mathy = t.len() <= 3;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            mathy = true;
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_alphabetic() {
                j += 1;
            }
            let name = &t[start..j];
            i = j.max(i + 2);
            if (name == "begin" || name == "end") && b.get(i) == Some(&b'{') {
                // Skip the environment name.
                while i < b.len() && b[i] != b'}' {
                    i += 1;
                }
                i += 1;
                continue;
            }
            if name.starts_with("text") || name == "mbox" || name == "mathrm" {
                // Skip the text group.
                if b.get(i) == Some(&b'{') {
                    let mut depth = 0usize;
                    while i < b.len() {
                        match b[i] {
                            b'{' => depth += 1,
                            b'}' => {
                                depth -= 1;
                                if depth == 0 {
                                    i += 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                }
            }
            continue;
        }
        if c.is_ascii_digit() || b"+-*/^=()<>_|".contains(&c) {
            mathy = true;
        }
        if c.is_ascii_alphabetic() {
            let start = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word = t[start..i].to_ascii_lowercase();
            let allowed = [
                "sqrt", "frac", "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "pi",
                "percent", "pct", "and", "or", "infty", "inf", "oo", "cm", "mm", "km", "kg",
            ];
            if word.len() >= 2 && !allowed.contains(&word.as_str()) {
                return false;
            }
            continue;
        }
        i += 1;
    }
    mathy
}

fn has_unescaped_dollar(t: &str) -> bool {
    let b = t.as_bytes();
    (0..b.len()).any(|i| b[i] == b'$' && (i == 0 || b[i - 1] != b'\\'))
}

/// Every math environment in `text`: (start, end, content), in order, in one pass. With
/// `inline_only`, only `$…$` and `\(…\)`.
fn math_envs(text: &str, inline_only: bool) -> Vec<(usize, usize, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut no_close_bracket = false;
    let mut no_close_paren = false;
    while i < b.len() {
        let c = b[i];
        let escaped = i > 0 && b[i - 1] == b'\\';
        if c == b'$' && !escaped {
            if b.get(i + 1) == Some(&b'$') {
                if let Some(rel) = text[i + 2..].find("$$") {
                    let end = i + 2 + rel;
                    if !inline_only {
                        out.push((i, end + 2, text[i + 2..end].to_string()));
                    }
                    i = end + 2;
                    continue;
                }
                i += 2;
                continue;
            }
            let after_digit = i > 0 && b[i - 1].is_ascii_digit();
            if !after_digit {
                // Inline: up to the next unescaped `$` on the same line.
                let mut j = i + 1;
                let mut close = None;
                while j < b.len() {
                    match b[j] {
                        b'\n' => break,
                        b'$' if b[j - 1] != b'\\' => {
                            close = Some(j);
                            break;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if let Some(j) = close {
                    out.push((i, j + 1, text[i + 1..j].to_string()));
                    i = j + 1;
                    continue;
                }
                // No closing dollar on this line: nothing more opens on it.
                i = j;
                continue;
            }
            i += 1;
            continue;
        }
        if c == b'\\' && !escaped {
            match b.get(i + 1) {
                Some(b'[') if !no_close_bracket => {
                    match text[i + 2..].find("\\]") {
                        Some(rel) => {
                            let end = i + 2 + rel;
                            if !inline_only {
                                out.push((i, end + 2, text[i + 2..end].to_string()));
                            }
                            i = end + 2;
                        }
                        None => {
                            no_close_bracket = true;
                            i += 2;
                        }
                    }
                    continue;
                }
                Some(b'(') if !no_close_paren => {
                    match text[i + 2..].find("\\)") {
                        Some(rel) => {
                            let end = i + 2 + rel;
                            let content = &text[i + 2..end];
                            if content.contains('\n') {
                                // Not closed on this line: skip the opener only.
                                i += 2;
                            } else {
                                out.push((i, end + 2, content.to_string()));
                                i = end + 2;
                            }
                        }
                        None => {
                            no_close_paren = true;
                            i += 2;
                        }
                    }
                    continue;
                }
                _ => {
                    i += 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// The last math environment: (end, content).
fn last_math_env(text: &str) -> Option<(usize, String)> {
    math_envs(text, false)
        .into_iter()
        .rfind(|(_, _, c)| !c.trim().is_empty())
        .map(|(_, end, c)| (end, c))
}

/// Whether a number may start at `start`: at the beginning, or after a space, `=`, a bracket,
/// `$`, `:` or `*` (not glued to a word: `AZYUK2A` has no number).
fn prefix_ok(b: &[u8], start: usize) -> bool {
    if start == 0 {
        return true;
    }
    let p = b[start - 1];
    p.is_ascii_whitespace()
        || matches!(
            p,
            b'=' | b'(' | b'[' | b'{' | b'$' | b':' | b'*' | b'~' | b'-' | b'\'' | b'"'
        )
        || p >= 0x80
}

/// The last number: digits with thousands separators (`1,234`, `1 234`), a decimal part (point
/// or comma), an optional fraction `a/b` and sign. Returns (end, canonical text).
fn last_number(text: &str) -> Option<(usize, String)> {
    let b = text.as_bytes();
    let mut search_end = b.len();
    loop {
        let mut i = search_end;
        while i > 0 && !b[i - 1].is_ascii_digit() {
            i -= 1;
        }
        if i == 0 {
            return None;
        }
        let end = i;
        let mut start = end;
        loop {
            while start > 0 && b[start - 1].is_ascii_digit() {
                start -= 1;
            }
            if start >= 2
                && matches!(b[start - 1], b'.' | b',' | b'/')
                && b[start - 2].is_ascii_digit()
            {
                start -= 1;
                continue;
            }
            // `.4`
            if start >= 1 && b[start - 1] == b'.' && (start < 2 || !b[start - 2].is_ascii_digit()) {
                start -= 1;
                break;
            }
            let group = end_of_digits(b, start) - start;
            // `32,\!348` and `14{,}916`: LaTeX thousands separators.
            let before = &text[..start];
            let latex_sep = [",\\!", "{,}"]
                .into_iter()
                .find(|sep| before.ends_with(sep));
            if let Some(sep) = latex_sep {
                let at = start - sep.len();
                if group == 3 && at >= 1 && b[at - 1].is_ascii_digit() {
                    start = at;
                    continue;
                }
            }
            // `1 000`: a space before a group of exactly three digits.
            if start >= 2 && b[start - 1] == b' ' && b[start - 2].is_ascii_digit() && group == 3 {
                start -= 1;
                continue;
            }
            break;
        }
        if start > 0 && b[start - 1] == b'-' && (start < 2 || !b[start - 2].is_ascii_alphanumeric())
        {
            start -= 1;
        }
        let sign_start = start;
        let check = if b.get(sign_start) == Some(&b'-') {
            sign_start
        } else {
            start
        };
        if prefix_ok(b, check) {
            let raw = &text[start..end];
            let (neg, body) = match raw.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, raw),
            };
            let body = match body.split_once('/') {
                Some((a, d)) => format!("{}/{}", canonical_number(a), canonical_number(d)),
                None => canonical_number(body),
            };
            return Some((end, if neg { format!("-{body}") } else { body }));
        }
        search_end = start;
    }
}

fn end_of_digits(b: &[u8], start: usize) -> usize {
    let mut j = start;
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    j
}

/// `1,234.5` → `1234.5`, `1 000` → `1000`, `2,74` → `2.74` (a comma that does not separate a
/// group of three is a decimal comma).
fn canonical_number(s: &str) -> String {
    let replaced = s.replace(",\\!", ",").replace("{,}", ",");
    let s = replaced.as_str();
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let groups: Vec<&str> = int.split([',', ' ']).collect();
    let thousands = groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && !groups[0].starts_with('0')
        && groups[1..].iter().all(|g| g.len() == 3);
    let int_clean = if thousands {
        groups.concat()
    } else if groups.len() == 2 && frac.is_none() && !int.contains(' ') {
        return format!("{}.{}", groups[0], groups[1]);
    } else {
        groups.concat()
    };
    match frac {
        Some(f) => format!("{int_clean}.{}", f.replace([',', ' '], "")),
        None => int_clean,
    }
}

/// Trims what surrounds an answer: whitespace, `$`, `\(…\)`, markdown `**`, a trailing full
/// stop or comma.
fn clean(answer: &str) -> String {
    let mut a = answer.trim();
    loop {
        let before = a;
        a = a.trim();
        a = a.strip_suffix('.').unwrap_or(a);
        a = a.strip_suffix(',').unwrap_or(a);
        // Markdown emphasis: `**42**`.
        a = a.trim_matches('*');
        if a.len() >= 2 && a.starts_with('$') && a.ends_with('$') {
            a = &a[1..a.len() - 1];
        }
        for (o, c) in [("\\(", "\\)"), ("\\[", "\\]")] {
            if let Some(x) = a.strip_prefix(o).and_then(|x| x.strip_suffix(c)) {
                a = x;
            }
        }
        if a == before {
            break;
        }
    }
    a.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<(&str, Method)>) {
        let got = extract_answer(text, &ExtractOptions::default());
        let got = got.as_ref().map(|e| (e.answer.as_str(), e.method));
        assert_eq!(got, expected, "text: {text:?}");
    }

    fn check_with(ex: &Extractor, text: &str, expected: Option<(&str, Method)>) {
        let got = extract_answer(text, ex);
        let got = got.as_ref().map(|e| (e.answer.as_str(), e.method));
        assert_eq!(got, expected, "text: {text:?}");
    }

    #[test]
    fn extraction_cases() {
        check("so \\boxed{42}.", Some(("42", Method::Boxed)));
        check(
            "\\boxed{1} then \\boxed{\\frac{1}{2}}",
            Some(("\\frac{1}{2}", Method::Boxed)),
        );
        check("\\fbox{7} and later \\boxed{8", Some(("7", Method::Boxed)));
        check("Step 1: 3 + 4 = 7.\n#### 7", Some(("7", Method::Hashes)));
        check("The answer is $12$.", Some(("12", Method::AnswerIs)));
        check("the answer is 5\nmore", Some(("5", Method::AnswerIs)));
        check("Final Answer: \\boxed{x+1}", Some(("x+1", Method::Boxed)));
        check(
            "Final Answer: 17 apples",
            Some(("17 apples", Method::FinalAnswer)),
        );
        check(
            "<Answer>: 9\n<end of response>",
            Some(("9", Method::AnswerTag)),
        );
        check(
            "we get 1,234 and then -3.5",
            Some(("-3.5", Method::LastNumber)),
        );
        check("ratio 3/4", Some(("3/4", Method::LastNumber)));
        check("no numbers here", None);
        check("", None);
        check("\\boxed{}", None);
    }

    #[test]
    fn markers_in_prose() {
        check(
            "Final Answer: The largest $n$ is 34.",
            Some(("34", Method::FinalAnswer)),
        );
        check(
            "Final Answer: The final answer is $(0, 1)$. I hope it is correct.",
            Some(("(0, 1)", Method::FinalAnswer)),
        );
        check(
            "Final Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.",
            Some(("3", Method::FinalAnswer)),
        );
        check("Q: 2+2?\nA: 4", Some(("4", Method::AnswerLine)));
        check("Answer: 12 cm", Some(("12 cm", Method::AnswerIs)));
        check(
            "</think>\n\nThe answer is **42**.",
            Some(("42", Method::AnswerIs)),
        );
        check("**Answer:** 7", Some(("7", Method::AnswerIs)));
    }

    #[test]
    fn adjacent_boxes_form_a_list() {
        check(
            "\\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}. \\]",
            Some(("-2, 1", Method::Boxed)),
        );
        check("$\\boxed{1}\\boxed{2}$", Some(("1, 2", Method::Boxed)));
        // Boxes in different sentences are not joined.
        check(
            "first \\boxed{3}. But then we check again and find \\boxed{4}",
            Some(("4", Method::Boxed)),
        );
        check(
            "\\boxed{\\boxed{1}+1}",
            Some(("\\boxed{1}+1", Method::Boxed)),
        );
        check("\\boxed{\\{1,2\\}}", Some(("\\{1,2\\}", Method::Boxed)));
    }

    #[test]
    fn latex_environments_and_numbers() {
        let latex_only = Extractor {
            last_number: false,
            ..Extractor::default()
        };
        check_with(&latex_only, "Answer \\[ 9 \\]", Some(("9", Method::Latex)));
        check_with(&latex_only, "Answer $ \n 9 \n $", None);
        check_with(
            &latex_only,
            "Answer $$ \n 9 \n $$",
            Some(("9", Method::Latex)),
        );
        check(
            "is $(7, 6)$. <|im_start|>user",
            Some(("(7, 6)", Method::Latex)),
        );
        check(
            "there are 12 sequences. I hope it is correct.",
            Some(("12", Method::LastNumber)),
        );
        check("1,000.99€", Some(("1000.99", Method::LastNumber)));
        check("Soucis : 2,74 $ a..", Some(("2.74", Method::LastNumber)));
        check("AZYUK2A", None);
        check(
            "costs \\$32,\\!348 in all",
            Some(("32348", Method::LastNumber)),
        );
        check("\\$32,\\!348", Some(("\\$32,\\!348", Method::Whole)));
        check("-\\frac{10}{9}", Some(("-\\frac{10}{9}", Method::Whole)));
    }

    #[test]
    fn presets() {
        let mc = Extractor::preset("multiple-choice").expect("preset");
        check_with(
            &mc,
            "so the answer is (c) 42",
            Some(("C", Method::AnswerIs)),
        );
        check_with(
            &mc,
            "I pick \\boxed{\\text{(B)}}",
            Some(("B", Method::Boxed)),
        );
        check_with(
            &mc,
            "Options (A) and (D) fail; (B) works",
            Some(("B", Method::Choice)),
        );
        let gsm = Extractor::preset("gsm8k").expect("preset");
        check_with(
            &gsm,
            "She pays $5 then $7.\n#### 12",
            Some(("12", Method::Hashes)),
        );
        assert!(Extractor::preset("nope").is_none());
        for name in ["math500", "aime24", "amc23", "synthetic", "default"] {
            assert!(Extractor::preset(name).is_some(), "{name}");
        }
    }

    #[test]
    fn thinking_is_skipped_unless_nothing_follows() {
        check(
            "<think>\\boxed{1}</think>The answer is 2",
            Some(("2", Method::AnswerIs)),
        );
        check("<think>so \\boxed{3}</think>\n", Some(("3", Method::Boxed)));
    }

    #[test]
    fn fallback_can_be_turned_off() {
        let off = ExtractOptions {
            last_number_fallback: false,
        };
        assert_eq!(extract_answer("it is 4", &off), None);
    }

    #[test]
    fn odd_text_never_panics() {
        for text in [
            "\\boxed{{{{",
            "}}}\\boxed{",
            "é\\boxed{é}",
            "-",
            "#### ",
            "1/",
            "–1",
            "$",
            "\\(",
            "\\",
            "Final Answer:",
            "final answer é is é",
            "(",
            "A:",
            "Final answer: The x is is is is is is is is is is is is is is is is",
        ] {
            let _ = extract_answer(text, &ExtractOptions::default());
        }
        check("é\\boxed{é}", Some(("é", Method::Boxed)));
    }

    #[test]
    fn long_adversarial_text_is_linear() {
        let many_boxes = "\\boxed{".repeat(150_000);
        let many_dollars = "$ \\( \\[ ".repeat(100_000);
        let many_is = format!("Final Answer: The value {}", "is ".repeat(300_000));
        let _ = extract_answer(many_is.as_str(), &ExtractOptions::default());
        let start = std::time::Instant::now();
        let _ = extract_answer(many_boxes.as_str(), &ExtractOptions::default());
        let _ = extract_answer(many_dollars.as_str(), &ExtractOptions::default());
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
