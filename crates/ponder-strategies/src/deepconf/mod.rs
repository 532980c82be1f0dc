//! DeepConf (Fu et al., arXiv 2508.15260; reference §1.4): confidence-filtered,
//! confidence-weighted voting over sampled traces.
//!
//! * [`confidence`]: the measures (token, group, bottom-10%, lowest group, tail, mean), the
//!   percentile and the trace filters. Pure maths.
//! * [`offline`]: `deepconf` — sample the whole budget, keep the most confident traces, vote.
//! * [`online`]: `deepconf-online` — warm-up traces set a threshold, then streamed traces are
//!   stopped client-side as soon as their window confidence falls below it, and sampling ends
//!   once the weighted vote reaches a consensus.

pub mod confidence;
pub mod offline;
pub mod online;

use ponder_answer::{vote, TieBreak, VoteOptions};
use ponder_core::SeededRng;

pub use confidence::{
    filter_traces, percentile, ConfidenceMetric, RollingWindow, TraceConfidence, TraceFilter,
};
pub use offline::{DeepConf, DeepConfConfig, DeepConfFactory, VoteMode};
pub use online::{
    DeepConfOnline, DeepConfOnlineConfig, DeepConfOnlineFactory, Variant, WarmupVote,
};

/// One answer cluster of a DeepConf vote.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tally {
    pub representative: String,
    /// Every answered trace of the cluster, voting or not.
    pub members: Vec<usize>,
    /// The members that vote.
    pub voters: Vec<usize>,
    /// `V(a)`: the summed weight of the voters.
    pub weight: f64,
}

/// The result of a weighted vote over traces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WeightedVote {
    pub clusters: Vec<Tally>,
    /// Index into `clusters`; `None` when nobody voted.
    pub winner: Option<usize>,
    /// Answered traces (voting or not).
    pub answered: usize,
    /// `Σ_a V(a)`.
    pub total_weight: f64,
    /// The weights were all zero, so every voter counted 1 (DeepConf skips all-zero weightings).
    pub zero_weights: bool,
}

impl WeightedVote {
    /// Clusters the answered traces (`answers[i]`) by equivalence; trace `i` votes with
    /// `weights[i]` when it is `Some`. Winner: largest `V(a)`, then more voters, then the cluster
    /// seen first (§1.4.2 step 7). When every voter's weight is 0 the voters count 1 each.
    pub fn count(answers: &[Option<String>], weights: &[Option<f64>], seed: u64) -> WeightedVote {
        let voters: Vec<bool> = (0..answers.len())
            .map(|i| answers[i].is_some() && weights.get(i).copied().flatten().is_some())
            .collect();
        let raw: Vec<f64> = (0..answers.len())
            .map(|i| match weights.get(i).copied().flatten() {
                Some(w) if voters[i] && w.is_finite() && w > 0.0 => w,
                _ => 0.0,
            })
            .collect();
        let zero_weights = voters.iter().any(|v| *v) && raw.iter().all(|w| *w == 0.0);
        let used: Vec<f64> = if zero_weights {
            voters.iter().map(|v| if *v { 1.0 } else { 0.0 }).collect()
        } else {
            raw
        };
        // The clustering is ponder-answer's; the winner rule is DeepConf's own (below).
        let mut rng = SeededRng::derive(seed, "deepconf/vote");
        let clustered = vote(
            answers,
            Some(&used),
            VoteOptions {
                weighted: true,
                tie_break: TieBreak::First,
            },
            &mut rng,
        );
        let clusters: Vec<Tally> = clustered
            .clusters
            .iter()
            .map(|c| Tally {
                representative: c.representative.clone(),
                members: c.members.clone(),
                voters: c.members.iter().copied().filter(|&i| voters[i]).collect(),
                weight: c.members.iter().map(|&i| used[i]).sum(),
            })
            .collect();
        let mut winner: Option<usize> = None;
        for (k, c) in clusters.iter().enumerate() {
            if c.voters.is_empty() {
                continue;
            }
            let better = match winner {
                None => true,
                Some(w) => {
                    let best = &clusters[w];
                    c.weight > best.weight
                        || (c.weight == best.weight && c.voters.len() > best.voters.len())
                }
            };
            if better {
                winner = Some(k);
            }
        }
        WeightedVote {
            total_weight: clusters.iter().map(|c| c.weight).sum(),
            answered: answers.iter().filter(|a| a.is_some()).count(),
            clusters,
            winner,
            zero_weights,
        }
    }

    pub fn winning(&self) -> Option<&Tally> {
        self.winner.map(|w| &self.clusters[w])
    }

