//! DeepConf confidence measures (reference §1.4.1): token confidence from the top-k
//! log-probabilities, group confidence over sliding windows, the trace measures built on them,
//! the percentile used for thresholds and the trace filters. Pure functions, no I/O.

use std::collections::VecDeque;

use ponder_core::TokenLogprob;
use serde::{Deserialize, Serialize};

/// Log-probabilities at or below this are the OpenAI "very unlikely" sentinel, not values.
pub const LOGPROB_SENTINEL: f64 = -9999.0;

/// Tokens the tail confidence covers (the last ones of the trace).
pub const TAIL_TOKENS: usize = 2048;

/// Whether a reported log-probability is a usable value.
fn usable(lp: f64) -> bool {
    lp.is_finite() && lp > LOGPROB_SENTINEL
}

/// Token confidence `C_i = −(1/k) Σ_j lp_{i,j}` over the position's top-k entries.
///
/// Non-finite values and values ≤ −9999 are dropped and the mean is over the entries used; a
/// position with no usable entry has no confidence (`None`). With
/// `include_sampled_if_outside_topk`, the sampled token's logprob is added as an extra entry when
/// the sampled token is not among the top-k (DeepConf's vLLM dictionary does this).
pub fn token_confidence(
    token: &TokenLogprob,
    include_sampled_if_outside_topk: bool,
) -> Option<f64> {
    let mut sum = 0.0;
    let mut used = 0usize;
    for alt in &token.top {
        if usable(alt.logprob) {
            sum += alt.logprob;
            used += 1;
        }
    }
    if include_sampled_if_outside_topk && !token.top.iter().any(|t| t.token == token.token) {
        if let Some(lp) = token.logprob.filter(|lp| usable(*lp)) {
            sum += lp;
            used += 1;
        }
    }
    (used > 0).then(|| -sum / used as f64)
}

/// Token confidences of a trace; positions without a usable entry are skipped.
pub fn token_confidences(
    tokens: &[TokenLogprob],
    include_sampled_if_outside_topk: bool,
) -> Vec<f64> {
    tokens
        .iter()
        .filter_map(|t| token_confidence(t, include_sampled_if_outside_topk))
        .collect()
}

/// Group confidences over windows of `window` tokens sliding with stride 1: `T − n + 1` groups;
/// one group (the mean) when `T < n`; none when `T = 0`. A window of 0 counts as 1.
pub fn group_confidences(conf: &[f64], window: usize) -> Vec<f64> {
    let n = window.max(1);
    if conf.is_empty() {
        return Vec::new();
    }
    if conf.len() < n {
        return vec![mean(conf)];
    }
    // Prefix sums: O(T) for all windows. The rounding error of a difference of two prefix sums
    // is about 1e-16 times the trace's total, far below anything a threshold can resolve.
    let mut prefix = Vec::with_capacity(conf.len() + 1);
    prefix.push(0.0);
    let mut acc = 0.0;
    for c in conf {
        acc += c;
        prefix.push(acc);
    }
    (0..=conf.len() - n)
        .map(|t| (prefix[t + n] - prefix[t]) / n as f64)
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean of the lowest `max(1, ⌊0.1 · #groups⌋)` group confidences; `None` without groups.
pub fn bottom_10_percent(groups: &[f64]) -> Option<f64> {
    if groups.is_empty() {
        return None;
    }
    let count = (groups.len() / 10).max(1);
    let mut sorted = groups.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(mean(&sorted[..count]))
}

/// Which trace measure a strategy uses as a trace's confidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceMetric {
    /// `C_least`, the lowest group confidence. The default.
    #[default]
    LowestGroup,
    /// Mean of the lowest 10% of group confidences.
    #[serde(rename = "bottom_10_group")]
    Bottom10Group,
    /// Mean token confidence over the last 2048 tokens.
    Tail,
    /// Mean token confidence over the whole trace.
    Mean,
}

impl ConfidenceMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfidenceMetric::LowestGroup => "lowest_group",
            ConfidenceMetric::Bottom10Group => "bottom_10_group",
            ConfidenceMetric::Tail => "tail",
            ConfidenceMetric::Mean => "mean",
        }
    }
}

/// Every DeepConf measure of one trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TraceConfidence {
    /// Scored token positions.
    pub tokens: usize,
    /// `C_avg`.
    pub mean: f64,
    /// `C_least`.
    pub lowest_group: f64,
    pub bottom_10_group: f64,
    pub tail: f64,
}

