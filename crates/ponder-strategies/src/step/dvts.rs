//! Diverse verifier tree search (reference §1.8, from search-and-learn): `n / M` independent
//! subtrees, each expanded greedily — per iteration `M` candidate steps, scored with the PRM,
//! the best aggregated one appended — until it is pruned (empty step, end of sequence, a boxed
//! answer) or `num_iterations`. Each subtree contributes its `M` last-iteration variants; the
//! answer is the best aggregated score, or a (weighted) vote over the `n` completions.
//!
//! Subtrees share nothing, so they advance independently (at most `parallelism` at once); each
//! makes one scoring call per iteration for its `M` candidates.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use ponder_answer::{vote, TieBreak, VoteOptions};
use ponder_core::{
    Backend, BoxFuture, BuildError, Candidate, Capabilities, Capability, FinishReason, ParamSpec,
    Params, SeededRng, Strategy, StrategyError, StrategyFactory, StrategyInfo, StrategyInput,
    StrategyOutcome,
};
use serde::Deserialize;

use crate::scoring::{aggregate, Aggregation};
use crate::step::beam_search::lookahead;
use crate::step::generator::{StepCandidate, StepGenerator};
use crate::step::scorer::{ScoreItem, StepScorer};
use crate::step::trace::{IterationRecord, NodeDecision, SearchTrace};
use crate::step::{
    answer_phase, argmax, call_seed, common_params, invalid, parse_step_params, CallKind,
    DetectorKind, StepDefaults, StepSetup, Trajectory,
};

const NAME: &str = "dvts";

/// S&L's DVTS sampling: hotter, long steps, blank-line step delimiter.
const DVTS_DEFAULTS: StepDefaults = StepDefaults {
    temperature: (0.8, "0.8"),
    top_p: (1.0, "1.0"),
    top_k: (None, "unset"),
    min_step_tokens: (0, "0"),
    max_step_tokens: (2048, "2048"),
    detector: (DetectorKind::Structured, "structured"),
    step_patterns: (Some(&["\n\n"]), "[\"\\n\\n\"]"),
    thinking_sampling: false,
};

/// How the answer is chosen among the `n` completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DvtsSelection {
    /// The completion with the best aggregated score (ties: lowest index).
    #[default]
    Argmax,
    /// The answer cluster with the largest sum of aggregated scores.
    WeightedVote,
    /// The answer cluster with the most completions.
    MajorityVote,
}

/// The strategy's own parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DvtsConfig {
    /// Completions returned (the budget); a multiple of `beam_width`. Default: 16.
    #[serde(default = "default_n")]
    pub n: u32,
    /// Candidates per subtree per iteration (`M`). Default: 4.
    #[serde(default = "default_beam_width")]
    pub beam_width: u32,
    /// Maximum depth. Default: 40.
    #[serde(default = "default_iterations")]
    pub num_iterations: u32,
    /// Greedy extra steps used only for scoring. Default: 0.
    #[serde(default)]
    pub lookahead: u32,
    /// `last`, `min` or `prod`. Default: `last`.
    #[serde(default = "default_agg")]
    pub agg_strategy: Aggregation,
    /// `argmax`, `weighted_vote` or `majority_vote`. Default: `argmax`.
    #[serde(default)]
    pub selection: DvtsSelection,
    /// The step delimiter (a stop string); the same as `step_patterns: [step_stop]`.
    /// Default: `"\n\n"`.
    #[serde(default)]
    pub step_stop: Option<String>,
}

fn default_n() -> u32 {
    16
}
fn default_beam_width() -> u32 {
    4
}
fn default_iterations() -> u32 {
    40
}
fn default_agg() -> Aggregation {
    Aggregation::Last
}

const OWN: &[ParamSpec] = &[
    ParamSpec {
        name: "n",
        default: "16",
        description: "completions returned (a multiple of beam_width)",
    },
    ParamSpec {
        name: "beam_width",
        default: "4",
        description: "candidates per subtree per iteration (M); n / M subtrees",
    },
    ParamSpec {
        name: "num_iterations",
        default: "40",
        description: "maximum depth",
    },
    ParamSpec {
        name: "lookahead",
        default: "0",
        description: "greedy extra steps generated only to score a candidate",
    },
    ParamSpec {
        name: "agg_strategy",
        default: "last",
        description: "step scores → candidate score: last | min | prod",
    },
    ParamSpec {
        name: "selection",
        default: "argmax",
        description: "argmax | weighted_vote | majority_vote over the n completions",
    },
    ParamSpec {
        name: "step_stop",
        default: "\"\\n\\n\"",
        description: "step delimiter (same as step_patterns: [step_stop])",
    },
];

