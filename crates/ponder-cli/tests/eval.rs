//! `ponder eval` and `ponder report` end to end: the real binaries, `ponder-sim` as a process on
//! a loopback port, every wait bounded.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

/// Longest any single command may take before the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A fresh, empty temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ponder-eval-test-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creates the temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ponder-sim` running as a process; killed on drop.
struct Sim {
    child: Child,
    url: String,
}

impl Sim {
    fn start(extra: &[&str]) -> Sim {
        let bin = PathBuf::from(PONDER).with_file_name("ponder-sim");
        assert!(
            bin.exists(),
            "ponder-sim is built next to ponder: {}",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["--port", "0", "--seed", "5"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ponder-sim starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("ponder-sim printed no banner within 30 s");
            }
        };
        // `ponder-sim listening on http://127.0.0.1:P/v1`
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("banner names the URL: {line:?}"))
            .to_string();
        Sim { child, url }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished command left.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A `ponder` command with the environment cleared of `PONDER_*` settings, its output going to
/// files in `dir` (so that a full pipe never blocks it).
fn ponder_cmd<S: AsRef<OsStr>>(
    args: &[S],
    dir: &TempDir,
    tag: &str,
) -> (Command, PathBuf, PathBuf) {
    let out = dir.path(&format!("{tag}.stdout"));
    let err = dir.path(&format!("{tag}.stderr"));
    let mut cmd = Command::new(PONDER);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    for key in [
        "PONDER_BACKEND",
        "PONDER_MODEL",
        "PONDER_STRATEGY",
        "PONDER_SEED",
        "PONDER_CONFIG",
        "PONDER_DATA_DIR",
    ] {
        cmd.env_remove(key);
    }
    (cmd, out, err)
}

/// Runs `ponder` to the end, failing the test if it takes longer than [`COMMAND_LIMIT`].
fn ponder<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S], dir: &TempDir, tag: &str) -> Run {
    let (mut cmd, out, err) = ponder_cmd(args, dir, tag);
    let mut child = cmd.spawn().expect("ponder starts");
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ponder {args:?} ran past {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

fn succeeded(run: &Run) {
    assert!(
        run.status.success(),
        "ponder failed ({}):\n{}",
        run.status,
        run.stderr
    );
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("reads records")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON record"))
        .collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("reads")).expect("JSON")
}

#[test]
fn eval_writes_records_summary_and_report() {
    let sim = Sim::start(&[]);
    let tmp = TempDir::new("basic");
    let out = tmp.path("run");
    let out_s = out.to_string_lossy().into_owned();
    let run = ponder(
        &[
            "eval",
            "--dataset",
            "synthetic-easy",
            "--limit",
            "100",
            "--set",
            "n=4",
            "--backend",
            &sim.url,
            "--model",
            "ponder-sim",
            "--seed",
            "7",
            "--out",
            &out_s,
        ],
        &tmp,
        "eval",
    );
    succeeded(&run);
    assert!(run.stdout.contains("accuracy:"), "{}", run.stdout);
    let records = json_lines(&out.join("records.jsonl"));
    assert_eq!(records.len(), 100);
    let ids: HashSet<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), 100);
    for r in &records {
        assert_eq!(r["candidates"].as_array().map(Vec::len), Some(4), "{r}");
        assert!(r["gold"].is_string() && r["correct"].is_boolean() && r["seed"].is_u64());
        assert!(r["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|t| t > 0));
    }
    let summary = read_json(&out.join("summary.json"));
    let accuracy = summary["accuracy"].as_f64().expect("accuracy");
    assert!((0.0..=1.0).contains(&accuracy), "{summary}");
    // The simulator gets most easy problems right with a vote of four.
    assert!(accuracy > 0.5, "{summary}");
    assert_eq!(summary["problems"], 100);
    let ci = summary["accuracy_ci95"].as_array().expect("interval");
    assert!(ci[0].as_f64() <= Some(accuracy) && Some(accuracy) <= ci[1].as_f64());
    assert!(summary["pass_at_k"]["4"].as_f64() >= summary["pass_at_k"]["1"].as_f64());
    let run_json = read_json(&out.join("run.json"));
    assert_eq!(run_json["params"]["n"], 4);
    assert_eq!(run_json["seed"], 7);
    assert_eq!(run_json["strategy"], "self-consistency");

    let report = ponder(&["report", &out_s], &tmp, "report");
    succeeded(&report);
    assert!(
        report
            .stdout
            .contains("self-consistency n=4 · synthetic-easy"),
        "{}",
        report.stdout
    );
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("<svg"), "the page has the plot");
    assert!(!html.contains("<script"), "the page is self-contained");
}

