//! Step-level beam search (reference §1.7): keep `beam_size` active beams; every step each
//! expands into `candidates_per_beam` children, all children are scored (one PRM call per step),
//! ranked by their aggregated score, finished ones go to a pool that is never pruned, and the
//! best `beam_size` active ones go on. The answer is the pool's best aggregated score.
//!
//! In thinking mode the chosen beam gets an answer phase after `</think>`; with
//! `answer_all_beams` every finished beam does (one call each, `n = 1`, unscored, all in
//! flight together), so each candidate carries its own answer for a vote over the beams.
//!
//! The beams of one step are generated concurrently (at most `parallelism` calls in flight);
//! the ranking needs every child of the step, so a step waits for its slowest beam — that is
//! the algorithm, not a scheduling choice. Runs of different requests share nothing.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use ponder_core::{
    Backend, BoxFuture, BuildError, Candidate, Capabilities, Capability, FinishReason, ParamSpec,
    Params, Strategy, StrategyError, StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome,
};
use serde::Deserialize;

use crate::baseline::Thinking;
use crate::scoring::{aggregate, Aggregation};
use crate::step::generator::{StepCandidate, StepGenerator};
use crate::step::scorer::ScoreItem;
use crate::step::trace::{IterationRecord, NodeDecision, SearchTrace};
use crate::step::{
    answer_all_thinking, answer_phase, call_seed, common_params, invalid, parse_step_params,
    CallKind, CompletionReason, StepSetup, Trajectory, ONLINE_DEFAULTS,
};

const NAME: &str = "beam-search";

/// The strategy's own parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeamSearchConfig {
    /// Active beams kept per step (`B`). Default: 4. Also accepted as `beam_width`.
    #[serde(default = "default_four", alias = "beam_width")]
    pub beam_size: u32,
    /// Children per beam per step (`C`). Default: 4.
    #[serde(default = "default_four")]
    pub candidates_per_beam: u32,
    /// Step cap. Default: 30.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Step scores → beam score: last | sum | mean | product | max | min. Default: mean.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Aggregate only the last W step scores. Default: all.
    #[serde(default)]
    pub scoring_window: Option<usize>,
    /// Drop active children whose text equals an earlier child's. Default: false.
    #[serde(default)]
    pub filter_duplicates: bool,
    /// Choose among finished beams by aggregated score (true) or finish order. Default: true.
    #[serde(default = "default_true")]
    pub sort_completed: bool,
    /// Greedy extra steps used only for scoring. Default: 0.
    #[serde(default)]
    pub lookahead: u32,
    /// At the last iteration generate without step stops. Default: false.
    #[serde(default)]
    pub last_step_to_eos: bool,
    /// Aggregated score divided by `steps^length_penalty`. Default: 0 (off).
    #[serde(default)]
    pub length_penalty: f64,
    /// Thinking mode: generate the answer phase for every finished beam, not only the chosen
    /// one. Default: false.
    #[serde(default)]
    pub answer_all_beams: bool,
}

fn default_four() -> u32 {
    4
}
fn default_max_steps() -> u32 {
    30
}
fn default_true() -> bool {
    true
}

const OWN: &[ParamSpec] = &[
    ParamSpec {
        name: "beam_size",
        default: "4",
        description: "active beams kept per step (alias beam_width)",
    },
    ParamSpec {
        name: "beam_width",
        default: "4",
        description: "alias of beam_size",
    },
    ParamSpec {
        name: "candidates_per_beam",
        default: "4",
        description: "children per beam per step",
    },
    ParamSpec {
        name: "max_steps",
        default: "30",
        description: "step cap",
    },
    ParamSpec {
        name: "aggregation",
        default: "mean",
        description: "step scores → beam score: last | sum | mean | product | max | min",
    },
    ParamSpec {
        name: "scoring_window",
        default: "all",
        description: "aggregate only the last W step scores",
    },
    ParamSpec {
        name: "filter_duplicates",
        default: "false",
        description: "drop active children whose text equals an earlier child's",
    },
    ParamSpec {
        name: "sort_completed",
        default: "true",
        description: "pick among finished beams by score (false: first finished)",
    },
    ParamSpec {
        name: "lookahead",
        default: "0",
        description: "greedy extra steps generated only to score a candidate",
    },
    ParamSpec {
        name: "last_step_to_eos",
        default: "false",
        description: "generate the last iteration to the end, without step stops",
    },
    ParamSpec {
        name: "length_penalty",
        default: "0",
        description: "divide the aggregated score by steps^length_penalty",
    },
    ParamSpec {
        name: "answer_all_beams",
        default: "false",
        description: "thinking = on only: answer phase for every finished beam (one call \
                      each, n = 1, unscored), so every candidate has an answer to vote on; \
                      false: only the chosen beam",
    },
];

