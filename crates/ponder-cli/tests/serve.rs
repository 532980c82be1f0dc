//! `ponder serve` as a process: the config file's `server:` section, start-up refusals, and
//! the printed address.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PONDER: &str = env!("CARGO_BIN_EXE_ponder");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(PONDER);
    cmd.arg("serve").args(args);
    for key in [
        "PONDER_BACKEND",
        "PONDER_MODEL",
        "PONDER_CONFIG",
        "PONDER_SERVER_TOKEN",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

/// Runs a `ponder serve` that is expected to exit at once; kills it after 20 s otherwise.
fn run_to_exit(args: &[&str]) -> Output {
    let child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ponder runs");
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("ponder serve did not exit");
        }
    }
}

fn write_config(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("c{}.yaml", text.len()));
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn refuses_a_public_address_without_a_token() {
    let out = run_to_exit(&[
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--upstream",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
}

#[test]
fn unknown_server_key_is_named() {
    let path = write_config("server:\n  limits:\n    max_concurent: 4\n");
    let out = run_to_exit(&[
        "--port",
        "0",
        "--upstream",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--config",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("key `server.limits.max_concurent`"),
        "{stderr}"
    );
}

#[test]
fn an_alias_with_a_bad_parameter_stops_start_up() {
    let path = write_config(
        "server:\n  aliases:\n    sc:\n      strategy: self-consistency\n      params: {nn: 3}\n",
    );
    let out = run_to_exit(&[
        "--port",
        "0",
        "--upstream",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--config",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.aliases.sc") && stderr.contains("nn"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_aliases_and_limits_are_served() {
    let sim = ponder_sim::spawn(ponder_sim::SimConfig::default())
        .await
        .expect("sim starts");
    let path = write_config(
        "server:\n  aliases:\n    math-sc3:\n      strategy: self-consistency\n      params: {n: 3}\n  limits:\n    max_n: 4\n",
    );
    let upstream = sim.base_url();
    let (serve, url) = tokio::task::spawn_blocking(move || {
        let mut child = Killed(
            command(&[
                "--port",
                "0",
                "--upstream",
                &upstream,
                "--model",
                "ponder-sim",
                "--config",
                path.to_str().expect("utf-8"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ponder serve starts"),
        );
        let stdout = child.0.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("address printed");
        let url = line
            .trim()
            .strip_prefix("ponder serve listening on http://127.0.0.1:")
            .map(|rest| format!("http://127.0.0.1:{rest}"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        (child, url)
    })
    .await
    .expect("join");
    assert!(url.ends_with("/v1"), "{url}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let question = ponder_task::generate(3, ponder_task::Difficulty::Hard, 1)[0]
        .question
        .clone();
    let r = client
        .post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "model": "math-sc3",
                "messages": [{"role": "user", "content": question}],
                "ponder": {"details": true},
            })
            .to_string(),
        )
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(
        v["ponder"]["candidates"].as_array().map(Vec::len),
        Some(3),
        "{v}"
    );
    // The limit from the file: n above 4 is refused, naming the parameter.
    let r = client
        .post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "model": "math-sc3",
                "messages": [{"role": "user", "content": question}],
                "ponder": {"n": 5},
            })
            .to_string(),
        )
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["error"]["param"], "ponder.n");
    drop(serve);
}