#[test]
fn an_alias_is_recorded_under_the_strategy_it_names() {
    let sim = Sim::start(&[]);
    let tmp = TempDir::new("alias");
    let out = tmp.path("run");
    let out_s = out.to_string_lossy().into_owned();
    let args = [
        "eval",
        "--dataset",
        "synthetic-easy",
        "--limit",
        "3",
        "--backend",
        &sim.url,
        "--model",
        "ponder-sim",
        "--out",
        &out_s,
        "--strategy",
    ];
    let run = ponder(&[&args[..], &["cot"]].concat(), &tmp, "cot");
    succeeded(&run);
    assert_eq!(
        read_json(&out.join("run.json"))["strategy"],
        "chain-of-thought"
    );
    // The canonical name resumes the run the alias started.
    let resumed = ponder(
        &[&args[..], &["chain-of-thought", "--resume"]].concat(),
        &tmp,
        "resume",
    );
    succeeded(&resumed);
    assert_eq!(json_lines(&out.join("records.jsonl")).len(), 3);
}

#[test]
fn killed_run_resumes_without_losing_or_duplicating_records() {
    // 2 ms per token: a medium problem's four traces take a few hundred milliseconds.
    let sim = Sim::start(&["--tpot-ms", "2"]);
    let tmp = TempDir::new("resume");
    let out = tmp.path("run");
    let out_s = out.to_string_lossy().into_owned();
    let records_path = out.join("records.jsonl");
    let args = [
        "eval",
        "--dataset",
        "synthetic-medium",
        "--limit",
        "100",
        "--set",
        "n=4",
        "--backend",
        &sim.url,
        "--model",
        "ponder-sim",
        "--concurrency",
        "4",
        "--out",
        &out_s,
    ];
    let (mut cmd, _, _) = ponder_cmd(&args, &tmp, "first");
    let mut child = cmd.spawn().expect("ponder starts");
    let count = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + COMMAND_LIMIT;
    while count(&records_path) < 20 {
        assert!(
            Instant::now() < deadline,
            "no 20 records within {COMMAND_LIMIT:?}"
        );
        assert!(
            child.try_wait().expect("waits").is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let before = std::fs::read(&records_path).expect("reads");
    let complete = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let kept = &before[..complete];
    let kept_lines = count(&records_path);
    assert!(
        (20..100).contains(&kept_lines),
        "killed half-way: {kept_lines} records"
    );
    // A torn write: half a record, no newline.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&records_path)
        .expect("opens");
    f.write_all(b"{\"id\": \"synth-medium-0-000099\", \"gold\": \"4")
        .expect("appends");
    drop(f);

    // Without --resume the records are never overwritten.
    let refused = ponder(&args, &tmp, "refused");
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--resume"), "{}", refused.stderr);

    let mut resume_args = args.to_vec();
    resume_args.push("--resume");
    let resumed = ponder(&resume_args, &tmp, "resumed");
    succeeded(&resumed);
    assert!(
        resumed.stderr.contains("torn last line"),
        "{}",
        resumed.stderr
    );
    let after = std::fs::read(&records_path).expect("reads");
    assert!(
        after.starts_with(kept),
        "completed records are kept as they were"
    );
    let records = json_lines(&records_path);
    assert_eq!(records.len(), 100);
    let ids: HashSet<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), 100, "100 distinct ids");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["problems"], 100, "the summary covers both sessions");

    // Resuming with other settings is refused.
    let mut other = resume_args.clone();
    other[6] = "n=2";
    let refused = ponder(&other, &tmp, "other");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        refused.stderr.contains("different settings"),
        "{}",
        refused.stderr
    );
}

