//! Answer extraction: find the final answer in model text, and say how it was found.
//!
//! Pure and total: any text gives `Some(answer)` or `None`, never an error or a panic.
//! Reasoning inside `<think>…</think>` is skipped unless nothing follows the closing tag.

use serde::{Deserialize, Serialize};

/// How an answer was found, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The last complete, balanced `\boxed{…}` or `\fbox{…}`.
    Boxed,
    /// `<Answer>: …`
    AnswerTag,
    /// `Final Answer: …`
    FinalAnswer,
    /// GSM8K's `#### n`.
    Hashes,
    /// `The answer is …`
    AnswerIs,
    /// The last number in the text (a fall-back that can be turned off).
    LastNumber,
}

/// An answer and how it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extracted {
    pub answer: String,
    pub method: Method,
}

/// Extraction settings.
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

/// The text after the reasoning block: the part after the last `</think>`, unless that part is
/// blank, in which case the reasoning itself (without the tags) is searched.
fn answer_region(text: &str) -> &str {
    match text.rfind("</think>") {
        Some(pos) => {
            let after = &text[pos + "</think>".len()..];
            if after.trim().is_empty() {
                let before = &text[..pos];
                before.strip_prefix("<think>").unwrap_or(before)
            } else {
                after
            }
        }
        None => text,
    }
}

/// Finds the final answer in `text`.
pub fn extract_answer(text: &str, options: &ExtractOptions) -> Option<Extracted> {
    let region = answer_region(text);
    let found = |answer: Option<String>, method: Method| {
        answer
            .map(|a| clean(&a))
            .filter(|a| !a.is_empty())
            .map(|answer| Extracted { answer, method })
    };
    found(last_boxed(region), Method::Boxed)
        .or_else(|| found(after_marker(region, "<Answer>:"), Method::AnswerTag))
        .or_else(|| found(after_marker(region, "Final Answer:"), Method::FinalAnswer))
        .or_else(|| found(after_marker(region, "####"), Method::Hashes))
        .or_else(|| found(after_marker(region, "The answer is"), Method::AnswerIs))
        .or_else(|| {
            if options.last_number_fallback {
                found(last_number(region), Method::LastNumber)
            } else {
                None
            }
        })
}

/// The content of the last complete, balanced `\boxed{…}` or `\fbox{…}`.
pub fn last_boxed(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut best: Option<(usize, String)> = None;
    for command in ["\\boxed{", "\\fbox{"] {
        let mut from = 0;
        while let Some(rel) = text[from..].find(command) {
            let open = from + rel + command.len();
            from = open;
            let mut depth = 1usize;
            let mut end = None;
            for (i, &b) in bytes.iter().enumerate().skip(open) {
                match b {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            if let Some(end) = end {
                let start = open - command.len();
                if best.as_ref().is_none_or(|(s, _)| start > *s) {
                    best = Some((start, text[open..end].to_string()));
                }
            }
        }
    }
    best.map(|(_, content)| content)
}

/// The rest of the line after the last occurrence of `marker` (case-insensitive), with an outer
/// `\boxed{}` unwrapped.
fn after_marker(text: &str, marker: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let pos = lower.rfind(&marker.to_ascii_lowercase())?;
    let rest = &text[pos + marker.len()..];
    let line = rest.trim_start().lines().next().unwrap_or("").trim();
    let line = line.strip_prefix(':').unwrap_or(line).trim();
    Some(last_boxed(line).unwrap_or_else(|| line.to_string()))
}

/// The last number (optional sign, digits with thousands commas, decimals, a fraction `a/b`).
fn last_number(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = bytes.len();
    // Walk back to the last digit, then back over the number's characters.
    while i > 0 && !bytes[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i == 0 {
        return None;
    }
    let end = i;
    let mut start = end;
    while start > 0 {
        let b = bytes[start - 1];
        let inner = start >= 2 && bytes[start - 2].is_ascii_digit();
        if b.is_ascii_digit() || (matches!(b, b'.' | b',' | b'/') && inner) {
            start -= 1;
        } else {
            break;
        }
    }
    if start > 0 && bytes[start - 1] == b'-' {
        start -= 1;
    }
    Some(text[start..end].to_string())
}

/// Trims what surrounds an answer: whitespace, `$`, a trailing full stop.
fn clean(answer: &str) -> String {
    let mut a = answer.trim();
    loop {
        let before = a;
        a = a.trim();
        a = a.strip_suffix('.').unwrap_or(a);
        if a.len() >= 2 && a.starts_with('$') && a.ends_with('$') {
            a = &a[1..a.len() - 1];
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
        ] {
            let _ = extract_answer(text, &ExtractOptions::default());
        }
        check("é\\boxed{é}", Some(("é", Method::Boxed)));
    }
}
