//! The wire behaviour of the OpenAI-compatible endpoints, over real HTTP.

mod common;

use std::collections::HashSet;

use common::*;
use ponder_sim::SimConfig;
use serde_json::{json, Value};

fn task_question() -> String {
    ponder_task::generate(11, ponder_task::Difficulty::Medium, 1)[0].prompt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_and_request_give_identical_bytes() {
    let a = start(SimConfig {
        seed: 5,
        ..Default::default()
    })
    .await;
    let b = start(SimConfig {
        seed: 5,
        ..Default::default()
    })
    .await;
    let c = client();
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": task_question()}],
        "seed": 42, "n": 2, "temperature": 0.8, "logprobs": true, "top_logprobs": 3,
    });
    let url_a = format!("{}/chat/completions", a.base_url());
    let url_b = format!("{}/chat/completions", b.base_url());
    let (_, first) = post_raw(&c, &url_a, &body).await;
    let (_, again) = post_raw(&c, &url_a, &body).await;
    let (_, other_server) = post_raw(&c, &url_b, &body).await;
    // The prefix cache differs between the first and the repeated request; nothing else.
    let strip = |s: &str| {
        let mut v: Value = serde_json::from_str(s).expect("JSON");
        v["usage"]["prompt_tokens_details"]["cached_tokens"] = json!(0);
        v.to_string()
    };
    assert_eq!(first, other_server);
    assert_eq!(strip(&first), strip(&again));

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let (_, s1) = post_raw(&c, &url_a, &stream_body).await;
    let (_, s2) = post_raw(&c, &url_b, &stream_body).await;
    assert_eq!(s1, s2);

    // Another seed, another text (over a few seeds, at least one differs).
    let texts: HashSet<String> = {
        let mut set = HashSet::new();
        for seed in 0..6 {
            let mut b = body.clone();
            b["seed"] = json!(seed);
            let (_, v) = post(&c, &url_a, &b).await;
            set.insert(message(&v, 0));
            set.insert(message(&v, 1));
        }
        set
    };
    assert!(texts.len() > 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_choices_are_identical() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let body = json!({"messages": [{"role": "user", "content": task_question()}], "n": 3, "temperature": 0});
    let (_, v) = post(&c, &url, &body).await;
    assert_eq!(message(&v, 0), message(&v, 1));
    assert_eq!(message(&v, 1), message(&v, 2));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_interleave_in_a_stream_and_all_finish() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let body = json!({
        "messages": [{"role": "user", "content": task_question()}],
        "n": 3, "stream": true, "seed": 3,
    });
    let (status, text) = post_raw(&c, &url, &body).await;
    assert_eq!(status, 200);
    let (chunks, done) = sse_chunks(&text);
    assert!(done);
    let indices: Vec<u64> = chunks
        .iter()
        .filter_map(|ch| ch["choices"][0]["index"].as_u64())
        .collect();
    // Interleaved: the first chunks cycle through the choices.
    assert_eq!(&indices[..6], &[0, 1, 2, 0, 1, 2]);
    let (texts, finish) = stream_texts(&chunks, 3);
    assert!(
        finish.iter().all(|f| f.as_deref() == Some("stop")),
        "{finish:?}"
    );
    // The streamed text equals the non-streamed one.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let (_, v) = post(&c, &url, &plain).await;
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(*t, message(&v, i));
        assert!(t.contains("\\boxed{"), "{t}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_text_before_the_match() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let base = json!({"messages": [{"role": "user", "content": task_question()}], "seed": 9});
    let (_, full) = post(&c, &url, &base).await;
    let full_text = message(&full, 0);
    assert!(full_text.contains("Step 2:"), "{full_text}");

    // Six stop strings (more than OpenAI's four); the earliest match wins.
    let mut body = base.clone();
    body["stop"] = json!(["never-1", "never-2", "never-3", "Step 2:", "never-4", "\\boxed"]);
    let (status, v) = post(&c, &url, &body).await;
    assert_eq!(status, 200);
    let text = message(&v, 0);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        text,
        full_text[..full_text.find("Step 2:").expect("step 2")]
    );
    // The tokens of the stop string count as generated.
    let completion = v["usage"]["completion_tokens"].as_u64().expect("tokens");
    assert!(completion as usize > ponder_sim::tokenizer::count_tokens(&text));

    // A single stop string as a plain string, streamed: same text.
    let mut body = base.clone();
    body["stop"] = json!("Step 2:");
    body["stream"] = json!(true);
    let (_, s) = post_raw(&c, &url, &body).await;
    let (chunks, _) = sse_chunks(&s);
    let (texts, finish) = stream_texts(&chunks, 1);
    assert_eq!(texts[0], text);
    assert_eq!(finish[0].as_deref(), Some("stop"));

    // vLLM's include_stop_str_in_output keeps the matched stop string.
    let mut body = base.clone();
    body["stop"] = json!(["\n"]);
    body["include_stop_str_in_output"] = json!(true);
    let (_, v) = post(&c, &url, &body).await;
    let text = message(&v, 0);
    assert_eq!(text, full_text[..=full_text.find('\n').expect("a newline")]);

    // Stop strings are not checked before min_tokens.
    let mut body = base.clone();
    body["stop"] = json!(["Step"]);
    let (_, v) = post(&c, &url, &body).await;
    assert_eq!(message(&v, 0), "");
    body["min_tokens"] = json!(3);
    let (_, v) = post(&c, &url, &body).await;
    let text = message(&v, 0);
    assert!(
        text.starts_with("Step 1:") && !text.contains("Step 2"),
        "{text}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_ends_with_length() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    for (path, body) in [
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 5}),
        ),
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_completion_tokens": 5}),
        ),
        (
            "completions",
            json!({"prompt": "Once upon a time", "max_tokens": 5}),
        ),
        (
            "completions",
            json!({"prompt": ["Once upon a time"], "max_tokens": 5}),
        ),
    ] {
        let (status, v) = post(&c, &format!("{}/{path}", sim.base_url()), &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 5);
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .or(v["choices"][0]["text"].as_str())
            .expect("text");
        assert_eq!(ponder_sim::tokenizer::count_tokens(text), 5);
    }
    // ignore_eos: exactly max_tokens.
    let (_, v) = post(
        &c,
        &format!("{}/completions", sim.base_url()),
        &json!({"prompt": "Hi", "ignore_eos": true, "max_tokens": 77}),
    )
    .await;
    assert_eq!(v["usage"]["completion_tokens"], 77);
    // min_tokens makes a reply longer than it would be.
    let (_, v) = post(
        &c,
        &format!("{}/completions", sim.base_url()),
        &json!({"prompt": "Hi", "min_tokens": 300, "max_tokens": 1000}),
    )
    .await;
    assert_eq!(v["usage"]["completion_tokens"], 300);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    sim.shutdown().await;
}

