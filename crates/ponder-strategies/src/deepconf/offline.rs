//! Offline DeepConf (reference §1.4.2): sample the whole budget with top-k logprobs, score each
//! trace by a confidence measure, keep the most confident traces and take a confidence-weighted
//! vote.

use std::sync::Arc;

use ponder_answer::{extract_answer, ExtractOptions};
use ponder_core::{
    parse_params, Backend, BoxFuture, BuildError, Candidate, Capabilities, Capability,
    FinishReason, GenerationRequest, ParamSpec, Params, Prompt, SamplingParams, Strategy,
    StrategyError, StrategyFactory, StrategyInfo, StrategyInput, StrategyOutcome,
};
use serde::{Deserialize, Serialize};

use super::confidence::{
    filter_traces, token_confidences, ConfidenceMetric, TraceConfidence, TraceFilter,
};
use super::WeightedVote;
use crate::common::{extract_options, invalid, with_system_prompt};
use crate::self_consistency::DEFAULT_SYSTEM_PROMPT;

/// Largest budget accepted (a guard against typos that would fan out thousands of traces).
pub const MAX_BUDGET: u32 = 1024;

/// DeepConf's seven offline votes (`compute_all_voting_results`), as one switch. Each fixes the
/// confidence measure, the filter and the weighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteMode {
    /// Every answered trace, weight 1.
    Majority,
    /// Every answered trace, weight = mean confidence.
    MeanWeighted,
    /// Every answered trace, weight = tail confidence.
    TailWeighted,
    /// Every answered trace, weight = bottom-10% group confidence.
    BottomWindowWeighted,
    /// Every answered trace, weight = lowest group confidence.
    MinWindowWeighted,
    /// Top 10% by tail confidence, weighted by it.
    Top10TailFiltered,
    /// Top 10% by bottom-10% group confidence, weighted by it.
    Top10BottomWindowFiltered,
}

impl VoteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteMode::Majority => "majority",
            VoteMode::MeanWeighted => "mean_weighted",
            VoteMode::TailWeighted => "tail_weighted",
            VoteMode::BottomWindowWeighted => "bottom_window_weighted",
            VoteMode::MinWindowWeighted => "min_window_weighted",
            VoteMode::Top10TailFiltered => "top10_tail_filtered",
            VoteMode::Top10BottomWindowFiltered => "top10_bottom_window_filtered",
        }
    }

    /// The measure, filter and weighting this mode stands for.
    fn plan(self) -> (ConfidenceMetric, TraceFilter, Weighting) {
        use ConfidenceMetric as M;
        match self {
            VoteMode::Majority => (M::LowestGroup, TraceFilter::None, Weighting::Majority),
            VoteMode::MeanWeighted => (M::Mean, TraceFilter::None, Weighting::Weighted),
            VoteMode::TailWeighted => (M::Tail, TraceFilter::None, Weighting::Weighted),
            VoteMode::BottomWindowWeighted => {
                (M::Bottom10Group, TraceFilter::None, Weighting::Weighted)
            }
            VoteMode::MinWindowWeighted => (M::LowestGroup, TraceFilter::None, Weighting::Weighted),
            VoteMode::Top10TailFiltered => {
                (M::Tail, TraceFilter::TopPercent(10.0), Weighting::Weighted)
            }
            VoteMode::Top10BottomWindowFiltered => (
                M::Bottom10Group,
                TraceFilter::TopPercent(10.0),
                Weighting::Weighted,
            ),
        }
    }
}

/// How kept traces vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Weight = the trace's confidence. The default.
    #[default]
    Weighted,
    /// Weight 1.
    Majority,
}

