//! Generate once, re-use many ways: `ponder eval` against `ponder-sim` writes records; `ponder
//! rescore` re-selects from them; `--backend replay:records.jsonl` runs strategies on the saved
//! traces with no server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn ponder(args: &[&str]) -> Output {
    let out = Command::new(PONDER)
        .args(args)
        .env_remove("PONDER_BACKEND")
        .env_remove("PONDER_MODEL")
        .env_remove("PONDER_CONFIG")
        .output()
        .expect("ponder runs");
    assert!(
        out.status.success(),
        "ponder {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("records")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// Candidate texts per problem id, sorted.
fn texts_by_id(records: &[serde_json::Value]) -> BTreeMap<String, Vec<String>> {
    records
        .iter()
        .map(|r| {
            let mut texts: Vec<String> = r["candidates"]
                .as_array()
                .expect("candidates")
                .iter()
                .map(|c| c["text"].as_str().expect("text").to_string())
                .collect();
            texts.sort();
            (r["id"].as_str().expect("id").to_string(), texts)
        })
        .collect()
}

#[test]
fn eval_then_rescore_then_replay() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sim = runtime
        .block_on(ponder_sim::spawn(ponder_sim::SimConfig {
            seed: 5,
            ..Default::default()
        }))
        .expect("sim starts");
    let dir = temp_dir("flow");
    let live = dir.join("live");
    let live_str = live.to_str().expect("utf-8");
    ponder(&[
        "eval",
        "--dataset",
        "synthetic-hard",
        "--limit",
        "12",
        "--seed",
        "4",
        "--set",
        "n=8",
        "--backend",
        &sim.base_url(),
        "--model",
        "ponder-sim",
        "--out",
        live_str,
    ]);
    let requests_after_eval = sim.stats().requests;
    let records_path = live.join("records.jsonl");
    let live_records = read_records(&records_path);
    assert_eq!(live_records.len(), 12);

    // Re-scoring the records with the majority rule reproduces the run's own accuracy.
    let out = ponder(&[
        "rescore",
        "--samples",
        records_path.to_str().expect("utf-8"),
        "--select",
        "majority",
        "--json",
    ]);
    let rescored: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(live.join("summary.json")).expect("summary"))
            .expect("JSON summary");
    assert_eq!(rescored["problems"], 12);
    let accuracy = summary["accuracy"].as_f64().expect("accuracy");
    assert_eq!(
        rescored["rules"]["majority"]["accuracy"].as_f64(),
        Some(accuracy)
    );

    // The same evaluation (same seed, so the same problems) from the saved traces: no request
    // reaches the server, and each problem's eight candidates are exactly its eight saved
    // traces.
    let replay = dir.join("replay");
    let pool = format!("replay:{}", records_path.display());
    ponder(&[
        "eval",
        "--dataset",
        "synthetic-hard",
        "--limit",
        "12",
        "--seed",
        "4",
        "--set",
        "n=8",
        "--backend",
        &pool,
        "--out",
        replay.to_str().expect("utf-8"),
    ]);
    assert_eq!(sim.stats().requests, requests_after_eval);
    let replayed = read_records(&replay.join("records.jsonl"));
    assert_eq!(texts_by_id(&replayed), texts_by_id(&live_records));

    // `solve` on one saved question draws distinct saved traces.
    let question = live_records[0]["question"].as_str().expect("question");
    let out = ponder(&[
        "solve",
        question,
        "--backend",
        &pool,
        "--set",
        "n=3",
        "--json",
    ]);
    let solved: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let saved = &texts_by_id(&live_records)[live_records[0]["id"].as_str().expect("id")];
    let mut drawn: Vec<String> = solved["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["text"].as_str().expect("text").to_string())
        .collect();
    assert_eq!(drawn.len(), 3);
    assert!(drawn.iter().all(|t| saved.contains(t)));
    drawn.sort();
    drawn.dedup();
    // Three draws from eight traces at distinct positions (texts may still repeat when the
    // simulator wrote the same solution twice, so only bound it).
    assert!(!drawn.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
    runtime.block_on(sim.shutdown());
}
