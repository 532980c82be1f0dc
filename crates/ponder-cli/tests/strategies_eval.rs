//! Every strategy runs under `ponder eval` against `ponder-sim`: records and a summary for each.

use std::path::PathBuf;
use std::process::Command;

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-strategies-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn every_strategy_evaluates_against_the_simulator() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sim = runtime
        .block_on(ponder_sim::spawn(ponder_sim::SimConfig {
            seed: 2,
            latency: ponder_sim::LatencyConfig {
                ttft_ms: 1,
                tpot_ms: 1,
                slots: 0,
            },
            ..Default::default()
        }))
        .expect("sim starts");
    let dir = temp_dir("all");
    // The PRM of best-of-n is the simulator's pooling endpoint.
    let config = dir.join("ponder.yaml");
    std::fs::write(
        &config,
        format!(
            "backend:\n  endpoints: [{}]\n  model: ponder-sim\n  api_key_env: null\n  reward:\n    model: ponder-sim-prm\n",
            sim.base_url()
        ),
    )
    .expect("config");
    let runs: &[(&str, &[&str])] = &[
        ("baseline", &[]),
        ("chain-of-thought", &[]),
        ("self-consistency", &["n=4"]),
        ("self-consistency", &["n=8", "early_stop=beta"]),
        (
            "self-consistency",
            &["n=8", "early_stop=esc", "window_size=2"],
        ),
        ("self-consistency", &["n=8", "early_stop=doubling"]),
        ("self-consistency", &["n=4", "vote=weighted"]),
        ("deepconf", &["budget=8", "window_size=8"]),
        (
            "deepconf-online",
            &[
                "warmup_traces=4",
                "total_budget=8",
                "window_size=8",
                "parallelism=4",
            ],
        ),
        ("best-of-n", &["n=4", "scorer=prm", "score_aggregation=min"]),
        ("best-of-n", &["n=4", "scorer=entropy"]),
        ("budget-forcing", &["max_continuations=1", "max_tokens=512"]),
    ];
    for (i, (strategy, sets)) in runs.iter().enumerate() {
        let out = dir.join(format!("run{i}"));
        let mut cmd = Command::new(PONDER);
        cmd.args([
            "eval",
            "--dataset",
            "synthetic-easy",
            "--limit",
            "4",
            "--seed",
            "3",
            "--strategy",
            strategy,
            "--config",
            config.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
        ]);
        for s in *sets {
            cmd.args(["--set", s]);
        }
        let output = cmd
            .env_remove("PONDER_BACKEND")
            .env_remove("PONDER_MODEL")
            .output()
            .expect("ponder runs");
        assert!(
            output.status.success(),
            "{strategy} {sets:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let records = std::fs::read_to_string(out.join("records.jsonl")).expect("records");
        assert_eq!(records.lines().count(), 4, "{strategy} {sets:?}");
        for line in records.lines() {
            let r: serde_json::Value = serde_json::from_str(line).expect("a record");
            assert!(r["error"].is_null(), "{strategy} {sets:?}: {}", r["error"]);
            assert!(
                r["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
                "{strategy} {sets:?}"
            );
            // The strategy's own account travels with the record.
            if *strategy == "deepconf-online" {
                assert!(r["details"]["stop_reason"].is_string(), "{}", r["details"]);
            }
            if sets.iter().any(|s| s.starts_with("early_stop=")) {
                assert!(
                    r["details"]["early_stop"]["launched"].is_u64(),
                    "{}",
                    r["details"]
                );
            }
        }
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("summary.json")).expect("summary"),
        )
        .expect("JSON");
        let accuracy = summary["accuracy"].as_f64().expect("accuracy");
        assert!((0.0..=1.0).contains(&accuracy));
    }
    let _ = std::fs::remove_dir_all(&dir);
    runtime.block_on(sim.shutdown());
}
