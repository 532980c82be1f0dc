//! Equivalence clustering of answers and voting over the clusters.
//!
//! Clusters are built in trace order; a cluster's representative (its surface form) is its first
//! member. Traces without an answer do not vote unless asked to. Answers are grouped by the math
//! grader's equivalence ([`AnswerKey::equivalent`]); each distinct answer is parsed once, and hash
//! lookups (same text, same canonical form, same exact value) come before any comparison.

use std::collections::HashMap;

use ponder_core::SeededRng;
use serde::{Deserialize, Serialize};

use crate::equivalence::AnswerKey;

/// How ties between clusters with the same number of votes are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    /// Higher total trace score (when traces have scores), then the cluster whose first member
    /// came earliest. The default.
    #[default]
    ScoreThenFirst,
    /// The cluster whose first member came earliest.
    First,
    /// Uniformly among the tied clusters, from the seeded RNG.
    Random,
}

/// A group of equivalent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// The first member's answer, as written.
    pub representative: String,
    /// Trace indices, in order.
    pub members: Vec<usize>,
    /// Number of votes (members).
    pub votes: u32,
    /// Sum of member scores (equals `votes` when traces have no scores).
    pub weight: f64,
}

/// The outcome of a vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub clusters: Vec<Cluster>,
    /// Index into `clusters` of the winner; `None` when no trace had an answer.
    pub winner: Option<usize>,
    /// Traces that voted (had an answer, or all traces with `count_empty`).
    pub voters: u32,
}

impl Vote {
    /// The winning cluster.
    pub fn winning(&self) -> Option<&Cluster> {
        self.winner.map(|w| &self.clusters[w])
    }

    /// Winner's votes over the number of voting traces (0 when nobody voted).
    pub fn consensus(&self) -> f64 {
        match (self.winning(), self.voters) {
            (Some(c), v) if v > 0 => f64::from(c.votes) / f64::from(v),
            _ => 0.0,
        }
    }

    /// The cluster index of trace `trace`, if it voted.
    pub fn cluster_of(&self, trace: usize) -> Option<usize> {
        self.clusters
            .iter()
            .position(|c| c.members.contains(&trace))
    }
}

/// Voting settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VoteOptions {
    /// Weighted vote: clusters are ranked by the sum of member scores instead of their count.
    pub weighted: bool,
    pub tie_break: TieBreak,
}

/// Groups `answers` (one per trace; `None` = no answer) into equivalence clusters and picks the
/// winner. `scores`, when given, has one score per trace (for weighted votes and tie breaks).
pub fn vote(
    answers: &[Option<String>],
    scores: Option<&[f64]>,
    options: VoteOptions,
    rng: &mut SeededRng,
) -> Vote {
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut keys: Vec<AnswerKey> = Vec::new();
    // Cheap keys first: identical answers, equal canonical forms and equal exact
    // values find their cluster by lookup; only the rest are compared with the representatives.
    let mut by_text: HashMap<&str, usize> = HashMap::new();
    let mut by_form: HashMap<String, usize> = HashMap::new();
    let mut by_value: HashMap<(i128, i128), usize> = HashMap::new();
    let mut voters = 0u32;
    for (trace, answer) in answers.iter().enumerate() {
        let Some(answer) = answer else { continue };
        voters += 1;
        let score = scores.and_then(|s| s.get(trace).copied()).unwrap_or(1.0);
        let c = match by_text.get(answer.as_str()) {
            Some(&c) => c,
            None => {
                let key = AnswerKey::new(answer);
                let c = by_form
                    .get(key.canonical())
                    .or_else(|| key.exact_value().and_then(|v| by_value.get(&v)))
                    .copied()
                    .or_else(|| keys.iter().position(|k| k.equivalent(&key)));
                let c = match c {
                    Some(c) => c,
                    None => {
                        keys.push(key.clone());
                        clusters.push(Cluster {
                            representative: answer.clone(),
                            members: Vec::new(),
                            votes: 0,
                            weight: 0.0,
                        });
                        clusters.len() - 1
                    }
                };
                by_form.entry(key.canonical().to_string()).or_insert(c);
                if let Some(v) = key.exact_value() {
                    by_value.entry(v).or_insert(c);
                }
                by_text.insert(answer.as_str(), c);
                c
            }
        };
        clusters[c].members.push(trace);
        clusters[c].votes += 1;
        clusters[c].weight += score;
    }
    let winner = pick(&clusters, options, rng);
    Vote {
        clusters,
        winner,
        voters,
    }
}

