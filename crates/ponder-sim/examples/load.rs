//! Drives many concurrent streams at a simulator and reports throughput.
//!
//! `cargo run --release -p ponder-sim --example load -- [BASE_URL] [STREAMS] [TOKENS]`
//! (defaults: an in-process simulator with `tpot_ms` 5, 1024 streams, 200 tokens each).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ponder_sim::{LatencyConfig, SimConfig};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let streams: usize = args.get(1).map_or(Ok(1024), |s| s.parse())?;
    let tokens: usize = args.get(2).map_or(Ok(200), |s| s.parse())?;
    let (base, sim) = match args.first().filter(|a| *a != "-") {
        Some(url) => (url.clone(), None),
        None => {
            let sim = ponder_sim::spawn(SimConfig {
                latency: LatencyConfig {
                    ttft_ms: 0,
                    tpot_ms: 5,
                    slots: 0,
                },
                ..Default::default()
            })
            .await?;
            (sim.base_url(), Some(sim))
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(streams)
        .timeout(Duration::from_secs(300))
        .build()?;
    let url = format!("{base}/completions");
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let body = json!({"prompt": format!("Story {i}"), "stream": true,
                                  "min_tokens": tokens, "max_tokens": tokens});
                let response = client.post(&url).json(&body).send().await?;
                let mut chunks = response.bytes_stream();
                let mut events = 0usize;
                while let Some(chunk) = chunks.next().await {
                    events += chunk?.windows(6).filter(|w| w == b"data: ").count();
                }
                Ok::<usize, reqwest::Error>(events)
            })
        })
        .collect();
    let mut events = 0;
    let mut failures = 0;
    for task in tasks {
        match task.await? {
            Ok(n) => events += n,
            Err(_) => failures += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{streams} streams x {tokens} tokens: {elapsed:.2} s, {:.0} events/s, {failures} failed",
        events as f64 / elapsed
    );
    if let Some(sim) = sim {
        println!("{}", serde_json::to_string(&sim.stats())?);
        sim.shutdown().await;
    }
    Ok(())
}
