//! Times raw decoding on a [`Runner`]: a prompt, then single-token steps, for a sequence count.
//!
//! `cargo run --release -p ponder-engine --example decode_speed -- MODEL.gguf [SEQUENCES] [THREADS]`

use std::time::Instant;

use ponder_engine::{BatchItem, Runner, RunnerConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: decode_speed MODEL.gguf [SEQUENCES] [THREADS]");
    let sequences: u32 = args.next().map_or(256, |s| s.parse().expect("sequences"));
    let threads: Option<u32> = args.next().map(|s| s.parse().expect("threads"));
    let mut r = Runner::load(
        path.as_ref(),
        &RunnerConfig {
            sequences,
            threads,
            ..Default::default()
        },
    )
    .expect("load");
    let prompt = r.tokenize("<|im_start|>user\nNora has 71 seeds. She buys 716 more seeds. How many seeds does Nora have now?<|im_end|>\n<|im_start|>assistant\n", true);
    let items: Vec<BatchItem> = prompt
        .iter()
        .enumerate()
        .map(|(i, &t)| BatchItem {
            token: t,
            pos: i as u32,
            seq: 0,
            logits: i + 1 == prompt.len(),
        })
        .collect();
    let t0 = Instant::now();
    r.decode(&items, |_, _| {}).expect("prefill");
    let prefill = t0.elapsed();
    let t1 = Instant::now();
    let steps = 100;
    for k in 0..steps {
        let item = BatchItem {
            token: 32,
            pos: (prompt.len() + k) as u32,
            seq: 0,
            logits: true,
        };
        r.decode(&[item], |_, _| {}).expect("step");
    }
    let per = t1.elapsed() / steps as u32;
    println!(
        "sequences {sequences}: prefill {} tokens in {prefill:?}, {per:?} per single-token step",
        prompt.len()
    );
    // A batch: every sequence forked from the prompt, all advanced together.
    r.truncate(0, prompt.len() as u32);
    // STRIDE=2 spreads the sequences over every other id (as idle cached sequences leave gaps).
    let stride: i32 = std::env::var("STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let width = (sequences as i32 / stride).min(64);
    for s in 1..width {
        r.fork(0, s * stride, prompt.len() as u32);
    }
    // STEPS (default 50) sets how far the batch decodes; the rate is printed every 50 steps, so
    // the cost of attention over a growing context shows.
    let steps: usize = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let t2 = Instant::now();
    let mut lap = Instant::now();
    for k in 0..steps {
        if k > 0 && k % 50 == 0 {
            let per = lap.elapsed() / 50;
            println!(
                "  context {}: {per:?} per step, {:.0} tokens/s",
                prompt.len() + k,
                f64::from(width) / per.as_secs_f64()
            );
            lap = Instant::now();
        }
        let items: Vec<BatchItem> = (0..width)
            .map(|s| BatchItem {
                token: 32 + (s as u32 % 50),
                pos: (prompt.len() + k) as u32,
                seq: s,
                logits: true,
            })
            .collect();
        r.decode(&items, |_, _| {}).expect("batch step");
    }
    let per = t2.elapsed() / steps as u32;
    println!(
        "  {width} sequences together: {per:?} per step, {:.0} tokens/s",
        f64::from(width) / per.as_secs_f64()
    );
}
