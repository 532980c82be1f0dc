//! Step search against a real `ponder-sim` with its PRM endpoint: hard synthetic problems,
//! answers extracted, one PRM call per scored step, and the search tree in the details.

use std::time::Duration;

mod common;

use common::{sim_backend, solve};
use ponder_core::StrategyResult;
use ponder_sim::SimConfig;

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Scoring calls the trace records.
fn recorded_reward_calls(r: &StrategyResult) -> u64 {
    r.outcome.details["search"]["iterations"]
        .as_array()
        .expect("iterations")
        .iter()
        .map(|i| i["scoring"]["reward_calls"].as_u64().unwrap_or(0))
        .sum()
}

fn max_depth(r: &StrategyResult) -> u64 {
    r.outcome.details["search"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["depth"].as_u64())
        .max()
        .unwrap_or(0)
}

/// One step per `Step k:` line of the task's format.
fn line_steps() -> serde_json::Value {
    serde_json::json!({"detector": "structured", "min_step_tokens": 1})
}

fn merge(a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    let mut a = a;
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

#[tokio::test]
async fn beam_search_finds_the_right_chain_with_one_prm_call_per_step() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = ponder_sim::spawn(SimConfig {
            seed: 3,
            ..Default::default()
        })
        .await
        .expect("sim");
        let backend = sim_backend(&sim, None);
        let mut right = 0;
        for i in 0..5 {
            let before = sim.stats().pooling_requests;
            let (r, gold) = solve(backend.clone(), "beam-search", line_steps(), i).await;
            let answer = r.outcome.answer.clone().expect("an answer");
            right += usize::from(answer == gold);
            // One PRM call per step, for the children of all beams together.
            let calls = sim.stats().pooling_requests - before;
            assert_eq!(calls, recorded_reward_calls(&r));
            let steps = r.outcome.details["search"]["iterations"]
                .as_array()
                .expect("iterations")
                .len() as u64;
            assert_eq!(calls, steps);
            // Hard problems have 5–8 steps: the tree is as deep.
            assert!(max_depth(&r) >= 5, "{}", max_depth(&r));
            let search = &r.outcome.details["search"];
            let selected = search["selected"].as_u64().expect("selected") as usize;
            assert_eq!(search["nodes"][selected]["decision"], "selected");
            // Step 1 expands the root into 4 children; later steps 4 beams × 4.
            assert_eq!(
                search["iterations"][0]["children"].as_array().map(Vec::len),
                Some(4)
            );
            assert!(
                search["iterations"][1]["children"]
                    .as_array()
                    .map_or(0, Vec::len)
                    > 4
            );
        }
        // Each step is right with p = 0.8 and the PRM sees wrong steps: the search recovers.
        assert!(right >= 4, "{right}/5 right");
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn default_markers_and_client_side_stops_split_the_same_way() {
    tokio::time::timeout(TEST_LIMIT, async {
        // The server takes 4 stop strings; the other 424 are matched client-side.
        let limited = ponder_sim::spawn(SimConfig {
            seed: 3,
            max_stop: Some(4),
            ..Default::default()
        })
        .await
        .expect("sim");
        let open = ponder_sim::spawn(SimConfig {
            seed: 3,
            ..Default::default()
        })
        .await
        .expect("sim");
        // min_step_tokens 0: the backend's client-side matcher does not know `min_tokens`
        // (it would cut the prose a server pads a short step with, which the server itself
        // does not check before `min_tokens`).
        let params =
            serde_json::json!({"beam_width": 2, "candidates_per_beam": 2, "min_step_tokens": 0});
        let (a, _) = solve(
            sim_backend(&limited, Some(4)),
            "beam-search",
            params.clone(),
            1,
        )
        .await;
        let (b, _) = solve(sim_backend(&open, None), "beam-search", params, 1).await;
        assert!(a.outcome.answer.is_some());
        assert_eq!(limited.stats().invalid_requests, 0);
        let texts = |r: &StrategyResult| -> Vec<String> {
            r.outcome.details["search"]["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .map(|n| n["text"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(texts(&a), texts(&b));
        assert_eq!(a.outcome.answer, b.outcome.answer);
        limited.shutdown().await;
        open.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn online_best_of_n_dvts_and_particle_filtering_against_the_simulator() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = ponder_sim::spawn(SimConfig {
            seed: 4,
            ..Default::default()
        })
        .await
        .expect("sim");
        let backend = sim_backend(&sim, None);
        let before = sim.stats().pooling_requests;
        let (r, _) = solve(
            backend.clone(),
            "online-best-of-n",
            merge(line_steps(), serde_json::json!({"candidates_per_step": 4})),
            2,
        )
        .await;
        assert!(r.outcome.answer.is_some());
        assert_eq!(
            sim.stats().pooling_requests - before,
            recorded_reward_calls(&r)
        );
        assert!(max_depth(&r) >= 5);

        let before = sim.stats().pooling_requests;
        let (r, _) = solve(
            backend.clone(),
            "dvts",
            merge(
                line_steps(),
                serde_json::json!({"n": 8, "beam_width": 4, "step_stop": "\nStep"}),
            ),
            2,
        )
        .await;
        assert_eq!(r.outcome.candidates.len(), 8);
        assert!(r.outcome.answer.is_some());
        let calls = sim.stats().pooling_requests - before;
        assert_eq!(calls, recorded_reward_calls(&r));
        // Two subtrees, each one PRM call per iteration.
        let groups: std::collections::BTreeSet<u64> = r.outcome.details["search"]["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .skip(1)
            .filter_map(|n| n["group"].as_u64())
            .collect();
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), vec![0, 1]);

        // Particle filtering: one PRM call per step for all live particles.
        let before = sim.stats().pooling_requests;
        let (r, _) = solve(
            backend.clone(),
            "particle-filtering",
            serde_json::json!({"budget": 8, "step_token": "\nStep", "min_step_tokens": 1}),
            2,
        )
        .await;
        assert!(r.outcome.answer.is_some());
        assert_eq!(r.outcome.candidates.len(), 8);
        let calls = sim.stats().pooling_requests - before;
        assert_eq!(calls, recorded_reward_calls(&r));
        let steps = r.outcome.details["search"]["iterations"]
            .as_array()
            .expect("iterations")
            .iter()
            .filter(|i| i["ess"].is_number())
            .count() as u64;
        assert_eq!(calls, steps);
        assert!(max_depth(&r) >= 5);
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn raw_text_continuation_uses_the_completions_endpoint() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = ponder_sim::spawn(SimConfig { seed: 5, ..Default::default() })
            .await
            .expect("sim");
        let (r, _) = solve(
            sim_backend(&sim, None),
            "beam-search",
            merge(
                line_steps(),
                serde_json::json!({"continuation": "text", "beam_size": 2, "candidates_per_beam": 2}),
            ),
            0,
        )
        .await;
        assert!(r.outcome.answer.is_some());
        let stats = sim.stats();
        assert_eq!(stats.chat_requests, 0);
        assert!(stats.completion_requests >= 5, "{stats:?}");
        // The rendered prefix is the same every step: the simulated cache serves it.
        assert!(stats.cached_tokens > 0, "{stats:?}");
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn an_llm_critic_scores_steps_through_chat_calls() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = ponder_sim::spawn(SimConfig {
            seed: 6,
            ..Default::default()
        })
        .await
        .expect("sim");
        let (r, _) = solve(
            sim_backend(&sim, None),
            "online-best-of-n",
            merge(
                line_steps(),
                serde_json::json!({"candidates_per_step": 2, "scorer": "llm_critic", "critic_samples": 1}),
            ),
            3,
        )
        .await;
        assert!(r.outcome.answer.is_some());
        // The simulated judge answers `JUDGEMENT: correct` or `incorrect`: every step is read.
        let scores = r.outcome.details["step_scores"].as_array().expect("scores").clone();
        assert!(!scores.is_empty());
        assert!(scores.iter().all(|s| s == 3.0 || s == 0.1), "{scores:?}");
        let stats = sim.stats();
        assert_eq!(stats.pooling_requests, 0);
        let critic_calls: u64 = r.outcome.details["search"]["iterations"]
            .as_array()
            .expect("iterations")
            .iter()
            .map(|i| i["scoring"]["critic_calls"].as_u64().unwrap_or(0))
            .sum();
        assert!(critic_calls >= scores.len() as u64);
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}
