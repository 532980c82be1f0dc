//! Stopping rules of early-stopping self-consistency (reference §1.3): ESC windows, the
//! Adaptive-Consistency Beta and Dirichlet rules, and doubling rounds.
//!
//! Every rule looks at the answers drawn so far (`None` = a trace without an answer) and says
//! whether sampling may stop. Counts are counts of equivalence clusters.

use ponder_answer::{vote, VoteOptions};
use ponder_core::SeededRng;
use serde::Deserialize;

/// Which rule stops sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EarlyStop {
    /// Draw all `n` samples.
    #[default]
    None,
    /// ESC: stop when every answer of a window of `window_size` samples is in one cluster.
    Esc,
    /// Stop when P(the leader stays the leader) ≥ `confidence_threshold` under a Beta model of
    /// the top two clusters.
    Beta,
    /// The same under a Dirichlet model of every cluster (Monte-Carlo, seeded).
    Dirichlet,
    /// Rounds of 2, 4, 8, … samples; stop when the top cluster's share ≥ `threshold`.
    Doubling,
}

impl EarlyStop {
    pub fn as_str(self) -> &'static str {
        match self {
            EarlyStop::None => "none",
            EarlyStop::Esc => "esc",
            EarlyStop::Beta => "beta",
            EarlyStop::Dirichlet => "dirichlet",
            EarlyStop::Doubling => "doubling",
        }
    }
}

/// How samples are dispatched while a rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dispatch {
    /// Windows (ESC), rounds (doubling) or one sample at a time (Beta, Dirichlet); the rule is
    /// checked after each completes. Paper-faithful; fewest wasted tokens.
    SequentialWindows,
    /// Launch all `n` at once, check the rule on every arrival, cancel the rest on a stop.
    /// Keeps the server's batch full; the cancelled traces' partial tokens are spent.
    AllAtOnceCancel,
}

impl Dispatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Dispatch::SequentialWindows => "sequential_windows",
            Dispatch::AllAtOnceCancel => "all_at_once_cancel",
        }
    }
}

/// A rule with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopRule {
    pub kind: EarlyStop,
    pub window_size: usize,
    pub confidence_threshold: f64,
    pub min_samples: usize,
    pub threshold: f64,
    pub dirichlet_draws: u32,
}

impl StopRule {
    /// Size of the next sequential batch after `drawn` samples, capped by `budget`.
    pub fn next_batch(&self, drawn: usize, budget: usize) -> usize {
        let want = match self.kind {
            EarlyStop::None => budget,
            EarlyStop::Esc => self.window_size.max(1),
            EarlyStop::Beta | EarlyStop::Dirichlet => 1,
            EarlyStop::Doubling => {
                if drawn == 0 {
                    2
                } else {
                    drawn
                }
            }
        };
        want.min(budget.saturating_sub(drawn))
    }

    /// Whether sampling may stop, given every answer drawn so far in order, with `rng` for
    /// Monte-Carlo rules. Sequential dispatch calls it after each window or round; ESC looks at
    /// the last `window_size` answers.
    pub fn should_stop(&self, answers: &[Option<String>], rng: &mut SeededRng) -> bool {
        match self.kind {
            EarlyStop::None => false,
            EarlyStop::Esc => {
                let w = self.window_size.max(1);
                answers.len() >= w && one_cluster(&answers[answers.len() - w..])
            }
            EarlyStop::Beta | EarlyStop::Dirichlet => {
                let counts = cluster_counts(answers);
                let eligible: u32 = counts.iter().sum();
                if (eligible as usize) < self.min_samples.max(1) {
                    return false;
                }
                let p = if self.kind == EarlyStop::Beta {
                    let v1 = counts.first().copied().unwrap_or(0);
                    let v2 = counts.get(1).copied().unwrap_or(0);
                    beta_stop_probability(v1, v2)
                } else {
                    dirichlet_stop_probability(&counts, self.dirichlet_draws, rng)
                };
                p >= self.confidence_threshold
            }
            EarlyStop::Doubling => {
                let n = answers.len();
                if n < 2 {
                    return false;
                }
                let top = cluster_counts(answers).first().copied().unwrap_or(0);
                f64::from(top) / n as f64 >= self.threshold
            }
        }
    }

