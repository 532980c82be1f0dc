//! The search record: every node a step search generated (a tree rooted at the empty
//! trajectory), with its step text, score, aggregated score, parent and what the search decided
//! about it, plus one record per iteration. It goes into `StrategyOutcome.details["search"]` and
//! `ponder solve --trace FILE.json` writes it out, so a reader can see why an answer won.

use ponder_core::FinishReason;
use serde::Serialize;

use crate::step::detector::CompletionReason;
use crate::step::generator::StepCandidate;
use crate::step::scorer::ScoreCall;

/// What the search decided about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeDecision {
    /// The empty trajectory every search starts from.
    Root,
    /// Generated, not yet decided (a search cut short leaves these).
    Open,
    /// Kept as an active trajectory for the next step.
    Kept,
    /// Not kept: a better-scored sibling or cousin won.
    Pruned,
    /// Dropped as a duplicate of an earlier candidate's text.
    Duplicate,
    /// Its trajectory is complete and went to the pool of finished trajectories.
    Finished,
    /// The end of the trajectory that gave the answer.
    Selected,
    /// Ended a trajectory without answer content; the answer was generated after it instead.
    Replaced,
}

/// One node: a step candidate and where it sits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceNode {
    pub id: usize,
    pub parent: Option<usize>,
    /// Steps from the root (the root is 0).
    pub depth: usize,
    /// The beam, subtree or trajectory the node belongs to.
    pub group: usize,
    /// The step text (lead marker included, the stop string that ended it excluded).
    pub text: String,
    /// The stop string carried into its children.
    pub marker: Option<String>,
    pub score: Option<f64>,
    /// The trajectory's aggregated score at this node, when the strategy aggregates.
    pub aggregated: Option<f64>,
    pub finish_reason: Option<FinishReason>,
    pub completion_reason: Option<CompletionReason>,
    pub trajectory_complete: bool,
    pub completion_tokens: u64,
    /// An answer-phase step (not a reasoning step).
    pub answer_step: bool,
    pub decision: NodeDecision,
}

/// One iteration of a search.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct IterationRecord {
    /// 1-based step number.
    pub step: usize,
    /// The subtree or trajectory this record is about, when the search has several that
    /// advance independently.
    pub group: Option<usize>,
    /// Nodes expanded in this iteration.
    pub expanded: Vec<usize>,
    /// Their new children, in generation order.
    pub children: Vec<usize>,
    /// Children kept active, best first.
    pub kept: Vec<usize>,
    /// Children that completed their trajectory.
    pub finished: Vec<usize>,
    /// Children not kept.
    pub pruned: Vec<usize>,
    pub scoring: Option<ScoreCall>,
    /// Particle filtering: the node each particle continues from after resampling.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resampled: Vec<usize>,
    /// Particle filtering: effective sample size `1 / Σ w²` of the weights before resampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ess: Option<f64>,
}

/// The whole search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchTrace {
    pub strategy: &'static str,
    pub scorer: &'static str,
    pub nodes: Vec<TraceNode>,
    pub iterations: Vec<IterationRecord>,
    /// The node whose trajectory gave the answer.
    pub selected: Option<usize>,
    /// Why the search ended.
    pub stopped: String,
    /// Backend reward calls made by the scorer.
    pub reward_calls: usize,
}

impl SearchTrace {
    pub fn new(strategy: &'static str, scorer: &'static str) -> Self {
        SearchTrace {
            strategy,
            scorer,
            nodes: vec![TraceNode {
                id: 0,
                parent: None,
                depth: 0,
                group: 0,
                text: String::new(),
                marker: None,
                score: None,
                aggregated: None,
                finish_reason: None,
                completion_reason: None,
                trajectory_complete: false,
                completion_tokens: 0,
                answer_step: false,
                decision: NodeDecision::Root,
            }],
            iterations: Vec::new(),
            selected: None,
            stopped: String::new(),
            reward_calls: 0,
        }
    }

