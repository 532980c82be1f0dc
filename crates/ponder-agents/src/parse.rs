//! Robust reading of LLM replies (spec §4): reasoning-block stripping, value markers (scores,
//! selection indices) and content markers (plans, feedback, edited plans, merged outputs).
//!
//! The rules, shared by every strategy:
//! * markers match case-insensitively, their words separated by spaces or underscores, wrapped
//!   in markdown emphasis, code, a heading, a bullet or quotes;
//! * the separator after a marker (`:`, `-`, `=`, `—`) is optional for value markers and
//!   required for content markers (or the end of the line);
//! * the longest known marker wins: the `PLAN` in `EDITED PLAN` is not a `PLAN` match;
//! * value markers count anywhere in a line; content markers at a line start are preferred;
//! * the last valid match wins.
//!
//! Model output is data: nothing here panics or returns an error for any text; a reply without
//! a valid match gives `None`.

/// The score marker scorers ask for.
pub const FINAL_SCORE: &str = "FINAL SCORE";
/// The index marker of item selectors.
pub const SELECTED_ITEM: &str = "SELECTED ITEM";
/// The index marker of the plan selector.
pub const SELECTED_PLAN: &str = "SELECTED PLAN";
/// The content marker of planners.
pub const PLAN: &str = "PLAN";
/// The content marker of feedback.
pub const FEEDBACK: &str = "FEEDBACK";
/// The content marker of plan editors.
pub const EDITED_PLAN: &str = "EDITED PLAN";
/// The content marker of output mergers.
pub const MERGED_OUTPUT: &str = "MERGED OUTPUT";

/// Every marker the strategies use; the longest-marker rule and content boundaries use it.
pub const KNOWN_MARKERS: [&str; 7] = [
    FINAL_SCORE,
    SELECTED_ITEM,
    SELECTED_PLAN,
    PLAN,
    FEEDBACK,
    EDITED_PLAN,
    MERGED_OUTPUT,
];

const REASONING_TAGS: [&str; 3] = ["think", "thinking", "reasoning"];

/// Normalises line endings to `\n` and removes zero-width characters; case is kept.
pub fn normalise(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}'
            )
        })
        .collect()
}

/// Removes reasoning blocks: every complete `<think>…</think>`, `<thinking>…</thinking>` and
/// `<reasoning>…</reasoning>`; a closing tag with no opening tag before it removes everything up
/// to it (templates that put the opening tag in the prompt). A block opened and never closed is
/// left in place, so a marker inside a truncated reasoning block is still found.
pub fn strip_reasoning(text: &str) -> String {
    let mut out = text.to_string();
    // An orphan closing tag: everything before it is reasoning.
    loop {
        let lower = out.to_ascii_lowercase();
        let mut cut = None;
        for tag in REASONING_TAGS {
            let close = format!("</{tag}>");
            if let Some(pos) = lower.find(&close) {
                let open = format!("<{tag}>");
                if !lower[..pos].contains(&open) {
                    let end = pos + close.len();
                    if cut.is_none_or(|(p, _)| pos < p) {
                        cut = Some((pos, end));
                    }
                }
            }
        }
        match cut {
            Some((_, end)) => out = out[end..].trim_start().to_string(),
            None => break,
        }
    }
    // Complete blocks, innermost-first by repeated scanning.
    loop {
        let lower = out.to_ascii_lowercase();
        let mut removed = false;
        for tag in REASONING_TAGS {
            let open = format!("<{tag}>");
            let close = format!("</{tag}>");
            if let Some(start) = lower.find(&open) {
                if let Some(rel) = lower[start..].find(&close) {
                    let end = start + rel + close.len();
                    let rest = out[end..].trim_start();
                    out = format!("{}{}", &out[..start], rest);
                    removed = true;
                    break;
                }
            }
        }
        if !removed {
            break;
        }
    }
    out
}

