//! Response bodies: the SSE stream (one token per chunk, one timer per stream, abort
//! accounting on drop), the non-streaming JSON body, and slot admission.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use futures_core::Stream;
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::generate::{self, ChoicePlan};
use crate::server::{Shared, CREATED};
use crate::stats::{add, Counters};
use crate::wire::Endpoint;

/// What every chunk or body of one response repeats.
#[derive(Debug, Clone)]
pub(crate) struct ResponseMeta {
    pub id: String,
    pub model: String,
    pub endpoint: Endpoint,
    pub logprobs: Option<usize>,
    pub include_usage: bool,
}

/// Token counts of one response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

impl Usage {
    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// A slot held by one generation; gives it back on drop.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    shared: Arc<Shared>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.shared.counters.leave_active();
    }
}

/// Counts a generation as queued while it lives.
struct QueueGuard<'a>(&'a Counters);

impl<'a> QueueGuard<'a> {
    fn new(counters: &'a Counters) -> Self {
        add(&counters.queued, 1);
        QueueGuard(counters)
    }
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.0
            .queued
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Waits for a free slot (at once when slots are unlimited).
pub(crate) async fn acquire_slot(shared: Arc<Shared>) -> SlotGuard {
    let permit = match shared.slots.clone() {
        Some(semaphore) => {
            let _queued = QueueGuard::new(&shared.counters);
            semaphore.acquire_owned().await.ok()
        }
        None => None,
    };
    shared.counters.enter_active();
    SlotGuard {
        shared,
        _permit: permit,
    }
}

type SlotFuture = Pin<Box<dyn Future<Output = SlotGuard> + Send>>;

enum Phase {
    /// Waiting for a slot.
    Queued(SlotFuture),
    Running,
    Done,
}

/// How long a cut response waits after its last bytes before the connection is closed, so that
/// they reach the client.
const CUT_FLUSH: Duration = Duration::from_millis(20);

fn cut_error() -> std::io::Error {
    std::io::Error::other("response cut (injected by ponder-sim)")
}

/// Most ticks put into one frame when the stream has fallen behind its schedule.
const MAX_TICKS_PER_FRAME: usize = 64;

/// The SSE body of a streaming response.
///
/// Tick `t` (from 0) produces token `t` of every choice that has one, at
/// `start + ttft + t · tpot`, where `start` is when the stream got its slot. A stream that
/// falls behind (a busy machine) catches up by putting the due ticks into one frame. One
/// `Sleep` serves all ticks. If the body is dropped before its end (the client went away),
/// `Drop` counts the stream as aborted and its remaining planned tokens as not generated.
pub(crate) struct SimStream {
    shared: Arc<Shared>,
    plans: Vec<ChoicePlan>,
    meta: ResponseMeta,
    /// `data: {"id":…,"choices":[{"index":` — the start of every choice chunk.
    head: String,
    /// `}]…}\n\n` — the end of every choice chunk.
    tail: String,
    usage: Usage,
    phase: Phase,
    slot: Option<SlotGuard>,
    sleep: Pin<Box<Sleep>>,
    /// The tick the timer is set for.
    armed: Option<usize>,
    first_tick_at: Instant,
    ttft: Duration,
    tpot: Duration,
    next_tick: usize,
    total_ticks: usize,
    cut_tick: Option<usize>,
    malformed_tick: Option<usize>,
    produced: u64,
    planned: u64,
    /// The stream reached its end (or was cut on purpose): dropping it is no abort.
    ended: bool,
}

impl SimStream {
    pub fn new(
        shared: Arc<Shared>,
        plans: Vec<ChoicePlan>,
        meta: ResponseMeta,
        usage: Usage,
        cut: Option<f64>,
        malformed: Option<f64>,
    ) -> Self {
        let object = match meta.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        };
        let model = serde_json::to_string(&meta.model).unwrap_or_else(|_| "\"\"".to_string());
        let head = format!(
            "data: {{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{CREATED},\"model\":{model},\"choices\":[{{\"index\":",
            meta.id
        );
        let tail = if meta.include_usage {
            "}],\"usage\":null}\n\n".to_string()
        } else {
            "}]}\n\n".to_string()
        };
        let total_ticks = plans
            .iter()
            .map(|p| p.total_tokens)
            .max()
            .unwrap_or(0)
            .max(1);
        let planned = plans.iter().map(|p| p.total_tokens as u64).sum();
        let latency = shared.config.latency;
        let phase = Phase::Queued(Box::pin(acquire_slot(shared.clone())));
        SimStream {
            plans,
            head,
            tail,
            usage,
            phase,
            slot: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            first_tick_at: Instant::now(),
            ttft: Duration::from_millis(latency.ttft_ms),
            tpot: Duration::from_millis(latency.tpot_ms),
            next_tick: 0,
            cut_tick: cut.map(|f| ((total_ticks as f64 * f) as usize).min(total_ticks - 1)),
            malformed_tick: malformed
                .map(|f| ((total_ticks as f64 * f) as usize).min(total_ticks - 1)),
            total_ticks,
            produced: 0,
            planned,
            ended: false,
            meta,
            shared,
        }
    }

