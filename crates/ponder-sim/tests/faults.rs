//! Injected faults, the latency model, slots, and client disconnects.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use ponder_sim::{FaultConfig, LatencyConfig, SimConfig};
use serde_json::{json, Value};

fn chat(content: &str) -> Value {
    json!({"messages": [{"role": "user", "content": content}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_one_with_a_status_answers_that_status() {
    let sim = start(SimConfig {
        faults: FaultConfig {
            error_rate: 1.0,
            error_status: Some(503),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let c = client();
    for path in ["chat/completions", "completions"] {
        let body = if path == "completions" {
            json!({"prompt": "x"})
        } else {
            chat("x")
        };
        let (status, v) = post(&c, &format!("{}/{path}", sim.base_url()), &body).await;
        assert_eq!(status, 503);
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
    }
    assert_eq!(sim.stats().errors_injected, 2);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_errors_include_429_with_retry_after_and_retries_can_succeed() {
    let sim = start(SimConfig {
        seed: 4,
        faults: FaultConfig {
            error_rate: 0.5,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let response = c
            .post(&url)
            .json(&chat("hello"))
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        if status == 429 {
            let retry = response.headers().get("retry-after").expect("Retry-After");
            assert!(matches!(retry.to_str(), Ok("0" | "1")));
        }
        seen.insert(status);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![200, 429, 500, 503]
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_hold_invalid_json() {
    let sim = start(SimConfig {
        faults: FaultConfig {
            malformed_rate: 1.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let (status, text) = post_raw(&c, &url, &chat("Tell me something.")).await;
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let mut body = chat("Tell me something.");
    body["stream"] = json!(true);
    let (_, text) = post_raw(&c, &url, &body).await;
    let data = sse_data(&text);
    let bad = data
        .iter()
        .filter(|d| **d != "[DONE]" && serde_json::from_str::<Value>(d).is_err())
        .count();
    assert_eq!(bad, 1, "{text}");
    assert_eq!(data.last(), Some(&"[DONE]"));
    assert_eq!(sim.stats().malformed_injected, 2);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_streams_end_without_done() {
    let sim = start(SimConfig {
        faults: FaultConfig {
            cut_rate: 1.0,
            ..Default::default()
        },
        latency: LatencyConfig {
            tpot_ms: 1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let c = client();
    let mut body = chat("Tell me something.");
    body["stream"] = json!(true);
    body["min_tokens"] = json!(40);
    let response = c
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    let mut received = Vec::new();
    let mut stream = response.bytes_stream();
    let mut failed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(failed, "the body should end in an error: {text}");
    assert!(!text.contains("[DONE]"));
    assert!(text.contains("data: {"), "some chunks came first: {text}");
    let stats = sim.stats();
    assert_eq!((stats.cuts_injected, stats.streams_aborted), (1, 0));

    // A non-streaming body is cut too.
    let result = c
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(&chat("Tell me something."))
        .send()
        .await
        .expect("headers")
        .text()
        .await;
    assert!(result.is_err(), "{result:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_delay_the_first_byte() {
    let sim = start(SimConfig {
        faults: FaultConfig {
            stall_rate: 1.0,
            stall_ms: 300,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let c = client();
    let started = Instant::now();
    let (status, _) = post(
        &c,
        &format!("{}/chat/completions", sim.base_url()),
        &chat("x"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.stats().stalls_injected, 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_model_paces_tokens_and_slots_queue_requests() {
    let sim = start(SimConfig {
        latency: LatencyConfig {
            ttft_ms: 50,
            tpot_ms: 5,
            slots: 2,
        },
        ..Default::default()
    })
    .await;
    let c = client();
    let url = format!("{}/completions", sim.base_url());
    // 21 tokens: 50 ms + 20 × 5 ms = 150 ms, streamed or not.
    let body = json!({"prompt": "Hello", "min_tokens": 21, "max_tokens": 21});
    let started = Instant::now();
    let (_, v) = post(&c, &url, &body).await;
    let plain = started.elapsed();
    assert_eq!(v["usage"]["completion_tokens"], 21);
    assert!(plain >= Duration::from_millis(150), "{plain:?}");
    assert!(plain < Duration::from_secs(5), "{plain:?}");

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let started = Instant::now();
    let response = c.post(&url).json(&stream_body).send().await.expect("sent");
    let mut chunks = response.bytes_stream();
    let first = chunks.next().await.expect("a chunk").expect("bytes");
    let ttft = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("\"text\""));
    assert!(ttft >= Duration::from_millis(50), "{ttft:?}");
    while chunks.next().await.is_some() {}
    assert!(started.elapsed() >= Duration::from_millis(150));

    // Four requests on two slots take two rounds.
    let started = Instant::now();
    let requests = (0..4).map(|_| {
        let (c, url, body) = (c.clone(), url.clone(), body.clone());
        async move { post(&c, &url, &body).await.0 }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let stats = sim.stats();
    assert_eq!(stats.active_peak, 2);
    assert_eq!((stats.active, stats.queued), (0, 0));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_is_counted() {
    let sim = start(SimConfig {
        latency: LatencyConfig {
            tpot_ms: 5,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let c = client();
    let mut body = chat("Tell me a long story.");
    body["stream"] = json!(true);
    body["min_tokens"] = json!(400);
    body["max_tokens"] = json!(400);
    let response = c
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let mut chunks = response.bytes_stream();
    for _ in 0..3 {
        chunks.next().await.expect("a chunk").expect("bytes");
    }
    drop(chunks);
    let stats = wait_for_stats(&c, &sim, Duration::from_secs(5), |s| {
        s["streams_aborted"] == 1
    })
    .await;
    assert_eq!(stats["streams_aborted"], 1, "{stats}");
    assert_eq!(stats["streams_completed"], 0, "{stats}");
    let generated = stats["tokens_generated"].as_u64().expect("n");
    let not_generated = stats["tokens_not_generated"].as_u64().expect("n");
    assert!(not_generated > 0, "{stats}");
    assert_eq!(generated + not_generated, 400, "{stats}");
    assert_eq!(stats["active"], 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_all_finish() {
    let sim = start(SimConfig {
        latency: LatencyConfig {
            ttft_ms: 10,
            tpot_ms: 2,
            slots: 0,
        },
        ..Default::default()
    })
    .await;
    let c = client();
    let url = format!("{}/completions", sim.base_url());
    let started = Instant::now();
    let requests = (0..256).map(|i| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let body = json!({"prompt": format!("Story {i}"), "stream": true, "min_tokens": 50, "max_tokens": 50});
            let (status, text) = post_raw(&c, &url, &body).await;
            let (chunks, done) = sse_chunks(&text);
            (status, done, stream_texts(&chunks, 1).1[0].clone())
        }
    });
    let results = futures_util::future::join_all(requests).await;
    assert!(results
        .iter()
        .all(|(s, done, f)| *s == 200 && *done && f.is_some()));
    // 256 streams of 50 tokens at 2 ms a token run side by side: in sequence they would take
    // 25.6 s.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let stats = sim.stats();
    assert_eq!(stats.streams_completed, 256);
    assert_eq!(stats.tokens_generated, 256 * 50);
    assert!(stats.active_peak > 1);
    sim.shutdown().await;
}
