//! Step strategies against a scripted backend with known step scores: the exact beams kept,
//! pruned and finished, the trajectory chosen, PRM calls per step, and build-time capability
//! errors.
//!
//! The script is a tree of labelled steps. A step call continuing a prefix whose last step is
//! `p` returns the children of `p` in order; a child that ends the solution writes a boxed
//! answer and stops at the end of sequence, the others stop at the marker `"\nSo "` (reported
//! as the matched stop string, as a client-side stop is). The PRM rewards a step by its label.
//! An answer-phase call after `</think>` (unless scripted otherwise) boxes the label of the
//! last step before it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ponder_core::{
    run_strategy, Backend, BackendError, BoxFuture, Capabilities, CompletionStream, FinishReason,
    GenerationRequest, Message, Params, Prompt, RewardRequest, RewardResponse, StrategyFactory,
    StrategyInput, StrategyResult, StreamEvent, Usage,
};
use ponder_strategies::step::{
    BeamSearchFactory, DvtsFactory, OnlineBestOfNFactory, ParticleFilteringFactory,
};

/// (label, reward, boxed answer when the step ends the solution)
type Child = (&'static str, f64, Option<&'static str>);

struct Script {
    children: HashMap<&'static str, Vec<Child>>,
    /// An answer-phase call continuing exactly this prefix returns this text at EOS.
    answer_after: Option<(&'static str, &'static str)>,
    requests: Mutex<Vec<GenerationRequest>>,
    rewards: Mutex<Vec<Vec<RewardRequest>>>,
    caps: Capabilities,
    /// Prompt tokens reported in the usage of every call (0: no usage sent).
    prompt_tokens: u64,
}

fn caps(prefix: bool, rewards: bool) -> Capabilities {
    Capabilities {
        max_top_logprobs: None,
        multiple_samples: true,
        prefix_continuation: prefix,
        process_rewards: rewards,
        streaming: true,
        max_stop_strings: None,
    }
}

/// The tree of the tests (rewards in brackets; `*` ends with a boxed answer):
///
/// ```text
/// root ─ a0 [0.9] ─ b00 [0.2]
///      │          └ b01 [0.3] ─ c010* [1.0] (10)
///      │                      └ c011* [0.0] (11)
///      └ a1 [0.5] ─ b10 [0.9] ─ c100* [0.1] (100)
///                 │           └ c101* [0.2] (101)
///                 └ b11* [0.8] (11)
/// ```
fn tree() -> HashMap<&'static str, Vec<Child>> {
    HashMap::from([
        ("", vec![("a0", 0.9, None), ("a1", 0.5, None)]),
        ("a0", vec![("b00", 0.2, None), ("b01", 0.3, None)]),
        ("a1", vec![("b10", 0.9, None), ("b11", 0.8, Some("11"))]),
        (
            "b01",
            vec![("c010", 1.0, Some("10")), ("c011", 0.0, Some("11"))],
        ),
        (
            "b10",
            vec![("c100", 0.1, Some("100")), ("c101", 0.2, Some("101"))],
        ),
        ("b00", vec![("d", 0.0, Some("0")), ("d", 0.0, Some("0"))]),
    ])
}

fn script(children: HashMap<&'static str, Vec<Child>>) -> Arc<Script> {
    Arc::new(Script {
        children,
        answer_after: None,
        requests: Mutex::default(),
        rewards: Mutex::default(),
        caps: caps(true, true),
        prompt_tokens: 0,
    })
}

/// The label of a step text (`"So b01"` → `"b01"`).
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
            .map_or(0.5, |c| c.1)
    }
}

