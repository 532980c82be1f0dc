//! Answering a validated job: pass-through calls and strategy runs, as JSON bodies or as
//! Server-Sent Events in OpenAI's chunk format.
//!
//! Cancellation: everything a request runs lives inside the handler future or the response
//! body stream. When the client goes away, hyper drops them, which drops the strategy future,
//! which drops its upstream streams (closing their connections; see `ponder_core::stream` on
//! why stopping is asynchronous). Nothing is spawned that could outlive the request.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use ponder_core::{
    run_strategy, Backend, Completion, CompletionStream, FinishReason, GenerationResponse, RunCost,
    StrategyError, StrategyResult, StreamEvent,
};
use ponder_openai::wire::{
    finish_reason_str, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatDelta,
    ChatLogprobs, ChatResponseMessage, ChatTokenLogprob, CompletionChoice, CompletionLogprobs,
    CompletionResponse, PromptTokensDetails, StopReason, Usage,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::admission::{Permit, Rejected};
use crate::error::ApiError;
use crate::metrics::{InFlight, RunRecord};
use crate::request::{Endpoint, Job, StrategyJob, Work};
use crate::state::{now_unix, AppState};
use crate::tap::{Progress, Tap};

/// Largest piece of text put into one content chunk of a streamed strategy answer.
const CONTENT_CHUNK_BYTES: usize = 1024;

/// Guards a response holds until it is complete: its admission permit and in-flight count.
struct Held {
    _permit: Permit,
    _in_flight: InFlight,
}

/// Runs a job and answers it.
pub async fn answer(state: Arc<AppState>, job: Job, in_flight: InFlight) -> Response {
    let gate = match job.work {
        Work::Passthrough { .. } => &state.passthrough_gate,
        Work::Strategy(_) => &state.strategy_gate,
    };
    let permit = match gate.admit().await {
        Ok(p) => p,
        Err(why) => {
            let what = match job.work {
                Work::Passthrough { .. } => "pass-through requests",
                Work::Strategy(_) => "strategy requests",
            };
            let why = match why {
                Rejected::QueueFull => format!(
                    "{} {what} running, queue of {} full",
                    gate.capacity(),
                    state.limits.queue
                ),
                Rejected::Waited => format!(
                    "{} {what} running, waited {} ms in the queue",
                    gate.capacity(),
                    state.limits.queue_timeout.as_millis()
                ),
            };
            return state.rejected(&why).into_response();
        }
    };
    let held = Held {
        _permit: permit,
        _in_flight: in_flight,
    };
    let deadline = Instant::now() + job.deadline;
    let meta = Meta {
        id: state.next_id(match job.endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        }),
        created: now_unix(),
        model: job.model,
        endpoint: job.endpoint,
        include_usage: job.include_usage,
        deadline_ms: job.deadline.as_millis(),
    };
    match job.work {
        Work::Passthrough { request, logprobs } => {
            let progress = Arc::new(Progress::default());
            let backend: Arc<dyn Backend> = Arc::new(Tap::new(
                state.backend.clone(),
                progress,
                state.metrics.clone(),
            ));
            if job.stream {
                let opened = tokio::time::timeout_at(deadline, backend.stream(request)).await;
                match opened {
                    Err(_) => ApiError::deadline(meta.deadline_ms).into_response(),
                    Ok(Err(e)) => ApiError::from(e).into_response(),
                    Ok(Ok(upstream)) => {
                        sse_passthrough(meta, upstream, logprobs, deadline, held, backend)
                    }
                }
            } else {
                let done = tokio::time::timeout_at(deadline, backend.generate(request)).await;
                drop(held);
                match done {
                    Err(_) => ApiError::deadline(meta.deadline_ms).into_response(),
                    Ok(Err(e)) => ApiError::from(e).into_response(),
                    Ok(Ok(response)) => json_response(passthrough_body(&meta, &response, logprobs)),
                }
            }
        }
        Work::Strategy(job_s) => {
            let record = state.metrics.start_run(&job_s.name);
            let progress = Arc::new(Progress::default());
            let backend: Arc<dyn Backend> = Arc::new(Tap::new(
                state.backend.clone(),
                progress.clone(),
                state.metrics.clone(),
            ));
            let seed = job_s.input.seed;
            if job.stream {
                sse_strategy(
                    meta,
                    job_s,
                    backend,
                    progress,
                    state.progress_interval,
                    deadline,
                    held,
                    record,
                )
            } else {
                let run = run_strategy(job_s.strategy.as_ref(), backend, &job_s.input);
                let done = tokio::time::timeout_at(deadline, run).await;
                drop(held);
                let mut response = match outcome(done, &meta, record) {
                    Ok(result) => json_response(strategy_body(&meta, &result, job_s.details)),
                    Err(e) => e.into_response(),
                };
                set_seed_header(&mut response, seed);
                response
            }
        }
    }
}

