//! The HTTP backend against a scripted server on 127.0.0.1: `n` fallback, retries, validation
//! errors, cut and stalled streams, dropped streams, replica ejection, deadlines, rewards and
//! the API key.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{chat_chunk, chat_stream, usage_chunk, Reply, TestServer, DONE};
use ponder_core::{
    Backend, BackendError, FinishReason, GenerationRequest, Prompt, RewardRequest, SamplingParams,
    StreamEvent,
};
use ponder_openai::{OpenAiBackend, OpenAiConfig, RewardConfig, RewardFormat};

/// Every test finishes well within this.
const TEST_LIMIT: Duration = Duration::from_secs(30);

fn config(endpoints: Vec<String>) -> OpenAiConfig {
    let mut c = OpenAiConfig::new(endpoints, "m");
    c.api_key_env = None;
    c.backoff_base_ms = 1;
    c.backoff_max_ms = 10;
    c.request_timeout_ms = 5_000;
    c
}

fn backend(c: OpenAiConfig) -> OpenAiBackend {
    OpenAiBackend::new(c).expect("valid config")
}

fn request(params: SamplingParams) -> GenerationRequest {
    GenerationRequest::new(Prompt::user("2+2?"), params)
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test ran past its limit")
}

#[tokio::test]
async fn n_rejected_falls_back_to_split_requests_with_distinct_seeds() {
    bounded(async {
        let server = TestServer::start(|seen, _| {
            if seen.body["n"].as_u64().unwrap_or(1) > 1 {
                return Reply::json(
                    400,
                    r#"{"error":{"code":400,"message":"Only one completion choice is allowed","type":"invalid_request_error"}}"#,
                );
            }
            Reply::sse(vec![
                chat_chunk(0, &format!("seed={}", seen.body["seed"]), None),
                chat_chunk(0, "", Some("stop")),
                usage_chunk(10, 2),
                DONE.to_string(),
            ])
        })
        .await;
        let b = backend(config(vec![server.base()]));
        assert!(b.capabilities().multiple_samples);
        let params = SamplingParams {
            n: 3,
            seed: Some(7),
            ..Default::default()
        };
        let r = b.generate(request(params.clone())).await.expect("generates");
        let texts: Vec<&str> = r.completions.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["seed=7", "seed=8", "seed=9"]);
        assert!(r.completions.iter().all(|c| c.finish_reason == FinishReason::Stop));
        assert_eq!((r.requests, r.retries), (3, 1));
        assert_eq!((r.usage.prompt_tokens, r.usage.completion_tokens), (30, 6));
        assert!(!b.capabilities().multiple_samples, "remembered");
        // The next call splits at once.
        let r = b.generate(request(params)).await.expect("generates");
        assert_eq!((r.requests, r.retries), (3, 0));
        let native_tries = server
            .seen()
            .iter()
            .filter(|s| s.body["n"].as_u64().unwrap_or(1) > 1)
            .count();
        assert_eq!(native_tries, 1);
        assert_eq!(server.requests(), 7);
    })
    .await;
}

#[tokio::test]
async fn native_n_streams_interleaved_choices() {
    bounded(async {
        let server = TestServer::start(|seen, _| {
            assert_eq!(seen.body["n"], 2);
            assert_eq!(seen.body["stream_options"]["include_usage"], true);
            Reply::sse(vec![
                chat_chunk(1, "b", None),
                chat_chunk(0, "a", None),
                chat_chunk(1, "", Some("length")),
                chat_chunk(0, "", Some("stop")),
                usage_chunk(5, 2),
                DONE.to_string(),
            ])
        })
        .await;
        let b = backend(config(vec![server.base()]));
        let r = b
            .generate(request(SamplingParams {
                n: 2,
                ..Default::default()
            }))
            .await
            .expect("generates");
        assert_eq!(r.completions[0].text, "a");
        assert_eq!(r.completions[1].finish_reason, FinishReason::Length);
        assert_eq!((r.requests, r.retries), (1, 0));
        assert_eq!(r.usage.completion_tokens, 2);
    })
    .await;
}

#[tokio::test]
async fn server_errors_are_retried_honouring_retry_after() {
    bounded(async {
        let server = TestServer::start(|_, number| {
            if number < 2 {
                Reply::Json {
                    status: 503,
                    headers: vec![("retry-after".into(), "0".into())],
                    body: r#"{"error":{"message":"overloaded"}}"#.into(),
                }
            } else {
                chat_stream("ok")
            }
        })
        .await;
        let mut c = config(vec![server.base()]);
        // Without Retry-After the two retries would wait up to a minute each.
        c.backoff_base_ms = 60_000;
        c.backoff_max_ms = 60_000;
        let b = backend(c);
        let started = Instant::now();
        let r = b
            .generate(request(SamplingParams::default()))
            .await
            .expect("generates");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(r.completions[0].text, "ok");
        assert_eq!((r.requests, r.retries), (1, 2));
        assert_eq!(server.requests(), 3);
    })
    .await;
}

