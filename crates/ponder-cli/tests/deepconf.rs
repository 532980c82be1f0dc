//! `ponder solve --strategy deepconf-online --json` against an in-process `ponder-sim` reports
//! the traces it stopped and the tokens that saved; DeepConf asked of a backend without
//! logprobs fails before any request, naming the capability.

use std::process::{Command, Output};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

fn ponder(args: &[&str]) -> Output {
    Command::new(PONDER)
        .args(args)
        .env_remove("PONDER_BACKEND")
        .env_remove("PONDER_MODEL")
        .env_remove("PONDER_CONFIG")
        .env_remove("PONDER_STRATEGY")
        .output()
        .expect("ponder runs")
}

fn sim(runtime: &tokio::runtime::Runtime) -> ponder_sim::SimHandle {
    runtime
        .block_on(ponder_sim::spawn(ponder_sim::SimConfig {
            seed: 8,
            latency: ponder_sim::LatencyConfig {
                ttft_ms: 1,
                tpot_ms: 2,
                slots: 0,
            },
            ..Default::default()
        }))
        .expect("sim starts")
}

#[test]
fn solve_deepconf_online_reports_aborted_traces_and_tokens_saved() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sim = sim(&runtime);
    let question = ponder_task::generate_one(3, ponder_task::Difficulty::Hard, 0).prompt();
    let url = sim.base_url();
    let out = ponder(&[
        "solve",
        &question,
        "--backend",
        &url,
        "--model",
        "ponder-sim",
        "--strategy",
        "deepconf-online",
        "--set",
        "window_size=8",
        "--set",
        "variant=low",
        "--set",
        "warmup_traces=8",
        "--set",
        "total_budget=24",
        "--set",
        "parallelism=4",
        // Consensus stop off, so that the adaptive phase runs whatever the warm-up says.
        "--set",
        "consensus_threshold=1.5",
        "--set",
        "max_tokens=1000",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let aborted = report["usage"]["aborted"].as_u64().expect("aborted");
    assert!(aborted > 0, "{report}");
    assert!(
        report["usage"]["tokens_saved"].as_u64().expect("saved") > 0,
        "{report}"
    );
    assert_eq!(report["strategy"], "deepconf-online");
    assert_eq!(
        report["details"]["confidence_stopped"].as_u64(),
        Some(aborted)
    );
    assert_eq!(report["details"]["variant"], "low");
    assert_eq!(report["details"]["percentile"], 90.0);
    let stopped = report["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .filter(|c| c["finish_reason"] == "aborted")
        .count() as u64;
    assert_eq!(stopped, aborted);
    // The simulator saw the closed streams (asynchronously).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sim.stats().streams_aborted == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stats = sim.stats();
    assert!(stats.streams_aborted > 0, "{stats:?}");
    assert!(stats.tokens_not_generated > 0, "{stats:?}");
}

#[test]
fn deepconf_without_logprobs_fails_naming_the_capability() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sim = sim(&runtime);
    let dir = std::env::temp_dir().join(format!("ponder-deepconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("no-logprobs.yaml");
    std::fs::write(
        &config,
        format!(
            "backend:\n  endpoints: [\"{}\"]\n  model: ponder-sim\n  max_top_logprobs: null\n",
            sim.base_url()
        ),
    )
    .expect("config written");
    for strategy in ["deepconf", "deepconf-online"] {
        let out = ponder(&[
            "solve",
            "What is 2 + 2?",
            "--config",
            config.to_str().expect("utf-8"),
            "--strategy",
            strategy,
        ]);
        assert_eq!(out.status.code(), Some(2), "{strategy}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("logprobs"), "{strategy}: {stderr}");
    }
    assert_eq!(sim.stats().requests, 0, "nothing was sent");
    let _ = std::fs::remove_dir_all(&dir);
}
