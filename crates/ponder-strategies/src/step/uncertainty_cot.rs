//! Uncertainty-triggered chain of thought (reference §1.12, after UnCert-CoT): each step starts
//! with a probe of the model's uncertainty at the current prefix; only when it exceeds
//! `uncertainty_threshold` are `N` full-step candidates sampled and the least uncertain kept.
//! Otherwise the step is decoded once.
//!
//! Uncertainty of a step: `u = 1 − v`, `v` the validity `1 / (1 + U)` the configured logprob
//! scorer gives it (entropy by default). A probe without usable logprobs counts as uncertain.
//!
//! The `token` probe asks for exactly one token (`max_tokens = 1`, `min_tokens = 0`; the §1.12
//! FIX) and reads `u0` from that position: the normalised entropy of the renormalised top-k, or
//! the PD-gap `1 − (q1 − q2)`.

use std::sync::Arc;

use ponder_core::{
    Backend, BoxFuture, BuildError, Capabilities, Capability, ParamSpec, Params, Strategy,
    StrategyError, StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome, TokenLogprob,
};
use serde::{Deserialize, Serialize};

use crate::scoring::{aggregate, Aggregation};
use crate::step::scorer::ScoreItem;
use crate::step::trace::{IterationRecord, NodeDecision, SearchTrace};
use crate::step::{
    answer_phase, argmax, call_seed, common_params, invalid, parse_step_params, CallKind,
    CompletionReason, StepCandidate, StepDefaults, StepSetup, Trajectory, ONLINE_DEFAULTS,
};

const NAME: &str = "uncertainty-cot";

/// Sampling as online search, with the shorter steps of §2.2.3 (10 / 500 tokens).
const DEFAULTS: StepDefaults = StepDefaults {
    min_step_tokens: (10, "10"),
    max_step_tokens: (500, "500"),
    ..ONLINE_DEFAULTS
};

/// Newline-delimited steps unless the user picks markers (§1.12 markers row).
const NEWLINE_MARKERS: [&str; 2] = ["\n", "\n\n"];

/// Probe granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// One full step, kept when certain enough.
    Sequence,
    /// One token, always discarded.
    Token,
}

/// The uncertainty of the token probe's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUncertainty {
    /// Entropy of the renormalised top-k divided by `ln k`.
    NormalizedEntropy,
    /// `1 − (q1 − q2)` of the renormalised top-k.
    PdGap,
}

/// How an untriggered step is decoded in token mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LowUncertaintyDecoding {
    Sample,
    /// Temperature 0.
    Greedy,
}

/// The strategy's own parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UncertaintyCotConfig {
    /// Candidates of an uncertain step (`N`). Default: 8.
    #[serde(default = "default_candidates")]
    pub candidates_per_step: u32,
    /// Step cap. Default: 20.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Stop once more chosen steps than this are empty. Default: 5.
    #[serde(default = "default_max_empty")]
    pub max_empty_steps: u32,
    /// Trigger level of `u0`. Default: 0.3.
    #[serde(default = "default_threshold")]
    pub uncertainty_threshold: f64,
    /// Default: `sequence`.
    #[serde(default = "default_probe")]
    pub uncertainty_sampling: ProbeKind,
    /// Default: `normalized_entropy`.
    #[serde(default = "default_token_uncertainty")]
    pub token_uncertainty: TokenUncertainty,
    /// Default: `sample`.
    #[serde(default = "default_low")]
    pub low_uncertainty_decoding: LowUncertaintyDecoding,
}

fn default_candidates() -> u32 {
    8
}
fn default_max_steps() -> u32 {
    20
}
fn default_max_empty() -> u32 {
    5
}
fn default_threshold() -> f64 {
    0.3
}
fn default_probe() -> ProbeKind {
    ProbeKind::Sequence
}
fn default_token_uncertainty() -> TokenUncertainty {
    TokenUncertainty::NormalizedEntropy
}
fn default_low() -> LowUncertaintyDecoding {
    LowUncertaintyDecoding::Sample
}

