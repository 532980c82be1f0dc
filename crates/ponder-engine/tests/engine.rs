//! The engine against tiny random-weight GGUF models written into a temp dir: forks equal fresh
//! prefills, rollback equals a fresh decode, logprobs equal an independent log-softmax, early
//! stop frees the sequence, prefixes are decoded once, PRM scoring is incremental, f16 weights
//! compute what f32 ones do, bad files
//! give clear errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ponder_core::{
    Backend, FinishReason, GenerationRequest, GenerationResponse, Message, Prompt, RewardRequest,
    SamplingParams, StreamEvent,
};
use ponder_engine::tiny::TinyModel;
use ponder_engine::{BatchItem, Engine, EngineConfig, Runner, RunnerConfig};

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponder-engine-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn tiny(label: &str, prm: bool) -> PathBuf {
    let path = temp_dir(label).join("tiny.gguf");
    TinyModel {
        prm,
        seed: 5,
        ..Default::default()
    }
    .write(&path)
    .expect("write tiny model");
    path
}

fn engine(path: &Path) -> Engine {
    Engine::load(path, EngineConfig::default()).expect("load")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn request(prompt: &str, n: u32, seed: u64, max_tokens: u32) -> GenerationRequest {
    GenerationRequest::new(
        Prompt::user(prompt),
        SamplingParams {
            n,
            seed: Some(seed),
            max_tokens: Some(max_tokens),
            temperature: Some(1.0),
            top_logprobs: Some(3),
            ..Default::default()
        },
    )
}

fn generate(e: &Engine, req: GenerationRequest) -> GenerationResponse {
    runtime().block_on(e.generate(req)).expect("generate")
}

fn token_ids(r: &GenerationResponse, i: usize) -> Vec<String> {
    r.completions[i]
        .tokens
        .as_ref()
        .expect("logprobs")
        .iter()
        .map(|t| t.token.clone())
        .collect()
}

#[test]
fn forks_produce_the_same_tokens_as_separate_prefills() {
    let path = tiny("fork", false);
    let prompt = "What is 17*23? Think step by step.";
    let forked = generate(&engine(&path), request(prompt, 4, 11, 24));
    assert_eq!(forked.completions.len(), 4);
    assert_eq!(forked.usage.prompt_tokens as usize, {
        let e = engine(&path);
        runtime()
            .block_on(e.tokenize(Prompt::user(prompt)))
            .expect("tokenize")
            .len()
    });
    for i in 0..4 {
        // A fresh engine each time: a real, separate prefill with seed 11 + i.
        let alone = generate(&engine(&path), request(prompt, 1, 11 + i as u64, 24));
        assert_eq!(
            alone.completions[0].text, forked.completions[i].text,
            "completion {i}"
        );
        assert_eq!(token_ids(&alone, 0), token_ids(&forked, i));
    }
    // Different seeds give different samples (the model is random, not constant).
    let texts: std::collections::HashSet<&String> =
        forked.completions.iter().map(|c| &c.text).collect();
    assert!(texts.len() > 1, "{texts:?}");
}

#[test]
fn prompt_is_prefilled_once_for_n_samples_and_reused_across_requests() {
    let path = tiny("prefix", false);
    let e = engine(&path);
    let r = generate(&e, request("Tom has 12 apples.", 8, 1, 8));
    let p = r.usage.prompt_tokens;
    assert_eq!(r.usage.cached_tokens, Some(0));
    let s = e.stats();
    assert_eq!(s.prompt_tokens, p);
    assert_eq!(s.prompt_tokens_decoded, p, "one prefill for eight samples");
    assert_eq!(s.forks, 7);

    // The same prompt again: everything but the last token comes from the cache.
    let again = generate(&e, request("Tom has 12 apples.", 1, 2, 8));
    assert_eq!(again.usage.cached_tokens, Some(p - 1));
    assert_eq!(e.stats().prompt_tokens_decoded, p + 1);

    // Extending a trajectory by one step (assistant prefill) decodes only the new step.
    let step = |partial: &str| {
        GenerationRequest::new(
            Prompt::prefill(vec![Message::user("Tom has 12 apples.")], partial),
            SamplingParams {
                max_tokens: Some(4),
                seed: Some(3),
                ..Default::default()
            },
        )
    };
    generate(&e, step("Step 1: add 12 + 5 = 17."));
    let before = e.stats().prompt_tokens_decoded;
    let next = generate(&e, step("Step 1: add 12 + 5 = 17.\nStep 2:"));
    let decoded = e.stats().prompt_tokens_decoded - before;
    // Byte-level vocabulary: "\nStep 2:" is 8 new tokens.
    assert_eq!(
        decoded, 8,
        "decoded {decoded} of {} prompt tokens",
        next.usage.prompt_tokens
    );
    assert_eq!(next.usage.cached_tokens, Some(next.usage.prompt_tokens - 8));
}

#[test]
fn truncation_then_continuation_equals_a_fresh_decode() {
    let path = tiny("rollback", false);
    // Both KV layouts: per-sequence streams (forks copy) and unified (forks share cells).
    for unified in [false, true] {
        rollback_and_fork(&path, unified);
    }
}

fn rollback_and_fork(path: &Path, unified: bool) {
    let config = RunnerConfig {
        unified,
        ..Default::default()
    };
    let mut r = Runner::load(path, &config).expect("load");
    let a = r.tokenize("<|im_start|>user\nabc def<|im_end|>\n", true);
    let b = r.tokenize("wrong turn", false);
    let c = r.tokenize("right", false);
    let items = |seq: i32, start: usize, toks: &[u32]| -> Vec<BatchItem> {
        toks.iter()
            .enumerate()
            .map(|(i, &t)| BatchItem {
                token: t,
                pos: (start + i) as u32,
                seq,
                logits: i + 1 == toks.len(),
            })
            .collect()
    };
    let mut last = Vec::new();
    r.decode(&items(0, 0, &a), |_, _| {}).expect("decode a");
    r.decode(&items(0, a.len(), &b), |_, _| {})
        .expect("decode b");
    r.truncate(0, a.len() as u32);
    r.decode(&items(0, a.len(), &c), |_, l| last = l.to_vec())
        .expect("decode c");

    let mut fresh_toks = a.clone();
    fresh_toks.extend(&c);
    let mut fresh = Vec::new();
    r.decode(&items(1, 0, &fresh_toks), |_, l| fresh = l.to_vec())
        .expect("fresh");
    assert_eq!(last.len(), fresh.len());
    let diff = last
        .iter()
        .zip(&fresh)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff < 1e-3,
        "unified {unified}: max logit difference {diff}"
    );

    // A fork continues exactly like its source.
    r.fork(1, 2, fresh_toks.len() as u32);
    let next = r.tokenize("!", false);
    let (mut l1, mut l2) = (Vec::new(), Vec::new());
    r.decode(&items(1, fresh_toks.len(), &next), |_, l| l1 = l.to_vec())
        .expect("seq 1");
    r.decode(&items(2, fresh_toks.len(), &next), |_, l| l2 = l.to_vec())
        .expect("seq 2");
    let diff = l1
        .iter()
        .zip(&l2)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "unified {unified}: fork differs by {diff}");
}

