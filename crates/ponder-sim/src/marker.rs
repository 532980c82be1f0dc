//! The marker rule: which `UPPER CASE WORDS:` line a prompt asks the model to end its reply with.
//!
//! Judges, critics and selectors ask for replies such as `FINAL SCORE: 7` or `SELECTED ITEM: 2`.
//! The rule, applied to the whole prompt text (system and user messages):
//!
//! 1. A *marker* is one or more words of upper-case ASCII letters (digits and `_` allowed after
//!    the first letter), each at least two characters long, separated by single spaces, at least
//!    four letters in all, directly followed by `:`. It must not continue a longer word run
//!    (`FINAL SCORE:` is one marker, not `SCORE:`).
//! 2. It counts only if the prompt asks for it: the marker sits in quotes or backticks; or it
//!    starts a line and is followed on that line by a placeholder (text starting with `<`, `[`,
//!    `{`, `(`, `_` or `...`) or by one short word (`SCORE: 7`), so headers such as
//!    `QUESTION:` or `NOTE: the shop is closed` do not count; or its line contains an
//!    instruction word (`output`, `end`, `reply`, `respond`, `write`, `format`, `finish`,
//!    `conclude`, `give`, `provide`, `state`, `print`, `include`, `return`, `answer with`,
//!    `line`).
//! 3. The last counting marker of the prompt wins.
//!
//! Its [`MarkerKind`] decides the value that follows it: a score 1–10 for markers containing
//! `SCORE` or `RATING`; an index `1..=k` for markers containing `ITEM`, `INDEX`, `CHOICE`,
//! `SELECT`, `OPTION`, `CANDIDATE` or `BEST` (k = the number of numbered items in the prompt, see
//! [`count_numbered_items`], else 1); the task's answer for markers containing `ANSWER`;
//! otherwise a short word.

/// What a marker's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    /// An integer 1–10.
    Score,
    /// An index `1..=k` into the prompt's numbered items.
    Index,
    /// The answer to the question.
    Answer,
    /// A short word.
    Word,
}

/// A marker the prompt asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The marker text without the colon, e.g. `FINAL SCORE`.
    pub text: String,
    pub kind: MarkerKind,
}

const INSTRUCTION_WORDS: [&str; 16] = [
    "output",
    "end",
    "reply",
    "respond",
    "write",
    "format",
    "finish",
    "conclude",
    "give",
    "provide",
    "state",
    "print",
    "include",
    "return",
    "answer with",
    "line",
];

/// The marker `prompt` asks for, if any (see the module docs for the rule).
pub fn find_marker(prompt: &str) -> Option<Marker> {
    let bytes = prompt.as_bytes();
    let mut found: Option<Marker> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b':' {
            i += 1;
            continue;
        }
        if let Some(start) = marker_start(bytes, i) {
            if is_requested(prompt, start, i) {
                let text = &prompt[start..i];
                found = Some(Marker {
                    text: text.to_string(),
                    kind: kind_of(text),
                });
            }
        }
        i += 1;
    }
    found
}

/// Where the marker that ends at the colon at `colon` starts, if the text before it is one.
fn marker_start(bytes: &[u8], colon: usize) -> Option<usize> {
    let mut start = colon;
    let mut letters = 0;
    let mut words = 0;
    loop {
        // One word backwards from `start`.
        let mut j = start;
        while j > 0
            && (bytes[j - 1].is_ascii_uppercase()
                || bytes[j - 1].is_ascii_digit()
                || bytes[j - 1] == b'_')
        {
            j -= 1;
        }
        let word = &bytes[j..start];
        if word.len() < 2 || !word[0].is_ascii_uppercase() {
            break;
        }
        letters += word.iter().filter(|b| b.is_ascii_uppercase()).count();
        words += 1;
        start = j;
        // Another word before, separated by one space?
        if start >= 2 && bytes[start - 1] == b' ' && bytes[start - 2].is_ascii_uppercase() {
            start -= 1;
            continue;
        }
        break;
    }
    if words == 0 {
        return None;
    }
    // A separator space was consumed without a word after it: give it back.
    if bytes[start] == b' ' {
        start += 1;
    }
    // Not the tail of a mixed-case word (`mySCORE:`).
    if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
        return None;
    }
    (letters >= 4).then_some(start)
}

/// Whether the marker at `start..colon` is asked for (rule 2).
fn is_requested(prompt: &str, start: usize, colon: usize) -> bool {
    let bytes = prompt.as_bytes();
    if start > 0 && matches!(bytes[start - 1], b'"' | b'\'' | b'`') {
        return true;
    }
    let line_start = prompt[..start].rfind('\n').map_or(0, |p| p + 1);
    let line_end = prompt[colon..]
        .find('\n')
        .map_or(prompt.len(), |p| colon + p);
    if prompt[line_start..start].trim().is_empty() {
        let rest = prompt[colon + 1..line_end].trim();
        let placeholder = rest.starts_with(['<', '[', '{', '(', '_']) || rest.starts_with("...");
        let one_short_word = !rest.is_empty() && rest.len() <= 12 && !rest.contains(' ');
        if placeholder || one_short_word {
            return true;
        }
    }
    let line = prompt[line_start..line_end].to_ascii_lowercase();
    INSTRUCTION_WORDS.iter().any(|w| contains_word(&line, w))
}