impl Script {
    /// A critic's reply when `request` is a critic call: the label of the step's reward
    /// (≥ 0.7 sure, ≥ 0.4 likely, else impossible); a first ask about `a1` gets no label.
    fn critic_reply(&self, request: &GenerationRequest) -> Option<String> {
        let Prompt::Chat {
            messages,
            continue_final_message: false,
        } = &request.prompt
        else {
            return None;
        };
        let ask = &messages.first()?.content;
        if ask.contains("BEST CANDIDATE") {
            // Vote: the listed candidate with the highest reward (the first of equals).
            let list = ask.split("next steps:\n").nth(1)?.split("\n\n").next()?;
            let mut best: Option<(usize, f64)> = None;
            for line in list.lines() {
                let (k, step) = line.split_once(". ")?;
                let r = self.reward(step);
                if best.is_none_or(|(_, b)| r > b) {
                    best = Some((k.parse().ok()?, r));
                }
            }
            return Some(format!("BEST CANDIDATE: {}", best?.0));
        }
        if !ask.contains("JUDGEMENT") {
            return None;
        }
        let step = ask.split("New step:\n").nth(1)?.split("\n\n").next()?;
        if label(step) == "a1" && messages.len() == 1 {
            return Some("I cannot tell.".into());
        }
        let r = self.reward(step);
        let word = if r >= 0.7 {
            "sure"
        } else if r >= 0.4 {
            "likely"
        } else {
            "impossible"
        };
        Some(format!("Checked.\nJUDGEMENT: {word}"))
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
        if let Some(reply) = self.critic_reply(&request) {
            self.requests.lock().expect("lock").push(request);
            let mut events = Vec::new();
            for i in 0..n {
                events.push(Ok(StreamEvent::Delta {
                    index: i,
                    text: reply.clone(),
                    token_count: 3,
                    tokens: vec![],
                }));
                events.push(Ok(StreamEvent::Finished {
                    index: i,
                    reason: FinishReason::Stop,
                    stop: None,
                }));
            }
            return Box::pin(async move {
                Ok(CompletionStream::new(n, futures_util::stream::iter(events)))
            });
        }
        let answer_call = request.params.stop == ["<end of response>".to_string()];
        self.requests.lock().expect("lock").push(request);
        let mut events = Vec::new();
        let replies: Vec<(String, Option<String>)> = match self.answer_after {
            Some((after, answer)) if answer_call && prefix == after => {
                vec![(answer.to_string(), None); n as usize]
            }
            // Any other answer after a thinking block boxes the label of its last step.
            _ if answer_call && prefix.contains("</think>") => {
                let thought = prefix.split("</think>").next().unwrap_or("");
                let last = thought.split("\nSo ").last().map(label).unwrap_or("");
                vec![(format!("The answer is \\boxed{{{last}}}."), None); n as usize]
            }
            _ => {
                let parent = prefix
                    .split("\nSo ")
                    .filter(|s| !s.is_empty())
                    .last()
                    .map(label)
                    .unwrap_or("");
                let kids = self.children.get(parent).cloned().unwrap_or_default();
                (0..n as usize)
                    .map(|i| match kids.get(i % kids.len().max(1)) {
                        Some((l, _, Some(""))) => (l.to_string(), None),
                        Some((l, _, Some("</think>"))) => {
                            (l.to_string(), Some("</think>".to_string()))
                        }
                        Some((l, _, Some("box-go"))) => {
                            (format!("{l} so \\boxed{{3}}."), Some("\nSo ".to_string()))
                        }
                        Some((l, _, Some(a))) => (format!("{l} so \\boxed{{{a}}}."), None),
                        Some((l, _, None)) => (l.to_string(), Some("\nSo ".to_string())),
                        None => ("nothing left".to_string(), None),
                    })
                    .collect()
            }
        };
        for (i, (text, stop)) in replies.into_iter().enumerate() {
            events.push(Ok(StreamEvent::Delta {
                index: i as u32,
                text,
                token_count: 5,
                tokens: vec![],
            }));
            events.push(Ok(StreamEvent::Finished {
                index: i as u32,
                reason: FinishReason::Stop,
                stop,
            }));
        }
        if self.prompt_tokens > 0 {
            events.push(Ok(StreamEvent::Usage(Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: 5 * u64::from(n),
                cached_tokens: None,
            })));
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

#[tokio::test]
async fn beam_search_keeps_the_best_beams_and_picks_the_best_finished() {
    let b = script(tree());
    let r = run(
        &BeamSearchFactory,
        b.clone(),
        &[("beam_size", 2.into()), ("candidates_per_beam", 2.into())],
    )
    .await;
    // Step 2 means: a0b00 0.55, a0b01 0.6, a1b10 0.7, a1b11 0.65 (finished).
    // Kept: a1b10, a0b01; pruned a0b00. Step 3 finishes everything:
    // a1b10c100 (0.5+0.9+0.1)/3 = 0.5, c101 0.533, a0b01c010 (0.9+0.3+1.0)/3 = 0.733,
    // c011 0.4. The pool's best is a0 → b01 → c010, answer 10.
    assert_eq!(r.outcome.answer.as_deref(), Some("10"));
    assert_eq!(with_decision(&r, "pruned"), vec!["b00"]);
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "a1", "b01", "b10"]);
    assert_eq!(
        with_decision(&r, "finished"),
        vec!["b11", "c100", "c101", "c011"]
    );
    assert_eq!(with_decision(&r, "selected"), vec!["c010"]);
    // Candidates: the pool, best first.
    let scores: Vec<f64> = r
        .outcome
        .candidates
        .iter()
        .filter_map(|c| c.score)
        .collect();
    assert_eq!(scores.len(), 5);
    assert!((scores[0] - 2.2 / 3.0).abs() < 1e-12);
    assert!((scores[1] - 0.65).abs() < 1e-12);
    // One PRM call per step, for every child of the step, each scored in context.
    let calls = b.rewards.lock().expect("lock").clone();
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 4, 4]
    );
    assert_eq!(
        calls[2][0].steps,
        vec!["a1", "So b10", "So c100 so \\boxed{100}."]
    );
    assert_eq!(r.outcome.details["search"]["reward_calls"], 3);
    // The marker that ended a step starts the next prefix; no call re-samples it.
    let requests = b.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1 + 2 + 2);
    match &requests[1].prompt {
        Prompt::Chat { messages, .. } => {
            assert!(messages.last().expect("prefill").content.ends_with("\nSo "))
        }
        other => panic!("expected a prefill, got {other:?}"),
    }
    assert_eq!(requests[0].params.min_tokens, Some(50));
    assert_eq!(requests[0].params.stop.len(), 428);
}

