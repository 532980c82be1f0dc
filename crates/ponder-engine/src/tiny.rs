//! Tiny random-weight Llama models written as GGUF, for tests and benchmarks without downloads.
//!
//! The vocabulary is the one Ponder's bundled models use (see `models/README.md`): byte-level
//! GPT-2 style (token `b` is byte `b` through GPT-2's byte-to-character table, no merges), then
//! the control tokens `<|endoftext|>` (256), `<|im_start|>` (257), `<|im_end|>` (258, end of
//! turn) and `<|step|>` (259, the process reward model's step tag), padded to a multiple of 8.
//! The chat template is ChatML.

use std::path::Path;

use ponder_core::SeededRng;

use crate::gguf::{GgufWriter, Value};

/// Token ids of the shared vocabulary.
pub const TOKEN_ENDOFTEXT: u32 = 256;
pub const TOKEN_IM_START: u32 = 257;
pub const TOKEN_IM_END: u32 = 258;
pub const TOKEN_STEP: u32 = 259;
/// Vocabulary size (bytes, four control tokens, four unused).
pub const VOCAB_SIZE: u32 = 264;

/// The ChatML chat template (Jinja), as stored under `tokenizer.chat_template`.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Shape of a tiny model. Defaults: 64-wide, 2 layers, 4 heads (2 KV heads), 128-wide MLP,
/// context 1024, seed 0, f32 weights.
#[derive(Debug, Clone)]
pub struct TinyModel {
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ff: u32,
    pub n_ctx: u32,
    pub seed: u64,
    /// Write the process-reward-model metadata (`ponder.role = prm`, step tag, label tokens).
    pub prm: bool,
    /// Store the weight matrices as f16 (as real checkpoints ship); norms stay f32.
    pub f16: bool,
}

impl Default for TinyModel {
    fn default() -> Self {
        TinyModel {
            n_embd: 64,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 128,
            n_ctx: 1024,
            seed: 0,
            prm: false,
            f16: false,
        }
    }
}

/// GPT-2's byte-to-character table: printable bytes map to themselves, the rest to U+0100….
pub fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// The token strings of the shared vocabulary.
pub fn vocabulary() -> Vec<String> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|step|>"] {
        tokens.push(special.to_string());
    }
    while tokens.len() < VOCAB_SIZE as usize {
        tokens.push(format!("<|unused_{}|>", tokens.len() - 260));
    }
    tokens
}

/// Approximately normal values (sum of four uniforms), scaled to `std`.
fn normal(rng: &mut SeededRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let s: f64 = (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
            (s * (3.0f64).sqrt()) as f32 * std
        })
        .collect()
}

