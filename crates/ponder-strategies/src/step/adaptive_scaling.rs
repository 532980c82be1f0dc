//! Adaptive scaling, MUR (momentum uncertainty; reference §1.11): every step starts with one
//! probe candidate; only when the probe's uncertainty signal rises above the running momentum of
//! the chosen steps' signals (by the margin `−ln γ`) are more candidates drawn, scored and the
//! best kept. Otherwise the probe is accepted unscored. Completion and the answer phase are those
//! of online best-of-N. A probe without usable logprobs has no signal: it is accepted (not
//! scaled) and leaves the momentum unchanged.
//!
//! What a triggered step does is `on_trigger`: `best_of_n` (default) draws the extra
//! candidates, at most `batch_size` sequences per generation call (the calls of one step run
//! one after another, so no more than `batch_size` candidates of a step are ever in flight);
//! `critic_revise` asks a critic (the same backend) whether the probe step is correct and, on
//! a "no", asks the policy for a revised step carrying the critic's analysis. A critic reply
//! with no readable `\boxed{yes}`/`\boxed{no}` after one re-ask keeps the step and is flagged
//! `critic_unparsed`, so a broken critic never rewrites steps.
//!
//! `forced_completion = false` (default, MUR parity) ends a trajectory only at the end of
//! sequence, an answer marker, `</think>`, repetition or the context; `true` also ends it at a
//! complete `\boxed{}` or a garbage step, as online best-of-N does (§1.6).
//!
//! Differences from upstream (§1.11 FIX): with `reuse_probe` (default) the probe joins the
//! scaled pool instead of being billed and thrown away; the signal can follow the configured
//! scorer (`signal = scorer_uncertainty`); `threshold` is implemented.

use std::sync::Arc;

use ponder_core::{
    Backend, BoxFuture, BuildError, Capabilities, Capability, FinishReason, GenerationRequest,
    Message, ParamSpec, Params, Prompt, SamplingParams, Strategy, StrategyError, StrategyFactory,
    StrategyInfo, StrategyInput, StrategyOutcome, TokenLogprob,
};
use serde::{Deserialize, Serialize};

use crate::scoring::{aggregate, uncertainty, Aggregation, Uncertainty};
use crate::step::detector::StepEnd;
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

/// What a triggered (scaled) step does (§1.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTrigger {
    /// Draw more candidates, score them and keep the best.
    #[default]
    BestOfN,
    /// A critic judges the probe step; a step judged wrong is replaced by a revision.
    CriticRevise,
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
    /// What a triggered step does: `best_of_n` or `critic_revise`. Default: `best_of_n`.
    #[serde(default)]
    pub on_trigger: OnTrigger,
    /// End a trajectory at a complete `\boxed{}` or a garbage step, as online best-of-N does.
    /// Default: false (MUR parity).
    #[serde(default)]
    pub forced_completion: bool,
    /// Most candidate sequences of one step requested at once: a scaled step's extra
    /// candidates are drawn in calls of at most this many, one call after another.
    /// Default: 1000 (one call).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
}

fn default_batch_size() -> u32 {
    1000
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
    ParamSpec {
        name: "on_trigger",
        default: "best_of_n",
        description: "a scaled step: best_of_n (draw, score, keep the best) | critic_revise \
                      (the model judges the step, \\boxed{yes}/\\boxed{no}; a step judged \
                      wrong is regenerated with the critique; unreadable after one re-ask: \
                      kept, flagged critic_unparsed)",
    },
    ParamSpec {
        name: "forced_completion",
        default: "false",
        description: "also end a trajectory at a complete \\boxed{} or a garbage step, as \
                      online-best-of-n does (false: MUR parity)",
    },
    ParamSpec {
        name: "batch_size",
        default: "1000",
        description: "most candidates of one step requested at once (≥ 1): the extra \
                      candidates of a scaled step are drawn in calls of at most this many, \
                      one after another",
    },
];