#[tokio::test]
async fn beam_search_aggregation_and_finish_order_change_the_winner() {
    // min: a1b11 min(0.5, 0.8) = 0.5 beats a0b01c010 min(0.9, 0.3, 1.0) = 0.3.
    let r = run(
        &BeamSearchFactory,
        script(tree()),
        &[
            ("beam_width", 2.into()),
            ("candidates_per_beam", 2.into()),
            ("aggregation", "min".into()),
        ],
    )
    .await;
    assert_eq!(r.outcome.answer.as_deref(), Some("11"));
    assert_eq!(with_decision(&r, "selected"), vec!["b11"]);
    // Without sorting, the first finished beam (b11, at step 2) is the answer.
    let r = run(
        &BeamSearchFactory,
        script(tree()),
        &[
            ("beam_size", 2.into()),
            ("candidates_per_beam", 2.into()),
            ("sort_completed", false.into()),
        ],
    )
    .await;
    assert_eq!(r.outcome.answer.as_deref(), Some("11"));
    // With one beam the search is greedy: a0 (0.9) → b01 (mean 0.6) → c010.
    let r = run(
        &BeamSearchFactory,
        script(tree()),
        &[("beam_size", 1.into()), ("candidates_per_beam", 2.into())],
    )
    .await;
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b01"]);
    assert_eq!(r.outcome.answer.as_deref(), Some("10"));
}

#[tokio::test]
async fn online_best_of_n_follows_the_best_candidate_per_step() {
    let b = script(tree());
    let r = run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[("candidates_per_step", 2.into())],
    )
    .await;
    // a0 (0.9) over a1 (0.5); b01 (0.3) over b00 (0.2); c010 (1.0) over c011 (0.0).
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b01"]);
    assert_eq!(with_decision(&r, "pruned"), vec!["a1", "b00", "c011"]);
    assert_eq!(with_decision(&r, "selected"), vec!["c010"]);
    assert_eq!(r.outcome.answer.as_deref(), Some("10"));
    assert_eq!(
        r.outcome.details["step_scores"],
        serde_json::json!([0.9, 0.3, 1.0])
    );
    assert_eq!(r.outcome.details["completion_reason"], "eos_pattern");
    assert_eq!(
        b.rewards
            .lock()
            .expect("lock")
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    assert_eq!(
        r.outcome.candidates[0].text,
        "a0\nSo b01\nSo c010 so \\boxed{10}."
    );
}

#[tokio::test]
async fn a_step_stopping_at_an_answer_marker_gets_its_answer_generated() {
    let b = Arc::new(Script {
        children: HashMap::from([("", vec![("x0", 0.7, None)])]),
        answer_after: Some(("x0\nSo ", "the result is 42")),
        requests: Mutex::default(),
        rewards: Mutex::default(),
        caps: caps(true, true),
        prompt_tokens: 0,
    });
    // The scripted child stops at "\nSo ", made an answer pattern here.
    let r = run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[
            ("candidates_per_step", 1.into()),
            ("answer_patterns", serde_json::json!(["\nSo "])),
            ("max_steps", 3.into()),
        ],
    )
    .await;
    // x0 stopped at an answer pattern with nothing after it: the answer phase continued the
    // prefix "x0\nSo " (no answer there), so it was generated and appended.
    let x0 = &r.outcome.details["search"]["nodes"][1];
    assert_eq!(x0["completion_reason"], "answer_pattern");
    assert_eq!(r.outcome.details["completion_reason"], "eos_pattern");
    let requests = b.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].params.min_tokens, None);
    assert_eq!(
        requests[1].params.stop,
        vec!["<end of response>".to_string()]
    );
    match &requests[1].prompt {
        Prompt::Chat { messages, .. } => {
            assert_eq!(messages.last().expect("prefill").content, "x0\nSo ")
        }
        other => panic!("expected a prefill, got {other:?}"),
    }
    assert_eq!(with_decision(&r, "finished"), vec!["x0"]);
    assert_eq!(with_decision(&r, "selected"), vec!["the"]);
    assert_eq!(r.outcome.answer.as_deref(), Some("42"));
    assert_eq!(r.outcome.candidates[0].text, "x0\nSo the result is 42");
}