const OWN: &[ParamSpec] = &[
    ParamSpec {
        name: "candidates_per_step",
        default: "8",
        description: "candidates of an uncertain step (1–64)",
    },
    ParamSpec {
        name: "max_steps",
        default: "20",
        description: "step cap (1–500)",
    },
    ParamSpec {
        name: "max_empty_steps",
        default: "5",
        description: "stop once more chosen steps than this are empty",
    },
    ParamSpec {
        name: "uncertainty_threshold",
        default: "0.3",
        description: "sample N candidates when the probe's uncertainty exceeds this (≥ 0)",
    },
    ParamSpec {
        name: "uncertainty_sampling",
        default: "sequence",
        description: "probe: sequence (one step, kept when certain) | token (one token)",
    },
    ParamSpec {
        name: "token_uncertainty",
        default: "normalized_entropy",
        description: "token probe: normalized_entropy | pd_gap",
    },
    ParamSpec {
        name: "low_uncertainty_decoding",
        default: "sample",
        description: "token mode, certain step: sample | greedy",
    },
];

fn params() -> Vec<ParamSpec> {
    let mut p = common_params(&DEFAULTS);
    for spec in &mut p {
        match spec.name {
            "scorer" => spec.default = "entropy",
            "markers" => spec.default = "[] (all off)",
            "custom_markers" => spec.default = "[\"\\n\", \"\\n\\n\"]",
            _ => {}
        }
    }
    p.extend_from_slice(OWN);
    p
}

/// The user's parameters with this strategy's defaults for the shared ones filled in.
fn with_defaults(params: &Params) -> Params {
    let mut p = params.clone();
    p.entry("scorer".into())
        .or_insert_with(|| serde_json::json!("entropy"));
    let markers_set = ["markers", "custom_markers", "custom_words"]
        .iter()
        .any(|k| p.contains_key(*k));
    let structured = p.get("detector").and_then(|d| d.as_str()) == Some("structured");
    if !markers_set && !structured {
        p.insert("markers".into(), serde_json::json!([]));
        p.insert("custom_markers".into(), serde_json::json!(NEWLINE_MARKERS));
    }
    p
}

/// Builds [`UncertaintyCot`].
#[derive(Debug, Default)]
pub struct UncertaintyCotFactory;

