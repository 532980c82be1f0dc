//! Client-side stop-string matching over streamed text.
//!
//! Used where a backend enforces fewer stop strings than a request has (OpenAI accepts 4), and by
//! backends that match stops themselves. Text that might be the start of a stop string is held
//! back until it is decided, so emitted text never contains a stop string or a piece of one.

/// Matches any number of stop strings on text that arrives in pieces.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted (it may begin a stop string).
    pending: String,
    longest: usize,
}

/// What [`StopMatcher::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopScan {
    /// Text that is safe to emit now.
    pub emit: String,
    /// The stop string that matched; the completion ends here and later text is discarded.
    pub matched: Option<String>,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        StopMatcher {
            stops,
            pending: String::new(),
            longest,
        }
    }

    /// Whether there is anything to match.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Feeds new text. On a match, `emit` holds the text before the earliest match.
    pub fn push(&mut self, text: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan {
                emit: text.to_string(),
                matched: None,
            };
        }
        self.pending.push_str(text);
        // Earliest match position wins; among equal positions, the longest stop string.
        let mut best: Option<(usize, &String)> = None;
        for stop in &self.stops {
            if let Some(pos) = self.pending.find(stop.as_str()) {
                let better = match best {
                    None => true,
                    Some((p, s)) => pos < p || (pos == p && stop.len() > s.len()),
                };
                if better {
                    best = Some((pos, stop));
                }
            }
        }
        if let Some((pos, stop)) = best {
            let matched = stop.clone();
            let emit = self.pending[..pos].to_string();
            self.pending.clear();
            return StopScan {
                emit,
                matched: Some(matched),
            };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let keep = self.held_suffix_len();
        let cut = self.pending.len() - keep;
        let emit = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopScan {
            emit,
            matched: None,
        }
    }

    /// Text still held back at the end of the stream (no stop string matched).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn held_suffix_len(&self) -> usize {
        let max = self.longest.saturating_sub(1).min(self.pending.len());
        for len in (1..=max).rev() {
            let start = self.pending.len() - len;
            if !self.pending.is_char_boundary(start) {
                continue;
            }
            let tail = &self.pending[start..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                return len;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and returns (all emitted text, matched stop).
    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let scan = m.push(p);
            out.push_str(&scan.emit);
            if scan.matched.is_some() {
                return (out, scan.matched);
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn stop_split_across_pieces() {
        assert_eq!(
            run(&["\n\nStep"], &["a\n", "\nSt", "ep 2"]),
            ("a".into(), Some("\n\nStep".into()))
        );
    }

    #[test]
    fn held_text_is_released_when_it_is_not_a_stop() {
        assert_eq!(
            run(&["</think>"], &["x </th", "ing"]),
            ("x </thing".into(), None)
        );
    }

    #[test]
    fn earliest_match_wins_then_longest() {
        assert_eq!(run(&["b", "ab"], &["xab"]), ("x".into(), Some("ab".into())));
        assert_eq!(run(&["a", "ab"], &["xab"]), ("x".into(), Some("ab".into())));
    }

    #[test]
    fn many_stop_strings_and_multibyte_text() {
        let stops: Vec<String> = (0..500).map(|i| format!("<s{i}>")).collect();
        let refs: Vec<&str> = stops.iter().map(String::as_str).collect();
        assert_eq!(
            run(&refs, &["é→", "<s4", "99> tail"]),
            ("é→".into(), Some("<s499>".into()))
        );
        assert_eq!(run(&["→x"], &["a→", "b"]), ("a→b".into(), None));
    }

    #[test]
    fn no_stops_is_pass_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), None));
    }
}