/// Decodes `toks` into sequence 0 of `r` and returns the last position's logits.
fn prefill(r: &mut Runner, toks: &[u32]) -> Vec<f32> {
    let items: Vec<BatchItem> = toks
        .iter()
        .enumerate()
        .map(|(i, &t)| BatchItem {
            token: t,
            pos: i as u32,
            seq: 0,
            logits: i + 1 == toks.len(),
        })
        .collect();
    let mut logits = Vec::new();
    r.decode(&items, |_, l| logits = l.to_vec())
        .expect("decode");
    logits
}

/// Last-position logits of `prompt`, straight from a runner.
fn last_logits(path: &Path, prompt: &str) -> Vec<f32> {
    let mut r = Runner::load(path, &RunnerConfig::default()).expect("load");
    let toks = r.tokenize(prompt, true);
    prefill(&mut r, &toks)
}

#[test]
fn a_batch_in_any_order_decodes_as_its_sequences_alone_in_one_pass_per_id_run() {
    let path = tiny("order", false);
    let prompt = "<|im_start|>user\nWhat is 17*23?<|im_end|>\n<|im_start|>assistant\n";
    let prefilled = || {
        let mut r = Runner::load(
            &path,
            &RunnerConfig {
                sequences: 8,
                ..Default::default()
            },
        )
        .expect("load");
        let toks = r.tokenize(prompt, true);
        prefill(&mut r, &toks);
        (r, toks.len() as u32)
    };
    let step = |seq: i32, len: u32| BatchItem {
        token: 40 + seq as u32,
        pos: len,
        seq,
        logits: true,
    };
    // Each sequence alone, on a runner of its own.
    let alone: Vec<Vec<f32>> = (0..8)
        .map(|s| {
            let (mut r, len) = prefilled();
            r.fork(0, s, len);
            let mut out = Vec::new();
            r.decode(&[step(s, len)], |_, l| out = l.to_vec())
                .expect("decode");
            out
        })
        .collect();
    let (mut r, len) = prefilled();
    for s in 1..8 {
        r.fork(0, s, len);
    }
    let (calls, passes) = r.decode_counts();
    let order = [5, 2, 7, 0, 1, 6, 3, 4];
    let items: Vec<BatchItem> = order.iter().map(|&s| step(s, len)).collect();
    let mut got: Vec<Option<Vec<f32>>> = vec![None; 8];
    r.decode(&items, |i, l| got[i] = Some(l.to_vec()))
        .expect("decode");
    for (i, &s) in order.iter().enumerate() {
        let logits = got[i].as_ref().expect("logits for every item");
        let diff = logits
            .iter()
            .zip(&alone[s as usize])
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-3, "item {i} (sequence {s}) differs by {diff}");
    }
    // Ids 0..=7 are one run, whatever the order they came in: one pass.
    assert_eq!(r.decode_counts(), (calls + 1, passes + 1));
    // Ids 0, 3 and 6 are three runs.
    let items: Vec<BatchItem> = [6, 0, 3].iter().map(|&s| step(s, len + 1)).collect();
    r.decode(&items, |_, _| {}).expect("decode");
    assert_eq!(r.decode_counts(), (calls + 2, passes + 4));
}

