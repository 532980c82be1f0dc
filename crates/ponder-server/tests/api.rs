//! `ponder-server` over plain HTTP, in front of `ponder-sim`: pass-through, the three ways of
//! choosing a strategy, streaming, errors, authentication, admission, deadlines, disconnects.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{question, setup, sse_data, wait_for_stats, MODEL};
use ponder_server::{AliasConfig, ServerConfig};
use ponder_sim::{LatencyConfig, SimConfig};
use serde_json::{json, Value};

fn slow_sim(ttft_ms: u64, tpot_ms: u64) -> SimConfig {
    SimConfig {
        latency: LatencyConfig {
            ttft_ms,
            tpot_ms,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn chat(model: &str, q: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": q}]})
}

#[tokio::test]
async fn passthrough_non_streaming_with_n_logprobs_and_stop() {
    let s = setup(SimConfig::default(), ServerConfig::default(), None).await;
    let mut body = chat(MODEL, &question(1));
    body["n"] = json!(2);
    body["seed"] = json!(5);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let (status, _, v) = s.post("/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    let choices = v["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 2);
    for c in choices {
        assert_eq!(c["message"]["role"], "assistant");
        assert!(c["message"]["content"]
            .as_str()
            .expect("text")
            .contains("\\boxed{"));
        assert_eq!(c["finish_reason"], "stop");
        let tokens = c["logprobs"]["content"].as_array().expect("logprobs");
        assert!(!tokens.is_empty());
        assert_eq!(tokens[0]["top_logprobs"].as_array().map(Vec::len), Some(2));
    }
    // Usage is the upstream's: every token the simulator generated.
    let stats = s.sim.stats();
    assert_eq!(v["usage"]["completion_tokens"], stats.tokens_generated);
    assert_eq!(v["usage"]["prompt_tokens"], stats.prompt_tokens);

    // A stop string is passed through: the text ends before it.
    let mut body = chat(MODEL, &question(1));
    body["seed"] = json!(5);
    body["stop"] = json!(["Step 3"]);
    let (status, _, v) = s.post("/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(
        text.contains("Step 2") && !text.contains("Step 3"),
        "{text}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn passthrough_streaming_sends_openai_chunks() {
    let s = setup(SimConfig::default(), ServerConfig::default(), None).await;
    let q = question(2);
    let mut body = chat(MODEL, &q);
    body["seed"] = json!(9);
    let (_, _, full) = s.post("/chat/completions", body.clone()).await;
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, text) = s.post_sse("/chat/completions", body).await;
    assert_eq!(status, 200);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks = sse_data(&text);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, full["choices"][0]["message"]["content"]);
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage["usage"][key], full["usage"][key], "{key}");
    }
}