    fn deadline(&self, tick: usize) -> Instant {
        self.first_tick_at + self.tpot * tick as u32
    }

    /// The chunks of ticks `from..to` (and the end of the stream after the last tick).
    fn frame(&mut self, from: usize, to: usize) -> Bytes {
        let mut buf: Vec<u8> = Vec::with_capacity((to - from) * self.plans.len() * 160 + 64);
        let mut produced = 0u64;
        let mut finished = 0u64;
        for tick in from..to {
            let tick_start = buf.len();
            if tick == 0 && self.meta.endpoint == Endpoint::Chat {
                for index in 0..self.plans.len() {
                    self.choice_chunk(&mut buf, index, |b| {
                        b.extend_from_slice(
                            b",\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null",
                        )
                    });
                }
            }
            for index in 0..self.plans.len() {
                let total = self.plans[index].total_tokens;
                if tick < total {
                    produced += 1;
                }
                if tick < self.plans[index].ends.len() {
                    self.token_chunk(&mut buf, index, tick);
                }
                if tick + 1 == total || (total == 0 && tick == 0) {
                    finished += 1;
                    let reason = self.plans[index].finish.as_str();
                    let endpoint = self.meta.endpoint;
                    self.choice_chunk(&mut buf, index, |b| {
                        match endpoint {
                            Endpoint::Chat => b.extend_from_slice(
                                b",\"delta\":{},\"logprobs\":null,\"finish_reason\":\"",
                            ),
                            Endpoint::Completions => b.extend_from_slice(
                                b",\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"",
                            ),
                        }
                        b.extend_from_slice(reason.as_bytes());
                        b.push(b'"');
                    });
                }
            }
            if self.malformed_tick.is_some_and(|m| m <= tick) {
                // Invalid JSON: the first chunk of this tick loses the second half of its JSON.
                let written = &buf[tick_start..];
                if let Some(end) = written.windows(2).position(|w| w == b"\n\n") {
                    self.malformed_tick = None;
                    let json_start = tick_start + "data: ".len();
                    let json_end = tick_start + end;
                    let keep = (json_end - json_start) / 2;
                    buf.drain(json_start + keep..json_end);
                }
            }
        }
        if to == self.total_ticks {
            if self.meta.include_usage {
                let object = match self.meta.endpoint {
                    Endpoint::Chat => "chat.completion.chunk",
                    Endpoint::Completions => "text_completion",
                };
                let chunk = json!({
                    "id": self.meta.id,
                    "object": object,
                    "created": CREATED,
                    "model": self.meta.model,
                    "choices": [],
                    "usage": self.usage.to_json(),
                });
                buf.extend_from_slice(b"data: ");
                buf.extend_from_slice(chunk.to_string().as_bytes());
                buf.extend_from_slice(b"\n\n");
            }
            buf.extend_from_slice(b"data: [DONE]\n\n");
        }
        self.produced += produced;
        let counters = &self.shared.counters;
        add(&counters.tokens_generated, produced);
        add(&counters.completions, finished);
        Bytes::from(buf)
    }

    /// One chunk of choice `index`: `head`, the index, what `body` writes, `tail`.
    fn choice_chunk(&self, buf: &mut Vec<u8>, index: usize, body: impl FnOnce(&mut Vec<u8>)) {
        buf.extend_from_slice(self.head.as_bytes());
        let _ = write!(buf, "{index}");
        body(buf);
        buf.extend_from_slice(self.tail.as_bytes());
    }