#[test]
fn running_sequences_are_moved_together_without_changing_their_tokens() {
    let path = tiny("compact", false);
    let long = |prompt: &str, seed: u64| {
        let mut r = request(prompt, 4, seed, 30);
        r.params.min_tokens = Some(30);
        r
    };
    // A, B and C take ids 0-3, 4-7 and 8-11; B ends after 3 tokens and leaves a gap between A
    // and C, which the engine closes by moving C's sequences down.
    let e = engine(&path);
    let (a, b, c) = runtime().block_on(async {
        tokio::join!(
            e.generate(long("Tom has 12 apples.", 1)),
            e.generate(request("Ann has 3 pears.", 4, 2, 3)),
            e.generate(long("Sam has 7 plums.", 3)),
        )
    });
    let (a, c) = (a.expect("A"), c.expect("C"));
    b.expect("B");
    let stats = e.stats();
    assert!(stats.moves > 0, "{stats:?}");
    // Once the gap is closed every step is one pass; before, at most two a step.
    assert!(
        stats.compute_passes <= stats.decode_calls + stats.moves,
        "{stats:?}"
    );
    // Moved or not, every completion is what it is alone.
    for (prompt, seed, got) in [("Tom has 12 apples.", 1, &a), ("Sam has 7 plums.", 3, &c)] {
        let alone = generate(&engine(&path), long(prompt, seed));
        for i in 0..4 {
            assert_eq!(token_ids(&alone, i), token_ids(got, i), "{prompt} #{i}");
        }
    }
}

#[test]
fn an_f16_model_computes_what_its_f32_twin_does() {
    let dir = temp_dir("f16");
    let (f32_path, f16_path) = (dir.join("f32.gguf"), dir.join("f16.gguf"));
    let shape = TinyModel {
        seed: 5,
        ..Default::default()
    };
    shape.write(&f32_path).expect("write f32");
    TinyModel { f16: true, ..shape }
        .write(&f16_path)
        .expect("write f16");
    let header = ponder_engine::gguf::read_header(&f16_path).expect("header");
    let q = header
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .expect("attn_q");
    assert_eq!(q.ty, ponder_engine::gguf::TensorType::F16);
    let prompt = "<|im_start|>user\nWhat is 17*23?<|im_end|>\n<|im_start|>assistant\n";
    let (a, b) = (
        last_logits(&f32_path, prompt),
        last_logits(&f16_path, prompt),
    );
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    // f16 keeps 11 significant bits: the logits move by rounding noise, not more.
    assert!(scale > 1.0, "{scale}");
    assert!(
        diff < 0.005 * scale,
        "max difference {diff} at scale {scale}"
    );
}

