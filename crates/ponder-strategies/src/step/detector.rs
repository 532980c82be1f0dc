//! Step boundary detectors (reference §2.2) and the stopping rules of a generated step (§2.3):
//! the stop strings a step call sends, how a finished call is classified (step complete,
//! trajectory complete, why), and the answer-content check of §2.2.6.
//!
//! One boundary definition holds on every backend: the literal stop strings of §2.2.4 plus the
//! token bounds (`min_step_tokens` becomes `min_tokens`, `max_step_tokens` becomes
//! `max_tokens`). Stop strings beyond a server's limit are matched client-side by the backend
//! with exactly the same strings, so a step splits the same way whatever serves it.

use ponder_answer::{extract_with, last_boxed, Extractor};
use ponder_core::FinishReason;

use crate::baseline::THINK_END;
use serde::{Deserialize, Serialize};

/// Why a step ended a trajectory (or, for `max_tokens`, why a step was cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletionReason {
    /// `</think>` ended the step (end of thinking).
    ThinkingComplete,
    /// End of sequence: EOS or an end-of-response pattern.
    EosPattern,
    /// The step stopped at an answer marker: the answer follows.
    AnswerPattern,
    /// The trajectory holds a complete `\boxed{…}` (answer found).
    BoxedInThink,
    /// Not enough context left for another step.
    ContextLimit,
    /// The step repeats itself (line repetition, or too few lines for its length).
    RepetitionDetected,
    /// The step holds characters of an unexpected script (§2.3 garbage rule).
    GarbageDetected,
    /// The step hit `max_step_tokens` (a step boundary, not the end of the trajectory).
    MaxTokens,
    /// The search ran out of steps.
    MaxSteps,
}

/// Marker categories of the thinking-marker detector (§2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerCategory {
    Sequence,
    Conclusion,
    Thinking,
    Verification,
    Reasoning,
    Structure,
    Correction,
    /// Sentence-start words; they have no stop-string form (§2.2.4 rule 1), accepted for
    /// parity and ignored.
    SentenceStart,
}

const SEQUENCE: &[&str] = &[
    "first",
    "second",
    "third",
    "next",
    "then",
    "finally",
    "lastly",
    "after that",
];
const CONCLUSION: &[&str] = &[
    "so",
    "therefore",
    "thus",
    "hence",
    "consequently",
    "as a result",
    "this means",
    "which means",
    "which gives",
    "this suggests",
    "the answer",
];
/// The 32-entry stop-word list of the thinking category.
const THINKING: &[&str] = &[
    "let me",
    "let's",
    "i need to",
    "i should",
    "i can",
    "i'll",
    "wait",
    "hmm",
    "okay",
    "oh",
    "actually",
    "let me think",
    "let me consider",
    "let me compute",
    "let me try",
    "let me denote",
    "wait but",
    "wait no",
    "wait maybe",
    "wait perhaps",
    "so maybe",
    "so perhaps",
    "wait, but",
    "so,",
    "but since",
    "but maybe",
    "but the",
    "but before",
    "but wait",
    "but how",
    "to find",
    "now,",
];
const VERIFICATION: &[&str] = &[
    "to verify",
    "to check",
    "let's check",
    "let's verify",
    "substituting",
    "plugging in",
    "if we",
    "when we",
];
const REASONING: &[&str] = &[
    "alternatively",
    "for example",
    "similarly",
    "note that",
    "recall that",
    "given that",
    "consider",
    "assume",
    "suppose",
    "we have",
    "we can",
    "we need",
];
const CORRECTION: &[&str] = &["mistake", "error", "wrong"];
const STRUCTURE: &[&str] = &[
    "\n\n", "\n- ", "\n* ", "\n1. ", "\n2. ", "\n3. ", "\n4. ", "\n5. ",
];
/// Always added to the thinking-marker stop strings (§2.2.4 rule 6).
const ANSWER_TOKENS: &[&str] = &["</think>", "<Answer>:", "\n<Answer>:"];

