//! `ponder grade` end to end: one pair, JSON output, a pairs file, bad lines.

use std::path::PathBuf;
use std::process::{Command, Output};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

fn ponder(args: &[&str]) -> Output {
    Command::new(PONDER)
        .args(args)
        .output()
        .expect("ponder runs")
}

/// A fresh file under the system temp directory, unique to this test and process.
fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-grade-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, content).expect("write pairs");
    path
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn one_pair_as_text_and_json() {
    let out = ponder(&["grade", "\\frac{1}{2}", "so the answer is \\boxed{0.5}."]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("verdict: equivalent"), "{text}");
    assert!(text.contains("\"0.5\" (boxed)"), "{text}");

    let out = ponder(&["grade", "--json", "-2", "x = -3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(v["equivalent"], false);
    assert_eq!(v["verdict"], "not_equivalent");
    assert_eq!(v["prediction_extracted"], "x = -3");
    assert_eq!(v["gold_normalized"], "-2");
}

#[test]
fn pairs_file_adds_the_verdict_to_each_line() {
    let path = temp_file(
        "ok",
        "{\"id\": \"a\", \"gold\": \"3\", \"prediction\": \"so \\\\boxed{3}\"}\n\
         \n\
         {\"id\": \"b\", \"gold\": \"(1, 2)\", \"prediction\": \"(2, 1)\"}\n\
         {\"id\": \"c\", \"gold\": 14, \"prediction\": \"#### 14\"}\n",
    );
    let out = ponder(&["grade", "--input", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["equivalent"], true);
    assert_eq!(lines[0]["prediction_extracted"], "3");
    assert_eq!(lines[0]["prediction_method"], "boxed");
    assert_eq!(lines[1]["equivalent"], false, "tuples are ordered");
    assert_eq!(lines[2]["equivalent"], true);
    assert_eq!(lines[2]["gold_normalized"], "14");
    assert!(stderr(&out).contains("graded 3 pairs: 2 equivalent"));
}

#[test]
fn bad_line_names_file_and_line_and_keeps_earlier_output() {
    let content = "{\"gold\": \"1\", \"prediction\": \"1\"}\nnot json\n{\"gold\": \"2\"}\n\
                   {\"gold\": \"2\", \"prediction\": \"2.0\"}\n";
    let path = temp_file("bad", content);
    let p = path.to_str().expect("utf-8 path");

    let out = ponder(&["grade", "--input", p]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{p}:2")), "{err}");
    assert!(err.contains("not JSON"), "{err}");
    // The line graded before the bad one is on stdout.
    assert_eq!(stdout(&out).lines().count(), 1);

    let out = ponder(&["grade", "--input", p, "--skip-bad-lines"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{p}:3: missing field `prediction`")),
        "{err}"
    );
    assert!(err.contains("skipped 2 bad lines"), "{err}");
}

#[test]
fn a_line_that_is_not_utf8_is_a_bad_line() {
    let path = temp_file("utf8", "");
    let mut bytes = b"{\"gold\": \"1\", \"prediction\": \"1\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"gold\": \"\xff\"}\n");
    std::fs::write(&path, bytes).expect("write pairs");
    let p = path.to_str().expect("utf-8 path");
    let out = ponder(&["grade", "--input", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{p}:2: not UTF-8")),
        "{}",
        stderr(&out)
    );
    let out = ponder(&["grade", "--input", p, "--skip-bad-lines"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().count(), 1);
}

#[test]
fn missing_file_and_missing_arguments_are_errors() {
    let out = ponder(&["grade", "--input", "/nonexistent/pairs.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/pairs.jsonl"));
    let out = ponder(&["grade", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ponder(&["grade", "1", "1", "--preset", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown extraction preset"));
}