fn params() -> Vec<ParamSpec> {
    let mut p = common_params(&ONLINE_DEFAULTS);
    p.extend_from_slice(OWN);
    p
}

/// Builds [`BeamSearch`].
#[derive(Debug, Default)]
pub struct BeamSearchFactory;

impl StrategyFactory for BeamSearchFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: NAME,
            summary: "step-level beam search: B beams × C children per step, ranked by aggregated step score",
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
        if params.contains_key("beam_size") && params.contains_key("beam_width") {
            return Err(invalid(
                NAME,
                "beam_width",
                "give beam_size or beam_width, not both",
            ));
        }
        let (common, config): (_, BeamSearchConfig) =
            parse_step_params(NAME, params, &common_params(&ONLINE_DEFAULTS), OWN)?;
        let setup = StepSetup::build(NAME, common, &ONLINE_DEFAULTS, backend_name, capabilities)?;
        for (name, value) in [
            ("beam_size", config.beam_size),
            ("candidates_per_beam", config.candidates_per_beam),
        ] {
            if !(1..=64).contains(&value) {
                return Err(invalid(
                    NAME,
                    name,
                    format!("must be in 1..=64, got {value}"),
                ));
            }
        }
        if !(1..=500).contains(&config.max_steps) {
            return Err(invalid(
                NAME,
                "max_steps",
                format!("must be in 1..=500, got {}", config.max_steps),
            ));
        }
        if config.scoring_window == Some(0) {
            return Err(invalid(NAME, "scoring_window", "must be at least 1"));
        }
        if config.lookahead > 8 {
            return Err(invalid(NAME, "lookahead", "must be at most 8"));
        }
        if !(config.length_penalty.is_finite() && config.length_penalty >= 0.0) {
            return Err(invalid(
                NAME,
                "length_penalty",
                "must be a finite number ≥ 0",
            ));
        }
        if config.answer_all_beams && setup.config.thinking != Thinking::On {
            return Err(invalid(
                NAME,
                "answer_all_beams",
                "only applies with thinking = on (without a thinking block the beams end \
                 with their answers)",
            ));
        }
        Ok(Arc::new(BeamSearch { setup, config }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct BeamSearch {
    setup: StepSetup,
    config: BeamSearchConfig,
}

/// A beam: a trajectory and its aggregated score.
#[derive(Debug, Clone)]
struct Beam {
    trajectory: Trajectory,
    score: Option<f64>,
}

/// Orders beams best first: scored before unscored, higher score first; the sort is stable, so
/// ties keep generation order.
fn rank(beams: &mut [Beam]) {
    beams.sort_by(|a, b| match (a.score, b.score) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

/// Extends `candidate` by up to `steps` greedy steps, for scoring only; returns their texts.
pub(crate) async fn lookahead(
    greedy: &StepGenerator,
    backend: &Arc<dyn Backend>,
    parent: &Trajectory,
    candidate: &StepCandidate,
    steps: u32,
    seed: u64,
) -> Result<Vec<String>, StrategyError> {
    let mut out = Vec::new();
    if candidate.end.is_trajectory_complete {
        return Ok(out);
    }
    let mut text = format!("{}{}", parent.text, candidate.raw_text());
    let mut lead = candidate.marker.clone().unwrap_or_default();
    for _ in 0..steps {
        let next = greedy
            .generate(backend, &text, &lead, 1, seed, CallKind::Step)
            .await?;
        let Some(step) = next.into_iter().next() else {
            break;
        };
        text.push_str(&step.raw_text());
        out.push(step.step_text());
        lead = step.marker.clone().unwrap_or_default();
        if step.end.is_trajectory_complete {
            break;
        }
    }
    Ok(out)
}

impl BeamSearch {
    fn beam_score(&self, scores: &[Option<f64>]) -> Option<f64> {
        let c = &self.config;
        let s = aggregate(scores, c.aggregation, c.scoring_window)?;
        if c.length_penalty > 0.0 && !scores.is_empty() {
            Some(s / (scores.len() as f64).powf(c.length_penalty))
        } else {
            Some(s)
        }
    }
}

impl Strategy for BeamSearch {
    fn name(&self) -> &str {
        NAME
    }

    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
        Box::pin(async move {
            let setup = &self.setup;
            let c = &self.config;
            let generator = setup.generator(input);
            let mut greedy = generator.clone();
            greedy.sampling.temperature = Some(0.0);
            let scorer = setup.scorer(input);
            let mut trace = SearchTrace::new(NAME, scorer.kind.as_str());
            let max_trajectory = setup.max_trajectory_tokens(c.max_steps);
            let mut active = vec![Beam {
                trajectory: Trajectory::empty(),
                score: None,
            }];
            let mut pool: Vec<Beam> = Vec::new();
            let mut stopped = "max_steps";
            for step in 1..=c.max_steps as usize {
                // 1. Beams without room for another step are finished.
                let (full, expandable): (Vec<Beam>, Vec<Beam>) = active
                    .into_iter()
                    .partition(|b| setup.out_of_context(b.trajectory.tokens, c.max_steps));
                for mut beam in full {
                    beam.trajectory.complete = true;
                    beam.trajectory.reason = Some(CompletionReason::ContextLimit);
                    trace.decide(beam.trajectory.node, NodeDecision::Finished);
                    pool.push(beam);
                }
                if expandable.is_empty() {
                    stopped = "no_active_beams";
                    active = Vec::new();
                    break;
                }
                // 2. C children for every beam, generated concurrently.
                let kind = if c.last_step_to_eos && step == c.max_steps as usize {
                    CallKind::ToEnd
                } else {
                    CallKind::Step
                };
                let calls: Vec<BoxFuture<'_, Result<Vec<StepCandidate>, StrategyError>>> =
                    expandable
                        .iter()
                        .map(|beam| {
                            let seed = call_seed(
                                input.seed,
                                &format!("{NAME}/step/{step}/node/{}", beam.trajectory.node),
                            );
                            Box::pin(generator.generate(
                                backend,
                                &beam.trajectory.text,
                                &beam.trajectory.lead,
                                c.candidates_per_beam,
                                seed,
                                kind,
                            )) as BoxFuture<'_, _>
                        })
                        .collect();
                let generated: Vec<Vec<StepCandidate>> = stream::iter(calls)
                    .buffered(setup.config.parallelism)
                    .try_collect()
                    .await?;
                // 4. Lookahead (scoring only), then one scoring call for every child.
                let pairs: Vec<(usize, &StepCandidate)> = generated
                    .iter()
                    .enumerate()
                    .flat_map(|(b, cands)| cands.iter().map(move |cand| (b, cand)))
                    .collect();
                let extra: Vec<Vec<String>> = if c.lookahead > 0 {
                    let calls: Vec<BoxFuture<'_, Result<Vec<String>, StrategyError>>> = pairs
                        .iter()
                        .map(|(b, cand)| {
                            let seed = call_seed(
                                input.seed,
                                &format!("{NAME}/lookahead/{step}/{b}/{}", cand.index),
                            );
                            Box::pin(lookahead(
                                &greedy,
                                backend,
                                &expandable[*b].trajectory,
                                cand,
                                c.lookahead,
                                seed,
                            )) as BoxFuture<'_, _>
                        })
                        .collect();
                    stream::iter(calls)
                        .buffered(setup.config.parallelism)
                        .try_collect()
                        .await?
                } else {
                    vec![Vec::new(); pairs.len()]
                };
                let items: Vec<ScoreItem<'_>> = pairs
                    .iter()
                    .zip(&extra)
                    .map(|((b, cand), la)| ScoreItem {
                        parent_steps: &expandable[*b].trajectory.steps,
                        candidate: cand,
                        lookahead: la,
                    })
                    .collect();
                let (scores, call) = scorer.score(backend, &items).await?;
                // 5. Children.
                let mut children: Vec<Beam> = Vec::with_capacity(pairs.len());
                let mut ids = Vec::with_capacity(pairs.len());
                for ((b, cand), score) in pairs.iter().zip(&scores) {
                    let parent = &expandable[*b].trajectory;
                    let mut child = parent.child(cand, *score, 0);
                    if !child.complete && child.tokens >= max_trajectory {
                        child.complete = true;
                        child.reason = Some(CompletionReason::ContextLimit);
                    }
                    let agg = self.beam_score(&child.scores);
                    let id = trace.add(parent.node, 0, cand, *score, agg, false);
                    if let Some(node) = trace.nodes.get_mut(id) {
                        node.trajectory_complete = child.complete;
                        node.completion_reason = child.reason;
                    }
                    child.node = id;
                    ids.push(id);
                    children.push(Beam {
                        trajectory: child,
                        score: agg,
                    });
                }
                // 6–7. Rank; finished children to the pool; keep the best B active.
                rank(&mut children);
                let mut record = IterationRecord {
                    step,
                    group: None,
                    expanded: expandable.iter().map(|b| b.trajectory.node).collect(),
                    children: ids,
                    kept: Vec::new(),
                    finished: Vec::new(),
                    pruned: Vec::new(),
                    scoring: Some(call),
                    resampled: Vec::new(),
                    ess: None,
                };
                let mut next: Vec<Beam> = Vec::new();
                let mut seen: Vec<String> = Vec::new();
                for beam in children {
                    let id = beam.trajectory.node;
                    if beam.trajectory.complete {
                        trace.decide(id, NodeDecision::Finished);
                        record.finished.push(id);
                        pool.push(beam);
                    } else if c.filter_duplicates && seen.contains(&beam.trajectory.text) {
                        trace.decide(id, NodeDecision::Duplicate);
                        record.pruned.push(id);
                    } else if next.len() < c.beam_size as usize {
                        seen.push(beam.trajectory.text.clone());
                        trace.decide(id, NodeDecision::Kept);
                        record.kept.push(id);
                        next.push(beam);
                    } else {
                        seen.push(beam.trajectory.text.clone());
                        trace.decide(id, NodeDecision::Pruned);
                        record.pruned.push(id);
                    }
                }
                trace.iteration(record);
                active = next;
                // 8. Done when no beam is active.
                if active.is_empty() {
                    stopped = "no_active_beams";
                    break;
                }
            }
            // Finish: the pool's best (or first finished); an empty pool takes the best active.
            let max_steps_hit = pool.is_empty();
            let from_pool = !pool.is_empty();
            let mut finals: Vec<Beam> = if from_pool { pool } else { active };
            if !from_pool || c.sort_completed {
                rank(&mut finals);
            }
            let mut trajectories: Vec<Trajectory> =
                finals.iter().map(|b| b.trajectory.clone()).collect();
            let answer_seed = |i: usize| match i {
                0 => call_seed(input.seed, &format!("{NAME}/answer")),
                i => call_seed(input.seed, &format!("{NAME}/answer/{i}")),
            };
            let mut answered_beams = 0;
            if c.answer_all_beams && !trajectories.is_empty() {
                // Every finished beam answers, in one batch; the chosen one is the first.
                let seeds: Vec<u64> = (0..trajectories.len()).map(answer_seed).collect();
                let (answered, calls) = answer_all_thinking(
                    setup,
                    &generator,
                    backend,
                    &mut trace,
                    trajectories,
                    0,
                    &seeds,
                )
                .await?;
                trajectories = answered;
                answered_beams = calls;
                trace.selected = trajectories.first().map(|t| t.node);
            } else if let Some(first) = trajectories.first_mut() {
                let t = answer_phase(
                    setup,
                    &generator,
                    &scorer,
                    backend,
                    &mut trace,
                    first.clone(),
                    1,
                    false,
                    answer_seed(0),
                )
                .await?;
                answered_beams = usize::from(t.answer_step.is_some());
                trace.selected = Some(t.node);
                *first = t;
            }
            let mut candidates = Vec::with_capacity(finals.len());
            for (beam, t) in finals.iter().zip(&trajectories) {
                let text = t.full_text();
                let a = setup.extract(&text);
                candidates.push(Candidate {
                    text,
                    answer: a,
                    votes: None,
                    score: beam.score,
                    finish_reason: FinishReason::Stop,
                    completion_tokens: Some(t.tokens),
                });
            }
            let answer = candidates.first().and_then(|c| c.answer.clone());
            let chosen_reason = trajectories.first().map(|t| t.reason);
            trace.stopped = stopped.to_string();
            Ok(StrategyOutcome {
                answer,
                selected: (!candidates.is_empty()).then_some(0),
                details: serde_json::json!({
                    "beam_size": c.beam_size,
                    "candidates_per_beam": c.candidates_per_beam,
                    "aggregation": format!("{:?}", c.aggregation).to_lowercase(),
                    "finished_beams": if from_pool { candidates.len() } else { 0 },
                    "completion_reason": chosen_reason.flatten(),
                    "max_steps_hit": max_steps_hit,
                    "reward_calls": trace.reward_calls,
                    "answer_all_beams": c.answer_all_beams,
                    "answered_beams": answered_beams,
                    "beam_answers": candidates.iter().map(|c| c.answer.clone()).collect::<Vec<_>>(),
                    "search": trace.to_json(),
                }),
                candidates,
            })
        })
    }
}
