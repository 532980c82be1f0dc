//! Offline best-of-N against a real `ponder-sim`: PRM scores through the pooling endpoint and
//! uncertainty scores from streamed top-20 logprobs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ponder_core::{run_strategy, Backend, Message, Params, StrategyInput};
use ponder_sim::{SimConfig, SimHandle};
use ponder_strategies::Registry;
use ponder_task::Difficulty;

const TEST_LIMIT: Duration = Duration::from_secs(60);

fn backend(sim: &SimHandle) -> Arc<dyn Backend> {
    common::sim_backend(sim, None)
}

async fn run(
    backend: Arc<dyn Backend>,
    params: serde_json::Value,
    seed: u64,
) -> ponder_core::StrategyResult {
    let params: Params = serde_json::from_value(params).expect("params");
    let strategy = Registry::builtin()
        .get("best-of-n")
        .expect("registered")
        .build(&params, backend.name(), &backend.capabilities())
        .expect("builds");
    let problem = ponder_task::generate_one(5, Difficulty::Hard, seed as usize);
    let input = StrategyInput {
        messages: vec![Message::user(problem.prompt())],
        seed,
    };
    run_strategy(strategy.as_ref(), backend, &input)
        .await
        .expect("runs")
}

#[tokio::test]
async fn prm_scores_come_from_the_pooling_endpoint() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = ponder_sim::spawn(SimConfig::default()).await.expect("sim");
        let r = run(
            backend(&sim),
            serde_json::json!({"n": 8, "scorer": "prm", "score_aggregation": "min"}),
            2,
        )
        .await;
        assert_eq!(r.outcome.candidates.len(), 8);
        let selected = r.outcome.selected.expect("a pick");
        let best = r.outcome.candidates[selected].score.expect("scored");
        for c in &r.outcome.candidates {
            let s = c.score.expect("every trace has steps");
            assert!((0.0..=1.0).contains(&s), "{s}");
            assert!(s <= best);
        }
        let stats = sim.stats();
        assert_eq!(stats.pooling_requests, 1, "one batched PRM call");
        assert!(stats.pooling_rows >= 8 * 4, "{stats:?}");
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn uncertainty_scorers_use_streamed_logprobs() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = ponder_sim::spawn(SimConfig::default()).await.expect("sim");
        for scorer in ["entropy", "perplexity", "pd_gap", "self_certainty"] {
            let r = run(
                backend(&sim),
                serde_json::json!({"n": 4, "scorer": scorer, "selection": "weighted_vote"}),
                3,
            )
            .await;
            assert!(r.outcome.answer.is_some(), "{scorer}");
            assert!(
                r.outcome.candidates.iter().all(|c| c.score.is_some()),
                "{scorer}: {:?}",
                r.outcome.details
            );
        }
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn an_llm_judge_rates_every_trace() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = ponder_sim::spawn(SimConfig::default()).await.expect("sim");
        let r = run(
            backend(&sim),
            serde_json::json!({"n": 4, "scorer": "llm_judge"}),
            4,
        )
        .await;
        for c in &r.outcome.candidates {
            let s = c
                .score
                .expect("the simulator answers with a FINAL SCORE line");
            assert!((0.1..=1.0).contains(&s), "{s}");
        }
        // One generation request, then one judge call per trace (no re-asks needed).
        assert_eq!(sim.stats().requests, 5);
        assert_eq!(r.cost.requests, 5);
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}
