//! Adaptive step strategies (MUR adaptive scaling, uncertainty-triggered CoT, φ-decoding) against a scripted backend whose steps carry
//! known uncertainties and rewards: exactly which steps draw extra candidates, what each draw
//! asks for, which step is kept and the momentum; then one end-to-end run against `ponder-sim`.
//!
//! The script is a tree of labelled steps. The `k`-th candidate generated (over all calls)
//! continuing a prefix whose last step is `p` is child `k mod len` of `p`, so a probe gets the
//! first child and the extra candidates of a scaled step the following ones. Every step is one
//! token whose logprob is `−nll` (so its mean NLL is `nll`); a child that ends the solution
//! writes a boxed answer and stops at the end of sequence, the others stop at `"\nSo "`. The PRM
//! rewards a step by its label. A call capped at `ROLLOUT_TOKENS` or `FINAL_TOKENS` tokens
//! (φ-decoding's rollouts and completions) follows the first children to an answer, one token
//! per step, one step per line, without advancing the draw counters.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ponder_core::{
    run_strategy, Backend, BackendError, BoxFuture, Capabilities, CompletionStream, FinishReason,
    GenerationRequest, Message, Params, Prompt, RewardRequest, RewardResponse, StrategyFactory,
    StrategyInput, StrategyResult, StreamEvent, TokenLogprob, TopLogprob,
};
use ponder_strategies::step::{AdaptiveScalingFactory, PhiDecodingFactory, UncertaintyCotFactory};

/// (label, mean NLL, reward, boxed answer when the step ends the solution)
type Child = (&'static str, f64, f64, Option<&'static str>);

struct Script {
    children: HashMap<&'static str, Vec<Child>>,
    /// Candidates generated so far per parent label.
    drawn: Mutex<HashMap<String, usize>>,
    requests: Mutex<Vec<GenerationRequest>>,
    rewards: Mutex<Vec<Vec<RewardRequest>>>,
    caps: Capabilities,
}

fn caps(logprobs: bool) -> Capabilities {
    Capabilities {
        max_top_logprobs: logprobs.then_some(20),
        multiple_samples: true,
        prefix_continuation: true,
        process_rewards: true,
        streaming: true,
        max_stop_strings: None,
    }
}

/// The tree (mean NLL, reward; `*` ends with a boxed answer):
///
/// ```text
/// root ─ a0 (0.5, 0.6) ─ b0 (0.1, 0.5) ─ c0 (1.0, 0.2) ─ d1* (0.2, 0.4) (7)
///                                      ├ c1 (0.3, 0.9) ─ d0* (0.15, 0.8) (42)
///                                      └ c2 (0.6, 0.5) ─ d2* (0.2, 0.4) (9)
/// ```
fn tree() -> HashMap<&'static str, Vec<Child>> {
    HashMap::from([
        ("", vec![("a0", 0.5, 0.6, None)]),
        ("a0", vec![("b0", 0.1, 0.5, None)]),
        (
            "b0",
            vec![
                ("c0", 1.0, 0.2, None),
                ("c1", 0.3, 0.9, None),
                ("c2", 0.6, 0.5, None),
            ],
        ),
        ("c0", vec![("d1", 0.2, 0.4, Some("7"))]),
        ("c1", vec![("d0", 0.15, 0.8, Some("42"))]),
        ("c2", vec![("d2", 0.2, 0.4, Some("9"))]),
    ])
}

fn script(logprobs: bool) -> Arc<Script> {
    Arc::new(Script {
        children: tree(),
        drawn: Mutex::default(),
        requests: Mutex::default(),
        rewards: Mutex::default(),
        caps: caps(logprobs),
    })
}

/// The label of a step text (`"So b0"` → `"b0"`).
fn label(step: &str) -> &str {
    let s = step.trim();
    let s = s.strip_prefix("So ").unwrap_or(s);
    s.split_whitespace().next().unwrap_or("")
}

impl Script {
    fn reward(&self, step: &str) -> f64 {
        let l = label(step);
        self.children
            .values()
            .flatten()
            .find(|c| c.0 == l)
            .map_or(0.0, |c| c.2)
    }