#[tokio::test]
async fn dvts_grows_independent_subtrees_and_returns_their_last_variants() {
    let b = script(tree());
    let r = run(
        &DvtsFactory,
        b.clone(),
        &[("n", 4.into()), ("beam_width", 2.into())],
    )
    .await;
    // Each subtree: a0 (last 0.9) → b01 (0.3 beats 0.2) → c010 ends it (boxed).
    // Its two last variants are c010 (last 1.0) and c011 (0.0); argmax: the first c010.
    assert_eq!(r.outcome.candidates.len(), 4);
    let answers: Vec<Option<&str>> = r
        .outcome
        .candidates
        .iter()
        .map(|c| c.answer.as_deref())
        .collect();
    assert_eq!(
        answers,
        vec![Some("10"), Some("11"), Some("10"), Some("11")]
    );
    assert_eq!(r.outcome.selected, Some(0));
    assert_eq!(r.outcome.answer.as_deref(), Some("10"));
    // 2 subtrees × 3 iterations, one scoring call each, of 2 candidates.
    let calls = b.rewards.lock().expect("lock").clone();
    assert_eq!(calls.len(), 6);
    assert!(calls.iter().all(|c| c.len() == 2));
    let nodes = r.outcome.details["search"]["nodes"]
        .as_array()
        .expect("nodes")
        .clone();
    assert_eq!(nodes.len(), 1 + 2 * 6);
    let groups: Vec<u64> = nodes
        .iter()
        .skip(1)
        .map(|n| n["group"].as_u64().unwrap_or(9))
        .collect();
    assert_eq!(groups, [vec![0; 6], vec![1; 6]].concat());
    // DVTS stops at blank lines by default, with the hotter sampling of search-and-learn.
    let requests = b.requests.lock().expect("lock").clone();
    assert!(requests[0].params.stop.contains(&"\n\n".to_string()));
    assert_eq!(requests[0].params.temperature, Some(0.8));
    // A majority vote over 10, 11, 10, 11 is a tie; the score total of 10 (2.0) wins.
    let r = run(
        &DvtsFactory,
        script(tree()),
        &[
            ("n", 4.into()),
            ("beam_width", 2.into()),
            ("selection", "majority_vote".into()),
        ],
    )
    .await;
    assert_eq!(r.outcome.answer.as_deref(), Some("10"));
    assert_eq!(r.outcome.details["distribution"][0]["votes"], 2);
}

#[test]
fn missing_capabilities_and_bad_params_fail_at_build_time() {
    let factories: [&dyn StrategyFactory; 3] =
        [&BeamSearchFactory, &OnlineBestOfNFactory, &DvtsFactory];
    for f in factories {
        let err = f
            .build(&params(&[]), "plain", &caps(false, true))
            .err()
            .expect("no prefix continuation");
        assert!(err.to_string().contains("prefix_continuation"), "{err}");
        let err = f
            .build(&params(&[]), "plain", &caps(true, false))
            .err()
            .expect("no PRM");
        assert!(err.to_string().contains("process_rewards"), "{err}");
        let err = f
            .build(
                &params(&[("scorer", "entropy".into())]),
                "plain",
                &caps(true, false),
            )
            .err()
            .expect("no logprobs");
        assert!(err.to_string().contains("logprobs"), "{err}");
        let err = f
            .build(&params(&[("bogus", 1.into())]), "plain", &caps(true, true))
            .err()
            .expect("unknown");
        assert!(err.to_string().contains("`bogus`"), "{err}");
    }
    let err = DvtsFactory
        .build(&params(&[("n", 6.into())]), "plain", &caps(true, true))
        .err()
        .expect("n not a multiple of M");
    assert!(err.to_string().contains("parameter `n`"), "{err}");
    let err = BeamSearchFactory
        .build(
            &params(&[("aggregation", "median".into())]),
            "plain",
            &caps(true, true),
        )
        .err()
        .expect("unknown aggregation");
    assert!(err.to_string().contains("aggregation"), "{err}");
}

