//! Particle filtering and particle Gibbs (reference §1.9; Puri et al., arXiv 2502.01618; IH
//! `particle_gibbs`): partial solutions are particles, the PRM is the emission model. Every
//! step extends each live particle by one step, scores it, turns the reward into a log-weight
//! `ln(r / (1 − r))` and resamples the particles in proportion to `softmax(log-weights)`.
//!
//! With `num_iterations > 1` (particle Gibbs) each iteration runs `budget / num_iterations`
//! particles; after an iteration `num_ref_particles` reference particles are drawn by final
//! weight and join every resampling pool of the next iteration, a drawn reference particle
//! being cut back to the current step and continued.
//!
//! Copies of one particle share their prefix: one generation call per distinct prefix with
//! `n` = its number of copies. All particles of a step are scored in one PRM call.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use ponder_core::{
    Backend, BoxFuture, BuildError, Candidate, Capabilities, Capability, FinishReason, ParamSpec,
    Params, SeededRng, Strategy, StrategyError, StrategyFactory, StrategyInfo, StrategyInput,
    StrategyOutcome,
};
use serde::Deserialize;

use crate::scoring::{aggregate, Aggregation};
use crate::step::generator::{StepCandidate, StepGenerator};
use crate::step::scorer::{ScoreItem, StepScorer};
use crate::step::trace::{IterationRecord, NodeDecision, SearchTrace};
use crate::step::{
    answer_phase, call_seed, common_params, invalid, parse_step_params, CallKind, DetectorKind,
    StepDefaults, StepSetup, Trajectory,
};

const NAME: &str = "particle-filtering";

/// Rewards are clipped to `[CLIP, 1 − CLIP]` before the inverse sigmoid.
const CLIP: f64 = 1e-7;

const PF_DEFAULTS: StepDefaults = StepDefaults {
    temperature: (0.8, "0.8"),
    top_p: (1.0, "1.0"),
    top_k: (None, "unset"),
    min_step_tokens: (0, "0"),
    max_step_tokens: (2048, "2048"),
    detector: (DetectorKind::Structured, "structured"),
    step_patterns: (Some(&["\n\n"]), "[step_token]"),
    thinking_sampling: false,
};

/// How one particle's partial solution becomes one reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrmAggregation {
    /// Score the whole partial solution and read the last step's reward.
    #[default]
    Model,
    Last,
    Min,
    #[serde(alias = "product")]
    Prod,
    Mean,
}

/// How the answer particle is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PfSelection {
    /// Highest final log-weight (ties: lowest index).
    #[default]
    Argmax,
    /// Drawn from the softmax of the final log-weights (seeded).
    Sample,
}

/// How particles are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resampling {
    #[default]
    Multinomial,
    Systematic,
}

/// The strategy's own parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticleFilteringConfig {
    /// `particles × num_iterations`. Default: 16.
    #[serde(default = "default_budget")]
    pub budget: u32,
    /// 1: particle filtering; more: particle Gibbs. Default: 1.
    #[serde(default = "default_one")]
    pub num_iterations: u32,
    /// Reference particles carried between Gibbs iterations. Default: 1 (Gibbs), 0 (PF).
    #[serde(default)]
    pub num_ref_particles: Option<u32>,
    /// `argmax` or `sample`. Default: `argmax`.
    #[serde(default)]
    pub selection_method: PfSelection,
    /// Step delimiter (a stop string). Default: `"\n\n"` unless `tokens_per_step` is set.
    #[serde(default)]
    pub step_token: Option<String>,
    /// Fixed tokens per step instead of a delimiter. Default: unset.
    #[serde(default)]
    pub tokens_per_step: Option<u32>,
    /// Step cap per particle. Default: 32.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// `model`, `last`, `min`, `prod` or `mean`. Default: `model`.
    #[serde(default)]
    pub prm_aggregation: PrmAggregation,
    /// `multinomial` or `systematic`. Default: `multinomial`.
    #[serde(default)]
    pub resampling: Resampling,
    /// `always`, or `ess_below(θ)`: resample only when `1 / Σ w²` < θ × particles, θ in (0, 1].
    /// Default: `always`.
    #[serde(default = "default_always")]
    pub resample_when: String,
    /// Not implemented upstream; must stay false. Default: false.
    #[serde(default)]
    pub ancestor_sampling: bool,
}

