//! Load on `ponder serve` in front of `ponder-sim`, both as processes, from many concurrent
//! clients.
//!
//! ```text
//! cargo build --release -p ponder-cli -p ponder-sim
//! cargo run --release -p ponder-server --example serve_load -- [--clients 500] [--rounds 20]
//!     [--ttft-ms 20] [--tpot-ms 1] [--max-tokens 16] [--capacity 250]
//! ```
//!
//! `ponder serve` gets `backend.max_concurrency` of 4 × clients, so that the upstream
//! connection bound (default 256) is not what is measured.
//!
//! 1. Pass-through: every client sends `--rounds` chat requests one after another, first
//!    straight to the simulator, then through `ponder serve`; reports throughput and the p50/p99
//!    latency through Ponder minus the same percentile straight to the simulator, and the peak
//!    resident memory of the `ponder serve` process (`VmHWM`).
//! 2. Admission: a second `ponder serve` with `--max-concurrent CAPACITY` (default: half the
//!    clients, i.e. 2× over capacity) gets `--rounds` waves in which every client sends one
//!    self-consistency request (n=2) at the same moment; reports the share of 429 answers and
//!    any other error.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Options {
    clients: usize,
    rounds: usize,
    ttft_ms: u64,
    tpot_ms: u64,
    max_tokens: u32,
    capacity: Option<usize>,
    bin_dir: PathBuf,
}

fn options() -> Result<Options, String> {
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.to_path_buf()))
        .ok_or("cannot locate the target directory")?;
    let mut o = Options {
        clients: 500,
        rounds: 20,
        ttft_ms: 20,
        tpot_ms: 1,
        max_tokens: 16,
        capacity: None,
        bin_dir,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let bad = |e: std::num::ParseIntError| e.to_string();
        match flag.as_str() {
            "--clients" => o.clients = value()?.parse().map_err(bad)?,
            "--rounds" => o.rounds = value()?.parse().map_err(bad)?,
            "--ttft-ms" => o.ttft_ms = value()?.parse().map_err(bad)?,
            "--tpot-ms" => o.tpot_ms = value()?.parse().map_err(bad)?,
            "--max-tokens" => o.max_tokens = value()?.parse().map_err(bad)?,
            "--capacity" => o.capacity = Some(value()?.parse().map_err(bad)?),
            "--bin-dir" => o.bin_dir = PathBuf::from(value()?),
            _ => {}
        }
    }
    Ok(o)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program args…` and returns it with the URL its first stdout line ends with.
fn start(program: PathBuf, args: &[String]) -> Result<(Proc, String), String> {
    let mut child = Command::new(&program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove("PONDER_SERVER_TOKEN")
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (build it with --release)",
                program.display()
            )
        })?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let url = line
        .split_whitespace()
        .last()
        .ok_or(format!("unexpected first line {line:?}"))?
        .to_string();
    Ok((proc, url))
}

/// Peak resident memory of process `pid` in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/PID/stat` (clock ticks of
/// 1/100 s, Linux's `USER_HZ`).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of the line, utime 14 and stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Run {
    latencies_ms: Vec<f64>,
    errors: usize,
    wall: Duration,
}

/// `clients` tasks, each sending `rounds` requests one after another.
async fn closed_loop(client: &reqwest::Client, url: &str, body: &Value, o: &Options) -> Run {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(o.clients);
    for _ in 0..o.clients {
        let client = client.clone();
        let url = url.to_string();
        let body = body.clone();
        let rounds = o.rounds;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(rounds);
            let mut errors = 0;
            for _ in 0..rounds {
                let t = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        if r.bytes().await.is_ok() {
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        } else {
                            errors += 1;
                        }
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut run = Run {
        latencies_ms: Vec::new(),
        errors: 0,
        wall: Duration::ZERO,
    };
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            run.latencies_ms.extend(lat);
            run.errors += errors;
        }
    }
    run.wall = started.elapsed();
    run.latencies_ms.sort_by(f64::total_cmp);
    run
}

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