/// Checks one top-logprobs list: `k` distinct tokens, descending, the sampled token among
/// them, probabilities summing below 1.
fn check_top(top: &[(String, f64)], sampled: &str, sampled_lp: f64, k: usize) {
    assert_eq!(top.len(), k, "{top:?}");
    let distinct: HashSet<&str> = top.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(distinct.len(), k, "{top:?}");
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "{top:?}");
    assert!(
        top.iter().any(|(t, lp)| t == sampled && *lp == sampled_lp),
        "{top:?}"
    );
    let mass: f64 = top.iter().map(|(_, lp)| lp.exp()).sum();
    assert!(mass < 1.0, "{mass}");
    assert!(sampled_lp <= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_have_both_shapes_with_exactly_k_alternatives() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let k = 5;
    // Chat: choices[].logprobs.content[] with token, logprob, bytes, top_logprobs.
    let (_, v) = post(
        &c,
        &format!("{}/chat/completions", sim.base_url()),
        &json!({"messages": [{"role": "user", "content": task_question()}],
                "logprobs": true, "top_logprobs": k, "seed": 1}),
    )
    .await;
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("content");
    let text: String = content
        .iter()
        .map(|t| t["token"].as_str().expect("token"))
        .collect();
    assert_eq!(text, message(&v, 0));
    for entry in content {
        let token = entry["token"].as_str().expect("token");
        let bytes: Vec<u8> = entry["bytes"]
            .as_array()
            .expect("bytes")
            .iter()
            .map(|b| b.as_u64().expect("byte") as u8)
            .collect();
        assert_eq!(bytes, token.as_bytes());
        let top: Vec<(String, f64)> = entry["top_logprobs"]
            .as_array()
            .expect("top")
            .iter()
            .map(|t| {
                (
                    t["token"].as_str().expect("t").to_string(),
                    t["logprob"].as_f64().expect("lp"),
                )
            })
            .collect();
        check_top(&top, token, entry["logprob"].as_f64().expect("lp"), k);
    }

    // Completions: logprobs: k → {tokens, token_logprobs, top_logprobs: [maps], text_offset}.
    let (_, v) = post(
        &c,
        &format!("{}/completions", sim.base_url()),
        &json!({"prompt": task_question(), "logprobs": k, "seed": 1}),
    )
    .await;
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().expect("tokens");
    let token_logprobs = lp["token_logprobs"].as_array().expect("token_logprobs");
    let tops = lp["top_logprobs"].as_array().expect("top_logprobs");
    let offsets = lp["text_offset"].as_array().expect("text_offset");
    assert_eq!(tokens.len(), token_logprobs.len());
    assert_eq!(tokens.len(), tops.len());
    assert_eq!(tokens.len(), offsets.len());
    let mut offset = 0;
    for i in 0..tokens.len() {
        let token = tokens[i].as_str().expect("token");
        assert_eq!(offsets[i].as_u64(), Some(offset as u64));
        offset += token.len();
        let mut top: Vec<(String, f64)> = tops[i]
            .as_object()
            .expect("map")
            .iter()
            .map(|(t, lp)| (t.clone(), lp.as_f64().expect("lp")))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        check_top(&top, token, token_logprobs[i].as_f64().expect("lp"), k);
    }

    // Streaming chat: one token per chunk, each with its logprobs.
    let (_, s) = post_raw(
        &c,
        &format!("{}/chat/completions", sim.base_url()),
        &json!({"messages": [{"role": "user", "content": "Say something."}], "stream": true,
                "logprobs": true, "top_logprobs": 20}),
    )
    .await;
    let (chunks, _) = sse_chunks(&s);
    let mut seen = 0;
    for chunk in &chunks {
        let choice = &chunk["choices"][0];
        if let Some(t) = choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            let entry = &choice["logprobs"]["content"][0];
            assert_eq!(entry["token"].as_str(), Some(t));
            assert_eq!(entry["top_logprobs"].as_array().map(Vec::len), Some(20));
            seen += 1;
        }
    }
    assert!(seen > 5);

    // Above max_logprobs (20): 400.
    let (status, v) = post(
        &c,
        &format!("{}/chat/completions", sim.base_url()),
        &json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "top_logprobs");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_usage_adds_a_usage_only_final_chunk() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    for (path, body) in [
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": task_question()}]}),
        ),
        ("completions", json!({"prompt": task_question()})),
    ] {
        let mut body = body;
        body["stream"] = json!(true);
        body["n"] = json!(2);
        body["stream_options"] = json!({"include_usage": true});
        let (_, s) = post_raw(&c, &format!("{}/{path}", sim.base_url()), &body).await;
        let (chunks, done) = sse_chunks(&s);
        assert!(done);
        let (last, rest) = chunks.split_last().expect("chunks");
        assert_eq!(last["choices"], json!([]));
        let usage = &last["usage"];
        let prompt = usage["prompt_tokens"].as_u64().expect("prompt");
        let completion = usage["completion_tokens"].as_u64().expect("completion");
        assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
        assert!(usage["prompt_tokens_details"]["cached_tokens"].is_u64());
        assert!(rest
            .iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some()));
        let (texts, _) = stream_texts(rest, 2);
        let counted: usize = texts
            .iter()
            .map(|t| ponder_sim::tokenizer::count_tokens(t))
            .sum();
        assert_eq!(counted as u64, completion);
    }
    // Without include_usage there is no usage chunk and no usage field.
    let (_, s) = post_raw(
        &c,
        &format!("{}/completions", sim.base_url()),
        &json!({"prompt": "hello", "stream": true}),
    )
    .await;
    let (chunks, _) = sse_chunks(&s);
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none()
                && !c["choices"].as_array().expect("choices").is_empty())
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirks_reject_n_and_too_many_stops() {
    let sim = start(SimConfig {
        reject_n: true,
        max_stop: Some(4),
        ..Default::default()
    })
    .await;
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let (status, v) = post(
        &c,
        &url,
        &json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        v["error"]["message"],
        "only one completion choice is allowed"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (status, _) = post(
        &c,
        &url,
        &json!({"messages": [{"role": "user", "content": "x"}], "n": 1}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = post(
        &c,
        &url,
        &json!({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "stop");
    let (status, _) = post(
        &c,
        &url,
        &json!({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d"]}),
    )
    .await;
    assert_eq!(status, 200);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_shaped_errors() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let base = sim.base_url();
    let cases = [
        ("chat/completions", json!({"messages": []}), "messages"),
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "n": 0}),
            "n",
        ),
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "stop": 3}),
            "stop",
        ),
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "continue_final_message": true}),
            "continue_final_message",
        ),
        ("completions", json!({"prompt": ["a", "b"]}), "prompt"),
        (
            "completions",
            json!({"prompt": "a", "logprobs": 50}),
            "logprobs",
        ),
        (
            "completions",
            json!({"prompt": "a", "min_tokens": 10, "max_tokens": 5}),
            "min_tokens",
        ),
    ];
    for (path, body, param) in cases {
        let (status, v) = post(&c, &format!("{base}/{path}"), &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        let error = &v["error"];
        assert_eq!(error["param"], param, "{body}: {v}");
        assert!(
            error["message"].is_string()
                && error["type"].is_string()
                && error.get("code").is_some()
        );
    }
    // Invalid JSON and unknown routes.
    let response = c
        .post(format!("{base}/chat/completions"))
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 400);
    let v: Value = response.json().await.expect("json");
    assert!(v["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("not valid JSON"));
    let response = c.get(format!("{base}/nope")).send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 404);
    let v: Value = response.json().await.expect("json");
    assert!(v["error"]["message"].is_string());
    // Unknown fields are ignored; echo is ignored.
    let (status, _) = post(
        &c,
        &format!("{base}/completions"),
        &json!({"prompt": "a", "echo": true, "frobnicate": {"x": 1}, "top_k": 20, "top_p": 0.9, "temperature": 0.7}),
    )
    .await;
    assert_eq!(status, 200);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_stats_and_the_prefix_cache() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let root = format!("http://{}", sim.addr());
    let models: Value = c
        .get(format!("{}/models", sim.base_url()))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "ponder-sim");
    assert_eq!(models["data"][0]["object"], "model");
    let health = c.get(format!("{root}/health")).send().await.expect("sent");
    assert_eq!(health.status().as_u16(), 200);

    // The second request with the same long prefix reads it from the cache.
    let prefix = "You are a careful assistant. ".repeat(20);
    let url = format!("{}/completions", sim.base_url());
    let (_, first) = post(
        &c,
        &url,
        &json!({"prompt": format!("{prefix}Question one?"), "max_tokens": 3}),
    )
    .await;
    let (_, second) = post(
        &c,
        &url,
        &json!({"prompt": format!("{prefix}Question two?"), "max_tokens": 3}),
    )
    .await;
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached");
    let prompt = second["usage"]["prompt_tokens"].as_u64().expect("prompt");
    assert!(
        cached >= 96 && cached < prompt && cached % 16 == 0,
        "{cached} of {prompt}"
    );

    let stats = sim.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.completion_requests, 2);
    assert_eq!(stats.completions, 2);
    assert_eq!(stats.tokens_generated, 6);
    assert_eq!(stats.cached_tokens, cached);
    let over_http: Value = c
        .get(format!("{root}/stats"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(over_http["tokens_generated"], 6);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assistant_prefill_and_raw_prompts_continue_written_steps() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let problem = &ponder_task::generate(11, ponder_task::Difficulty::Medium, 1)[0];
    let s = problem.steps[0];
    // Step 1 written with a wrong result: the continuation starts step 2 from it.
    let written = ponder_task::render_step(1, s.op, s.lhs, s.rhs, s.result + 1);
    let (_, v) = post(
        &c,
        &format!("{}/chat/completions", sim.base_url()),
        &json!({"messages": [
            {"role": "user", "content": problem.prompt()},
            {"role": "assistant", "content": format!("{written}\n")},
        ], "continue_final_message": true, "add_generation_prompt": false, "seed": 2}),
    )
    .await;
    let text = message(&v, 0);
    let first = ponder_task::parse_step_line(text.lines().next().expect("a line")).expect("a step");
    assert_eq!((first.index, first.lhs), (2, s.result + 1), "{text}");

    // Raw prompt with one step written and stop at the newline: exactly one more step.
    let (_, v) = post(
        &c,
        &format!("{}/completions", sim.base_url()),
        &json!({"prompt": format!("{}\n{written}\n", problem.prompt()), "stop": ["\n"], "seed": 2}),
    )
    .await;
    let text = v["choices"][0]["text"].as_str().expect("text");
    let step = ponder_task::parse_step_line(text).expect("one step");
    assert_eq!((step.index, step.lhs), (2, s.result + 1), "{text}");
    assert!(!text.contains('\n'));
    sim.shutdown().await;
}
