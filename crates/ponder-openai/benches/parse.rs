//! Parse throughput of streamed chat chunks carrying top-20 logprobs: SSE framing, JSON into the
//! wire types, and conversion to `ponder_core` token records — the client's per-token work.
//!
//! `cargo bench -p ponder-openai --bench parse` prints chunks per second and MB/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ponder_core::TokenLogprob;
use ponder_openai::sse::SseParser;
use ponder_openai::wire::{ChatCompletionChunk, SkipBytes};

/// One vLLM-style chunk: one token, its logprob and 20 alternatives with their bytes.
fn chunk(i: usize) -> String {
    let top: Vec<serde_json::Value> = (0..20)
        .map(|k| {
            let token = format!(" tok{}_{k}", i % 97);
            serde_json::json!({
                "token": token,
                "logprob": -0.0123456789 * (k as f64 + 1.0) - (i % 7) as f64,
                "bytes": token.as_bytes(),
            })
        })
        .collect();
    let token = format!(" tok{}_0", i % 97);
    let value = serde_json::json!({
        "id": "chatcmpl-5f2c3d0e9b8a4f7e8d6c5b4a39281706",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": "Qwen/Qwen3-8B",
        "choices": [{
            "index": i % 4,
            "delta": {"content": token},
            "logprobs": {"content": [{
                "token": token,
                "logprob": -0.0123456789,
                "bytes": token.as_bytes(),
                "top_logprobs": top,
            }]},
            "finish_reason": null,
        }],
        "usage": null,
    });
    format!("data: {value}\n\n")
}

/// Parses `stream` in five trials of about a second each with `B` as the `bytes`
/// representation; returns the median trial's chunks per second and bytes per second.
fn measure<B>(stream: &[u8], n_chunks: u64) -> (f64, f64)
where
    B: for<'de> serde::Deserialize<'de>,
{
    let mut trials: Vec<(f64, f64)> = (0..5).map(|_| trial::<B>(stream, n_chunks)).collect();
    trials.sort_by(|a, b| a.0.total_cmp(&b.0));
    trials[trials.len() / 2]
}

/// One trial of about a second, on this thread only (so the rate is per core).
fn trial<B>(stream: &[u8], n_chunks: u64) -> (f64, f64)
where
    B: for<'de> serde::Deserialize<'de>,
{
    let mut rounds = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let mut sse = SseParser::new();
        // Network-sized pieces, split anywhere.
        for piece in stream.chunks(16 * 1024) {
            sse.feed(piece);
            while let Some(event) = sse.next_event() {
                let chunk: ChatCompletionChunk<'_, B> =
                    serde_json::from_slice(event.data).expect("valid chunk");
                for choice in chunk.choices {
                    let tokens: Vec<TokenLogprob> = choice
                        .logprobs
                        .and_then(|l| l.content)
                        .map(|c| c.into_iter().map(TokenLogprob::from).collect())
                        .unwrap_or_default();
                    black_box((choice.delta.content, tokens));
                }
            }
        }
        rounds += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    (
        (rounds * n_chunks) as f64 / secs,
        (rounds as f64 * stream.len() as f64) / secs,
    )
}

fn main() {
    const N: u64 = 2_000;
    let stream: String = (0..N as usize).map(chunk).collect();
    println!(
        "chat chunks with top-20 logprobs, {} bytes each:",
        stream.len() as u64 / N
    );
    let (chunks, bytes) = measure::<SkipBytes>(stream.as_bytes(), N);
    println!(
        "  client path (bytes skipped): {chunks:.0} chunks/s = tokens/s on one core, {:.1} MB/s (median of 5)",
        bytes / 1e6
    );
    let (chunks, bytes) = measure::<Vec<u8>>(stream.as_bytes(), N);
    println!(
        "  bytes kept:                  {chunks:.0} chunks/s = tokens/s on one core, {:.1} MB/s (median of 5)",
        bytes / 1e6
    );
}
