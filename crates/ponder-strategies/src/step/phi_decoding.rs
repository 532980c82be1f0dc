//! φ-decoding (Xu et al., arXiv 2503.13288; reference §1.10): a step beam search whose
//! candidates are valued by foresight. Every step, `M` beams sample `N` next steps each; steps
//! whose confidence (mean token logprob) falls below `μ − k·σ` are pruned in width (refilled to
//! `M` by a softmax draw); each kept step is rolled out to the end of the solution, and its
//! advantage `A = F − F_prev` (rollout mean logprob against the parent's) and the share of its
//! rollout's cluster (TF-IDF, K-means) give the selection weights `P = (softmax(A/τ1) +
//! softmax(c/τ2)) / 2`, from which `M` beams are drawn without replacement (seeded). Foresight
//! stops early (in-depth pruning) once the rollouts agree; the remaining beams are then
//! completed and one completion is picked from the larger of two clusters.
//!
//! Steps end at the `step_stop` delimiters (default: a newline, and the end markers
//! `eos_patterns`), sent as literal stop strings. A rollout is valued by `foresight_value`:
//! its mean token logprob (default, the paper's), its summed token logprob, or the PRM reward
//! of its last step (`prm`, one batched PRM call per step, scoring `parent steps + candidate +
//! the rollout split at the step delimiters`).
//!
//! Differences from the paper's code: beams whose chosen step already ends the solution leave
//! the search (they are finished, not rolled out again), so later steps expand fewer beams;
//! K-means starts from a deterministic farthest-point seeding instead of k-means++.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::{stream, StreamExt, TryStreamExt};
use ponder_core::{
    Backend, BoxFuture, BuildError, Candidate, Capabilities, Capability, FinishReason, ParamSpec,
    Params, SeededRng, Strategy, StrategyError, StrategyFactory, StrategyInfo, StrategyInput,
    StrategyOutcome, TokenLogprob,
};
use serde::{Deserialize, Serialize};

use crate::scoring::{uncertainty, Uncertainty};
use crate::step::scorer::{ScoreItem, StepScorerKind};
use crate::step::trace::{IterationRecord, NodeDecision, SearchTrace};
use crate::step::{
    answer_phase, call_seed, common_params, invalid, parse_step_params, CallKind, StepCandidate,
    StepDefaults, StepSetup, Trajectory, ONLINE_DEFAULTS,
};

const NAME: &str = "phi-decoding";

/// Step sampling at T 0.6 (the paper's `step_temperature`), newline steps of up to 1024 tokens.
const DEFAULTS: StepDefaults = StepDefaults {
    temperature: (0.6, "0.6"),
    min_step_tokens: (1, "1"),
    max_step_tokens: (1024, "1024"),
    ..ONLINE_DEFAULTS
};

/// Softmax temperature of the final pick within the larger cluster (PHI code).
const FINAL_TEMPERATURE: f64 = 0.1;

/// How far above `μ − k·σ` a confidence must be to survive in-width pruning.
const WIDTH_TOLERANCE: f64 = 1e-9;

/// How the final completion is picked within the larger cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSelection {
    /// Sampled ∝ `softmax(A / 0.1)` (seeded), as the paper's code.
    Sample,
    /// The highest advantage.
    Argmax,
}

/// How a foresight rollout is valued (`F`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForesightValue {
    /// Mean token logprob of the rollout (the paper).
    #[default]
    MeanLogprob,
    /// Summed token logprob of the rollout (favours short rollouts).
    SumLogprob,
    /// The PRM reward of the rollout's last step, scored after the trajectory and the
    /// candidate.
    Prm,
}

/// A list of strings, or one string standing for a list of one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The strategy's own parameters (§1.10 table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhiDecodingConfig {
    /// `M`: beams kept per step. Default: 4.
    #[serde(default = "four")]
    pub step_beam_size: u32,
    /// `N`: candidate steps per beam. Default: 4.
    #[serde(default = "four")]
    pub num_rollout: u32,
    /// `T_max`: most steps with foresight. Default: 8.
    #[serde(default = "default_foresight")]
    pub num_foresight: u32,
    /// `T_min`: no in-depth pruning up to this step. Default: 4.
    #[serde(default = "four")]
    pub least_foresight_num: u32,
    /// `K`: K-means clusters. Default: 3.
    #[serde(default = "default_clusters")]
    pub cluster_num: u32,
    /// `δ`: largest-cluster share that stops foresight. Default: 0.7.
    #[serde(default = "default_depth_threshold")]
    pub depth_threshold: f64,
    /// `k`: in-width pruning margin in standard deviations. Default: 1.0.
    #[serde(default = "default_sigma_rate")]
    pub sigma_rate: f64,
    /// `τ1`. Default: 0.6.
    #[serde(default = "default_softmax_temperature")]
    pub advantage_temperature: f64,
    /// `τ2`. Default: 0.6.
    #[serde(default = "default_softmax_temperature")]
    pub cluster_temperature: f64,
    /// Softmax temperature of the refill after in-width pruning. Default: 0.1.
    #[serde(default = "default_refill_temperature")]
    pub refill_temperature: f64,
    /// Sampling temperature of the rollouts. Default: 0.6.
    #[serde(default = "default_softmax_temperature")]
    pub rollout_temperature: f64,
    /// Token cap of a rollout. Default: 1024.
    #[serde(default = "default_rollout_tokens")]
    pub max_rollout_tokens: u32,
    /// Token cap of a beam's final completion. Default: 3000.
    #[serde(default = "default_final_tokens")]
    pub max_final_tokens: u32,
    /// Default: `sample`.
    #[serde(default = "default_final_selection")]
    pub final_selection: FinalSelection,
    /// Step delimiters, literal stop strings (a single string is a list of one, as DVTS
    /// spells it). Default: `["\n"]` plus the end markers (`eos_patterns`), which are always
    /// stop strings.
    #[serde(default)]
    pub step_stop: Option<OneOrMany>,
    /// How a rollout is valued: `mean_logprob`, `sum_logprob` or `prm`. Default:
    /// `mean_logprob`.
    #[serde(default)]
    pub foresight_value: ForesightValue,
}

