//! Scores of traces and steps (reference §2.4, §1.7.2): uncertainty estimators from top-k
//! logprobs with the validity transform, step splitting and token spans, and the aggregation of
//! step scores. Pure functions.

use ponder_core::TokenLogprob;
use serde::Deserialize;

/// Values at or below this are OpenAI's "very unlikely" sentinel, not a probability.
const SENTINEL: f64 = -9999.0;

/// An uncertainty estimator over a span of tokens: `U ≥ 0`, lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Uncertainty {
    /// Mean over tokens of `−Σ_j p_j · lp_j` over the top-k (not renormalised).
    Entropy,
    /// Mean negative log-likelihood of the sampled tokens.
    #[serde(alias = "mean_nll")]
    Perplexity,
    /// Negative log-likelihood of the span (length-biased).
    SequenceProb,
    /// Mean of `1 − (q1 − q2)`, `q` the top-k probabilities renormalised to sum to 1.
    PdGap,
}

fn usable(lp: f64) -> bool {
    lp.is_finite() && lp > SENTINEL
}

/// `U` of a span, or `None` when no token of it has the data the estimator needs.
pub fn uncertainty(kind: Uncertainty, tokens: &[TokenLogprob]) -> Option<f64> {
    let per_token: Vec<f64> = match kind {
        Uncertainty::Entropy => tokens
            .iter()
            .filter_map(|t| {
                let lps: Vec<f64> = t
                    .top
                    .iter()
                    .map(|e| e.logprob)
                    .filter(|&l| usable(l))
                    .collect();
                (!lps.is_empty()).then(|| -lps.iter().map(|&l| l.exp() * l).sum::<f64>())
            })
            .collect(),
        Uncertainty::Perplexity | Uncertainty::SequenceProb => tokens
            .iter()
            .filter_map(|t| t.logprob.filter(|&l| usable(l)).map(|l| -l))
            .collect(),
        Uncertainty::PdGap => tokens
            .iter()
            .filter_map(|t| {
                let ps: Vec<f64> = t
                    .top
                    .iter()
                    .map(|e| e.logprob)
                    .filter(|&l| usable(l))
                    .map(f64::exp)
                    .collect();
                let total: f64 = ps.iter().sum();
                if ps.is_empty() || total <= 0.0 {
                    return None;
                }
                let mut sorted = ps;
                sorted.sort_by(|a, b| b.total_cmp(a));
                let q1 = sorted[0] / total;
                let q2 = sorted.get(1).map_or(0.0, |p| p / total);
                Some(1.0 - (q1 - q2))
            })
            .collect(),
    };
    if per_token.is_empty() {
        return None;
    }
    let sum: f64 = per_token.iter().sum();
    Some(match kind {
        Uncertainty::SequenceProb => sum,
        _ => sum / per_token.len() as f64,
    })
}

/// `v = 1 / (1 + U)`, in (0, 1], higher is better.
pub fn validity(u: f64) -> f64 {
    1.0 / (1.0 + u.max(0.0))
}

/// Self-certainty of a span with only the top-k known (§2.4.1 approximation): the remaining
/// mass is spread evenly over the other `vocab − k` tokens. Higher is more certain.
pub fn self_certainty(tokens: &[TokenLogprob], vocab: f64) -> Option<f64> {
    let per_token: Vec<f64> = tokens
        .iter()
        .filter_map(|t| {
            let ps: Vec<f64> = t
                .top
                .iter()
                .map(|e| e.logprob)
                .filter(|&l| usable(l))
                .map(f64::exp)
                .collect();
            let k = ps.len() as f64;
            if ps.is_empty() || vocab <= k {
                return None;
            }
            let rest = (1.0 - ps.iter().sum::<f64>()).max(1e-12);
            let known: f64 = ps.iter().map(|p| (vocab * p).ln()).sum();
            let spread = (vocab - k) * (vocab * rest / (vocab - k)).ln();
            Some(-(known + spread) / vocab)
        })
        .collect();
    (!per_token.is_empty()).then(|| per_token.iter().sum::<f64>() / per_token.len() as f64)
}

/// How step scores become one trace score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Last,
    Sum,
    #[default]
    Mean,
    #[serde(alias = "prod")]
    Product,
    Max,
    Min,
}

