//! Adaptive scaling, MUR (momentum uncertainty; reference §1.11): every step starts with one
//! probe candidate; only when the probe's uncertainty signal rises above the running momentum of
//! the chosen steps' signals (by the margin `−ln γ`) are more candidates drawn, scored and the
//! best kept. Otherwise the probe is accepted unscored. Completion and the answer phase are those
//! of online best-of-N. A probe without usable logprobs has no signal: it is accepted (not
//! scaled) and leaves the momentum unchanged.
//!
//! Differences from upstream (§1.11 FIX): with `reuse_probe` (default) the probe joins the
//! scaled pool instead of being billed and thrown away; the signal can follow the configured
//! scorer (`signal = scorer_uncertainty`); `threshold` is implemented.

use std::sync::Arc;

use ponder_core::{
    Backend, BoxFuture, BuildError, Capabilities, Capability, ParamSpec, Params, Strategy,
    StrategyError, StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome, TokenLogprob,
};
use serde::{Deserialize, Serialize};

use crate::scoring::{aggregate, uncertainty, Aggregation, Uncertainty};
use crate::step::scorer::ScoreItem;
use crate::step::trace::{IterationRecord, NodeDecision, SearchTrace};
use crate::step::{
    answer_phase, argmax, call_seed, common_params, invalid, parse_step_params, CallKind,
    CompletionReason, StepCandidate, StepSetup, Trajectory, ONLINE_DEFAULTS,
};

const NAME: &str = "adaptive-scaling";

/// When a step is scaled (§1.11, the alternatives table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingMethod {
    /// MUR: `t > 0` and `s_t > m_{t−1} − ln γ`.
    Momentum,
    /// `t > 0` and the mean of the chosen steps' signals is below `s_t`.
    Average,
    /// `s_t > threshold`.
    Threshold,
    /// Odd steps (upstream's deterministic alternation).
    Random,
    /// Every step (online best-of-N with a probe).
    Always,
    /// No step (step-wise chain of thought).
    Never,
}

/// The per-step uncertainty signal `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Mean negative log-likelihood of the step's tokens.
    MeanNll,
    /// Mean top-k entropy of the step's tokens.
    Entropy,
    /// The uncertainty `U` of the configured logprob scorer.
    ScorerUncertainty,
}

/// The momentum before the first update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentumInit {
    /// `m = 0` (perfect confidence); early steps lean towards scaling.
    Zero,
    /// `m_0 = s_0`: the first chosen step's signal.
    FirstSignal,
}

/// The strategy's own parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveScalingConfig {
    /// Candidates when a step is scaled (`N`). Default: 8.
    #[serde(default = "default_candidates")]
    pub candidates_per_step: u32,
    /// Step cap. Default: 100.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// `γ`: the margin is `−ln γ`. Default: 0.9.
    #[serde(default = "default_rate")]
    pub scaling_rate: f64,
    /// `α`: momentum decay. Default: 0.9.
    #[serde(default = "default_rate")]
    pub momentum_rate: f64,
    /// Default: `momentum`.
    #[serde(default = "default_method")]
    pub adaptive_scaling_method: ScalingMethod,
    /// Absolute signal threshold of `threshold` (required there).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Default: `mean_nll`.
    #[serde(default = "default_signal")]
    pub signal: Signal,
    /// Default: `zero`.
    #[serde(default = "default_init")]
    pub momentum_init: MomentumInit,
    /// Count the probe among the `N` candidates of a scaled step. Default: true.
    #[serde(default = "default_true")]
    pub reuse_probe: bool,
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
fn default_rate() -> f64 {
    0.9
}
fn default_method() -> ScalingMethod {
    ScalingMethod::Momentum
}
fn default_signal() -> Signal {
    Signal::MeanNll
}
fn default_init() -> MomentumInit {
    MomentumInit::Zero
}
fn default_true() -> bool {
    true
}

