//! Step search through the real binary against an in-process `ponder-sim` with its PRM:
//! `ponder solve … --strategy beam-search --set beam_width=4 --trace t.json` and
//! `ponder eval --strategy beam-search`.

use std::path::PathBuf;
use std::process::{Command, Output};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-step-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A simulator on its own runtime (the binary runs synchronously beside it) and a config file
/// naming its PRM.
struct Setup {
    runtime: tokio::runtime::Runtime,
    sim: Option<ponder_sim::SimHandle>,
    dir: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let sim = runtime
            .block_on(ponder_sim::spawn(ponder_sim::SimConfig {
                seed: 6,
                ..Default::default()
            }))
            .expect("sim starts");
        let dir = temp_dir(name);
        let config = dir.join("ponder.yaml");
        std::fs::write(
            &config,
            format!(
                "backend:\n  endpoints: [{}]\n  model: ponder-sim\n  api_key_env: null\n  reward:\n    model: ponder-sim-prm\n",
                sim.base_url()
            ),
        )
        .expect("config");
        Setup {
            runtime,
            sim: Some(sim),
            dir,
            config,
        }
    }

    fn url(&self) -> String {
        self.sim.as_ref().map(|s| s.base_url()).unwrap_or_default()
    }

    fn ponder(&self, args: &[&str]) -> Output {
        Command::new(PONDER)
            .args(args)
            .args(["--config", self.config.to_str().expect("utf-8")])
            .env_remove("PONDER_BACKEND")
            .env_remove("PONDER_MODEL")
            .env_remove("PONDER_STRATEGY")
            .output()
            .expect("ponder runs")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.runtime.block_on(sim.shutdown());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn question() -> String {
    ponder_task::generate_one(8, ponder_task::Difficulty::Hard, 0).prompt()
}

#[test]
fn solve_beam_search_writes_the_search_tree() {
    let s = Setup::new("solve");
    let trace = s.dir.join("t.json");
    let url = s.url();
    let out = s.ponder(&[
        "solve",
        &question(),
        "--backend",
        &url,
        "--model",
        "ponder-sim",
        "--strategy",
        "beam-search",
        "--set",
        "beam_width=4",
        "--trace",
        trace.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer_line = stdout.lines().next().unwrap_or("");
    assert!(answer_line.starts_with("answer: "), "{stdout}");
    assert!(
        answer_line["answer: ".len()..].parse::<i64>().is_ok(),
        "{stdout}"
    );
    let tree: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).expect("trace written"))
            .expect("JSON");
    assert_eq!(tree["strategy"], "beam-search");
    assert_eq!(tree["scorer"], "prm");
    let nodes = tree["nodes"].as_array().expect("nodes");
    assert_eq!(nodes[0]["decision"], "root");
    // The root has 4 children (one beam × 4 candidates) and every other node has a parent.
    assert_eq!(nodes.iter().filter(|n| n["parent"] == 0).count(), 4);
    assert!(nodes.iter().skip(1).all(|n| n["parent"].is_u64()));
    let selected = tree["selected"].as_u64().expect("selected") as usize;
    assert_eq!(nodes[selected]["decision"], "selected");
    assert!(tree["iterations"].as_array().is_some_and(|i| !i.is_empty()));
    assert!(tree["reward_calls"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn trace_without_a_search_writes_the_details_and_errors_name_the_file() {
    let s = Setup::new("details");
    let trace = s.dir.join("sc.json");
    let q = question();
    let out = s.ponder(&[
        "solve",
        &q,
        "--set",
        "n=3",
        "--trace",
        trace.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let details: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).expect("written")).expect("JSON");
    assert!(details.get("search").is_none());
    assert!(details.is_object(), "{details}");

    let missing = s.dir.join("no-such-dir").join("t.json");
    let out = s.ponder(&[
        "solve",
        &q,
        "--strategy",
        "beam-search",
        "--set",
        "beam_width=2",
        "--trace",
        missing.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-dir"), "{err}");
}

#[test]
fn beam_search_without_a_prm_fails_naming_the_capability() {
    let s = Setup::new("noprm");
    let url = s.url();
    // No config file: the backend has no reward model.
    let out = Command::new(PONDER)
        .args([
            "solve",
            &question(),
            "--backend",
            &url,
            "--model",
            "ponder-sim",
            "--strategy",
            "beam-search",
        ])
        .env_remove("PONDER_CONFIG")
        .output()
        .expect("ponder runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("process_rewards"), "{err}");
}

#[test]
fn eval_runs_the_step_strategies_on_hard_problems() {
    let s = Setup::new("eval");
    let lines = ["detector=structured", "min_step_tokens=1"];
    let runs: [(&str, Vec<&str>); 8] = [
        ("beam-search", vec!["beam_width=2", "candidates_per_beam=2"]),
        ("beam-search", lines.to_vec()),
        (
            "online-best-of-n",
            [&lines[..], &["candidates_per_step=2"]].concat(),
        ),
        (
            "dvts",
            vec!["n=4", "beam_width=2", "step_patterns=[\"\\nStep\"]"],
        ),
        (
            "particle-filtering",
            vec!["budget=4", "step_token=\nStep", "min_step_tokens=1"],
        ),
        (
            "adaptive-scaling",
            [&lines[..], &["candidates_per_step=2"]].concat(),
        ),
        ("uncertainty-cot", vec!["candidates_per_step=2"]),
        (
            "phi-decoding",
            vec!["step_beam_size=2", "num_rollout=2", "num_foresight=3"],
        ),
    ];
    for (i, (strategy, sets)) in runs.iter().enumerate() {
        let out_dir = s.dir.join(format!("run{i}"));
        let mut args = vec![
            "eval",
            "--dataset",
            "synthetic-hard",
            "--limit",
            "3",
            "--seed",
            "2",
            "--strategy",
            strategy,
            "--out",
            out_dir.to_str().expect("utf-8"),
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = s.ponder(&args);
        assert!(
            out.status.success(),
            "{strategy} {sets:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let records = std::fs::read_to_string(out_dir.join("records.jsonl")).expect("records");
        assert_eq!(records.lines().count(), 3);
        for line in records.lines() {
            let r: serde_json::Value = serde_json::from_str(line).expect("a record");
            assert!(r["error"].is_null(), "{}", r["error"]);
            assert!(r["details"]["search"]["nodes"]
                .as_array()
                .is_some_and(|n| n.len() > 1));
        }
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out_dir.join("summary.json")).expect("summary"),
        )
        .expect("JSON");
        assert!(summary["accuracy"]
            .as_f64()
            .is_some_and(|a| (0.0..=1.0).contains(&a)));
    }
}
