//! Self-consistency under load: many problems at once, every sample a stream, against a
//! `ponder-sim` *process* with a latency model, so the client's CPU and memory are measured
//! apart from the server's.
//!
//! ```text
//! cargo build --release -p ponder-sim
//! cargo bench -p ponder-cli --bench sc_load -- [--problems 200] [--n 64] [--concurrency 1024]
//!     [--ttft-ms 100] [--tpot-ms 20] [--slots 1024] [--difficulty hard] [--seed 7] [--sim URL]
//! ```
//!
//! Without `--sim`, the bench starts `target/release/ponder-sim` itself with the latency flags.
//! It reports wall time against the latency-bound limit — the sum over requests of
//! `ttft + (tokens − 1) · tpot`, divided by the slots, or the longest single request if that is
//! longer — and the client's CPU seconds per million
//! generated tokens and peak resident memory, read from `/proc/self`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ponder_core::{run_strategy, Backend, Message, Params, StrategyInput};
use ponder_openai::{NMode, OpenAiBackend, OpenAiConfig};
use ponder_strategies::Registry;
use ponder_task::Difficulty;

struct Options {
    problems: usize,
    n: u32,
    concurrency: usize,
    ttft_ms: u64,
    tpot_ms: u64,
    slots: usize,
    difficulty: Difficulty,
    seed: u64,
    sim: Option<String>,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut o = Options {
        problems: 200,
        n: 64,
        concurrency: 1024,
        ttft_ms: 100,
        tpot_ms: 20,
        slots: 1024,
        difficulty: Difficulty::Hard,
        seed: 7,
        sim: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` passes `--bench`; ignore it and anything else that is not ours.
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--problems" => o.problems = value()?.parse()?,
            "--n" => o.n = value()?.parse()?,
            "--concurrency" => o.concurrency = value()?.parse()?,
            "--ttft-ms" => o.ttft_ms = value()?.parse()?,
            "--tpot-ms" => o.tpot_ms = value()?.parse()?,
            "--slots" => o.slots = value()?.parse()?,
            "--difficulty" => o.difficulty = value()?.parse()?,
            "--seed" => o.seed = value()?.parse()?,
            "--sim" => o.sim = Some(value()?),
            _ => {}
        }
    }
    Ok(o)
}

/// Client CPU time (user + system) of this process, from `/proc/self/stat` (clock ticks of
/// 1/100 s, Linux's `USER_HZ`).
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("odd /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

/// Peak resident set size of this process in MiB (`VmHWM`).
fn peak_rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("odd VmHWM")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// The simulator process, killed on drop.
struct SimProcess(Child);

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sim(o: &Options) -> anyhow::Result<(String, SimProcess)> {
    let exe = std::env::current_exe()?;
    // target/release/deps/sc_load-HASH → target/release/ponder-sim
    let bin: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("odd bench path")?
        .join("ponder-sim");
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p ponder-sim` first, or pass --sim URL",
            bin.display()
        );
    }
    let mut child = Command::new(&bin)
        .args([
            "--port",
            "0",
            "--seed",
            &o.seed.to_string(),
            "--ttft-ms",
            &o.ttft_ms.to_string(),
            "--tpot-ms",
            &o.tpot_ms.to_string(),
            "--slots",
            &o.slots.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let process = SimProcess(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .with_context(|| format!("unexpected banner {line:?}"))?
        .to_string();
    Ok((url, process))
}

async fn sim_stats(base_url: &str) -> anyhow::Result<serde_json::Value> {
    let root = base_url.trim_end_matches("/v1");
    let body = reqwest::get(format!("{root}/stats")).await?.bytes().await?;
    Ok(serde_json::from_slice(&body)?)
}

fn counter(stats: &serde_json::Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let o = parse_options()?;
    let (url, _sim) = match &o.sim {
        Some(url) => (url.clone(), None),
        None => {
            let (url, p) = start_sim(&o)?;
            (url, Some(p))
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&o, &url))
}

async fn run(o: &Options, url: &str) -> anyhow::Result<()> {
    let mut config = OpenAiConfig::new(vec![url.to_string()], "ponder-sim");
    config.api_key_env = None;
    config.max_concurrency = o.concurrency;
    config.n_mode = NMode::Split;
    config.request_timeout_ms = 600_000;
    let backend: Arc<dyn Backend> = Arc::new(OpenAiBackend::new(config)?);
    let mut params = Params::new();
    params.insert("n".into(), serde_json::json!(o.n));
    let strategy = Registry::builtin().get("self-consistency")?.build(
        &params,
        backend.name(),
        &backend.capabilities(),
    )?;
    let strategy: Arc<dyn ponder_core::Strategy> = strategy;
    let problems = ponder_task::generate(o.seed, o.difficulty, o.problems);

    let before = sim_stats(url).await?;
    let cpu_before = cpu_seconds()?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, problem) in problems.iter().enumerate() {
        let strategy = Arc::clone(&strategy);
        let backend = Arc::clone(&backend);
        let input = StrategyInput {
            messages: vec![Message::user(problem.prompt())],
            seed: o
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(i as u64 * 1_000),
        };
        let gold = problem.answer.to_string();
        tasks.spawn(async move {
            let result = run_strategy(strategy.as_ref(), backend, &input).await;
            (gold, result)
        });
    }
    let (mut correct, mut failed, mut completion_tokens, mut requests, mut retries) =
        (0usize, 0usize, 0u64, 0u64, 0u64);
    let mut longest_tokens = 0u64;
    while let Some(joined) = tasks.join_next().await {
        let (gold, result) = joined?;
        match result {
            Ok(r) => {
                completion_tokens += r.cost.completion_tokens;
                requests += r.cost.requests;
                retries += r.cost.retries;
                let longest = r
                    .outcome
                    .candidates
                    .iter()
                    .filter_map(|c| c.completion_tokens);
                longest_tokens = longest_tokens.max(longest.max().unwrap_or(0));
                if r.outcome.answer.as_deref() == Some(gold.as_str()) {
                    correct += 1;
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("a run failed: {e:#}");
            }
        }
    }
    let wall = started.elapsed();
    let cpu = cpu_seconds()? - cpu_before;
    let after = sim_stats(url).await?;

    let sim_requests = counter(&after, "requests") - counter(&before, "requests");
    let sim_tokens = counter(&after, "tokens_generated") - counter(&before, "tokens_generated");
    let slots = o.slots.max(1) as f64;
    // Sum over requests of ttft + (tokens − 1)·tpot, spread over the slots.
    let service_ms = sim_requests as f64 * o.ttft_ms as f64
        + sim_tokens.saturating_sub(sim_requests) as f64 * o.tpot_ms as f64;
    // No schedule beats the longest single request either.
    let longest_ms = o.ttft_ms as f64 + longest_tokens.saturating_sub(1) as f64 * o.tpot_ms as f64;
    let bound = Duration::from_secs_f64((service_ms / slots).max(longest_ms) / 1000.0);
    let mean_latency_ms = service_ms / sim_requests.max(1) as f64;

    println!("self-consistency load benchmark");
    println!(
        "  problems {} ({}), n {}, client concurrency {}, seed {}",
        o.problems,
        o.difficulty.as_str(),
        o.n,
        o.concurrency,
        o.seed
    );
    println!(
        "  simulator: ttft {} ms, tpot {} ms, {} slots; peak active {}",
        o.ttft_ms,
        o.tpot_ms,
        o.slots,
        counter(&after, "active_peak")
    );
    println!(
        "  requests {requests} (server saw {sim_requests}, retries {retries}), failed runs {failed}"
    );
    println!(
        "  completion tokens {completion_tokens} (server generated {sim_tokens}), mean request latency {mean_latency_ms:.0} ms"
    );
    println!(
        "  accuracy {correct}/{} = {:.1}%",
        o.problems,
        100.0 * correct as f64 / o.problems.max(1) as f64
    );
    println!(
        "  wall {:.2} s; latency-bound limit {:.2} s = max(requests × mean latency ÷ slots {:.2} s, longest request {:.2} s); ratio {:.3}",
        wall.as_secs_f64(),
        bound.as_secs_f64(),
        service_ms / slots / 1000.0,
        longest_ms / 1000.0,
        wall.as_secs_f64() / bound.as_secs_f64().max(1e-9)
    );
    println!(
        "  client CPU {cpu:.2} s = {:.2} CPU s per million generated tokens ({:.0} tokens per CPU second)",
        cpu / (completion_tokens.max(1) as f64 / 1e6),
        completion_tokens as f64 / cpu.max(1e-9)
    );
    println!("  client peak RSS {:.1} MiB", peak_rss_mib()?);
    Ok(())
}