/// The deadline or the run's error as an [`ApiError`], recording the run's outcome.
fn outcome(
    done: Result<Result<StrategyResult, StrategyError>, tokio::time::error::Elapsed>,
    meta: &Meta,
    record: RunRecord,
) -> Result<StrategyResult, ApiError> {
    match done {
        Err(_) => {
            record.finish("deadline");
            Err(ApiError::deadline(meta.deadline_ms))
        }
        Ok(Err(e)) => {
            record.finish("error");
            Err(e.into())
        }
        Ok(Ok(result)) => {
            record.finish("ok");
            Ok(result)
        }
    }
}

fn set_seed_header(response: &mut Response, seed: u64) {
    if let Ok(v) = HeaderValue::from_str(&seed.to_string()) {
        response.headers_mut().insert("x-ponder-seed", v);
    }
}

/// What every body or chunk of one response repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    include_usage: bool,
    deadline_ms: u128,
}

fn json_response(body: Value) -> Response {
    let mut response = (axum::http::StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn sse_response<S>(events: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Ask buffering proxies (nginx) to pass events on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn data(value: &impl serde::Serialize) -> Bytes {
    match serde_json::to_string(value) {
        Ok(text) => Bytes::from(format!("data: {text}\n\n")),
        Err(_) => Bytes::from_static(b": unserialisable chunk skipped\n\n"),
    }
}

fn error_event(e: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", e.json()))
}

const DONE: &[u8] = b"data: [DONE]\n\n";

fn wire_usage(usage: ponder_core::Usage) -> Usage {
    Usage::from(usage)
}

fn finish_str(reason: FinishReason) -> String {
    finish_reason_str(reason).to_string()
}

// ---------------------------------------------------------------------------------------------
// Pass-through
// ---------------------------------------------------------------------------------------------

fn chat_logprobs(c: &Completion) -> Option<ChatLogprobs> {
    c.tokens.as_ref().map(|tokens| ChatLogprobs {
        content: Some(tokens.iter().map(ChatTokenLogprob::from).collect()),
        refusal: None,
    })
}

fn passthrough_body(meta: &Meta, response: &GenerationResponse, logprobs: bool) -> Value {
    let usage = wire_usage(response.usage);
    let value = match meta.endpoint {
        Endpoint::Chat => serde_json::to_value(ChatCompletion::<Vec<u8>> {
            id: Cow::Borrowed(&meta.id),
            object: Cow::Borrowed("chat.completion"),
            created: meta.created,
            model: Cow::Borrowed(&meta.model),
            choices: response
                .completions
                .iter()
                .map(|c| ChatChoice {
                    index: c.index,
                    message: ChatResponseMessage {
                        role: "assistant".into(),
                        content: Some(c.text.clone()),
                        ..Default::default()
                    },
                    logprobs: if logprobs { chat_logprobs(c) } else { None },
                    finish_reason: Some(finish_str(c.finish_reason)),
                    stop_reason: c.stop.clone().map(StopReason::Text),
                })
                .collect(),
            usage: Some(usage),
            system_fingerprint: None,
        }),
        Endpoint::Completions => serde_json::to_value(CompletionResponse {
            id: Cow::Borrowed(&meta.id),
            object: Cow::Borrowed("text_completion"),
            created: meta.created,
            model: Cow::Borrowed(&meta.model),
            choices: response
                .completions
                .iter()
                .map(|c| CompletionChoice {
                    index: c.index,
                    text: c.text.clone(),
                    logprobs: if logprobs {
                        c.tokens.as_deref().map(CompletionLogprobs::from)
                    } else {
                        None
                    },
                    finish_reason: Some(finish_str(c.finish_reason)),
                    stop_reason: c.stop.clone().map(StopReason::Text),
                })
                .collect(),
            usage: Some(usage),
            system_fingerprint: None,
        }),
    };
    value.unwrap_or_else(|_| json!({}))
}

/// One streamed chunk with one choice.
fn chunk(
    meta: &Meta,
    index: u32,
    delta: ChatDelta,
    text: String,
    logprobs: Option<Vec<ponder_core::TokenLogprob>>,
    finish: Option<String>,
) -> Bytes {
    match meta.endpoint {
        Endpoint::Chat => data(&ChatCompletionChunk::<Vec<u8>> {
            id: Cow::Borrowed(&meta.id),
            object: Cow::Borrowed("chat.completion.chunk"),
            created: meta.created,
            model: Cow::Borrowed(&meta.model),
            choices: vec![ChatChunkChoice {
                index,
                delta,
                logprobs: logprobs.map(|t| ChatLogprobs {
                    content: Some(t.iter().map(ChatTokenLogprob::from).collect()),
                    refusal: None,
                }),
                finish_reason: finish,
                stop_reason: None,
            }],
            usage: None,
            system_fingerprint: None,
        }),
        Endpoint::Completions => data(&CompletionResponse {
            id: Cow::Borrowed(&meta.id),
            object: Cow::Borrowed("text_completion"),
            created: meta.created,
            model: Cow::Borrowed(&meta.model),
            choices: vec![CompletionChoice {
                index,
                text,
                logprobs: logprobs.map(|t| CompletionLogprobs::from(&t[..])),
                finish_reason: finish,
                stop_reason: None,
            }],
            usage: None,
            system_fingerprint: None,
        }),
    }
}

/// The final usage-only chunk (`choices: []`).
fn usage_chunk(meta: &Meta, usage: Usage, ponder: Option<Value>) -> Bytes {
    let object = match meta.endpoint {
        Endpoint::Chat => "chat.completion.chunk",
        Endpoint::Completions => "text_completion",
    };
    let mut value = json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "choices": [],
        "usage": usage,
    });
    if let (Some(p), Some(o)) = (ponder, value.as_object_mut()) {
        o.insert("ponder".into(), p);
    }
    data(&value)
}

fn content_delta(text: &str) -> ChatDelta {
    ChatDelta {
        content: Some(text.to_string()),
        ..Default::default()
    }
}

fn role_delta() -> ChatDelta {
    ChatDelta {
        role: Some("assistant".into()),
        content: Some(String::new()),
        ..Default::default()
    }
}

/// State of a pass-through SSE body.
struct PassthroughStream {
    meta: Meta,
    upstream: CompletionStream,
    logprobs: bool,
    deadline: Instant,
    pending: VecDeque<Bytes>,
    usage: Option<ponder_core::Usage>,
    done: bool,
    _held: Held,
    _backend: Arc<dyn Backend>,
}

fn sse_passthrough(
    meta: Meta,
    upstream: CompletionStream,
    logprobs: bool,
    deadline: Instant,
    held: Held,
    backend: Arc<dyn Backend>,
) -> Response {
    let mut pending = VecDeque::new();
    if meta.endpoint == Endpoint::Chat {
        for index in 0..upstream.n() {
            pending.push_back(chunk(&meta, index, role_delta(), String::new(), None, None));
        }
    }
    let state = PassthroughStream {
        meta,
        upstream,
        logprobs,
        deadline,
        pending,
        usage: None,
        done: false,
        _held: held,
        _backend: backend,
    };
    let events = stream::unfold(state, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(b), s));
            }
            if s.done {
                return None;
            }
            let next = tokio::time::timeout_at(s.deadline, s.upstream.next_event()).await;
            match next {
                Err(_) => {
                    s.upstream.stop();
                    s.pending
                        .push_back(error_event(&ApiError::deadline(s.meta.deadline_ms)));
                    s.done = true;
                }
                Ok(None) => {
                    if s.meta.include_usage {
                        let usage = wire_usage(s.usage.unwrap_or_default());
                        s.pending.push_back(usage_chunk(&s.meta, usage, None));
                    }
                    s.pending.push_back(Bytes::from_static(DONE));
                    s.done = true;
                }
                Ok(Some(Err(e))) => {
                    s.pending.push_back(error_event(&ApiError::from(e)));
                    s.done = true;
                }
                Ok(Some(Ok(event))) => match event {
                    StreamEvent::Delta {
                        index,
                        text,
                        tokens,
                        ..
                    } => {
                        let lp = (s.logprobs && !tokens.is_empty()).then_some(tokens);
                        let delta = content_delta(&text);
                        s.pending
                            .push_back(chunk(&s.meta, index, delta, text, lp, None));
                    }
                    StreamEvent::Finished { index, reason, .. } => {
                        s.pending.push_back(chunk(
                            &s.meta,
                            index,
                            ChatDelta::default(),
                            String::new(),
                            None,
                            Some(finish_str(reason)),
                        ));
                    }
                    StreamEvent::Usage(u) => s.usage = Some(u),
                },
            }
        }
    });
    sse_response(events)
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// The candidate whose text answers: the selected one, else the first.
fn chosen(result: &StrategyResult) -> Option<&ponder_core::Candidate> {
    let outcome = &result.outcome;
    outcome
        .selected
        .and_then(|i| outcome.candidates.get(i))
        .or_else(|| outcome.candidates.first())
}

