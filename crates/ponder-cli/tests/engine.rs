//! `ponder solve` / `ponder eval` on the embedded engine, with a tiny random-weight GGUF model
//! written into a temp dir (no downloads, no server).

use std::path::PathBuf;
use std::process::{Command, Output};

use ponder_engine::tiny::TinyModel;

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

fn temp_dir(label: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ponder-cli-engine-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn models(label: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(label);
    let (policy, prm) = (dir.join("policy.gguf"), dir.join("prm.gguf"));
    TinyModel::default().write(&policy).expect("policy");
    TinyModel {
        prm: true,
        seed: 9,
        ..Default::default()
    }
    .write(&prm)
    .expect("prm");
    (policy, prm)
}

fn ponder(args: &[&str]) -> Output {
    let mut cmd = Command::new(PONDER);
    cmd.args(args);
    for key in [
        "PONDER_BACKEND",
        "PONDER_MODEL",
        "PONDER_PRM",
        "PONDER_STRATEGY",
        "PONDER_SEED",
        "PONDER_CONFIG",
    ] {
        cmd.env_remove(key);
    }
    cmd.output().expect("ponder runs")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "ponder failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

#[test]
fn self_consistency_prefills_the_prompt_once() {
    let (policy, _) = models("sc");
    let out = ponder(&[
        "solve",
        "What is 17*23?",
        "--model",
        policy.to_str().expect("utf-8 path"),
        "--strategy",
        "self-consistency",
        "--set",
        "n=8",
        "--set",
        "max_tokens=32",
        "--sequences",
        "8",
        "--json",
    ]);
    let v = json(&out);
    assert_eq!(v["candidates"].as_array().map(Vec::len), Some(8));
    let usage = &v["usage"];
    let stats = &v["engine"]["stats"];
    // One request with n = 8: the prompt is counted, and decoded, once; seven samples are forks.
    assert_eq!(usage["requests"], 1);
    assert_eq!(stats["forks"], 7);
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt tokens");
    assert!(prompt > 0);
    assert_eq!(stats["prompt_tokens"].as_u64(), Some(prompt));
    assert_eq!(stats["prompt_tokens_decoded"].as_u64(), Some(prompt));
    assert_eq!(usage["completion_tokens"], 8 * 32);
    // The eight samples sit on ids 0-7 and run to the same length: one compute pass a batch.
    assert_eq!(stats["compute_passes"], stats["decode_calls"]);
}

#[test]
fn beam_search_with_the_in_process_prm_writes_a_trace() {
    let (policy, prm) = models("beam");
    let trace = temp_dir("beam").join("t.json");
    let out = ponder(&[
        "solve",
        "Tom has 12 apples and buys 5 more. How many apples does he have?",
        "--model",
        policy.to_str().expect("utf-8 path"),
        "--prm",
        prm.to_str().expect("utf-8 path"),
        "--strategy",
        "beam-search",
        "--set",
        "beam_width=2",
        "--set",
        "max_steps=3",
        "--set",
        "max_step_tokens=16",
        "--set",
        "min_step_tokens=2",
        "--trace",
        trace.to_str().expect("utf-8 path"),
        "--json",
    ]);
    let v = json(&out);
    assert!(v["candidates"].is_array());
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).expect("trace written"))
            .expect("trace is json");
    assert_eq!(t["strategy"], "beam-search");
    assert!(t["nodes"].as_array().map(Vec::len) > Some(1), "{t}");

    // Best-of-n scored by the in-process PRM: every candidate gets a reward in (0, 1), and the
    // question's tokens are decoded once for all four candidates.
    let out = ponder(&[
        "solve",
        "Tom has 12 apples and buys 5 more. How many apples does he have?",
        "--model",
        policy.to_str().expect("utf-8 path"),
        "--prm",
        prm.to_str().expect("utf-8 path"),
        "--strategy",
        "best-of-n",
        "--set",
        "n=4",
        "--set",
        "scorer=prm",
        "--set",
        "max_tokens=24",
        "--json",
    ]);
    let v = json(&out);
    let scores: Vec<f64> = v["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["score"].as_f64().expect("scored"))
        .collect();
    assert_eq!(scores.len(), 4);
    assert!(scores.iter().all(|s| *s > 0.0 && *s < 1.0), "{scores:?}");
    let prm_stats = &v["engine"]["reward_model"];
    let read = prm_stats["reward_tokens"].as_u64().expect("reward tokens");
    let decoded = prm_stats["reward_tokens_decoded"]
        .as_u64()
        .expect("decoded");
    assert!(read > 0 && decoded < read, "{prm_stats}");
}

#[test]
fn a_sequence_count_out_of_range_names_the_flag() {
    let out = ponder(&["solve", "q", "--sequences", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sequences"), "{err}");
}

#[test]
fn a_missing_model_file_is_a_clear_error() {
    let out = ponder(&["solve", "q", "--model", "/nonexistent/model.gguf"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/model.gguf") && err.contains("does not exist"),
        "{err}"
    );
}