/// The categories on by default for online strategies (§1.6).
pub const DEFAULT_MARKERS: &[MarkerCategory] = &[
    MarkerCategory::Sequence,
    MarkerCategory::Conclusion,
    MarkerCategory::Thinking,
    MarkerCategory::Verification,
    MarkerCategory::Reasoning,
];

/// Python's `str.capitalize`: first character upper-cased, the rest lower-cased.
fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// The stop strings of the thinking-marker detector (§2.2.4, the sentence-start rule): every
/// word of the enabled categories as `prefix + Capitalised + suffix` for prefixes `"\n"`,
/// `"\n\n"` and suffixes `" "`, `", "`, `": "`; the structure tokens if enabled; raw custom
/// markers; the answer tokens; deduplicated and sorted.
pub fn marker_stop_strings(categories: &[MarkerCategory], custom: &[String]) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut raw: Vec<String> = Vec::new();
    for category in categories {
        let list: &[&str] = match category {
            MarkerCategory::Sequence => SEQUENCE,
            MarkerCategory::Conclusion => CONCLUSION,
            MarkerCategory::Thinking => THINKING,
            MarkerCategory::Verification => VERIFICATION,
            MarkerCategory::Reasoning => REASONING,
            MarkerCategory::Correction => CORRECTION,
            MarkerCategory::Structure => {
                raw.extend(STRUCTURE.iter().map(|s| s.to_string()));
                &[]
            }
            MarkerCategory::SentenceStart => &[],
        };
        words.extend(list.iter().map(|w| w.to_string()));
    }
    for marker in custom {
        // Blank entries are skipped; newline markers (uncertainty-cot's line steps) are kept.
        if marker.trim().is_empty() && !marker.contains('\n') {
            continue;
        }
        if marker.starts_with('\n') || !marker.chars().any(char::is_alphanumeric) {
            raw.push(marker.clone());
        } else {
            words.push(marker.clone());
        }
    }
    let mut out: Vec<String> = Vec::new();
    for word in &words {
        let w = capitalize(word);
        for prefix in ["\n", "\n\n"] {
            for suffix in [" ", ", ", ": "] {
                out.push(format!("{prefix}{w}{suffix}"));
            }
        }
    }
    out.extend(raw);
    out.extend(ANSWER_TOKENS.iter().map(|s| s.to_string()));
    out.sort();
    out.dedup();
    out
}

/// Default step patterns of the structured detector (§2.2.1).
pub const STRUCTURED_STEP_PATTERNS: &[&str] = &[
    "\n- Step",
    "- Step",
    "\nStep",
    "\n\n",
    "\n**Step",
    "\n## Step",
    "<Answer>:",
    "\n<Answer>:",
    "\n\nAnswer:",
    "\nFinal Answer:",
    "\n\nThe answer is",
];
/// Default answer patterns of the structured detector.
pub const STRUCTURED_ANSWER_PATTERNS: &[&str] = &[
    "<Answer>:",
    "\n<Answer>:",
    "\n\nAnswer:",
    "\nFinal Answer:",
    "\n\nThe answer is",
];
/// Default end-of-sequence patterns of the structured detector.
pub const STRUCTURED_EOS_PATTERNS: &[&str] = &["<end of response>", "<|im_end|>"];
/// Default answer patterns of the thinking-marker detector.
pub const MARKER_ANSWER_PATTERNS: &[&str] = &["</think>", "<Answer>:", "\n<Answer>:"];
/// Default end markers of the answer phase.
pub const DEFAULT_EOS_PATTERNS: &[&str] = &["<end of response>"];

/// Which boundary definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Sentence-start markers as stop strings (§2.2.2, the default for every generator).
    #[default]
    ThinkingMarkers,
    /// Template step patterns (§2.2.1).
    Structured,
}