/// `usage` of a strategy response: every token the run spent (reward-model reads count as
/// prompt tokens).
fn strategy_usage(cost: &RunCost) -> Usage {
    let prompt = cost.prompt_tokens + cost.reward_tokens;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: cost.completion_tokens,
        total_tokens: prompt + cost.completion_tokens,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(cost.cached_tokens),
        }),
        completion_tokens_details: None,
    }
}

/// The `ponder` object: answer, candidates, usage breakdown, seed.
fn details(result: &StrategyResult) -> Value {
    let cost = &result.cost;
    json!({
        "strategy": result.strategy,
        "answer": result.outcome.answer,
        "selected": result.outcome.selected,
        "seed": cost.seed,
        "candidates": result.outcome.candidates.iter().map(|c| json!({
            "text": c.text,
            "answer": c.answer,
            "votes": c.votes,
            "score": c.score,
            "finish_reason": c.finish_reason,
            "completion_tokens": c.completion_tokens,
        })).collect::<Vec<_>>(),
        "usage": {
            "requests": cost.requests,
            "retries": cost.retries,
            "prompt_tokens": cost.prompt_tokens,
            "completion_tokens": cost.completion_tokens,
            "cached_tokens": cost.cached_tokens,
            "reward_tokens": cost.reward_tokens,
            "aborted": cost.aborted,
            "tokens_saved": cost.tokens_saved,
            "elapsed_ms": cost.elapsed_ms,
        },
        "details": result.outcome.details,
    })
}