fn four() -> u32 {
    4
}
fn default_foresight() -> u32 {
    8
}
fn default_clusters() -> u32 {
    3
}
fn default_depth_threshold() -> f64 {
    0.7
}
fn default_sigma_rate() -> f64 {
    1.0
}
fn default_softmax_temperature() -> f64 {
    0.6
}
fn default_refill_temperature() -> f64 {
    0.1
}
fn default_rollout_tokens() -> u32 {
    1024
}
fn default_final_tokens() -> u32 {
    3000
}
fn default_final_selection() -> FinalSelection {
    FinalSelection::Sample
}

const OWN: &[ParamSpec] = &[
    ParamSpec {
        name: "step_beam_size",
        default: "4",
        description: "M: beams kept per step (1–16)",
    },
    ParamSpec {
        name: "num_rollout",
        default: "4",
        description: "N: candidate steps per beam (1–16)",
    },
    ParamSpec {
        name: "num_foresight",
        default: "8",
        description: "T_max: most steps with foresight (1–200)",
    },
    ParamSpec {
        name: "least_foresight_num",
        default: "4",
        description: "T_min: no in-depth pruning up to this step",
    },
    ParamSpec {
        name: "cluster_num",
        default: "3",
        description: "K: K-means clusters of the rollouts (1–16)",
    },
    ParamSpec {
        name: "depth_threshold",
        default: "0.7",
        description: "δ in (0, 1]: largest-cluster share that stops foresight",
    },
    ParamSpec {
        name: "sigma_rate",
        default: "1.0",
        description: "k ≥ 0: keep candidate steps with confidence above μ − k·σ",
    },
    ParamSpec {
        name: "advantage_temperature",
        default: "0.6",
        description: "τ1 > 0: softmax temperature of the advantages",
    },
    ParamSpec {
        name: "cluster_temperature",
        default: "0.6",
        description: "τ2 > 0: softmax temperature of the cluster shares",
    },
    ParamSpec {
        name: "refill_temperature",
        default: "0.1",
        description: "softmax temperature of the refill after in-width pruning (> 0)",
    },
    ParamSpec {
        name: "rollout_temperature",
        default: "0.6",
        description: "sampling temperature of the foresight rollouts (≥ 0)",
    },
    ParamSpec {
        name: "max_rollout_tokens",
        default: "1024",
        description: "token cap of a foresight rollout",
    },
    ParamSpec {
        name: "max_final_tokens",
        default: "3000",
        description: "token cap of a beam's final completion",
    },
    ParamSpec {
        name: "final_selection",
        default: "sample",
        description: "pick in the larger final cluster: sample (∝ softmax(A/0.1)) | argmax",
    },
    ParamSpec {
        name: "step_stop",
        default: "[\"\\n\", end markers (eos_patterns)]",
        description: "step delimiters: non-empty literal stop strings, a list or one string \
                      (the end and answer markers are always added); not with markers, \
                      custom_markers, custom_words or detector = structured",
    },
    ParamSpec {
        name: "foresight_value",
        default: "mean_logprob",
        description: "rollout value F: mean_logprob | sum_logprob | prm (PRM reward of the \
                      rollout's last step; needs process rewards)",
    },
];

fn params() -> Vec<ParamSpec> {
    let mut p = common_params(&DEFAULTS);
    for spec in &mut p {
        match spec.name {
            "scorer" => spec.default = "perplexity",
            "markers" => spec.default = "[] (all off; steps end at step_stop)",
            "custom_markers" => spec.default = "[] (steps end at step_stop)",
            _ => {}
        }
    }
    p.extend_from_slice(OWN);
    p
}

/// Parameters that set the step boundaries another way than `step_stop`.
/// (`step_patterns` only matter with `detector = structured`, which is checked on its own.)
const BOUNDARY_PARAMS: &[&str] = &["markers", "custom_markers", "custom_words"];

/// Whether the user set the step boundaries with the shared detector parameters (then
/// `step_stop` does not apply).
fn boundaries_set(params: &Params) -> bool {
    BOUNDARY_PARAMS.iter().any(|k| params.contains_key(*k))
        || params.get("detector").and_then(|d| d.as_str()) == Some("structured")
}

