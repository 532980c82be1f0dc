//! The llama.cpp side: one loaded model, one context with a unified multi-sequence KV cache,
//! batched decoding, and the KV operations forks and rollbacks are made of.
//!
//! Every llama.cpp type stays in this module. A [`Runner`] is used from one thread (the
//! engine's worker, or a test); it is not shared.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;

use crate::error::EngineError;
use crate::gguf;
use crate::trie::SeqId;

/// Most sequences one context holds (llama.cpp's `LLAMA_MAX_SEQ`).
pub const MAX_SEQUENCES: u32 = 256;

/// How a model is loaded. Defaults: one KV stream per sequence (not unified), 64 sequences of
/// up to 2,048 tokens (or the model's context, if shorter), all CPU cores, batches of 512 tokens.
///
/// The two KV layouts of llama.cpp trade memory for time:
/// * **per-sequence streams** (`unified: false`): each token attends over its own sequence's
///   cells only, so decoding many diverging samples stays linear in their number. A fork copies
///   the source stream's data (and truncates it), which is still far cheaper than a prefill.
/// * **unified** (`unified: true`): all sequences share one pool of cells and a fork shares the
///   prefix's cells without copying (up to 256 sequences in the same memory), but every token
///   attends over every occupied cell (masked), so the cost of a step grows with everything in
///   the cache. Good for many short continuations of one long prefix.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Use one shared pool of KV cells for all sequences. Default: false.
    pub unified: bool,
    /// KV-cache cells in all (the memory bound). Per-sequence streams: `sequences` × the
    /// per-sequence length; unified: a shared prefix takes one cell per token, not one per
    /// sequence. `None`: `sequences` × min(2,048, trained context) per-sequence; unified,
    /// 16,384, or the trained context if larger, up to 65,536.
    pub kv_cells: Option<u32>,
    /// CPU threads. `None`: every available core.
    pub threads: Option<u32>,
    /// Most tokens per `llama_decode` call.
    pub batch: u32,
    /// Most live sequences (1..=256). Default: 64.
    pub sequences: u32,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            unified: false,
            kv_cells: None,
            threads: None,
            batch: 512,
            sequences: 64,
        }
    }
}

/// Runs of consecutive ids in ascending `seqs` (a repeated id stays in its run).
pub(crate) fn id_runs(seqs: impl IntoIterator<Item = SeqId>) -> u64 {
    let mut runs = 0;
    let mut last: Option<SeqId> = None;
    for s in seqs {
        if !matches!(last, Some(l) if s == l || s == l + 1) {
            runs += 1;
        }
        last = Some(s);
    }
    runs
}

/// One token to decode: which sequence, at which position, and whether its logits are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchItem {
    pub token: u32,
    pub pos: u32,
    pub seq: SeqId,
    pub logits: bool,
}

/// Why a decode did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeFailure {
    /// No room in the KV cache for these tokens: free cells and try again.
    KvFull,
    Other(String),
}

static LLAMA: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// llama.cpp's process-wide backend, initialised once. Its logs are silenced unless
/// `PONDER_ENGINE_LOG` is set.
fn llama_backend() -> Result<&'static LlamaBackend, EngineError> {
    LLAMA
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            if std::env::var_os("PONDER_ENGINE_LOG").is_none() {
                backend.void_logs();
            }
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| EngineError::Load {
            path: String::new(),
            message: format!("llama.cpp did not initialise: {e}"),
        })
}

/// A loaded model and its context.
pub struct Runner {
    // Field order is drop order: the batch and the context go before the model they borrow.
    batch: LlamaBatch<'static>,
    ctx: LlamaContext<'static>,
    model: Box<LlamaModel>,
    n_vocab: usize,
    kv_cells: u32,
    unified: bool,
    n_ctx_train: u32,
    batch_size: u32,
    sequences: u32,
    header: gguf::Header,
    /// `decode` calls and the compute passes llama.cpp made for them (see [`Runner::decode`]).
    decodes: u64,
    passes: u64,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("n_vocab", &self.n_vocab)
            .field("kv_cells", &self.kv_cells)
            .finish()
    }
}