/// What a user writes (`--set key=value`, `strategy.params` in a config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepConfConfig {
    /// Traces per request (`N`). Default: 16.
    #[serde(default = "default_budget")]
    pub budget: u32,
    /// `lowest_group`, `bottom_10_group`, `tail` or `mean`. Default: `lowest_group`.
    #[serde(default)]
    pub confidence_metric: Option<ConfidenceMetric>,
    /// Group window `n` in tokens. Default: 2048.
    #[serde(default = "default_window")]
    pub window_size: usize,
    /// `k`, the top log-probabilities asked per token. Default: 20.
    #[serde(default = "default_top_logprobs")]
    pub top_logprobs: u8,
    /// `top_percent`, `top_k`, `threshold` or `none`; the legacy `topN` means the top N traces
    /// (a count, not a percentage). Default: `top_percent`.
    #[serde(default)]
    pub filter: Option<String>,
    /// `η`, percent of answered traces kept by `top_percent`. Default: 10.
    #[serde(default)]
    pub keep_percent: Option<f64>,
    /// Traces kept by `top_k`. Required with `top_k`.
    #[serde(default)]
    pub keep_count: Option<u32>,
    /// Absolute confidence a trace needs with `threshold`. Required with `threshold`.
    #[serde(default)]
    pub confidence_threshold: Option<f64>,
    /// `weighted` (weight = the confidence) or `majority`. Default: `weighted`.
    #[serde(default)]
    pub vote: Option<Weighting>,
    /// One of DeepConf's seven votes; replaces `confidence_metric`, `filter` and `vote`.
    /// Default: unset.
    #[serde(default)]
    pub vote_mode: Option<VoteMode>,
    /// Default: 0.6.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Default: 0.95.
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    /// Most tokens per trace (a cap). Default: 32000.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Extra stop strings. Default: none.
    #[serde(default)]
    pub stop: Vec<String>,
    /// System message used when the input has none; empty for none. Default: the step-by-step
    /// `\boxed{}` instruction of self-consistency.
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    /// Count the sampled token as an extra entry when it is outside the top-k (DeepConf's vLLM
    /// parity). Default: false.
    #[serde(default)]
    pub include_sampled_if_outside_topk: bool,
    /// Fall back to the last number when no answer marker is found. Default: true.
    #[serde(default = "default_true")]
    pub last_number_fallback: bool,
}

fn default_budget() -> u32 {
    16
}
pub(crate) fn default_window() -> usize {
    2048
}
pub(crate) fn default_top_logprobs() -> u8 {
    20
}
pub(crate) fn default_temperature() -> f64 {
    0.6
}
pub(crate) fn default_top_p() -> f64 {
    0.95
}
pub(crate) fn default_max_tokens() -> u32 {
    32000
}
pub(crate) fn default_system_prompt() -> String {
    DEFAULT_SYSTEM_PROMPT.to_string()
}
pub(crate) fn default_true() -> bool {
    true
}

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "budget",
        default: "16",
        description: "traces per request (1–1024)",
    },
    ParamSpec {
        name: "confidence_metric",
        default: "lowest_group",
        description: "lowest_group | bottom_10_group | tail | mean",
    },
    ParamSpec {
        name: "window_size",
        default: "2048",
        description: "group window in tokens",
    },
    ParamSpec {
        name: "top_logprobs",
        default: "20",
        description: "top log-probabilities per token (k)",
    },
    ParamSpec {
        name: "filter",
        default: "top_percent",
        description: "top_percent | top_k | threshold | none (legacy topN = top N traces)",
    },
    ParamSpec {
        name: "keep_percent",
        default: "10",
        description: "percent of answered traces kept by top_percent (η)",
    },
    ParamSpec {
        name: "keep_count",
        default: "unset",
        description: "traces kept by top_k",
    },
    ParamSpec {
        name: "confidence_threshold",
        default: "unset",
        description: "confidence a trace needs with filter=threshold",
    },
    ParamSpec {
        name: "vote",
        default: "weighted",
        description: "weighted (by confidence) | majority",
    },
    ParamSpec {
        name: "vote_mode",
        default: "unset",
        description: "majority | mean_weighted | tail_weighted | bottom_window_weighted | min_window_weighted | top10_tail_filtered | top10_bottom_window_filtered (replaces metric, filter, vote)",
    },
    ParamSpec {
        name: "temperature",
        default: "0.6",
        description: "sampling temperature",
    },
    ParamSpec {
        name: "top_p",
        default: "0.95",
        description: "nucleus sampling mass",
    },
    ParamSpec {
        name: "max_tokens",
        default: "32000",
        description: "most tokens per trace",
    },
    ParamSpec {
        name: "stop",
        default: "[]",
        description: "extra stop strings",
    },
    ParamSpec {
        name: "system_prompt",
        default: "step-by-step, answer in \\boxed{}",
        description: "system message when the input has none (empty: none)",
    },
    ParamSpec {
        name: "include_sampled_if_outside_topk",
        default: "false",
        description: "add the sampled token's logprob when it is outside the top-k",
    },
    ParamSpec {
        name: "last_number_fallback",
        default: "true",
        description: "use the last number when no answer marker is found",
    },
];