fn default_budget() -> u32 {
    16
}
fn default_one() -> u32 {
    1
}
fn default_max_steps() -> u32 {
    32
}
fn default_always() -> String {
    "always".into()
}

const OWN: &[ParamSpec] = &[
    ParamSpec {
        name: "budget",
        default: "16",
        description: "particles × num_iterations",
    },
    ParamSpec {
        name: "num_iterations",
        default: "1",
        description: "1: particle filtering; > 1: particle Gibbs",
    },
    ParamSpec {
        name: "num_ref_particles",
        default: "1 (Gibbs) / 0 (PF)",
        description: "reference particles carried between Gibbs iterations",
    },
    ParamSpec {
        name: "selection_method",
        default: "argmax",
        description: "argmax | sample (softmax of the final log-weights)",
    },
    ParamSpec {
        name: "step_token",
        default: "\"\\n\\n\"",
        description: "step delimiter (exclusive with tokens_per_step)",
    },
    ParamSpec {
        name: "tokens_per_step",
        default: "unset",
        description: "fixed tokens per step instead of a delimiter",
    },
    ParamSpec {
        name: "max_steps",
        default: "32",
        description: "step cap per particle",
    },
    ParamSpec {
        name: "prm_aggregation",
        default: "model",
        description: "model | last | min | prod | mean",
    },
    ParamSpec {
        name: "resampling",
        default: "multinomial",
        description: "multinomial | systematic",
    },
    ParamSpec {
        name: "resample_when",
        default: "always",
        description: "always | ess_below(θ): resample when 1/Σw² < θ × particles",
    },
    ParamSpec {
        name: "ancestor_sampling",
        default: "false",
        description: "not implemented (upstream neither); must be false",
    },
];

fn params() -> Vec<ParamSpec> {
    let mut p = common_params(&PF_DEFAULTS);
    p.extend_from_slice(OWN);
    p
}

/// Parses `resample_when`: `None` for `always`, `Some(θ)` for `ess_below(θ)`.
fn parse_resample_when(text: &str) -> Option<Result<Option<f64>, String>> {
    let t = text.trim();
    if t == "always" {
        return Some(Ok(None));
    }
    let inner = t.strip_prefix("ess_below(")?.strip_suffix(')')?;
    Some(match inner.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(Some(x)),
        _ => Err(format!("θ must be a number in (0, 1], got `{inner}`")),
    })
}

/// Builds [`ParticleFiltering`].
#[derive(Debug, Default)]
pub struct ParticleFilteringFactory;

