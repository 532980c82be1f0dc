//! The HTTP backend against a real `ponder-sim` server on a loopback port: an early stop saves
//! work upstream (seen in `/stats`), `n` falls back to single requests on a server that rejects
//! it, stop strings beyond the server's limit are matched client-side, and top-20 logprobs come
//! back on both endpoints.

use std::time::Duration;

use ponder_core::{Backend, FinishReason, GenerationRequest, Prompt, SamplingParams, StreamEvent};
use ponder_openai::{OpenAiBackend, OpenAiConfig};
use ponder_sim::{LatencyConfig, SimConfig, SimHandle};
use ponder_task::Difficulty;

/// Every test finishes well within this.
const TEST_LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test ran past its limit")
}

async fn sim(config: SimConfig) -> SimHandle {
    ponder_sim::spawn(config).await.expect("sim starts")
}

fn backend(sim: &SimHandle, tune: impl FnOnce(&mut OpenAiConfig)) -> OpenAiBackend {
    let mut c = OpenAiConfig::new(vec![sim.base_url()], "ponder-sim");
    c.api_key_env = None;
    c.backoff_base_ms = 1;
    c.backoff_max_ms = 20;
    tune(&mut c);
    OpenAiBackend::new(c).expect("valid config")
}

fn problem_prompt(index: usize) -> String {
    ponder_task::generate_one(11, Difficulty::Hard, index).prompt()
}

/// `GET /stats` over HTTP, as a user of the simulator would read it.
async fn http_stats(sim: &SimHandle) -> serde_json::Value {
    let url = format!("http://{}/stats", sim.addr());
    let body = reqwest::get(&url)
        .await
        .expect("GET /stats")
        .bytes()
        .await
        .expect("body");
    serde_json::from_slice(&body).expect("stats are JSON")
}

fn count(stats: &serde_json::Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("/stats has no counter {key}: {stats}"))
}