#[test]
fn logprobs_equal_an_independent_log_softmax() {
    let path = tiny("logprobs", false);
    let e = engine(&path);
    let prompt = Prompt::user("2+2=");
    let toks = runtime()
        .block_on(e.tokenize(prompt.clone()))
        .expect("tokenize");
    let mut r = Runner::load(&path, &RunnerConfig::default()).expect("load");
    let logits = prefill(&mut r, &toks);
    // Log-softmax written out here, independently of the crate's sampler.
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let z: f64 = logits.iter().map(|&x| (x as f64 - m).exp()).sum();
    let lsm: Vec<f64> = logits.iter().map(|&x| x as f64 - m - z.ln()).collect();
    let mut order: Vec<usize> = (0..lsm.len()).collect();
    order.sort_by(|&a, &b| lsm[b].partial_cmp(&lsm[a]).expect("finite"));

    let greedy = GenerationRequest::new(
        prompt,
        SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(1),
            top_logprobs: Some(5),
            ..Default::default()
        },
    );
    let out = generate(&e, greedy);
    let rec = &out.completions[0].tokens.as_ref().expect("logprobs")[0];
    let lp = rec.logprob.expect("logprob");
    assert!(
        (lp - lsm[order[0]]).abs() < 1e-4,
        "{lp} vs {}",
        lsm[order[0]]
    );
    assert_eq!(rec.top.len(), 5);
    for (k, alt) in rec.top.iter().enumerate() {
        assert!(
            (alt.logprob - lsm[order[k]]).abs() < 1e-4,
            "rank {k}: {} vs {}",
            alt.logprob,
            lsm[order[k]]
        );
    }
    let total: f64 = lsm.iter().map(|x| x.exp()).sum();
    assert!((total - 1.0).abs() < 1e-9);
}

