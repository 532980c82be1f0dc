//! Summaries of a run, computed from its records alone ([`summarize`]): accuracy with a 95%
//! Wilson score interval, pass@k, majority@k, tokens, requests and latency percentiles.

use std::collections::BTreeMap;

use ponder_answer::{equivalent, is_correct};
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// Version of `summary.json`.
pub const SUMMARY_VERSION: u32 = 1;

/// z for a two-sided 95% interval (the 0.975 quantile of the standard normal).
const Z95: f64 = 1.959_963_984_540_054;

/// Latency over problems, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub mean: f64,
    pub max: f64,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub version: u32,
    pub problems: usize,
    pub correct: usize,
    /// Problems whose strategy failed (counted as incorrect).
    pub failed: usize,
    /// Problems where the strategy chose no answer (failures excluded).
    pub no_answer: usize,
    /// `correct / problems`, in [0, 1] (0 for an empty run).
    pub accuracy: f64,
    /// 95% confidence interval of the accuracy, `[low, high]`.
    pub accuracy_ci95: [f64; 2],
    /// How the interval is computed: always `wilson` (Wilson score interval).
    pub ci_method: String,
    /// Fewest candidates any non-failed problem has; pass@k and maj@k are given for k = 1, 2,
    /// 4, … up to it, and for it. `None` when no problem has a candidate.
    pub samples_per_problem: Option<usize>,
    /// Unbiased pass@k (Chen et al., 2021), averaged over problems; failures count 0.
    pub pass_at_k: BTreeMap<usize, f64>,
    /// Majority vote over the first k candidates' answers (equivalent answers grouped, ties to
    /// the answer seen first), averaged over problems; failures count 0.
    pub maj_at_k: BTreeMap<usize, f64>,
    pub prompt_tokens_per_problem: f64,
    pub completion_tokens_per_problem: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub requests: u64,
    pub retries: u64,
    /// Generations stopped early.
    pub aborted: u64,
    /// Per-problem wall time.
    pub latency_ms: Latency,
    /// Wall time of the invocation that wrote this summary (a resumed run counts only its own
    /// session; merged shards take the longest shard). `None` when computed from records alone.
    pub wall_ms: Option<u64>,
}

/// The Wilson score interval for `successes` out of `n` at normal quantile `z`; `[0, 1]` for
/// `n = 0`.
pub fn wilson_interval(successes: usize, n: usize, z: f64) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let n_f = n as f64;
    let p = successes.min(n) as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let center = (p + z2 / (2.0 * n_f)) / denom;
    let half = z / denom * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    // At p̂ = 0 or 1 the bound is exactly 0 or 1; rounding would leave 1e-17 off.
    let lo = if successes == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let hi = if successes >= n {
        1.0
    } else {
        (center + half).min(1.0)
    };
    [lo, hi]
}

/// Unbiased pass@k of one problem with `n` samples of which `c` are correct:
/// `1 − C(n−c, k) / C(n, k)`, computed as `1 − Π_{i=n−c+1}^{n} (1 − k/i)` so that no binomial
/// coefficient is formed. `k > n` is treated as `k = n`; `n = 0` gives 0.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    let c = c.min(n);
    let k = k.min(n);
    if n == 0 || c == 0 || k == 0 {
        return 0.0;
    }
    if n - c < k {
        return 1.0;
    }
    let mut miss = 1.0;
    for i in (n - c + 1)..=n {
        miss *= 1.0 - k as f64 / i as f64;
    }
    1.0 - miss
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `values` by linear interpolation between closest ranks
/// (position `q·(n−1)` in sorted order, as numpy's default); 0 for no values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    v[lo] + (v[hi] - v[lo]) * frac
}

/// The k values reported for `k_max` samples: 1, 2, 4, … below `k_max`, and `k_max`.
pub fn k_values(k_max: usize) -> Vec<usize> {
    let mut ks = Vec::new();
    let mut k = 1;
    while k < k_max {
        ks.push(k);
        k *= 2;
    }
    if k_max > 0 {
        ks.push(k_max);
    }
    ks
}