/// The reply as extraction sees it: normalised, reasoning stripped, trimmed.
pub fn clean(reply: &str) -> String {
    strip_reasoning(&normalise(reply)).trim().to_string()
}

/// One occurrence of a marker in (lower-cased) text.
#[derive(Debug, Clone, Copy)]
struct Hit {
    /// Byte position of the marker's first letter.
    start: usize,
    /// Byte position after the marker's last word.
    after: usize,
    /// Only emphasis, heading, bullet or quote characters precede it on its line.
    line_start: bool,
}

fn words_of(marker: &str) -> Vec<String> {
    marker
        .split([' ', '_'])
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_gap(b: u8) -> bool {
    matches!(b, b' ' | b'_' | b'*' | b'\t')
}

/// Every occurrence of `marker` in `lower` (ASCII-lower-cased text), on word boundaries and not
/// part of a longer known marker.
fn find_hits(lower: &str, marker: &str) -> Vec<Hit> {
    let words = words_of(marker);
    let Some(first) = words.first() else {
        return Vec::new();
    };
    let bytes = lower.as_bytes();
    let mut hits = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(first.as_str()) {
        let start = from + pos;
        from = start + first.len();
        if start > 0 && is_word_byte(bytes[start - 1]) {
            continue;
        }
        let mut at = from;
        let mut ok = true;
        for word in &words[1..] {
            let gap = bytes[at..].iter().take_while(|b| is_gap(**b)).count();
            if gap == 0 || !lower[at + gap..].starts_with(word.as_str()) {
                ok = false;
                break;
            }
            at += gap + word.len();
        }
        if !ok || (at < bytes.len() && is_word_byte(bytes[at])) {
            continue;
        }
        if shadowed(lower, start, &words) {
            continue;
        }
        let line_begin = lower[..start].rfind('\n').map_or(0, |p| p + 1);
        let line_start = lower[line_begin..start].bytes().all(|b| {
            matches!(
                b,
                b' ' | b'\t' | b'#' | b'*' | b'_' | b'`' | b'-' | b'>' | b'"' | b'\''
            )
        });
        hits.push(Hit {
            start,
            after: at,
            line_start,
        });
    }
    hits
}

/// Whether the occurrence at `start` is the tail of a longer known marker (`EDITED PLAN` for
/// `PLAN`).
fn shadowed(lower: &str, start: usize, words: &[String]) -> bool {
    KNOWN_MARKERS.iter().any(|known| {
        let k = words_of(known);
        if k.len() <= words.len() || k[k.len() - words.len()..] != *words {
            return false;
        }
        let mut pos = start;
        for w in k[..k.len() - words.len()].iter().rev() {
            let gap = lower[..pos]
                .bytes()
                .rev()
                .take_while(|b| is_gap(*b))
                .count();
            if gap == 0 {
                return false;
            }
            pos -= gap;
            if !lower[..pos].ends_with(w.as_str()) {
                return false;
            }
            pos -= w.len();
            if pos > 0 && is_word_byte(lower.as_bytes()[pos - 1]) {
                return false;
            }
        }
        true
    })
}

/// After a marker: closing emphasis, then an optional separator. Returns the position after
/// them and whether a separator was present.
fn skip_separator(text: &str, mut at: usize) -> (usize, bool) {
    let closers = |s: &str| {
        s.bytes()
            .take_while(|b| matches!(b, b'*' | b'_' | b'`' | b'"' | b'\'' | b' ' | b'\t'))
            .count()
    };
    at += closers(&text[at..]);
    let rest = &text[at..];
    let sep = [":", "-", "=", "—", "–"]
        .iter()
        .find(|s| rest.starts_with(**s))
        .map(|s| s.len());
    match sep {
        Some(len) => {
            at += len;
            at += text[at..]
                .bytes()
                .take_while(|b| matches!(b, b'*' | b'_' | b' ' | b'\t'))
                .count();
            (at, true)
        }
        None => (at, false),
    }
}

/// Reads a score marker's value: the last match whose number lies in `[min, max]` (`8`, `8.5`,
/// `8/10`, `**8**`, `8 out of 10`). Reasoning blocks are stripped first; the matching itself is
/// `ponder_strategies::judge::parse_score`'s.
pub fn parse_score(reply: &str, marker: &str, min: f64, max: f64) -> Option<f64> {
    let text = strip_reasoning(&normalise(reply));
    ponder_strategies::judge::parse_score(&text, marker, min, max)
}

/// Reads a 1-based selection index after `marker` (`SELECTED ITEM: 2`, `**Selected plan:** #3`,
/// `selected item - [Plan 2]`): the last match in `1..=n`.
pub fn parse_index(reply: &str, marker: &str, n: usize) -> Option<usize> {
    let text = strip_reasoning(&normalise(reply));
    let lower = text.to_ascii_lowercase();
    let mut best = None;
    for hit in find_hits(&lower, marker) {
        let (mut at, _) = skip_separator(&lower, hit.after);
        let skip = |s: &str| {
            s.bytes()
                .take_while(|b| {
                    matches!(
                        b,
                        b' ' | b'\t' | b'*' | b'_' | b'`' | b'[' | b'(' | b'#' | b'"' | b'\''
                    )
                })
                .count()
        };
        at += skip(&lower[at..]);
        for word in [
            "item",
            "plan",
            "option",
            "candidate",
            "response",
            "output",
            "number",
        ] {
            if lower[at..].starts_with(word) {
                at += word.len();
                at += skip(&lower[at..]);
                break;
            }
        }
        let digits: String = lower[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if digits.is_empty() || digits.len() > 6 {
            continue;
        }
        let after = lower[at + digits.len()..].chars().next();
        if after.is_some_and(|c| {
            c.is_ascii_alphabetic()
                || c == '.'
                    && lower[at + digits.len() + 1..].starts_with(|d: char| d.is_ascii_digit())
        }) {
            continue;
        }
        if let Ok(k) = digits.parse::<usize>() {
            if (1..=n).contains(&k) {
                best = Some(k);
            }
        }
    }
    best
}

/// What a content marker gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// The text after the marker (or the whole cleaned reply when the marker was missing).
    pub text: String,
    /// Whether the marker was found.
    pub marker_found: bool,
}

/// Reads the content after a content marker (`PLAN:`, `EDITED PLAN:`, …): up to the next known
/// section marker at a line start or the end, trimmed, without surrounding code fences.
///
/// When the marker is missing, `lenient` markers (those the prompts ask for only as a lead-in:
/// `PLAN`, `FEEDBACK`, `EDITED PLAN`) give the whole cleaned reply with `marker_found = false`;
/// otherwise `None`. Empty content is always `None`.
pub fn parse_content(reply: &str, marker: &str, lenient: bool) -> Option<Content> {
    let text = strip_reasoning(&normalise(reply));
    let lower = text.to_ascii_lowercase();
    let candidates: Vec<(Hit, usize)> = find_hits(&lower, marker)
        .into_iter()
        .filter_map(|hit| {
            let (at, sep) = skip_separator(&lower, hit.after);
            let eol = lower[hit.after..]
                .bytes()
                .take_while(|b| matches!(b, b'*' | b'_' | b'`' | b' ' | b'\t'))
                .count();
            let at_eol = matches!(lower.as_bytes().get(hit.after + eol), None | Some(b'\n'));
            (sep || at_eol).then_some((hit, if sep { at } else { hit.after + eol }))
        })
        .collect();
    let chosen = candidates
        .iter()
        .rev()
        .find(|(h, _)| h.line_start)
        .or_else(|| candidates.last())
        .copied();
    let Some((_, begin)) = chosen else {
        if !lenient {
            return None;
        }
        let whole = strip_fences(text.trim());
        return (!whole.is_empty()).then_some(Content {
            text: whole,
            marker_found: false,
        });
    };
    let end = KNOWN_MARKERS
        .iter()
        .filter(|m| !m.eq_ignore_ascii_case(marker))
        .flat_map(|m| find_hits(&lower, m))
        .filter(|h| h.line_start && h.start >= begin)
        .map(|h| {
            // Cut at the start of the marker's line.
            lower[..h.start].rfind('\n').map_or(h.start, |p| p + 1)
        })
        .filter(|&p| p >= begin)
        .min()
        .unwrap_or(text.len());
    let content = strip_fences(text[begin..end].trim());
    (!content.is_empty()).then_some(Content {
        text: content,
        marker_found: true,
    })
}

/// Removes one surrounding code fence (```` ```lang … ``` ````) from `text`.
fn strip_fences(text: &str) -> String {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let body = rest.split_once('\n').map_or("", |(_, b)| b);
        let body = body.trim_end();
        let body = body.strip_suffix("```").unwrap_or(body);
        return body.trim().to_string();
    }
    t.to_string()
}