    /// The `n` of every step call, in order.
    fn draws(&self) -> Vec<u32> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.params.n)
            .collect()
    }

    fn reward_batches(&self) -> Vec<Vec<String>> {
        self.rewards
            .lock()
            .expect("lock")
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .map(|r| label(r.steps.last().map_or("", String::as_str)).to_string())
                    .collect()
            })
            .collect()
    }
}

const ROLLOUT_TOKENS: u32 = 777;
const FINAL_TOKENS: u32 = 888;

/// One token of a step with mean NLL `nll`.
fn token(text: &str, nll: f64) -> TokenLogprob {
    let p = (-nll).exp();
    TokenLogprob {
        token: text.to_string(),
        logprob: Some(-nll),
        top: vec![
            TopLogprob {
                token: "x".into(),
                logprob: -nll,
            },
            TopLogprob {
                token: "y".into(),
                logprob: (1.0 - p).max(1e-9).ln(),
            },
        ],
    }
}

impl Script {
    /// The first-child path from `parent` to an answer: its text (one step a line) and tokens.
    fn path_to_answer(&self, parent: &str) -> (String, Vec<TokenLogprob>) {
        let mut parts: Vec<String> = Vec::new();
        let mut tokens = Vec::new();
        let mut at = parent.to_string();
        while let Some((l, nll, _, answer)) = self.children.get(at.as_str()).and_then(|k| k.first())
        {
            let mut part = if parts.is_empty() { "" } else { "\n" }.to_string();
            match answer {
                Some(a) => part.push_str(&format!("{l} so \\boxed{{{a}}}.")),
                None => part.push_str(l),
            }
            tokens.push(token(&part, *nll));
            parts.push(part);
            if answer.is_some() {
                break;
            }
            at = l.to_string();
        }
        (parts.concat(), tokens)
    }

    /// Requests with `max_tokens` = `cap`.
    fn calls_capped(&self, cap: u32) -> usize {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.params.max_tokens == Some(cap))
            .count()
    }
}

impl Backend for Script {
    fn name(&self) -> &str {
        "script"
    }
    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }
    fn stream(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
        let prefix = match &request.prompt {
            Prompt::Chat {
                messages,
                continue_final_message: true,
            } => messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let n = request.params.n;
        let to_end = matches!(
            request.params.max_tokens,
            Some(ROLLOUT_TOKENS | FINAL_TOKENS)
        );
        self.requests.lock().expect("lock").push(request);
        let parent = prefix
            .split("\nSo ")
            .filter(|s| !s.is_empty())
            .last()
            .map(label)
            .unwrap_or("")
            .to_string();
        if to_end {
            let (text, tokens) = self.path_to_answer(&parent);
            let events = vec![
                Ok(StreamEvent::Delta {
                    index: 0,
                    text,
                    token_count: tokens.len() as u32,
                    tokens,
                }),
                Ok(StreamEvent::Finished {
                    index: 0,
                    reason: FinishReason::Stop,
                    stop: None,
                }),
            ];
            return Box::pin(async move {
                Ok(CompletionStream::new(n, futures_util::stream::iter(events)))
            });
        }
        let kids = self
            .children
            .get(parent.as_str())
            .cloned()
            .unwrap_or_default();
        let mut drawn = self.drawn.lock().expect("lock");
        let first = drawn.entry(parent).or_insert(0);
        let mut events = Vec::new();
        for i in 0..n {
            let (text, stop, nll) = match kids.get((*first + i as usize) % kids.len().max(1)) {
                Some((l, nll, _, Some(a))) => (format!("{l} so \\boxed{{{a}}}."), None, *nll),
                Some((l, nll, _, None)) => (l.to_string(), Some("\nSo ".to_string()), *nll),
                None => ("nothing left".to_string(), None, 0.0),
            };
            let p = (-nll).exp();
            events.push(Ok(StreamEvent::Delta {
                index: i,
                text: text.clone(),
                token_count: 1,
                tokens: vec![TokenLogprob {
                    token: text,
                    logprob: Some(-nll),
                    top: vec![
                        TopLogprob {
                            token: "x".into(),
                            logprob: -nll,
                        },
                        TopLogprob {
                            token: "y".into(),
                            logprob: (1.0 - p).max(1e-9).ln(),
                        },
                    ],
                }],
            }));
            events.push(Ok(StreamEvent::Finished {
                index: i,
                reason: FinishReason::Stop,
                stop,
            }));
        }
        *first += n as usize;
        Box::pin(async move { Ok(CompletionStream::new(n, futures_util::stream::iter(events))) })
    }
    fn rewards(
        &self,
        requests: Vec<RewardRequest>,
    ) -> BoxFuture<'_, Result<Vec<RewardResponse>, BackendError>> {
        let replies = requests
            .iter()
            .map(|r| RewardResponse {
                step_rewards: r.steps.iter().map(|s| self.reward(s)).collect(),
                prompt_tokens: 7,
            })
            .collect();
        self.rewards.lock().expect("lock").push(requests);
        Box::pin(async move { Ok(replies) })
    }
}