/// Whether `word` occurs in `text` with no letter directly before or after it.
fn contains_word(text: &str, word: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices(word).any(|(pos, _)| {
        let before = pos.checked_sub(1).map(|p| bytes[p]);
        let after = bytes.get(pos + word.len()).copied();
        !before.is_some_and(|b| b.is_ascii_alphabetic())
            && !after.is_some_and(|b| b.is_ascii_alphabetic())
    })
}

fn kind_of(text: &str) -> MarkerKind {
    let has = |w: &str| text.contains(w);
    if has("SCORE") || has("RATING") {
        MarkerKind::Score
    } else if [
        "ITEM",
        "INDEX",
        "CHOICE",
        "SELECT",
        "OPTION",
        "CANDIDATE",
        "BEST",
    ]
    .iter()
    .any(|w| has(w))
    {
        MarkerKind::Index
    } else if has("ANSWER") {
        MarkerKind::Answer
    } else {
        MarkerKind::Word
    }
}

/// The number of numbered items in `prompt`: the largest `k` such that items `1..=k` all appear,
/// an item being a line that starts (after spaces, `#` or `*`) with `N.`, `N)`, `N:`, `[N]`,
/// `(N)`, or a word such as `Item`, `Candidate`, `Option`, `Solution`, `Response`, `Answer`,
/// `Choice` followed by ` N`. 0 when there is none.
pub fn count_numbered_items(prompt: &str) -> usize {
    let mut seen = [false; 257];
    for line in prompt.lines() {
        if let Some(n) = item_number(line) {
            if (1..seen.len()).contains(&n) {
                seen[n] = true;
            }
        }
    }
    seen.iter().skip(1).take_while(|&&s| s).count()
}

/// The number of the item that `line` opens, if it opens one (see [`count_numbered_items`]).
pub(crate) fn item_number(line: &str) -> Option<usize> {
    let line = line.trim_start_matches([' ', '\t', '#', '*', '-', '>']);
    let leading_number = |s: &str| -> Option<(usize, usize)> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 3 {
            return None;
        }
        Some((s[..digits].parse().ok()?, digits))
    };
    if let Some(rest) = line.strip_prefix('[').or_else(|| line.strip_prefix('(')) {
        let (n, len) = leading_number(rest)?;
        return matches!(rest.as_bytes().get(len), Some(b']' | b')')).then_some(n);
    }
    if let Some((n, len)) = leading_number(line) {
        return matches!(line.as_bytes().get(len), Some(b'.' | b')' | b':')).then_some(n);
    }
    const WORDS: [&str; 8] = [
        "item",
        "candidate",
        "option",
        "solution",
        "response",
        "answer",
        "choice",
        "trace",
    ];
    let lower = line.get(..12.min(line.len()))?.to_ascii_lowercase();
    let word = WORDS.iter().find(|w| lower.starts_with(*w))?;
    let rest = line[word.len()..].strip_prefix(' ')?;
    let rest = rest.strip_prefix('#').unwrap_or(rest);
    leading_number(rest).map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(prompt: &str, expected: Option<(&str, MarkerKind)>) {
        let got = find_marker(prompt);
        let got = got.as_ref().map(|m| (m.text.as_str(), m.kind));
        assert_eq!(got, expected, "prompt {prompt:?}");
    }

    #[test]
    fn finds_requested_markers() {
        check(
            "Rate the solution. End your reply with FINAL SCORE: <1-10>.",
            Some(("FINAL SCORE", MarkerKind::Score)),
        );
        check(
            "Pick the best one.\nSELECTED ITEM: <index>",
            Some(("SELECTED ITEM", MarkerKind::Index)),
        );
        check(
            "Reply in the form \"VERDICT: yes\" or \"VERDICT: no\".",
            Some(("VERDICT", MarkerKind::Word)),
        );
        check(
            "Write `FINAL ANSWER:` then the number.",
            Some(("FINAL ANSWER", MarkerKind::Answer)),
        );
        check(
            "Output the RATING: as an integer",
            Some(("RATING", MarkerKind::Score)),
        );
        check(
            "End with BEST CHOICE: n. Later, write FINAL SCORE: s.",
            Some(("FINAL SCORE", MarkerKind::Score)),
        );
    }

    #[test]
    fn ignores_other_colons() {
        check("Step 1: add 2 + 3 = 5.", None);
        check("Q: what is 2+2? A: 4", None);
        check("NOTE: the shop is closed on Sundays.", None);
        check("QUESTION:\nMia has 3 apples.", None);
        check(
            "Be brief.\nVERDICT: <yes or no>",
            Some(("VERDICT", MarkerKind::Word)),
        );
        check("**NOTE:** read twice", None);
        check("The meeting (see NOTE: below) is late.", None);
        check("mySCORE: 5 was reported", None);
        check("It is 10:30 now.", None);
        check("OK: fine, be quick", None);
        check("", None);
    }

    fn check_items(prompt: &str, expected: usize) {
        assert_eq!(count_numbered_items(prompt), expected, "prompt {prompt:?}");
    }

    #[test]
    fn counts_numbered_items() {
        check_items("Which is best?\n1. foo\n2. bar\n3. baz", 3);
        check_items("[1] a\n[2] b", 2);
        check_items("Candidate 1:\nx\nCandidate 2:\ny\nCandidate 4:\nz", 2);
        check_items("### Solution 1\nx\n### Solution 2\ny", 2);
        check_items("(1) one (2) two", 1);
        check_items("no items here", 0);
        check_items("2. starts at two", 0);
    }
}