/// Drops missing and non-finite scores, keeps the last `window` if set, aggregates; `None` for
/// an empty list (unscored: sorts after every scored trace).
pub fn aggregate(scores: &[Option<f64>], how: Aggregation, window: Option<usize>) -> Option<f64> {
    let kept: Vec<f64> = scores
        .iter()
        .filter_map(|s| s.filter(|x| x.is_finite()))
        .collect();
    let kept = match window {
        Some(w) if w < kept.len() => &kept[kept.len() - w..],
        _ => &kept[..],
    };
    if kept.is_empty() {
        return None;
    }
    Some(match how {
        Aggregation::Last => kept[kept.len() - 1],
        Aggregation::Sum => kept.iter().sum(),
        Aggregation::Mean => kept.iter().sum::<f64>() / kept.len() as f64,
        Aggregation::Product => kept.iter().product(),
        Aggregation::Max => kept.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregation::Min => kept.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

/// Splits a trace into steps: after a `<think>…</think>` wrapper is removed, on blank lines if
/// it has any, else on lines; pieces are trimmed and empty ones dropped. Returns each step with
/// its byte range in `text`.
pub fn split_steps(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let (body_start, body) = match text.find("</think>") {
        Some(end) => {
            let start = end + "</think>".len();
            if text[start..].trim().is_empty() {
                let inner = text[..end].strip_prefix("<think>").unwrap_or(&text[..end]);
                (end - inner.len(), inner)
            } else {
                (start, &text[start..])
            }
        }
        None => (0, text),
    };
    let separator = if body.contains("\n\n") { "\n\n" } else { "\n" };
    let mut steps = Vec::new();
    let mut offset = 0;
    for piece in body.split(separator) {
        let lead = piece.len() - piece.trim_start().len();
        let trimmed = piece.trim();
        if !trimmed.is_empty() {
            let start = body_start + offset + lead;
            steps.push((start..start + trimmed.len(), trimmed));
        }
        offset += piece.len() + separator.len();
    }
    steps
}

/// The tokens of each byte range of the text they decode to: a token belongs to the range its
/// first byte falls in (token strings concatenate to the text, as the backends guarantee).
pub fn token_spans<'a>(
    tokens: &'a [TokenLogprob],
    ranges: &[std::ops::Range<usize>],
) -> Vec<&'a [TokenLogprob]> {
    let mut starts = Vec::with_capacity(tokens.len());
    let mut pos = 0;
    for t in tokens {
        starts.push(pos);
        pos += t.token.len();
    }
    ranges
        .iter()
        .map(|r| {
            let first = starts.partition_point(|&s| s < r.start);
            let end = starts.partition_point(|&s| s < r.end);
            // A token that straddles the range start still carries part of the step.
            let first = if first > 0
                && first <= tokens.len()
                && starts[first - 1] + tokens[first - 1].token.len() > r.start
            {
                first - 1
            } else {
                first
            };
            &tokens[first.min(end)..end]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ponder_core::TopLogprob;

    use super::*;

    fn tok(token: &str, lp: f64, top: &[f64]) -> TokenLogprob {
        TokenLogprob {
            token: token.into(),
            logprob: Some(lp),
            top: top
                .iter()
                .enumerate()
                .map(|(i, &l)| TopLogprob {
                    token: format!("t{i}"),
                    logprob: l,
                })
                .collect(),
        }
    }

    const LN_HALF: f64 = -std::f64::consts::LN_2;

    #[test]
    fn uncertainty_estimators_by_hand() {
        // Two tokens, each with top-2 probabilities (0.5, 0.5) and sampled logprob ln 0.5.
        let t = vec![tok("a", LN_HALF, &[LN_HALF, LN_HALF]); 2];
        // Entropy per token: −2 · 0.5 · ln 0.5 = ln 2.
        let h = uncertainty(Uncertainty::Entropy, &t).expect("scored");
        assert!((h - std::f64::consts::LN_2).abs() < 1e-12);
        // Mean NLL ln 2; sequence NLL 2 ln 2.
        let p = uncertainty(Uncertainty::Perplexity, &t).expect("scored");
        assert!((p - std::f64::consts::LN_2).abs() < 1e-12);
        let s = uncertainty(Uncertainty::SequenceProb, &t).expect("scored");
        assert!((s - 2.0 * std::f64::consts::LN_2).abs() < 1e-12);
        // pd_gap: q = (0.5, 0.5) → 1 − 0 = 1.
        assert_eq!(uncertainty(Uncertainty::PdGap, &t), Some(1.0));
        // Peaked token: top (ln 0.9, ln 0.05) renormalised to (0.947…, 0.0526…): 1 − 0.8947… .
        let peaked = vec![tok("b", 0.9f64.ln(), &[0.9f64.ln(), 0.05f64.ln()])];
        let gap = uncertainty(Uncertainty::PdGap, &peaked).expect("scored");
        assert!((gap - (1.0 - (0.9 - 0.05) / 0.95)).abs() < 1e-12);
        // Sentinels and missing data are skipped; nothing usable → unscored.
        let none = vec![tok("c", -9999.0, &[-9999.0])];
        assert_eq!(uncertainty(Uncertainty::Perplexity, &none), None);
        assert_eq!(uncertainty(Uncertainty::Entropy, &none), None);
        assert_eq!(validity(1.0), 0.5);
        assert_eq!(validity(0.0), 1.0);
    }

    #[test]
    fn self_certainty_is_zero_for_a_uniform_distribution() {
        // V = 4, top-2 both 0.25, the remaining 0.5 spread over 2 tokens: uniform, KL = 0.
        let t = vec![tok("a", 0.25f64.ln(), &[0.25f64.ln(), 0.25f64.ln()])];
        let sc = self_certainty(&t, 4.0).expect("scored");
        assert!(sc.abs() < 1e-12, "{sc}");
        // A peaked distribution is more certain.
        let p = vec![tok("a", 0.97f64.ln(), &[0.97f64.ln(), 0.01f64.ln()])];
        assert!(self_certainty(&p, 4.0).expect("scored") > 0.5);
    }

    #[test]
    fn aggregations_by_hand() {
        let s = [Some(0.5), None, Some(0.8), Some(f64::NAN), Some(0.2)];
        assert_eq!(aggregate(&s, Aggregation::Last, None), Some(0.2));
        assert!((aggregate(&s, Aggregation::Sum, None).expect("scored") - 1.5).abs() < 1e-12);
        assert!((aggregate(&s, Aggregation::Mean, None).expect("scored") - 0.5).abs() < 1e-12);
        assert!((aggregate(&s, Aggregation::Product, None).expect("scored") - 0.08).abs() < 1e-12);
        assert_eq!(aggregate(&s, Aggregation::Max, None), Some(0.8));
        assert_eq!(aggregate(&s, Aggregation::Min, None), Some(0.2));
        // Window of the last two kept values: 0.8, 0.2.
        assert_eq!(aggregate(&s, Aggregation::Min, Some(2)), Some(0.2));
        assert_eq!(aggregate(&s, Aggregation::Max, Some(1)), Some(0.2));
        assert_eq!(
            aggregate(&[None, Some(f64::INFINITY)], Aggregation::Mean, None),
            None
        );
    }

    #[test]
    fn steps_and_their_tokens() {
        let text =
            "Step 1: add 2 + 3 = 5.\nStep 2: multiply 5 * 2 = 10.\nThe answer is \\boxed{10}.";
        let steps = split_steps(text);
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1].1, "Step 2: multiply 5 * 2 = 10.");
        assert_eq!(&text[steps[1].0.clone()], steps[1].1);
        let paragraphs = split_steps("<think>\nfirst\n\nsecond line\nstill second\n\n</think>");
        assert_eq!(
            paragraphs.iter().map(|s| s.1).collect::<Vec<_>>(),
            ["first", "second line\nstill second"]
        );
        // Tokens map to the step their first byte is in; the separator "\n" is in none.
        let pieces = [
            "Step 1",
            ": add 2 + 3 = 5.",
            "\n",
            "Step 2: multiply 5 * 2 = 10.\n",
            "The answer is \\boxed{10}.",
        ];
        assert_eq!(pieces.concat(), text);
        let tokens: Vec<TokenLogprob> = pieces.iter().map(|p| tok(p, -0.1, &[])).collect();
        let ranges: Vec<_> = steps.iter().map(|s| s.0.clone()).collect();
        let spans = token_spans(&tokens, &ranges);
        assert_eq!(spans.iter().map(|s| s.len()).collect::<Vec<_>>(), [2, 1, 1]);
    }
}
