//! An LLM judge: asks a model to rate a solution and reads the score from its reply with the
//! robust-marker rules of `agent-pipelines.md` §4 (case-insensitive, emphasis tolerated, last
//! valid match wins, bounded re-ask, `None` — never 0 — when every attempt fails).

use std::sync::Arc;

use ponder_core::{Backend, GenerationRequest, Message, Prompt, SamplingParams, StrategyError};

/// The marker the judge prompt asks for.
pub const SCORE_MARKER: &str = "FINAL SCORE";

/// Reads the value of a score marker (`FINAL SCORE: 7`, `**Final score** - 7/10`, …) from
/// `reply`: the last match whose number lies in `[min, max]`.
pub fn parse_score(reply: &str, marker: &str, min: f64, max: f64) -> Option<f64> {
    let text: String = reply
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| !matches!(c, '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{feff}'))
        .collect::<String>()
        .to_lowercase();
    let words: Vec<String> = marker
        .split([' ', '_'])
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let first = words.first()?;
    let bytes = text.as_bytes();
    let mut best = None;
    let mut from = 0;
    while let Some(pos) = text[from..].find(first.as_str()) {
        let start = from + pos;
        from = start + first.len();
        // Word boundary before the marker.
        if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let Some(after) = match_rest(&text, from, &words[1..]) else {
            continue;
        };
        if after < text.len() && bytes[after].is_ascii_alphanumeric() {
            continue;
        }
        if let Some(v) = read_number(&text[after..]).filter(|v| (min..=max).contains(v)) {
            best = Some(v);
        }
    }
    best
}

/// Matches the marker's later words, each after a run of spaces or underscores; returns the
/// byte position after the last one.
fn match_rest(text: &str, mut at: usize, words: &[String]) -> Option<usize> {
    for word in words {
        let gap = text[at..]
            .bytes()
            .take_while(|b| *b == b' ' || *b == b'_' || *b == b'*')
            .count();
        if gap == 0 {
            return None;
        }
        at += gap;
        if !text[at..].starts_with(word.as_str()) {
            return None;
        }
        at += word.len();
    }
    Some(at)
}

/// After a marker: emphasis, a separator, `$` and brackets may come before the number; a
/// trailing `/10` or `out of 10` is allowed.
fn read_number(rest: &str) -> Option<f64> {
    let skip = |s: &str| {
        s.trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, '*' | '_' | '`' | '"' | '\'' | '$' | '[' | '(' | '{')
        })
        .to_string()
    };
    let mut s = skip(rest);
    if let Some(stripped) = s
        .strip_prefix(':')
        .or_else(|| s.strip_prefix('='))
        .or_else(|| s.strip_prefix('-'))
        .or_else(|| s.strip_prefix('—'))
    {
        s = skip(stripped);
    }
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
        .map_or(s.len(), |(i, _)| i);
    let number = s[..end].trim_end_matches('.');
    if !number.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Judge settings.
#[derive(Debug, Clone)]
pub struct Judge {
    pub temperature: f64,
    pub max_tokens: u32,
    /// Re-asks after a reply without a valid score. Default: 2.
    pub max_reask: u32,
}

impl Default for Judge {
    fn default() -> Self {
        Judge {
            temperature: 0.0,
            max_tokens: 512,
            max_reask: 2,
        }
    }
}

/// A judge's verdict on one solution.
#[derive(Debug, Clone, PartialEq)]
pub struct Rating {
    /// The score scaled to [0, 1] (`value / 10`), or `None` when no attempt parsed.
    pub score: Option<f64>,
    /// Calls made (1 + re-asks).
    pub calls: u32,
}

impl Judge {
    fn prompt(question: &str, solution: &str) -> Vec<Message> {
        vec![
            Message::system(
                "You check solutions to math problems. Judge whether the final answer is right.",
            ),
            Message::user(format!(
                "Problem:\n{question}\n\nProposed solution:\n{solution}\n\nHow likely is the \
                 final answer to be correct, from 1 (surely wrong) to 10 (surely right)? Reply \
                 briefly, and end with a line in the format `{SCORE_MARKER}: <1-10>`."
            )),
        ]
    }

    /// Rates `solution`; `seed` makes the calls reproducible.
    pub async fn rate(
        &self,
        backend: &Arc<dyn Backend>,
        question: &str,
        solution: &str,
        seed: u64,
    ) -> Result<Rating, StrategyError> {
        let mut messages = Self::prompt(question, solution);
        let mut calls = 0;
        for attempt in 0..=self.max_reask {
            calls += 1;
            let params = SamplingParams {
                temperature: Some(self.temperature),
                max_tokens: Some(self.max_tokens),
                seed: Some(seed.wrapping_add(u64::from(attempt))),
                ..SamplingParams::default()
            };
            let reply = backend
                .generate(GenerationRequest::new(
                    Prompt::Chat {
                        messages: messages.clone(),
                        continue_final_message: false,
                    },
                    params,
                ))
                .await?;
            let text = reply
                .completions
                .into_iter()
                .next()
                .map(|c| c.text)
                .unwrap_or_default();
            if let Some(v) = parse_score(&text, SCORE_MARKER, 1.0, 10.0) {
                return Ok(Rating {
                    score: Some(v / 10.0),
                    calls,
                });
            }
            messages.push(Message::assistant(text));
            messages.push(Message::user(format!(
                "Your reply has no score. End with one line `{SCORE_MARKER}: <1-10>`, a number \
                 from 1 to 10."
            )));
        }
        Ok(Rating { score: None, calls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(reply: &str) -> Option<f64> {
        parse_score(reply, SCORE_MARKER, 1.0, 10.0)
    }

    #[test]
    fn score_markers_in_their_many_shapes() {
        assert_eq!(score("Looks fine.\nFINAL SCORE: 7"), Some(7.0));
        assert_eq!(score("**Final Score**: 8/10"), Some(8.0));
        assert_eq!(score("final_score = 6.5."), Some(6.5));
        assert_eq!(score("FINAL  SCORE — [9]"), Some(9.0));
        assert_eq!(score("# Final score\n- 4 out of 10"), Some(4.0));
        // Last valid match wins; out-of-range matches are skipped.
        assert_eq!(
            score("FINAL SCORE: 3 ... on reflection FINAL SCORE: 5"),
            Some(5.0)
        );
        assert_eq!(score("FINAL SCORE: 5 then FINAL SCORE: 11"), Some(5.0));
        // No marker, no number, or a marker inside a longer word: no score.
        assert_eq!(score("I give it a 7."), None);
        assert_eq!(score("FINAL SCORE: high"), None);
        assert_eq!(score("SEMIFINAL SCORE: 7"), None);
        assert_eq!(score(""), None);
    }
}