#[tokio::test]
async fn a_step_ending_without_an_answer_is_replaced_by_the_answer_phase() {
    let b = Arc::new(Script {
        // y0 ends the sequence with no answer in it.
        children: HashMap::from([("", vec![("y0", 0.6, Some(""))])]),
        answer_after: Some(("", "the answer is \\boxed{9}.")),
        requests: Mutex::default(),
        rewards: Mutex::default(),
        caps: caps(true, true),
        prompt_tokens: 0,
    });
    let r = run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[("candidates_per_step", 2.into())],
    )
    .await;
    assert_eq!(with_decision(&r, "replaced"), vec!["y0"]);
    assert_eq!(r.outcome.answer.as_deref(), Some("9"));
    assert_eq!(r.outcome.candidates[0].text, "the answer is \\boxed{9}.");
    // Two answer candidates (final_answer_candidates = C), scored in one PRM call.
    let requests = b.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].params.n, 2);
    assert_eq!(b.rewards.lock().expect("lock").len(), 2);
}

/// p [0.75] ─ r* [0.75] (10), s* [0.0] (11); q [0.0] ─ t* [1.0] (12).
fn particle_tree() -> HashMap<&'static str, Vec<Child>> {
    HashMap::from([
        ("", vec![("p", 0.75, None), ("q", 0.0, None)]),
        ("p", vec![("r", 0.75, Some("10")), ("s", 0.0, Some("11"))]),
        ("q", vec![("t", 1.0, Some("12"))]),
    ])
}

#[tokio::test]
async fn particle_filtering_resamples_by_prm_weight() {
    let b = script(particle_tree());
    let r = run(
        &ParticleFilteringFactory,
        b.clone(),
        &[("budget", 4.into()), ("resampling", "systematic".into())],
    )
    .await;
    // Step 1: one call (4 copies of the empty prefix) gives p, q, p, q with log-weights
    // ln 3, ln(1e-7), ln 3, ln(1e-7): systematic resampling draws each p twice.
    let search = &r.outcome.details["search"];
    assert_eq!(
        search["iterations"][0]["resampled"],
        serde_json::json!([1, 1, 3, 3])
    );
    assert_eq!(with_decision(&r, "pruned"), vec!["q", "q", "s", "s"]);
    // Step 2: one call per distinct prefix (n = 2 copies each): r and s under both p nodes;
    // every particle ends; the r copies win the resampling and the argmax.
    let requests = b.requests.lock().expect("lock").clone();
    assert_eq!(
        requests.iter().map(|q| q.params.n).collect::<Vec<_>>(),
        vec![4, 2, 2]
    );
    assert_eq!(requests[0].params.temperature, Some(0.8));
    assert!(requests[0].params.stop.contains(&"\n\n".to_string()));
    let calls = b.rewards.lock().expect("lock").clone();
    assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4]);
    assert_eq!(r.outcome.answer.as_deref(), Some("10"));
    let weights = r.outcome.details["final_log_weights"]
        .as_array()
        .expect("weights")
        .clone();
    assert_eq!(weights.len(), 4);
    for w in weights {
        assert!((w.as_f64().unwrap_or(0.0) - 3f64.ln()).abs() < 1e-12);
    }
}

#[tokio::test]
async fn particle_gibbs_carries_a_reference_particle() {
    let b = script(particle_tree());
    let r = run(
        &ParticleFilteringFactory,
        b.clone(),
        &[("budget", 4.into()), ("num_iterations", 2.into())],
    )
    .await;
    // 2 particles per iteration; the second runs 1 free particle beside 1 reference.
    assert_eq!(r.outcome.details["particles"], 2);
    assert_eq!(r.outcome.details["num_ref_particles"], 1);
    assert_eq!(r.outcome.candidates.len(), 2);
    let groups: std::collections::BTreeSet<u64> = r.outcome.details["search"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .skip(1)
        .filter_map(|n| n["group"].as_u64())
        .collect();
    assert_eq!(groups.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    assert!(r.outcome.answer.is_some());
    let err = ParticleFilteringFactory
        .build(
            &params(&[("budget", 5.into()), ("num_iterations", 2.into())]),
            "script",
            &caps(true, true),
        )
        .err()
        .expect("indivisible budget");
    assert!(err.to_string().contains("budget"), "{err}");
    let err = ParticleFilteringFactory
        .build(
            &params(&[("ancestor_sampling", true.into())]),
            "script",
            &caps(true, true),
        )
        .err()
        .expect("not implemented");
    assert!(err.to_string().contains("ancestor_sampling"), "{err}");
}

#[tokio::test]
async fn a_step_without_room_for_another_ends_at_the_context_limit() {
    let b = Arc::new(Script {
        children: tree(),
        answer_after: Some(("a0\nSo ", "so it is \\boxed{5}.")),
        requests: Mutex::default(),
        rewards: Mutex::default(),
        caps: caps(true, true),
        // 1000 − (800 + 5) = 195 tokens left, under max_step_tokens = 300.
        prompt_tokens: 800,
    });
    let r = run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[
            ("candidates_per_step", 2.into()),
            ("context_budget", 1000.into()),
            ("max_step_tokens", 300.into()),
        ],
    )
    .await;
    let a0 = &r.outcome.details["search"]["nodes"][1];
    assert_eq!(a0["completion_reason"], "context_limit");
    assert_eq!(a0["decision"], "finished");
    // The step is kept and the answer generated after it.
    assert_eq!(r.outcome.candidates[0].text, "a0\nSo so it is \\boxed{5}.");
    assert_eq!(r.outcome.answer.as_deref(), Some("5"));
}

#[tokio::test]
async fn without_keep_marker_the_next_step_samples_its_marker_again() {
    let b = script(tree());
    let r = run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[
            ("candidates_per_step", 2.into()),
            ("keep_marker", false.into()),
        ],
    )
    .await;
    // The marker "\nSo " that ended a0 is not carried: the second call continues "a0" alone.
    assert_eq!(with_decision(&r, "kept")[0], "a0");
    let requests = b.requests.lock().expect("lock").clone();
    assert!(requests[0]
        .extra
        .get("include_stop_str_in_output")
        .is_none());
    match &requests[1].prompt {
        Prompt::Chat { messages, .. } => {
            assert_eq!(messages.last().expect("prefill").content, "a0")
        }
        other => panic!("expected a prefill, got {other:?}"),
    }
    // (The script splits steps at that marker, so it sees "a0b01" as one step and ends.)
    assert!(r.outcome.candidates[0].text.starts_with("a0b01"));
}