impl TinyModel {
    /// Writes the model to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let head_dim = self.n_embd / self.n_head;
        let kv_dim = head_dim * self.n_head_kv;
        let (e, f, v) = (
            u64::from(self.n_embd),
            u64::from(self.n_ff),
            u64::from(VOCAB_SIZE),
        );
        let mut w = GgufWriter::new();
        let s = |x: &str| Value::String(x.to_string());
        w.add("general.architecture", s("llama"))
            .add("general.name", s("ponder-tiny-random"))
            .add("general.file_type", Value::U32(u32::from(self.f16)))
            .add("llama.context_length", Value::U32(self.n_ctx))
            .add("llama.embedding_length", Value::U32(self.n_embd))
            .add("llama.block_count", Value::U32(self.n_layer))
            .add("llama.feed_forward_length", Value::U32(self.n_ff))
            .add("llama.attention.head_count", Value::U32(self.n_head))
            .add("llama.attention.head_count_kv", Value::U32(self.n_head_kv))
            .add("llama.rope.dimension_count", Value::U32(head_dim))
            .add("llama.rope.freq_base", Value::F32(10000.0))
            .add("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
            .add("llama.vocab_size", Value::U32(VOCAB_SIZE))
            .add("tokenizer.ggml.model", s("gpt2"))
            .add("tokenizer.ggml.pre", s("default"))
            .add(
                "tokenizer.ggml.tokens",
                Value::Array(vocabulary().into_iter().map(Value::String).collect()),
            )
            .add(
                "tokenizer.ggml.token_type",
                Value::Array(
                    (0..VOCAB_SIZE)
                        .map(|i| Value::I32(if i < 256 { 1 } else { 3 }))
                        .collect(),
                ),
            )
            .add("tokenizer.ggml.merges", Value::Array(Vec::new()))
            .add("tokenizer.ggml.bos_token_id", Value::U32(TOKEN_ENDOFTEXT))
            .add("tokenizer.ggml.eos_token_id", Value::U32(TOKEN_IM_END))
            .add(
                "tokenizer.ggml.padding_token_id",
                Value::U32(TOKEN_ENDOFTEXT),
            )
            .add("tokenizer.ggml.add_bos_token", Value::Bool(false))
            .add("tokenizer.chat_template", s(CHATML_TEMPLATE));
        if self.prm {
            w.add("ponder.role", s("prm"))
                .add("ponder.prm.step_tag", s("<|step|>"))
                .add("ponder.prm.good_token", s("+"))
                .add("ponder.prm.bad_token", s("-"));
        } else {
            w.add("ponder.role", s("policy"));
        }

        let mut rng = SeededRng::derive(self.seed, "tiny-model-weights");
        let f16 = self.f16;
        let matrix = |w: &mut GgufWriter, name: &str, dims: &[u64], data: &[f32]| {
            if f16 {
                w.add_f16(name, dims, data);
            } else {
                w.add_f32(name, dims, data);
            }
        };
        let ones = |n: u64| vec![1.0f32; n as usize];
        let mat_std = |fan_in: u64| 1.0 / (fan_in as f32).sqrt();
        matrix(
            &mut w,
            "token_embd.weight",
            &[e, v],
            &normal(&mut rng, (e * v) as usize, 1.0),
        );
        for l in 0..self.n_layer {
            let name = |t: &str| format!("blk.{l}.{t}.weight");
            let kv = u64::from(kv_dim);
            w.add_f32(&name("attn_norm"), &[e], &ones(e));
            matrix(
                &mut w,
                &name("attn_q"),
                &[e, e],
                &normal(&mut rng, (e * e) as usize, mat_std(e)),
            );
            matrix(
                &mut w,
                &name("attn_k"),
                &[e, kv],
                &normal(&mut rng, (e * kv) as usize, mat_std(e)),
            );
            matrix(
                &mut w,
                &name("attn_v"),
                &[e, kv],
                &normal(&mut rng, (e * kv) as usize, mat_std(e)),
            );
            matrix(
                &mut w,
                &name("attn_output"),
                &[e, e],
                &normal(&mut rng, (e * e) as usize, mat_std(e)),
            );
            w.add_f32(&name("ffn_norm"), &[e], &ones(e));
            matrix(
                &mut w,
                &name("ffn_gate"),
                &[e, f],
                &normal(&mut rng, (e * f) as usize, mat_std(e)),
            );
            matrix(
                &mut w,
                &name("ffn_up"),
                &[e, f],
                &normal(&mut rng, (e * f) as usize, mat_std(e)),
            );
            matrix(
                &mut w,
                &name("ffn_down"),
                &[f, e],
                &normal(&mut rng, (e * f) as usize, mat_std(f)),
            );
        }
        w.add_f32("output_norm.weight", &[e], &ones(e));
        // Logits scaled up so the random model has a peaked, seed-sensitive distribution.
        matrix(
            &mut w,
            "output.weight",
            &[e, v],
            &normal(&mut rng, (e * v) as usize, 3.0 * mat_std(e)),
        );
        w.write(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_table() {
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(0), 'Ā');
        assert_eq!(byte_to_char(0xAD), 'Ń');
        let v = vocabulary();
        assert_eq!(v.len(), VOCAB_SIZE as usize);
        assert_eq!(v[TOKEN_IM_END as usize], "<|im_end|>");
        let distinct: std::collections::HashSet<&String> = v.iter().collect();
        assert_eq!(distinct.len(), v.len());
    }
}