fn write_dataset(path: &Path, extra_lines: &[(usize, &str)]) -> usize {
    let problems = ponder_task::generate(3, ponder_task::Difficulty::Easy, 5);
    let mut lines: Vec<String> = problems
        .iter()
        .map(|p| {
            serde_json::json!({"key": p.id, "prompt": p.prompt(), "gold": p.answer}).to_string()
        })
        .collect();
    for (at, line) in extra_lines {
        lines.insert(*at, line.to_string());
    }
    std::fs::write(path, lines.join("\n") + "\n").expect("writes the dataset");
    problems.len()
}

#[test]
fn bad_input_names_file_and_line() {
    let tmp = TempDir::new("bad");
    let data = tmp.path("data.jsonl");
    let data_s = data.to_string_lossy().into_owned();
    // Line 3 is not JSON; line 5 lacks the question field.
    write_dataset(
        &data,
        &[(2, "{not json"), (4, "{\"key\": \"k\", \"gold\": 1}")],
    );
    let out = tmp.path("run");
    let out_s = out.to_string_lossy().into_owned();
    let base = |dataset: &str| -> Vec<String> {
        [
            "eval",
            "--dataset",
            dataset,
            "--question-field",
            "prompt",
            "--answer-field",
            "gold",
            "--id-field",
            "key",
            "--backend",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--out",
            &out_s,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run_with = |v: Vec<String>, tag: &str| ponder(&v, &tmp, tag);

    let bad = run_with(base(&data_s), "nonjson");
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr
            .contains(&format!("error: {data_s}:3: not valid JSON")),
        "{}",
        bad.stderr
    );
    assert!(
        !out.join("records.jsonl").exists(),
        "nothing is written on a bad dataset"
    );

    let unknown = run_with(base("gsm9k"), "unknown");
    assert_eq!(unknown.status.code(), Some(2));
    for preset in [
        "gsm8k",
        "math500",
        "aime24",
        "aime25",
        "amc23",
        "synthetic-easy",
    ] {
        assert!(unknown.stderr.contains(preset), "{}", unknown.stderr);
    }

    // With --skip-bad-lines the run goes on with the five good problems; both bad lines are
    // reported with their line numbers.
    let sim = Sim::start(&[]);
    let mut args = base(&data_s);
    let at = args
        .iter()
        .position(|a| a == "http://127.0.0.1:9/v1")
        .expect("url");
    args[at] = sim.url.clone();
    args.push("--skip-bad-lines".into());
    args.push("--set".into());
    args.push("n=2".into());
    let skipped = run_with(args.clone(), "skip");
    succeeded(&skipped);
    assert!(
        skipped.stderr.contains("skipped 2 malformed lines"),
        "{}",
        skipped.stderr
    );
    assert!(
        skipped.stderr.contains(&format!("{data_s}:3:")),
        "{}",
        skipped.stderr
    );
    assert!(
        skipped
            .stderr
            .contains(&format!("{data_s}:5: missing field `prompt`")),
        "{}",
        skipped.stderr
    );
    let records_path = out.join("records.jsonl");
    let records = json_lines(&records_path);
    assert_eq!(records.len(), 5);
    let first = records[0]["id"].as_str().expect("id");
    assert!(
        first.starts_with("synth-easy-3-"),
        "ids come from --id-field: {first}"
    );

    // Nothing already written is lost: a second run into the same directory is refused and the
    // records stay as they were.
    let written = std::fs::read(&records_path).expect("reads");
    let again = run_with(args, "again");
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(std::fs::read(&records_path).expect("reads"), written);
}

#[test]
fn shards_merge_into_the_whole_run() {
    let sim = Sim::start(&[]);
    let tmp = TempDir::new("shards");
    let mut dirs = Vec::new();
    for i in 0..3 {
        let dir = tmp
            .path(&format!("shard{i}"))
            .to_string_lossy()
            .into_owned();
        let shard = format!("{i}/3");
        let run = ponder(
            &[
                "eval",
                "--dataset",
                "synthetic-medium",
                "--limit",
                "30",
                "--set",
                "n=2",
                "--backend",
                &sim.url,
                "--model",
                "ponder-sim",
                "--shard",
                &shard,
                "--out",
                &dir,
            ],
            &tmp,
            &format!("shard{i}"),
        );
        succeeded(&run);
        dirs.push(dir);
    }
    let counts: Vec<usize> = dirs
        .iter()
        .map(|d| json_lines(&Path::new(d).join("records.jsonl")).len())
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 30, "{counts:?}");
    let html_out = tmp.path("merged.html").to_string_lossy().into_owned();
    let mut args = vec!["report", "--json", "--out", &html_out];
    args.extend(dirs.iter().map(String::as_str));
    let report = ponder(&args, &tmp, "report");
    succeeded(&report);
    let runs: serde_json::Value = serde_json::from_str(&report.stdout).expect("JSON");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "one merged run");
    assert_eq!(runs[0]["summary"]["problems"], 30);
    assert_eq!(runs[0]["notes"], serde_json::json!([]));
    assert!(std::fs::read_to_string(&html_out)
        .expect("html")
        .contains("<svg"));
}