async fn real_main() -> Result<(), String> {
    let o = options()?;
    let sim_bin = o.bin_dir.join("ponder-sim");
    let ponder_bin = o.bin_dir.join("ponder");
    let (_sim, sim_url) = start(
        sim_bin,
        &[
            "--port".into(),
            "0".into(),
            "--ttft-ms".into(),
            o.ttft_ms.to_string(),
            "--tpot-ms".into(),
            o.tpot_ms.to_string(),
        ],
    )?;
    // The upstream backend's own bound (`backend.max_concurrency`, default 256) must not be
    // what limits the pass-through run.
    let config = std::env::temp_dir().join(format!("ponder-load-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "backend:\n  max_concurrency: {}\n",
            (o.clients * 4).max(256)
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let config_path = config.display().to_string();
    let serve_args = |capacity: usize| -> Vec<String> {
        [
            "serve",
            "--config",
            &config_path,
            "--queue",
            "32",
            "--port",
            "0",
            "--upstream",
            &sim_url,
            "--model",
            "ponder-sim",
            "--max-concurrent",
            &capacity.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (serve, serve_url) = start(ponder_bin.clone(), &serve_args(o.clients.max(1)))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.clients * 2)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let body = json!({
        "model": "ponder-sim",
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": o.max_tokens,
        "seed": 1,
    });
    println!(
        "{} clients × {} requests, max_tokens {}, sim ttft {} ms tpot {} ms",
        o.clients, o.rounds, o.max_tokens, o.ttft_ms, o.tpot_ms
    );
    // Warm both paths' connection pools.
    let warm = Options {
        rounds: 1,
        capacity: None,
        bin_dir: o.bin_dir.clone(),
        ..o
    };
    closed_loop(
        &client,
        &format!("{sim_url}/chat/completions"),
        &body,
        &warm,
    )
    .await;
    closed_loop(
        &client,
        &format!("{serve_url}/chat/completions"),
        &body,
        &warm,
    )
    .await;

    let direct = closed_loop(&client, &format!("{sim_url}/chat/completions"), &body, &o).await;
    let cpu_before = cpu_seconds(serve.0.id());
    let through = closed_loop(&client, &format!("{serve_url}/chat/completions"), &body, &o).await;
    let cpu = cpu_seconds(serve.0.id())
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let rss = peak_rss_mib(serve.0.id());
    for (name, run) in [
        ("direct to ponder-sim", &direct),
        ("through ponder serve", &through),
    ] {
        println!(
            "{name:<22} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
            run.latencies_ms.len() as f64 / run.wall.as_secs_f64(),
            percentile(&run.latencies_ms, 50.0),
            percentile(&run.latencies_ms, 99.0),
            run.errors
        );
    }
    println!(
        "added by ponder serve: p50 {:+.2} ms, p99 {:+.2} ms; peak RSS of ponder serve {} MiB; its CPU {} µs per request",
        percentile(&through.latencies_ms, 50.0) - percentile(&direct.latencies_ms, 50.0),
        percentile(&through.latencies_ms, 99.0) - percentile(&direct.latencies_ms, 99.0),
        rss.map_or("n/a".to_string(), |r| format!("{r:.1}")),
        cpu.map_or("n/a".to_string(), |c| format!(
            "{:.0}",
            c * 1e6 / through.latencies_ms.len().max(1) as f64
        ))
    );
    drop(serve);

    // Admission at 2× capacity.
    let capacity = o.capacity.unwrap_or((o.clients / 2).max(1));
    let (_gated, gated_url) = start(ponder_bin, &serve_args(capacity))?;
    let strategy_body = json!({
        "model": "ponder-sim",
        "messages": [{"role": "user", "content": "Say something."}],
        "ponder": {"strategy": "self-consistency", "n": 2, "max_tokens": o.max_tokens},
    });
    let url = format!("{gated_url}/chat/completions");
    let (mut ok, mut rejected, mut other) = (0usize, 0usize, 0usize);
    for _ in 0..o.rounds {
        let barrier = Arc::new(tokio::sync::Barrier::new(o.clients));
        let mut tasks = Vec::with_capacity(o.clients);
        for _ in 0..o.clients {
            let (client, url, body, barrier) = (
                client.clone(),
                url.clone(),
                strategy_body.clone(),
                barrier.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                match client.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let retry_after = r.headers().contains_key("retry-after");
                        let _ = r.bytes().await;
                        (status, retry_after)
                    }
                    Err(_) => (0, false),
                }
            }));
        }
        for t in tasks {
            match t.await {
                Ok((200, _)) => ok += 1,
                Ok((429, true)) => rejected += 1,
                _ => other += 1,
            }
        }
    }
    let total = ok + rejected + other;
    println!(
        "2× capacity ({} clients, --max-concurrent {capacity}, queue 32): {ok} ok, {rejected} 429 with Retry-After ({:.1}%), {other} other errors",
        o.clients,
        100.0 * rejected as f64 / total.max(1) as f64
    );
    let _ = std::fs::remove_file(&config);
    Ok(())
}