/// A resolved detector: its stop strings and the patterns that classify a stop.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    pub kind: DetectorKind,
    /// Sent with every step call (server-side where the backend allows, the rest client-side).
    pub stop_strings: Vec<String>,
    /// A step that stops at one of these ends the reasoning: the answer follows it.
    pub answer_patterns: Vec<String>,
    /// A step that stops at one of these ends the trajectory.
    pub eos_patterns: Vec<String>,
    /// Apply the garbage rule (expected script: Latin).
    pub latin_only: bool,
    /// Steps are generated inside a thinking block (§0.4): `</think>` is a stop string, a
    /// length stop is cut back to a sentence boundary, and neither a `\boxed{}` nor the
    /// garbage rule ends the trajectory; the answer comes after `</think>`.
    pub thinking: bool,
}

/// How a generated step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepEnd {
    /// The step ended normally (boundary, stop string or EOS); false for a length stop.
    pub is_complete: bool,
    /// The step ends the trajectory.
    pub is_trajectory_complete: bool,
    pub reason: Option<CompletionReason>,
}

impl Detector {
    /// The thinking-marker detector with the given categories and custom markers.
    pub fn thinking_markers(
        categories: &[MarkerCategory],
        custom: &[String],
        answer_patterns: Option<Vec<String>>,
        eos_patterns: Vec<String>,
    ) -> Self {
        let mut stop_strings = marker_stop_strings(categories, custom);
        let answer_patterns = answer_patterns.unwrap_or_else(|| {
            MARKER_ANSWER_PATTERNS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        for p in answer_patterns.iter().chain(&eos_patterns) {
            if !stop_strings.contains(p) {
                stop_strings.push(p.clone());
            }
        }
        stop_strings.sort();
        Detector {
            kind: DetectorKind::ThinkingMarkers,
            stop_strings,
            answer_patterns,
            eos_patterns,
            latin_only: true,
            thinking: false,
        }
    }

    /// The structured detector; `None` patterns take the §2.2.1 defaults.
    pub fn structured(
        step_patterns: Option<Vec<String>>,
        answer_patterns: Option<Vec<String>>,
        eos_patterns: Option<Vec<String>>,
    ) -> Self {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let step = step_patterns.unwrap_or_else(|| owned(STRUCTURED_STEP_PATTERNS));
        let answer_patterns = answer_patterns.unwrap_or_else(|| owned(STRUCTURED_ANSWER_PATTERNS));
        let eos_patterns = eos_patterns.unwrap_or_else(|| owned(STRUCTURED_EOS_PATTERNS));
        let mut stop_strings: Vec<String> = Vec::new();
        for p in step.iter().chain(&answer_patterns).chain(&eos_patterns) {
            if !p.is_empty() && !stop_strings.contains(p) {
                stop_strings.push(p.clone());
            }
        }
        Detector {
            kind: DetectorKind::Structured,
            stop_strings,
            answer_patterns,
            eos_patterns,
            latin_only: true,
            thinking: false,
        }
    }

    /// Switches to thinking mode, adding `</think>` to the stop strings.
    pub fn with_thinking(mut self) -> Self {
        self.thinking = true;
        if !self.stop_strings.iter().any(|s| s == THINK_END) {
            self.stop_strings.push(THINK_END.to_string());
        }
        self
    }

    /// Classifies a generated step (rules of §2.1.5 and §2.3).
    ///
    /// * `before`: the trajectory text before this step (its lead marker included);
    /// * `step`: the step's text (its lead marker included, the stop string that ended it
    ///   excluded); `marker`: that stop string, when one ended it;
    /// * `tokens`: completion tokens the step took.
    pub fn classify(
        &self,
        before: &str,
        step: &str,
        marker: Option<&str>,
        finish: FinishReason,
        tokens: u64,
    ) -> StepEnd {
        let done = |reason| StepEnd {
            is_complete: true,
            is_trajectory_complete: true,
            reason: Some(reason),
        };
        match (finish, marker) {
            (FinishReason::Length, _) => {
                if repetitive(step, tokens) {
                    return done(CompletionReason::RepetitionDetected);
                }
            }
            (_, Some("</think>")) => return done(CompletionReason::ThinkingComplete),
            (_, Some(m)) if self.eos_patterns.iter().any(|p| p == m) => {
                return done(CompletionReason::EosPattern)
            }
            (_, Some(m)) if self.answer_patterns.iter().any(|p| p == m) && !self.thinking => {
                return done(CompletionReason::AnswerPattern)
            }
            (_, Some(_)) => {}
            // A normal stop without a stop string is the end of sequence.
            (FinishReason::Stop, None) => return done(CompletionReason::EosPattern),
            (_, None) => {}
        }
        if self.thinking {
            // Inside the thinking block only `</think>`, EOS and repetition end it.
            return StepEnd {
                is_complete: finish != FinishReason::Length,
                is_trajectory_complete: false,
                reason: (finish == FinishReason::Length).then_some(CompletionReason::MaxTokens),
            };
        }
        if self.latin_only && is_garbage(step) {
            return done(CompletionReason::GarbageDetected);
        }
        let mut whole = String::with_capacity(before.len() + step.len());
        whole.push_str(before);
        whole.push_str(step);
        if last_boxed(&whole).is_some_and(|b| !b.trim().is_empty()) {
            return done(CompletionReason::BoxedInThink);
        }
        if finish == FinishReason::Length {
            return StepEnd {
                is_complete: false,
                is_trajectory_complete: false,
                reason: Some(CompletionReason::MaxTokens),
            };
        }
        StepEnd {
            is_complete: true,
            is_trajectory_complete: false,
            reason: None,
        }
    }

    /// Whether a trajectory has an answer (§2.2.6, ours): an answer marker followed by a
    /// non-whitespace character that is not an end marker, a complete `\boxed{…}` with
    /// content, or an answer the extractor finds (without the last-number fall-back).
    /// In thinking mode only the text after `</think>` counts.
    pub fn has_answer_content(&self, trajectory: &str) -> bool {
        let trajectory = if self.thinking {
            match trajectory.rfind(THINK_END) {
                Some(pos) => &trajectory[pos + THINK_END.len()..],
                None => return false,
            }
        } else {
            trajectory
        };
        for pattern in &self.answer_patterns {
            if pattern == "</think>" {
                continue;
            }
            if let Some(pos) = trajectory.rfind(pattern.as_str()) {
                let rest = trajectory[pos + pattern.len()..].trim_start();
                let is_end = self
                    .eos_patterns
                    .iter()
                    .any(|e| rest.starts_with(e.as_str()));
                if !rest.is_empty() && !is_end {
                    return true;
                }
            }
        }
        if last_boxed(trajectory).is_some_and(|b| !b.trim().is_empty()) {
            return true;
        }
        // Marker and box rules only: a last number or the whole text is not an answer here.
        let options = Extractor {
            last_number: false,
            whole: false,
            ..Extractor::default()
        };
        // End markers are not answers.
        let mut text = trajectory.to_string();
        for end in &self.eos_patterns {
            text = text.replace(end.as_str(), " ");
        }
        extract_with(&text, &options).is_some_and(|e| !e.answer.trim().is_empty())
    }
}

/// Sentence-boundary truncation (§2.3.1): the text up to and including the punctuation of the
/// right-most `". "`, `".\n"`, `"?\n"`, `"? "`, `"!\n"`, `"! "` or `"\n\n"`; unchanged when
/// there is none past the start.
pub fn truncate_at_sentence(text: &str) -> &str {
    let best = [". ", ".\n", "?\n", "? ", "!\n", "! ", "\n\n"]
        .iter()
        .filter_map(|b| text.rfind(b))
        .max();
    match best {
        Some(pos) if pos > 0 => &text[..=pos],
        _ => text,
    }
}

/// The line-repetition and too-few-lines rules of §2.3 (applied on a length stop).
pub fn repetitive(text: &str, tokens: u64) -> bool {
    let lines: Vec<&str> = text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() >= 4 {
        let mut unique = lines.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() as f64 / lines.len() as f64 <= 0.3 {
            return true;
        }
    }
    tokens >= 1000 && (lines.len() as f64) < (tokens as f64 / 1000.0) * 2.0
}

/// The garbage rule of §2.3: at least two matches of an emoji, a CJK ideograph, a kana, a
/// full-width form, or a run of two or more Latin Extended characters.
pub fn is_garbage(text: &str) -> bool {
    let single = |c: char| {
        matches!(c as u32,
            0x1F300..=0x1F9FF | 0x4E00..=0x9FFF | 0x3040..=0x30FF | 0xFF01..=0xFF60)
    };
    let latin_ext = |c: char| matches!(c as u32, 0x0100..=0x024F);
    let mut matches = 0;
    let mut run = 0;
    for c in text.chars() {
        if latin_ext(c) {
            run += 1;
            if run == 2 {
                matches += 1;
            }
        } else {
            run = 0;
        }
        if single(c) {
            matches += 1;
        }
        if matches >= 2 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_default_gives_427_stop_strings() {
        // 71 words × 6 = 426, minus the 2 duplicates of "so" + ", " and "so," + " ", plus the
        // 3 answer tokens (reference §2.2.4 rule 7).
        let stops = marker_stop_strings(DEFAULT_MARKERS, &[]);
        assert_eq!(stops.len(), 427);
        assert!(stops.contains(&"\nSo, ".to_string()));
        assert!(stops.contains(&"\n\nI'll ".to_string()));
        assert!(stops.contains(&"\nLet's check: ".to_string()));
        assert!(stops.contains(&"\n<Answer>:".to_string()));
        // Sorted: "\n\n…" variants come before "\n…" variants.
        assert!(stops.windows(2).all(|w| w[0] < w[1]));
        assert!(stops[0].starts_with("\n\n"));
    }

    #[test]
    fn custom_markers_split_into_raw_and_words() {
        let custom = vec![
            "\n###".to_string(),
            "---".to_string(),
            "  ".to_string(),
            "indeed".to_string(),
        ];
        let stops = marker_stop_strings(&[], &custom);
        // 6 forms of "indeed", 2 raw markers, 3 answer tokens; whitespace skipped.
        assert_eq!(stops.len(), 11);
        assert!(stops.contains(&"\n###".to_string()));
        assert!(stops.contains(&"---".to_string()));
        assert!(stops.contains(&"\n\nIndeed: ".to_string()));
        let with_structure = marker_stop_strings(&[MarkerCategory::Structure], &[]);
        assert_eq!(with_structure.len(), 8 + 3);
        assert_eq!(capitalize("i'll"), "I'll");
        assert_eq!(capitalize("LET'S"), "Let's");
    }

    fn check(
        d: &Detector,
        before: &str,
        step: &str,
        marker: Option<&str>,
        finish: FinishReason,
        expected: (bool, bool, Option<CompletionReason>),
    ) {
        let end = d.classify(before, step, marker, finish, 10);
        assert_eq!(
            (end.is_complete, end.is_trajectory_complete, end.reason),
            expected,
            "{step:?} {marker:?}"
        );
    }

    #[test]
    fn every_completion_reason_from_hand_made_steps() {
        use CompletionReason::*;
        use FinishReason::{Length, Stop};
        let d = Detector::thinking_markers(
            DEFAULT_MARKERS,
            &[],
            None,
            vec!["<end of response>".into()],
        );
        // A plain boundary: the step ends, the trajectory goes on.
        check(
            &d,
            "",
            "First, add 2 and 3.",
            Some("\nSo "),
            Stop,
            (true, false, None),
        );
        check(
            &d,
            "",
            "5 + 3 = 8.",
            Some("</think>"),
            Stop,
            (true, true, Some(ThinkingComplete)),
        );
        check(&d, "", "Done.", None, Stop, (true, true, Some(EosPattern)));
        check(
            &d,
            "",
            "Done.",
            Some("<end of response>"),
            Stop,
            (true, true, Some(EosPattern)),
        );
        check(
            &d,
            "",
            "So it is 8.",
            Some("<Answer>:"),
            Stop,
            (true, true, Some(AnswerPattern)),
        );
        check(
            &d,
            "We get \\boxed{",
            "8}.",
            Some("\nSo "),
            Stop,
            (true, true, Some(BoxedInThink)),
        );
        check(
            &d,
            "",
            "a\na\na\na\na",
            None,
            Length,
            (true, true, Some(RepetitionDetected)),
        );
        check(
            &d,
            "",
            "the 答案 是",
            Some("\nSo "),
            Stop,
            (true, true, Some(GarbageDetected)),
        );
        check(
            &d,
            "",
            "A long step",
            None,
            Length,
            (false, false, Some(MaxTokens)),
        );
        // An empty box is not an answer.
        check(
            &d,
            "",
            "\\boxed{ }",
            Some("\nSo "),
            Stop,
            (true, false, None),
        );
        let s = Detector::structured(None, None, None);
        check(
            &s,
            "",
            "- Step 1: add.",
            Some("\n- Step"),
            Stop,
            (true, false, None),
        );
        check(
            &s,
            "",
            "- Step 2: add.",
            Some("\n\nThe answer is"),
            Stop,
            (true, true, Some(AnswerPattern)),
        );
        check(
            &s,
            "",
            "x",
            Some("<|im_end|>"),
            Stop,
            (true, true, Some(EosPattern)),
        );
    }

    #[test]
    fn thinking_steps_end_only_at_think_end_eos_or_repetition() {
        use CompletionReason::*;
        use FinishReason::{Length, Stop};
        let d = Detector::structured(None, None, None).with_thinking();
        assert!(d.stop_strings.contains(&"</think>".to_string()));
        check(
            &d,
            "",
            "so \\boxed{5}",
            Some("\nStep"),
            Stop,
            (true, false, None),
        );
        check(
            &d,
            "",
            "the 答案 是",
            Some("\nStep"),
            Stop,
            (true, false, None),
        );
        check(
            &d,
            "",
            "x",
            Some("</think>"),
            Stop,
            (true, true, Some(ThinkingComplete)),
        );
        check(&d, "", "x", None, Stop, (true, true, Some(EosPattern)));
        check(
            &d,
            "",
            "long",
            None,
            Length,
            (false, false, Some(MaxTokens)),
        );
        // The answer counts only after the thinking block.
        assert!(!d.has_answer_content("so \\boxed{5}"));
        assert!(d.has_answer_content("hmm</think>The answer is \\boxed{5}."));
        assert_eq!(truncate_at_sentence("One. Two? Thr"), "One. Two?");
        assert_eq!(truncate_at_sentence("a\n\nb"), "a\n");
        assert_eq!(truncate_at_sentence("no boundary"), "no boundary");
    }

    #[test]
    fn too_few_lines_for_the_tokens_is_repetition() {
        assert!(repetitive("one long line without breaks", 2000));
        assert!(!repetitive("a\nb\nc\nd\ne", 2000));
        assert!(!repetitive("a\nb\nc", 10));
        assert!(!is_garbage("café résumé"));
        assert!(is_garbage("ŁŁ and ĳĳ"));
        assert!(is_garbage("🌀 🌀"));
    }

    #[test]
    fn answer_content_needs_text_after_the_marker_or_a_box() {
        let d = Detector::structured(None, None, None);
        assert!(!d.has_answer_content("- Step 1: 2 + 3 = 5.\n<Answer>:"));
        assert!(!d.has_answer_content("- Step 1: 2 + 3 = 5.\n<Answer>: <end of response>"));
        assert!(d.has_answer_content("- Step 1: 2 + 3 = 5.\n<Answer>: 5"));
        assert!(d.has_answer_content("so the result is \\boxed{5}."));
        assert!(!d.has_answer_content("so the result is \\boxed{}."));
        assert!(d.has_answer_content("The answer is 5."));
        assert!(!d.has_answer_content("Step 1: add 2 and 3 to get 5."));
    }
}
