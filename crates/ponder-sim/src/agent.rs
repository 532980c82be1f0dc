//! Replies to agent-pipeline prompts (`ponder-agents`): content markers and candidate lists.
//!
//! * A prompt asking for a content marker — `PLAN:`, `EDITED PLAN:`, `FEEDBACK:` or
//!   `MERGED OUTPUT:` — gets a reply that starts with the marker followed by three to five
//!   numbered lines of prose (a plan's steps, feedback points, a merged result).
//! * In a prompt that lists candidates as `--- candidate N ---` blocks, a selection index is
//!   chosen among those `N` (numbered lines inside the candidates do not count).
//!
//! Everything else is left to the rules of the crate docs.

use ponder_core::SeededRng;

use crate::marker::Marker;

const STEPS: [&str; 10] = [
    "Restate the request and list the facts it gives.",
    "Look up the missing details with the most relevant tool.",
    "Check the tool's result against the request.",
    "Combine the partial results into one answer.",
    "Verify the answer once more before replying.",
    "Break the task into smaller questions.",
    "Answer each smaller question in turn.",
    "Note any assumption that the answer depends on.",
    "Keep the reply short and direct.",
    "Give the final answer to the user.",
];

/// The markers this module answers.
const CONTENT_MARKERS: [&str; 4] = ["PLAN", "EDITED PLAN", "FEEDBACK", "MERGED OUTPUT"];

/// A reply for a content-marker prompt, or `None` for other markers.
pub(crate) fn content_reply(marker: &Marker, rng: &mut SeededRng) -> Option<String> {
    if !CONTENT_MARKERS.contains(&marker.text.as_str()) {
        return None;
    }
    let lines = 3 + rng.below(3) as usize;
    let mut text = format!("{}:\n", marker.text);
    let start = rng.below(STEPS.len() as u64) as usize;
    for i in 0..lines {
        text.push_str(&format!(
            "{}. {}\n",
            i + 1,
            STEPS[(start + i * 3) % STEPS.len()]
        ));
    }
    Some(text.trim_end().to_string())
}

/// The number of `--- candidate N ---` blocks in `prompt` (the largest `k` with 1..=k all
/// present), or `None` when there is none.
pub(crate) fn candidate_count(prompt: &str) -> Option<usize> {
    let mut seen = Vec::new();
    for line in prompt.lines() {
        let Some(rest) = line.trim().strip_prefix("--- candidate ") else {
            continue;
        };
        if let Some(n) = rest
            .strip_suffix(" ---")
            .and_then(|n| n.parse::<usize>().ok())
        {
            seen.push(n);
        }
    }
    let k = (1..).take_while(|n| seen.contains(n)).count();
    (k > 0).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marker::MarkerKind;

    #[test]
    fn content_markers_get_numbered_content() {
        let mut rng = SeededRng::new(3);
        let m = Marker {
            text: "EDITED PLAN".into(),
            kind: MarkerKind::Word,
        };
        let r = content_reply(&m, &mut rng).expect("a content marker");
        assert!(r.starts_with("EDITED PLAN:\n1. "), "{r}");
        let other = Marker {
            text: "VERDICT".into(),
            kind: MarkerKind::Word,
        };
        assert!(content_reply(&other, &mut rng).is_none());
    }

    #[test]
    fn counts_delimited_candidates_only() {
        let p = "--- candidate 1 ---\n1. a\n2. b\n3. c\n--- end of candidate 1 ---\n\n--- candidate 2 ---\nx\n--- end of candidate 2 ---";
        assert_eq!(candidate_count(p), Some(2));
        assert_eq!(candidate_count("1. a\n2. b"), None);
    }
}
