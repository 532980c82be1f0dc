//! Online best-of-N, a greedy step search (reference §1.6): at every step sample `C`
//! candidates continuing the trajectory, score them, keep the best, until the trajectory is
//! complete or `max_steps`; then generate the answer if the trajectory has none.

use std::sync::Arc;

use ponder_core::{
    Backend, BoxFuture, BuildError, Capabilities, Capability, ParamSpec, Params, Strategy,
    StrategyError, StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome,
};
use serde::Deserialize;

use crate::scoring::{aggregate, Aggregation};
use crate::step::scorer::ScoreItem;
use crate::step::trace::{IterationRecord, NodeDecision, SearchTrace};
use crate::step::{
    answer_phase, argmax, call_seed, common_params, invalid, parse_step_params, CallKind,
    CompletionReason, StepSetup, Trajectory, ONLINE_DEFAULTS,
};

const NAME: &str = "online-best-of-n";

/// The strategy's own parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineBestOfNConfig {
    /// Candidates sampled per step (`C`). Default: 8.
    #[serde(default = "default_candidates")]
    pub candidates_per_step: u32,
    /// Step cap. Default: 100.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Answer-phase candidates scored at the end. Default: `candidates_per_step`.
    #[serde(default)]
    pub final_answer_candidates: Option<u32>,
}

fn default_candidates() -> u32 {
    8
}
fn default_max_steps() -> u32 {
    100
}

const OWN: &[ParamSpec] = &[
    ParamSpec {
        name: "candidates_per_step",
        default: "8",
        description: "candidates sampled per step (1–64)",
    },
    ParamSpec {
        name: "max_steps",
        default: "100",
        description: "step cap (1–500)",
    },
    ParamSpec {
        name: "final_answer_candidates",
        default: "candidates_per_step",
        description: "answer-phase candidates scored when the trajectory has no answer",
    },
];

fn params() -> Vec<ParamSpec> {
    let mut p = common_params(&ONLINE_DEFAULTS);
    p.extend_from_slice(OWN);
    p
}

/// Builds [`OnlineBestOfN`].
#[derive(Debug, Default)]
pub struct OnlineBestOfNFactory;

impl StrategyFactory for OnlineBestOfNFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: NAME,
            summary: "greedy step search: per step sample C candidates, score, keep the best",
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
        let (common, config): (_, OnlineBestOfNConfig) =
            parse_step_params(NAME, params, &common_params(&ONLINE_DEFAULTS), OWN)?;
        let setup = StepSetup::build(NAME, common, &ONLINE_DEFAULTS, backend_name, capabilities)?;
        if !(1..=64).contains(&config.candidates_per_step) {
            return Err(invalid(
                NAME,
                "candidates_per_step",
                format!("must be in 1..=64, got {}", config.candidates_per_step),
            ));
        }
        if !(1..=500).contains(&config.max_steps) {
            return Err(invalid(
                NAME,
                "max_steps",
                format!("must be in 1..=500, got {}", config.max_steps),
            ));
        }
        if config.final_answer_candidates == Some(0) {
            return Err(invalid(
                NAME,
                "final_answer_candidates",
                "must be at least 1",
            ));
        }
        Ok(Arc::new(OnlineBestOfN { setup, config }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct OnlineBestOfN {
    setup: StepSetup,
    config: OnlineBestOfNConfig,
}

impl Strategy for OnlineBestOfN {
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
            let scorer = setup.scorer(input);
            let mut trace = SearchTrace::new(NAME, scorer.kind.as_str());
            let mut trajectory = Trajectory::empty();
            let mut fallbacks = 0usize;
            let mut stopped = "max_steps";
            for step in 1..=c.max_steps as usize {
                if setup.out_of_context(trajectory.tokens, c.max_steps) {
                    trajectory.complete = true;
                    trajectory.reason = Some(CompletionReason::ContextLimit);
                    stopped = "context_limit";
                    break;
                }
                let seed = call_seed(input.seed, &format!("{NAME}/step/{step}"));
                let candidates = generator
                    .generate(
                        backend,
                        &trajectory.text,
                        &trajectory.lead,
                        c.candidates_per_step,
                        seed,
                        CallKind::Step,
                    )
                    .await?;
                let items: Vec<ScoreItem<'_>> = candidates
                    .iter()
                    .map(|cand| ScoreItem {
                        parent_steps: &trajectory.steps,
                        candidate: cand,
                        lookahead: &[],
                    })
                    .collect();
                let (scores, call) = scorer.score(backend, &items).await?;
                let best = match argmax(&scores) {
                    Some(i) => i,
                    None => {
                        fallbacks += 1;
                        0
                    }
                };
                let ids: Vec<usize> = candidates
                    .iter()
                    .zip(&scores)
                    .map(|(cand, s)| trace.add(trajectory.node, 0, cand, *s, None, false))
                    .collect();
                let Some(chosen) = candidates.get(best) else {
                    // The backend returned no candidate: nothing to extend.
                    stopped = "no_candidates";
                    break;
                };
                let next = trajectory.child(chosen, scores[best], ids[best]);
                for (i, id) in ids.iter().enumerate() {
                    let decision = match (i == best, next.complete) {
                        (true, true) => NodeDecision::Finished,
                        (true, false) => NodeDecision::Kept,
                        (false, _) => NodeDecision::Pruned,
                    };
                    trace.decide(*id, decision);
                }
                trace.iteration(IterationRecord {
                    step,
                    group: None,
                    expanded: vec![trajectory.node],
                    children: ids.clone(),
                    kept: if next.complete {
                        vec![]
                    } else {
                        vec![ids[best]]
                    },
                    finished: if next.complete {
                        vec![ids[best]]
                    } else {
                        vec![]
                    },
                    pruned: ids.iter().copied().filter(|&id| id != ids[best]).collect(),
                    scoring: Some(call),
                    resampled: Vec::new(),
                    ess: None,
                });
                trajectory = next;
                if trajectory.complete {
                    stopped = "trajectory_complete";
                    break;
                }
            }
            let max_steps_hit = !trajectory.complete;
            let n_answers = c.final_answer_candidates.unwrap_or(c.candidates_per_step);
            let seed = call_seed(input.seed, &format!("{NAME}/answer"));
            let trajectory = answer_phase(
                setup, &generator, &scorer, backend, &mut trace, trajectory, n_answers, true, seed,
            )
            .await?;
            trace.selected = Some(trajectory.node);
            trace.stopped = stopped.to_string();
            let text = trajectory.full_text();
            let answer = setup.extract(&text);
            let score = aggregate(&trajectory.scores, Aggregation::Mean, None);
            let unscored = trajectory.scores.iter().filter(|s| s.is_none()).count();
            Ok(super::one_trajectory(
                text,
                answer,
                score,
                trajectory.tokens,
                serde_json::json!({
                    "steps": trajectory.steps.len(),
                    "step_scores": trajectory.scores,
                    "unscored_steps": unscored,
                    "fallbacks": fallbacks,
                    "completion_reason": trajectory.reason,
                    "max_steps_hit": max_steps_hit,
                    "search": trace.to_json(),
                }),
            ))
        })
    }
}
