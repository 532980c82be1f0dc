//! Shared set-up: `ponder-sim` in-process as the upstream, `ponder-server` in front of it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ponder_core::Backend;
use ponder_openai::{OpenAiBackend, OpenAiConfig};
use ponder_server::{ServerConfig, ServerHandle};
use ponder_sim::{SimConfig, SimHandle, SimStats};
use serde_json::Value;

pub struct Setup {
    pub sim: SimHandle,
    pub server: ServerHandle,
    pub client: reqwest::Client,
}

/// The model name the upstream is known by.
pub const MODEL: &str = "ponder-sim";

pub async fn setup(sim: SimConfig, config: ServerConfig, token: Option<&str>) -> Setup {
    let sim = ponder_sim::spawn(sim).await.expect("sim starts");
    let mut upstream = OpenAiConfig::new(vec![sim.base_url()], MODEL);
    upstream.max_retries = 0;
    let backend: Arc<dyn Backend> =
        Arc::new(OpenAiBackend::with_api_key(upstream, None).expect("backend"));
    let server = ponder_server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        backend,
        MODEL.to_string(),
        config,
        token.map(str::to_string),
    )
    .await
    .expect("server starts");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    Setup {
        sim,
        server,
        client,
    }
}

impl Setup {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// POSTs `body` to `path` (under `/v1`) and returns the status, headers and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request is answered");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, json)
    }

    /// POSTs a streaming request and returns the status and the raw SSE text.
    pub async fn post_sse(&self, path: &str, body: Value) -> (u16, String) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request is answered");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }
}

/// The JSON payloads of `data:` lines, `[DONE]` excluded.
pub fn sse_data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("each data line is JSON"))
        .collect()
}

/// A hard synthetic problem, so that the simulator answers in its step-structured mode.
pub fn question(seed: u64) -> String {
    ponder_task::generate(seed, ponder_task::Difficulty::Hard, 1)[0]
        .question
        .clone()
}

/// Waits (at most `limit`) until `check` holds on the simulator's counters.
pub async fn wait_for_stats(
    sim: &SimHandle,
    limit: Duration,
    check: impl Fn(&SimStats) -> bool,
) -> SimStats {
    let start = Instant::now();
    loop {
        let stats = sim.stats();
        if check(&stats) || start.elapsed() > limit {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