#[tokio::test]
async fn retries_run_out() {
    bounded(async {
        let server =
            TestServer::start(|_, _| Reply::json(500, r#"{"error":{"message":"boom"}}"#)).await;
        let mut c = config(vec![server.base()]);
        c.max_retries = 2;
        let b = backend(c);
        let e = b
            .generate(request(SamplingParams::default()))
            .await
            .expect_err("fails");
        match e {
            BackendError::RetriesExhausted { attempts, last } => {
                assert_eq!(attempts, 3);
                assert!(
                    matches!(*last, BackendError::Status { status: 500, ref message, .. } if message == "boom"),
                    "{last}"
                );
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(server.requests(), 3);
    })
    .await;
}

#[tokio::test]
async fn validation_errors_are_not_retried() {
    bounded(async {
        let server = TestServer::start(|_, _| {
            Reply::json(
                400,
                r#"{"object":"error","message":"max_tokens is too large: 99999","type":"BadRequestError","param":null,"code":400}"#,
            )
        })
        .await;
        let b = backend(config(vec![server.base()]));
        let e = b
            .generate(request(SamplingParams {
                max_tokens: Some(99_999),
                ..Default::default()
            }))
            .await
            .expect_err("fails");
        match &e {
            BackendError::Status {
                endpoint,
                status: 400,
                message,
                ..
            } => {
                assert_eq!(endpoint, &server.base());
                assert_eq!(message, "max_tokens is too large: 99999");
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(server.requests(), 1, "exactly one attempt");
    })
    .await;
}

#[tokio::test]
async fn a_cut_stream_ends_the_choice_in_error() {
    bounded(async {
        let server = TestServer::start(|_, _| Reply::Sse {
            payloads: vec![
                chat_chunk(1, "done", Some("stop")),
                chat_chunk(0, "part", None),
                chat_chunk(0, "ial", None),
            ],
            delay: Duration::ZERO,
            cut: true,
        })
        .await;
        let b = backend(config(vec![server.base()]));
        let r = b
            .generate(request(SamplingParams {
                n: 2,
                ..Default::default()
            }))
            .await
            .expect("the stream ends cleanly");
        assert_eq!(r.completions[0].text, "partial");
        assert_eq!(r.completions[0].finish_reason, FinishReason::Error);
        assert_eq!(r.completions[1].finish_reason, FinishReason::Stop);
        assert_eq!(server.requests(), 1, "not retried");
    })
    .await;
}

#[tokio::test]
async fn malformed_json_before_the_first_event_is_retried() {
    bounded(async {
        let server = TestServer::start(|_, number| {
            if number == 0 {
                Reply::sse(vec!["data: {\"choices\": [oops\n\n".into()])
            } else {
                chat_stream("fine")
            }
        })
        .await;
        let b = backend(config(vec![server.base()]));
        let r = b
            .generate(request(SamplingParams::default()))
            .await
            .expect("generates");
        assert_eq!(r.completions[0].text, "fine");
        assert_eq!(r.retries, 1);
    })
    .await;
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    bounded(async {
        let server = TestServer::start(|_, _| Reply::Sse {
            payloads: (0..500)
                .map(|i| chat_chunk(0, &format!("t{i} "), None))
                .collect(),
            delay: Duration::from_millis(20),
            cut: false,
        })
        .await;
        let b = backend(config(vec![server.base()]));
        let mut stream = b
            .stream(request(SamplingParams::default()))
            .await
            .expect("opens");
        for _ in 0..2 {
            let event = stream
                .next_event()
                .await
                .expect("an event")
                .expect("no error");
            assert!(matches!(event, StreamEvent::Delta { .. }));
        }
        assert_eq!(server.write_failures(), 0);
        drop(stream);
        assert!(
            server.wait_for_write_failure(Duration::from_secs(5)).await,
            "the server never noticed the closed connection"
        );
    })
    .await;
}

#[tokio::test]
async fn a_client_side_stop_closes_the_connection() {
    bounded(async {
        let server = TestServer::start(|seen, _| {
            assert_eq!(seen.body["stop"], serde_json::json!(["<a>"]));
            let mut payloads = vec![chat_chunk(0, "x <", None), chat_chunk(0, "b> y", None)];
            payloads.extend((0..500).map(|_| chat_chunk(0, "more ", None)));
            Reply::Sse {
                payloads,
                delay: Duration::from_millis(20),
                cut: false,
            }
        })
        .await;
        let mut c = config(vec![server.base()]);
        c.max_stop_strings = Some(1);
        let b = backend(c);
        let r = b
            .generate(request(SamplingParams {
                stop: vec!["<a>".into(), "<b>".into()],
                ..Default::default()
            }))
            .await
            .expect("generates");
        assert_eq!(r.completions[0].text, "x ");
        assert_eq!(r.completions[0].stop.as_deref(), Some("<b>"));
        assert_eq!(r.completions[0].finish_reason, FinishReason::Stop);
        assert!(server.wait_for_write_failure(Duration::from_secs(5)).await);
    })
    .await;
}

#[tokio::test]
async fn a_failing_replica_is_ejected() {
    bounded(async {
        let bad =
            TestServer::start(|_, _| Reply::json(502, r#"{"error":{"message":"down"}}"#)).await;
        let good = TestServer::start(|_, _| chat_stream("ok")).await;
        let mut c = config(vec![bad.base(), good.base()]);
        c.eject_after_failures = 2;
        c.eject_for_ms = 60_000;
        let b = backend(c);
        let mut retries = 0;
        for _ in 0..8 {
            let r = b
                .generate(request(SamplingParams::default()))
                .await
                .expect("generates");
            assert_eq!(r.completions[0].text, "ok");
            retries += r.retries;
        }
        assert_eq!(bad.requests(), 2, "ejected after two consecutive failures");
        assert_eq!(retries, 2);
        assert_eq!(good.requests(), 8);
    })
    .await;
}

#[tokio::test]
async fn stalls_longer_than_the_request_timeout_are_retried() {
    bounded(async {
        let server = TestServer::start(|_, number| match number {
            0 => Reply::StallBeforeHeaders(Duration::from_secs(3)),
            1 => Reply::StallAfterHeaders(Duration::from_secs(3)),
            _ => chat_stream("ok"),
        })
        .await;
        let mut c = config(vec![server.base()]);
        c.request_timeout_ms = 200;
        let b = backend(c);
        let started = Instant::now();
        let r = b
            .generate(request(SamplingParams::default()))
            .await
            .expect("generates");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(r.completions[0].text, "ok");
        assert_eq!(r.retries, 2);
    })
    .await;
}

#[tokio::test]
async fn a_stall_after_the_first_event_ends_the_choice_in_error() {
    bounded(async {
        let server = TestServer::start(|_, _| Reply::Sse {
            payloads: vec![chat_chunk(0, "a", None), chat_chunk(0, "b", None)],
            delay: Duration::from_secs(3),
            cut: false,
        })
        .await;
        let mut c = config(vec![server.base()]);
        c.request_timeout_ms = 300;
        let b = backend(c);
        let started = Instant::now();
        let r = b
            .generate(request(SamplingParams::default()))
            .await
            .expect("the stream ends cleanly");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(r.completions[0].text, "a");
        assert_eq!(r.completions[0].finish_reason, FinishReason::Error);
        assert_eq!((r.requests, r.retries), (1, 0));
        assert_eq!(server.requests(), 1, "not retried");
    })
    .await;
}

#[tokio::test]
async fn the_deadline_caps_retry_after() {
    bounded(async {
        let server = TestServer::start(|_, _| Reply::Json {
            status: 429,
            headers: vec![("retry-after".into(), "30".into())],
            body: r#"{"error":{"message":"slow down"}}"#.into(),
        })
        .await;
        let mut c = config(vec![server.base()]);
        c.deadline_ms = Some(500);
        let b = backend(c);
        let started = Instant::now();
        let e = b
            .generate(request(SamplingParams::default()))
            .await
            .expect_err("deadline");
        assert!(
            matches!(e, BackendError::Deadline(d) if d == Duration::from_millis(500)),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(server.requests(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_api_key_is_sent_and_never_shown() {
    bounded(async {
        let server = TestServer::start(|seen, _| {
            let auth = seen.header("authorization").unwrap_or_default().to_string();
            Reply::json(
                401,
                &format!(r#"{{"error":{{"message":"bad key {auth}"}}}}"#),
            )
        })
        .await;
        let key = "sk-test-very-secret";
        let b = OpenAiBackend::with_api_key(config(vec![server.base()]), Some(key.into()))
            .expect("valid");
        assert!(!format!("{b:?}").contains(key));
        let e = b
            .generate(request(SamplingParams::default()))
            .await
            .expect_err("unauthorised");
        assert_eq!(
            server.seen()[0].header("authorization"),
            Some("Bearer sk-test-very-secret")
        );
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(key), "{shown}");
        assert!(shown.contains("401"), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn text_prompts_use_the_completions_endpoint() {
    bounded(async {
        let server = TestServer::start(|seen, _| {
            assert_eq!(seen.path, "/v1/completions");
            assert_eq!(seen.body["prompt"], "Q: 2+2?\nA:");
            assert_eq!(seen.body["logprobs"], 2);
            Reply::sse(vec![
                "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\
                 \"choices\":[{\"index\":0,\"text\":\" 4\",\"logprobs\":{\"tokens\":[\" 4\"],\
                 \"token_logprobs\":[null],\"top_logprobs\":[{\" 4\":-0.1,\" 5\":-2.5}]},\
                 \"finish_reason\":\"stop\",\"stop_reason\":\"\\n\"}],\"usage\":null}\n\n"
                    .into(),
                DONE.into(),
            ])
        })
        .await;
        let b = backend(config(vec![server.base()]));
        let r = b
            .generate(GenerationRequest::new(
                Prompt::Text("Q: 2+2?\nA:".into()),
                SamplingParams {
                    top_logprobs: Some(2),
                    ..Default::default()
                },
            ))
            .await
            .expect("generates");
        let c = &r.completions[0];
        assert_eq!(c.text, " 4");
        assert_eq!(c.stop.as_deref(), Some("\n"));
        let tokens = c.tokens.as_ref().expect("logprobs");
        assert_eq!(tokens[0].logprob, None);
        assert_eq!(tokens[0].top.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn rewards_through_the_pooling_api() {
    bounded(async {
        let server = TestServer::start(|seen, _| {
            assert_eq!(seen.path, "/pooling");
            let inputs = seen.body["input"].as_array().expect("a list input");
            assert_eq!(inputs.len(), 2, "one input per trajectory with steps");
            assert!(inputs[0].as_str().unwrap_or_default().ends_with(" ки"));
            Reply::json(
                200,
                r#"{"id":"pool-1","object":"list","created":1,"model":"prm",
                    "data":[{"index":1,"object":"pooling","data":[[2.0,2.0]]},
                            {"index":0,"object":"pooling","data":[[0.9,0.1],[0.2,0.8]]}],
                    "usage":{"prompt_tokens":30,"total_tokens":30}}"#,
            )
        })
        .await;
        let mut c = config(vec![server.base()]);
        c.reward = Some(RewardConfig {
            endpoints: vec![],
            path: "/pooling".into(),
            model: "prm".into(),
            format: RewardFormat::MathShepherd,
            system_prompt: None,
            task: None,
        });
        let b = backend(c);
        assert!(b.capabilities().process_rewards);
        let r = b
            .rewards(vec![
                RewardRequest {
                    question: "q".into(),
                    steps: vec!["s1".into(), "s2".into()],
                },
                RewardRequest {
                    question: "q".into(),
                    steps: vec![],
                },
                RewardRequest {
                    question: "q".into(),
                    steps: vec!["t1".into()],
                },
            ])
            .await
            .expect("scores");
        assert_eq!(r[0].step_rewards, vec![0.9, 0.2]);
        assert!(r[1].step_rewards.is_empty());
        assert_eq!(r[2].step_rewards, vec![0.5], "logits are soft-maxed");
        assert_eq!(r.iter().map(|x| x.prompt_tokens).sum::<u64>(), 30);

        // A row count that does not match the steps is rejected.
        let e = b
            .rewards(vec![RewardRequest {
                question: "q".into(),
                steps: vec!["only".into(), "two".into()],
            }])
            .await;
        assert!(e.is_err());
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_streams_share_the_concurrency_limit() {
    bounded(async {
        let server = TestServer::start(|_, _| chat_stream("ok")).await;
        let mut c = config(vec![server.base()]);
        c.max_concurrency = 2;
        let b = Arc::new(backend(c));
        let calls = (0..6).map(|_| {
            let b = b.clone();
            async move { b.generate(request(SamplingParams::default())).await }
        });
        let results = futures_util::future::join_all(calls).await;
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(server.requests(), 6);
        // A split larger than the limit is refused rather than left waiting.
        let mut c = config(vec![server.base()]);
        c.max_concurrency = 2;
        c.n_mode = ponder_openai::NMode::Split;
        let b = backend(c);
        let e = b
            .generate(request(SamplingParams {
                n: 3,
                ..Default::default()
            }))
            .await
            .expect_err("refused");
        assert!(matches!(e, BackendError::InvalidRequest(_)), "{e}");
    })
    .await;
}

#[tokio::test]
async fn a_server_that_ignores_stream_still_works() {
    bounded(async {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                r#"{"id":"c","object":"chat.completion","created":1,"model":"m",
                    "choices":[{"index":0,"message":{"role":"assistant","content":"4"},
                    "finish_reason":"stop"}],
                    "usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
            )
        })
        .await;
        let b = backend(config(vec![server.base()]));
        let r = b
            .generate(request(SamplingParams::default()))
            .await
            .expect("generates");
        assert_eq!(r.completions[0].text, "4");
        assert_eq!(r.completions[0].finish_reason, FinishReason::Stop);
        assert_eq!(r.usage.prompt_tokens, 9);
    })
    .await;
}