#[tokio::test]
async fn completions_endpoint_passes_through_and_runs_strategies() {
    let s = setup(SimConfig::default(), ServerConfig::default(), None).await;
    let body = json!({"model": MODEL, "prompt": question(3), "max_tokens": 20, "seed": 1});
    let (status, _, v) = s.post("/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 20);

    let body = json!({"model": MODEL, "prompt": question(3), "max_tokens": 20, "seed": 1,
        "stream": true, "stream_options": {"include_usage": true}});
    let (status, text) = s.post_sse("/completions", body).await;
    assert_eq!(status, 200);
    let chunks = sse_data(&text);
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["text"].as_str())
        .collect();
    assert_eq!(streamed, v["choices"][0]["text"]);
    assert_eq!(chunks[0]["object"], "text_completion");
    assert_eq!(
        chunks.last().expect("usage")["usage"]["completion_tokens"],
        20
    );

    let body = json!({"model": MODEL, "prompt": question(3),
        "ponder": {"strategy": "self-consistency", "n": 3, "details": true}});
    let (status, _, v) = s.post("/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["ponder"]["candidates"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn ponder_object_runs_self_consistency_and_usage_counts_every_sample() {
    let s = setup(SimConfig::default(), ServerConfig::default(), None).await;
    let mut body = chat(MODEL, &question(4));
    body["ponder"] = json!({"strategy": "self-consistency", "n": 8, "seed": 3, "details": true});
    let (status, headers, v) = s.post("/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["x-ponder-seed"], "3");
    let stats = s.sim.stats();
    // Every token of all eight samples, as the simulator counted them.
    assert!(stats.tokens_generated > 0);
    assert_eq!(v["usage"]["completion_tokens"], stats.tokens_generated);
    assert_eq!(v["usage"]["prompt_tokens"], stats.prompt_tokens);
    assert_eq!(
        v["usage"]["total_tokens"],
        stats.tokens_generated + stats.prompt_tokens
    );
    let p = &v["ponder"];
    assert_eq!(p["strategy"], "self-consistency");
    assert_eq!(p["seed"], 3);
    let candidates = p["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 8);
    let per_sample: u64 = candidates
        .iter()
        .map(|c| c["completion_tokens"].as_u64().expect("tokens"))
        .sum();
    assert_eq!(v["usage"]["completion_tokens"], per_sample);
    // The content is the selected candidate's full text, and it holds the answer.
    let selected = p["selected"].as_u64().expect("selected") as usize;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        candidates[selected]["text"]
    );
    let answer = p["answer"].as_str().expect("answer");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .contains(&format!("\\boxed{{{answer}}}")));
    assert!(candidates[selected]["votes"].as_u64().expect("votes") >= 1);

    // Without `details` there is no `ponder` object; the same seed gives the same answer.
    let mut body = chat(MODEL, &question(4));
    body["ponder"] = json!({"strategy": "self-consistency", "n": 8, "seed": 3});
    let (_, _, again) = s.post("/chat/completions", body).await;
    assert!(again.get("ponder").is_none());
    assert_eq!(
        again["choices"][0]["message"]["content"],
        v["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn streamed_strategy_answer_matches_the_json_one() {
    let config = ServerConfig {
        progress_interval_ms: 20,
        ..Default::default()
    };
    let s = setup(slow_sim(0, 2), config, None).await;
    let mut body = chat(MODEL, &question(5));
    body["ponder"] = json!({"strategy": "self-consistency", "n": 4, "seed": 11, "details": true});
    let (_, _, full) = s.post("/chat/completions", body.clone()).await;
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, text) = s.post_sse("/chat/completions", body).await;
    assert_eq!(status, 200);
    assert!(
        text.starts_with(": ponder strategy=self-consistency seed=11\n\n"),
        "{text}"
    );
    assert!(text.contains("\n\n: progress elapsed_ms="), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let chunks = sse_data(&text);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, full["choices"][0]["message"]["content"]);
    let last = chunks.last().expect("usage chunk");
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(last["usage"][key], full["usage"][key], "{key}");
    }
    assert_eq!(last["ponder"]["answer"], full["ponder"]["answer"]);
}

#[tokio::test]
async fn alias_and_path_form_select_strategies() {
    let mut aliases = BTreeMap::new();
    aliases.insert(
        "math-sc4".to_string(),
        AliasConfig {
            strategy: "self-consistency".into(),
            params: [("n".to_string(), json!(4))].into_iter().collect(),
            seed: Some(7),
        },
    );
    let config = ServerConfig {
        aliases,
        ..Default::default()
    };
    let s = setup(SimConfig::default(), config, None).await;

    let r = s.client.get(s.url("/models")).send().await.expect("models");
    let models: Value = r.json().await.expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, [MODEL, "math-sc4"]);

    let mut body = chat("math-sc4", &question(6));
    body["ponder"] = json!({"details": true});
    let (status, _, v) = s.post("/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "math-sc4");
    assert_eq!(v["ponder"]["seed"], 7);
    assert_eq!(v["ponder"]["candidates"].as_array().map(Vec::len), Some(4));

    // The body overrides the alias's parameters.
    let mut body = chat("math-sc4", &question(6));
    body["ponder"] = json!({"n": 2, "details": true});
    let (_, _, v) = s.post("/chat/completions", body).await;
    assert_eq!(v["ponder"]["candidates"].as_array().map(Vec::len), Some(2));

    // The path form.
    let mut body = chat(MODEL, &question(6));
    body["ponder"] = json!({"n": 3, "details": true});
    let (status, _, v) = s.post("/self-consistency/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ponder"]["strategy"], "self-consistency");
    assert_eq!(v["ponder"]["candidates"].as_array().map(Vec::len), Some(3));

    // An unknown strategy in the path: 404 listing the known ones.
    let (status, _, v) = s
        .post("/self-consistensy/chat/completions", chat(MODEL, "q"))
        .await;
    assert_eq!(status, 404, "{v}");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("known: ") && message.contains("self-consistency"));
}