#[tokio::test]
async fn lookahead_scores_a_candidate_by_its_greedy_continuation() {
    let b = script(tree());
    let r = run(
        &BeamSearchFactory,
        b.clone(),
        &[
            ("beam_size", 1.into()),
            ("candidates_per_beam", 2.into()),
            ("lookahead", 1.into()),
        ],
    )
    .await;
    // Step 1: a0 is scored by its greedy next step b00 (0.2), a1 by b10 (0.9): a1 wins, the
    // opposite of the search without lookahead. Step 2: b10 looks ahead to c100 (0.1), b11
    // ends (0.8): means 0.5 and 0.85; b11 is finished, b10 goes on and ends at step 3 with
    // c101 (0.9 + 0.1 + 0.2) / 3 = 0.4 at best. The answer is b11's.
    assert_eq!(with_decision(&r, "kept"), vec!["a1", "b10"]);
    assert_eq!(r.outcome.answer.as_deref(), Some("11"));
    let calls = b.rewards.lock().expect("lock").clone();
    assert_eq!(calls[0][0].steps, vec!["a0", "So b00"]);
    assert_eq!(calls[0][1].steps, vec!["a1", "So b10"]);
    let requests = b.requests.lock().expect("lock").clone();
    let greedy = requests
        .iter()
        .filter(|q| q.params.temperature == Some(0.0))
        .count();
    // Two lookaheads at step 1, one at step 2 (b11 ended), none at step 3 (both ended).
    assert_eq!(greedy, 3);
}

#[tokio::test]
async fn an_llm_critic_labels_each_step_and_is_asked_again_without_a_label() {
    let b = script(tree());
    let r = run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[
            ("candidates_per_step", 2.into()),
            ("scorer", "llm_critic".into()),
            ("critic_samples", 2.into()),
        ],
    )
    .await;
    // Step 1: a0 sure (3.0); a1's two samples have no label, each re-asked once: likely (1.0).
    // Step 2: b00 and b01 are both impossible (0.1): the tie goes to b00. Step 3: b00's two
    // children are the same step, judged once.
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "b00"]);
    assert_eq!(
        r.outcome.details["step_scores"],
        serde_json::json!([3.0, 0.1, 0.1])
    );
    assert_eq!(r.outcome.answer.as_deref(), Some("0"));
    let critic_calls: Vec<u64> = r.outcome.details["search"]["iterations"]
        .as_array()
        .expect("iterations")
        .iter()
        .map(|i| i["scoring"]["critic_calls"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(critic_calls, vec![4, 2, 1]);
    assert!(b.rewards.lock().expect("lock").is_empty());
    // The critic needs no capability beyond text generation.
    assert!(OnlineBestOfNFactory
        .build(
            &params(&[("scorer", "llm_critic".into())]),
            "plain",
            &caps(true, false)
        )
        .is_ok());
}

#[tokio::test]
async fn thinking_steps_run_to_think_end_then_the_answer_follows() {
    let b = Arc::new(Script {
        // t0 writes a boxed value inside the thinking block and goes on; v0 closes the block.
        children: HashMap::from([
            ("", vec![("t0", 0.9, Some("box-go")), ("t1", 0.2, None)]),
            ("t0", vec![("v0", 0.7, Some("</think>"))]),
        ]),
        answer_after: Some((
            "t0 so \\boxed{3}.\nSo v0</think>",
            "The answer is \\boxed{4}.",
        )),
        requests: Mutex::default(),
        rewards: Mutex::default(),
        caps: caps(true, true),
        prompt_tokens: 0,
    });
    let r = run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[("candidates_per_step", 2.into()), ("thinking", "on".into())],
    )
    .await;
    // The box inside the thinking block does not end the search; the answer after it counts.
    assert_eq!(r.outcome.answer.as_deref(), Some("4"));
    assert_eq!(
        r.outcome.candidates[0].text,
        "t0 so \\boxed{3}.\nSo v0</think>The answer is \\boxed{4}."
    );
    let v0 = &r.outcome.details["search"]["nodes"][3];
    assert_eq!(v0["completion_reason"], "thinking_complete");
    let requests = b.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].params.temperature, Some(0.6));
    assert_eq!(requests[0].params.top_p, Some(0.95));
    assert!(requests[0].params.stop.contains(&"</think>".to_string()));
    assert_eq!(requests[2].params.min_tokens, None);
    // Switched off: the chat template is told so.
    let b = script(tree());
    run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[
            ("candidates_per_step", 2.into()),
            ("thinking", "off".into()),
        ],
    )
    .await;
    let requests = b.requests.lock().expect("lock").clone();
    assert_eq!(
        requests[0].extra["chat_template_kwargs"],
        serde_json::json!({"enable_thinking": false})
    );
}