fn params(pairs: &[(&str, serde_json::Value)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

async fn run(
    factory: &dyn StrategyFactory,
    backend: Arc<Script>,
    p: &[(&str, serde_json::Value)],
) -> StrategyResult {
    let strategy = factory
        .build(&params(p), "script", &backend.capabilities())
        .expect("builds");
    let input = StrategyInput {
        messages: vec![Message::user("What is it?")],
        seed: 5,
    };
    run_strategy(strategy.as_ref(), backend, &input)
        .await
        .expect("runs")
}

/// Labels of the nodes with `decision`, in id order.
fn with_decision(result: &StrategyResult, decision: &str) -> Vec<String> {
    result.outcome.details["search"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["decision"] == decision)
        .map(|n| label(n["text"].as_str().unwrap_or("")).to_string())
        .collect()
}

/// Per step: whether it was scaled.
fn scaled(result: &StrategyResult) -> Vec<bool> {
    result.outcome.details["search"]["scaling"]["steps"]
        .as_array()
        .expect("scaling records")
        .iter()
        .map(|s| s["scaled"].as_bool().expect("scaled"))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn mur_scales_only_the_step_whose_uncertainty_jumps_above_its_momentum() {
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[("candidates_per_step", 3.into())],
    )
    .await;
    // γ = 0.9: margin −ln 0.9 = 0.10536; α = 0.9; m starts at 0.
    // Step 1 (a0, s 0.5): t = 0, never scaled; m = 0.05.
    // Step 2 (b0, s 0.1): level 0.155, not scaled; m = 0.055.
    // Step 3 (c0, s 1.0): level 0.1604, scaled: c1, c2 drawn, PRM picks c1 (0.9); m = 0.0795.
    // Step 4 (d0, s 0.15): level 0.1849, not scaled; it ends with the answer 42.
    assert_eq!(scaled(&r), vec![false, false, true, false]);
    assert_eq!(b.draws(), vec![1, 1, 1, 2, 1]);
    assert_eq!(b.reward_batches(), vec![vec!["c0", "c1", "c2"]]);
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b0", "c1"]);
    assert_eq!(with_decision(&r, "pruned"), vec!["c0", "c2"]);
    assert_eq!(with_decision(&r, "selected"), vec!["d0"]);
    let steps = &r.outcome.details["search"]["scaling"]["steps"];
    let momentum: Vec<f64> = (0..4)
        .map(|i| steps[i]["momentum"].as_f64().expect("momentum"))
        .collect();
    for (got, want) in momentum.iter().zip([0.0, 0.05, 0.055, 0.0795]) {
        assert!(close(*got, want), "{momentum:?}");
    }
    let level = steps[2]["level"].as_f64().expect("level");
    assert!(close(level, 0.055 - 0.9f64.ln()), "{level}");
    assert_eq!(steps[2]["extra_candidates"], 2);
    assert!(close(
        steps[2]["chosen_signal"].as_f64().expect("signal"),
        0.3
    ));
    let final_momentum = r.outcome.details["final_momentum"].as_f64().expect("m");
    assert!(close(final_momentum, 0.9 * 0.0795 + 0.1 * 0.15));
    assert_eq!(r.outcome.details["scaled_steps"], 1);
    assert_eq!(r.outcome.details["probe_only_steps"], 3);
    // Only the scaled step is scored.
    assert_eq!(
        r.outcome.details["step_scores"],
        serde_json::json!([null, null, 0.9, null])
    );
}

#[tokio::test]
async fn without_probe_reuse_a_scaled_step_draws_n_fresh_candidates() {
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("reuse_probe", false.into()),
        ],
    )
    .await;
    assert_eq!(scaled(&r), vec![false, false, true, false]);
    // The probe c0 is not scored; the three fresh draws are c1, c2 and c0 again.
    assert_eq!(b.draws(), vec![1, 1, 1, 3, 1]);
    assert_eq!(b.reward_batches(), vec![vec!["c1", "c2", "c0"]]);
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    assert_eq!(with_decision(&r, "pruned"), vec!["c0", "c2", "c0"]);
    let step3 = &r.outcome.details["search"]["iterations"][2];
    assert_eq!(step3["children"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn the_other_scaling_rules_pick_their_own_steps() {
    // threshold 0.4: a0 (0.5) and c0 (1.0) are scaled, even the first step.
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("adaptive_scaling_method", "threshold".into()),
            ("threshold", 0.4.into()),
        ],
    )
    .await;
    assert_eq!(scaled(&r), vec![true, false, true, false]);
    assert_eq!(b.draws(), vec![1, 2, 1, 1, 2, 1]);
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));

    // never: step-wise chain of thought along the first children, no PRM call.
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[("adaptive_scaling_method", "never".into())],
    )
    .await;
    assert_eq!(scaled(&r), vec![false; 4]);
    assert_eq!(b.draws(), vec![1; 4]);
    assert!(b.reward_batches().is_empty());
    assert_eq!(r.outcome.answer.as_deref(), Some("7"));

    // average: step 3 (1.0 above the mean 0.3 of 0.5 and 0.1) and step 4 (d0 0.15 is below
    // the mean 0.3 of 0.5, 0.1 and 0.3) → only step 3.
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("adaptive_scaling_method", "average".into()),
        ],
    )
    .await;
    assert_eq!(scaled(&r), vec![false, false, true, false]);
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));

    // momentum_init = first_signal: m_0 = 0.5, so c0 (1.0 > 0.46 + 0.105) is still scaled but
    // with a higher bar.
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("momentum_init", "first_signal".into()),
        ],
    )
    .await;
    assert_eq!(scaled(&r), vec![false, false, true, false]);
    let m = r.outcome.details["search"]["scaling"]["steps"][2]["momentum"]
        .as_f64()
        .expect("momentum");
    assert!(close(m, 0.46), "{m}");

    // always: every step draws N (a0 ×3, b0 ×3, c0–c2, d0 ×3), four PRM calls.
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("adaptive_scaling_method", "always".into()),
        ],
    )
    .await;
    assert_eq!(scaled(&r), vec![true; 4]);
    assert_eq!(b.draws(), vec![1, 2, 1, 2, 1, 2, 1, 2]);
    assert_eq!(b.reward_batches().len(), 4);
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
}

