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
    /// MUR critic replies per judged step label: the first ask, then the re-ask (the last
    /// reply repeats); a step not listed is judged `\boxed{yes}`.
    critic: HashMap<&'static str, Vec<&'static str>>,
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
    script_with(tree(), HashMap::new(), logprobs)
}

fn script_with(
    children: HashMap<&'static str, Vec<Child>>,
    critic: HashMap<&'static str, Vec<&'static str>>,
    logprobs: bool,
) -> Arc<Script> {
    Arc::new(Script {
        children,
        critic,
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

    /// The child labelled `label`, wherever it is in the tree.
    fn child(&self, label: &str) -> Option<Child> {
        self.children
            .values()
            .flatten()
            .find(|c| c.0 == label)
            .copied()
    }

    /// A MUR critic's reply when `request` is a critic call: the judged step is the last
    /// numbered step of the prompt.
    fn critic_reply(&self, request: &GenerationRequest) -> Option<String> {
        let Prompt::Chat {
            messages,
            continue_final_message: false,
        } = &request.prompt
        else {
            return None;
        };
        let ask = &messages.first()?.content;
        if !ask.starts_with("You are reviewing") {
            return None;
        }
        let steps = ask.split("Steps so far:\n").nth(1)?.split("\n\n").next()?;
        let last = steps.lines().rev().find(|l| l.starts_with("Step "))?;
        let judged = label(last.split_once(": ")?.1);
        let replies = self.critic.get(judged);
        let attempt = messages.len() / 2;
        Some(
            replies
                .and_then(|r| r.get(attempt).or(r.last()))
                .map_or("Analysis: fine.\nVerdict: \\boxed{yes}", |r| *r)
                .to_string(),
        )
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
        if let Some(reply) = self.critic_reply(&request) {
            self.requests.lock().expect("lock").push(request);
            let events = vec![
                Ok(StreamEvent::Delta {
                    index: 0,
                    text: reply,
                    token_count: 4,
                    tokens: vec![],
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
        // A revision request (MUR critic_revise) gets the step the critique names after
        // "use ", without advancing the draw counters.
        let revision = match &request.prompt {
            Prompt::Chat { messages, .. } => messages
                .iter()
                .find_map(|m| m.content.split("The reviewer's analysis:\n").nth(1))
                .and_then(|a| a.split("use ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|l| self.child(l.trim_end_matches('.'))),
            _ => None,
        };
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
            let pick = match revision {
                Some(r) => Some(r),
                None => kids.get((*first + i as usize) % kids.len().max(1)).copied(),
            };
            let (text, stop, nll) = match pick {
                // A boxed value that does not end the step: it stops at the marker.
                Some((l, nll, _, Some(a))) if a.starts_with("go:") => (
                    format!("{l} so \\boxed{{{}}}.", &a[3..]),
                    Some("\nSo ".to_string()),
                    nll,
                ),
                Some((l, nll, _, Some(a))) => (format!("{l} so \\boxed{{{a}}}."), None, nll),
                Some((l, nll, _, None)) => (l.to_string(), Some("\nSo ".to_string()), nll),
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
        if revision.is_none() {
            *first += n as usize;
        }
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

/// The critic's verdict on the step of `record` (a `scaling.steps` entry).
fn verdict(result: &StrategyResult, step: usize) -> serde_json::Value {
    result.outcome.details["search"]["scaling"]["steps"][step]["critic"]["verdict"].clone()
}

#[tokio::test]
async fn mur_critic_revise_replaces_a_step_the_critic_judges_wrong() {
    let critic = HashMap::from([(
        "c0",
        vec!["Analysis: c0 drops a sign; use c1 instead.\nVerdict: **\\boxed{No}**"],
    )]);
    let b = script_with(tree(), critic, true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[("on_trigger", "critic_revise".into())],
    )
    .await;
    // The momentum rule scales step 3 (c0) as in the best-of-N run. The critic says no: the
    // policy is asked again with the critique and writes c1, which replaces c0; from c1 the
    // probe d0 (0.15, under the level 0.0795 + 0.105) ends with 42.
    assert_eq!(scaled(&r), vec![false, false, true, false]);
    // Probes a0, b0, c0; the critic; the revision; the probe d0. No candidates, no PRM.
    assert_eq!(b.draws(), vec![1, 1, 1, 1, 1, 1]);
    assert!(b.reward_batches().is_empty());
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b0", "c1"]);
    assert_eq!(with_decision(&r, "pruned"), vec!["c0"]);
    assert_eq!(r.outcome.details["revised_steps"], 1);
    assert_eq!(r.outcome.details["critic_unparsed_steps"], 0);
    assert_eq!(verdict(&r, 2), "no");
    let step3 = &r.outcome.details["search"]["scaling"]["steps"][2];
    assert_eq!(step3["critic"]["calls"], 1);
    assert_eq!(step3["critic"]["revised"], step3["chosen"]);
    assert_eq!(step3["critic_unparsed"], false);
    assert_eq!(
        step3["critic"]["analysis"],
        "c0 drops a sign; use c1 instead."
    );
    assert!(close(step3["chosen_signal"].as_f64().expect("signal"), 0.3));
    let requests = b.requests.lock().expect("lock").clone();
    // The critic sees the question and the numbered steps, the probe last.
    match &requests[3].prompt {
        Prompt::Chat { messages, .. } => {
            let ask = &messages[0].content;
            assert!(ask.contains("What is it?"), "{ask}");
            assert!(
                ask.contains("Step 1: a0\nStep 2: So b0\nStep 3: So c0\n"),
                "{ask}"
            );
        }
        other => panic!("expected a chat, got {other:?}"),
    }
    // The revision continues the same prefix, with the critique in the user turn.
    match &requests[4].prompt {
        Prompt::Chat {
            messages,
            continue_final_message: true,
        } => {
            assert_eq!(messages.last().expect("prefill").content, "a0\nSo b0\nSo ");
            let user = &messages[messages.len() - 2].content;
            assert!(user.starts_with("What is it?"), "{user}");
            assert!(user.contains("The rejected step:\nSo c0"), "{user}");
            assert!(user.contains("drops a sign"), "{user}");
        }
        other => panic!("expected a prefill, got {other:?}"),
    }

    // A critic that says yes keeps the probe c0, which leads to 7.
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[("on_trigger", "critic_revise".into())],
    )
    .await;
    assert_eq!(b.draws(), vec![1, 1, 1, 1, 1]);
    assert_eq!(verdict(&r, 2), "yes");
    assert_eq!(r.outcome.details["revised_steps"], 0);
    assert_eq!(r.outcome.answer.as_deref(), Some("7"));
}

#[tokio::test]
async fn mur_critic_unparsable_after_one_reask_keeps_the_step_and_flags_it() {
    let critic = HashMap::from([("c0", vec!["I am not sure.", "Still thinking: boxed{maybe}"])]);
    let b = script_with(tree(), critic, true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[("on_trigger", "critic_revise".into())],
    )
    .await;
    // Probes a0, b0, c0; the critic and one re-ask; the probe d1 after c0.
    assert_eq!(b.draws(), vec![1, 1, 1, 1, 1, 1]);
    let requests = b.requests.lock().expect("lock").clone();
    match &requests[4].prompt {
        Prompt::Chat { messages, .. } => {
            assert_eq!(messages.len(), 3);
            assert_eq!(messages[1].content, "I am not sure.");
        }
        other => panic!("expected a chat, got {other:?}"),
    }
    let step3 = &r.outcome.details["search"]["scaling"]["steps"][2];
    assert_eq!(step3["critic_unparsed"], true);
    assert_eq!(step3["critic"]["verdict"], serde_json::Value::Null);
    assert_eq!(step3["critic"]["calls"], 2);
    assert_eq!(r.outcome.details["critic_unparsed_steps"], 1);
    assert_eq!(r.outcome.details["revised_steps"], 0);
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b0", "c0"]);
    assert_eq!(r.outcome.answer.as_deref(), Some("7"));
}

#[tokio::test]
async fn mur_forced_completion_ends_at_a_boxed_answer_only_when_asked() {
    // a0 writes \boxed{5} and stops at a marker; its child b0 ends with \boxed{7}.
    let boxed_tree = || {
        HashMap::from([
            ("", vec![("a0", 0.5, 0.6, Some("go:5"))]),
            ("a0", vec![("b0", 0.1, 0.5, Some("7"))]),
        ])
    };
    let b = script_with(boxed_tree(), HashMap::new(), true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[("forced_completion", true.into())],
    )
    .await;
    // Forced (online best-of-N): the box ends the trajectory after one step.
    assert_eq!(b.draws(), vec![1]);
    assert_eq!(r.outcome.details["completion_reason"], "boxed_in_think");
    assert_eq!(r.outcome.answer.as_deref(), Some("5"));
    // Parity (default): the search goes on to the end of sequence and the last box.
    let b = script_with(boxed_tree(), HashMap::new(), true);
    let r = run(&AdaptiveScalingFactory, b.clone(), &[]).await;
    assert_eq!(b.draws(), vec![1, 1]);
    assert_eq!(r.outcome.details["completion_reason"], "eos_pattern");
    assert_eq!(
        r.outcome.details["search"]["nodes"][1]["completion_reason"],
        serde_json::Value::Null
    );
    assert_eq!(r.outcome.answer.as_deref(), Some("7"));
    assert_eq!(
        r.outcome.details["search"]["scaling"]["forced_completion"],
        false
    );
}

#[tokio::test]
async fn mur_batch_size_caps_the_candidates_of_one_call() {
    let b = script(true);
    let r = run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("adaptive_scaling_method", "always".into()),
            ("batch_size", 1.into()),
        ],
    )
    .await;
    // Every step: the probe, then its two extra candidates one call at a time (the default
    // draws them in one call of 2; see `the_other_scaling_rules_pick_their_own_steps`).
    assert_eq!(b.draws(), vec![1; 12]);
    let calls: Vec<u64> = r.outcome.details["search"]["scaling"]["steps"]
        .as_array()
        .expect("records")
        .iter()
        .map(|s| s["extra_calls"].as_u64().expect("extra_calls"))
        .collect();
    assert_eq!(calls, vec![2, 2, 2, 2]);
    // The same candidates as one call of 2: the same search.
    assert_eq!(b.reward_batches()[2], vec!["c0", "c1", "c2"]);
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    // batch_size 2 draws both in one call.
    let b = script(true);
    run(
        &AdaptiveScalingFactory,
        b.clone(),
        &[
            ("candidates_per_step", 3.into()),
            ("adaptive_scaling_method", "always".into()),
            ("batch_size", 2.into()),
        ],
    )
    .await;
    assert_eq!(b.draws(), vec![1, 2, 1, 2, 1, 2, 1, 2]);
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
    let err = build(&[("batch_size", 0.into())], true).expect("batch_size ≥ 1");
    assert!(err.contains("batch_size"), "{err}");
    let err = build(&[("on_trigger", "guided_search".into())], true).expect("unknown action");
    assert!(err.contains("on_trigger"), "{err}");
    assert!(
        err.contains("best_of_n") && err.contains("critic_revise"),
        "{err}"
    );
    let err = build(&[("forced_completion", "sometimes".into())], true).expect("a bool");
    assert!(err.contains("forced_completion"), "{err}");
    assert!(build(
        &[
            ("on_trigger", "critic_revise".into()),
            ("forced_completion", true.into()),
            ("batch_size", 4.into()),
        ],
        true
    )
    .is_none());
    let info = AdaptiveScalingFactory.info();
    let default = |name: &str| {
        info.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.default)
    };
    assert_eq!(default("on_trigger"), Some("best_of_n"));
    assert_eq!(default("forced_completion"), Some("false"));
    assert_eq!(default("batch_size"), Some("1000"));
    assert_eq!(default("prm_max_tokens"), Some("4000"));
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

/// Two first steps whose foresight disagrees by measure (mean NLL, reward; `*` ends):
///
/// ```text
/// root ─ p (0.2) ─ p1 (0.3, 0.5) ─ p2* (0.3, 0.1) (1)
///      └ q (0.25) ─ q1* (0.4, 0.9) (2)
/// ```
///
/// p's rollout "p1\np2 …" has mean logprob −0.3 and sum −0.6, its last step reward 0.1;
/// q's rollout "q1 …" has mean and sum −0.4 and reward 0.9.
fn foresight_tree() -> HashMap<&'static str, Vec<Child>> {
    HashMap::from([
        ("", vec![("p", 0.2, 0.5, None), ("q", 0.25, 0.5, None)]),
        ("p", vec![("p1", 0.3, 0.5, None)]),
        ("p1", vec![("p2", 0.3, 0.1, Some("1"))]),
        ("q", vec![("q1", 0.4, 0.9, Some("2"))]),
    ])
}

/// Foresight values of the first φ-decoding step's candidates.
fn first_foresight(result: &StrategyResult) -> Vec<f64> {
    result.outcome.details["search"]["phi"]["steps"][0]["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["foresight"].as_f64().expect("foresight"))
        .collect()
}

#[tokio::test]
async fn phi_foresight_value_changes_which_candidate_wins() {
    // One beam, both candidates kept in width (k = 10: floor −0.475), the advantage decides
    // (τ1 = 1e-4; two rollouts make no three clusters). F_prev = 0, so A = F.
    let run_with = |value: &'static str| async move {
        let b = script_with(foresight_tree(), HashMap::new(), true);
        let p = phi_params(&[
            ("num_rollout", 2.into()),
            ("sigma_rate", 10.0.into()),
            ("foresight_value", value.into()),
        ]);
        let r = run(&PhiDecodingFactory, b.clone(), &p).await;
        (r, b)
    };
    // mean_logprob: p −0.3 beats q −0.4.
    let (r, b) = run_with("mean_logprob").await;
    let f = first_foresight(&r);
    assert!(close(f[0], -0.3) && close(f[1], -0.4), "{f:?}");
    assert_eq!(r.outcome.answer.as_deref(), Some("1"));
    assert!(b.reward_batches().is_empty());
    // sum_logprob: p's longer rollout sums to −0.6; q −0.4 wins.
    let (r, _) = run_with("sum_logprob").await;
    let f = first_foresight(&r);
    assert!(close(f[0], -0.6) && close(f[1], -0.4), "{f:?}");
    assert_eq!(r.outcome.answer.as_deref(), Some("2"));
    // prm: the last step of p's rollout is p2 (0.1), of q's q1 (0.9): q wins.
    let (r, b) = run_with("prm").await;
    let f = first_foresight(&r);
    assert!(close(f[0], 0.1) && close(f[1], 0.9), "{f:?}");
    assert_eq!(r.outcome.answer.as_deref(), Some("2"));
    let rewards = b.rewards.lock().expect("lock").clone();
    // Scored in context and split at the step delimiters: candidate, then the rollout's steps.
    assert_eq!(rewards[0][0].steps, vec!["p", "So p1", "p2 so \\boxed{1}."]);
    assert_eq!(rewards[0][1].steps, vec!["q", "So q1 so \\boxed{2}."]);
    assert_eq!(
        r.outcome.details["search"]["iterations"][0]["scoring"]["reward_calls"],
        1
    );
}

#[tokio::test]
async fn phi_step_stop_sets_the_step_stop_strings() {
    let b = script(true);
    run(&PhiDecodingFactory, b.clone(), &phi_params(&[])).await;
    let requests = b.requests.lock().expect("lock").clone();
    // Default: a newline and the end marker, beside the answer markers.
    let stops = &requests[0].params.stop;
    assert!(stops.contains(&"\n".to_string()), "{stops:?}");
    assert!(
        stops.contains(&"<end of response>".to_string()),
        "{stops:?}"
    );
    assert!(!stops.iter().any(|s| s.starts_with("\nSo")), "{stops:?}");
    let b = script(true);
    run(
        &PhiDecodingFactory,
        b.clone(),
        &phi_params(&[("step_stop", serde_json::json!(["\n\n", "Step"]))]),
    )
    .await;
    let requests = b.requests.lock().expect("lock").clone();
    let stops = &requests[0].params.stop;
    assert!(stops.contains(&"\n\n".to_string()), "{stops:?}");
    // Literal, not expanded into marker forms.
    assert!(stops.contains(&"Step".to_string()), "{stops:?}");
    assert!(!stops.contains(&"\nStep ".to_string()), "{stops:?}");
    assert!(!stops.contains(&"\n".to_string()), "{stops:?}");
    assert!(
        stops.contains(&"<end of response>".to_string()),
        "{stops:?}"
    );
}

#[test]
fn phi_step_stop_and_foresight_value_errors_name_the_parameter() {
    let build = |p: &[(&str, serde_json::Value)], caps: Capabilities| {
        PhiDecodingFactory
            .build(&params(p), "script", &caps)
            .err()
            .map(|e| e.to_string())
    };
    for bad in [
        serde_json::json!([]),
        serde_json::json!([""]),
        serde_json::json!(["\n", ""]),
        serde_json::json!(""),
        serde_json::json!([3]),
        serde_json::json!({"stop": "\n"}),
    ] {
        let err = build(&[("step_stop", bad.clone())], caps(true)).expect("rejected");
        assert!(err.contains("step_stop"), "{bad}: {err}");
    }
    // One string is a list of one (DVTS spells its single delimiter so).
    assert!(build(&[("step_stop", "\n\n".into())], caps(true)).is_none());
    let err = build(
        &[
            ("step_stop", serde_json::json!(["\n"])),
            ("custom_markers", serde_json::json!(["\n\n"])),
        ],
        caps(true),
    )
    .expect("two ways to set steps");
    assert!(
        err.contains("step_stop") && err.contains("custom_markers"),
        "{err}"
    );
    let err =
        build(&[("foresight_value", "max_logprob".into())], caps(true)).expect("unknown value");
    assert!(err.contains("foresight_value"), "{err}");
    for accepted in ["mean_logprob", "sum_logprob", "prm"] {
        assert!(err.contains(accepted), "{err}");
    }
    let no_prm = Capabilities {
        process_rewards: false,
        ..caps(true)
    };
    let err = build(&[("foresight_value", "prm".into())], no_prm.clone()).expect("no PRM");
    assert!(
        err.contains("foresight_value") && err.contains("process_rewards"),
        "{err}"
    );
    assert!(build(&[("foresight_value", "sum_logprob".into())], no_prm).is_none());
    let info = PhiDecodingFactory.info();
    let default = |name: &str| {
        info.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.default)
    };
    assert_eq!(default("foresight_value"), Some("mean_logprob"));
    assert!(default("step_stop").is_some_and(|d| d.contains("\\n")));
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
