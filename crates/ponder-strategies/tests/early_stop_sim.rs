//! Early-stopping self-consistency against a real `ponder-sim` on a loopback port: the rule
//! stops sampling, the cancelled streams show up in the simulator's counters, and the cost
//! report counts them.

use std::sync::Arc;
use std::time::Duration;

use ponder_core::{run_strategy, Backend, Message, Params, StrategyInput};
use ponder_openai::{OpenAiBackend, OpenAiConfig};
use ponder_sim::{LatencyConfig, SimConfig, SimHandle, StepAccuracy};
use ponder_strategies::Registry;
use ponder_task::Difficulty;

const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn sim(tpot_ms: u64) -> SimHandle {
    ponder_sim::spawn(SimConfig {
        seed: 3,
        latency: LatencyConfig {
            ttft_ms: 1,
            tpot_ms,
            slots: 0,
        },
        // Every step right: every trace agrees, so the rules can stop as early as they may.
        step_accuracy: StepAccuracy {
            easy: 1.0,
            medium: 1.0,
            hard: 1.0,
        },
        ..SimConfig::default()
    })
    .await
    .expect("sim starts")
}

fn backend(sim: &SimHandle) -> Arc<dyn Backend> {
    let mut c = OpenAiConfig::new(vec![sim.base_url()], "ponder-sim");
    c.api_key_env = None;
    Arc::new(OpenAiBackend::new(c).expect("valid config"))
}

async fn solve(
    backend: Arc<dyn Backend>,
    params: serde_json::Value,
) -> ponder_core::StrategyResult {
    let params: Params = serde_json::from_value(params).expect("params");
    let strategy = Registry::builtin()
        .get("self-consistency")
        .expect("registered")
        .build(&params, backend.name(), &backend.capabilities())
        .expect("builds");
    let problem = ponder_task::generate_one(21, Difficulty::Medium, 0);
    let input = StrategyInput {
        messages: vec![Message::user(problem.prompt())],
        seed: 8,
    };
    let result = run_strategy(strategy.as_ref(), backend, &input)
        .await
        .expect("runs");
    assert_eq!(
        result.outcome.answer.as_deref(),
        Some(problem.answer.to_string().as_str())
    );
    result
}

#[tokio::test]
async fn esc_stops_after_one_agreeing_window() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = sim(0).await;
        let r = solve(
            backend(&sim),
            serde_json::json!({"n": 40, "early_stop": "esc", "window_size": 5}),
        )
        .await;
        let info = &r.outcome.details["early_stop"];
        assert_eq!(info["launched"], 5, "{info}");
        assert_eq!(info["stopped_early"], true);
        assert_eq!(r.outcome.candidates.len(), 5);
        assert_eq!(r.cost.requests, 5);
        assert_eq!(sim.stats().requests, 5);
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn beta_cancels_the_traces_in_flight_and_the_server_sees_it() {
    tokio::time::timeout(TEST_LIMIT, async {
        // 5 ms per token: a solution takes a few hundred milliseconds, and traces of different
        // lengths finish at different times, so traces are still in flight when four agreeing
        // answers have arrived (P = 0.96875 ≥ 0.95).
        let sim = sim(5).await;
        let r = solve(
            backend(&sim),
            serde_json::json!({"n": 16, "early_stop": "beta"}),
        )
        .await;
        let info = &r.outcome.details["early_stop"];
        assert_eq!(info["dispatch"], "all_at_once_cancel", "{info}");
        assert_eq!(info["stopped_early"], true, "{info}");
        let cancelled = info["cancelled"].as_u64().expect("count");
        assert!(cancelled > 0, "{info}");
        // A trace cancelled before its stream opened never reached the meter (or the server as a
        // stream), so the meter counts at most the cancelled traces, and at least one.
        assert!(
            r.cost.aborted >= 1 && r.cost.aborted <= cancelled,
            "{:?} vs {cancelled} cancelled",
            r.cost
        );
        assert!(r.cost.tokens_saved > 0);
        // The server notices the closed connections asynchronously.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stats = sim.stats();
            if stats.streams_aborted >= 1 && stats.tokens_not_generated > 0 {
                assert!(stats.streams_aborted <= cancelled, "{stats:?}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server saw no aborted stream: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn doubling_rounds_stop_at_the_first_agreeing_pair() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sim = sim(0).await;
        let r = solve(
            backend(&sim),
            serde_json::json!({"n": 32, "early_stop": "doubling"}),
        )
        .await;
        let info = &r.outcome.details["early_stop"];
        // Two agreeing samples: share 1.0 ≥ 0.75 after the first round.
        assert_eq!(info["launched"], 2, "{info}");
        assert_eq!(info["rounds"], 1, "{info}");
        sim.shutdown().await;
    })
    .await
    .expect("within the limit");
}