#[test]
fn failed_problems_are_recorded_and_run_again_on_resume() {
    // A server that answers every generation with 500, and no retries: every problem fails.
    let broken = Sim::start(&["--error-rate", "1", "--error-status", "500"]);
    let tmp = TempDir::new("failed");
    let config = tmp.path("ponder.yaml");
    std::fs::write(&config, "backend:\n  max_retries: 0\n").expect("writes the config");
    let out = tmp.path("run").to_string_lossy().into_owned();
    let config_s = config.to_string_lossy().into_owned();
    let args = |url: &str| -> Vec<String> {
        [
            "eval",
            "--dataset",
            "synthetic-easy",
            "--limit",
            "10",
            "--set",
            "n=2",
            "--config",
            &config_s,
            "--backend",
            url,
            "--model",
            "ponder-sim",
            "--out",
            &out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = ponder(&args(&broken.url), &tmp, "broken");
    succeeded(&run);
    assert!(
        run.stderr.contains("failed on 10 problems"),
        "{}",
        run.stderr
    );
    let records_path = Path::new(&out).join("records.jsonl");
    let records = json_lines(&records_path);
    assert_eq!(records.len(), 10);
    assert!(records
        .iter()
        .all(|r| r["error"].is_string() && r["correct"] == false));
    let summary = read_json(&Path::new(&out).join("summary.json"));
    assert_eq!(
        (summary["failed"].as_u64(), summary["accuracy"].as_f64()),
        (Some(10), Some(0.0))
    );
    drop(broken);

    // Resumed against a healthy server (endpoints may change on resume): the failed problems
    // run again and replace their records.
    let healthy = Sim::start(&[]);
    let mut resume = args(&healthy.url);
    resume.push("--resume".into());
    let run = ponder(&resume, &tmp, "healthy");
    succeeded(&run);
    assert!(
        run.stderr
            .contains("10 problems that failed before will run again"),
        "{}",
        run.stderr
    );
    let records = json_lines(&records_path);
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r["error"].is_null()));
    let summary = read_json(&Path::new(&out).join("summary.json"));
    assert_eq!(summary["failed"], 0);
}