#[tokio::test]
async fn invalid_requests_get_openai_shaped_errors() {
    let s = setup(SimConfig::default(), ServerConfig::default(), None).await;
    let check = |status: u16, v: &Value, expected: u16, param: Option<&str>| {
        assert_eq!(status, expected, "{v}");
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert_eq!(e["param"].as_str(), param, "{v}");
        assert!(e.get("code").is_some(), "{v}");
    };
    let q = question(7);

    let mut body = chat(MODEL, &q);
    body["ponder"] = json!({"strategy": "self-consistency", "nn": 3});
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("ponder.nn"));

    let mut body = chat(MODEL, &q);
    body["ponder"] = json!({"strategy": "self-consistency", "n": "many"});
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("ponder.n"));

    let mut body = chat(MODEL, &q);
    body["ponder"] = json!({"strategy": "nope"});
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("ponder.strategy"));
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("self-consistency"));

    let mut body = chat(MODEL, &q);
    body["ponder"] = json!({"strategy": "self-consistency", "n": 1000});
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("ponder.n"));

    // Parameters without a strategy, and a path and a body that disagree.
    let mut body = chat(MODEL, &q);
    body["ponder"] = json!({"n": 3});
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("ponder.n"));
    let mut body = chat(MODEL, &q);
    body["ponder"] = json!({"strategy": "best-of-n"});
    let (st, _, v) = s.post("/self-consistency/chat/completions", body).await;
    check(st, &v, 400, Some("ponder.strategy"));
    let mut body = chat(MODEL, &q);
    body["ponder"] = json!({"strategy": "self-consistency"});
    body["n"] = json!(2);
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("n"));

    let mut body = chat(MODEL, &q);
    body["n"] = json!(1000);
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("n"));

    let mut body = chat(MODEL, &q);
    body["temperature"] = json!(-1);
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("temperature"));

    let mut body = chat(MODEL, &q);
    body["temperature"] = json!("hot");
    let (st, _, v) = s.post("/chat/completions", body).await;
    check(st, &v, 400, Some("temperature"));

    let (st, _, v) = s.post("/chat/completions", chat("gpt-9", &q)).await;
    check(st, &v, 404, Some("model"));

    let (st, _, v) = s.post("/chat/completions", json!({"model": MODEL})).await;
    check(st, &v, 400, Some("messages"));

    let r = s
        .client
        .post(s.url("/chat/completions"))
        .body("{not json")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("json");
    check(400, &v, 400, None);

    let (st, _, v) = s.post("/nothing/here/at/all", json!({})).await;
    check(st, &v, 404, None);
}