fn params() -> Vec<ParamSpec> {
    let mut p = common_params(&ONLINE_DEFAULTS);
    for spec in &mut p {
        match spec.name {
            "critic_temperature" => {
                spec.description = "llm_critic and on_trigger = critic_revise: sampling temperature"
            }
            "critic_max_tokens" => {
                spec.description =
                    "llm_critic and on_trigger = critic_revise: most tokens per reply"
            }
            _ => {}
        }
    }
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
        if config.batch_size == 0 {
            return Err(invalid(NAME, "batch_size", "must be at least 1"));
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
    /// Generation calls that drew them (at most `batch_size` candidates each).
    extra_calls: u32,
    /// Trace node of the probe and of the chosen step.
    probe: usize,
    chosen: usize,
    /// The chosen step's signal, which updates the momentum.
    chosen_signal: Option<f64>,
    /// `critic_revise`: what the critic said about the probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    critic: Option<CriticRecord>,
    /// `critic_revise`: no verdict could be read after the re-ask; the step was kept.
    critic_unparsed: bool,
}

/// The critic's judgement of one triggered step (`on_trigger = critic_revise`).
#[derive(Debug, Clone, Serialize)]
struct CriticRecord {
    /// `yes` (correct), `no` (revise) or `None` (unreadable after the re-ask).
    verdict: Option<&'static str>,
    /// The analysis passed to the revision (empty when none was asked).
    analysis: String,
    /// Critic calls (the first ask and a re-ask).
    calls: u64,
    /// Prompt and completion tokens of those calls.
    tokens: u64,
    /// Trace node of the revised step, when one was generated.
    revised: Option<usize>,
}

/// The LAST `\boxed{yes}` or `\boxed{no}` of a critic reply (case-insensitive; markdown and
/// `\text{…}`-style wrappers inside the box tolerated; boxes holding anything else skipped),
/// with the byte offset where that box starts. `None` when there is none.
fn last_verdict(reply: &str) -> Option<(bool, usize)> {
    // ASCII lower-casing keeps byte offsets, so positions found here index `reply` too.
    let lower = reply.to_ascii_lowercase();
    let mut found = None;
    let mut from = 0;
    while let Some(pos) = lower[from..].find("boxed") {
        let at = from + pos;
        from = at + "boxed".len();
        let Some(inner) = lower[from..].trim_start().strip_prefix('{') else {
            continue;
        };
        let mut depth = 1usize;
        let mut end = None;
        for (i, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            continue;
        };
        let words: Vec<&str> = inner[..end]
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| {
                !w.is_empty()
                    && !matches!(
                        *w,
                        "text" | "textbf" | "textit" | "mathrm" | "mathbf" | "mathit" | "emph"
                    )
            })
            .collect();
        let value = match words.as_slice() {
            ["yes"] => true,
            ["no"] => false,
            _ => continue,
        };
        let start = if at > 0 && lower.as_bytes()[at - 1] == b'\\' {
            at - 1
        } else {
            at
        };
        found = Some((value, start));
    }
    found
}

/// Reads a critic reply: the judgement is the last boxed yes/no (`true`: the step is correct);
/// `None` when there is none. Odd text never fails, it just has no verdict.
pub fn parse_verdict(reply: &str) -> Option<bool> {
    last_verdict(reply).map(|(v, _)| v)
}

/// The analysis part of a critic reply: the text before its verdict box, after an
/// `Analysis:` heading when there is one and without a trailing `Verdict:` heading; the whole
/// reply when that leaves nothing.
fn critic_analysis(reply: &str) -> String {
    let end = last_verdict(reply).map_or(reply.len(), |(_, at)| at);
    let lower = reply[..end].to_ascii_lowercase();
    let start = lower.find("analysis:").map_or(0, |p| p + "analysis:".len());
    let stop = lower[start..].rfind("verdict").map_or(end, |p| start + p);
    let trim = |t: &str| {
        t.trim_matches(|c: char| c.is_whitespace() || matches!(c, '*' | '#' | '_' | ':' | '$'))
            .to_string()
    };
    let analysis = trim(&reply[start..stop]);
    if analysis.is_empty() {
        trim(reply)
    } else {
        analysis
    }
}

/// The critic's question about the last of `steps` (structure of MUR's critic: the question,
/// the numbered steps, an analysis, then a boxed yes/no).
fn critic_prompt(question: &str, steps: &[String]) -> String {
    let k = steps.len();
    let listed: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("Step {}: {}", i + 1, s.trim()))
        .collect();
    format!(
        "You are reviewing a worked solution one step at a time.\n\nQuestion:\n{question}\n\n\
         Steps so far:\n{}\n\nCheck only the last step, Step {k}: is it correct, and does it \
         follow from the question and the steps before it? Reply in two parts. First, under \
         the heading \"Analysis:\", explain your reasoning. Then, under the heading \
         \"Verdict:\", write \\boxed{{yes}} if Step {k} is correct or \\boxed{{no}} if it is \
         not.",
        listed.join("\n")
    )
}

const CRITIC_REASK: &str = "I could not find your verdict. Reply with \\boxed{yes} if the last \
step is correct or \\boxed{no} if it is not, and nothing else.";

/// What the policy is told when it must redo a step the critic rejected.
fn revision_note(step: &str, analysis: &str) -> String {
    format!(
        "A reviewer checked the next step of your solution and found it wrong.\n\nThe rejected \
         step:\n{}\n\nThe reviewer's analysis:\n{}\n\nContinue the solution from where it \
         stands, writing a corrected version of that step in its place.",
        step.trim(),
        analysis.trim()
    )
}