/// Whether a majority vote over the first `k` answers is correct, for each `k` in `ks`.
/// Answers are grouped by equivalence with each group's first member; the group with the most
/// votes wins and a tie goes to the group seen first; no answer at all is incorrect.
pub fn majority_correct(answers: &[Option<String>], gold: &str, ks: &[usize]) -> Vec<bool> {
    // (representative, votes, is it correct)
    let mut clusters: Vec<(&str, usize, Option<bool>)> = Vec::new();
    let mut out = Vec::with_capacity(ks.len());
    let mut ks_iter = ks.iter().peekable();
    for (i, a) in answers.iter().enumerate() {
        if let Some(a) = a.as_deref() {
            match clusters.iter_mut().find(|(rep, _, _)| equivalent(rep, a)) {
                Some(c) => c.1 += 1,
                None => clusters.push((a, 1, None)),
            }
        }
        while ks_iter.peek().is_some_and(|k| **k == i + 1) {
            ks_iter.next();
            out.push(winner_correct(&mut clusters, gold));
        }
    }
    // Any k beyond the number of answers votes over all of them.
    for _ in ks_iter {
        out.push(winner_correct(&mut clusters, gold));
    }
    out
}

fn winner_correct(clusters: &mut [(&str, usize, Option<bool>)], gold: &str) -> bool {
    let mut best: Option<usize> = None;
    for (i, c) in clusters.iter().enumerate() {
        if best.is_none_or(|b| c.1 > clusters[b].1) {
            best = Some(i);
        }
    }
    match best {
        Some(b) => {
            let c = &mut clusters[b];
            *c.2.get_or_insert_with(|| is_correct(gold, c.0))
        }
        None => false,
    }
}