fn params() -> Vec<ParamSpec> {
    let mut p = common_params(&DVTS_DEFAULTS);
    p.extend_from_slice(OWN);
    p
}

/// Builds [`Dvts`].
#[derive(Debug, Default)]
pub struct DvtsFactory;

impl StrategyFactory for DvtsFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: NAME,
            summary: "diverse verifier tree search: n/M independent subtrees, each extended greedily by step score",
            params: params(),
            // The scorer adds process_rewards (prm) or logprobs (the others).
            requires: vec![Capability::PrefixContinuation],
        }
    }

    fn build(
        &self,
        params: &Params,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        let (mut common, config): (_, DvtsConfig) =
            parse_step_params(NAME, params, &common_params(&DVTS_DEFAULTS), OWN)?;
        if let Some(stop) = &config.step_stop {
            if common.step_patterns.is_some() {
                return Err(invalid(NAME, "step_stop", "set step_stop or step_patterns"));
            }
            if stop.is_empty() {
                return Err(invalid(NAME, "step_stop", "must not be empty"));
            }
            common.step_patterns = Some(vec![stop.clone()]);
        }
        let setup = StepSetup::build(NAME, common, &DVTS_DEFAULTS, backend_name, capabilities)?;
        if !(1..=64).contains(&config.beam_width) {
            return Err(invalid(
                NAME,
                "beam_width",
                format!("must be in 1..=64, got {}", config.beam_width),
            ));
        }
        if config.n == 0 || config.n > 1024 || config.n % config.beam_width != 0 {
            return Err(invalid(
                NAME,
                "n",
                format!(
                    "must be a multiple of beam_width ({}) in 1..=1024, got {}",
                    config.beam_width, config.n
                ),
            ));
        }
        if !(1..=500).contains(&config.num_iterations) {
            return Err(invalid(
                NAME,
                "num_iterations",
                format!("must be in 1..=500, got {}", config.num_iterations),
            ));
        }
        if !matches!(
            config.agg_strategy,
            Aggregation::Last | Aggregation::Min | Aggregation::Product
        ) {
            return Err(invalid(NAME, "agg_strategy", "must be last, min or prod"));
        }
        if config.lookahead > 8 {
            return Err(invalid(NAME, "lookahead", "must be at most 8"));
        }
        Ok(Arc::new(Dvts { setup, config }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct Dvts {
    setup: StepSetup,
    config: DvtsConfig,
}

/// One of a subtree's last-iteration variants.
#[derive(Debug, Clone)]
struct Variant {
    trajectory: Trajectory,
    score: Option<f64>,
}

/// What one subtree produced, with node ids local to its own trace.
struct SubtreeResult {
    trace: SearchTrace,
    variants: Vec<Variant>,
    stopped: &'static str,
}

impl Dvts {
    async fn subtree(
        &self,
        backend: &Arc<dyn Backend>,
        generator: &StepGenerator,
        greedy: &StepGenerator,
        scorer: &StepScorer,
        input: &StrategyInput,
        subtree: usize,
    ) -> Result<SubtreeResult, StrategyError> {
        let c = &self.config;
        let mut trace = SearchTrace::new(NAME, scorer.kind.as_str());
        let mut trajectory = Trajectory::empty();
        let mut variants: Vec<Variant> = Vec::new();
        let mut stopped = "num_iterations";
        for iteration in 1..=c.num_iterations as usize {
            if self
                .setup
                .out_of_context(trajectory.tokens, c.num_iterations)
            {
                stopped = "context_limit";
                break;
            }
            let kind = if iteration == c.num_iterations as usize {
                CallKind::ToEnd
            } else {
                CallKind::Step
            };
            let seed = call_seed(input.seed, &format!("{NAME}/{subtree}/{iteration}"));
            let candidates = generator
                .generate(
                    backend,
                    &trajectory.text,
                    &trajectory.lead,
                    c.beam_width,
                    seed,
                    kind,
                )
                .await?;
            let extra: Vec<Vec<String>> = if c.lookahead > 0 {
                let calls: Vec<BoxFuture<'_, Result<Vec<String>, StrategyError>>> = candidates
                    .iter()
                    .map(|cand| {
                        let seed = call_seed(
                            input.seed,
                            &format!("{NAME}/{subtree}/{iteration}/lookahead/{}", cand.index),
                        );
                        Box::pin(lookahead(
                            greedy,
                            backend,
                            &trajectory,
                            cand,
                            c.lookahead,
                            seed,
                        )) as BoxFuture<'_, _>
                    })
                    .collect();
                stream::iter(calls)
                    .buffered(self.setup.config.parallelism)
                    .try_collect()
                    .await?
            } else {
                vec![Vec::new(); candidates.len()]
            };
            let items: Vec<ScoreItem<'_>> = candidates
                .iter()
                .zip(&extra)
                .map(|(cand, la)| ScoreItem {
                    parent_steps: &trajectory.steps,
                    candidate: cand,
                    lookahead: la,
                })
                .collect();
            let (scores, call) = scorer.score(backend, &items).await?;
            let children: Vec<(Trajectory, Option<f64>)> = candidates
                .iter()
                .zip(&scores)
                .map(|(cand, s)| {
                    let child = trajectory.child(cand, *s, 0);
                    let agg = aggregate(&child.scores, c.agg_strategy, None);
                    (child, agg)
                })
                .collect();
            let aggs: Vec<Option<f64>> = children.iter().map(|(_, a)| *a).collect();
            let best = argmax(&aggs).unwrap_or(0);
            let mut ids = Vec::with_capacity(children.len());
            variants.clear();
            for ((cand, s), (mut child, agg)) in candidates.iter().zip(&scores).zip(children) {
                let id = trace.add(trajectory.node, subtree, cand, *s, agg, false);
                child.node = id;
                ids.push(id);
                variants.push(Variant {
                    trajectory: child,
                    score: agg,
                });
            }
            let Some(chosen_variant) = variants.get(best).cloned() else {
                stopped = "no_candidates";
                break;
            };
            let chosen: &StepCandidate = &candidates[best];
            let next = chosen_variant.trajectory;
            // Pruned: an empty step, the end of the sequence or a boxed answer; or fewer
            // candidates than asked for.
            let prune = chosen.step_text().is_empty()
                || next.complete
                || next.text.contains("boxed{")
                || candidates.len() < c.beam_width as usize;
            for (i, id) in ids.iter().enumerate() {
                let decision = match (i == best, prune) {
                    (true, true) => NodeDecision::Finished,
                    (true, false) => NodeDecision::Kept,
                    (false, _) => NodeDecision::Pruned,
                };
                trace.decide(*id, decision);
            }
            trace.iteration(IterationRecord {
                step: iteration,
                group: Some(subtree),
                expanded: vec![trajectory.node],
                children: ids.clone(),
                kept: if prune { vec![] } else { vec![ids[best]] },
                finished: if prune { vec![ids[best]] } else { vec![] },
                pruned: ids.iter().copied().filter(|&id| id != ids[best]).collect(),
                scoring: Some(call),
                resampled: Vec::new(),
                ess: None,
            });
            trajectory = next;
            if prune {
                stopped = if candidates.len() < c.beam_width as usize {
                    "too_few_candidates"
                } else {
                    "pruned"
                };
                break;
            }
        }
        Ok(SubtreeResult {
            trace,
            variants,
            stopped,
        })
    }
}

impl Strategy for Dvts {
    fn name(&self) -> &str {
        NAME
    }

    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
        Box::pin(async move {
            let c = &self.config;
            let setup = &self.setup;
            let generator = setup.generator(input);
            let mut greedy = generator.clone();
            greedy.sampling.temperature = Some(0.0);
            let scorer = setup.scorer(input);
            let n_subtrees = (c.n / c.beam_width) as usize;
            let calls: Vec<BoxFuture<'_, Result<SubtreeResult, StrategyError>>> = (0..n_subtrees)
                .map(|s| {
                    Box::pin(self.subtree(backend, &generator, &greedy, &scorer, input, s))
                        as BoxFuture<'_, _>
                })
                .collect();
            let results: Vec<SubtreeResult> = stream::iter(calls)
                .buffered(setup.config.parallelism)
                .try_collect()
                .await?;
            // One tree: every subtree hangs off the shared root.
            let mut trace = SearchTrace::new(NAME, scorer.kind.as_str());
            let mut variants: Vec<(usize, Variant)> = Vec::new();
            let mut stops = Vec::new();
            for (s, result) in results.into_iter().enumerate() {
                let ids = trace.graft(&result.trace, s);
                stops.push(result.stopped);
                for mut v in result.variants {
                    v.trajectory.node = ids.get(v.trajectory.node).copied().unwrap_or(0);
                    variants.push((s, v));
                }
            }
            let answers: Vec<Option<String>> = variants
                .iter()
                .map(|(_, v)| setup.extract(&v.trajectory.full_text()))
                .collect();
            let scores: Vec<Option<f64>> = variants.iter().map(|(_, v)| v.score).collect();
            let mut distribution = None;
            let selected = match c.selection {
                DvtsSelection::Argmax => argmax(&scores).or((!variants.is_empty()).then_some(0)),
                DvtsSelection::WeightedVote | DvtsSelection::MajorityVote => {
                    let weighted = c.selection == DvtsSelection::WeightedVote;
                    let weights: Vec<f64> =
                        scores.iter().map(|s| s.unwrap_or(0.0).max(0.0)).collect();
                    let mut rng = SeededRng::derive(input.seed, "dvts/tie-break");
                    let v = vote(
                        &answers,
                        Some(&weights),
                        VoteOptions {
                            weighted,
                            tie_break: TieBreak::ScoreThenFirst,
                        },
                        &mut rng,
                    );
                    distribution = Some(
                        v.clusters
                            .iter()
                            .map(|cl| serde_json::json!({"answer": cl.representative, "votes": cl.votes, "weight": cl.weight}))
                            .collect::<Vec<_>>(),
                    );
                    v.winning().and_then(|cl| {
                        let member_scores: Vec<Option<f64>> =
                            cl.members.iter().map(|&i| scores[i]).collect();
                        argmax(&member_scores)
                            .map(|k| cl.members[k])
                            .or(cl.members.first().copied())
                    })
                }
            };
            let mut candidates: Vec<Candidate> = variants
                .iter()
                .zip(&answers)
                .map(|((_, v), a)| Candidate {
                    text: v.trajectory.full_text(),
                    answer: a.clone(),
                    votes: None,
                    score: v.score,
                    finish_reason: FinishReason::Stop,
                    completion_tokens: Some(v.trajectory.tokens),
                })
                .collect();
            let mut answer = selected.and_then(|i| answers[i].clone());
            if let Some(i) = selected {
                // The chosen completion gets an answer phase when it has no answer.
                let seed = call_seed(input.seed, &format!("{NAME}/answer"));
                let t = answer_phase(
                    setup,
                    &generator,
                    &scorer,
                    backend,
                    &mut trace,
                    variants[i].1.trajectory.clone(),
                    1,
                    false,
                    seed,
                )
                .await?;
                trace.selected = Some(t.node);
                let text = t.full_text();
                if c.selection == DvtsSelection::Argmax || answer.is_none() {
                    answer = setup.extract(&text);
                }
                candidates[i].text = text;
                candidates[i].answer = answer.clone();
                candidates[i].completion_tokens = Some(t.tokens);
            }
            trace.stopped = stops.join(",");
            let mut details = serde_json::json!({
                "subtrees": n_subtrees,
                "beam_width": c.beam_width,
                "subtree_stops": stops,
                "reward_calls": trace.reward_calls,
                "search": trace.to_json(),
            });
            if let Some(d) = distribution {
                details["distribution"] = serde_json::Value::Array(d);
            }
            Ok(StrategyOutcome {
                answer,
                selected,
                candidates,
                details,
            })
        })
    }
}
