//! Setup shared by the integration tests that run strategies against `ponder-sim`. Each test
//! file uses a subset of it.
#![allow(dead_code)]

use std::sync::Arc;

use ponder_core::{run_strategy, Backend, Message, Params, StrategyInput, StrategyResult};
use ponder_openai::{OpenAiBackend, OpenAiConfig, RewardConfig, RewardFormat};
use ponder_sim::SimHandle;
use ponder_strategies::Registry;
use ponder_task::Difficulty;

/// An HTTP backend on `sim` with its process reward model, enforcing at most
/// `max_stop_strings` server-side.
pub fn sim_backend(sim: &SimHandle, max_stop_strings: Option<usize>) -> Arc<dyn Backend> {
    let mut c = OpenAiConfig::new(vec![sim.base_url()], "ponder-sim");
    c.api_key_env = None;
    c.max_stop_strings = max_stop_strings;
    c.reward = Some(RewardConfig {
        endpoints: Vec::new(),
        path: "/pooling".into(),
        model: "ponder-sim-prm".into(),
        format: RewardFormat::Qwen,
        system_prompt: None,
        task: None,
    });
    Arc::new(OpenAiBackend::new(c).expect("valid config"))
}

/// Runs `strategy` on hard problem `index` (generator seed 11, run seed `index`); returns the
/// result and the gold answer.
pub async fn solve(
    backend: Arc<dyn Backend>,
    strategy: &str,
    params: serde_json::Value,
    index: usize,
) -> (StrategyResult, String) {
    let params: Params = serde_json::from_value(params).expect("params");
    let strategy = Registry::builtin()
        .get(strategy)
        .expect("registered")
        .build(&params, backend.name(), &backend.capabilities())
        .expect("builds");
    let problem = ponder_task::generate_one(11, Difficulty::Hard, index);
    let input = StrategyInput {
        messages: vec![Message::user(problem.prompt())],
        seed: index as u64,
    };
    let r = run_strategy(strategy.as_ref(), backend, &input)
        .await
        .expect("runs");
    (r, problem.answer.to_string())
}