    fn token_chunk(&self, buf: &mut Vec<u8>, index: usize, tick: usize) {
        let plan = &self.plans[index];
        let token = plan.token(tick);
        let endpoint = self.meta.endpoint;
        let logprobs = self.meta.logprobs;
        self.choice_chunk(buf, index, |b| {
            match endpoint {
                Endpoint::Chat => {
                    b.extend_from_slice(b",\"delta\":{\"content\":");
                    write_json_str(b, token);
                    b.extend_from_slice(b"},\"logprobs\":");
                    match logprobs {
                        Some(k) => {
                            b.extend_from_slice(b"{\"content\":[");
                            write_chat_logprob(b, plan, tick, k);
                            b.extend_from_slice(b"]}");
                        }
                        None => b.extend_from_slice(b"null"),
                    }
                }
                Endpoint::Completions => {
                    b.extend_from_slice(b",\"text\":");
                    write_json_str(b, token);
                    b.extend_from_slice(b",\"logprobs\":");
                    match logprobs {
                        Some(k) => write_completion_logprobs(b, plan, tick..tick + 1, k),
                        None => b.extend_from_slice(b"null"),
                    }
                }
            }
            b.extend_from_slice(b",\"finish_reason\":null");
        });
    }

    fn finish(&mut self) {
        self.ended = true;
        self.phase = Phase::Done;
        self.slot = None;
    }
}

impl Stream for SimStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Queued(slot) => {
                    let Poll::Ready(guard) = slot.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    this.slot = Some(guard);
                    this.first_tick_at = Instant::now() + this.ttft;
                    this.phase = Phase::Running;
                }
                Phase::Running => {
                    let tick = this.next_tick;
                    let timed = !this.ttft.is_zero() || !this.tpot.is_zero();
                    let mut now = None;
                    if timed {
                        let deadline = this.deadline(tick);
                        let t = Instant::now();
                        if t < deadline {
                            if this.armed != Some(tick) {
                                this.sleep.as_mut().reset(deadline);
                                this.armed = Some(tick);
                            }
                            if this.sleep.as_mut().poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                        }
                        now = Some(t.max(deadline));
                    }
                    let due = match now {
                        Some(now) if !this.tpot.is_zero() => {
                            let elapsed = now.saturating_duration_since(this.first_tick_at);
                            (elapsed.as_nanos() / this.tpot.as_nanos()) as usize + 1
                        }
                        _ => this.total_ticks,
                    };
                    let mut to = due
                        .max(tick + 1)
                        .min(tick + MAX_TICKS_PER_FRAME)
                        .min(this.total_ticks);
                    if let Some(cut) = this.cut_tick {
                        if cut == tick {
                            // Let what was sent reach the client, then cut.
                            if this.armed != Some(usize::MAX) {
                                this.sleep.as_mut().reset(Instant::now() + CUT_FLUSH);
                                this.armed = Some(usize::MAX);
                            }
                            if this.sleep.as_mut().poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                            this.cut_tick = None;
                            this.finish();
                            return Poll::Ready(Some(Err(cut_error())));
                        }
                        if cut < to {
                            to = cut;
                        }
                    }
                    let frame = this.frame(tick, to);
                    this.next_tick = to;
                    if to == this.total_ticks {
                        add(&this.shared.counters.streams_completed, 1);
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
        }
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if !self.ended {
            let counters = &self.shared.counters;
            add(&counters.streams_aborted, 1);
            add(
                &counters.tokens_not_generated,
                self.planned.saturating_sub(self.produced),
            );
        }
    }
}

/// Writes `s` as a JSON string.
fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

fn write_bytes_array(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'[');
    for (i, b) in s.bytes().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let _ = write!(buf, "{b}");
    }
    buf.push(b']');
}