impl StrategyFactory for ParticleFilteringFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: NAME,
            summary: "particle filtering / Gibbs: particles resampled by PRM weights every step",
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
        let (mut common, config): (_, ParticleFilteringConfig) =
            parse_step_params(NAME, params, &common_params(&PF_DEFAULTS), OWN)?;
        match (&config.step_token, config.tokens_per_step) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    NAME,
                    "tokens_per_step",
                    "set step_token or tokens_per_step, not both",
                ))
            }
            (Some(token), None) => {
                if common.step_patterns.is_some() {
                    return Err(invalid(
                        NAME,
                        "step_token",
                        "set step_token or step_patterns",
                    ));
                }
                if token.is_empty() {
                    return Err(invalid(NAME, "step_token", "must not be empty"));
                }
                common.step_patterns = Some(vec![token.clone()]);
            }
            (None, Some(tokens)) => {
                if tokens == 0 {
                    return Err(invalid(NAME, "tokens_per_step", "must be at least 1"));
                }
                if common.max_step_tokens.is_some() || common.step_patterns.is_some() {
                    return Err(invalid(
                        NAME,
                        "tokens_per_step",
                        "replaces max_step_tokens and step_patterns; set only one",
                    ));
                }
                if common.detector == Some(DetectorKind::ThinkingMarkers) {
                    return Err(invalid(
                        NAME,
                        "tokens_per_step",
                        "fixed-length steps use no step markers",
                    ));
                }
                // No step boundary but the length: only answer and end markers stop a step.
                common.step_patterns = Some(Vec::new());
                common.max_step_tokens = Some(tokens);
            }
            (None, None) => {}
        }
        let setup = StepSetup::build(NAME, common, &PF_DEFAULTS, backend_name, capabilities)?;
        if config.ancestor_sampling {
            return Err(invalid(NAME, "ancestor_sampling", "is not implemented"));
        }
        if config.num_iterations == 0 || config.budget == 0 || config.budget > 1024 {
            return Err(invalid(
                NAME,
                "budget",
                "budget must be in 1..=1024 and num_iterations at least 1",
            ));
        }
        if config.budget % config.num_iterations != 0 {
            return Err(invalid(
                NAME,
                "budget",
                format!(
                    "must be divisible by num_iterations ({}), got {}",
                    config.num_iterations, config.budget
                ),
            ));
        }
        let particles = config.budget / config.num_iterations;
        let refs = config
            .num_ref_particles
            .unwrap_or(u32::from(config.num_iterations > 1));
        if config.num_iterations > 1 && refs >= particles {
            return Err(invalid(
                NAME,
                "num_ref_particles",
                format!("must be below the particles per iteration ({particles}), got {refs}"),
            ));
        }
        if !(1..=500).contains(&config.max_steps) {
            return Err(invalid(
                NAME,
                "max_steps",
                format!("must be in 1..=500, got {}", config.max_steps),
            ));
        }
        let ess_below = match parse_resample_when(&config.resample_when) {
            Some(Ok(x)) => x,
            Some(Err(reason)) => return Err(invalid(NAME, "resample_when", reason)),
            None => {
                return Err(invalid(
                    NAME,
                    "resample_when",
                    format!(
                        "must be `always` or `ess_below(θ)`, got `{}`",
                        config.resample_when
                    ),
                ))
            }
        };
        Ok(Arc::new(ParticleFiltering {
            setup,
            config,
            particles,
            refs,
            ess_below,
        }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct ParticleFiltering {
    setup: StepSetup,
    config: ParticleFilteringConfig,
    particles: u32,
    refs: u32,
    ess_below: Option<f64>,
}

/// A partial solution with its weight history.
#[derive(Debug, Clone)]
struct Particle {
    /// The trajectory after each of its steps (`history[k]` has `k + 1` steps).
    history: Vec<Trajectory>,
    /// The log-weight after each step.
    log_weights: Vec<f64>,
    stopped: bool,
}

impl Particle {
    fn empty() -> Self {
        Particle {
            history: Vec::new(),
            log_weights: Vec::new(),
            stopped: false,
        }
    }

    fn trajectory(&self) -> Trajectory {
        self.history
            .last()
            .cloned()
            .unwrap_or_else(Trajectory::empty)
    }

    fn final_log_weight(&self) -> f64 {
        self.log_weights.last().copied().unwrap_or(0.0)
    }

    /// The log-weight at step `t` (1-based): its own when it has `t` steps, else its final one.
    fn log_weight_at(&self, t: usize) -> f64 {
        self.log_weights
            .get(t.wrapping_sub(1))
            .copied()
            .unwrap_or_else(|| self.final_log_weight())
    }

    /// The particle cut back to its first `t` steps (a resampled reference particle).
    fn truncated(&self, t: usize) -> Particle {
        let keep = t.min(self.history.len());
        let mut p = Particle {
            history: self.history[..keep].to_vec(),
            log_weights: self.log_weights[..keep].to_vec(),
            stopped: false,
        };
        p.stopped = p.history.last().is_some_and(|h| h.complete);
        p
    }
}

/// `softmax(x)` with the maximum shifted to 0.
pub fn softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// `ln(r / (1 − r))` of a reward clipped to `[1e−7, 1 − 1e−7]`.
pub fn log_weight(reward: f64) -> f64 {
    let r = reward.clamp(CLIP, 1.0 - CLIP);
    (r / (1.0 - r)).ln()
}

/// Draws `n` indices with probabilities `weights` (normalised).
pub fn resample(weights: &[f64], n: usize, how: Resampling, rng: &mut SeededRng) -> Vec<usize> {
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in weights {
        acc += w;
        cumulative.push(acc);
    }
    let last = weights.len().saturating_sub(1);
    let pick = |u: f64| cumulative.partition_point(|&c| c <= u * acc).min(last);
    match how {
        Resampling::Multinomial => (0..n).map(|_| pick(rng.next_f64())).collect(),
        Resampling::Systematic => {
            let u0 = rng.next_f64() / n as f64;
            (0..n).map(|k| pick(u0 + k as f64 / n as f64)).collect()
        }
    }
}

impl ParticleFiltering {
    /// One particle-filtering run with `free` particles and the reference particles `refs`
    /// in every resampling pool; returns the final free particles.
    #[allow(clippy::too_many_arguments)]
    async fn filter(
        &self,
        backend: &Arc<dyn Backend>,
        generator: &StepGenerator,
        scorer: &StepScorer,
        input: &StrategyInput,
        trace: &mut SearchTrace,
        rng: &mut SeededRng,
        iteration: usize,
        free: usize,
        refs: &[Particle],
    ) -> Result<Vec<Particle>, StrategyError> {
        let c = &self.config;
        let mut particles: Vec<Particle> = vec![Particle::empty(); free];
        for t in 1..=c.max_steps as usize {
            let live: Vec<usize> = (0..particles.len())
                .filter(|&i| !particles[i].stopped)
                .collect();
            if live.is_empty() {
                break;
            }
            // One call per distinct prefix, `n` = its copies.
            let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
            for &i in &live {
                let node = particles[i].trajectory().node;
                match groups.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((node, vec![i])),
                }
            }
            let calls: Vec<BoxFuture<'_, Result<Vec<StepCandidate>, StrategyError>>> = groups
                .iter()
                .map(|(node, members)| {
                    let parent = particles[members[0]].trajectory();
                    let seed = call_seed(input.seed, &format!("{NAME}/{iteration}/{t}/{node}"));
                    Box::pin(async move {
                        generator
                            .generate(
                                backend,
                                &parent.text,
                                &parent.lead,
                                members.len() as u32,
                                seed,
                                CallKind::Step,
                            )
                            .await
                    }) as BoxFuture<'_, _>
                })
                .collect();
            let generated: Vec<Vec<StepCandidate>> = stream::iter(calls)
                .buffered(self.setup.config.parallelism)
                .try_collect()
                .await?;
            let mut extended: Vec<(usize, StepCandidate)> = Vec::new();
            for ((_, members), cands) in groups.iter().zip(generated) {
                // A reply with fewer completions than asked leaves the rest unextended; they
                // stop where they are.
                let mut cands = cands.into_iter();
                for &i in members {
                    match cands.next() {
                        Some(cand) => extended.push((i, cand)),
                        None => particles[i].stopped = true,
                    }
                }
            }
            let parents: Vec<Trajectory> = extended
                .iter()
                .map(|(i, _)| particles[*i].trajectory())
                .collect();
            let items: Vec<ScoreItem<'_>> = extended
                .iter()
                .zip(&parents)
                .map(|((_, cand), parent)| ScoreItem {
                    parent_steps: &parent.steps,
                    candidate: cand,
                    lookahead: &[],
                })
                .collect();
            let (scores, call) = scorer.score(backend, &items).await?;
            let mut children = Vec::with_capacity(extended.len());
            for (((i, cand), parent), score) in extended.iter().zip(&parents).zip(&scores) {
                let mut child = parent.child(cand, *score, 0);
                let reward = match c.prm_aggregation {
                    PrmAggregation::Model | PrmAggregation::Last => *score,
                    PrmAggregation::Min => aggregate(&child.scores, Aggregation::Min, None),
                    PrmAggregation::Prod => aggregate(&child.scores, Aggregation::Product, None),
                    PrmAggregation::Mean => aggregate(&child.scores, Aggregation::Mean, None),
                };
                // An unscored step weighs as little as a clipped reward of 0.
                let lw = log_weight(reward.unwrap_or(0.0));
                let id = trace.add(parent.node, iteration, cand, *score, Some(lw), false);
                child.node = id;
                children.push(id);
                let p = &mut particles[*i];
                p.history.push(child);
                p.log_weights.push(lw);
                p.stopped = cand.end.is_trajectory_complete || t == c.max_steps as usize;
            }
            // Resample among these particles and the reference particles.
            let pool: Vec<Particle> = particles.iter().chain(refs).cloned().collect();
            let weights = softmax(&pool.iter().map(|p| p.log_weight_at(t)).collect::<Vec<_>>());
            let ess = 1.0 / weights.iter().map(|w| w * w).sum::<f64>();
            let resample_now = self
                .ess_below
                .is_none_or(|theta| ess < theta * pool.len() as f64);
            let mut record = IterationRecord {
                step: t,
                group: Some(iteration),
                expanded: groups.iter().map(|(n, _)| *n).collect(),
                children: children.clone(),
                scoring: Some(call),
                ess: Some(ess),
                ..IterationRecord::default()
            };
            if resample_now {
                let drawn = resample(&weights, free, c.resampling, rng);
                particles = drawn
                    .iter()
                    .map(|&k| {
                        if k < particles.len() {
                            pool[k].clone()
                        } else {
                            pool[k].truncated(t)
                        }
                    })
                    .collect();
                record.resampled = particles.iter().map(|p| p.trajectory().node).collect();
                for id in &children {
                    let kept = record.resampled.contains(id);
                    trace.decide(
                        *id,
                        if kept {
                            NodeDecision::Kept
                        } else {
                            NodeDecision::Pruned
                        },
                    );
                }
                record.kept = children
                    .iter()
                    .copied()
                    .filter(|id| record.resampled.contains(id))
                    .collect();
                record.pruned = children
                    .iter()
                    .copied()
                    .filter(|id| !record.resampled.contains(id))
                    .collect();
            } else {
                for id in &children {
                    trace.decide(*id, NodeDecision::Kept);
                }
                record.kept = children.clone();
            }
            trace.iteration(record);
        }
        for p in &particles {
            let node = p.trajectory().node;
            if node != 0 {
                trace.decide(node, NodeDecision::Finished);
            }
        }
        Ok(particles)
    }
}

impl Strategy for ParticleFiltering {
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
            let mut rng = SeededRng::derive(input.seed, "particle-filtering/resample");
            let mut refs: Vec<Particle> = Vec::new();
            let mut last: Vec<Particle> = Vec::new();
            for iteration in 0..c.num_iterations as usize {
                let free = self.particles as usize - refs.len();
                let particles = self
                    .filter(
                        backend, &generator, &scorer, input, &mut trace, &mut rng, iteration, free,
                        &refs,
                    )
                    .await?;
                let mut all = particles;
                all.extend(refs.iter().cloned());
                if iteration + 1 < c.num_iterations as usize {
                    let w = softmax(
                        &all.iter()
                            .map(Particle::final_log_weight)
                            .collect::<Vec<_>>(),
                    );
                    let picks = resample(&w, self.refs as usize, Resampling::Multinomial, &mut rng);
                    refs = picks.iter().map(|&k| all[k].clone()).collect();
                }
                last = all;
            }
            let finals: Vec<f64> = last.iter().map(Particle::final_log_weight).collect();
            let selected = match c.selection_method {
                PfSelection::Argmax => {
                    let mut best: Option<(usize, f64)> = None;
                    for (i, &w) in finals.iter().enumerate() {
                        if best.is_none_or(|(_, b)| w > b) {
                            best = Some((i, w));
                        }
                    }
                    best.map(|(i, _)| i)
                }
                PfSelection::Sample => {
                    let mut pick = SeededRng::derive(input.seed, "particle-filtering/select");
                    resample(&softmax(&finals), 1, Resampling::Multinomial, &mut pick)
                        .first()
                        .copied()
                }
            };
            let mut candidates: Vec<Candidate> = last
                .iter()
                .zip(&finals)
                .map(|(p, &w)| {
                    let t = p.trajectory();
                    let text = t.full_text();
                    Candidate {
                        answer: setup.extract(&text),
                        text,
                        votes: None,
                        score: Some(w),
                        finish_reason: FinishReason::Stop,
                        completion_tokens: Some(t.tokens),
                    }
                })
                .collect();
            let mut answer = None;
            if let Some(i) = selected {
                let seed = call_seed(input.seed, &format!("{NAME}/answer"));
                let t = answer_phase(
                    setup,
                    &generator,
                    &scorer,
                    backend,
                    &mut trace,
                    last[i].trajectory(),
                    1,
                    false,
                    seed,
                )
                .await?;
                trace.selected = Some(t.node);
                let text = t.full_text();
                answer = setup.extract(&text);
                candidates[i].text = text;
                candidates[i].answer = answer.clone();
                candidates[i].completion_tokens = Some(t.tokens);
            }
            trace.stopped = "particles_stopped".into();
            Ok(StrategyOutcome {
                answer,
                selected,
                candidates,
                details: serde_json::json!({
                    "particles": self.particles,
                    "num_iterations": c.num_iterations,
                    "num_ref_particles": self.refs,
                    "final_log_weights": finals,
                    "reward_calls": trace.reward_calls,
                    "search": trace.to_json(),
                }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_by_hand() {
        // ln(0.75 / 0.25) = ln 3; clipping keeps 0 and 1 finite.
        assert!((log_weight(0.75) - 3f64.ln()).abs() < 1e-12);
        assert!((log_weight(0.0) - (1e-7f64 / (1.0 - 1e-7)).ln()).abs() < 1e-9);
        assert!(log_weight(1.0).is_finite());
        // softmax(ln 1, ln 3) = (1/4, 3/4).
        let w = softmax(&[0.0, 3f64.ln()]);
        assert!((w[0] - 0.25).abs() < 1e-12 && (w[1] - 0.75).abs() < 1e-12);
    }

    #[test]
    fn systematic_resampling_follows_the_weights() {
        // Weights (1/4, 3/4), 4 draws at u0 + k/4: one of the first, three of the second.
        let mut rng = SeededRng::new(3);
        let drawn = resample(&[0.25, 0.75], 4, Resampling::Systematic, &mut rng);
        assert_eq!(drawn.iter().filter(|&&k| k == 0).count(), 1);
        assert_eq!(drawn.iter().filter(|&&k| k == 1).count(), 3);
        // A zero weight is never drawn.
        let drawn = resample(&[0.0, 1.0, 0.0], 50, Resampling::Multinomial, &mut rng);
        assert!(drawn.iter().all(|&k| k == 1));
    }

    #[test]
    fn resample_when_parses() {
        assert_eq!(parse_resample_when("always"), Some(Ok(None)));
        assert_eq!(parse_resample_when("ess_below(0.5)"), Some(Ok(Some(0.5))));
        assert!(matches!(parse_resample_when("ess_below(2)"), Some(Err(_))));
        assert_eq!(parse_resample_when("sometimes"), None);
    }
}
