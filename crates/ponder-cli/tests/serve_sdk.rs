//! `ponder serve` as a process in front of an in-process `ponder-sim`, driven by the official
//! `openai` Python SDK (`tests/python/sdk_check.py`; CI installs the SDK).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");
const TOKEN: &str = "sdk-test-token";

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ponder serve` and returns it with the base URL it printed.
fn start_serve(upstream: &str) -> (Killed, String) {
    let mut cmd = Command::new(PONDER);
    cmd.args([
        "serve",
        "--port",
        "0",
        "--upstream",
        upstream,
        "--model",
        "ponder-sim",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for key in [
        "PONDER_BACKEND",
        "PONDER_MODEL",
        "PONDER_CONFIG",
        "PONDER_API_KEY",
    ] {
        cmd.env_remove(key);
    }
    cmd.env(ponder_server::TOKEN_ENV, TOKEN);
    let mut child = Killed(cmd.spawn().expect("ponder serve starts"));
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("ponder serve prints its address within 20 s");
    let url = line
        .trim()
        .strip_prefix("ponder serve listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, url)
}

/// Runs `python3 args…`, killing it after `limit`.
fn python(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new("python3")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_gets_usage_of_all_self_consistency_samples() {
    let sim = ponder_sim::spawn(ponder_sim::SimConfig::default())
        .await
        .expect("sim starts");
    let upstream = sim.base_url();
    let question = ponder_task::generate(21, ponder_task::Difficulty::Hard, 1)[0]
        .question
        .clone();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_check.py");
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let (_serve, url) = start_serve(&upstream);
        python(
            &[script, &url, TOKEN, "ponder-sim", &question],
            Duration::from_secs(120),
        )
    })
    .await
    .expect("join");
    assert!(ok, "the SDK script failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("the script prints one JSON line");
    let first = report["completion_tokens"].as_u64().expect("tokens");
    let streamed = report["stream_completion_tokens"].as_u64().expect("tokens");
    // The two runs (same seed) are all the simulator generated: usage covers every sample.
    let stats = sim.stats();
    assert!(first > 0);
    assert_eq!(first, streamed);
    assert_eq!(stats.tokens_generated, first + streamed, "{stats:?}");
    assert_eq!(stats.streams_aborted, 0);
}