/// The user's parameters with this strategy's shared defaults: no marker words (the steps end
/// at `step_stop`), and a logprob scorer (only the answer phase of a trajectory without an
/// answer uses it).
fn with_defaults(params: &Params) -> Params {
    let mut p = params.clone();
    p.entry("scorer".into())
        .or_insert_with(|| serde_json::json!("perplexity"));
    if !boundaries_set(params) {
        p.insert("markers".into(), serde_json::json!([]));
        p.insert("custom_markers".into(), serde_json::json!([]));
    }
    p
}

/// Splits `text` at every delimiter (the leftmost match, the longest at a position), dropping
/// the delimiters; pieces are trimmed and empty ones dropped.
fn split_at_delimiters(text: &str, delimiters: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece_start = 0;
    let mut i = 0;
    while i < text.len() {
        let hit = delimiters
            .iter()
            .filter(|d| !d.is_empty() && text[i..].starts_with(d.as_str()))
            .map(String::len)
            .max();
        match hit {
            Some(len) => {
                out.push(text[piece_start..i].trim().to_string());
                i += len;
                piece_start = i;
            }
            None => {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    out.push(text[piece_start..].trim().to_string());
    out.retain(|p| !p.is_empty());
    out
}

/// Builds [`PhiDecoding`].
#[derive(Debug, Default)]
pub struct PhiDecodingFactory;

impl StrategyFactory for PhiDecodingFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: NAME,
            summary: "φ-decoding: step beams valued by foresight rollouts (advantage and \
                      cluster share), with width and depth pruning",
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
        let user_boundaries = boundaries_set(params);
        if params.contains_key("step_stop") && user_boundaries {
            let other = BOUNDARY_PARAMS
                .iter()
                .find(|k| params.contains_key(**k))
                .copied()
                .unwrap_or("detector");
            return Err(invalid(
                NAME,
                "step_stop",
                format!("cannot be combined with `{other}`: set the step boundaries one way"),
            ));
        }
        let params = with_defaults(params);
        let (common, config): (_, PhiDecodingConfig) =
            parse_step_params(NAME, &params, &common_params(&DEFAULTS), OWN)?;
        let mut setup = StepSetup::build(NAME, common, &DEFAULTS, backend_name, capabilities)?;
        // Step delimiters: `step_stop` (default a newline) joins the end and answer markers
        // the detector already stops at; with the shared marker parameters it does not apply.
        let delimiters: Vec<String> = match config.step_stop.clone().map(OneOrMany::into_vec) {
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    NAME,
                    "step_stop",
                    "must list at least one delimiter",
                ))
            }
            Some(list) if list.iter().any(String::is_empty) => {
                return Err(invalid(NAME, "step_stop", "delimiters must not be empty"))
            }
            Some(list) => list,
            None if user_boundaries => setup
                .detector
                .stop_strings
                .iter()
                .filter(|s| !setup.detector.eos_patterns.contains(s))
                .cloned()
                .collect(),
            None => vec!["\n".to_string()],
        };
        if !user_boundaries {
            let stops = &mut setup.detector.stop_strings;
            for d in &delimiters {
                if !stops.contains(d) {
                    stops.push(d.clone());
                }
            }
            stops.sort();
        }
        if config.foresight_value == ForesightValue::Prm
            && !capabilities.has(Capability::ProcessRewards)
        {
            return Err(invalid(
                NAME,
                "foresight_value",
                format!(
                    "`prm` needs a process reward model (capability process_rewards), which \
                     `{backend_name}` lacks; use mean_logprob or sum_logprob"
                ),
            ));
        }
        // Confidences and foresight values are read from the logprobs of every call.
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
        let c = &config;
        let ranges: [(&str, u32, u32, u32); 5] = [
            ("step_beam_size", c.step_beam_size, 1, 16),
            ("num_rollout", c.num_rollout, 1, 16),
            ("num_foresight", c.num_foresight, 1, 200),
            ("cluster_num", c.cluster_num, 1, 16),
            ("max_rollout_tokens", c.max_rollout_tokens, 1, 1_000_000),
        ];
        for (name, value, lo, hi) in ranges {
            if !(lo..=hi).contains(&value) {
                return Err(invalid(
                    NAME,
                    name,
                    format!("must be in {lo}..={hi}, got {value}"),
                ));
            }
        }
        if c.max_final_tokens == 0 {
            return Err(invalid(NAME, "max_final_tokens", "must be at least 1"));
        }
        if !(c.depth_threshold > 0.0 && c.depth_threshold <= 1.0) {
            return Err(invalid(
                NAME,
                "depth_threshold",
                format!("must be in (0, 1], got {}", c.depth_threshold),
            ));
        }
        if !(c.sigma_rate.is_finite() && c.sigma_rate >= 0.0) {
            return Err(invalid(NAME, "sigma_rate", "must be finite and ≥ 0"));
        }
        for (name, t) in [
            ("advantage_temperature", c.advantage_temperature),
            ("cluster_temperature", c.cluster_temperature),
            ("refill_temperature", c.refill_temperature),
        ] {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid(NAME, name, format!("must be > 0, got {t}")));
            }
        }
        if !(c.rollout_temperature.is_finite() && c.rollout_temperature >= 0.0) {
            return Err(invalid(
                NAME,
                "rollout_temperature",
                "must be finite and ≥ 0",
            ));
        }
        Ok(Arc::new(PhiDecoding {
            setup,
            config,
            delimiters,
        }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct PhiDecoding {
    setup: StepSetup,
    config: PhiDecodingConfig,
    /// Where a step ends (a rollout is split into steps here for the `prm` value).
    delimiters: Vec<String>,
}

/// An active or finished beam.
#[derive(Debug, Clone)]
struct Beam {
    trajectory: Trajectory,
    /// Foresight value of the beam's last step (`F_prev` of its children).
    foresight: f64,
    /// Advantage of the beam's last step.
    advantage: f64,
}

/// One candidate step of an iteration, in `details["search"]["phi"]`.
#[derive(Debug, Clone, Serialize)]
struct CandidateRecord {
    node: usize,
    beam: usize,
    /// Mean token logprob of the step.
    confidence: Option<f64>,
    kept_in_width: bool,
    refilled: bool,
    foresight: Option<f64>,
    advantage: Option<f64>,
    cluster: Option<usize>,
    weight: Option<f64>,
    selected: bool,
}

#[derive(Debug, Clone, Serialize)]
struct StepRecord {
    step: usize,
    mean: Option<f64>,
    std: Option<f64>,
    clustered: bool,
    largest_share: Option<f64>,
    rollouts_identical: bool,
    foresight_stopped: bool,
    candidates: Vec<CandidateRecord>,
}

/// Mean token logprob of a span, `None` without usable logprobs.
fn mean_logprob(tokens: Option<&[TokenLogprob]>) -> Option<f64> {
    tokens
        .and_then(|t| uncertainty(Uncertainty::Perplexity, t))
        .map(|u| -u)
        .filter(|v| v.is_finite())
}

/// Summed token logprob of a span, `None` without usable logprobs.
fn sum_logprob(tokens: Option<&[TokenLogprob]>) -> Option<f64> {
    tokens
        .and_then(|t| uncertainty(Uncertainty::SequenceProb, t))
        .map(|u| -u)
        .filter(|v| v.is_finite())
}

/// `softmax(x / t)`; `None` entries get weight 0; all `None` gives the uniform distribution.
pub fn softmax(xs: &[Option<f64>], t: f64) -> Vec<f64> {
    let top = xs
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        let n = xs.len().max(1) as f64;
        return vec![1.0 / n; xs.len()];
    }
    let e: Vec<f64> = xs
        .iter()
        .map(|x| x.map_or(0.0, |x| ((x - top) / t).exp()))
        .collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// `count` distinct indices drawn ∝ `weights` without replacement; a remainder with no weight
/// is drawn uniformly.
pub fn sample_without_replacement(
    weights: &[f64],
    count: usize,
    rng: &mut SeededRng,
) -> Vec<usize> {
    let mut left: Vec<usize> = (0..weights.len()).collect();
    let mut out = Vec::new();
    while out.len() < count && !left.is_empty() {
        let total: f64 = left
            .iter()
            .map(|&i| weights[i])
            .filter(|w| w.is_finite() && *w > 0.0)
            .sum();
        let pos = if total > 0.0 {
            let mut r = rng.next_f64() * total;
            let mut pick = None;
            for (p, &i) in left.iter().enumerate() {
                let w = weights[i];
                if !(w.is_finite() && w > 0.0) {
                    continue;
                }
                pick = Some(p);
                if r < w {
                    break;
                }
                r -= w;
            }
            pick.unwrap_or(0)
        } else {
            rng.below(left.len() as u64) as usize
        };
        out.push(left.remove(pos));
    }
    out
}

/// L2-normalised TF-IDF vectors (smoothed idf `ln((1 + n) / (1 + df)) + 1`) of lower-cased
/// alphanumeric words.
pub fn tfidf(texts: &[String]) -> Vec<Vec<f64>> {
    let docs: Vec<Vec<String>> = texts
        .iter()
        .map(|t| {
            t.to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect();
    let mut vocab: BTreeMap<&str, usize> = BTreeMap::new();
    for doc in &docs {
        for w in doc {
            let next = vocab.len();
            vocab.entry(w.as_str()).or_insert(next);
        }
    }
    let mut df = vec![0usize; vocab.len()];
    for doc in &docs {
        let mut seen = vec![false; vocab.len()];
        for w in doc {
            if let Some(&j) = vocab.get(w.as_str()) {
                if !seen[j] {
                    seen[j] = true;
                    df[j] += 1;
                }
            }
        }
    }
    let n = docs.len() as f64;
    docs.iter()
        .map(|doc| {
            let mut v = vec![0.0; vocab.len()];
            for w in doc {
                if let Some(&j) = vocab.get(w.as_str()) {
                    v[j] += 1.0;
                }
            }
            for (j, x) in v.iter_mut().enumerate() {
                *x *= ((1.0 + n) / (1.0 + df[j] as f64)).ln() + 1.0;
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect()
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// K-means labels of `texts` over TF-IDF vectors, or `None` when there are fewer distinct
/// non-empty texts than `k` (or a numeric failure). Seeding: the first text, then repeatedly
/// the text farthest from its nearest centre.
pub fn cluster(texts: &[String], k: usize) -> Option<Vec<usize>> {
    let mut distinct: Vec<&str> = texts
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    if k == 0 || distinct.len() < k {
        return None;
    }
    let vectors = tfidf(texts);
    let mut centres: Vec<Vec<f64>> = vec![vectors.first()?.clone()];
    while centres.len() < k {
        let far = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let d = centres
                    .iter()
                    .map(|c| distance(v, c))
                    .fold(f64::INFINITY, f64::min);
                (i, d)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
        centres.push(vectors[far.0].clone());
    }
    let mut labels = vec![usize::MAX; texts.len()];
    for _ in 0..100 {
        let next: Vec<usize> = vectors
            .iter()
            .map(|v| {
                let mut best = 0;
                for (j, c) in centres.iter().enumerate() {
                    if distance(v, c) < distance(v, &centres[best]) {
                        best = j;
                    }
                }
                best
            })
            .collect();
        if next == labels {
            break;
        }
        labels = next;
        for (j, centre) in centres.iter_mut().enumerate() {
            let members: Vec<&Vec<f64>> = vectors
                .iter()
                .zip(&labels)
                .filter(|(_, &l)| l == j)
                .map(|(v, _)| v)
                .collect();
            if members.is_empty() {
                continue;
            }
            for (d, x) in centre.iter_mut().enumerate() {
                *x = members.iter().map(|m| m[d]).sum::<f64>() / members.len() as f64;
            }
        }
    }
    labels
        .iter()
        .all(|&l| l < k && centres[l].iter().all(|x| x.is_finite()))
        .then_some(labels)
}

/// Cluster sizes of `labels` over `k` clusters.
fn sizes(labels: &[usize], k: usize) -> Vec<usize> {
    let mut s = vec![0; k];
    for &l in labels {
        if let Some(x) = s.get_mut(l) {
            *x += 1;
        }
    }
    s
}

impl Strategy for PhiDecoding {
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
            let parallelism = setup.config.parallelism.max(1);
            let generator = setup.generator(input);
            let mut rollout_gen = generator.clone();
            rollout_gen.max_step_tokens = c.max_rollout_tokens;
            rollout_gen.sampling.temperature = Some(c.rollout_temperature);
            let mut final_gen = generator.clone();
            final_gen.max_step_tokens = c.max_final_tokens;
            let scorer = setup.scorer(input);
            // The PRM behind `foresight_value = prm`, whatever scores the answer phase.
            let mut prm = scorer.clone();
            prm.kind = StepScorerKind::Prm;
            prm.critic = None;
            let mut trace = SearchTrace::new(NAME, "foresight");
            let k = c.cluster_num as usize;
            let mut beams: Vec<Beam> = vec![
                Beam {
                    trajectory: Trajectory::empty(),
                    foresight: 0.0,
                    advantage: 0.0,
                };
                c.step_beam_size as usize
            ];
            let mut finished: Vec<Beam> = Vec::new();
            let mut records: Vec<StepRecord> = Vec::new();
            let mut rollouts_made = 0usize;
            let mut stopped = "num_foresight";
            for step in 1..=c.num_foresight as usize {
                if beams.is_empty() {
                    stopped = "all_finished";
                    break;
                }
                // 1. Candidate steps: N per beam.
                let calls: Vec<BoxFuture<'_, Result<Vec<StepCandidate>, StrategyError>>> = beams
                    .iter()
                    .enumerate()
                    .map(|(b, beam)| {
                        let seed = call_seed(input.seed, &format!("{NAME}/step/{step}/{b}"));
                        Box::pin(generator.generate(
                            backend,
                            &beam.trajectory.text,
                            &beam.trajectory.lead,
                            c.num_rollout,
                            seed,
                            CallKind::Step,
                        )) as BoxFuture<'_, _>
                    })
                    .collect();
                let generated: Vec<Vec<StepCandidate>> = stream::iter(calls)
                    .buffered(parallelism)
                    .try_collect()
                    .await?;
                let pairs: Vec<(usize, StepCandidate)> = generated
                    .into_iter()
                    .enumerate()
                    .flat_map(|(b, cands)| cands.into_iter().map(move |cand| (b, cand)))
                    .collect();
                if pairs.is_empty() {
                    stopped = "no_candidates";
                    break;
                }
                let confidence: Vec<Option<f64>> = pairs
                    .iter()
                    .map(|(_, cand)| mean_logprob(cand.tokens.as_deref()))
                    .collect();
                let ids: Vec<usize> = pairs
                    .iter()
                    .zip(&confidence)
                    .map(|((b, cand), s)| {
                        trace.add(beams[*b].trajectory.node, 0, cand, *s, None, false)
                    })
                    .collect();
                // 2. In-width pruning, refilled to the number of beams.
                let values: Vec<f64> = confidence.iter().flatten().copied().collect();
                let (mean, std) = if values.is_empty() {
                    (None, None)
                } else {
                    let m = values.iter().sum::<f64>() / values.len() as f64;
                    let var =
                        values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64;
                    (Some(m), Some(var.sqrt()))
                };
                let floor = match (mean, std) {
                    (Some(m), Some(s)) => m - c.sigma_rate * s,
                    _ => f64::INFINITY,
                };
                // Strictly above the floor, beyond rounding noise (equal confidences with
                // k = 0 must not all pass because their mean rounded down).
                let mut kept: Vec<usize> = (0..pairs.len())
                    .filter(|&i| confidence[i].is_some_and(|s| s - floor > WIDTH_TOLERANCE))
                    .collect();
                let in_width = kept.clone();
                let target = beams.len().min(pairs.len());
                let mut refilled: Vec<usize> = Vec::new();
                if kept.len() < target {
                    let rest: Vec<usize> = (0..pairs.len()).filter(|i| !kept.contains(i)).collect();
                    let scores: Vec<Option<f64>> = rest.iter().map(|&i| confidence[i]).collect();
                    let weights = softmax(&scores, c.refill_temperature);
                    let mut rng = SeededRng::derive(input.seed, &format!("{NAME}/refill/{step}"));
                    for p in sample_without_replacement(&weights, target - kept.len(), &mut rng) {
                        refilled.push(rest[p]);
                    }
                    kept.extend(refilled.iter().copied());
                }
                // 3. Foresight: roll every kept, unfinished candidate out to the end.
                let children: Vec<Trajectory> = kept
                    .iter()
                    .map(|&i| {
                        let (b, cand) = &pairs[i];
                        beams[*b].trajectory.child(cand, confidence[i], ids[i])
                    })
                    .collect();
                let calls: Vec<BoxFuture<'_, Result<Vec<StepCandidate>, StrategyError>>> = children
                    .iter()
                    .enumerate()
                    .filter(|(_, child)| !child.complete)
                    .map(|(j, child)| {
                        let seed =
                            call_seed(input.seed, &format!("{NAME}/rollout/{step}/{}", kept[j]));
                        Box::pin(rollout_gen.generate(
                            backend,
                            &child.text,
                            &child.lead,
                            1,
                            seed,
                            CallKind::ToEnd,
                        )) as BoxFuture<'_, _>
                    })
                    .collect();
                rollouts_made += calls.len();
                let mut rolled = stream::iter(calls)
                    .buffered(parallelism)
                    .try_collect::<Vec<_>>()
                    .await?
                    .into_iter();
                // The value of each kept child: its rollout's (or, for a child that already
                // ends the solution, its own step's) mean or summed logprob, or the PRM reward
                // of its last step. Missing logprobs fall back to the step's own value, then 0;
                // a missing PRM reward to the parent's value (advantage 0).
                let own_value = |i: usize| match c.foresight_value {
                    ForesightValue::SumLogprob => sum_logprob(pairs[i].1.tokens.as_deref()),
                    _ => confidence[i],
                };
                let rollouts: Vec<Option<StepCandidate>> = children
                    .iter()
                    .map(|child| {
                        if child.complete {
                            None
                        } else {
                            rolled.next().and_then(|r| r.into_iter().next())
                        }
                    })
                    .collect();
                let mut texts: Vec<String> = Vec::with_capacity(kept.len());
                for (j, child) in children.iter().enumerate() {
                    let own = pairs[kept[j]].1.raw_text();
                    match &rollouts[j] {
                        _ if child.complete => texts.push(own),
                        Some(r) => texts.push(format!("{own}{}{}", child.lead, r.raw_text())),
                        None => texts.push(format!("{own}{}", child.lead)),
                    }
                }
                let mut scoring = None;
                let foresight: Vec<f64> = match c.foresight_value {
                    ForesightValue::MeanLogprob | ForesightValue::SumLogprob => kept
                        .iter()
                        .zip(&rollouts)
                        .map(|(&i, r)| {
                            let tokens = r.as_ref().and_then(|r| r.tokens.as_deref());
                            let value = match c.foresight_value {
                                ForesightValue::SumLogprob => sum_logprob(tokens),
                                _ => mean_logprob(tokens),
                            };
                            value.or_else(|| own_value(i)).unwrap_or(0.0)
                        })
                        .collect(),
                    ForesightValue::Prm => {
                        let tails: Vec<Vec<String>> = rollouts
                            .iter()
                            .map(|r| match r {
                                // The rollout's raw text starts with the child's lead.
                                Some(r) => split_at_delimiters(&r.raw_text(), &self.delimiters),
                                None => Vec::new(),
                            })
                            .collect();
                        let items: Vec<ScoreItem<'_>> = kept
                            .iter()
                            .zip(&tails)
                            .map(|(&i, tail)| ScoreItem {
                                parent_steps: &beams[pairs[i].0].trajectory.steps,
                                candidate: &pairs[i].1,
                                lookahead: tail,
                            })
                            .collect();
                        let (rewards, call) = prm.score(backend, &items).await?;
                        scoring = Some(call);
                        kept.iter()
                            .zip(&rewards)
                            .map(|(&i, r)| r.unwrap_or(beams[pairs[i].0].foresight))
                            .collect()
                    }
                };
                // 4. Advantage; 5. alignment by cluster share; 6. selection.
                let advantage: Vec<f64> = kept
                    .iter()
                    .zip(&foresight)
                    .map(|(&i, f)| f - beams[pairs[i].0].foresight)
                    .collect();
                let r1 = softmax(
                    &advantage.iter().map(|&a| Some(a)).collect::<Vec<_>>(),
                    c.advantage_temperature,
                );
                let labels = cluster(&texts, k);
                let shares: Option<Vec<f64>> = labels.as_ref().map(|l| {
                    let s = sizes(l, k);
                    l.iter()
                        .map(|&x| s[x] as f64 / texts.len() as f64)
                        .collect()
                });
                let weights: Vec<f64> = match &shares {
                    Some(cs) => {
                        let r2 = softmax(
                            &cs.iter().map(|&x| Some(x)).collect::<Vec<_>>(),
                            c.cluster_temperature,
                        );
                        r1.iter().zip(&r2).map(|(a, b)| (a + b) / 2.0).collect()
                    }
                    None => r1.clone(),
                };
                let mut rng = SeededRng::derive(input.seed, &format!("{NAME}/select/{step}"));
                let chosen = sample_without_replacement(&weights, target, &mut rng);
                let mut next: Vec<Beam> = Vec::new();
                let mut kept_ids = Vec::new();
                let mut finished_ids = Vec::new();
                for &j in &chosen {
                    let beam = Beam {
                        trajectory: children[j].clone(),
                        foresight: foresight[j],
                        advantage: advantage[j],
                    };
                    if beam.trajectory.complete {
                        trace.decide(ids[kept[j]], NodeDecision::Finished);
                        finished_ids.push(ids[kept[j]]);
                        finished.push(beam);
                    } else {
                        trace.decide(ids[kept[j]], NodeDecision::Kept);
                        kept_ids.push(ids[kept[j]]);
                        next.push(beam);
                    }
                }
                let selected: Vec<usize> = chosen.iter().map(|&j| kept[j]).collect();
                let pruned: Vec<usize> = (0..pairs.len())
                    .filter(|i| !selected.contains(i))
                    .map(|i| ids[i])
                    .collect();
                for id in &pruned {
                    trace.decide(*id, NodeDecision::Pruned);
                }
                // 7. In-depth pruning.
                let identical = texts.windows(2).all(|w| w[0].trim() == w[1].trim());
                let largest = labels.as_ref().map(|l| {
                    sizes(l, k).into_iter().max().unwrap_or(0) as f64 / texts.len().max(1) as f64
                });
                let stop_foresight = step > c.least_foresight_num as usize
                    && (identical || largest.is_some_and(|s| s >= c.depth_threshold));
                let candidates = (0..pairs.len())
                    .map(|i| {
                        let j = kept.iter().position(|&x| x == i);
                        CandidateRecord {
                            node: ids[i],
                            beam: pairs[i].0,
                            confidence: confidence[i],
                            kept_in_width: in_width.contains(&i),
                            refilled: refilled.contains(&i),
                            foresight: j.map(|j| foresight[j]),
                            advantage: j.map(|j| advantage[j]),
                            cluster: j.and_then(|j| labels.as_ref().map(|l| l[j])),
                            weight: j.map(|j| weights[j]),
                            selected: selected.contains(&i),
                        }
                    })
                    .collect();
                records.push(StepRecord {
                    step,
                    mean,
                    std,
                    clustered: labels.is_some(),
                    largest_share: largest,
                    rollouts_identical: identical,
                    foresight_stopped: stop_foresight,
                    candidates,
                });
                trace.iteration(IterationRecord {
                    step,
                    group: None,
                    expanded: beams.iter().map(|b| b.trajectory.node).collect(),
                    children: ids.clone(),
                    kept: kept_ids,
                    finished: finished_ids,
                    pruned,
                    scoring,
                    resampled: Vec::new(),
                    ess: None,
                });
                beams = next;
                if stop_foresight {
                    stopped = "depth_pruned";
                    break;
                }
            }
            // Finish: complete every active beam in one call each.
            let calls: Vec<BoxFuture<'_, Result<Vec<StepCandidate>, StrategyError>>> = beams
                .iter()
                .enumerate()
                .map(|(b, beam)| {
                    let seed = call_seed(input.seed, &format!("{NAME}/final/{b}"));
                    Box::pin(final_gen.generate(
                        backend,
                        &beam.trajectory.text,
                        &beam.trajectory.lead,
                        1,
                        seed,
                        CallKind::ToEnd,
                    )) as BoxFuture<'_, _>
                })
                .collect();
            let completions: Vec<Vec<StepCandidate>> = stream::iter(calls)
                .buffered(parallelism)
                .try_collect()
                .await?;
            for (beam, done) in beams.into_iter().zip(completions) {
                let mut beam = beam;
                if let Some(cand) = done.first() {
                    let s = mean_logprob(cand.tokens.as_deref());
                    let id = trace.add(beam.trajectory.node, 0, cand, s, None, false);
                    trace.decide(id, NodeDecision::Finished);
                    beam.trajectory = beam.trajectory.child(cand, s, id);
                }
                finished.push(beam);
            }
            // Final choice: the larger of two clusters, then ∝ softmax(A / 0.1) within it.
            let texts: Vec<String> = finished.iter().map(|b| b.trajectory.text.clone()).collect();
            let all_empty = texts.iter().all(|t| t.trim().is_empty());
            let members: Vec<usize> = match cluster(&texts, 2) {
                Some(labels) if !all_empty => {
                    let s = sizes(&labels, 2);
                    let big = usize::from(s[1] > s[0]);
                    (0..texts.len()).filter(|&i| labels[i] == big).collect()
                }
                _ => (0..texts.len()).collect(),
            };
            let sign = if all_empty { -1.0 } else { 1.0 };
            let adv: Vec<Option<f64>> = members
                .iter()
                .map(|&i| Some(sign * finished[i].advantage))
                .collect();
            let pick = match c.final_selection {
                FinalSelection::Sample => {
                    let weights = softmax(&adv, FINAL_TEMPERATURE);
                    let mut rng = SeededRng::derive(input.seed, &format!("{NAME}/final"));
                    sample_without_replacement(&weights, 1, &mut rng)
                        .first()
                        .map(|&p| members[p])
                }
                FinalSelection::Argmax => members
                    .iter()
                    .zip(&adv)
                    .max_by(|a, b| a.1.unwrap_or(0.0).total_cmp(&b.1.unwrap_or(0.0)))
                    .map(|(&i, _)| i),
            };
            let Some(pick) = pick else {
                // No beam survived (the backend returned nothing): no answer.
                trace.stopped = stopped.to_string();
                return Ok(StrategyOutcome {
                    answer: None,
                    selected: None,
                    candidates: Vec::new(),
                    details: serde_json::json!({ "search": trace.to_json() }),
                });
            };
            let seed = call_seed(input.seed, &format!("{NAME}/answer"));
            let chosen = finished[pick].trajectory.clone();
            let chosen = answer_phase(
                setup, &generator, &scorer, backend, &mut trace, chosen, 1, false, seed,
            )
            .await?;
            trace.selected = Some(chosen.node);
            trace.stopped = stopped.to_string();
            let mut candidates: Vec<Candidate> = Vec::with_capacity(finished.len());
            for (i, beam) in finished.iter().enumerate() {
                let t = if i == pick { &chosen } else { &beam.trajectory };
                let text = t.full_text();
                let answer = setup.extract(&text);
                candidates.push(Candidate {
                    text,
                    answer,
                    votes: None,
                    score: Some(beam.advantage),
                    finish_reason: FinishReason::Stop,
                    completion_tokens: Some(t.tokens),
                });
            }
            let answer = candidates[pick].answer.clone();
            let mut search = trace.to_json();
            search["phi"] = serde_json::json!({
                "final_members": members,
                "steps": records,
            });
            Ok(StrategyOutcome {
                answer,
                selected: Some(pick),
                candidates,
                details: serde_json::json!({
                    "steps": chosen.steps.len(),
                    "rollouts": rollouts_made,
                    "completion_reason": chosen.reason,
                    "search": search,
                }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollouts_split_at_the_longest_delimiter_and_odd_text_is_fine() {
        let d: Vec<String> = ["\n", "\n\n", "Step"].map(String::from).to_vec();
        let check = |text: &str, expected: &[&str]| {
            assert_eq!(split_at_delimiters(text, &d), expected, "{text:?}");
        };
        check("a\n\nb\nc", &["a", "b", "c"]);
        check("xStep yé\n", &["x", "yé"]);
        check("\n\n\n", &[]);
        check("", &[]);
        assert_eq!(split_at_delimiters("ünï 🌀", &[]), vec!["ünï 🌀"]);
    }

    #[test]
    fn softmax_handles_missing_values_and_temperature() {
        let p = softmax(&[Some(0.0), None, Some(0.0)], 1.0);
        assert_eq!(p, vec![0.5, 0.0, 0.5]);
        assert_eq!(softmax(&[None, None], 1.0), vec![0.5, 0.5]);
        let p = softmax(&[Some(1.0), Some(0.0)], 0.5);
        assert!((p[0] - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn sampling_without_replacement_is_seeded_and_skips_weightless_items() {
        let w = [0.0, 1.0, 0.0, 1.0];
        let mut a = SeededRng::derive(1, "t");
        let mut b = SeededRng::derive(1, "t");
        let x = sample_without_replacement(&w, 2, &mut a);
        assert_eq!(x, sample_without_replacement(&w, 2, &mut b));
        let mut sorted = x.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 3]);
        // Beyond the weighted items, the rest is drawn uniformly.
        let all = sample_without_replacement(&w, 4, &mut a);
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn kmeans_groups_similar_texts_and_fails_on_too_few_distinct() {
        let texts: Vec<String> = [
            "the answer is 12 apples",
            "so the answer is 12 apples",
            "we get 7 pears in total",
            "the answer is 12 apples",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let labels = cluster(&texts, 2).expect("clusters");
        assert_eq!(labels[0], labels[1]);
        assert_eq!(labels[0], labels[3]);
        assert_ne!(labels[0], labels[2]);
        assert!(cluster(&texts, 4).is_none(), "three distinct texts");
        assert!(cluster(&["".to_string(), " ".to_string()], 1).is_none());
        assert_eq!(cluster(&texts[..1], 1), Some(vec![0]));
    }
}
