//! End-to-end tests of the `ponder` binary against `ponder-sim` on a loopback port.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ponder_sim::{spawn, FaultConfig, SimConfig};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

/// A hard synthetic problem, so that the simulator answers in its step-structured mode.
fn synthetic_question(seed: u64) -> String {
    ponder_task::generate(seed, ponder_task::Difficulty::Hard, 1)[0]
        .question
        .clone()
}

/// Runs `ponder` with `args` off the async runtime (the simulator keeps serving meanwhile).
async fn ponder(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(PONDER);
        cmd.args(&args);
        for key in [
            "PONDER_BACKEND",
            "PONDER_MODEL",
            "PONDER_STRATEGY",
            "PONDER_SEED",
            "PONDER_CONFIG",
        ] {
            cmd.env_remove(key);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("ponder runs")
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "ponder failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solve_self_consistency_n8_json() {
    let sim = spawn(SimConfig::default()).await.expect("sim starts");
    let question = synthetic_question(1);
    let out = ponder(
        args(&[
            "solve",
            &question,
            "--backend",
            &sim.base_url(),
            "--model",
            "ponder-sim",
            "--strategy",
            "self-consistency",
            "--set",
            "n=8",
            "--json",
            "--seed",
            "11",
        ]),
        vec![],
    )
    .await;
    let v = stdout_json(&out);
    let candidates = v["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 8);
    assert!(v["answer"].is_string(), "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().expect("tokens") > 0);
    assert_eq!(v["seed"], 11);
    assert!(v["elapsed_ms"].is_u64());
    // The winner has the most votes among the candidates.
    let max_votes = candidates.iter().filter_map(|c| c["votes"].as_u64()).max();
    let winner_votes = candidates
        .iter()
        .find(|c| c["answer"] == v["answer"])
        .and_then(|c| c["votes"].as_u64());
    assert_eq!(winner_votes, max_votes);
    // Same seed, same answer and candidates.
    let again = stdout_json(
        &ponder(
            args(&[
                "solve",
                &question,
                "--backend",
                &sim.base_url(),
                "--model",
                "ponder-sim",
                "--set",
                "n=8",
                "--json",
                "--seed",
                "11",
            ]),
            vec![],
        )
        .await,
    );
    assert_eq!(again["candidates"], v["candidates"]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solve_survives_twenty_percent_503() {
    let sim = spawn(SimConfig {
        seed: 3,
        faults: FaultConfig {
            error_rate: 0.2,
            error_status: Some(503),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("sim starts");
    let question = synthetic_question(2);
    // Splitting n into single requests makes 8 independent draws of the fault.
    let config = write_temp(
        "split.yaml",
        "backend:\n  n_mode: split\n  backoff_base_ms: 1\n  backoff_max_ms: 20\n",
    );
    let out = ponder(
        args(&[
            "solve",
            &question,
            "--backend",
            &sim.base_url(),
            "--model",
            "ponder-sim",
            "--set",
            "n=8",
            "--json",
            "--config",
            config.to_str().expect("utf-8 path"),
        ]),
        vec![],
    )
    .await;
    let v = stdout_json(&out);
    assert_eq!(v["candidates"].as_array().map(Vec::len), Some(8));
    assert!(v["usage"]["completion_tokens"].as_u64().expect("tokens") > 0);
    let stats = sim.stats();
    assert!(
        stats.errors_injected > 0,
        "no fault was injected: {stats:?}"
    );
    assert_eq!(v["usage"]["retries"].as_u64(), Some(stats.errors_injected));
    sim.shutdown().await;
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_config_key_exits_2_and_names_the_path() {
    let config = write_temp(
        "typo.yaml",
        "backend:\n  endpoints: [\"http://127.0.0.1:9/v1\"]\n  model: m\n  max_retrys: 3\n",
    );
    let out = ponder(
        args(&[
            "solve",
            "q",
            "--config",
            config.to_str().expect("utf-8 path"),
        ]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("error:"), "{err}");
    assert!(err.contains("`backend.max_retrys`"), "{err}");
    assert!(err.contains("line 4"), "{err}");

    let config = write_temp("typo2.yaml", "params:\n  n: 4\nsead: 1\n");
    let out = ponder(
        args(&[
            "solve",
            "q",
            "--config",
            config.to_str().expect("utf-8 path"),
        ]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`sead`"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_strategy_lists_known_ones() {
    let out = ponder(
        args(&[
            "solve",
            "q",
            "--backend",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--strategy",
            "majority",
        ]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("unknown strategy `majority`"), "{err}");
    assert!(err.contains("self-consistency"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_parameter_is_named() {
    let out = ponder(
        args(&[
            "solve",
            "q",
            "--backend",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--set",
            "num_paths=4",
        ]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`num_paths`"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_fails_clearly_within_the_deadline() {
    // Bind and drop a listener so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = write_temp(
        "unreachable.yaml",
        "backend:\n  max_retries: 2\n  backoff_base_ms: 10\n  backoff_max_ms: 50\n  deadline_ms: 5000\n",
    );
    let started = Instant::now();
    let out = ponder(
        args(&[
            "solve",
            "q",
            "--backend",
            &format!("http://127.0.0.1:{port}/v1"),
            "--model",
            "m",
            "--config",
            config.to_str().expect("utf-8 path"),
        ]),
        vec![],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("hint: is the server running?"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_is_below_flags_and_above_the_file() {
    let sim = spawn(SimConfig::default()).await.expect("sim starts");
    let config = write_temp("env.yaml", "seed: 5\nparams:\n  n: 3\n");
    let base = sim.base_url();
    let env = vec![
        ("PONDER_BACKEND", base.clone()),
        ("PONDER_MODEL", "ponder-sim".to_string()),
        ("PONDER_SEED", "6".to_string()),
    ];
    // Seed: env (6) beats the file (5); n from the file.
    let v = stdout_json(
        &ponder(
            args(&[
                "solve",
                "What is 2+2?",
                "--json",
                "--config",
                config.to_str().expect("utf-8"),
            ]),
            env.clone(),
        )
        .await,
    );
    assert_eq!(v["seed"], 6);
    assert_eq!(v["candidates"].as_array().map(Vec::len), Some(3));
    // The flag (7) beats the environment; --set beats the file.
    let v = stdout_json(
        &ponder(
            args(&[
                "solve",
                "What is 2+2?",
                "--json",
                "--seed",
                "7",
                "--set",
                "n=2",
                "--config",
                config.to_str().expect("utf-8"),
            ]),
            env,
        )
        .await,
    );
    assert_eq!(v["seed"], 7);
    assert_eq!(v["candidates"].as_array().map(Vec::len), Some(2));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readable_summary_without_json() {
    let sim = spawn(SimConfig::default()).await.expect("sim starts");
    let out = ponder(
        args(&[
            "solve",
            &synthetic_question(4),
            "--backend",
            &sim.base_url(),
            "--model",
            "ponder-sim",
            "--set",
            "n=4",
        ]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("answer: "), "{text}");
    assert!(text.contains("candidates:"), "{text}");
    assert!(text.contains("usage: "), "{text}");
    assert!(
        stderr(&out).contains("self-consistency"),
        "progress goes to stderr"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_lists_parameters_and_capabilities() {
    let out = ponder(args(&["strategies", "--json"]), vec![]).await;
    let v = stdout_json(&out);
    let sc = v
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "self-consistency"))
        .expect("self-consistency is listed");
    let n = sc["params"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "n"))
        .expect("n is listed");
    assert_eq!(n["default"], "8");
    assert!(sc["requires"].is_array());
    let text = ponder(args(&["strategies"]), vec![]).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("temperature"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_generate_writes_seeded_jsonl() {
    let dir = std::env::temp_dir().join(format!("ponder-task-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let a = dir.join("a.jsonl");
    let b = dir.join("b.jsonl");
    // 25 hard problems of seed 7, with `extra` flags.
    let generate = |extra: &[&str]| {
        let mut list = args(&[
            "task",
            "generate",
            "--n",
            "25",
            "--seed",
            "7",
            "--difficulty",
            "hard",
        ]);
        list.extend(args(extra));
        ponder(list, vec![])
    };
    for path in [&a, &b] {
        let out = generate(&["--out", path.to_str().expect("utf-8")]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let text = std::fs::read_to_string(&a).expect("written");
    assert_eq!(text, std::fs::read_to_string(&b).expect("written"));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 25);
    assert_eq!(lines[0]["difficulty"], "hard");
    assert!(lines[0]["answer"].is_number());
    assert!(lines.iter().all(|l| l.get("worked_solution").is_none()));

    // `--worked`: the same records plus a worked solution that checks like the reference.
    let worked = generate(&["--worked", "3"]).await;
    assert!(worked.status.success(), "{}", stderr(&worked));
    let worked_text = String::from_utf8_lossy(&worked.stdout).into_owned();
    let problems = ponder_task::generate(7, ponder_task::Difficulty::Hard, 25);
    let mut work_lines = 0;
    for ((line, plain), problem) in worked_text.lines().zip(&lines).zip(&problems) {
        let mut record: serde_json::Value = serde_json::from_str(line).expect("JSON");
        let solution = record["worked_solution"]
            .as_str()
            .expect("a worked solution")
            .to_owned();
        let check = ponder_task::check_solution(problem, &solution);
        assert!(check.correct && check.all_steps_valid, "{solution}");
        work_lines += solution.lines().filter(|l| l.starts_with("Work:")).count();
        record
            .as_object_mut()
            .expect("object")
            .remove("worked_solution");
        assert_eq!(&record, plain);
    }
    assert!(
        work_lines > 25,
        "{work_lines} work lines in 25 hard problems"
    );
    let bad = ponder(
        args(&["task", "generate", "--difficulty", "extreme"]),
        vec![],
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
}

/// The real binaries as separate processes: `ponder-sim` started from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sim_process_end_to_end() {
    let sim_bin = PathBuf::from(PONDER).with_file_name("ponder-sim");
    assert!(
        sim_bin.exists(),
        "ponder-sim is built next to ponder: {}",
        sim_bin.display()
    );
    let mut child = std::process::Command::new(&sim_bin)
        .args(["--port", "0", "--seed", "9"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ponder-sim starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .expect("join")
    .expect("reads the banner");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("banner names the URL")
        .to_string();
    let out = ponder(
        args(&[
            "solve",
            &synthetic_question(5),
            "--backend",
            &url,
            "--model",
            "ponder-sim",
            "--set",
            "n=8",
            "--json",
        ]),
        vec![],
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let v = stdout_json(&out);
    assert_eq!(v["candidates"].as_array().map(Vec::len), Some(8));
}

/// A reader that goes away (`ponder … | head`) ends the output quietly: no panic, exit 0.
#[test]
fn a_closed_stdout_is_not_a_crash() {
    for args in [
        &["task", "generate", "--n", "5000", "--seed", "1"][..],
        &["strategies", "--json"][..],
    ] {
        let mut child = Command::new(PONDER)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ponder starts");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("ponder ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
