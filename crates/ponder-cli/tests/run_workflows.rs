//! `ponder run`: every example workflow in `examples/agents/` against `ponder-sim` on a loopback
//! port, the HTTP-tool example against a small HTTP server started here, and build errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ponder_sim::{spawn, SimConfig};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents")
}

async fn ponder(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(PONDER);
        cmd.args(&args);
        for key in [
            "PONDER_BACKEND",
            "PONDER_SEED",
            "PONDER_CONFIG",
            "PONDER_MODEL",
        ] {
            cmd.env_remove(key);
        }
        cmd.output().expect("ponder runs")
    })
    .await
    .expect("join")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "ponder failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn run_args(file: &Path, backend: &str, input: &str) -> Vec<String> {
    vec![
        "run".into(),
        file.display().to_string(),
        "--backend".into(),
        backend.into(),
        "--input".into(),
        input.into(),
        "--json".into(),
    ]
}

/// The stages (`stage` names) of a `--json` report's summary, in order.
fn stages(report: &serde_json::Value) -> Vec<String> {
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["stage"].as_str().expect("stage").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_select_execute_example_returns_an_answer_with_all_four_stages() {
    let sim = spawn(SimConfig::default()).await.expect("sim starts");
    let trace = std::env::temp_dir().join(format!("ponder-run-trace-{}.json", std::process::id()));
    let mut args = run_args(
        &examples().join("plan_select_execute.yaml"),
        &sim.base_url(),
        "Plan a three-day trip to Lisbon on a small budget",
    );
    args.extend(["--trace".to_string(), trace.display().to_string()]);
    let report = json_of(&ponder(args).await);
    assert!(!report["output"].as_str().expect("text answer").is_empty());
    assert_eq!(
        stages(&report),
        ["search", "editing", "scoring", "selection"]
    );
    let trace_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).expect("trace written"))
            .expect("json");
    let records = trace_file.as_array().expect("records");
    assert_eq!(records.len(), 4);
    // Plans were parsed from ponder-sim's `PLAN:` replies; every plan was scored.
    let scored = &records[2]["items_out"];
    assert!(
        scored
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["score"].is_number()),
        "{scored}"
    );
    assert_eq!(records[0]["fallbacks"], 0);
    assert_eq!(records[3]["items_out"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["seed"], 7);
    std::fs::remove_file(&trace).ok();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sim_example_runs() {
    let sim = spawn(SimConfig::default()).await.expect("sim starts");
    let cases: [(&str, &[&str]); 4] = [
        ("execute_score_select.yaml", &["scoring", "selection"]),
        ("multi_llm_judge.yaml", &["search", "selection"]),
        (
            "plan_refine_merge.yaml",
            &["search", "editing", "selection"],
        ),
        ("plan_select_llm.yaml", &["search", "scoring", "selection"]),
    ];
    for (file, want) in cases {
        let report = json_of(
            &ponder(run_args(
                &examples().join(file),
                &sim.base_url(),
                "Organise a small team offsite",
            ))
            .await,
        );
        assert!(
            !report["output"].as_str().expect("text").is_empty(),
            "{file}"
        );
        assert_eq!(stages(&report), want, "{file}");
        assert!(report["usage"]["llm_calls"].as_u64().expect("calls") > 0);
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_streams_and_runs_are_reproducible() {
    let sim = spawn(SimConfig::default()).await.expect("sim starts");
    let file = examples().join("plan_select_execute.yaml");
    let args = vec![
        "run".to_string(),
        file.display().to_string(),
        "--backend".into(),
        sim.base_url(),
        "--input".into(),
        "Plan a picnic".into(),
    ];
    let a = ponder(args.clone()).await;
    let b = ponder(args).await;
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout, "same seed, same answer");
    assert!(String::from_utf8_lossy(&a.stderr).contains("4 stages"));
    sim.shutdown().await;
}

/// A tiny HTTP server answering every POST with `{"passages": [<the body>]}`.
fn tool_server(calls: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            calls.fetch_add(1, Ordering::SeqCst);
            let query: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let reply = serde_json::json!({ "passages": [format!("Rotate keys in the settings page ({query})")] })
                .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    format!("http://{addr}/search")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tool_example_runs_against_a_local_tool() {
    let sim = spawn(SimConfig::default()).await.expect("sim starts");
    let calls = Arc::new(AtomicUsize::new(0));
    let url = tool_server(calls.clone());
    let text =
        std::fs::read_to_string(examples().join("tool_orchestration_http.yaml")).expect("example");
    assert!(text.contains("http://127.0.0.1:8787/search"));
    let file = std::env::temp_dir().join(format!("ponder-run-http-{}.yaml", std::process::id()));
    std::fs::write(&file, text.replace("http://127.0.0.1:8787/search", &url)).expect("writes");
    let input = r#"{"tools": [{"tool_name": "doc_search", "task_description": "how do I rotate API keys", "motivation": "the user was locked out"}]}"#;
    let mut args = run_args(&file, &sim.base_url(), input);
    args.push("--input-json".into());
    let report = json_of(&ponder(args).await);
    assert_eq!(
        stages(&report),
        ["search", "editing", "scoring", "selection"]
    );
    // The original task plus one rewrite were sent to the tool (unless the rewrite repeated it).
    assert!(calls.load(Ordering::SeqCst) >= 1);
    let tools = report["output"]["tools"].as_array().expect("tools");
    assert!(!tools.is_empty(), "min_keep keeps at least one result");
    assert_eq!(tools[0]["tool_name"], "doc_search");
    let search_out = &report["trace"][0]["items_out"];
    assert!(
        search_out.as_array().expect("items").len() >= 2,
        "{search_out}"
    );
    std::fs::remove_file(&file).ok();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_strategy_in_a_scoring_slot_fails_at_build_time() {
    let text =
        std::fs::read_to_string(examples().join("plan_select_execute.yaml")).expect("example");
    let file = std::env::temp_dir().join(format!("ponder-run-wrong-{}.yaml", std::process::id()));
    std::fs::write(&file, text.replace("  scorer: rate", "  scorer: keep_best")).expect("writes");
    // No server is needed: the error comes before any call.
    let out = ponder(run_args(&file, "http://127.0.0.1:9/v1", "x")).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`workflow.scorer` (line 36): strategy `keep_best` (best_of_n_selection) is a selection strategy, but this slot takes a scoring strategy"),
        "{err}"
    );
    std::fs::remove_file(&file).ok();
}