    /// In all-at-once mode: whether the rule is checked after `arrived` of `budget` arrivals.
    pub fn checks_at(&self, arrived: usize, budget: usize) -> bool {
        if arrived < 2 || arrived >= budget {
            return false;
        }
        match self.kind {
            EarlyStop::Doubling => arrived.is_power_of_two(),
            _ => true,
        }
    }
}

/// Vote counts of the clusters, largest first.
fn cluster_counts(answers: &[Option<String>]) -> Vec<u32> {
    let mut rng = SeededRng::new(0);
    let v = vote(answers, None, VoteOptions::default(), &mut rng);
    let mut counts: Vec<u32> = v.clusters.iter().map(|c| c.votes).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts
}

/// Every answer present and all in one cluster.
fn one_cluster(window: &[Option<String>]) -> bool {
    if window.iter().any(Option::is_none) {
        return false;
    }
    cluster_counts(window).len() == 1
}

/// `1 − I_{0.5}(v1 + 1, v2 + 1)`: the probability, under a uniform prior, that the leader's
/// share exceeds one half. For integers, `I_{0.5}(a, b) = P(Binomial(a + b − 1, 1/2) ≥ a)`.
pub fn beta_stop_probability(v1: u32, v2: u32) -> f64 {
    let a = u64::from(v1) + 1;
    // n = a + b − 1 with b = v2 + 1; the tail Σ_{j=a}^{n} C(n, j) / 2^n is summed in log space
    // so that large counts stay finite.
    let n = u64::from(v1) + u64::from(v2) + 1;
    let ln_2n = n as f64 * std::f64::consts::LN_2;
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for j in 0..=n {
        if j > 0 {
            ln_choose += ((n - j + 1) as f64).ln() - (j as f64).ln();
        }
        if j >= a {
            tail += (ln_choose - ln_2n).exp();
        }
    }
    (1.0 - tail).clamp(0.0, 1.0)
}

/// Monte-Carlo estimate of P(the leader's probability exceeds every other cluster's) under
/// Dirichlet(counts + 1), from `draws` samples of `rng`.
pub fn dirichlet_stop_probability(counts: &[u32], draws: u32, rng: &mut SeededRng) -> f64 {
    match counts.len() {
        0 => return 0.0,
        1 => return beta_stop_probability(counts[0], 0).max(0.0),
        _ => {}
    }
    let draws = draws.max(1);
    let mut wins = 0u32;
    let mut sample = vec![0.0f64; counts.len()];
    for _ in 0..draws {
        for (s, &c) in sample.iter_mut().zip(counts) {
            *s = gamma_integer(c + 1, rng);
        }
        // counts are sorted, so cluster 0 is the leader.
        if sample[1..].iter().all(|&x| sample[0] > x) {
            wins += 1;
        }
    }
    f64::from(wins) / f64::from(draws)
}