/// The summary of `records` (assumed to have distinct ids). `wall_ms` is left `None`.
pub fn summarize(records: &[Record]) -> Summary {
    let n = records.len();
    let correct = records.iter().filter(|r| r.correct).count();
    let failed = records.iter().filter(|r| r.error.is_some()).count();
    let no_answer = records
        .iter()
        .filter(|r| r.error.is_none() && r.answer.is_none())
        .count();
    let k_max = records
        .iter()
        .filter(|r| !r.candidates.is_empty())
        .map(|r| r.candidates.len())
        .min();
    let ks = k_values(k_max.unwrap_or(0));
    let mut pass = vec![0.0; ks.len()];
    let mut maj = vec![0.0; ks.len()];
    for r in records {
        let m = r.candidates.len();
        if m == 0 {
            continue;
        }
        let c = (0..m).filter(|i| r.candidate_correct(*i)).count();
        for (slot, k) in pass.iter_mut().zip(&ks) {
            *slot += pass_at_k(m, c, *k);
        }
        let answers: Vec<Option<String>> = r.candidates.iter().map(|c| c.answer.clone()).collect();
        for (slot, ok) in maj.iter_mut().zip(majority_correct(&answers, &r.gold, &ks)) {
            *slot += f64::from(u8::from(ok));
        }
    }
    let per = |total: f64| if n == 0 { 0.0 } else { total / n as f64 };
    let sum = |f: fn(&Record) -> u64| records.iter().map(f).sum::<u64>();
    let prompt_tokens = sum(|r| r.usage.prompt_tokens);
    let completion_tokens = sum(|r| r.usage.completion_tokens);
    let latencies: Vec<f64> = records.iter().map(|r| r.elapsed_ms as f64).collect();
    Summary {
        version: SUMMARY_VERSION,
        problems: n,
        correct,
        failed,
        no_answer,
        accuracy: per(correct as f64),
        accuracy_ci95: wilson_interval(correct, n, Z95),
        ci_method: "wilson".to_string(),
        samples_per_problem: k_max,
        pass_at_k: ks.iter().zip(&pass).map(|(k, v)| (*k, per(*v))).collect(),
        maj_at_k: ks.iter().zip(&maj).map(|(k, v)| (*k, per(*v))).collect(),
        prompt_tokens_per_problem: per(prompt_tokens as f64),
        completion_tokens_per_problem: per(completion_tokens as f64),
        prompt_tokens,
        completion_tokens,
        requests: sum(|r| r.usage.requests),
        retries: sum(|r| r.usage.retries),
        aborted: sum(|r| r.usage.aborted),
        latency_ms: Latency {
            p50: percentile(&latencies, 0.5),
            p95: percentile(&latencies, 0.95),
            mean: per(latencies.iter().sum()),
            max: latencies.iter().copied().fold(0.0, f64::max),
        },
        wall_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordCandidate, RecordUsage};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_interval_matches_hand_worked_values() {
        // 80 of 100, z = 1.96: p = 0.8, z²/n = 0.0384146;
        // centre = (0.8 + 0.0192073) / 1.0384146 = 0.788902;
        // half = 1.959964 / 1.0384146 · sqrt(0.0016 + 0.0000960365) = 1.887459 · 0.0411830
        //      = 0.077731; interval [0.711171, 0.866633].
        let [lo, hi] = wilson_interval(80, 100, Z95);
        assert!(close(lo, 0.711171, 1e-5), "{lo}");
        assert!(close(hi, 0.866633, 1e-5), "{hi}");
        // 0 of 10: centre = (0 + 0.192073) / 1.384146 = 0.138766, half the same: [0, 0.277533].
        let [lo, hi] = wilson_interval(0, 10, Z95);
        assert_eq!(lo, 0.0);
        assert!(close(hi, 0.277533, 1e-5), "{hi}");
        // 10 of 10 mirrors it.
        let [lo, hi] = wilson_interval(10, 10, Z95);
        assert!(close(lo, 1.0 - 0.277533, 1e-5), "{lo}");
        assert_eq!(hi, 1.0);
        assert_eq!(wilson_interval(0, 0, Z95), [0.0, 1.0]);
    }

    #[test]
    fn pass_at_k_matches_binomial_ratios() {
        // n = 4, c = 1, k = 2: 1 − C(3,2)/C(4,2) = 1 − 3/6 = 0.5.
        assert!(close(pass_at_k(4, 1, 2), 0.5, 1e-12));
        // n = 5, c = 2, k = 3: 1 − C(3,3)/C(5,3) = 1 − 1/10 = 0.9.
        assert!(close(pass_at_k(5, 2, 3), 0.9, 1e-12));
        // n = 10, c = 3, k = 1: 3/10.
        assert!(close(pass_at_k(10, 3, 1), 0.3, 1e-12));
        // n = 10, c = 3, k = 8: n − c = 7 < 8, so every 8-subset holds a correct one.
        assert_eq!(pass_at_k(10, 3, 8), 1.0);
        assert_eq!(pass_at_k(8, 0, 4), 0.0);
        assert_eq!(pass_at_k(0, 0, 1), 0.0);
        // Large n stays finite: n = 1000, c = 1, k = 10 → 10/1000.
        assert!(close(pass_at_k(1000, 1, 10), 0.01, 1e-12));
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        // p50: position 0.5 · 9 = 4.5 → between 5 and 6 → 5.5.
        assert!(close(percentile(&v, 0.5), 5.5, 1e-12));
        // p95: position 8.55 → 9 + 0.55 · (10 − 9) = 9.55.
        assert!(close(percentile(&v, 0.95), 9.55, 1e-12));
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn k_values_are_powers_of_two_and_the_maximum() {
        assert_eq!(k_values(8), [1, 2, 4, 8]);
        assert_eq!(k_values(6), [1, 2, 4, 6]);
        assert_eq!(k_values(1), [1]);
        assert!(k_values(0).is_empty());
    }

    fn answers(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|a| a.map(str::to_string)).collect()
    }

    #[test]
    fn majority_at_k_votes_over_prefixes() {
        // Gold 5. Answers: 3, 5, 5.0, 3, 3, none.
        // k=1: {3:1} → 3, wrong. k=2: {3:1, 5:1} tie → 3 (seen first), wrong.
        // k=4: {3:2, 5:2} tie → 3, wrong. k=6: {3:3, 5:2} → 3, wrong.
        // k=3: {3:1, 5:2} → 5, right.
        let a = answers(&[
            Some("3"),
            Some("5"),
            Some("5.0"),
            Some("3"),
            Some("3"),
            None,
        ]);
        assert_eq!(
            majority_correct(&a, "5", &[1, 2, 3, 4, 6]),
            [false, false, true, false, false]
        );
        // No answers at all: wrong at every k; k beyond the list votes over all of it.
        assert_eq!(
            majority_correct(&answers(&[None, None]), "1", &[1, 2, 4]),
            [false; 3]
        );
        assert_eq!(
            majority_correct(&answers(&[Some("1")]), "1", &[1, 2]),
            [true, true]
        );
    }

    fn record(id: &str, correct: bool, answers: &[(&str, bool)], ms: u64) -> Record {
        Record {
            id: id.into(),
            index: 0,
            gold: "1".into(),
            question: String::new(),
            candidates: answers
                .iter()
                .map(|(a, ok)| RecordCandidate {
                    text: String::new(),
                    answer: Some(a.to_string()),
                    votes: None,
                    score: None,
                    finish_reason: "stop".into(),
                    completion_tokens: None,
                    correct: Some(*ok),
                })
                .collect(),
            answer: Some("1".into()),
            selected: None,
            correct,
            usage: RecordUsage {
                requests: 1,
                prompt_tokens: 10,
                completion_tokens: 100,
                ..Default::default()
            },
            seed: 0,
            elapsed_ms: ms,
            error: None,
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn summary_of_hand_made_records() {
        let mut failed = record("c", false, &[], 30);
        failed.error = Some("boom".into());
        failed.usage = RecordUsage::default();
        failed.answer = None;
        let records = vec![
            // 1 of 2 correct: pass@1 = 0.5, pass@2 = 1; maj@1 = "1" ok, maj@2 tie → "1" ok.
            record("a", true, &[("1", true), ("2", false)], 10),
            // 0 of 2: pass 0; maj wrong.
            record("b", false, &[("2", false), ("3", false)], 20),
            failed,
        ];
        let s = summarize(&records);
        assert_eq!((s.problems, s.correct, s.failed, s.no_answer), (3, 1, 1, 0));
        assert!(close(s.accuracy, 1.0 / 3.0, 1e-12));
        assert_eq!(s.samples_per_problem, Some(2));
        // pass@1 = (0.5 + 0 + 0) / 3, pass@2 = (1 + 0 + 0) / 3.
        assert!(close(s.pass_at_k[&1], 0.5 / 3.0, 1e-12));
        assert!(close(s.pass_at_k[&2], 1.0 / 3.0, 1e-12));
        assert!(close(s.maj_at_k[&1], 1.0 / 3.0, 1e-12));
        assert!(close(s.maj_at_k[&2], 1.0 / 3.0, 1e-12));
        assert!(close(s.completion_tokens_per_problem, 200.0 / 3.0, 1e-9));
        assert_eq!(s.requests, 2);
        assert!(close(s.latency_ms.p50, 20.0, 1e-12));
        // p95: position 1.9 → 20 + 0.9 · 10 = 29.
        assert!(close(s.latency_ms.p95, 29.0, 1e-12));
        let json = serde_json::to_value(&s).expect("serialises");
        assert_eq!(json["pass_at_k"]["2"], serde_json::json!(1.0 / 3.0));
        assert_eq!(json["ci_method"], "wilson");
    }

    #[test]
    fn empty_summary_is_well_defined() {
        let s = summarize(&[]);
        assert_eq!(s.accuracy, 0.0);
        assert_eq!(s.accuracy_ci95, [0.0, 1.0]);
        assert!(s.pass_at_k.is_empty());
    }
}