/// The filter, the measure and the weighting after resolving `vote_mode`, `filter` and the
/// legacy `topN`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Selection {
    pub metric: ConfidenceMetric,
    pub filter: TraceFilter,
    pub weighting: Weighting,
    pub vote_mode: Option<VoteMode>,
    pub warnings: Vec<String>,
}

impl Selection {
    fn filter_name(&self) -> &'static str {
        match self.filter {
            TraceFilter::TopPercent(_) => "top_percent",
            TraceFilter::TopK(_) => "top_k",
            TraceFilter::Threshold(_) => "threshold",
            TraceFilter::None => "none",
        }
    }
}

fn resolve_selection(name: &str, c: &DeepConfConfig) -> Result<Selection, BuildError> {
    if let Some(mode) = c.vote_mode {
        let set: Vec<&str> = [
            ("confidence_metric", c.confidence_metric.is_some()),
            ("filter", c.filter.is_some()),
            ("keep_percent", c.keep_percent.is_some()),
            ("keep_count", c.keep_count.is_some()),
            ("confidence_threshold", c.confidence_threshold.is_some()),
            ("vote", c.vote.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
        if !set.is_empty() {
            return Err(invalid(
                name,
                "vote_mode",
                format!(
                    "`{}` fixes the measure, filter and vote; drop {}",
                    mode.as_str(),
                    set.join(", ")
                ),
            ));
        }
        let (metric, filter, weighting) = mode.plan();
        return Ok(Selection {
            metric,
            filter,
            weighting,
            vote_mode: Some(mode),
            warnings: Vec::new(),
        });
    }
    let mut warnings = Vec::new();
    let raw = c.filter.as_deref().unwrap_or("top_percent");
    let filter = match raw {
        "top_percent" => {
            let eta = c.keep_percent.unwrap_or(10.0);
            if !(eta > 0.0 && eta <= 100.0) {
                return Err(invalid(
                    name,
                    "keep_percent",
                    format!("must be in (0, 100], got {eta}"),
                ));
            }
            TraceFilter::TopPercent(eta)
        }
        "top_k" => match c.keep_count {
            Some(k) if k >= 1 => TraceFilter::TopK(k as usize),
            _ => {
                return Err(invalid(
                    name,
                    "keep_count",
                    "filter=top_k needs keep_count ≥ 1",
                ))
            }
        },
        "threshold" => match c.confidence_threshold {
            Some(t) if t.is_finite() => TraceFilter::Threshold(t),
            _ => {
                return Err(invalid(
                    name,
                    "confidence_threshold",
                    "filter=threshold needs a finite confidence_threshold",
                ))
            }
        },
        "none" => TraceFilter::None,
        legacy => match legacy
            .strip_prefix("top")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n >= 1 => {
                if c.keep_count.is_some() {
                    return Err(invalid(
                        name,
                        "filter",
                        format!("`{legacy}` already gives the count; drop keep_count"),
                    ));
                }
                warnings.push(format!(
                    "filter `{legacy}` keeps the top {n} traces (a count, not {n} percent); \
                     write filter=top_k, keep_count={n} or filter=top_percent, keep_percent={n}"
                ));
                TraceFilter::TopK(n)
            }
            _ => {
                return Err(invalid(
                    name,
                    "filter",
                    format!(
                    "unknown filter `{legacy}` (known: top_percent, top_k, threshold, none, topN)"
                ),
                ))
            }
        },
    };
    Ok(Selection {
        metric: c.confidence_metric.unwrap_or_default(),
        filter,
        weighting: c.vote.unwrap_or_default(),
        vote_mode: None,
        warnings,
    })
}

/// Checks `top_logprobs` against the backend, for both DeepConf strategies.
pub(crate) fn check_top_logprobs(
    name: &str,
    k: u8,
    capabilities: &Capabilities,
) -> Result<(), BuildError> {
    if k == 0 {
        return Err(invalid(name, "top_logprobs", "must be ≥ 1"));
    }
    if let Some(max) = capabilities.max_top_logprobs {
        if k > max {
            return Err(invalid(
                name,
                "top_logprobs",
                format!("{k} is more than the backend returns ({max})"),
            ));
        }
    }
    Ok(())
}

/// Builds [`DeepConf`] (registered as `deepconf` and `deepconf-offline`).
#[derive(Debug, Clone, Copy)]
pub struct DeepConfFactory {
    name: &'static str,
}

impl Default for DeepConfFactory {
    fn default() -> Self {
        DeepConfFactory { name: "deepconf" }
    }
}

impl DeepConfFactory {
    /// The same strategy under another name (`deepconf-offline`, the name for it).
    pub fn named(name: &'static str) -> Self {
        DeepConfFactory { name }
    }
}

impl StrategyFactory for DeepConfFactory {
    fn info(&self) -> StrategyInfo {
        StrategyInfo {
            name: self.name,
            summary: if self.name == "deepconf" {
                "sample a budget of traces with logprobs, keep the most confident, vote weighted by confidence (DeepConf offline)"
            } else {
                "another name for `deepconf` (DeepConf offline)"
            },
            params: PARAMS.to_vec(),
            requires: vec![Capability::Logprobs],
        }
    }

    fn build(
        &self,
        params: &Params,
        backend_name: &str,
        capabilities: &Capabilities,
    ) -> Result<Arc<dyn Strategy>, BuildError> {
        self.check_capabilities(backend_name, capabilities)?;
        let config: DeepConfConfig = parse_params(self.name, params, PARAMS)?;
        if config.budget == 0 || config.budget > MAX_BUDGET {
            return Err(invalid(
                self.name,
                "budget",
                format!("must be in 1..={MAX_BUDGET}, got {}", config.budget),
            ));
        }
        if config.window_size == 0 {
            return Err(invalid(self.name, "window_size", "must be ≥ 1"));
        }
        check_top_logprobs(self.name, config.top_logprobs, capabilities)?;
        let selection = resolve_selection(self.name, &config)?;
        let sampling = SamplingParams {
            temperature: Some(config.temperature),
            top_p: Some(config.top_p),
            max_tokens: Some(config.max_tokens),
            stop: config.stop.clone(),
            n: config.budget,
            top_logprobs: Some(config.top_logprobs),
            ..Default::default()
        };
        sampling
            .validate()
            .map_err(|e| invalid(self.name, e.field, e.reason))?;
        Ok(Arc::new(DeepConf {
            name: self.name,
            config,
            selection,
            sampling,
        }))
    }
}

/// The built strategy.
#[derive(Debug)]
pub struct DeepConf {
    name: &'static str,
    config: DeepConfConfig,
    selection: Selection,
    sampling: SamplingParams,
}

/// One finished trace, scored.
#[derive(Debug, Clone)]
pub(crate) struct ScoredTrace {
    pub text: String,
    pub answer: Option<String>,
    pub confidence: Option<TraceConfidence>,
    pub finish_reason: FinishReason,
    pub completion_tokens: Option<u64>,
}

/// What offline selection decided over a set of traces.
#[derive(Debug, Clone)]
pub(crate) struct OfflineDecision {
    pub answer: Option<String>,
    pub selected: Option<usize>,
    pub votes: Vec<Option<u32>>,
    pub scores: Vec<Option<f64>>,
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Steps 3–8 of §1.4.2 over `traces`: score, filter the answered scored traces, vote.
/// Traces without logprobs cannot be ranked; when no trace has any, every answered trace votes
/// with weight 1 (and a warning says so).
pub(crate) fn decide(traces: &[ScoredTrace], selection: &Selection, seed: u64) -> OfflineDecision {
    let metric = selection.metric;
    let scores: Vec<Option<f64>> = traces
        .iter()
        .map(|t| t.confidence.map(|c| c.get(metric)))
        .collect();
    let answers: Vec<Option<String>> = traces.iter().map(|t| t.answer.clone()).collect();
    let mut warnings = selection.warnings.clone();
    let eligible: Vec<usize> = (0..traces.len())
        .filter(|&i| answers[i].is_some() && scores[i].is_some())
        .collect();
    let unscored_answers = (0..traces.len())
        .filter(|&i| answers[i].is_some() && scores[i].is_none())
        .count();
    let mut weights: Vec<Option<f64>> = vec![None; traces.len()];
    let mut threshold = None;
    let mut kept_all_fallback = false;
    if eligible.is_empty() && unscored_answers > 0 {
        warnings.push("no answered trace had logprobs: plain majority vote".to_string());
        for (i, a) in answers.iter().enumerate() {
            if a.is_some() {
                weights[i] = Some(1.0);
            }
        }
    } else {
        if unscored_answers > 0 {
            warnings.push(format!(
                "{unscored_answers} answered trace(s) without logprobs do not vote"
            ));
        }
        let conf: Vec<f64> = eligible.iter().map(|&i| scores[i].unwrap_or(0.0)).collect();
        let filtered = filter_traces(&conf, selection.filter);
        threshold = filtered.threshold;
        kept_all_fallback = filtered.kept_all_fallback;
        for k in filtered.kept {
            let i = eligible[k];
            weights[i] = Some(match selection.weighting {
                Weighting::Weighted => conf[k],
                Weighting::Majority => 1.0,
            });
        }
    }
    let result = WeightedVote::count(&answers, &weights, seed);
    if result.zero_weights {
        warnings.push("every confidence weight was 0: counted one vote per trace".to_string());
    }
    let voting: Vec<usize> = (0..traces.len())
        .filter(|&i| answers[i].is_some() && weights[i].is_some())
        .collect();
    let voting_scores: Vec<f64> = voting.iter().filter_map(|&i| scores[i]).collect();
    let confidence_score = (!voting_scores.is_empty())
        .then(|| voting_scores.iter().sum::<f64>() / voting_scores.len() as f64);
    let selected = result.selected(|i| scores[i].unwrap_or(f64::NEG_INFINITY));
    let answer = result.winning().map(|c| c.representative.clone());
    let votes = (0..traces.len()).map(|i| result.votes_of(i)).collect();
    let mut details = serde_json::Map::new();
    details.insert("confidence_metric".into(), metric.as_str().into());
    details.insert("filter".into(), selection.filter_name().into());
    match selection.filter {
        TraceFilter::TopPercent(eta) => {
            details.insert("keep_percent".into(), eta.into());
        }
        TraceFilter::TopK(k) => {
            details.insert("keep_count".into(), k.into());
        }
        _ => {}
    }
    details.insert(
        "vote".into(),
        match selection.weighting {
            Weighting::Weighted => "weighted",
            Weighting::Majority => "majority",
        }
        .into(),
    );
    details.insert(
        "vote_mode".into(),
        selection.vote_mode.map(VoteMode::as_str).into(),
    );
    details.insert("threshold".into(), threshold.into());
    details.insert("answered".into(), result.answered.into());
    details.insert("kept".into(), voting.len().into());
    details.insert("kept_traces".into(), voting.clone().into());
    details.insert("kept_all_fallback".into(), kept_all_fallback.into());
    details.insert("confidence_score".into(), confidence_score.into());
    details.insert("vote_distribution".into(), result.distribution());
    details.insert("agreement_rate".into(), result.agreement_rate().into());
    details.insert("consensus".into(), result.beta().into());
    details.insert("warnings".into(), warnings.into());
    OfflineDecision {
        answer,
        selected,
        votes,
        scores,
        details,
    }
}

/// Token confidences → measures, answer extraction; shared with the online strategy.
pub(crate) fn score_trace(
    text: &str,
    tokens: Option<&[ponder_core::TokenLogprob]>,
    window: usize,
    include_sampled: bool,
    extract: &ExtractOptions,
) -> (Option<String>, Option<TraceConfidence>) {
    let confidence = tokens.and_then(|t| {
        let c = token_confidences(t, include_sampled);
        TraceConfidence::compute(&c, window)
    });
    let answer = extract_answer(text, extract).map(|e| e.answer);
    (answer, confidence)
}

impl Strategy for DeepConf {
    fn name(&self) -> &str {
        self.name
    }

    fn run<'a>(
        &'a self,
        backend: &'a Arc<dyn Backend>,
        input: &'a StrategyInput,
    ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
        Box::pin(async move {
            let mut sampling = self.sampling.clone();
            sampling.seed = Some(input.seed);
            let request = GenerationRequest::new(
                Prompt::Chat {
                    messages: with_system_prompt(&input.messages, &self.config.system_prompt),
                    continue_final_message: false,
                },
                sampling,
            );
            let response = backend.generate(request).await?;
            let extract = extract_options(self.config.last_number_fallback);
            let traces: Vec<ScoredTrace> = response
                .completions
                .iter()
                .map(|c| {
                    let (answer, confidence) = score_trace(
                        &c.text,
                        c.tokens.as_deref(),
                        self.config.window_size,
                        self.config.include_sampled_if_outside_topk,
                        &extract,
                    );
                    ScoredTrace {
                        text: c.text.clone(),
                        answer,
                        confidence,
                        finish_reason: c.finish_reason,
                        completion_tokens: c.completion_tokens,
                    }
                })
                .collect();
            let decision = decide(&traces, &self.selection, input.seed);
            let candidates = traces
                .iter()
                .enumerate()
                .map(|(i, t)| Candidate {
                    text: t.text.clone(),
                    answer: t.answer.clone(),
                    votes: decision.votes[i],
                    score: decision.scores[i],
                    finish_reason: t.finish_reason,
                    completion_tokens: t.completion_tokens,
                })
                .collect();
            let mut details = decision.details;
            details.insert("budget".into(), self.config.budget.into());
            details.insert("window_size".into(), self.config.window_size.into());
            Ok(StrategyOutcome {
                answer: decision.answer,
                selected: decision.selected,
                candidates,
                details: serde_json::Value::Object(details),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_core::{
        run_strategy, BackendError, CompletionStream, Message, StreamEvent, TokenLogprob,
        TopLogprob,
    };

    /// Completion `i` writes `texts[i].0` as one token per character, each with top-2
    /// logprobs `[−a, −a]`, so every token confidence is exactly `a = texts[i].1`.
    struct Scripted {
        texts: Vec<(&'static str, f64)>,
        seen: std::sync::Mutex<Vec<GenerationRequest>>,
    }

    pub(crate) fn flat_token(text: &str, c: f64) -> TokenLogprob {
        TokenLogprob {
            token: text.into(),
            logprob: Some(-c),
            top: vec![
                TopLogprob {
                    token: text.into(),
                    logprob: -c,
                },
                TopLogprob {
                    token: "~".into(),
                    logprob: -c,
                },
            ],
        }
    }

    fn caps(logprobs: Option<u8>) -> Capabilities {
        Capabilities {
            max_top_logprobs: logprobs,
            multiple_samples: true,
            prefix_continuation: false,
            process_rewards: false,
            streaming: true,
            max_stop_strings: None,
        }
    }

    impl Backend for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn capabilities(&self) -> Capabilities {
            caps(Some(20))
        }
        fn stream(
            &self,
            request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
            let n = request.params.n;
            self.seen.lock().expect("lock").push(request);
            let mut events = Vec::new();
            for i in 0..n {
                let (text, c) = self.texts[i as usize % self.texts.len()];
                for ch in text.chars() {
                    let s = ch.to_string();
                    events.push(Ok(StreamEvent::Delta {
                        index: i,
                        text: s.clone(),
                        token_count: 1,
                        tokens: vec![flat_token(&s, c)],
                    }));
                }
                events.push(Ok(StreamEvent::Finished {
                    index: i,
                    reason: FinishReason::Stop,
                    stop: None,
                }));
            }
            Box::pin(
                async move { Ok(CompletionStream::new(n, futures_util::stream::iter(events))) },
            )
        }
    }

    fn params(list: &[(&str, serde_json::Value)]) -> Params {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn build(list: &[(&str, serde_json::Value)]) -> Result<Arc<dyn Strategy>, BuildError> {
        DeepConfFactory::default().build(&params(list), "scripted", &caps(Some(20)))
    }

    async fn run(
        texts: Vec<(&'static str, f64)>,
        list: &[(&str, serde_json::Value)],
    ) -> ponder_core::StrategyResult {
        let backend = Arc::new(Scripted {
            texts,
            seen: Default::default(),
        });
        let strategy = build(list).expect("builds");
        let input = StrategyInput {
            messages: vec![Message::user("q")],
            seed: 11,
        };
        let result = run_strategy(strategy.as_ref(), backend.clone(), &input)
            .await
            .expect("runs");
        let seen = backend.seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "one request for the whole budget");
        assert_eq!(seen[0].params.top_logprobs, Some(20));
        assert_eq!(seen[0].params.seed, Some(11));
        result
    }

    #[test]
    fn a_backend_without_logprobs_fails_at_build_time() {
        let err = DeepConfFactory::default()
            .build(&Params::new(), "plain", &caps(None))
            .err()
            .expect("fails");
        assert!(
            matches!(
                err,
                BuildError::MissingCapability {
                    capability: Capability::Logprobs,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("logprobs"), "{err}");
        // A backend with fewer top logprobs than asked.
        let err = DeepConfFactory::default()
            .build(&Params::new(), "five", &caps(Some(5)))
            .err();
        assert!(
            matches!(err, Some(BuildError::InvalidParam { ref param, .. }) if param == "top_logprobs"),
            "{err:?}"
        );
    }

    #[test]
    fn defaults_and_parameter_errors() {
        let strategy = build(&[]).expect("defaults build");
        assert_eq!(strategy.name(), "deepconf");
        let info = DeepConfFactory::default().info();
        let default = |n: &str| {
            info.params
                .iter()
                .find(|p| p.name == n)
                .map(|p| p.default)
                .expect("listed")
        };
        assert_eq!(default("budget"), "16");
        assert_eq!(default("window_size"), "2048");
        assert_eq!(default("keep_percent"), "10");
        assert_eq!(default("max_tokens"), "32000");
        for (list, param) in [
            (vec![("budget", serde_json::json!(0))], "budget"),
            (vec![("filter", serde_json::json!("top_k"))], "keep_count"),
            (
                vec![("filter", serde_json::json!("threshold"))],
                "confidence_threshold",
            ),
            (vec![("filter", serde_json::json!("best"))], "filter"),
            (vec![("keep_percent", serde_json::json!(0))], "keep_percent"),
            (
                vec![
                    ("vote_mode", serde_json::json!("tail_weighted")),
                    ("filter", serde_json::json!("none")),
                ],
                "vote_mode",
            ),
            (vec![("temperature", serde_json::json!(-1))], "temperature"),
        ] {
            let err = build(&list).err();
            assert!(
                matches!(err, Some(BuildError::InvalidParam { param: ref p, .. }) if p == param),
                "{list:?}: {err:?}"
            );
        }
    }

    #[test]
    fn legacy_top_n_is_a_count_with_a_warning() {
        let config: DeepConfConfig = parse_params(
            "deepconf",
            &params(&[("filter", serde_json::json!("top10"))]),
            PARAMS,
        )
        .expect("parses");
        let s = resolve_selection("deepconf", &config).expect("resolves");
        assert_eq!(s.filter, TraceFilter::TopK(10));
        assert_eq!(s.warnings.len(), 1);
        assert!(
            s.warnings[0].contains("not 10 percent"),
            "{}",
            s.warnings[0]
        );
    }

    #[tokio::test]
    async fn the_confident_minority_wins_a_weighted_top_percent_vote() {
        // Ten traces (one request, n = 10): eight say 3 with confidence 1, two say 4 with
        // confidence 5 and 6. η = 20: s = pct(conf, 80), r = 0.8 · 9 = 7.2 over the sorted
        // [1 × 8, 5, 6] → x_7 + 0.2 · (x_8 − x_7) = 1 + 0.2 · 4 = 1.8; kept: the 5 and the 6.
        // V(4) = 11, the only cluster: answer 4, β = 1, selected = the 6.
        let mut texts = vec![("\\boxed{3}", 1.0); 8];
        texts.push(("\\boxed{4}", 5.0));
        texts.push(("\\boxed{4}", 6.0));
        let r = run(
            texts,
            &[
                ("budget", serde_json::json!(10)),
                ("keep_percent", serde_json::json!(20)),
            ],
        )
        .await;
        let o = &r.outcome;
        assert_eq!(o.answer.as_deref(), Some("4"));
        assert_eq!(o.selected, Some(9));
        assert!((o.details["threshold"].as_f64().expect("s") - 1.8).abs() < 1e-12);
        assert_eq!(o.details["kept"], 2);
        assert_eq!(o.details["kept_traces"], serde_json::json!([8, 9]));
        // Mean confidence of the voters: (5 + 6) / 2.
        assert_eq!(o.details["confidence_score"], 5.5);
        // Agreement over all ten answered traces: the 3s, 8 / 10.
        assert_eq!(o.details["agreement_rate"], 0.8);
        assert_eq!(o.details["vote_distribution"][0]["share"], 1.0);
        assert_eq!(o.candidates[0].votes, None, "filtered out: no vote");
        assert_eq!(o.candidates[8].votes, Some(2));
        assert_eq!(o.candidates[9].score, Some(6.0));
        assert_eq!(r.cost.requests, 1);
    }

    #[tokio::test]
    async fn majority_without_a_filter_follows_the_count() {
        // Same traces, filter none, vote majority: 8 votes for 3 against 2.
        let mut texts = vec![("\\boxed{3}", 1.0); 8];
        texts.push(("\\boxed{4}", 5.0));
        texts.push(("\\boxed{4}", 6.0));
        let r = run(
            texts.clone(),
            &[
                ("budget", serde_json::json!(10)),
                ("vote_mode", serde_json::json!("majority")),
            ],
        )
        .await;
        assert_eq!(r.outcome.answer.as_deref(), Some("3"));
        assert_eq!(r.outcome.details["vote_mode"], "majority");
        // Weighted without a filter: V(3) = 8 · 1 = 8 < V(4) = 11.
        let r = run(
            texts,
            &[
                ("budget", serde_json::json!(10)),
                ("vote_mode", serde_json::json!("min_window_weighted")),
            ],
        )
        .await;
        assert_eq!(r.outcome.answer.as_deref(), Some("4"));
        // β = 11 / 19.
        let beta = r.outcome.details["consensus"].as_f64().expect("β");
        assert!((beta - 11.0 / 19.0).abs() < 1e-12);
    }
}
