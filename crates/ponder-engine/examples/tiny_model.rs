//! Writes a random-weight Llama GGUF with Ponder's byte-level vocabulary, for benchmarks.
//!
//! `cargo run --release -p ponder-engine --example tiny_model -- OUT.gguf [--embd 64]
//! [--layers 2] [--heads 4] [--kv-heads 2] [--ff 128] [--ctx 1024] [--seed 0] [--prm] [--f16]`

use std::path::PathBuf;

use ponder_engine::tiny::TinyModel;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut model = TinyModel::default();
    let mut out = None;
    while let Some(arg) = args.next() {
        let mut num = |name: &str| -> u64 {
            let v = args
                .next()
                .unwrap_or_else(|| fail(&format!("{name} needs a value")));
            v.parse()
                .unwrap_or_else(|_| fail(&format!("{name}: `{v}` is not a number")))
        };
        match arg.as_str() {
            "--embd" => model.n_embd = num("--embd") as u32,
            "--layers" => model.n_layer = num("--layers") as u32,
            "--heads" => model.n_head = num("--heads") as u32,
            "--kv-heads" => model.n_head_kv = num("--kv-heads") as u32,
            "--ff" => model.n_ff = num("--ff") as u32,
            "--ctx" => model.n_ctx = num("--ctx") as u32,
            "--seed" => model.seed = num("--seed"),
            "--prm" => model.prm = true,
            "--f16" => model.f16 = true,
            other if other.starts_with("--") => fail(&format!("unknown flag {other}")),
            path => out = Some(PathBuf::from(path)),
        }
    }
    let out = out.unwrap_or_else(|| fail("usage: tiny_model OUT.gguf [flags]"));
    if model.n_embd % model.n_head != 0 || model.n_head % model.n_head_kv != 0 {
        fail("--embd must be a multiple of --heads, and --heads of --kv-heads");
    }
    if let Err(e) = model.write(&out) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
    let per_layer = 2 * model.n_embd * model.n_embd
        + 2 * model.n_embd * (model.n_embd / model.n_head * model.n_head_kv)
        + 3 * model.n_embd * model.n_ff;
    let params = u64::from(model.n_layer) * u64::from(per_layer)
        + 2 * u64::from(model.n_embd) * u64::from(ponder_engine::tiny::VOCAB_SIZE);
    println!("wrote {} ({params} parameters)", out.display());
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}