/// Whether `text` contains at least one numbered point (`1.`, `2)`, `- 3:` at a line start).
pub fn has_numbered_point(text: &str) -> bool {
    text.lines().any(|line| {
        let l = line.trim_start_matches([' ', '\t', '-', '*', '#', '>']);
        let digits = l.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && matches!(l.as_bytes().get(digits), Some(b'.' | b')' | b':'))
    })
}

/// Whether two texts are equal after collapsing whitespace and case.
pub fn same_text(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(reply: &str) -> Option<f64> {
        parse_score(reply, FINAL_SCORE, 1.0, 10.0)
    }

    #[test]
    fn score_variants() {
        let cases: &[(&str, Option<f64>)] = &[
            ("FINAL SCORE: 8", Some(8.0)),
            ("final score: 8.5", Some(8.5)),
            ("Good plan.\n**Final Score:** 7", Some(7.0)),
            ("**FINAL SCORE**: **9**", Some(9.0)),
            ("## Final score - 6/10", Some(6.0)),
            ("- final_score = 4 out of 10", Some(4.0)),
            ("Reasoning first... then at last FINAL SCORE: 3", Some(3.0)),
            ("FINAL SCORE: 2\nOn reflection, FINAL SCORE: 5", Some(5.0)),
            ("FINAL SCORE: 5\nFINAL SCORE: 42", Some(5.0)),
            ("FINAL SCORE: 0", None),
            ("FINAL SCORE: 11", None),
            ("FINAL SCORE: -3", None),
            ("I would say eight.", None),
            ("", None),
            ("<think>FINAL SCORE: 2</think>FINAL SCORE: 9", Some(9.0)),
            ("<think>long reasoning, truncated FINAL SCORE: 6", Some(6.0)),
            ("FINAL SCORE 7", Some(7.0)),
        ];
        for (reply, expected) in cases {
            assert_eq!(score(reply), *expected, "reply {reply:?}");
        }
    }

    #[test]
    fn index_variants() {
        let cases: &[(&str, usize, Option<usize>)] = &[
            ("SELECTED ITEM: 2", 3, Some(2)),
            ("Reasons...\nselected item: 3", 3, Some(3)),
            ("**Selected Item:** **1**", 3, Some(1)),
            ("SELECTED ITEM: #2", 3, Some(2)),
            ("SELECTED ITEM: [Item 3]", 3, Some(3)),
            ("selected_item - candidate 2", 3, Some(2)),
            ("SELECTED ITEM: 1\nActually SELECTED ITEM: 2", 3, Some(2)),
            ("SELECTED ITEM: 2\nSELECTED ITEM: 9", 3, Some(2)),
            ("SELECTED ITEM: 0", 3, None),
            ("SELECTED ITEM: two", 3, None),
            ("no marker", 3, None),
            ("SELECTED ITEM: 2.5", 3, None),
        ];
        for (reply, n, expected) in cases {
            assert_eq!(
                parse_index(reply, SELECTED_ITEM, *n),
                *expected,
                "reply {reply:?}"
            );
        }
        assert_eq!(
            parse_index("SELECTED PLAN: plan 2", SELECTED_PLAN, 2),
            Some(2)
        );
        // `SELECTED PLAN` is not an item marker.
        assert_eq!(parse_index("SELECTED PLAN: 2", SELECTED_ITEM, 2), None);
    }

    fn content(reply: &str, marker: &str, lenient: bool) -> Option<(String, bool)> {
        parse_content(reply, marker, lenient).map(|c| (c.text, c.marker_found))
    }

    #[test]
    fn content_variants() {
        let some = |t: &str, f: bool| Some((t.to_string(), f));
        assert_eq!(
            content("PLAN:\n1. a\n2. b", PLAN, true),
            some("1. a\n2. b", true)
        );
        assert_eq!(
            content("Sure! Here it is.\n**Plan:**\n1. a", PLAN, true),
            some("1. a", true)
        );
        assert_eq!(content("plan: do it", PLAN, true), some("do it", true));
        assert_eq!(content("# PLAN\n1. a", PLAN, true), some("1. a", true));
        // A line merely starting with the word is not a marker.
        assert_eq!(
            content("Plan the trip first", PLAN, true),
            some("Plan the trip first", false)
        );
        assert_eq!(content("Plan the trip first", PLAN, false), None);
        // Longest marker wins: EDITED PLAN is not PLAN.
        assert_eq!(content("EDITED PLAN:\n1. x", PLAN, false), None);
        assert_eq!(
            content("EDITED PLAN:\n1. x", EDITED_PLAN, false),
            some("1. x", true)
        );
        // Last line-start match wins; an inline one only when there is none at a line start.
        assert_eq!(
            content("PLAN: old\nPLAN: new", PLAN, true),
            some("new", true)
        );
        assert_eq!(
            content("PLAN: first\nwe then say plan: inline", PLAN, true),
            some("first\nwe then say plan: inline", true)
        );
        assert_eq!(content("The final plan: go", PLAN, true), some("go", true));
        // Content stops at the next known section marker.
        assert_eq!(
            content("FEEDBACK:\n1. good\nEDITED PLAN:\n1. x", FEEDBACK, true),
            some("1. good", true)
        );
        // Code fences and reasoning are removed.
        assert_eq!(
            content("<think>PLAN: no</think>\nPLAN:\n```\n1. a\n```", PLAN, true),
            some("1. a", true)
        );
        assert_eq!(content("MERGED OUTPUT:   ", MERGED_OUTPUT, false), None);
        assert_eq!(content("", PLAN, true), None);
        assert_eq!(
            content("merged output — all of it", MERGED_OUTPUT, false),
            some("all of it", true)
        );
    }

    #[test]
    fn reasoning_stripping() {
        assert_eq!(strip_reasoning("<think>a</think> b"), "b");
        assert_eq!(strip_reasoning("x <THINKING>a</THINKING>y"), "x y");
        assert_eq!(strip_reasoning("reasoning here</think>\n answer"), "answer");
        assert_eq!(
            strip_reasoning("<reasoning>a</reasoning>b<think>c</think>d"),
            "bd"
        );
        assert_eq!(
            strip_reasoning("<think>never closed"),
            "<think>never closed"
        );
        assert_eq!(clean("a\r\nb\u{200b}"), "a\nb");
    }

    #[test]
    fn numbered_points_and_same_text() {
        assert!(has_numbered_point("Points:\n1. good"));
        assert!(has_numbered_point("- 2) fine"));
        assert!(!has_numbered_point("no numbers here, 1 2 3"));
        assert!(same_text("A  b\nc", "a b c"));
    }
}