#[test]
fn an_early_stop_frees_the_sequence() {
    let path = tiny("stop", false);
    // One sequence only: a second request can start only if the first one's is freed.
    let e = Arc::new(
        Engine::load(
            &path,
            EngineConfig {
                runner: RunnerConfig {
                    sequences: 1,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .expect("load"),
    );
    let rt = runtime();
    rt.block_on(async {
        let mut stream = e
            .stream(request("count forever", 1, 1, 900))
            .await
            .expect("stream");
        let mut deltas = 0;
        while deltas < 3 {
            match stream.next_event().await {
                Some(Ok(StreamEvent::Delta { .. })) => deltas += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        stream.stop();
        drop(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped_at = e.stats().generated_tokens;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(e.stats().generated_tokens, stopped_at, "still generating");
        assert!(stopped_at < 900);
        let next = tokio::time::timeout(
            Duration::from_secs(30),
            e.generate(request("next", 1, 2, 4)),
        )
        .await
        .expect("the second request got the freed sequence")
        .expect("generate");
        assert_eq!(next.completions[0].finish_reason, FinishReason::Length);
    });
}

#[test]
fn stop_strings_and_limits() {
    let path = tiny("stops", false);
    let e = engine(&path);
    let greedy = |stop: Vec<String>, min_tokens: Option<u32>| {
        GenerationRequest::new(
            Prompt::user("Say something."),
            SamplingParams {
                temperature: Some(0.0),
                max_tokens: Some(40),
                min_tokens,
                stop,
                ..Default::default()
            },
        )
    };
    let full = generate(&e, greedy(vec![], None));
    let text = full.completions[0].text.clone();
    assert_eq!(full.completions[0].finish_reason, FinishReason::Length);
    assert_eq!(full.usage.completion_tokens, 40);
    // Cut at a stop string taken from the middle of the greedy text (on a char boundary).
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 12, "{text:?}");
    let stop: String = chars[10..12].iter().collect();
    let first = text.find(&stop).expect("present");
    let cut = generate(&e, greedy(vec![stop.clone(), "never-there".into()], None));
    assert_eq!(cut.completions[0].text, text[..first]);
    assert_eq!(cut.completions[0].finish_reason, FinishReason::Stop);
    assert_eq!(cut.completions[0].stop.as_deref(), Some(stop.as_str()));
}

#[test]
fn process_rewards_are_incremental() {
    let path = tiny("prm", true);
    let e = engine(&path);
    assert!(e.capabilities().process_rewards);
    let rt = runtime();
    let steps = |k: usize| -> Vec<String> {
        (1..=k)
            .map(|i| format!("Step {i}: add {i} + 1 = {}.", i + 1))
            .collect()
    };
    let one = rt
        .block_on(e.rewards(vec![RewardRequest {
            question: "q".into(),
            steps: steps(2),
        }]))
        .expect("rewards");
    assert_eq!(one[0].step_rewards.len(), 2);
    assert!(one[0].step_rewards.iter().all(|r| (0.0..=1.0).contains(r)));
    let first_cost = e.stats().reward_tokens_decoded;
    let two = rt
        .block_on(e.rewards(vec![RewardRequest {
            question: "q".into(),
            steps: steps(3),
        }]))
        .expect("rewards");
    assert_eq!(two[0].step_rewards.len(), 3);
    assert_eq!(&two[0].step_rewards[..2], &one[0].step_rewards[..]);
    let second_cost = e.stats().reward_tokens_decoded - first_cost;
    assert!(
        second_cost < first_cost / 2,
        "the third step cost {second_cost} tokens, the first two {first_cost}"
    );
    // A policy model without PRM metadata offers no rewards.
    let policy = engine(&tiny("prm-policy", false));
    assert!(!policy.capabilities().process_rewards);
}

#[test]
fn a_reward_model_file_loads_on_the_first_reward_request() {
    let prm = tiny("lazy-prm", true);
    let policy_path = tiny("lazy-policy", false);
    let e = engine(&policy_path)
        .with_reward_model_file(&prm, EngineConfig::default())
        .expect("a PRM file");
    assert!(e.capabilities().process_rewards);
    assert_eq!(
        e.reward_stats(),
        None,
        "nothing is loaded before a reward request"
    );
    let request = || {
        vec![RewardRequest {
            question: "q".into(),
            steps: vec![
                "Step 1: add 1 + 1 = 2.".into(),
                "Step 2: add 2 + 2 = 4.".into(),
            ],
        }]
    };
    let rt = runtime();
    let lazy = rt.block_on(e.rewards(request())).expect("rewards");
    let stats = e.reward_stats().expect("loaded by the request");
    assert!(stats.reward_tokens_decoded > 0);
    // The same rewards as the PRM loaded up front.
    let eager = rt
        .block_on(engine(&prm).rewards(request()))
        .expect("rewards");
    assert_eq!(lazy[0].step_rewards, eager[0].step_rewards);
    // A second request uses the loaded engine (its counters keep growing).
    rt.block_on(e.rewards(request())).expect("rewards");
    assert!(e.reward_stats().expect("loaded").reward_tokens >= 2 * stats.reward_tokens);

    // The file is checked when the engine is built, not at the first request.
    let not_prm = engine(&policy_path)
        .with_reward_model_file(&policy_path, EngineConfig::default())
        .expect_err("a policy is not a PRM")
        .to_string();
    assert!(
        not_prm.contains("ponder.prm.step_tag") && not_prm.contains("tiny.gguf"),
        "{not_prm}"
    );
    let missing = engine(&policy_path)
        .with_reward_model_file(
            &temp_dir("lazy-missing").join("prm.gguf"),
            EngineConfig::default(),
        )
        .expect_err("missing")
        .to_string();
    assert!(missing.contains("does not exist"), "{missing}");
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = temp_dir("bad");
    let err = |p: &Path| {
        Engine::load(p, EngineConfig::default())
            .expect_err("must fail")
            .to_string()
    };

    let missing = err(&dir.join("missing.gguf"));
    assert!(missing.contains("does not exist"), "{missing}");

    let text = dir.join("notes.gguf");
    std::fs::write(&text, "these are not weights").expect("write");
    let e = err(&text);
    assert!(
        e.contains("not a GGUF file") && e.contains("notes.gguf"),
        "{e}"
    );

    let good = tiny("bad-src", false);
    let bytes = std::fs::read(&good).expect("read");
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = err(&cut);
    assert!(e.contains("truncated") && e.contains("cut.gguf"), "{e}");
}