fn strategy_body(meta: &Meta, result: &StrategyResult, with_details: bool) -> Value {
    let (text, finish) = match chosen(result) {
        Some(c) => (c.text.clone(), finish_str(c.finish_reason)),
        None => (String::new(), "stop".to_string()),
    };
    let usage = strategy_usage(&result.cost);
    let value = match meta.endpoint {
        Endpoint::Chat => serde_json::to_value(ChatCompletion::<Vec<u8>> {
            id: Cow::Borrowed(&meta.id),
            object: Cow::Borrowed("chat.completion"),
            created: meta.created,
            model: Cow::Borrowed(&meta.model),
            choices: vec![ChatChoice {
                index: 0,
                message: ChatResponseMessage {
                    role: "assistant".into(),
                    content: Some(text),
                    ..Default::default()
                },
                logprobs: None,
                finish_reason: Some(finish),
                stop_reason: None,
            }],
            usage: Some(usage),
            system_fingerprint: None,
        }),
        Endpoint::Completions => serde_json::to_value(CompletionResponse {
            id: Cow::Borrowed(&meta.id),
            object: Cow::Borrowed("text_completion"),
            created: meta.created,
            model: Cow::Borrowed(&meta.model),
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: Some(finish),
                stop_reason: None,
            }],
            usage: Some(usage),
            system_fingerprint: None,
        }),
    };
    let mut value = value.unwrap_or_else(|_| json!({}));
    if with_details {
        if let Some(o) = value.as_object_mut() {
            o.insert("ponder".into(), details(result));
        }
    }
    value
}