/// A critic's judgement and what it cost.
struct Judgement {
    verdict: Option<bool>,
    analysis: String,
    calls: u64,
    tokens: u64,
}

/// Undoes the detector's boxed / garbage forcing of a non-thinking step (MUR parity,
/// `forced_completion = false`): such a step no longer ends the trajectory.
fn unforce(candidate: &mut StepCandidate) {
    if matches!(
        candidate.end.reason,
        Some(CompletionReason::BoxedInThink | CompletionReason::GarbageDetected)
    ) {
        let cut = candidate.finish_reason == FinishReason::Length;
        candidate.end = StepEnd {
            is_complete: !cut,
            is_trajectory_complete: false,
            reason: cut.then_some(CompletionReason::MaxTokens),
        };
    }
}

impl AdaptiveScaling {
    fn signal(&self, tokens: Option<&[TokenLogprob]>) -> Option<f64> {
        tokens
            .and_then(|t| uncertainty(self.estimator, t))
            .filter(|s| s.is_finite())
    }

    /// Applies `forced_completion` to freshly generated candidates.
    fn settle(&self, candidates: &mut [StepCandidate]) {
        if !self.config.forced_completion {
            candidates.iter_mut().for_each(unforce);
        }
    }

    /// Asks the critic about the last of `steps`: one call, and one re-ask when the reply has
    /// no readable verdict.
    async fn judge(
        &self,
        backend: &Arc<dyn Backend>,
        question: &str,
        steps: &[String],
        seed: u64,
    ) -> Result<Judgement, StrategyError> {
        let c = &self.setup.config;
        let params = |seed: u64| SamplingParams {
            temperature: Some(c.critic_temperature),
            max_tokens: Some(c.critic_max_tokens),
            n: 1,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let prompt = critic_prompt(question, steps);
        let first = backend
            .generate(GenerationRequest::new(
                Prompt::user(prompt.clone()),
                params(seed),
            ))
            .await?;
        let mut calls = 1;
        let mut tokens = first.usage.prompt_tokens + first.usage.completion_tokens;
        let reply = first
            .completions
            .into_iter()
            .next()
            .map(|c| c.text)
            .unwrap_or_default();
        let mut verdict = parse_verdict(&reply);
        let mut analysis = critic_analysis(&reply);
        if verdict.is_none() {
            let again = backend
                .generate(GenerationRequest::new(
                    Prompt::Chat {
                        messages: vec![
                            Message::user(prompt),
                            Message::assistant(reply.clone()),
                            Message::user(CRITIC_REASK),
                        ],
                        continue_final_message: false,
                    },
                    params(seed.wrapping_add(1)),
                ))
                .await?;
            calls += 1;
            tokens += again.usage.prompt_tokens + again.usage.completion_tokens;
            let second = again
                .completions
                .into_iter()
                .next()
                .map(|c| c.text)
                .unwrap_or_default();
            verdict = parse_verdict(&second);
            // The first reply holds the analysis; a bare re-ask answer adds nothing to it.
            if reply.trim().is_empty() {
                analysis = critic_analysis(&second);
            }
        }
        Ok(Judgement {
            verdict,
            analysis,
            calls,
            tokens,
        })
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
                let mut probes = generator
                    .generate(
                        backend,
                        &trajectory.text,
                        &trajectory.lead,
                        1,
                        seed,
                        CallKind::Step,
                    )
                    .await?;
                self.settle(&mut probes);
                let Some(probe) = probes.into_iter().next() else {
                    stopped = "no_candidates";
                    break;
                };
                let signal = self.signal(probe.tokens.as_deref());
                let (scaled, level) = self.decide(t, signal, momentum, &history);
                let momentum_before = momentum;
                // The pool: the probe (when reused or not scaled), then the extra candidates
                // (best_of_n) or the revised step (critic_revise).
                let mut pool: Vec<StepCandidate> = Vec::new();
                let mut ids: Vec<usize> = Vec::new();
                let mut scores: Vec<Option<f64>> = Vec::new();
                let mut scoring = None;
                let mut extra = 0u32;
                let mut extra_calls = 0u32;
                let mut probe_id = None;
                let mut critic: Option<CriticRecord> = None;
                let mut critic_unparsed = false;
                let best;
                if scaled && c.on_trigger == OnTrigger::CriticRevise {
                    let mut steps = trajectory.steps.clone();
                    steps.push(probe.step_text());
                    let seed = call_seed(input.seed, &format!("{NAME}/step/{step}/critic"));
                    let judged = self.judge(backend, &scorer.question, &steps, seed).await?;
                    pool.push(probe.clone());
                    scores.push(None);
                    critic_unparsed = judged.verdict.is_none();
                    if judged.verdict == Some(false) {
                        let note = revision_note(&probe.step_text(), &judged.analysis);
                        let seed = call_seed(input.seed, &format!("{NAME}/step/{step}/revise"));
                        let mut revised = generator
                            .with_note(&note)
                            .generate(
                                backend,
                                &trajectory.text,
                                &trajectory.lead,
                                1,
                                seed,
                                CallKind::Step,
                            )
                            .await?;
                        self.settle(&mut revised);
                        if let Some(r) = revised.into_iter().next() {
                            pool.push(r);
                            scores.push(None);
                        }
                    }
                    critic = Some(CriticRecord {
                        verdict: judged.verdict.map(|v| if v { "yes" } else { "no" }),
                        analysis: if judged.verdict == Some(false) {
                            judged.analysis
                        } else {
                            String::new()
                        },
                        calls: judged.calls,
                        tokens: judged.tokens,
                        revised: None,
                    });
                    // The revision, when there is one, replaces the probe.
                    best = pool.len() - 1;
                } else if scaled {
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
                    // At most `batch_size` candidates per call, one call after another.
                    let mut drawn = 0u32;
                    while drawn < extra {
                        let n = (extra - drawn).min(c.batch_size);
                        let label = match extra_calls {
                            0 => format!("{NAME}/step/{step}/extra"),
                            k => format!("{NAME}/step/{step}/extra/{k}"),
                        };
                        let mut more = generator
                            .generate(
                                backend,
                                &trajectory.text,
                                &trajectory.lead,
                                n,
                                call_seed(input.seed, &label),
                                CallKind::Step,
                            )
                            .await?;
                        self.settle(&mut more);
                        pool.extend(more);
                        drawn += n;
                        extra_calls += 1;
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
                if let Some(record) = critic.as_mut() {
                    record.revised = (best > 0).then(|| ids[best]);
                }
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
                    extra_calls,
                    probe: probe_node,
                    chosen: ids[best],
                    chosen_signal,
                    critic,
                    critic_unparsed,
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
            let revised_steps = records
                .iter()
                .filter(|r| r.critic.as_ref().is_some_and(|c| c.revised.is_some()))
                .count();
            let critic_unparsed_steps = records.iter().filter(|r| r.critic_unparsed).count();
            let mut search = trace.to_json();
            search["scaling"] = serde_json::json!({
                "method": c.adaptive_scaling_method,
                "signal": c.signal,
                "scaling_rate": c.scaling_rate,
                "momentum_rate": c.momentum_rate,
                "momentum_init": c.momentum_init,
                "reuse_probe": c.reuse_probe,
                "on_trigger": c.on_trigger,
                "forced_completion": c.forced_completion,
                "batch_size": c.batch_size,
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
                    "revised_steps": revised_steps,
                    "critic_unparsed_steps": critic_unparsed_steps,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_the_last_boxed_yes_or_no() {
        let check = |reply: &str, expected: Option<bool>| {
            assert_eq!(parse_verdict(reply), expected, "{reply:?}");
        };
        check("Analysis: fine.\nVerdict: \\boxed{yes}", Some(true));
        check("\\boxed{No}", Some(false));
        check("**Verdict:** $\\boxed{\\text{YES}}$", Some(true));
        check("\\boxed{**no**}.", Some(false));
        // The last one wins; boxes holding anything else are skipped.
        check("At first \\boxed{yes}, but then \\boxed{no}", Some(false));
        check("\\boxed{no} ... \\boxed{42}", Some(false));
        check("\\boxed {yes}", Some(true));
        // Not a verdict.
        check("yes", None);
        check("\\boxed{yes or no}", None);
        check("\\boxed{maybe}", None);
        check("\\boxed{yes", None);
        check("boxed", None);
        check("", None);
        check("\\boxed{é} ünïcödé \\boxed{}", None);
    }

    #[test]
    fn the_analysis_is_the_text_before_the_verdict() {
        assert_eq!(
            critic_analysis("Analysis: the sign is wrong.\n\nVerdict: \\boxed{no}"),
            "the sign is wrong."
        );
        assert_eq!(
            critic_analysis("**Analysis:** 2 + 2 is not 5.\n**Verdict:** \\boxed{No}"),
            "2 + 2 is not 5."
        );
        assert_eq!(
            critic_analysis("It adds wrongly. \\boxed{no}"),
            "It adds wrongly."
        );
        assert_eq!(critic_analysis("\\boxed{no}"), "\\boxed{no}");
    }
}
