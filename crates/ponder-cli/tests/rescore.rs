//! `ponder rescore` as a process, on samples files written to a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-rescore-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rescore(args: &[&str]) -> Output {
    Command::new(PONDER)
        .arg("rescore")
        .args(args)
        .output()
        .expect("ponder runs")
}

/// Two problems: majority is right on the first only; the scores favour the right answer on
/// the second.
fn write_samples(dir: &Path) -> PathBuf {
    let path = dir.join("samples.jsonl");
    let lines = [
        serde_json::json!({"id": "q1", "gold": "12", "extra": "ignored", "samples": [
            {"text": "\\boxed{12}", "score": 0.2},
            {"text": "so the answer is \\boxed{12.0}", "score": 0.3},
            {"text": "\\boxed{13}", "score": 0.9},
        ]}),
        serde_json::json!({"id": 2, "gold": "\\frac{3}{4}", "samples": [
            {"text": "\\boxed{1}", "score": 0.1},
            {"text": "\\boxed{1}", "score": 0.1},
            {"text": "\\boxed{0.75}", "score": 0.7},
        ]}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).expect("write samples");
    path
}

#[test]
fn prints_accuracy_per_rule() {
    let dir = temp_dir("table");
    let samples = write_samples(&dir);
    let out = rescore(&["--samples", samples.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rule in [
        "majority",
        "weighted-majority",
        "best-score",
        "first",
        "random",
    ] {
        assert!(stdout.contains(rule), "{rule} missing:\n{stdout}");
    }
    assert!(stdout.contains("pass@1") && stdout.contains("pass@3") && stdout.contains("oracle"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = temp_dir("json");
    let samples = write_samples(&dir);
    let out = rescore(&[
        "--samples",
        samples.to_str().expect("utf-8"),
        "--select",
        "majority,weighted-majority,best-score",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["problems"], 2);
    let acc = |rule: &str| v["rules"][rule]["accuracy"].as_f64().expect("a number");
    // q1: majority 12 (right), weighted 12 (0.5 vs 0.9: wrong), best 13 (wrong).
    // q2: majority 1 (wrong), weighted 0.75 (0.7 vs 0.2: right), best 0.75 (right).
    assert_eq!(acc("majority"), 0.5);
    assert_eq!(acc("weighted-majority"), 0.5);
    assert_eq!(acc("best-score"), 0.5);
    assert!(v["rules"].get("first").is_none());
    // pass@1 = (2/3 + 1/3) / 2; every problem has a right sample.
    assert!((v["pass_at_1"].as_f64().expect("number") - 0.5).abs() < 1e-12);
    assert_eq!(v["oracle"], 1.0);
    assert_eq!(v["pass_at_k"], 1.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_names_the_file_and_line() {
    let dir = temp_dir("bad");
    let path = dir.join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"id\": 1, \"gold\": \"2\", \"samples\": [{\"text\": \"\\\\boxed{2}\"}]}\n{\"id\": 2, \"samples\": []}\n",
    )
    .expect("write");
    let out = rescore(&["--samples", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.jsonl:2:"), "{stderr}");
    assert!(stderr.contains("gold"), "{stderr}");

    let out = rescore(&[
        "--samples",
        path.to_str().expect("utf-8"),
        "--skip-bad-lines",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 1 bad lines"));

    let out = rescore(&[
        "--samples",
        path.to_str().expect("utf-8"),
        "--select",
        "mode",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: majority"));

    let out = rescore(&[
        "--samples",
        dir.join("missing.jsonl").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
}