const OWN: &[ParamSpec] = &[
    ParamSpec {
        name: "candidates_per_step",
        default: "8",
        description: "candidates of a scaled step (1–64)",
    },
    ParamSpec {
        name: "max_steps",
        default: "100",
        description: "step cap (1–500)",
    },
    ParamSpec {
        name: "scaling_rate",
        default: "0.9",
        description: "γ in (0, 1]: scale when the signal exceeds the momentum by −ln γ",
    },
    ParamSpec {
        name: "momentum_rate",
        default: "0.9",
        description: "α in [0, 1]: m ← α·m + (1 − α)·s(chosen step)",
    },
    ParamSpec {
        name: "adaptive_scaling_method",
        default: "momentum",
        description: "momentum | average | threshold | random | always | never",
    },
    ParamSpec {
        name: "threshold",
        default: "none",
        description: "absolute signal threshold (method `threshold` only, required there)",
    },
    ParamSpec {
        name: "signal",
        default: "mean_nll",
        description: "step uncertainty signal: mean_nll | entropy | scorer_uncertainty",
    },
    ParamSpec {
        name: "momentum_init",
        default: "zero",
        description: "zero | first_signal (m_0 = the first step's signal)",
    },
    ParamSpec {
        name: "reuse_probe",
        default: "true",
        description: "count the probe among the N candidates of a scaled step",
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

/// Builds [`AdaptiveScaling`].
#[derive(Debug, Default)]
pub struct AdaptiveScalingFactory;

impl StrategyFactory for AdaptiveScalingFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: NAME,
            summary: "MUR: one probe per step, more candidates only when its uncertainty rises \
                      above the running momentum",
            params: params(),
            requires: vec![Capability::PrefixContinuation, Capability::Logprobs],
        }
    }

    fn build(
        &self,
        params: &Params,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        let (common, config): (_, AdaptiveScalingConfig) =
            parse_step_params(NAME, params, &common_params(&ONLINE_DEFAULTS), OWN)?;
        let mut setup =
            StepSetup::build(NAME, common, &ONLINE_DEFAULTS, backend_name, capabilities)?;
        // The signal is read from the logprobs of every probe, whatever the scorer.
        if !capabilities.has(Capability::Logprobs) {
            return Err(BuildError::MissingCapability {
                strategy: NAME.into(),
                backend: backend_name.into(),
                capability: Capability::Logprobs,
            });
        }
        let most = capabilities.max_top_logprobs.unwrap_or(0);
        let k = setup.config.top_logprobs;
        if k == 0 || k > most {
            return Err(invalid(
                NAME,
                "top_logprobs",
                format!("must be in 1..={most} on this backend, got {k}"),
            ));
        }
        setup.sampling.top_logprobs = Some(k);
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
        if !(config.scaling_rate > 0.0 && config.scaling_rate <= 1.0) {
            return Err(invalid(
                NAME,
                "scaling_rate",
                format!("must be in (0, 1], got {}", config.scaling_rate),
            ));
        }
        if !(0.0..=1.0).contains(&config.momentum_rate) {
            return Err(invalid(
                NAME,
                "momentum_rate",
                format!("must be in [0, 1], got {}", config.momentum_rate),
            ));
        }
        match (config.adaptive_scaling_method, config.threshold) {
            (ScalingMethod::Threshold, None) => {
                return Err(invalid(
                    NAME,
                    "threshold",
                    "required with adaptive_scaling_method = threshold",
                ))
            }
            (ScalingMethod::Threshold, Some(t)) if !t.is_finite() => {
                return Err(invalid(NAME, "threshold", "must be finite"))
            }
            (ScalingMethod::Threshold, _) | (_, None) => {}
            (_, Some(_)) => {
                return Err(invalid(
                    NAME,
                    "threshold",
                    "only used with adaptive_scaling_method = threshold",
                ))
            }
        }
        let estimator = match config.signal {
            Signal::MeanNll => Uncertainty::Perplexity,
            Signal::Entropy => Uncertainty::Entropy,
            Signal::ScorerUncertainty => setup.config.scorer.uncertainty().ok_or_else(|| {
                invalid(
                    NAME,
                    "signal",
                    format!(
                        "scorer_uncertainty needs a logprob scorer, not `{}`",
                        setup.config.scorer.as_str()
                    ),
                )
            })?,
        };
        if config.final_answer_candidates == Some(0) {
            return Err(invalid(
                NAME,
                "final_answer_candidates",
                "must be at least 1",
            ));
        }
        Ok(Arc::new(AdaptiveScaling {
            setup,
            config,
            estimator,
        }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct AdaptiveScaling {
    setup: StepSetup,
    config: AdaptiveScalingConfig,
    estimator: Uncertainty,
}

/// One step's scaling decision, recorded in `details["search"]["scaling"]`.
#[derive(Debug, Clone, Serialize)]
struct ScalingRecord {
    step: usize,
    /// The probe's signal `s_t` (`None`: no usable logprobs).
    signal: Option<f64>,
    /// The momentum before the step.
    momentum: f64,
    /// The level the signal had to exceed (`None` for methods without one).
    level: Option<f64>,
    scaled: bool,
    /// Candidates drawn beyond the probe.
    extra_candidates: u32,
    /// Trace node of the probe and of the chosen step.
    probe: usize,
    chosen: usize,
    /// The chosen step's signal, which updates the momentum.
    chosen_signal: Option<f64>,
}

impl AdaptiveScaling {
    fn signal(&self, tokens: Option<&[TokenLogprob]>) -> Option<f64> {
        tokens
            .and_then(|t| uncertainty(self.estimator, t))
            .filter(|s| s.is_finite())
    }

    /// Whether step `t` (0-based) is scaled, and the level its signal was compared with.
    fn decide(
        &self,
        t: usize,
        signal: Option<f64>,
        momentum: f64,
        history: &[f64],
    ) -> (bool, Option<f64>) {
        let c = &self.config;
        match c.adaptive_scaling_method {
            ScalingMethod::Momentum => {
                let level = momentum - c.scaling_rate.ln();
                (t > 0 && signal.is_some_and(|s| s > level), Some(level))
            }
            ScalingMethod::Average => {
                if history.is_empty() {
                    return (false, None);
                }
                let mean = history.iter().sum::<f64>() / history.len() as f64;
                (t > 0 && signal.is_some_and(|s| mean < s), Some(mean))
            }
            ScalingMethod::Threshold => {
                let level = c.threshold.unwrap_or(f64::INFINITY);
                (signal.is_some_and(|s| s > level), Some(level))
            }
            ScalingMethod::Random => (t % 2 == 1, None),
            ScalingMethod::Always => (true, None),
            ScalingMethod::Never => (false, None),
        }
    }
}

impl Strategy for AdaptiveScaling {
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
            let mut records: Vec<ScalingRecord> = Vec::new();
            let mut momentum = 0.0f64;
            let mut history: Vec<f64> = Vec::new();
            let mut fallbacks = 0usize;
            let mut stopped = "max_steps";
            for step in 1..=c.max_steps as usize {
                let t = step - 1;
                if setup.out_of_context(trajectory.tokens, c.max_steps) {
                    trajectory.complete = true;
                    trajectory.reason = Some(CompletionReason::ContextLimit);
                    stopped = "context_limit";
                    break;
                }
                let seed = call_seed(input.seed, &format!("{NAME}/step/{step}/probe"));
                let probes = generator
                    .generate(
                        backend,
                        &trajectory.text,
                        &trajectory.lead,
                        1,
                        seed,
                        CallKind::Step,
                    )
                    .await?;
                let Some(probe) = probes.into_iter().next() else {
                    stopped = "no_candidates";
                    break;
                };
                let signal = self.signal(probe.tokens.as_deref());
                let (scaled, level) = self.decide(t, signal, momentum, &history);
                let momentum_before = momentum;
                // The pool: the probe (when reused or not scaled), then the extra candidates.
                let mut pool: Vec<StepCandidate> = Vec::new();
                let mut ids: Vec<usize> = Vec::new();
                let mut scores: Vec<Option<f64>> = Vec::new();
                let mut scoring = None;
                let mut extra = 0u32;
                let mut probe_id = None;
                let best;
                if scaled {
                    extra = if c.reuse_probe {
                        c.candidates_per_step - 1
                    } else {
                        c.candidates_per_step
                    };
                    if c.reuse_probe {
                        pool.push(probe.clone());
                    } else {
                        // Generated and billed, but not a candidate.
                        let id = trace.add(trajectory.node, 0, &probe, None, None, false);
                        trace.decide(id, NodeDecision::Pruned);
                        probe_id = Some(id);
                    }
                    if extra > 0 {
                        let seed = call_seed(input.seed, &format!("{NAME}/step/{step}/extra"));
                        let more = generator
                            .generate(
                                backend,
                                &trajectory.text,
                                &trajectory.lead,
                                extra,
                                seed,
                                CallKind::Step,
                            )
                            .await?;
                        pool.extend(more);
                    }
                    let items: Vec<ScoreItem<'_>> = pool
                        .iter()
                        .map(|cand| ScoreItem {
                            parent_steps: &trajectory.steps,
                            candidate: cand,
                            lookahead: &[],
                        })
                        .collect();
                    let (s, call) = scorer.score(backend, &items).await?;
                    scores = s;
                    scoring = Some(call);
                    best = match argmax(&scores) {
                        Some(i) => i,
                        None => {
                            fallbacks += 1;
                            0
                        }
                    };
                } else {
                    pool.push(probe.clone());
                    scores.push(None);
                    best = 0;
                }
                for (cand, s) in pool.iter().zip(&scores) {
                    ids.push(trace.add(trajectory.node, 0, cand, *s, None, false));
                }
                let Some(chosen) = pool.get(best) else {
                    // No candidate to extend with (no probe reused and none drawn).
                    stopped = "no_candidates";
                    break;
                };
                let probe_node = probe_id.or_else(|| ids.first().copied()).unwrap_or(0);
                let chosen_signal = self.signal(chosen.tokens.as_deref());
                if let Some(s) = chosen_signal {
                    momentum = match (t, c.momentum_init) {
                        (0, MomentumInit::FirstSignal) => s,
                        _ => c.momentum_rate * momentum + (1.0 - c.momentum_rate) * s,
                    };
                    history.push(s);
                }
                let next = trajectory.child(chosen, scores[best], ids[best]);
                for (i, id) in ids.iter().enumerate() {
                    let decision = match (i == best, next.complete) {
                        (true, true) => NodeDecision::Finished,
                        (true, false) => NodeDecision::Kept,
                        (false, _) => NodeDecision::Pruned,
                    };
                    trace.decide(*id, decision);
                }
                let mut children = ids.clone();
                if let Some(p) = probe_id {
                    children.insert(0, p);
                }
                trace.iteration(IterationRecord {
                    step,
                    group: None,
                    expanded: vec![trajectory.node],
                    pruned: children
                        .iter()
                        .copied()
                        .filter(|&id| id != ids[best])
                        .collect(),
                    children,
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
                    scoring,
                    resampled: Vec::new(),
                    ess: None,
                });
                records.push(ScalingRecord {
                    step,
                    signal,
                    momentum: momentum_before,
                    level,
                    scaled,
                    extra_candidates: extra,
                    probe: probe_node,
                    chosen: ids[best],
                    chosen_signal,
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
            let scaled_steps = records.iter().filter(|r| r.scaled).count();
            let mut search = trace.to_json();
            search["scaling"] = serde_json::json!({
                "method": c.adaptive_scaling_method,
                "signal": c.signal,
                "scaling_rate": c.scaling_rate,
                "momentum_rate": c.momentum_rate,
                "momentum_init": c.momentum_init,
                "reuse_probe": c.reuse_probe,
                "steps": records,
            });
            Ok(super::one_trajectory(
                text,
                answer,
                score,
                trajectory.tokens,
                serde_json::json!({
                    "steps": trajectory.steps.len(),
                    "scaled_steps": scaled_steps,
                    "probe_only_steps": records.len() - scaled_steps,
                    "step_scores": trajectory.scores,
                    "final_momentum": momentum,
                    "fallbacks": fallbacks,
                    "completion_reason": trajectory.reason,
                    "max_steps_hit": max_steps_hit,
                    "search": search,
                }),
            ))
        })
    }
}