    /// `β = V(â) / Σ_a V(a)`; 0 when nobody voted.
    pub fn beta(&self) -> f64 {
        match self.winning() {
            Some(c) if self.total_weight > 0.0 => c.weight / self.total_weight,
            _ => 0.0,
        }
    }

    /// Largest cluster (all answered traces) over the number of answered traces.
    pub fn agreement_rate(&self) -> f64 {
        let largest = self.clusters.iter().map(|c| c.members.len()).max();
        match largest {
            Some(l) if self.answered > 0 => l as f64 / self.answered as f64,
            _ => 0.0,
        }
    }

    /// Voters in the cluster of trace `i`, when trace `i` votes.
    pub fn votes_of(&self, i: usize) -> Option<u32> {
        self.clusters
            .iter()
            .find(|c| c.voters.contains(&i))
            .map(|c| c.voters.len() as u32)
    }

    /// The winning cluster's voter with the highest `score` (earliest among equals).
    pub fn selected(&self, score: impl Fn(usize) -> f64) -> Option<usize> {
        let c = self.winning()?;
        let mut best: Option<usize> = None;
        for &i in &c.voters {
            if best.is_none_or(|b| score(i) > score(b)) {
                best = Some(i);
            }
        }
        best
    }

    /// `vote_distribution`: per cluster with voters, `V(a) / Σ V` and the raw numbers.
    pub fn distribution(&self) -> serde_json::Value {
        let total = self.total_weight;
        serde_json::Value::Array(
            self.clusters
                .iter()
                .filter(|c| !c.voters.is_empty())
                .map(|c| {
                    serde_json::json!({
                        "answer": c.representative,
                        "share": if total > 0.0 { c.weight / total } else { 0.0 },
                        "weight": c.weight,
                        "votes": c.voters.len(),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|a| a.map(str::to_string)).collect()
    }

    #[test]
    fn weighted_vote_by_hand() {
        // Traces: 7 (w 3), 5 (w 1), 5 (w 1.5), none, 7 (not voting), 5 (w 1).
        // V(7) = 3, V(5) = 1 + 1.5 + 1 = 3.5 → 5 wins; β = 3.5 / 6.5.
        // Agreement: answered = 5, largest cluster (5) has 3 members → 0.6.
        let a = answers(&[
            Some("7"),
            Some("5"),
            Some("5.0"),
            None,
            Some("7"),
            Some("5"),
        ]);
        let w = [Some(3.0), Some(1.0), Some(1.5), Some(9.0), None, Some(1.0)];
        let v = WeightedVote::count(&a, &w, 0);
        let win = v.winning().expect("a winner");
        assert_eq!(win.representative, "5");
        assert_eq!(win.voters, vec![1, 2, 5]);
        assert!((v.beta() - 3.5 / 6.5).abs() < 1e-12);
        assert!((v.agreement_rate() - 0.6).abs() < 1e-12);
        assert_eq!(v.votes_of(0), Some(1));
        assert_eq!(
            v.votes_of(4),
            None,
            "a trace that does not vote has no votes"
        );
        assert_eq!(v.votes_of(3), None);
        // Highest-weight voter of the winning cluster: trace 2 (1.5).
        assert_eq!(v.selected(|i| w[i].unwrap_or(0.0)), Some(2));
    }

    #[test]
    fn ties_go_to_more_voters_then_first_seen() {
        // V(1) = 2 (one trace), V(2) = 1 + 1 = 2 (two traces) → 2 wins on voters.
        let a = answers(&[Some("1"), Some("2"), Some("2")]);
        let v = WeightedVote::count(&a, &[Some(2.0), Some(1.0), Some(1.0)], 0);
        assert_eq!(v.winning().map(|c| c.representative.as_str()), Some("2"));
        // V(1) = V(2) = 1, one voter each → first seen (1).
        let a = answers(&[Some("1"), Some("2")]);
        let v = WeightedVote::count(&a, &[Some(1.0), Some(1.0)], 0);
        assert_eq!(v.winning().map(|c| c.representative.as_str()), Some("1"));
        assert_eq!(v.beta(), 0.5);
    }

    #[test]
    fn all_zero_weights_count_one_each_and_nobody_voting_has_no_winner() {
        let a = answers(&[Some("1"), Some("2"), Some("2")]);
        let v = WeightedVote::count(&a, &[Some(0.0), Some(0.0), Some(0.0)], 0);
        assert!(v.zero_weights);
        assert_eq!(v.winning().map(|c| c.representative.as_str()), Some("2"));
        let v = WeightedVote::count(&a, &[None, None, None], 0);
        assert_eq!(v.winner, None);
        assert_eq!(v.beta(), 0.0);
        assert!(!v.zero_weights);
    }
}