/// The chunks of a decided strategy answer: role, content pieces, finish (with the `ponder`
/// object when asked), usage when asked, `[DONE]`.
fn strategy_chunks(meta: &Meta, result: &StrategyResult, with_details: bool) -> VecDeque<Bytes> {
    let mut out = VecDeque::new();
    let (text, finish) = match chosen(result) {
        Some(c) => (c.text.as_str(), finish_str(c.finish_reason)),
        None => ("", "stop".to_string()),
    };
    if meta.endpoint == Endpoint::Chat {
        out.push_back(chunk(meta, 0, role_delta(), String::new(), None, None));
    }
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(CONTENT_CHUNK_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        out.push_back(chunk(
            meta,
            0,
            content_delta(piece),
            piece.to_string(),
            None,
            None,
        ));
        rest = tail;
    }
    let finish_chunk = chunk(
        meta,
        0,
        ChatDelta::default(),
        String::new(),
        None,
        Some(finish),
    );
    let ponder = with_details.then(|| details(result));
    match (&ponder, meta.include_usage) {
        // Without a usage chunk, the `ponder` object rides on the finish chunk.
        (Some(p), false) => {
            let mut value: Value = finish_chunk
                .strip_prefix(b"data: ")
                .and_then(|j| serde_json::from_slice(j).ok())
                .unwrap_or_else(|| json!({}));
            if let Some(o) = value.as_object_mut() {
                o.insert("ponder".into(), p.clone());
            }
            out.push_back(data(&value));
        }
        _ => out.push_back(finish_chunk),
    }
    if meta.include_usage {
        out.push_back(usage_chunk(meta, strategy_usage(&result.cost), ponder));
    }
    out.push_back(Bytes::from_static(DONE));
    out
}

type RunFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<StrategyResult, StrategyError>> + Send>,
>;

/// State of a strategy SSE body: the run itself lives here, so dropping the body cancels it.
struct StrategyStream {
    meta: Meta,
    run: Option<RunFuture>,
    record: Option<RunRecord>,
    progress: Arc<Progress>,
    ticker: tokio::time::Interval,
    started: Instant,
    deadline: Instant,
    details: bool,
    pending: VecDeque<Bytes>,
    held: Option<Held>,
}

#[allow(clippy::too_many_arguments)]
fn sse_strategy(
    meta: Meta,
    job: StrategyJob,
    backend: Arc<dyn Backend>,
    progress: Arc<Progress>,
    interval: Duration,
    deadline: Instant,
    held: Held,
    record: RunRecord,
) -> Response {
    let seed = job.input.seed;
    let strategy = job.strategy;
    let input = job.input;
    let run: RunFuture =
        Box::pin(async move { run_strategy(strategy.as_ref(), backend, &input).await });
    let started = Instant::now();
    let mut ticker = tokio::time::interval_at(started + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = VecDeque::new();
    pending.push_back(Bytes::from(format!(
        ": ponder strategy={} seed={seed}\n\n",
        job.name
    )));
    let state = StrategyStream {
        meta,
        run: Some(run),
        record: Some(record),
        progress,
        ticker,
        started,
        deadline,
        details: job.details,
        pending,
        held: Some(held),
    };
    let events = stream::unfold(state, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(b), s));
            }
            let run = s.run.as_mut()?;
            tokio::select! {
                done = run => {
                    s.run = None;
                    s.held = None;
                    let elapsed = Ok::<_, tokio::time::error::Elapsed>(done);
                    let record = s.record.take()?;
                    match outcome(elapsed, &s.meta, record) {
                        Ok(result) => s.pending = strategy_chunks(&s.meta, &result, s.details),
                        Err(e) => s.pending.push_back(error_event(&e)),
                    }
                }
                _ = tokio::time::sleep_until(s.deadline) => {
                    s.run = None;
                    s.held = None;
                    if let Some(record) = s.record.take() {
                        record.finish("deadline");
                    }
                    s.pending.push_back(error_event(&ApiError::deadline(s.meta.deadline_ms)));
                }
                _ = s.ticker.tick() => {
                    let line = s.progress.line(s.started.elapsed().as_millis());
                    s.pending.push_back(Bytes::from(line));
                }
            }
        }
    });
    let mut response = sse_response(events);
    set_seed_header(&mut response, seed);
    response
}