impl StrategyFactory for UncertaintyCotFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: NAME,
            summary: "probe each step's uncertainty; sample N candidates and keep the least \
                      uncertain only above the threshold",
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
        let params = with_defaults(params);
        let (common, config): (_, UncertaintyCotConfig) =
            parse_step_params(NAME, &params, &common_params(&DEFAULTS), OWN)?;
        let setup = StepSetup::build(NAME, common, &DEFAULTS, backend_name, capabilities)?;
        if setup.config.scorer.uncertainty().is_none() {
            return Err(invalid(
                NAME,
                "scorer",
                format!(
                    "must be a logprob scorer (entropy, perplexity, sequence_prob, pd_gap), \
                     got `{}`",
                    setup.config.scorer.as_str()
                ),
            ));
        }
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
        let t = config.uncertainty_threshold;
        if !(t.is_finite() && t >= 0.0) {
            return Err(invalid(
                NAME,
                "uncertainty_threshold",
                format!("must be finite and ≥ 0, got {t}"),
            ));
        }
        Ok(Arc::new(UncertaintyCot { setup, config }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct UncertaintyCot {
    setup: StepSetup,
    config: UncertaintyCotConfig,
}

/// One step's probe and decision, recorded in `details["search"]["probes"]`.
#[derive(Debug, Clone, Serialize)]
struct ProbeRecord {
    step: usize,
    /// Trace node of the probe.
    probe: usize,
    /// `u0` (`None`: no usable logprobs, counted as uncertain).
    uncertainty: Option<f64>,
    triggered: bool,
    /// Candidates sampled after the probe.
    candidates: u32,
    chosen: usize,
    /// The chosen step's uncertainty `1 − v`.
    chosen_uncertainty: Option<f64>,
}

/// Uncertainty of the first token's position from its top-k list, renormalised.
fn token_uncertainty(kind: TokenUncertainty, tokens: Option<&[TokenLogprob]>) -> Option<f64> {
    let first = tokens?.first()?;
    let ps: Vec<f64> = first
        .top
        .iter()
        .map(|e| e.logprob)
        .filter(|l| l.is_finite() && *l > -9999.0)
        .map(f64::exp)
        .collect();
    let total: f64 = ps.iter().sum();
    if ps.is_empty() || total <= 0.0 {
        return None;
    }
    let mut q: Vec<f64> = ps.iter().map(|p| p / total).collect();
    q.sort_by(|a, b| b.total_cmp(a));
    Some(match kind {
        TokenUncertainty::NormalizedEntropy => {
            if q.len() < 2 {
                return Some(0.0);
            }
            let h: f64 = q.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.ln()).sum();
            h / (q.len() as f64).ln()
        }
        TokenUncertainty::PdGap => 1.0 - (q[0] - q.get(1).copied().unwrap_or(0.0)),
    })
}

impl Strategy for UncertaintyCot {
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
            let mut token_probe = generator.clone();
            token_probe.max_step_tokens = 1;
            token_probe.min_step_tokens = 0;
            let mut greedy = generator.clone();
            greedy.sampling.temperature = Some(0.0);
            let scorer = setup.scorer(input);
            let mut trace = SearchTrace::new(NAME, scorer.kind.as_str());
            let mut trajectory = Trajectory::empty();
            let mut records: Vec<ProbeRecord> = Vec::new();
            let mut empty_steps = 0u32;
            let mut fallbacks = 0usize;
            let mut stopped = "max_steps";
            for step in 1..=c.max_steps as usize {
                if setup.out_of_context(trajectory.tokens, c.max_steps) {
                    trajectory.complete = true;
                    trajectory.reason = Some(CompletionReason::ContextLimit);
                    stopped = "context_limit";
                    break;
                }
                let probe_seed = call_seed(input.seed, &format!("{NAME}/step/{step}/probe"));
                let probe_gen = match c.uncertainty_sampling {
                    ProbeKind::Sequence => &generator,
                    ProbeKind::Token => &token_probe,
                };
                let probes = probe_gen
                    .generate(
                        backend,
                        &trajectory.text,
                        &trajectory.lead,
                        1,
                        probe_seed,
                        CallKind::Step,
                    )
                    .await?;
                let Some(probe) = probes.into_iter().next() else {
                    stopped = "no_candidates";
                    break;
                };
                let (u0, probe_score, probe_call) = match c.uncertainty_sampling {
                    ProbeKind::Sequence => {
                        let item = ScoreItem {
                            parent_steps: &trajectory.steps,
                            candidate: &probe,
                            lookahead: &[],
                        };
                        let (s, call) = scorer.score(backend, &[item]).await?;
                        let v = s.first().copied().flatten();
                        (v.map(|v| 1.0 - v), v, Some(call))
                    }
                    ProbeKind::Token => (
                        token_uncertainty(c.token_uncertainty, probe.tokens.as_deref()),
                        None,
                        None,
                    ),
                };
                let triggered = u0.is_none_or(|u| u > c.uncertainty_threshold);
                let probe_id = trace.add(trajectory.node, 0, &probe, probe_score, None, false);
                // The pool the step is chosen from, its scores and trace nodes.
                let (pool, scores, scoring, drawn): (Vec<StepCandidate>, _, _, u32) = if triggered {
                    let seed = call_seed(input.seed, &format!("{NAME}/step/{step}/paths"));
                    let pool = generator
                        .generate(
                            backend,
                            &trajectory.text,
                            &trajectory.lead,
                            c.candidates_per_step,
                            seed,
                            CallKind::Step,
                        )
                        .await?;
                    let items: Vec<ScoreItem<'_>> = pool
                        .iter()
                        .map(|cand| ScoreItem {
                            parent_steps: &trajectory.steps,
                            candidate: cand,
                            lookahead: &[],
                        })
                        .collect();
                    let (s, call) = scorer.score(backend, &items).await?;
                    (pool, s, Some(call), c.candidates_per_step)
                } else if c.uncertainty_sampling == ProbeKind::Token {
                    let seed = call_seed(input.seed, &format!("{NAME}/step/{step}/direct"));
                    let decoder = match c.low_uncertainty_decoding {
                        LowUncertaintyDecoding::Sample => &generator,
                        LowUncertaintyDecoding::Greedy => &greedy,
                    };
                    let pool = decoder
                        .generate(
                            backend,
                            &trajectory.text,
                            &trajectory.lead,
                            1,
                            seed,
                            CallKind::Step,
                        )
                        .await?;
                    let items: Vec<ScoreItem<'_>> = pool
                        .iter()
                        .map(|cand| ScoreItem {
                            parent_steps: &trajectory.steps,
                            candidate: cand,
                            lookahead: &[],
                        })
                        .collect();
                    let (s, call) = scorer.score(backend, &items).await?;
                    (pool, s, Some(call), 1)
                } else {
                    (vec![probe.clone()], vec![probe_score], probe_call, 0)
                };
                // The sequence probe kept as the step is its own node; others are new nodes.
                let kept_probe = !triggered && c.uncertainty_sampling == ProbeKind::Sequence;
                let ids: Vec<usize> = if kept_probe {
                    vec![probe_id]
                } else {
                    pool.iter()
                        .zip(&scores)
                        .map(|(cand, s)| trace.add(trajectory.node, 0, cand, *s, None, false))
                        .collect()
                };
                let best = match argmax(&scores) {
                    Some(i) => i,
                    None => {
                        fallbacks += usize::from(pool.len() > 1);
                        0
                    }
                };
                let (Some(chosen), Some(&chosen_id)) = (pool.get(best), ids.get(best)) else {
                    trace.decide(probe_id, NodeDecision::Pruned);
                    stopped = "no_candidates";
                    break;
                };
                let score = scores.get(best).copied().flatten();
                let next = trajectory.child(chosen, score, chosen_id);
                if !kept_probe {
                    trace.decide(probe_id, NodeDecision::Pruned);
                }
                for (i, id) in ids.iter().enumerate() {
                    let decision = match (i == best, next.complete) {
                        (true, true) => NodeDecision::Finished,
                        (true, false) => NodeDecision::Kept,
                        (false, _) => NodeDecision::Pruned,
                    };
                    trace.decide(*id, decision);
                }
                let mut children = ids.clone();
                if !kept_probe {
                    children.insert(0, probe_id);
                }
                trace.iteration(IterationRecord {
                    step,
                    group: None,
                    expanded: vec![trajectory.node],
                    pruned: children
                        .iter()
                        .copied()
                        .filter(|&id| id != chosen_id)
                        .collect(),
                    children,
                    kept: if next.complete {
                        vec![]
                    } else {
                        vec![chosen_id]
                    },
                    finished: if next.complete {
                        vec![chosen_id]
                    } else {
                        vec![]
                    },
                    scoring,
                    resampled: Vec::new(),
                    ess: None,
                });
                records.push(ProbeRecord {
                    step,
                    probe: probe_id,
                    uncertainty: u0,
                    triggered,
                    candidates: drawn,
                    chosen: chosen_id,
                    chosen_uncertainty: score.map(|v| 1.0 - v),
                });
                let empty = chosen.step_text().is_empty();
                trajectory = next;
                if trajectory.complete {
                    stopped = "trajectory_complete";
                    break;
                }
                if empty {
                    empty_steps += 1;
                    if empty_steps > c.max_empty_steps {
                        stopped = "empty_steps";
                        break;
                    }
                }
            }
            let max_steps_hit = !trajectory.complete && stopped == "max_steps";
            let seed = call_seed(input.seed, &format!("{NAME}/answer"));
            let trajectory = answer_phase(
                setup,
                &generator,
                &scorer,
                backend,
                &mut trace,
                trajectory,
                c.candidates_per_step,
                true,
                seed,
            )
            .await?;
            trace.selected = Some(trajectory.node);
            trace.stopped = stopped.to_string();
            let text = trajectory.full_text();
            let answer = setup.extract(&text);
            let score = aggregate(&trajectory.scores, Aggregation::Mean, None);
            let multi = records.iter().filter(|r| r.triggered).count();
            let mut search = trace.to_json();
            search["probes"] = serde_json::json!({
                "uncertainty_sampling": c.uncertainty_sampling,
                "token_uncertainty": c.token_uncertainty,
                "threshold": c.uncertainty_threshold,
                "steps": records,
            });
            Ok(super::one_trajectory(
                text,
                answer,
                score,
                trajectory.tokens,
                serde_json::json!({
                    "steps": trajectory.steps.len(),
                    "greedy_steps": records.len() - multi,
                    "multi_path_steps": multi,
                    "empty_steps": empty_steps,
                    "step_scores": trajectory.scores,
                    "fallbacks": fallbacks,
                    "completion_reason": trajectory.reason,
                    "max_steps_hit": max_steps_hit,
                    "search": search,
                }),
            ))
        })
    }
}