/// `{"token","logprob","bytes","top_logprobs":[…]}` for returned token `i`.
fn write_chat_logprob(buf: &mut Vec<u8>, plan: &ChoicePlan, i: usize, k: usize) {
    let token = plan.token(i);
    buf.extend_from_slice(b"{\"token\":");
    write_json_str(buf, token);
    let _ = write!(buf, ",\"logprob\":{},\"bytes\":", plan.scores[i].logprob);
    write_bytes_array(buf, token);
    buf.extend_from_slice(b",\"top_logprobs\":[");
    for (j, (alt, lp)) in generate::top_logprobs(plan, i, k).iter().enumerate() {
        if j > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"token\":");
        write_json_str(buf, alt);
        let _ = write!(buf, ",\"logprob\":{lp},\"bytes\":");
        write_bytes_array(buf, alt);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}");
}

/// The legacy completions `logprobs` object for returned tokens `range`.
fn write_completion_logprobs(
    buf: &mut Vec<u8>,
    plan: &ChoicePlan,
    range: std::ops::Range<usize>,
    k: usize,
) {
    buf.extend_from_slice(b"{\"tokens\":[");
    for (n, i) in range.clone().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        write_json_str(buf, plan.token(i));
    }
    buf.extend_from_slice(b"],\"token_logprobs\":[");
    for (n, i) in range.clone().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        let _ = write!(buf, "{}", plan.scores[i].logprob);
    }
    buf.extend_from_slice(b"],\"top_logprobs\":[");
    for (n, i) in range.clone().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        buf.push(b'{');
        for (j, (alt, lp)) in generate::top_logprobs(plan, i, k).iter().enumerate() {
            if j > 0 {
                buf.push(b',');
            }
            write_json_str(buf, alt);
            let _ = write!(buf, ":{lp}");
        }
        buf.push(b'}');
    }
    buf.extend_from_slice(b"],\"text_offset\":[");
    for (n, i) in range.enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        let _ = write!(buf, "{}", plan.offset(i));
    }
    buf.extend_from_slice(b"]}");
}

/// The body of a non-streaming response.
pub(crate) fn full_response(meta: &ResponseMeta, plans: &[ChoicePlan], usage: &Usage) -> Value {
    let choices: Vec<Value> = plans
        .iter()
        .enumerate()
        .map(|(index, plan)| {
            let logprobs = match meta.logprobs {
                None => Value::Null,
                Some(k) => {
                    let mut buf = Vec::new();
                    match meta.endpoint {
                        Endpoint::Chat => {
                            buf.extend_from_slice(b"{\"content\":[");
                            for i in 0..plan.ends.len() {
                                if i > 0 {
                                    buf.push(b',');
                                }
                                write_chat_logprob(&mut buf, plan, i, k);
                            }
                            buf.extend_from_slice(b"]}");
                        }
                        Endpoint::Completions => {
                            write_completion_logprobs(&mut buf, plan, 0..plan.ends.len(), k)
                        }
                    }
                    serde_json::from_slice(&buf).unwrap_or(Value::Null)
                }
            };
            match meta.endpoint {
                Endpoint::Chat => json!({
                    "index": index,
                    "message": {"role": "assistant", "content": plan.text},
                    "logprobs": logprobs,
                    "finish_reason": plan.finish.as_str(),
                }),
                Endpoint::Completions => json!({
                    "index": index,
                    "text": plan.text,
                    "logprobs": logprobs,
                    "finish_reason": plan.finish.as_str(),
                }),
            }
        })
        .collect();
    let object = match meta.endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Completions => "text_completion",
    };
    json!({
        "id": meta.id,
        "object": object,
        "created": CREATED,
        "model": meta.model,
        "choices": choices,
        "usage": usage.to_json(),
    })
}

/// A body that sends `first`, waits a moment, then fails (the connection is closed without
/// the end of the body).
pub(crate) struct CutBody {
    first: Option<Bytes>,
    sleep: Pin<Box<Sleep>>,
    done: bool,
}

impl CutBody {
    pub fn new(first: Bytes) -> Self {
        CutBody {
            first: Some(first),
            sleep: Box::pin(tokio::time::sleep(CUT_FLUSH)),
            done: false,
        }
    }
}

impl Stream for CutBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            this.sleep.as_mut().reset(Instant::now() + CUT_FLUSH);
            return Poll::Ready(Some(Ok(first)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.done = true;
        Poll::Ready(Some(Err(cut_error())))
    }
}