#[test]
fn adaptive_scaling_checks_its_parameters_and_the_backend() {
    let build = |p: &[(&str, serde_json::Value)], logprobs: bool| {
        AdaptiveScalingFactory
            .build(&params(p), "script", &caps(logprobs))
            .err()
            .map(|e| e.to_string())
    };
    assert!(build(&[], true).is_none());
    let err = build(&[], false).expect("needs logprobs");
    assert!(err.contains("logprobs"), "{err}");
    let err = build(&[("adaptive_scaling_method", "threshold".into())], true)
        .expect("threshold required");
    assert!(err.contains("threshold"), "{err}");
    let err = build(&[("threshold", 0.4.into())], true).expect("threshold unused");
    assert!(err.contains("threshold"), "{err}");
    let err = build(&[("signal", "scorer_uncertainty".into())], true).expect("prm has no U");
    assert!(err.contains("signal"), "{err}");
    assert!(build(
        &[
            ("signal", "scorer_uncertainty".into()),
            ("scorer", "entropy".into())
        ],
        true
    )
    .is_none());
    let err = build(&[("scaling_rate", 0.0.into())], true).expect("γ > 0");
    assert!(err.contains("scaling_rate"), "{err}");
    let err = build(&[("momentum_rate", 1.5.into())], true).expect("α ≤ 1");
    assert!(err.contains("momentum_rate"), "{err}");
}