fn pick(clusters: &[Cluster], options: VoteOptions, rng: &mut SeededRng) -> Option<usize> {
    let primary = |c: &Cluster| {
        if options.weighted {
            c.weight
        } else {
            f64::from(c.votes)
        }
    };
    let best = clusters
        .iter()
        .map(primary)
        .fold(f64::NEG_INFINITY, f64::max);
    let tied: Vec<usize> = (0..clusters.len())
        .filter(|&i| primary(&clusters[i]) == best)
        .collect();
    match (tied.len(), options.tie_break) {
        (0, _) => None,
        (1, _) => Some(tied[0]),
        // Clusters are in order of first appearance, so the lowest index came first.
        (_, TieBreak::First) => Some(tied[0]),
        (_, TieBreak::Random) => Some(tied[rng.below(tied.len() as u64) as usize]),
        (_, TieBreak::ScoreThenFirst) => {
            let top = tied
                .iter()
                .map(|&i| clusters[i].weight)
                .fold(f64::NEG_INFINITY, f64::max);
            tied.into_iter().find(|&i| clusters[i].weight == top)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|a| a.map(str::to_string)).collect()
    }

    fn winner(
        list: &[Option<&str>],
        scores: Option<&[f64]>,
        options: VoteOptions,
    ) -> Option<String> {
        let v = vote(&answers(list), scores, options, &mut SeededRng::new(0));
        v.winning().map(|c| c.representative.clone())
    }

    #[test]
    fn majority_clusters_equivalent_forms() {
        // 0.5, \frac{1}{2}, 1/2 are one cluster (3 votes) against 2 votes for 3.
        let list = [
            Some("3"),
            Some("0.5"),
            Some("\\frac{1}{2}"),
            Some("3"),
            Some("1/2"),
        ];
        let v = vote(
            &answers(&list),
            None,
            VoteOptions::default(),
            &mut SeededRng::new(0),
        );
        assert_eq!(v.clusters.len(), 2);
        assert_eq!(v.winning().map(|c| c.representative.as_str()), Some("0.5"));
        assert_eq!(v.winning().map(|c| c.members.clone()), Some(vec![1, 2, 4]));
        assert_eq!(v.consensus(), 3.0 / 5.0);
    }

    #[test]
    fn empty_answers_do_not_vote() {
        // Two traces without answers, one with "7": 7 wins with consensus 1/1.
        let list = [None, Some("7"), None];
        let v = vote(
            &answers(&list),
            None,
            VoteOptions::default(),
            &mut SeededRng::new(0),
        );
        assert_eq!(v.voters, 1);
        assert_eq!(v.consensus(), 1.0);
        let none = vote(
            &answers(&[None, None]),
            None,
            VoteOptions::default(),
            &mut SeededRng::new(0),
        );
        assert_eq!(none.winner, None);
        assert_eq!(none.consensus(), 0.0);
    }

    #[test]
    fn ties() {
        let list = [Some("1"), Some("2"), Some("2"), Some("1")];
        // Equal votes, no scores: first appearance wins ("1" came first).
        assert_eq!(
            winner(&list, None, VoteOptions::default()).as_deref(),
            Some("1")
        );
        // Scores: cluster "1" = 0.1 + 0.2 = 0.3, cluster "2" = 0.9 + 0.5 = 1.4 → "2".
        let scores = [0.1, 0.9, 0.5, 0.2];
        assert_eq!(
            winner(&list, Some(&scores), VoteOptions::default()).as_deref(),
            Some("2")
        );
        let first = VoteOptions {
            tie_break: TieBreak::First,
            ..Default::default()
        };
        assert_eq!(winner(&list, Some(&scores), first).as_deref(), Some("1"));
    }

    #[test]
    fn weighted_vote_can_beat_the_majority() {
        // "5" has 2 votes weighing 0.2 + 0.2 = 0.4; "6" has 1 vote weighing 0.9.
        let list = [Some("5"), Some("6"), Some("5")];
        let weighted = VoteOptions {
            weighted: true,
            ..Default::default()
        };
        assert_eq!(
            winner(&list, Some(&[0.2, 0.9, 0.2]), weighted).as_deref(),
            Some("6")
        );
        assert_eq!(
            winner(&list, Some(&[0.2, 0.9, 0.2]), VoteOptions::default()).as_deref(),
            Some("5")
        );
    }

    #[test]
    fn random_ties_are_seeded() {
        let list = [Some("a"), Some("b"), Some("c")];
        let random = VoteOptions {
            tie_break: TieBreak::Random,
            ..Default::default()
        };
        let pick = |seed| vote(&answers(&list), None, random, &mut SeededRng::new(seed)).winner;
        assert_eq!(pick(11), pick(11));
        let seen: std::collections::BTreeSet<_> = (0..64).map(pick).collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn clusters_by_math_equivalence() {
        // (x+1)^2 and x^2+2x+1 are one answer; 1/2 and 0.5 another; (1,2) and (2,1) differ.
        let list = [
            Some("(x+1)^2"),
            Some("x^2+2x+1"),
            Some("\\frac12"),
            Some("0.5"),
            Some("(1,2)"),
            Some("(2,1)"),
        ];
        let v = vote(
            &answers(&list),
            None,
            VoteOptions::default(),
            &mut SeededRng::new(0),
        );
        let members: Vec<Vec<usize>> = v.clusters.iter().map(|c| c.members.clone()).collect();
        assert_eq!(members, vec![vec![0, 1], vec![2, 3], vec![4], vec![5]]);
    }

    #[test]
    fn a_large_vote_stays_fast() {
        // 1,024 answers, 256 distinct symbolic ones among them: parsed once each, compared
        // through cached values.
        let list: Vec<Option<String>> = (0..1024)
            .map(|i| Some(format!("(x+{})^2", i % 256)))
            .collect();
        let start = std::time::Instant::now();
        let v = vote(&list, None, VoteOptions::default(), &mut SeededRng::new(0));
        assert_eq!(v.clusters.len(), 256);
        let limit = if cfg!(debug_assertions) { 10 } else { 1 };
        assert!(start.elapsed() < std::time::Duration::from_secs(limit));
    }
}