#[tokio::test]
async fn wrong_or_missing_token_gets_401() {
    let s = setup(
        SimConfig::default(),
        ServerConfig::default(),
        Some("s3cret"),
    )
    .await;
    let body = chat(MODEL, &question(8));
    let r = s
        .client
        .post(s.url("/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "authentication_error");
    for auth in ["Bearer wrong", "Bearer s3cre", "s3cret"] {
        let r = s
            .client
            .post(s.url("/chat/completions"))
            .header("authorization", auth)
            .json(&body)
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status().as_u16(), 401, "{auth}");
    }
    let r = s
        .client
        .post(s.url("/chat/completions"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        s.sim.stats().requests,
        1,
        "rejected requests never reach upstream"
    );
    // Health needs no token; metrics do.
    let health = format!("http://{}/health", s.server.addr());
    let r = s.client.get(health).send().await.expect("answered");
    assert_eq!(r.status().as_u16(), 200);
    let metrics = format!("http://{}/metrics", s.server.addr());
    let r = s.client.get(&metrics).send().await.expect("answered");
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn non_loopback_without_token_is_refused() {
    let backend: std::sync::Arc<dyn ponder_core::Backend> = std::sync::Arc::new(
        ponder_openai::OpenAiBackend::with_api_key(
            ponder_openai::OpenAiConfig::new(vec!["http://127.0.0.1:9/v1".into()], MODEL),
            None,
        )
        .expect("backend"),
    );
    let e = ponder_server::spawn(
        "0.0.0.0:0".parse().expect("addr"),
        backend,
        MODEL.into(),
        ServerConfig::default(),
        None,
    )
    .await
    .expect_err("refused");
    assert!(e.to_string().contains("without a token"), "{e}");
}

#[tokio::test]
async fn over_capacity_gets_429_with_retry_after() {
    let mut config = ServerConfig::default();
    config.limits.max_concurrent = 1;
    config.limits.queue = 0;
    config.limits.retry_after_s = 3;
    // Each token takes 50 ms: the first request holds the only slot for seconds.
    let s = setup(slow_sim(0, 50), config, None).await;
    let mut body = chat(MODEL, &question(9));
    body["ponder"] = json!({"strategy": "self-consistency", "n": 2});
    let holder = {
        let client = s.client.clone();
        let url = s.url("/chat/completions");
        let body = body.clone();
        tokio::spawn(async move { client.post(url).json(&body).send().await })
    };
    let stats = wait_for_stats(&s.sim, Duration::from_secs(5), |st| st.streams_started > 0).await;
    assert!(
        stats.streams_started > 0,
        "the first request reached upstream"
    );
    let (status, headers, v) = s.post("/chat/completions", body).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // Pass-through requests have their own gate.
    let mut plain = chat(MODEL, "hello");
    plain["max_tokens"] = json!(2);
    let (status, _, _) = s.post("/chat/completions", plain).await;
    assert_eq!(status, 200);
    let metrics = s
        .client
        .get(format!("http://{}/metrics", s.server.addr()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("ponder_rejected_total 1"), "{metrics}");
    assert!(
        metrics.contains("ponder_requests_total{endpoint=\"chat_completions\",status=\"429\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ponder_admitted_requests{kind=\"strategy\"} 1"));
    holder.abort();
}

#[tokio::test]
async fn deadline_gets_504() {
    let s = setup(slow_sim(2000, 0), ServerConfig::default(), None).await;
    let mut body = chat(MODEL, &question(10));
    body["ponder"] = json!({"strategy": "self-consistency", "n": 2, "deadline_ms": 100});
    let started = std::time::Instant::now();
    let (status, _, v) = s.post("/chat/completions", body).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "deadline_exceeded");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn a_client_that_leaves_a_stream_cancels_upstream_work() {
    let s = setup(slow_sim(0, 20), ServerConfig::default(), None).await;
    let mut body = chat(MODEL, &question(11));
    body["stream"] = json!(true);
    body["ponder"] = json!({"strategy": "self-consistency", "n": 4});
    let mut r = s
        .client
        .post(s.url("/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 200);
    // The first comment line arrives at once; then wait until upstream is generating.
    let first = r.chunk().await.expect("read").expect("a chunk");
    assert!(first.starts_with(b": ponder"));
    let stats = wait_for_stats(&s.sim, Duration::from_secs(5), |st| st.tokens_generated > 0).await;
    assert!(stats.streams_started > 0);
    drop(r);
    let stats = wait_for_stats(&s.sim, Duration::from_secs(5), |st| st.streams_aborted > 0).await;
    assert!(stats.streams_aborted > 0, "{stats:?}");
    assert!(stats.tokens_not_generated > 0, "{stats:?}");
    assert_eq!(stats.streams_completed, 0);
}

#[tokio::test]
async fn a_client_that_leaves_a_json_request_cancels_upstream_work() {
    let s = setup(slow_sim(0, 20), ServerConfig::default(), None).await;
    let mut body = chat(MODEL, &question(12));
    body["ponder"] = json!({"strategy": "self-consistency", "n": 4});
    let task = {
        let client = s.client.clone();
        let url = s.url("/chat/completions");
        tokio::spawn(async move { client.post(url).json(&body).send().await })
    };
    let stats = wait_for_stats(&s.sim, Duration::from_secs(5), |st| st.tokens_generated > 0).await;
    assert!(stats.streams_started > 0);
    task.abort();
    let stats = wait_for_stats(&s.sim, Duration::from_secs(5), |st| st.streams_aborted > 0).await;
    assert!(stats.streams_aborted > 0, "{stats:?}");
    assert_eq!(stats.streams_completed, 0);
}

#[tokio::test]
async fn upstream_failures_get_502() {
    let sim = SimConfig {
        faults: ponder_sim::FaultConfig {
            error_rate: 1.0,
            error_status: Some(500),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = setup(sim, ServerConfig::default(), None).await;
    let (status, _, v) = s.post("/chat/completions", chat(MODEL, "hello")).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["type"], "upstream_error");
    let mut body = chat(MODEL, &question(13));
    body["ponder"] = json!({"strategy": "self-consistency", "n": 2});
    let (status, _, v) = s.post("/chat/completions", body.clone()).await;
    assert_eq!(status, 502, "{v}");
    // Streamed, the error arrives as an OpenAI error event after the progress comment.
    body["stream"] = json!(true);
    let (status, text) = s.post_sse("/chat/completions", body).await;
    assert_eq!(status, 200);
    let events = sse_data(&text);
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["error"]["type"], "upstream_error");
}