impl Runner {
    /// Checks the file ([`gguf::read_header`]), then loads it with llama.cpp.
    pub fn load(path: &Path, config: &RunnerConfig) -> Result<Runner, EngineError> {
        let shown = path.display().to_string();
        let header = gguf::read_header(path)?;
        let load_err = |message: String| EngineError::Load {
            path: shown.clone(),
            message,
        };
        let arch = header
            .architecture()
            .ok_or_else(|| load_err("no general.architecture in the metadata".into()))?
            .to_string();
        let backend = llama_backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| {
                load_err(format!(
                    "llama.cpp could not load it (architecture `{arch}`): {e}; set \
                     PONDER_ENGINE_LOG=1 to see llama.cpp's log"
                ))
            })?;
        let model = Box::new(model);
        // SAFETY: the context and batch borrow the model. The model lives in a Box (its address
        // never changes), is never moved out or replaced, and `Runner`'s field order drops the
        // batch and the context before the model, so the borrow never outlives the model.
        #[allow(unsafe_code)]
        let model_ref: &'static LlamaModel = unsafe { &*std::ptr::from_ref::<LlamaModel>(&model) };
        let n_ctx_train = model_ref.n_ctx_train().max(1);
        let sequences = config.sequences.clamp(1, MAX_SEQUENCES);
        let kv_cells = config
            .kv_cells
            .unwrap_or(if config.unified {
                n_ctx_train.clamp(16_384, 65_536)
            } else {
                sequences * n_ctx_train.min(2048)
            })
            .max(16 * sequences);
        let threads = config.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get() as i32),
            |t| t.max(1) as i32,
        );
        let batch_size = config.batch.max(sequences).max(32);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(kv_cells))
            .with_n_batch(batch_size)
            .with_n_ubatch(batch_size)
            .with_n_seq_max(sequences)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_kv_unified(config.unified)
            // Flash attention: with a unified KV cache every token's attention spans the cells of
            // all sequences, and the CPU kernel skips the cells the mask hides.
            .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED);
        let ctx = model_ref
            .new_context(backend, params)
            .map_err(|e| load_err(format!("llama.cpp could not create a context: {e}")))?;
        let batch = LlamaBatch::new(batch_size as usize, 1);
        let n_vocab = usize::try_from(model_ref.n_vocab()).unwrap_or(0);
        Ok(Runner {
            batch,
            ctx,
            model,
            n_vocab,
            kv_cells,
            unified: config.unified,
            n_ctx_train,
            batch_size,
            sequences,
            header,
            decodes: 0,
            passes: 0,
        })
    }

    /// The file's metadata, as read before loading.
    pub fn header(&self) -> &gguf::Header {
        &self.header
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Cells in the shared KV cache.
    pub fn kv_cells(&self) -> u32 {
        self.kv_cells
    }

    /// The model's trained context length.
    pub fn n_ctx_train(&self) -> u32 {
        self.n_ctx_train
    }

    /// Whether all sequences share one pool of KV cells.
    pub fn unified(&self) -> bool {
        self.unified
    }

    /// Most tokens one sequence may hold: its stream's cells (or all cells, unified), and never
    /// more than the trained context.
    pub fn sequence_limit(&self) -> u32 {
        let cells = if self.unified {
            self.kv_cells
        } else {
            self.kv_cells / self.sequences
        };
        cells.min(self.n_ctx_train)
    }

    /// Most tokens one `decode` call takes.
    pub fn batch_size(&self) -> u32 {
        self.batch_size
    }

    /// Most live sequences; ids are `0..sequences`.
    pub fn sequences(&self) -> u32 {
        self.sequences
    }

    /// Tokenises text; `special` parses control tokens such as `<|im_start|>`. No BOS is added
    /// here: chat templates write their own.
    pub fn tokenize(&self, text: &str, special: bool) -> Vec<u32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), false, special)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    /// The bytes a token stands for (control tokens render as their text only when `special`).
    pub fn token_bytes(&self, token: u32, special: bool) -> Vec<u8> {
        self.model
            .vocab()
            .token_to_piece(LlamaToken(token as i32), special, None)
    }

    /// Whether `token` ends a generation (EOS, end of turn).
    pub fn is_end_of_generation(&self, token: u32) -> bool {
        self.model.vocab().is_eog(LlamaToken(token as i32))
    }

    /// Every token that ends a generation.
    pub fn end_of_generation_tokens(&self) -> Vec<u32> {
        (0..self.n_vocab as u32)
            .filter(|&t| self.is_end_of_generation(t))
            .collect()
    }

    /// The id of a token given by its exact text (`+`, `<|step|>`), if it is one token.
    pub fn single_token(&self, text: &str) -> Option<u32> {
        match self.tokenize(text, true).as_slice() {
            [t] => Some(*t),
            _ => None,
        }
    }

    /// Decodes `items` (at most [`Runner::batch_size`]) in one call, then hands the logits of
    /// each item that asked for them to `on_logits(item_index, logits)`.
    pub fn decode(
        &mut self,
        items: &[BatchItem],
        mut on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<(), DecodeFailure> {
        if items.is_empty() {
            return Ok(());
        }
        if items.len() > self.batch_size as usize {
            return Err(DecodeFailure::Other(format!(
                "{} tokens in one batch, more than {}",
                items.len(),
                self.batch_size
            )));
        }
        // With per-sequence streams llama.cpp cuts a batch into compute passes of sequences with
        // consecutive ids, taken in batch order: ordered by id, a batch costs one pass per run
        // of consecutive ids instead of (at worst) one per sequence. The sort is stable, so a
        // sequence's own tokens keep their order.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| items[i].seq);
        self.batch.clear();
        for &i in &order {
            let item = &items[i];
            self.batch
                .add(
                    LlamaToken(item.token as i32),
                    item.pos as i32,
                    &[item.seq],
                    item.logits,
                )
                .map_err(|e| DecodeFailure::Other(e.to_string()))?;
        }
        match self.ctx.decode(&mut self.batch) {
            Ok(()) => {}
            Err(DecodeError::NoKvCacheSlot) => return Err(DecodeFailure::KvFull),
            Err(e) => return Err(DecodeFailure::Other(e.to_string())),
        }
        self.decodes += 1;
        self.passes += if self.unified {
            1
        } else {
            id_runs(order.iter().map(|&i| items[i].seq))
        };
        for (b, &i) in order.iter().enumerate() {
            if items[i].logits {
                on_logits(i, self.ctx.get_logits_ith(b as i32));
            }
        }
        Ok(())
    }

    /// `decode` calls so far, and the compute passes llama.cpp made for them: one per run of
    /// consecutive sequence ids in a batch with per-sequence streams, one per batch unified
    /// (batches here never exceed one pass's size).
    pub fn decode_counts(&self) -> (u64, u64) {
        (self.decodes, self.passes)
    }

    /// Gives `dst` the cells of `src` for positions `0..len`. Unified: the cells are shared, no
    /// data is copied. Per-sequence streams: llama.cpp copies whole streams only, so the source
    /// stream is copied and the copy truncated at `len`.
    pub fn fork(&mut self, src: SeqId, dst: SeqId, len: u32) {
        if len == 0 || src == dst {
            return;
        }
        // Positions fit in i32 (bounded by the context), so the conversions cannot fail.
        if self.unified {
            let _ = self.ctx.kv_cache_seq_cp(src, dst, Some(0), Some(len));
        } else {
            let _ = self.ctx.kv_cache_seq_cp(src, dst, None, None);
            let _ = self.ctx.kv_cache_seq_rm(dst, Some(len), None);
        }
    }

    /// Drops `seq`'s cells from position `from` on (rollback); `from = 0` frees the sequence.
    pub fn truncate(&mut self, seq: SeqId, from: u32) {
        let _ = self.ctx.kv_cache_seq_rm(seq, Some(from), None);
    }
}

#[cfg(test)]
mod tests {
    use super::id_runs;

    #[test]
    fn runs_of_consecutive_ids() {
        assert_eq!(id_runs([]), 0);
        assert_eq!(id_runs([4]), 1);
        assert_eq!(id_runs([0, 1, 2, 3]), 1);
        assert_eq!(id_runs([0, 2, 4]), 3);
        assert_eq!(id_runs([0, 1, 3, 4, 5, 9]), 3);
        // A prefill: one sequence's many tokens are one run.
        assert_eq!(id_runs([7, 7, 7, 8, 8]), 1);
    }
}