/// A Gamma(shape, 1) draw for an integer shape: the sum of `shape` unit exponentials.
fn gamma_integer(shape: u32, rng: &mut SeededRng) -> f64 {
    (0..shape)
        .map(|_| -(1.0 - rng.next_f64()).max(f64::MIN_POSITIVE).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[&str]) -> Vec<Option<String>> {
        list.iter()
            .map(|a| (!a.is_empty()).then(|| a.to_string()))
            .collect()
    }

    fn rule(kind: EarlyStop) -> StopRule {
        StopRule {
            kind,
            window_size: 5,
            confidence_threshold: 0.95,
            min_samples: 2,
            threshold: 0.75,
            dirichlet_draws: 1024,
        }
    }

    #[test]
    fn beta_rule_matches_the_reference_golden_values() {
        // (v1, v2) → 1 − I_0.5(v1+1, v2+1); e.g. (3, 0): 1 − C(4,4)/2^4 = 15/16.
        let cases = [
            (3, 0, 0.9375),
            (4, 0, 0.96875),
            (4, 1, 0.890625),
            (5, 1, 0.9375),
            (6, 1, 0.96484375),
            (7, 2, 0.9453125),
            (8, 2, 0.96728515625),
        ];
        for (v1, v2, want) in cases {
            let got = beta_stop_probability(v1, v2);
            assert!((got - want).abs() < 1e-12, "({v1},{v2}): {got} vs {want}");
        }
        // A tie is a coin flip; huge counts stay finite.
        assert!((beta_stop_probability(3, 3) - 0.5).abs() < 1e-12);
        let big = beta_stop_probability(5000, 4000);
        assert!(big > 0.999 && big <= 1.0, "{big}");
    }

    #[test]
    fn beta_rule_stops_at_the_documented_points() {
        let r = rule(EarlyStop::Beta);
        let mut rng = SeededRng::new(0);
        assert!(!r.should_stop(&answers(&["4", "4", "4"]), &mut rng)); // 0.9375
        assert!(r.should_stop(&answers(&["4", "4", "4", "4"]), &mut rng)); // 0.96875
        assert!(!r.should_stop(&answers(&["4", "4", "4", "4", "4", "2"]), &mut rng)); // 0.9375
        assert!(r.should_stop(&answers(&["4", "4", "4", "4", "4", "4", "2"]), &mut rng));
        // Traces without an answer are not counted: 3 eligible of 5.
        assert!(!r.should_stop(&answers(&["4", "", "4", "", "4.0"]), &mut rng));
    }

    #[test]
    fn dirichlet_agrees_with_beta_for_two_clusters() {
        // With two clusters, P(p1 > p2) under Dirichlet(v1+1, v2+1) is the Beta rule's value.
        let mut rng = SeededRng::new(7);
        let mc = dirichlet_stop_probability(&[6, 1], 20_000, &mut rng);
        assert!((mc - 0.96484375).abs() < 0.01, "{mc}");
        let mut rng = SeededRng::new(7);
        let again = dirichlet_stop_probability(&[6, 1], 20_000, &mut rng);
        assert_eq!(mc, again, "seeded");
        // Three clusters: the leader must beat both.
        let mut rng = SeededRng::new(1);
        let three = dirichlet_stop_probability(&[6, 1, 1], 20_000, &mut rng);
        assert!(three < mc);
    }

    #[test]
    fn esc_needs_a_whole_agreeing_window() {
        let r = rule(EarlyStop::Esc);
        let mut rng = SeededRng::new(0);
        assert!(r.should_stop(&answers(&["1", "1", "1", "1", "1.0"]), &mut rng));
        assert!(!r.should_stop(&answers(&["1", "1", "1", "1", "2"]), &mut rng));
        assert!(!r.should_stop(&answers(&["1", "1", "1", "1", ""]), &mut rng));
        // The second window agrees although the first did not.
        let ten = answers(&["1", "2", "1", "1", "1", "3", "3", "3", "3", "3"]);
        assert!(r.should_stop(&ten, &mut rng));
        assert!(!r.should_stop(&ten[..4], &mut rng), "fewer than a window");
        assert_eq!(r.next_batch(0, 12), 5);
        assert_eq!(r.next_batch(10, 12), 2);
    }

    #[test]
    fn doubling_rounds_and_share() {
        let r = rule(EarlyStop::Doubling);
        assert_eq!(
            [0, 2, 4, 8, 16].map(|d| r.next_batch(d, 20)),
            [2, 2, 4, 8, 4]
        );
        let mut rng = SeededRng::new(0);
        // 3 of 4 = 0.75 ≥ 0.75 stops; 2 of 4 does not; no-answer traces count in the share.
        assert!(r.should_stop(&answers(&["5", "5", "5", "6"]), &mut rng));
        assert!(!r.should_stop(&answers(&["5", "5", "6", "7"]), &mut rng));
        assert!(r.should_stop(&answers(&["5", "5", "5", ""]), &mut rng));
        assert!(!r.should_stop(&answers(&["5", "5", "", ""]), &mut rng));
        assert!(r.should_stop(&answers(&["5", "5"]), &mut rng));
        assert!(r.checks_at(4, 16) && !r.checks_at(5, 16) && !r.checks_at(16, 16));
    }
}