#[tokio::test]
async fn an_early_stop_shows_up_in_the_simulator_stats() {
    bounded(async {
        // 5 ms per token: a hard problem's solution takes well over a second to stream.
        let sim = sim(SimConfig {
            latency: LatencyConfig {
                ttft_ms: 5,
                tpot_ms: 5,
                slots: 0,
            },
            ..SimConfig::default()
        })
        .await;
        let b = backend(&sim, |_| {});
        let mut stream = b
            .stream(GenerationRequest::new(
                Prompt::user(problem_prompt(0)),
                SamplingParams {
                    seed: Some(3),
                    temperature: Some(0.7),
                    ..SamplingParams::default()
                },
            ))
            .await
            .expect("opens");
        let mut received = 0;
        while received < 5 {
            match stream
                .next_event()
                .await
                .expect("an event")
                .expect("no error")
            {
                StreamEvent::Delta { token_count, .. } => received += token_count,
                other => panic!("the stream ended early: {other:?}"),
            }
        }
        stream.stop();

        // A stop is asynchronous: wait (bounded) for the server to notice.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let stats = loop {
            let stats = http_stats(&sim).await;
            if count(&stats, "streams_aborted") >= 1 {
                break stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server never saw the stop: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(count(&stats, "streams_started"), 1);
        assert_eq!(count(&stats, "streams_completed"), 0);
        assert!(count(&stats, "tokens_not_generated") > 0, "{stats}");
        let generated = count(&stats, "tokens_generated");
        assert!(generated >= u64::from(received), "{stats}");
        // The rest of the solution was never generated.
        assert!(generated < 100, "{stats}");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn n_is_split_into_single_requests_when_the_server_rejects_it() {
    bounded(async {
        let sim = sim(SimConfig {
            reject_n: true,
            ..SimConfig::default()
        })
        .await;
        let b = backend(&sim, |_| {});
        let r = b
            .generate(GenerationRequest::new(
                Prompt::user(problem_prompt(1)),
                SamplingParams {
                    n: 4,
                    seed: Some(100),
                    temperature: Some(1.0),
                    ..SamplingParams::default()
                },
            ))
            .await
            .expect("generates");
        assert_eq!(r.completions.len(), 4);
        for c in &r.completions {
            assert_eq!(c.finish_reason, FinishReason::Stop, "{c:?}");
            assert!(c.text.contains("\\boxed{"), "{}", c.text);
        }
        // Distinct seeds give distinct samples (at temperature 1 on a hard problem).
        let distinct: std::collections::BTreeSet<&str> =
            r.completions.iter().map(|c| c.text.as_str()).collect();
        assert!(distinct.len() > 1, "all four samples are identical");
        assert!(r.usage.completion_tokens > 0);
        let stats = sim.stats();
        // One rejected request with n = 4, then four single ones.
        assert_eq!(stats.requests, 5, "{stats:?}");
        assert_eq!(stats.invalid_requests, 1, "{stats:?}");

        // Later calls go straight to single requests.
        b.generate(GenerationRequest::new(
            Prompt::user("Say hello."),
            SamplingParams {
                n: 2,
                ..SamplingParams::default()
            },
        ))
        .await
        .expect("generates");
        let stats = sim.stats();
        assert_eq!(stats.requests, 7, "{stats:?}");
        assert_eq!(stats.invalid_requests, 1, "{stats:?}");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn stop_strings_beyond_the_server_limit_are_matched_client_side() {
    bounded(async {
        let sim = sim(SimConfig {
            max_stop: Some(2),
            ..SimConfig::default()
        })
        .await;
        let b = backend(&sim, |c| c.max_stop_strings = Some(2));
        // Only the last stop string occurs in a step-structured solution.
        let stop: Vec<String> = [
            "<never-1>",
            "<never-2>",
            "<never-3>",
            "<never-4>",
            "Step 2:",
        ]
        .map(String::from)
        .to_vec();
        let r = b
            .generate(GenerationRequest::new(
                Prompt::user(problem_prompt(2)),
                SamplingParams {
                    stop,
                    seed: Some(1),
                    ..SamplingParams::default()
                },
            ))
            .await
            .expect("generates");
        let c = &r.completions[0];
        assert_eq!(c.finish_reason, FinishReason::Stop, "{c:?}");
        assert_eq!(c.stop.as_deref(), Some("Step 2:"));
        assert!(c.text.starts_with("Step 1:"), "{}", c.text);
        assert!(!c.text.contains("Step 2"), "{}", c.text);
        assert_eq!(sim.stats().invalid_requests, 0);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn top_20_logprobs_on_both_endpoints() {
    bounded(async {
        let sim = sim(SimConfig::default()).await;
        let b = backend(&sim, |_| {});
        let params = SamplingParams {
            top_logprobs: Some(20),
            max_tokens: Some(40),
            seed: Some(5),
            ..SamplingParams::default()
        };
        let prompts = [
            Prompt::user(problem_prompt(3)),
            Prompt::Text(format!("Question: {}\nAnswer:", problem_prompt(3))),
        ];
        for prompt in prompts {
            let r = b
                .generate(GenerationRequest::new(prompt, params.clone()))
                .await
                .expect("generates");
            let c = &r.completions[0];
            let tokens = c.tokens.as_ref().expect("logprobs were requested");
            assert!(!tokens.is_empty());
            assert_eq!(tokens.len() as u64, r.usage.completion_tokens);
            let joined: String = tokens.iter().map(|t| t.token.as_str()).collect();
            assert_eq!(joined, c.text);
            for t in tokens {
                let lp = t.logprob.expect("a sampled token has a logprob");
                assert!(lp <= 0.0 && lp.is_finite());
                assert_eq!(t.top.len(), 20, "{t:?}");
            }
        }
        let stats = sim.stats();
        assert_eq!(stats.chat_requests, 1);
        assert_eq!(stats.completion_requests, 1);
        sim.shutdown().await;
    })
    .await;
}
