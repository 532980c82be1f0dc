//! Helpers shared by the integration tests: start a simulator, post JSON, read SSE.

#![allow(dead_code)]

use std::time::Duration;

use ponder_sim::{SimConfig, SimHandle};
use serde_json::Value;

pub async fn start(config: SimConfig) -> SimHandle {
    ponder_sim::spawn(config)
        .await
        .expect("the simulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

/// POSTs `body` to `url`; the status and the raw body text.
pub async fn post_raw(client: &reqwest::Client, url: &str, body: &Value) -> (u16, String) {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body read"))
}

/// POSTs `body` and parses the JSON answer.
pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let (status, text) = post_raw(client, url, body).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"));
    (status, value)
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .collect()
}

/// The JSON chunks of an SSE body (everything but `[DONE]`), and whether it ended with `[DONE]`.
pub fn sse_chunks(body: &str) -> (Vec<Value>, bool) {
    let data = sse_data(body);
    let done = data.last() == Some(&"[DONE]");
    let chunks = data
        .iter()
        .filter(|d| **d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad chunk ({e}): {d}")))
        .collect();
    (chunks, done)
}

/// The streamed text of each choice (chat `delta.content` or completions `text`), and each
/// choice's finish reason.
pub fn stream_texts(chunks: &[Value], n: usize) -> (Vec<String>, Vec<Option<String>>) {
    let mut texts = vec![String::new(); n];
    let mut finish = vec![None; n];
    for chunk in chunks {
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let i = choice["index"].as_u64().expect("an index") as usize;
            if let Some(t) = choice["delta"]["content"].as_str() {
                texts[i].push_str(t);
            }
            if let Some(t) = choice["text"].as_str() {
                texts[i].push_str(t);
            }
            if let Some(r) = choice["finish_reason"].as_str() {
                assert!(finish[i].is_none(), "choice {i} finished twice");
                finish[i] = Some(r.to_string());
            }
        }
    }
    (texts, finish)
}

/// The chat message text of choice `i` of a non-streaming response.
pub fn message(response: &Value, i: usize) -> String {
    response["choices"][i]["message"]["content"]
        .as_str()
        .expect("message content")
        .to_string()
}

/// Polls `GET /stats` until `done` holds or `limit` passes; the last stats.
pub async fn wait_for_stats(
    client: &reqwest::Client,
    sim: &SimHandle,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let url = format!("http://{}/stats", sim.addr());
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let stats: Value = client
            .get(&url)
            .send()
            .await
            .expect("stats request")
            .json()
            .await
            .expect("stats JSON");
        if done(&stats) || tokio::time::Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