/// Per step of uncertainty-cot: whether the probe triggered N candidates.
fn triggered(result: &StrategyResult) -> Vec<bool> {
    result.outcome.details["search"]["probes"]["steps"]
        .as_array()
        .expect("probe records")
        .iter()
        .map(|s| s["triggered"].as_bool().expect("triggered"))
        .collect()
}

#[tokio::test]
async fn uncertainty_cot_samples_candidates_only_after_an_uncertain_probe() {
    let b = script(true);
    let r = run(
        &UncertaintyCotFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("scorer", "perplexity".into()),
        ],
    )
    .await;
    // u = 1 − 1/(1 + nll) against 0.3 (nll 0.4286): a0 0.33 and c0 0.5 trigger, b0 0.09
    // and d0 0.13 are kept as probed.
    assert_eq!(triggered(&r), vec![true, false, true, false]);
    assert_eq!(b.draws(), vec![1, 3, 1, 1, 3, 1]);
    assert!(b.reward_batches().is_empty());
    // Step 3's fresh candidates are c1, c2, c0: c1 is the least uncertain.
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b0", "c1"]);
    assert_eq!(
        with_decision(&r, "pruned"),
        vec!["a0", "a0", "a0", "c0", "c2", "c0"]
    );
    assert_eq!(with_decision(&r, "selected"), vec!["d0"]);
    let steps = &r.outcome.details["search"]["probes"]["steps"];
    assert!(close(steps[2]["uncertainty"].as_f64().expect("u0"), 0.5));
    assert!(close(
        steps[2]["chosen_uncertainty"].as_f64().expect("u"),
        0.3 / 1.3
    ));
    assert_eq!(steps[2]["candidates"], 3);
    assert_eq!(steps[1]["candidates"], 0);
    assert_eq!(r.outcome.details["multi_path_steps"], 2);
    assert_eq!(r.outcome.details["greedy_steps"], 2);
}

#[tokio::test]
async fn the_token_probe_asks_for_one_token_and_is_always_discarded() {
    let b = script(true);
    let r = run(
        &UncertaintyCotFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("scorer", "perplexity".into()),
            ("uncertainty_sampling", "token".into()),
            ("token_uncertainty", "pd_gap".into()),
            ("low_uncertainty_decoding", "greedy".into()),
        ],
    )
    .await;
    // PD-gap of the probe's position, 1 − |2p − 1| with p = e^(−nll): a0 0.79, b0 0.19,
    // c0 0.74, d0 0.28.
    assert_eq!(triggered(&r), vec![true, false, true, false]);
    assert_eq!(b.draws(), vec![1, 3, 1, 1, 1, 3, 1, 1]);
    let requests = b.requests.lock().expect("lock").clone();
    let max_tokens: Vec<Option<u32>> = requests.iter().map(|r| r.params.max_tokens).collect();
    assert_eq!(
        max_tokens,
        [1, 500, 1, 500, 1, 500, 1, 500].map(Some).to_vec()
    );
    assert!(requests
        .iter()
        .step_by(2)
        .all(|r| r.params.min_tokens.unwrap_or(0) == 0));
    // The certain steps are decoded greedily, the others sampled.
    assert_eq!(requests[3].params.temperature, Some(0.0));
    assert_eq!(requests[7].params.temperature, Some(0.0));
    assert_eq!(requests[5].params.temperature, Some(0.7));
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    let u = r.outcome.details["search"]["probes"]["steps"][1]["uncertainty"]
        .as_f64()
        .expect("u0");
    assert!(close(u, 2.0 - 2.0 * (-0.1f64).exp()), "{u}");
    // Probes are recorded and pruned: 4 probes + 3 + 1 + 3 + 1 steps.
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b0", "c1"]);
}