#[tokio::test]
async fn a_voting_critic_scores_siblings_by_their_votes() {
    let b = script(tree());
    let r = run(
        &BeamSearchFactory,
        b.clone(),
        &[
            ("beam_size", 2.into()),
            ("candidates_per_beam", 2.into()),
            ("scorer", "llm_critic".into()),
            ("critic_method", "vote".into()),
        ],
    )
    .await;
    // Votes (3 samples) go to the best-rewarded sibling: a0 3 | a1 0; b00 0 | b01 3;
    // b10 3 | b11 0. Means: a0b01 3, a0b00 1.5, a1b10 1.5 (pruned: later in generation
    // order), a1b11 0 (finished). Step 3: c010 3 | c011 0 and d 3 | d 0. The pool's best is
    // a0 → b01 → c010 (mean 3).
    assert_eq!(with_decision(&r, "kept"), vec!["a0", "a1", "b00", "b01"]);
    assert_eq!(with_decision(&r, "pruned"), vec!["b10"]);
    assert_eq!(r.outcome.answer.as_deref(), Some("10"));
    let critic_calls: Vec<u64> = r.outcome.details["search"]["iterations"]
        .as_array()
        .expect("iterations")
        .iter()
        .map(|i| i["scoring"]["critic_calls"].as_u64().unwrap_or(0))
        .collect();
    // One call per sibling group per step.
    assert_eq!(critic_calls, vec![1, 2, 2]);
    let scores: Vec<f64> = r.outcome.details["search"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .skip(1)
        .take(2)
        .filter_map(|n| n["score"].as_f64())
        .collect();
    assert_eq!(scores, vec![3.0, 0.0]);
}

/// Answer-phase calls among `requests` (they stop only at the end marker).
fn answer_calls(requests: &[GenerationRequest]) -> Vec<&GenerationRequest> {
    requests
        .iter()
        .filter(|r| r.params.stop == ["<end of response>".to_string()])
        .collect()
}

#[tokio::test]
async fn beam_search_answer_all_beams_answers_every_finished_beam() {
    // Both first steps close the thinking block: the pool is alpha (0.9), then beta (0.5).
    let thinking_tree = || {
        HashMap::from([(
            "",
            vec![
                ("alpha", 0.9, Some("</think>")),
                ("beta", 0.5, Some("</think>")),
            ],
        )])
    };
    let p = |all: bool| {
        vec![
            ("beam_size", 2.into()),
            ("candidates_per_beam", 2.into()),
            ("thinking", "on".into()),
            ("answer_all_beams", all.into()),
        ]
    };
    // Default: only the chosen beam gets an answer phase.
    let b = script(thinking_tree());
    let r = run(&BeamSearchFactory, b.clone(), &p(false)).await;
    let requests = b.requests.lock().expect("lock").clone();
    let answers = answer_calls(&requests);
    assert_eq!(answers.len(), 1);
    match &answers[0].prompt {
        Prompt::Chat { messages, .. } => {
            assert_eq!(messages.last().expect("prefill").content, "alpha</think>")
        }
        other => panic!("expected a prefill, got {other:?}"),
    }
    assert_eq!(r.outcome.answer.as_deref(), Some("alpha"));
    assert_eq!(
        r.outcome.details["beam_answers"],
        serde_json::json!(["alpha", null])
    );
    assert_eq!(r.outcome.details["answered_beams"], 1);
    assert_eq!(r.outcome.candidates[1].text, "beta</think>");

    // answer_all_beams: one answer call per finished beam (n = 1 each), unscored.
    let b = script(thinking_tree());
    let r = run(&BeamSearchFactory, b.clone(), &p(true)).await;
    let requests = b.requests.lock().expect("lock").clone();
    let answers = answer_calls(&requests);
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a.params.n == 1));
    let prefixes: Vec<String> = answers
        .iter()
        .map(|a| match &a.prompt {
            Prompt::Chat { messages, .. } => messages.last().map(|m| m.content.clone()),
            _ => None,
        })
        .map(Option::unwrap_or_default)
        .collect();
    assert_eq!(prefixes, vec!["alpha</think>", "beta</think>"]);
    // One PRM call, for the step; the answers are not scored.
    assert_eq!(b.rewards.lock().expect("lock").len(), 1);
    assert_eq!(r.outcome.answer.as_deref(), Some("alpha"));
    assert_eq!(
        r.outcome.details["beam_answers"],
        serde_json::json!(["alpha", "beta"])
    );
    assert_eq!(r.outcome.details["answered_beams"], 2);
    assert_eq!(
        r.outcome.candidates[1].text,
        "beta</think>The answer is \\boxed{beta}."
    );
    assert_eq!(r.outcome.candidates[1].answer.as_deref(), Some("beta"));
    // Both answers are in the trace: the chosen one selected, the other finished.
    let nodes = r.outcome.details["search"]["nodes"]
        .as_array()
        .expect("nodes")
        .clone();
    let answer_nodes: Vec<(&str, &str)> = nodes
        .iter()
        .filter(|n| n["answer_step"] == true)
        .map(|n| {
            (
                n["text"].as_str().unwrap_or(""),
                n["decision"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        answer_nodes,
        vec![
            ("The answer is \\boxed{alpha}.", "selected"),
            ("The answer is \\boxed{beta}.", "finished")
        ]
    );
    let selected = r.outcome.details["search"]["selected"]
        .as_u64()
        .expect("selected") as usize;
    assert_eq!(nodes[selected]["text"], "The answer is \\boxed{alpha}.");

    // Without a thinking block the option has nothing to do: it is refused.
    let err = BeamSearchFactory
        .build(
            &params(&[("answer_all_beams", true.into())]),
            "script",
            &caps(true, true),
        )
        .err()
        .expect("thinking only");
    assert!(err.to_string().contains("answer_all_beams"), "{err}");
    let default = BeamSearchFactory
        .info()
        .params
        .iter()
        .find(|p| p.name == "answer_all_beams")
        .map(|p| p.default);
    assert_eq!(default, Some("false"));
}

#[tokio::test]
async fn prm_max_tokens_truncates_the_steps_a_search_sends() {
    // Question "What is it?" (11 bytes: 4 tokens) + 64 of template = frame 68. With
    // prm_max_tokens 85 the budget is 85 − 68 − 10 = 7 tokens: at step 3 the candidate
    // "So c010 so \boxed{10}." (22 bytes: 8 + 1) alone exceeds it and is sent alone;
    // at step 2 "So b01" (6 bytes: 2 + 1) fits with "a0" (1 + 1) = 5.
    let b = script(tree());
    let r = run(
        &OnlineBestOfNFactory,
        b.clone(),
        &[
            ("candidates_per_step", 2.into()),
            ("prm_max_tokens", 85.into()),
        ],
    )
    .await;
    let calls = b.rewards.lock().expect("lock").clone();
    assert_eq!(calls[1][1].steps, vec!["a0", "So b01"]);
    assert_eq!(calls[2][0].steps, vec!["So c010 so \\boxed{10}."]);
    // The same search as untruncated (the script's PRM reads each step alone).
    assert_eq!(r.outcome.answer.as_deref(), Some("10"));
    let scoring = &r.outcome.details["search"]["iterations"][2]["scoring"];
    assert_eq!(scoring["prm_truncated"], 2);
    assert_eq!(scoring["prm_dropped_steps"], serde_json::json!([2, 2]));
    assert!(r.outcome.details["search"]["iterations"][1]["scoring"]
        .get("prm_dropped_steps")
        .is_none());
    let err = OnlineBestOfNFactory
        .build(
            &params(&[("prm_max_tokens", 0.into())]),
            "script",
            &caps(true, true),
        )
        .err()
        .expect("at least 1");
    assert!(err.to_string().contains("prm_max_tokens"), "{err}");
}