    /// Adds a candidate under `parent`; returns its id.
    pub fn add(
        &mut self,
        parent: usize,
        group: usize,
        candidate: &StepCandidate,
        score: Option<f64>,
        aggregated: Option<f64>,
        answer_step: bool,
    ) -> usize {
        let id = self.nodes.len();
        let depth = self.nodes.get(parent).map_or(0, |p| p.depth) + 1;
        self.nodes.push(TraceNode {
            id,
            parent: Some(parent),
            depth,
            group,
            text: candidate.raw_text(),
            marker: candidate.marker.clone(),
            score,
            aggregated,
            finish_reason: Some(candidate.finish_reason),
            completion_reason: candidate.end.reason,
            trajectory_complete: candidate.end.is_trajectory_complete,
            completion_tokens: candidate.completion_tokens,
            answer_step,
            decision: NodeDecision::Open,
        });
        id
    }

    pub fn decide(&mut self, id: usize, decision: NodeDecision) {
        if let Some(node) = self.nodes.get_mut(id) {
            node.decision = decision;
        }
    }

    /// Records an iteration (and counts its reward call).
    pub fn iteration(&mut self, record: IterationRecord) {
        self.reward_calls += record.scoring.as_ref().map_or(0, |s| s.reward_calls);
        self.iterations.push(record);
    }

    /// Node ids from the root's first child down to `id`.
    pub fn path(&self, id: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = Some(id);
        while let Some(i) = at {
            if i == 0 {
                break;
            }
            out.push(i);
            at = self.nodes.get(i).and_then(|n| n.parent);
        }
        out.reverse();
        out
    }

    /// Adds the nodes of `sub` (a search of its own from the same root) as group `group`;
    /// returns the id each of `sub`'s nodes now has (`sub`'s root maps to this root).
    pub fn graft(&mut self, sub: &SearchTrace, group: usize) -> Vec<usize> {
        let offset = self.nodes.len();
        let map = |id: usize| if id == 0 { 0 } else { offset + id - 1 };
        let ids: Vec<usize> = (0..sub.nodes.len()).map(map).collect();
        for node in sub.nodes.iter().skip(1) {
            let mut node = node.clone();
            node.id = map(node.id);
            node.parent = node.parent.map(map);
            node.group = group;
            self.nodes.push(node);
        }
        for record in &sub.iterations {
            let remap = |v: &[usize]| v.iter().map(|&i| map(i)).collect::<Vec<_>>();
            self.iterations.push(IterationRecord {
                step: record.step,
                group: Some(group),
                expanded: remap(&record.expanded),
                children: remap(&record.children),
                kept: remap(&record.kept),
                finished: remap(&record.finished),
                pruned: remap(&record.pruned),
                scoring: record.scoring.clone(),
                resampled: remap(&record.resampled),
                ess: record.ess,
            });
        }
        self.reward_calls += sub.reward_calls;
        ids
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::detector::StepEnd;

    #[test]
    fn a_tree_serialises_with_parents_and_decisions() {
        let c = StepCandidate {
            index: 0,
            lead: "\nSo ".into(),
            generated: "x = 2.".into(),
            marker: None,
            tokens: None,
            completion_tokens: 4,
            finish_reason: FinishReason::Stop,
            end: StepEnd {
                is_complete: true,
                is_trajectory_complete: true,
                reason: Some(CompletionReason::EosPattern),
            },
        };
        let mut t = SearchTrace::new("beam-search", "prm");
        let a = t.add(0, 0, &c, Some(0.5), Some(0.5), false);
        let b = t.add(a, 0, &c, None, None, true);
        t.decide(b, NodeDecision::Selected);
        assert_eq!(t.path(b), vec![a, b]);
        let json = t.to_json();
        assert_eq!(json["nodes"][2]["parent"], 1);
        assert_eq!(json["nodes"][2]["depth"], 2);
        assert_eq!(json["nodes"][2]["decision"], "selected");
        assert_eq!(json["nodes"][1]["text"], "\nSo x = 2.");
        assert_eq!(json["nodes"][1]["completion_reason"], "eos_pattern");
        assert_eq!(json["nodes"][2]["score"], serde_json::Value::Null);
    }
}