impl TraceConfidence {
    /// The measures of a trace with token confidences `conf`; `None` for a trace with no scored
    /// token (unscored).
    pub fn compute(conf: &[f64], window: usize) -> Option<TraceConfidence> {
        let groups = group_confidences(conf, window);
        let lowest_group = groups.iter().copied().reduce(f64::min)?;
        let bottom_10_group = bottom_10_percent(&groups)?;
        let tail_from = conf.len().saturating_sub(TAIL_TOKENS);
        Some(TraceConfidence {
            tokens: conf.len(),
            mean: mean(conf),
            lowest_group,
            bottom_10_group,
            tail: mean(&conf[tail_from..]),
        })
    }

    /// The measure `metric` picks.
    pub fn get(&self, metric: ConfidenceMetric) -> f64 {
        match metric {
            ConfidenceMetric::LowestGroup => self.lowest_group,
            ConfidenceMetric::Bottom10Group => self.bottom_10_group,
            ConfidenceMetric::Tail => self.tail,
            ConfidenceMetric::Mean => self.mean,
        }
    }
}

/// The `q`-th percentile (`q` in [0, 100]) with linear interpolation between the closest ranks
/// (NumPy's default): for sorted `x_0 ≤ … ≤ x_{m−1}`, `r = q · (m − 1) / 100` and
/// `pct = x_⌊r⌋ + (x_⌈r⌉ − x_⌊r⌋) · (r − ⌊r⌋)`. `None` for no values; non-finite values are
/// ignored. `q` is clamped to [0, 100].
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 100.0) };
    // Multiply before dividing so that whole ranks come out exact (90 · 10 / 100 = 9, whereas
    // 0.9 · 10 is 9.000000000000002 and would drop the 9th value from a `≥ s` filter).
    let r = q * (sorted.len() - 1) as f64 / 100.0;
    let lo = r.floor() as usize;
    let hi = r.ceil() as usize;
    let frac = r - r.floor();
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Which traces a filter keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceFilter {
    /// Keep traces with `conf ≥ pct(conf, 100 − η)`; η in (0, 100].
    TopPercent(f64),
    /// Keep the `k` traces with the highest confidence (earlier trace first among equals).
    TopK(usize),
    /// Keep traces with `conf ≥ threshold`.
    Threshold(f64),
    /// Keep every trace.
    None,
}

/// What a filter kept, and the cut it used.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    /// Indices into the input, ascending.
    pub kept: Vec<usize>,
    /// The confidence a trace needed (`None` for `none` and for an empty input).
    pub threshold: Option<f64>,
    /// The filter kept nothing, so every trace was kept.
    pub kept_all_fallback: bool,
}

/// Applies `filter` to trace confidences `conf`. If the filter keeps nothing, every trace is
/// kept (`kept_all_fallback`).
pub fn filter_traces(conf: &[f64], filter: TraceFilter) -> Filtered {
    let all: Vec<usize> = (0..conf.len()).collect();
    let (kept, threshold) = match filter {
        TraceFilter::None => (all.clone(), None),
        TraceFilter::TopPercent(eta) => match percentile(conf, 100.0 - eta) {
            Some(s) => (at_least(conf, s), Some(s)),
            None => (Vec::new(), None),
        },
        TraceFilter::Threshold(s) => (at_least(conf, s), Some(s)),
        TraceFilter::TopK(k) => {
            let mut order = all.clone();
            // Highest first; equal confidences keep trace order (the sort is stable).
            order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));
            order.truncate(k);
            let threshold = order.last().map(|&i| conf[i]);
            order.sort_unstable();
            (order, threshold)
        }
    };
    if kept.is_empty() {
        Filtered {
            kept: all,
            threshold,
            kept_all_fallback: !conf.is_empty(),
        }
    } else {
        Filtered {
            kept,
            threshold,
            kept_all_fallback: false,
        }
    }
}

fn at_least(conf: &[f64], s: f64) -> Vec<usize> {
    (0..conf.len()).filter(|&i| conf[i] >= s).collect()
}

/// The online check: the mean of the last `n` token confidences, updated in O(1) per token.
///
/// The running sum is rebuilt from the window every `n` tokens, which keeps the cost O(1)
/// amortised and stops rounding error from accumulating over a long trace.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    n: usize,
    values: VecDeque<f64>,
    sum: f64,
    since_rebuild: usize,
    seen: usize,
}