#[test]
fn uncertainty_cot_needs_a_logprob_scorer_and_logprobs() {
    let build = |p: &[(&str, serde_json::Value)], logprobs: bool| {
        UncertaintyCotFactory
            .build(&params(p), "script", &caps(logprobs))
            .err()
            .map(|e| e.to_string())
    };
    assert!(build(&[], true).is_none());
    let err = build(&[("scorer", "prm".into())], true).expect("prm is no uncertainty");
    assert!(err.contains("scorer"), "{err}");
    let err = build(&[], false).expect("needs logprobs");
    assert!(err.contains("logprobs"), "{err}");
    let err = build(&[("uncertainty_threshold", (-1.0).into())], true).expect("u ≥ 0");
    assert!(err.contains("uncertainty_threshold"), "{err}");
    let info = UncertaintyCotFactory.info();
    let default = |name: &str| {
        info.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.default)
    };
    assert_eq!(default("scorer"), Some("entropy"));
    assert_eq!(default("min_step_tokens"), Some("10"));
    assert_eq!(default("max_step_tokens"), Some("500"));
    assert_eq!(default("max_steps"), Some("20"));
}

#[test]
fn newline_custom_markers_are_stop_strings_and_blank_ones_are_skipped() {
    let stops = ponder_strategies::step::detector::marker_stop_strings(
        &[],
        &["\n".to_string(), "\n\n".to_string(), "  ".to_string()],
    );
    assert!(stops.contains(&"\n".to_string()), "{stops:?}");
    assert!(stops.contains(&"\n\n".to_string()), "{stops:?}");
    assert!(!stops.iter().any(|s| s == "  "), "{stops:?}");
}

