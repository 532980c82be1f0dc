//! `ponder-sim`: a **simulated** OpenAI-compatible reasoning server, for tests and benchmarks.
//! It runs no model and is never a default backend.
//!
//! It answers `POST /v1/chat/completions` and `POST /v1/completions` (streaming or not),
//! `POST /pooling` and `POST /v1/pooling` (a process reward model in vLLM's pooling shape),
//! `GET /v1/models`, `GET /health` and `GET /stats` ([`SimStats`]). Errors use OpenAI's shape
//! `{"error":{"message","type","param","code"}}`.
//!
//! # What the simulated model writes
//!
//! * A prompt holding a question of the synthetic task ([`ponder_task::parse_question`]; in the
//!   last user message first, then the system and user messages together, or the raw prompt) gets
//!   a step-by-step solution in the task's format. Each step is right with the configured
//!   probability for the problem's difficulty ([`StepAccuracy`]); a wrong step writes a
//!   plausibly wrong result (off by a little, or a digit slip) and later steps carry it on, so
//!   the boxed answer is the wrong chain's result. Partial `Step k:` lines already written
//!   (an assistant prefill, or lines after the question in a raw prompt) are continued from the
//!   last written value; a prefix that already has a boxed answer ends at once. A prefix whose
//!   last line is a complete step with no newline after it is continued with a newline first
//!   (so with `stop: ["\n"]` the completion is empty unless `min_tokens` ≥ 1, as on a real
//!   server).
//! * A prompt that asks for a marker line (`FINAL SCORE:`, `SELECTED ITEM:`, `VERDICT:`…; the
//!   rule is in [`marker`]) gets a few sentences of prose ending with the marker and a value: a
//!   score 1–10, an item index, or a word. A judge shown a task question and a solution scores
//!   right solutions 7–10 and wrong ones 1–4, and a selector prefers items with the right
//!   boxed answer. A task prompt asking for an `…ANSWER:` marker gets the solution followed by
//!   `MARKER: <answer>`.
//! * Agent-pipeline prompts (module `agent`): a prompt asking for `PLAN:`, `EDITED PLAN:`,
//!   `FEEDBACK:` or `MERGED OUTPUT:` gets the marker followed by numbered lines; a selection
//!   over `--- candidate N ---` blocks picks among those blocks.
//! * Anything else gets a few sentences of generic prose.
//!
//! The output depends only on the server seed, the request's `seed` (its arrival number at
//! the server when absent), the prompt text and the choice index. At `temperature` 0 the model
//! is greedy: the request seed is ignored and all choices are the same. `top_p`, `top_k` and
//! other sampling fields are accepted and checked but change nothing. Response ids derive from
//! the seeds and `created` is a fixed timestamp, so equal requests get equal bytes (except
//! `cached_tokens`, which depends on what the server saw before). Any `model` name is
//! accepted and echoed.
//!
//! Chat prompts are rendered with a ChatML-like template (`<|im_start|>role\ncontent<|im_end|>\n`,
//! then `<|im_start|>assistant\n`) for counting prompt tokens and the prefix cache.
//!
//! # Tokens and logprobs
//!
//! Tokens come from the simple [`tokenizer`]; they count prompt and completion tokens and are
//! streamed one per SSE chunk. Sampled-token logprobs are high on right steps (−0.005…−0.3),
//! low on a wrong step's number (−0.8…−3) and lower on the rest of a wrong step (−0.1…−0.9);
//! prose gets −0.05…−1.2. `top_logprobs` lists exactly `k` distinct tokens: the sampled one and
//! `k − 1` alternatives (a wrong number's right value among them), in descending order, with
//! probabilities summing below 1.
//!
//! # Process rewards
//!
//! `POST /pooling` (and `/v1/pooling`) takes `input` (a string or a list of strings) or
//! `messages`, and answers vLLM's pooling shape
//! `{"id":"pool-…","object":"list","created","model","data":[{"index","object":"pooling",
//! "data":[[a,b],…]}],"usage":{"prompt_tokens","total_tokens"}}` with one row per step tag:
//! for the Qwen form (steps separated and terminated by `<extra_0>`) rows are
//! `[p_neg, p_pos]`; for the Math-Shepherd form (each step followed by ` ки`) rows are
//! `[p(+), p(-)]`. A right step of a task solution gets a reward of 0.75–0.98; the first wrong
//! step and every later one 0.05–0.4; text without a task question 0.35–0.65. Text with no
//! step tag gets no rows.
//!
//! # Request fields
//!
//! Besides the prompt: `n`, `max_tokens` / `max_completion_tokens`, `min_tokens`, `stop` (a
//! string or a list; not checked before `min_tokens`; the match is left out of the text),
//! `seed`, `temperature`, `top_p`, `top_k`, `logprobs` / `top_logprobs`, `stream`,
//! `stream_options.include_usage`, `continue_final_message` / `add_generation_prompt`
//! (assistant prefill), and vLLM's `include_stop_str_in_output` and `ignore_eos` (exactly
//! `max_tokens` tokens). `echo` and unknown fields are ignored.
//!
//! # Time, faults, quirks
//!
//! See [`LatencyConfig`] and [`FaultConfig`]; `reject_n` and `max_stop` emulate llama.cpp's
//! refusal of `n > 1` and OpenAI's limit of 4 stop strings. `usage.prompt_tokens_details.
//! cached_tokens` reports a simulated prefix cache ([`prefix_cache`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = ponder_sim::spawn(ponder_sim::SimConfig { seed: 7, ..Default::default() }).await?;
//! println!("{}", sim.base_url()); // http://127.0.0.1:PORT/v1
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod agent;
mod config;
mod error;
mod generate;
pub mod marker;
mod math;
pub mod prefix_cache;
mod prm;
mod server;
mod stats;
mod stream;
pub mod tokenizer;
mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use config::{FaultConfig, LatencyConfig, SimConfig, StepAccuracy};
pub use stats::SimStats;

/// How long [`SimHandle::shutdown`] waits for open responses before it stops serving.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running simulated server. Dropping it stops the server (without waiting).
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts a server on `127.0.0.1:config.port` (0: a free port) in a task of the current tokio
/// runtime. Fails on an invalid config (`InvalidInput`, naming the field) or when the port
/// cannot be bound.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    config
        .validate()
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(server::Shared::new(config));
    let app = server::router(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // Tokens are small writes: send them at once.
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle {
        addr,
        shared,
        shutdown: Some(tx),
        task: Some(task),
    })
}

impl SimHandle {
    /// The bound address (always on 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A snapshot of the counters (the same as `GET /stats`).
    pub fn stats(&self) -> SimStats {
        self.shared.counters.snapshot()
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// Stops accepting connections, waits up to 2 s for open responses to finish, then stops
    /// serving.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