impl RollingWindow {
    /// A window of `n` tokens (0 counts as 1).
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        RollingWindow {
            n,
            values: VecDeque::with_capacity(n),
            sum: 0.0,
            since_rebuild: 0,
            seen: 0,
        }
    }

    /// Adds a token confidence; returns the window mean once at least `n` tokens were seen.
    pub fn push(&mut self, c: f64) -> Option<f64> {
        self.seen += 1;
        self.values.push_back(c);
        self.sum += c;
        if self.values.len() > self.n {
            if let Some(old) = self.values.pop_front() {
                self.sum -= old;
            }
        }
        self.since_rebuild += 1;
        if self.since_rebuild >= self.n {
            self.sum = self.values.iter().sum();
            self.since_rebuild = 0;
        }
        self.full().then(|| self.sum / self.n as f64)
    }

    /// Whether `n` tokens have been seen.
    pub fn full(&self) -> bool {
        self.values.len() == self.n
    }

    /// Token confidences pushed so far.
    pub fn seen(&self) -> usize {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_core::TopLogprob;

    fn tok(sampled: &str, lp: f64, top: &[(&str, f64)]) -> TokenLogprob {
        TokenLogprob {
            token: sampled.into(),
            logprob: Some(lp),
            top: top
                .iter()
                .map(|(t, l)| TopLogprob {
                    token: (*t).into(),
                    logprob: *l,
                })
                .collect(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn token_confidence_is_minus_the_mean_top_k_logprob() {
        // top = −0.1, −2.0, −3.9: sum −6.0, k = 3 → C = 6.0 / 3 = 2.0.
        let t = tok("a", -0.1, &[("a", -0.1), ("b", -2.0), ("c", -3.9)]);
        assert_eq!(token_confidence(&t, false), Some(2.0));
        // A peaked position is more confident than a flat one: −0.01, −5, −9 → 14.01 / 3 = 4.67.
        let peaked = tok("a", -0.01, &[("a", -0.01), ("b", -5.0), ("c", -9.0)]);
        let c = token_confidence(&peaked, false).expect("scored");
        assert!(close(c, 14.01 / 3.0));
        assert!(c > 2.0);
    }

    #[test]
    fn sentinel_and_non_finite_entries_are_dropped() {
        // −9999 and −∞ dropped; −1 and −3 remain: C = 4 / 2 = 2.
        let t = tok(
            "a",
            -1.0,
            &[
                ("a", -1.0),
                ("b", -3.0),
                ("c", -9999.0),
                ("d", f64::NEG_INFINITY),
            ],
        );
        assert_eq!(token_confidence(&t, false), Some(2.0));
        // Nothing usable: unscored, and skipped in a trace.
        let none = tok("a", -1.0, &[("a", -9999.5), ("b", f64::NAN)]);
        assert_eq!(token_confidence(&none, false), None);
        let empty = tok("a", -1.0, &[]);
        assert_eq!(token_confidence(&empty, false), None);
        let trace = [t.clone(), none, empty, t];
        assert_eq!(token_confidences(&trace, false), vec![2.0, 2.0]);
    }

    #[test]
    fn sampled_token_outside_top_k_is_added_only_when_asked() {
        // Sampled "z" at −4 is not in top = {−1, −2}: without the switch C = 3 / 2 = 1.5; with
        // it the entries are −1, −2, −4: C = 7 / 3.
        let t = tok("z", -4.0, &[("a", -1.0), ("b", -2.0)]);
        assert_eq!(token_confidence(&t, false), Some(1.5));
        assert!(close(
            token_confidence(&t, true).expect("scored"),
            7.0 / 3.0
        ));
        // Sampled token inside the top-k: nothing is added.
        let inside = tok("a", -1.0, &[("a", -1.0), ("b", -2.0)]);
        assert_eq!(token_confidence(&inside, true), Some(1.5));
    }

    #[test]
    fn groups_slide_with_stride_one() {
        // C = 1, 2, 3, 4, 5 with n = 3: windows (1+2+3)/3 = 2, (2+3+4)/3 = 3, (3+4+5)/3 = 4.
        let g = group_confidences(&[1.0, 2.0, 3.0, 4.0, 5.0], 3);
        assert_eq!(g.len(), 3);
        assert!(close(g[0], 2.0) && close(g[1], 3.0) && close(g[2], 4.0));
        // T = n: one group, the mean.
        assert_eq!(group_confidences(&[1.0, 3.0], 2), vec![2.0]);
        // T < n: one group, the mean (1 + 2 + 6) / 3 = 3.
        assert_eq!(group_confidences(&[1.0, 2.0, 6.0], 2048), vec![3.0]);
        // T = 0: no group.
        assert!(group_confidences(&[], 4).is_empty());
    }

    #[test]
    fn trace_measures_by_hand() {
        // C = 5, 5, 1, 1, 5, 5, 5, 5, 5, 5, 5, 5 (T = 12), n = 2.
        // Groups (11): 5, 3, 1, 3, 5, 5, 5, 5, 5, 5, 5.
        // lowest = 1; bottom 10%: max(1, ⌊1.1⌋) = 1 group → 1;
        // mean = (10 · 5 + 2 · 1) / 12 = 52 / 12; tail (T < 2048) = mean.
        let c = [5.0, 5.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0];
        let m = TraceConfidence::compute(&c, 2).expect("scored");
        assert_eq!(m.tokens, 12);
        assert!(close(m.lowest_group, 1.0));
        assert!(close(m.bottom_10_group, 1.0));
        assert!(close(m.mean, 52.0 / 12.0));
        assert!(close(m.tail, 52.0 / 12.0));
        assert_eq!(m.get(ConfidenceMetric::LowestGroup), m.lowest_group);
        assert_eq!(m.get(ConfidenceMetric::Mean), m.mean);
        // Unscored trace.
        assert_eq!(TraceConfidence::compute(&[], 2), None);
        // T < n: every measure is the mean: (2 + 4) / 2 = 3.
        let short = TraceConfidence::compute(&[2.0, 4.0], 2048).expect("scored");
        assert_eq!(
            (
                short.mean,
                short.lowest_group,
                short.bottom_10_group,
                short.tail
            ),
            (3.0, 3.0, 3.0, 3.0)
        );
    }

    #[test]
    fn bottom_ten_percent_averages_the_lowest_tenth() {
        // 25 groups → ⌊2.5⌋ = 2 lowest: values 0..=24 → (0 + 1) / 2 = 0.5.
        let g: Vec<f64> = (0..25).rev().map(f64::from).collect();
        assert_eq!(bottom_10_percent(&g), Some(0.5));
        // 9 groups → max(1, 0) = 1 → the minimum, 3.
        assert_eq!(
            bottom_10_percent(&[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 3.5, 4.5]),
            Some(3.0)
        );
        assert_eq!(bottom_10_percent(&[]), None);
    }

    #[test]
    fn tail_covers_the_last_2048_tokens() {
        // 100 tokens of 1 then 2048 tokens of 3: tail = 3, mean = (100 + 6144) / 2148.
        let mut c = vec![1.0; 100];
        c.extend(std::iter::repeat_n(3.0, TAIL_TOKENS));
        let m = TraceConfidence::compute(&c, 2048).expect("scored");
        assert!(close(m.tail, 3.0));
        assert!(close(m.mean, 6244.0 / 2148.0));
        // Lowest window: the first 2048 tokens, (100 · 1 + 1948 · 3) / 2048 = 5944 / 2048.
        assert!(close(m.lowest_group, 5944.0 / 2048.0));
    }

    fn check_pct(values: &[f64], q: f64, expected: f64) {
        let got = percentile(values, q).expect("values");
        assert!(
            close(got, expected),
            "pct({values:?}, {q}) = {got}, want {expected}"
        );
    }

    #[test]
    fn percentile_interpolates_linearly_like_numpy() {
        // x = 1, 2, 3, 4: q = 50 → r = 1.5 → 2.5; q = 90 → r = 2.7 → 3.7; q = 10 → r = 0.3 → 1.3.
        check_pct(&[4.0, 1.0, 3.0, 2.0], 50.0, 2.5);
        check_pct(&[1.0, 2.0, 3.0, 4.0], 90.0, 3.7);
        check_pct(&[1.0, 2.0, 3.0, 4.0], 10.0, 1.3);
        check_pct(&[1.0, 2.0, 3.0, 4.0], 0.0, 1.0);
        check_pct(&[1.0, 2.0, 3.0, 4.0], 100.0, 4.0);
        // x = 0, 10, 20, …, 100 (11 values): q = 90 → r = 9 exactly → 90.
        let tens: Vec<f64> = (0..=10).map(|i| f64::from(i) * 10.0).collect();
        check_pct(&tens, 90.0, 90.0);
        check_pct(&[7.0], 37.0, 7.0);
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[f64::NAN], 50.0), None);
    }

    #[test]
    fn top_percent_keeps_the_reference_counts() {
        // η = 10 with distinct values: N = 4 → 1, 8 → 1, 16 → 2, 32 → 4, 512 → 52.
        // (r = 0.9 · (N − 1): 2.7, 6.3, 13.5, 27.9, 459.9; kept = N − ⌈r⌉.)
        for (n, expected) in [(4usize, 1usize), (8, 1), (16, 2), (32, 4), (512, 52)] {
            let conf: Vec<f64> = (0..n).map(|i| ((i * 7919) % n) as f64 * 0.37).collect();
            let f = filter_traces(&conf, TraceFilter::TopPercent(10.0));
            assert_eq!(f.kept.len(), expected, "N = {n}");
            assert!(!f.kept_all_fallback);
        }
        // η = 90 keeps most: N = 10 → r = 0.1 · 9 = 0.9 → keep x_1 … x_9 = 9.
        let conf: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(
            filter_traces(&conf, TraceFilter::TopPercent(90.0))
                .kept
                .len(),
            9
        );
    }

    #[test]
    fn top_k_threshold_none_and_keep_all_fallback() {
        let conf = [3.0, 9.0, 1.0, 9.0, 5.0];
        // Top 2: the two 9s (indices 1 and 3).
        let f = filter_traces(&conf, TraceFilter::TopK(2));
        assert_eq!(f.kept, vec![1, 3]);
        assert_eq!(f.threshold, Some(9.0));
        // Top 3: 9, 9, 5.
        assert_eq!(
            filter_traces(&conf, TraceFilter::TopK(3)).kept,
            vec![1, 3, 4]
        );
        // Threshold 5: 9, 9, 5 (≥ keeps equals).
        assert_eq!(
            filter_traces(&conf, TraceFilter::Threshold(5.0)).kept,
            vec![1, 3, 4]
        );
        assert_eq!(
            filter_traces(&conf, TraceFilter::None).kept,
            vec![0, 1, 2, 3, 4]
        );
        // Nothing reaches 10: everything is kept and flagged.
        let f = filter_traces(&conf, TraceFilter::Threshold(10.0));
        assert_eq!(f.kept, vec![0, 1, 2, 3, 4]);
        assert!(f.kept_all_fallback);
        // Equal values: η = 10 of [2, 2, 2] → s = 2, all kept (ties may keep more).
        assert_eq!(
            filter_traces(&[2.0, 2.0, 2.0], TraceFilter::TopPercent(10.0))
                .kept
                .len(),
            3
        );
        assert!(filter_traces(&[], TraceFilter::TopK(2)).kept.is_empty());
    }

    #[test]
    fn rolling_window_reports_from_the_nth_token() {
        // n = 3 over 1, 2, 3, 10, 10: nothing, nothing, (1+2+3)/3 = 2, (2+3+10)/3 = 5,
        // (3+10+10)/3 = 23/3.
        let mut w = RollingWindow::new(3);
        assert_eq!(w.push(1.0), None);
        assert_eq!(w.push(2.0), None);
        assert!(close(w.push(3.0).expect("full"), 2.0));
        assert!(close(w.push(10.0).expect("full"), 5.0));
        assert!(close(w.push(10.0).expect("full"), 23.0 / 3.0));
        assert_eq!(w.seen(), 5);
        // Agrees with the offline groups on a longer random-looking sequence.
        let c: Vec<f64> = (0..200)
            .map(|i| f64::from((i * 37) % 11) * 0.3 + 0.1)
            .collect();
        let groups = group_confidences(&c, 16);
        let mut w = RollingWindow::new(16);
        let online: Vec<f64> = c.iter().filter_map(|&x| w.push(x)).collect();
        assert_eq!(online.len(), groups.len());
        for (a, b) in online.iter().zip(&groups) {
            assert!((a - b).abs() < 1e-9);
        }
    }
}