fn phi_params(
    extra: &[(&'static str, serde_json::Value)],
) -> Vec<(&'static str, serde_json::Value)> {
    let mut p: Vec<(&'static str, serde_json::Value)> = vec![
        ("step_beam_size", 1.into()),
        ("num_rollout", 3.into()),
        ("sigma_rate", 0.0.into()),
        ("advantage_temperature", 0.0001.into()),
        ("max_rollout_tokens", ROLLOUT_TOKENS.into()),
        ("max_final_tokens", FINAL_TOKENS.into()),
    ];
    p.extend(extra.iter().cloned());
    p
}

/// Per φ-decoding step: how many candidates survived in-width pruning and how many were refilled.
fn width(result: &StrategyResult) -> Vec<(usize, usize)> {
    result.outcome.details["search"]["phi"]["steps"]
        .as_array()
        .expect("phi records")
        .iter()
        .map(|s| {
            let c = s["candidates"].as_array().expect("candidates");
            (
                c.iter().filter(|c| c["kept_in_width"] == true).count(),
                c.iter().filter(|c| c["refilled"] == true).count(),
            )
        })
        .collect()
}

#[tokio::test]
async fn phi_decoding_prunes_in_width_and_follows_the_best_foresight_advantage() {
    let b = script(true);
    let r = run(&PhiDecodingFactory, b.clone(), &phi_params(&[])).await;
    // Steps 1, 2 and 4: three equal candidates, none above μ (σ = 0), one refilled.
    // Step 3: c0 −1.0, c1 −0.3, c2 −0.6 around μ −0.633: c1 and c2 kept and rolled out.
    // Foresight: c1 → d0 (F −0.15), c2 → d2 (F −0.2); the parent b0 had F −0.6 (its rollout
    // c0, d1), so A = 0.45 and 0.4, and τ1 = 1e-4 makes c1 certain. d0 ends the solution.
    assert_eq!(width(&r), vec![(0, 1), (0, 1), (2, 0), (0, 1)]);
    assert_eq!(b.calls_capped(ROLLOUT_TOKENS), 4);
    assert_eq!(b.calls_capped(FINAL_TOKENS), 0);
    assert_eq!(r.outcome.details["rollouts"], 4);
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b0", "c1"]);
    assert_eq!(
        with_decision(&r, "pruned"),
        vec!["a0", "a0", "b0", "b0", "c0", "c2", "d0", "d0"]
    );
    assert_eq!(with_decision(&r, "selected"), vec!["d0"]);
    assert_eq!(r.outcome.details["search"]["stopped"], "all_finished");
    let step3 = &r.outcome.details["search"]["phi"]["steps"][2];
    let adv: Vec<Option<f64>> = step3["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["advantage"].as_f64())
        .collect();
    assert_eq!(adv[0], None);
    assert!(
        close(adv[1].expect("c1"), 0.45) && close(adv[2].expect("c2"), 0.4),
        "{adv:?}"
    );
    // Two rollouts cannot make three clusters: the weights are the advantages alone.
    assert_eq!(step3["clustered"], false);
}

#[tokio::test]
async fn phi_decoding_stops_foresight_when_the_rollouts_agree() {
    let b = script(true);
    let r = run(
        &PhiDecodingFactory,
        b.clone(),
        &phi_params(&[("least_foresight_num", 1.into()), ("cluster_num", 1.into())]),
    )
    .await;
    // One cluster holds every rollout: after step 2 (> T_min = 1) foresight stops and the
    // beam (a0, b0) is completed along c0, d1.
    let steps = r.outcome.details["search"]["phi"]["steps"]
        .as_array()
        .expect("records")
        .clone();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["foresight_stopped"], false);
    assert_eq!(steps[1]["foresight_stopped"], true);
    assert_eq!(r.outcome.details["search"]["stopped"], "depth_pruned");
    assert_eq!(b.calls_capped(ROLLOUT_TOKENS), 2);
    assert_eq!(b.calls_capped(FINAL_TOKENS), 1);
    assert_eq!(r.outcome.answer.as_deref(), Some("7"));
}

#[test]
fn phi_decoding_checks_its_parameters() {
    let build = |p: &[(&str, serde_json::Value)], logprobs: bool| {
        PhiDecodingFactory
            .build(&params(p), "script", &caps(logprobs))
            .err()
            .map(|e| e.to_string())
    };
    assert!(build(&[], true).is_none());
    let err = build(&[], false).expect("needs logprobs");
    assert!(err.contains("logprobs"), "{err}");
    for (name, bad) in [
        ("step_beam_size", serde_json::json!(0)),
        ("depth_threshold", serde_json::json!(0.0)),
        ("advantage_temperature", serde_json::json!(0.0)),
        ("sigma_rate", serde_json::json!(-1.0)),
    ] {
        let err = build(&[(name, bad)], true).expect("rejected");
        assert!(err.contains(name), "{err}");
    }
    let info = PhiDecodingFactory.info();
    let default = |name: &str| {
        info.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.default)
    };
    assert_eq!(default("step_beam_size"), Some("4"));
    assert_eq!(default("num_foresight"), Some("8"));
    assert_eq!(default("temperature"), Some("0.6"));
}

// --- End to end against ponder-sim -------------------------------------------------------------

mod sim {
    use super::*;
    use crate::common::{sim_backend, solve};
    use ponder_sim::SimConfig;

    const TEST_LIMIT: Duration = Duration::from_secs(120);

    #[tokio::test]
    async fn adaptive_scaling_solves_hard_problems_scoring_only_scaled_steps() {
        tokio::time::timeout(TEST_LIMIT, async {
            let sim = ponder_sim::spawn(SimConfig {
                seed: 3,
                ..Default::default()
            })
            .await
            .expect("sim");
            let backend = sim_backend(&sim, None);
            let mut answered = 0;
            for i in 0..3 {
                let before = sim.stats().pooling_requests;
                let (r, _gold) = solve(
                    backend.clone(),
                    "adaptive-scaling",
                    serde_json::json!({
                        "detector": "structured",
                        "min_step_tokens": 1,
                        "candidates_per_step": 4,
                    }),
                    i,
                )
                .await;
                answered += usize::from(r.outcome.answer.is_some());
                let search = &r.outcome.details["search"];
                let records = search["scaling"]["steps"].as_array().expect("records");
                let iterations = search["iterations"].as_array().expect("iterations");
                assert_eq!(records.len(), iterations.len());
                assert!(records.len() >= 2, "{records:?}");
                // Every probe had logprobs, so every step has a signal.
                assert!(records.iter().all(|s| s["signal"].is_f64()), "{records:?}");
                // The first step is never scaled under the momentum rule.
                assert_eq!(records[0]["scaled"], false);
                // PRM calls: one per scaled step, plus at most one for the answer phase.
                let scaled = records.iter().filter(|s| s["scaled"] == true).count() as u64;
                let calls = sim.stats().pooling_requests - before;
                assert!(
                    calls == scaled || calls == scaled + 1,
                    "{calls} vs {scaled}"
                );
                for (rec, it) in records.iter().zip(iterations) {
                    let want = if rec["scaled"] == true { 4 } else { 1 };
                    assert_eq!(it["children"].as_array().map(Vec::len), Some(want));
                }
            }
            assert!(answered >= 2, "{answered}");
            sim.shutdown().await;
        })
        .await
        .expect("within the limit");
    }

    #[tokio::test]
    async fn uncertainty_cot_solves_hard_problems_line_by_line() {
        tokio::time::timeout(TEST_LIMIT, async {
            let sim = ponder_sim::spawn(SimConfig {
                seed: 4,
                ..Default::default()
            })
            .await
            .expect("sim");
            let backend = sim_backend(&sim, None);
            let mut answered = 0;
            for (i, probe) in ["sequence", "sequence", "token"].iter().enumerate() {
                let (r, _gold) = solve(
                    backend.clone(),
                    "uncertainty-cot",
                    serde_json::json!({
                        "candidates_per_step": 4,
                        "uncertainty_sampling": probe,
                    }),
                    i,
                )
                .await;
                answered += usize::from(r.outcome.answer.is_some());
                let search = &r.outcome.details["search"];
                let records = search["probes"]["steps"].as_array().expect("records");
                let iterations = search["iterations"].as_array().expect("iterations");
                assert_eq!(records.len(), iterations.len());
                assert!(
                    records.len() >= 2,
                    "{records:?} {}",
                    serde_json::to_string_pretty(&search["nodes"]).unwrap_or_default()
                );
                for (rec, it) in records.iter().zip(iterations) {
                    let u = rec["uncertainty"].as_f64().expect("logprobs streamed");
                    assert!((0.0..=1.0).contains(&u), "{u}");
                    // Children: the probe plus the N candidates, the probe kept alone, or
                    // (token mode) the probe plus one decoded step.
                    let want = match (rec["triggered"] == true, *probe) {
                        (true, _) => 5,
                        (false, "sequence") => 1,
                        (false, _) => 2,
                    };
                    assert_eq!(it["children"].as_array().map(Vec::len), Some(want));
                }
                // No PRM: the scorer reads logprobs.
                assert_eq!(sim.stats().pooling_requests, 0);
            }
            assert!(answered >= 2, "{answered}");
            sim.shutdown().await;
        })
        .await
        .expect("within the limit");
    }

    #[tokio::test]
    async fn phi_decoding_runs_beams_with_foresight_on_hard_problems() {
        tokio::time::timeout(TEST_LIMIT, async {
            let sim = ponder_sim::spawn(SimConfig {
                seed: 5,
                ..Default::default()
            })
            .await
            .expect("sim");
            let backend = sim_backend(&sim, None);
            let mut answered = 0;
            for i in 0..2 {
                let (r, _gold) = solve(
                    backend.clone(),
                    "phi-decoding",
                    serde_json::json!({
                        "step_beam_size": 2,
                        "num_rollout": 2,
                        "num_foresight": 4,
                        "least_foresight_num": 2,
                    }),
                    i,
                )
                .await;
                answered += usize::from(r.outcome.answer.is_some());
                let search = &r.outcome.details["search"];
                let steps = search["phi"]["steps"].as_array().expect("records");
                assert!(!steps.is_empty() && steps.len() <= 4, "{}", steps.len());
                for s in steps {
                    let c = s["candidates"].as_array().expect("candidates");
                    assert!(c.len() <= 4);
                    assert!(c.iter().filter(|c| c["selected"] == true).count() <= 2);
                    // Every kept candidate was valued by foresight from streamed logprobs.
                    assert!(c
                        .iter()
                        .filter(|c| c["kept_in_width"] == true || c["refilled"] == true)
                        .all(|c| c["foresight"].is_f64()));
                }
                let selected = search["selected"].as_u64().expect("selected") as usize;
                assert_eq!(search["nodes"][selected]["decision"], "selected");
                assert!(r.outcome.candidates.len() <= 2);
                assert_eq!(sim.stats().pooling_requests, 0);
            }
            assert!(answered >= 1, "{answered}");
            sim.shutdown().await;
        })
        .await
        .expect("within the limit");
    }
}
