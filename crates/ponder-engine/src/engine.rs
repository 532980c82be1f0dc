//! The engine: a worker thread that owns a [`Runner`] and schedules every request on it, and
//! [`Engine`], the handle that implements [`Backend`].
//!
//! # Scheduling
//!
//! Requests arrive on a channel. A generation request is tokenised, its longest cached prefix
//! is found in the [`PrefixTrie`] and shared into a fresh sequence (no data copied), only the
//! rest of the prompt is decoded, and its `n` completions are forked from that one prefill.
//! All running completions then advance together, one token each per `llama_decode` call
//! (continuous batching: new requests join between steps, finished ones leave).
//!
//! A finished or stopped completion's sequence stays in the KV cache as an idle entry of the
//! prefix cache, so the next step of a trajectory decodes only its new tokens. Idle entries are
//! evicted least-recently-used first when sequence ids or KV cells run out, and whenever the
//! cached tokens pass a quarter of the cells (every occupied cell costs attention time). When the cache is
//! full and nothing idle is left, the longest running completion ends with `length`.
//!
//! # Text-aligned prefix reuse
//!
//! A step-search client sends the next step as text: the previous prompt, the generated text,
//! more. That text need not tokenise back to the tokens the model wrote: invalid UTF-8 comes
//! back as U+FFFD, and a model may write `" 1"`, `"2"` where the tokeniser writes `" 12"`. So a
//! generation's prompt is matched by text as well as by tokens: when a cached token path
//! renders to a prefix of the prompt text (rendered as generated output is: pieces decoded with
//! invalid bytes as U+FFFD; a control token as its text form, when that text tokenises back to
//! it), ending after a token with no UTF-8 character left incomplete, the prompt is that path's
//! tokens followed by the rest of the text tokenised. This is used only when it reuses more
//! tokens and decodes fewer than the plain tokenisation's cached prefix would; otherwise (valid
//! text that tokenises as it was cached, say) the plain tokens are used, as before. Usage
//! reports the tokens actually used: `prompt_tokens` counts them, `cached_tokens` the reused ones.
//!
//! A prompt that continues a cached generation therefore continues from the tokens the model
//! wrote, while the same prompt on a cold cache is decoded from its plain tokenisation. The two
//! token lists differ, and so may the outputs: a completion can depend on whether the
//! generation it continues is still cached (with a fixed seed, too). Rewards and
//! [`Engine::tokenize`] always use the plain tokenisation.
//!
//! Stopping a stream (dropping it) is noticed before the next step; the sequence is released
//! then, and no further tokens are sent.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use ponder_core::{
    stable_hash, Backend, BackendError, BoxFuture, Capabilities, CompletionStream, FinishReason,
    GenerationRequest, Message, Prompt, RewardRequest, RewardResponse, SeededRng, StopMatcher,
    StreamEvent, TokenLogprob, TopLogprob, Usage,
};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::align::{longest_text_match, take_utf8, TokenPieces};
use crate::error::EngineError;
use crate::runner::{id_runs, BatchItem, DecodeFailure, Runner, RunnerConfig};
use crate::sampler::{sample, Sampled, SamplerConfig};
use crate::template::ChatTemplate;
use crate::tiny::CHATML_TEMPLATE;
use crate::trie::{PrefixTrie, SeqId};

/// How the engine runs. Defaults: see [`RunnerConfig`]; seed 0.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    pub runner: RunnerConfig,
    /// Seed of requests that carry none: such a request takes the next `n` values from here.
    pub seed: u64,
}

/// What the engine counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    /// Prompt tokens of every generation request, as used: a prompt that continues cached text
    /// counts the cached path's tokens for that text (see the module doc).
    pub prompt_tokens: u64,
    /// Prompt tokens actually decoded (the rest came from the prefix cache or a fork).
    pub prompt_tokens_decoded: u64,
    /// Completions started by forking a prefilled sequence instead of prefilling again.
    pub forks: u64,
    pub generated_tokens: u64,
    /// Tokens of reward requests, as sent, and those actually decoded.
    pub reward_tokens: u64,
    pub reward_tokens_decoded: u64,
    /// Idle sequences dropped to make room.
    pub evictions: u64,
    /// Completions ended early because the KV cache was full.
    pub preempted: u64,
    /// Batches handed to llama.cpp, and the compute passes it split them into (one per run of
    /// consecutive sequence ids with per-sequence streams): passes per batch near 1 means the
    /// weights are read once per step for all sequences.
    pub decode_calls: u64,
    pub compute_passes: u64,
    /// Running sequences moved onto lower ids to keep the running ones consecutive.
    pub moves: u64,
}

#[derive(Debug, Default)]
struct Counters {
    prompt_tokens: AtomicU64,
    prompt_tokens_decoded: AtomicU64,
    forks: AtomicU64,
    generated_tokens: AtomicU64,
    reward_tokens: AtomicU64,
    reward_tokens_decoded: AtomicU64,
    evictions: AtomicU64,
    preempted: AtomicU64,
    decode_calls: AtomicU64,
    compute_passes: AtomicU64,
    moves: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> EngineStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            prompt_tokens: g(&self.prompt_tokens),
            prompt_tokens_decoded: g(&self.prompt_tokens_decoded),
            forks: g(&self.forks),
            generated_tokens: g(&self.generated_tokens),
            reward_tokens: g(&self.reward_tokens),
            reward_tokens_decoded: g(&self.reward_tokens_decoded),
            evictions: g(&self.evictions),
            preempted: g(&self.preempted),
            decode_calls: g(&self.decode_calls),
            compute_passes: g(&self.compute_passes),
            moves: g(&self.moves),
        }
    }
}

/// Draws the next token of `a` from `logits` (end-of-generation tokens banned before
/// `min_tokens`).
fn draw(a: &mut Active, logits: &[f32], eog: &[u32]) -> Sampled {
    let banned: &[u32] = if a.generated < a.min_tokens { eog } else { &[] };
    sample(
        &a.sampler,
        &mut a.rng,
        logits,
        a.top_logprobs.unwrap_or(0),
        banned,
    )
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// The process-reward-model side of a model: its step tag and label tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrmTokens {
    pub step_tag: String,
    pub tag: u32,
    pub good: u32,
    pub bad: u32,
}

/// Facts about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub n_vocab: usize,
    pub n_ctx_train: u32,
    pub kv_cells: u32,
    /// `ponder.role` from the metadata (`policy`, `prm`), when present.
    pub role: Option<String>,
    /// Present when the model carries Ponder's PRM metadata.
    pub prm: Option<PrmTokens>,
}

type Events = tmpsc::UnboundedSender<Result<StreamEvent, BackendError>>;

enum Command {
    Generate {
        request: Box<GenerationRequest>,
        events: Events,
    },
    Rewards {
        requests: Vec<RewardRequest>,
        reply: oneshot::Sender<Result<Vec<RewardResponse>, BackendError>>,
    },
    Tokenize {
        prompt: Box<Prompt>,
        reply: oneshot::Sender<Result<Vec<u32>, BackendError>>,
    },
}

/// A loaded model served in-process. Implements [`Backend`]; cloneable handles are `Arc<Engine>`.
pub struct Engine {
    name: String,
    tx: Option<mpsc::Sender<Command>>,
    info: ModelInfo,
    counters: Arc<Counters>,
    worker: Option<std::thread::JoinHandle<()>>,
    reward_model: Option<RewardModel>,
}

/// Where [`Backend::rewards`] of an engine goes when another model scores the steps.
enum RewardModel {
    Loaded(Arc<Engine>),
    /// A PRM file loaded on the first reward request, so a run whose strategy never scores
    /// steps does not pay for a second model and its KV cache. The file's header was checked
    /// when the engine was built.
    Lazy {
        path: PathBuf,
        config: EngineConfig,
        engine: tokio::sync::OnceCell<Arc<Engine>>,
    },
}

impl RewardModel {
    fn loaded(&self) -> Option<&Arc<Engine>> {
        match self {
            RewardModel::Loaded(e) => Some(e),
            RewardModel::Lazy { engine, .. } => engine.get(),
        }
    }

    /// The reward engine, loading it (on a blocking thread) the first time.
    async fn get(&self, backend: &str) -> Result<&Arc<Engine>, BackendError> {
        let (path, config, cell) = match self {
            RewardModel::Loaded(e) => return Ok(e),
            RewardModel::Lazy {
                path,
                config,
                engine,
            } => (path, config, engine),
        };
        let failed = |message: String| BackendError::Engine {
            backend: backend.to_string(),
            message: format!("cannot load the reward model {}: {message}", path.display()),
        };
        cell.get_or_try_init(|| async {
            let (path, config) = (path.clone(), config.clone());
            let loaded = tokio::task::spawn_blocking(move || Engine::load(&path, config))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
            if loaded.info.prm.is_none() {
                return Err(failed("it has no ponder.prm.step_tag metadata".into()));
            }
            Ok(Arc::new(loaded))
        })
        .await
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("name", &self.name).finish()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop once running work is done or cancelled.
        self.tx.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Engine {
    /// Loads `path` on a new worker thread and waits until it is ready.
    pub fn load(path: &Path, config: EngineConfig) -> Result<Engine, EngineError> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<ModelInfo, EngineError>>();
        let counters = Arc::new(Counters::default());
        let worker_counters = Arc::clone(&counters);
        let owned = path.to_path_buf();
        let name = format!("engine:{}", path.display());
        let worker_name = name.clone();
        let worker = std::thread::Builder::new()
            .name("ponder-engine".into())
            .spawn(move || {
                let worker = Worker::new(&owned, &config, worker_counters, worker_name);
                match worker {
                    Ok(mut w) => {
                        let _ = ready_tx.send(Ok(w.info.clone()));
                        w.run(&rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| EngineError::Load {
                path: path.display().to_string(),
                message: format!("cannot start the worker thread: {e}"),
            })?;
        let info = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        Ok(Engine {
            name,
            tx: Some(tx),
            info,
            counters,
            worker: Some(worker),
            reward_model: None,
        })
    }

    /// Serves [`Backend::rewards`] from `prm` (another engine, loaded with a PRM).
    pub fn with_reward_model(mut self, prm: Arc<Engine>) -> Result<Engine, EngineError> {
        if prm.info.prm.is_none() {
            return Err(EngineError::NotPrm {
                path: prm.info.path.display().to_string(),
                reason: "it has no ponder.prm.step_tag metadata".into(),
            });
        }
        self.reward_model = Some(RewardModel::Loaded(prm));
        Ok(self)
    }

    /// Serves [`Backend::rewards`] from the PRM file at `path`, loaded with `config` on the
    /// first reward request. The file's header is checked now: a missing, truncated or non-GGUF
    /// file, or one without Ponder's PRM metadata, is an error here, not at the first request.
    pub fn with_reward_model_file(
        mut self,
        path: &Path,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let header = crate::gguf::read_header(path)?;
        if header.get_str("ponder.prm.step_tag").is_none() {
            return Err(EngineError::NotPrm {
                path: path.display().to_string(),
                reason: "it has no ponder.prm.step_tag metadata".into(),
            });
        }
        self.reward_model = Some(RewardModel::Lazy {
            path: path.to_path_buf(),
            config,
            engine: tokio::sync::OnceCell::new(),
        });
        Ok(self)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Counters since the engine started.
    pub fn stats(&self) -> EngineStats {
        self.counters.snapshot()
    }

    /// Counters of the attached reward model, if any is loaded (a lazily attached one is
    /// loaded by the first reward request).
    pub fn reward_stats(&self) -> Option<EngineStats> {
        self.reward_model
            .as_ref()
            .and_then(RewardModel::loaded)
            .map(|m| m.stats())
    }

    fn send(&self, cmd: Command) -> Result<(), BackendError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(cmd).ok())
            .ok_or_else(|| self.stopped())
    }

    fn stopped(&self) -> BackendError {
        BackendError::Engine {
            backend: self.name.clone(),
            message: "the engine's worker thread has stopped".into(),
        }
    }

    /// The tokens a prompt renders to (chat template applied), as the engine would decode them
    /// on an empty cache. A generation whose prompt continues a cached generation may decode
    /// other tokens for the same text (see the module doc).
    pub async fn tokenize(&self, prompt: Prompt) -> Result<Vec<u32>, BackendError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Tokenize {
            prompt: Box::new(prompt),
            reply,
        })?;
        rx.await.map_err(|_| self.stopped())?
    }

    async fn own_rewards(
        &self,
        requests: Vec<RewardRequest>,
    ) -> Result<Vec<RewardResponse>, BackendError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Rewards { requests, reply })?;
        rx.await.map_err(|_| self.stopped())?
    }
}

impl Backend for Engine {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_top_logprobs: Some(ponder_core::MAX_TOP_LOGPROBS),
            multiple_samples: true,
            prefix_continuation: true,
            process_rewards: self.reward_model.is_some() || self.info.prm.is_some(),
            streaming: true,
            max_stop_strings: None,
        }
    }

    fn stream(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
        Box::pin(async move {
            request.validate()?;
            let n = request.params.n;
            let (events, mut rx) = tmpsc::unbounded_channel();
            self.send(Command::Generate {
                request: Box::new(request),
                events,
            })?;
            let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            Ok(CompletionStream::new(n, stream))
        })
    }

    fn rewards(
        &self,
        requests: Vec<RewardRequest>,
    ) -> BoxFuture<'_, Result<Vec<RewardResponse>, BackendError>> {
        Box::pin(async move {
            match (&self.reward_model, &self.info.prm) {
                (Some(prm), _) => prm.get(&self.name).await?.own_rewards(requests).await,
                (None, Some(_)) => self.own_rewards(requests).await,
                (None, None) => Err(BackendError::Unsupported {
                    backend: self.name.clone(),
                    capability: ponder_core::Capability::ProcessRewards,
                }),
            }
        })
    }
}

/// Shared by the completions of one request.
struct RequestState {
    events: Events,
    remaining: u32,
    usage: Usage,
}

/// A running completion.
struct Active {
    seq: SeqId,
    index: u32,
    request: Rc<RefCell<RequestState>>,
    sampler: SamplerConfig,
    rng: SeededRng,
    /// Tokens whose cells this sequence holds (prompt, then generated tokens fed back).
    tokens: Vec<u32>,
    prompt_len: usize,
    /// The last sampled token, not yet decoded.
    pending: u32,
    generated: u32,
    max_tokens: u32,
    min_tokens: u32,
    top_logprobs: Option<u8>,
    stop: StopMatcher,
    utf8: Vec<u8>,
    done: bool,
}

/// A generation request waiting for sequence ids.
struct Waiting {
    /// The rendered prompt, and its plain tokenisation.
    text: String,
    tokens: Vec<u32>,
    request: Box<GenerationRequest>,
    events: Events,
    seed: u64,
}

struct Idle {
    tokens: Vec<u32>,
    last_used: u64,
}

struct Worker {
    name: String,
    runner: Runner,
    info: ModelInfo,
    template: ChatTemplate,
    eog: Vec<u32>,
    /// Each token's text, for log-probability records.
    pieces: Vec<String>,
    /// Each token's bytes for text-aligned prefix matching.
    text_pieces: TokenPieces,
    trie: PrefixTrie,
    idle: HashMap<SeqId, Idle>,
    /// Unused sequence ids. The lowest is taken first, so that running sequences sit on
    /// consecutive ids: llama.cpp computes a batch in one pass per run of consecutive ids.
    free: BTreeSet<SeqId>,
    active: Vec<Active>,
    waiting: VecDeque<Waiting>,
    clock: u64,
    next_seed: u64,
    counters: Arc<Counters>,
    reward_cache: HashMap<u64, f64>,
}

/// Most sequences [`Worker::compact`] moves in one step.
const MAX_MOVES_PER_STEP: usize = 64;

/// Bound on remembered step rewards before the memo is cleared.
const REWARD_CACHE_LIMIT: usize = 1 << 18;

fn prm_tokens(runner: &Runner, path: &Path) -> Result<Option<PrmTokens>, EngineError> {
    let h = runner.header();
    let Some(tag_text) = h.get_str("ponder.prm.step_tag") else {
        return Ok(None);
    };
    let one = |key: &str, default: &str| -> Result<u32, EngineError> {
        let text = h.get_str(key).unwrap_or(default);
        runner
            .single_token(text)
            .ok_or_else(|| EngineError::NotPrm {
                path: path.display().to_string(),
                reason: format!("{key} `{text}` is not a single token"),
            })
    };
    Ok(Some(PrmTokens {
        step_tag: tag_text.to_string(),
        tag: one("ponder.prm.step_tag", tag_text)?,
        good: one("ponder.prm.good_token", "+")?,
        bad: one("ponder.prm.bad_token", "-")?,
    }))
}

impl Worker {
    fn new(
        path: &Path,
        config: &EngineConfig,
        counters: Arc<Counters>,
        name: String,
    ) -> Result<Worker, EngineError> {
        let runner = Runner::load(path, &config.runner)?;
        let header = runner.header();
        let token_text = |key: &str| {
            header
                .get_u64(key)
                .map(|id| {
                    String::from_utf8_lossy(&runner.token_bytes(id as u32, true)).into_owned()
                })
                .unwrap_or_default()
        };
        let template = ChatTemplate::new(
            header
                .get_str("tokenizer.chat_template")
                .unwrap_or(CHATML_TEMPLATE),
            &token_text("tokenizer.ggml.bos_token_id"),
            &token_text("tokenizer.ggml.eos_token_id"),
        )?;
        let info = ModelInfo {
            path: path.to_path_buf(),
            n_vocab: runner.n_vocab(),
            n_ctx_train: runner.n_ctx_train(),
            kv_cells: runner.kv_cells(),
            role: header.get_str("ponder.role").map(str::to_string),
            prm: prm_tokens(&runner, path)?,
        };
        // Each token's text form (control tokens as written), read from llama.cpp once.
        let text_forms: Vec<Vec<u8>> = (0..runner.n_vocab() as u32)
            .map(|t| runner.token_bytes(t, true))
            .collect();
        let pieces = text_forms
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let text_pieces = TokenPieces::from_runner(&runner, text_forms);
        let free = (0..runner.sequences() as SeqId).collect();
        Ok(Worker {
            name,
            eog: runner.end_of_generation_tokens(),
            runner,
            info,
            template,
            pieces,
            text_pieces,
            trie: PrefixTrie::new(),
            idle: HashMap::new(),
            free,
            active: Vec::new(),
            waiting: VecDeque::new(),
            clock: 0,
            next_seed: config.seed,
            counters,
            reward_cache: HashMap::new(),
        })
    }

    fn run(&mut self, rx: &mpsc::Receiver<Command>) {
        let mut open = true;
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                if !open {
                    return;
                }
                match rx.recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.drop_cancelled();
            self.admit();
            if !self.active.is_empty() {
                self.step();
            }
        }
    }

    fn engine_error(&self, message: impl Into<String>) -> BackendError {
        BackendError::Engine {
            backend: self.name.clone(),
            message: message.into(),
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Generate { request, events } => {
                match self.render(&request.prompt, &request.extra) {
                    Ok((text, tokens)) => self.enqueue(text, tokens, request, events),
                    Err(e) => {
                        let _ = events.send(Err(e));
                    }
                }
            }
            Command::Rewards { requests, reply } => {
                let _ = reply.send(self.rewards(&requests));
            }
            // Plain tokenisation: the answer says what the text tokenises to, whatever the
            // cache holds (a generation may decode other tokens for text it can align, see
            // `text_aligned`).
            Command::Tokenize { prompt, reply } => {
                let _ = reply.send(
                    self.render(&prompt, &serde_json::Map::new())
                        .map(|(_, tokens)| tokens),
                );
            }
        }
    }

    /// Renders a prompt to text and tokenises it (plainly, without looking at the cache).
    fn render(
        &self,
        prompt: &Prompt,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(String, Vec<u32>), BackendError> {
        let text = match prompt {
            Prompt::Text(text) => text.clone(),
            Prompt::Chat {
                messages,
                continue_final_message,
            } => {
                let kwargs = extra
                    .get("chat_template_kwargs")
                    .and_then(|v| v.as_object())
                    .cloned()
                    .unwrap_or_default();
                self.template
                    .render(messages, *continue_final_message, &kwargs)
                    .map_err(|e| self.engine_error(e.to_string()))?
            }
        };
        let tokens = self.runner.tokenize(&text, true);
        if tokens.is_empty() {
            return Err(BackendError::InvalidRequest(ponder_core::InvalidRequest {
                field: "prompt",
                reason: "the prompt is empty".into(),
            }));
        }
        let limit = self.runner.sequence_limit() as usize;
        if tokens.len() >= limit {
            return Err(BackendError::InvalidRequest(ponder_core::InvalidRequest {
                field: "prompt",
                reason: format!(
                    "the prompt has {} tokens; the model's context holds {limit}",
                    tokens.len()
                ),
            }));
        }
        Ok((text, tokens))
    }

    /// The tokens a generation decodes for the prompt `text`, whose plain tokenisation is
    /// `plain`. When a cached path renders to a prefix of the text (see [`longest_text_match`])
    /// and reusing it decodes fewer tokens than reusing the longest cached prefix of `plain`,
    /// that path followed by the rest of the text tokenised; otherwise `plain`.
    fn text_aligned(&self, text: &str, plain: Vec<u32>) -> Vec<u32> {
        // Reusable tokens: the last one is always decoded, for its logits.
        let reusable = |tokens: &[u32]| {
            self.trie
                .longest_prefix(tokens)
                .map_or(0, |(n, _)| n)
                .min(tokens.len() - 1)
        };
        let plain_reused = reusable(&plain);
        let plain_decoded = plain.len() - plain_reused;
        if plain_decoded <= 1 {
            return plain;
        }
        let Some(found) = longest_text_match(&self.trie, &self.text_pieces, text) else {
            return plain;
        };
        let Some(rest) = text.get(found.text_len..) else {
            return plain;
        };
        let rest_tokens = self.runner.tokenize(rest, true);
        // Some tokenisers change a fragment of text (SentencePiece prefixes a space): then
        // the two parts would not add up to the prompt.
        if !self.text_pieces.render_exactly(&rest_tokens, rest) {
            return plain;
        }
        let mut tokens = found.tokens;
        tokens.extend(rest_tokens);
        let reused = reusable(&tokens);
        if tokens.len() >= self.runner.sequence_limit() as usize
            || reused <= plain_reused
            || tokens.len() - reused >= plain_decoded
        {
            return plain;
        }
        tokens
    }

    fn enqueue(
        &mut self,
        text: String,
        tokens: Vec<u32>,
        request: Box<GenerationRequest>,
        events: Events,
    ) {
        let n = request.params.n;
        if n > self.runner.sequences() {
            let _ = events.send(Err(BackendError::InvalidRequest(
                ponder_core::InvalidRequest {
                    field: "n",
                    reason: format!(
                        "the engine runs at most {} sequences at once, got n = {n}",
                        self.runner.sequences()
                    ),
                },
            )));
            return;
        }
        let seed = request.params.seed.unwrap_or_else(|| {
            let s = self.next_seed;
            self.next_seed = self.next_seed.wrapping_add(u64::from(n));
            s
        });
        self.waiting.push_back(Waiting {
            text,
            tokens,
            request,
            events,
            seed,
        });
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Frees one idle sequence (least recently used). False when none is idle.
    fn evict_one(&mut self) -> bool {
        let Some((&seq, _)) = self.idle.iter().min_by_key(|(_, idle)| idle.last_used) else {
            return false;
        };
        if let Some(idle) = self.idle.remove(&seq) {
            self.trie.remove(&idle.tokens, seq);
        }
        self.runner.truncate(seq, 0);
        self.free.insert(seq);
        add(&self.counters.evictions, 1);
        true
    }

    fn take_seq(&mut self) -> Option<SeqId> {
        if self.free.is_empty() && !self.evict_one() {
            return None;
        }
        self.free.pop_first()
    }

    /// Copies the runner's batch and pass counts into the shared counters.
    fn count_decodes(&self) {
        let (calls, passes) = self.runner.decode_counts();
        self.counters.decode_calls.store(calls, Ordering::Relaxed);
        self.counters
            .compute_passes
            .store(passes, Ordering::Relaxed);
    }

    /// Starts waiting requests, first come first served, while sequence ids last.
    fn admit(&mut self) {
        while let Some(front) = self.waiting.front() {
            if front.events.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            let n = front.request.params.n as usize;
            if self.free.len() + self.idle.len() < n {
                return;
            }
            let Some(w) = self.waiting.pop_front() else {
                return;
            };
            self.start(w);
        }
    }

    /// Decodes `items` in batches; on a full cache, evicts idle sequences and retries.
    fn decode_all(
        &mut self,
        items: &[BatchItem],
        on_logits: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), String> {
        let size = self.runner.batch_size() as usize;
        let mut start = 0;
        while start < items.len() {
            let chunk = &items[start..(start + size).min(items.len())];
            let result = self.runner.decode(chunk, |i, l| on_logits(start + i, l));
            self.count_decodes();
            match result {
                Ok(()) => start += chunk.len(),
                Err(DecodeFailure::KvFull) => {
                    if !self.evict_one() {
                        return Err(format!(
                            "the KV cache ({} cells) is full",
                            self.runner.kv_cells()
                        ));
                    }
                }
                Err(DecodeFailure::Other(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Shares the longest cached prefix of `tokens` into `seq` and decodes the rest.
    /// Returns how many tokens were reused; `logit_positions` (ascending) get their logits.
    fn prefill(
        &mut self,
        seq: SeqId,
        tokens: &[u32],
        min_decode_from: usize,
        on_logits: &mut dyn FnMut(usize, &[f32]),
        want: &dyn Fn(usize) -> bool,
    ) -> Result<usize, String> {
        let mut reuse = 0;
        if let Some((len, src)) = self.trie.longest_prefix(tokens) {
            reuse = len.min(min_decode_from);
            if reuse > 0 {
                self.runner.fork(src, seq, reuse as u32);
                let now = self.tick();
                if let Some(idle) = self.idle.get_mut(&src) {
                    idle.last_used = now;
                }
            }
        }
        let items: Vec<BatchItem> = (reuse..tokens.len())
            .map(|pos| BatchItem {
                token: tokens[pos],
                pos: pos as u32,
                seq,
                logits: want(pos),
            })
            .collect();
        self.decode_all(&items, &mut |i, l| on_logits(reuse + i, l))?;
        Ok(reuse)
    }

    fn start(&mut self, w: Waiting) {
        let Waiting {
            text,
            tokens,
            request,
            events,
            seed,
        } = w;
        // Aligned now, not when the request arrived: this is the cache `prefill` will use.
        let tokens = self.text_aligned(&text, tokens);
        let params = &request.params;
        let n = params.n;
        let len = tokens.len();
        let Some(s0) = self.take_seq() else {
            let _ = events.send(Err(self.engine_error("no free sequence")));
            return;
        };
        let mut last_logits = Vec::new();
        let reused = match self.prefill(
            s0,
            &tokens,
            len - 1,
            &mut |_, l| last_logits = l.to_vec(),
            &|pos| pos == len - 1,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.runner.truncate(s0, 0);
                self.free.insert(s0);
                let _ = events.send(Err(self.engine_error(e)));
                return;
            }
        };
        add(&self.counters.prompt_tokens, len as u64);
        add(&self.counters.prompt_tokens_decoded, (len - reused) as u64);
        let state = Rc::new(RefCell::new(RequestState {
            events,
            remaining: n,
            usage: Usage {
                prompt_tokens: len as u64,
                completion_tokens: 0,
                cached_tokens: Some(reused as u64),
            },
        }));
        let ctx_limit = self.runner.sequence_limit() as usize;
        let room = (ctx_limit - len) as u32;
        let sampler = SamplerConfig {
            temperature: params.temperature.unwrap_or(1.0),
            top_k: params.top_k,
            top_p: params.top_p,
            min_p: params.min_p,
        };
        for i in 0..n {
            let seq = if i == 0 {
                s0
            } else {
                match self.take_seq() {
                    Some(s) => {
                        self.runner.fork(s0, s, len as u32);
                        add(&self.counters.forks, 1);
                        s
                    }
                    None => {
                        // `admit` reserved enough ids; this is unreachable in practice.
                        let st = state.borrow();
                        let _ = st
                            .events
                            .send(Err(self.engine_error("ran out of sequences while forking")));
                        return;
                    }
                }
            };
            // The prompt part of a running sequence never changes: later requests may share it.
            self.trie.insert(&tokens, seq);
            let mut active = Active {
                seq,
                index: i,
                request: Rc::clone(&state),
                sampler: sampler.clone(),
                rng: SeededRng::new(seed.wrapping_add(u64::from(i))),
                tokens: tokens.clone(),
                prompt_len: len,
                pending: 0,
                generated: 0,
                max_tokens: params.max_tokens.unwrap_or(room).min(room).max(1),
                min_tokens: params.min_tokens.unwrap_or(0),
                top_logprobs: params.top_logprobs,
                stop: StopMatcher::new(params.stop.clone()),
                utf8: Vec::new(),
                done: false,
            };
            let first = draw(&mut active, &last_logits, &self.eog);
            self.advance(&mut active, &first);
            if active.done {
                self.retire(active);
            } else {
                self.active.push(active);
            }
        }
    }

    /// Emits what the sampled token `s` produced for `a`, and ends `a` when it is done.
    fn advance(&self, a: &mut Active, s: &Sampled) {
        a.generated += 1;
        a.pending = s.token;
        add(&self.counters.generated_tokens, 1);
        let record = a.top_logprobs.map(|_| TokenLogprob {
            token: self.pieces[s.token as usize].clone(),
            logprob: Some(s.logprob),
            top: s
                .top
                .iter()
                .map(|&(t, lp)| TopLogprob {
                    token: self.pieces[t as usize].clone(),
                    logprob: lp,
                })
                .collect(),
        });
        let state = Rc::clone(&a.request);
        let mut st = state.borrow_mut();
        st.usage.completion_tokens += 1;
        let events = st.events.clone();
        drop(st);
        let send = |ev: StreamEvent| {
            let _ = events.send(Ok(ev));
        };
        if self.eog.contains(&s.token) {
            let rest = a.stop.flush();
            send(StreamEvent::Delta {
                index: a.index,
                text: rest,
                token_count: 1,
                tokens: record.into_iter().collect(),
            });
            self.finish(a, FinishReason::Stop, None);
            return;
        }
        a.utf8
            .extend_from_slice(&self.runner.token_bytes(s.token, false));
        let text = take_utf8(&mut a.utf8);
        // As vLLM: stop strings count once the output has `min_tokens` tokens.
        let scan = if a.generated < a.min_tokens {
            ponder_core::StopScan {
                emit: text,
                matched: None,
            }
        } else {
            a.stop.push(&text)
        };
        send(StreamEvent::Delta {
            index: a.index,
            text: scan.emit,
            token_count: 1,
            tokens: record.into_iter().collect(),
        });
        if let Some(stop) = scan.matched {
            self.finish(a, FinishReason::Stop, Some(stop));
        } else if a.generated >= a.max_tokens {
            let rest = a.stop.flush() + &String::from_utf8_lossy(&std::mem::take(&mut a.utf8));
            if !rest.is_empty() {
                send(StreamEvent::Delta {
                    index: a.index,
                    text: rest,
                    token_count: 0,
                    tokens: Vec::new(),
                });
            }
            self.finish(a, FinishReason::Length, None);
        }
    }

    fn finish(&self, a: &mut Active, reason: FinishReason, stop: Option<String>) {
        a.done = true;
        let mut st = a.request.borrow_mut();
        let _ = st.events.send(Ok(StreamEvent::Finished {
            index: a.index,
            reason,
            stop,
        }));
        st.remaining -= 1;
        if st.remaining == 0 {
            let _ = st.events.send(Ok(StreamEvent::Usage(st.usage)));
        }
    }

    /// Moves a finished or stopped completion's sequence into the prefix cache.
    fn retire(&mut self, a: Active) {
        self.trie.remove(&a.tokens[..a.prompt_len], a.seq);
        self.trie.insert(&a.tokens, a.seq);
        let now = self.tick();
        self.idle.insert(
            a.seq,
            Idle {
                tokens: a.tokens,
                last_used: now,
            },
        );
        self.trim_idle();
    }

    /// Keeps a unified cache small: there every token attends over all occupied cells (masked),
    /// so idle cells slow every step down. Idle sequences are evicted, least recently used
    /// first, while the indexed tokens exceed a quarter of the cells.
    fn trim_idle(&mut self) {
        let budget = (self.runner.kv_cells() / 4) as usize;
        if !self.runner.unified() {
            // Each sequence has its own cells: idle ones cost memory, not attention time.
            return;
        }
        while self.trie.token_count() > budget && self.evict_one() {}
    }

    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].request.borrow().events.is_closed() {
                let a = self.active.swap_remove(i);
                self.retire(a);
            } else {
                i += 1;
            }
        }
    }

    /// Per-sequence streams: moves running sequences down onto free or idle ids below them until
    /// they form one run of consecutive ids, at most [`MAX_MOVES_PER_STEP`] moves a step.
    /// llama.cpp computes a batch in one pass per run of consecutive ids, each pass reading
    /// every weight, so a finished sample left between running ones would cost a pass on every
    /// later step; a move copies one stream once. An idle sequence in the way moves up to a
    /// free id when there is one (its cached prefix stays), else it is evicted.
    fn compact(&mut self) {
        if self.runner.unified() {
            return;
        }
        for _ in 0..MAX_MOVES_PER_STEP {
            let mut ids: Vec<SeqId> = self.active.iter().map(|a| a.seq).collect();
            ids.sort_unstable();
            if id_runs(ids.iter().copied()) <= 1 {
                return;
            }
            let Some(&top) = ids.last() else {
                return;
            };
            // The first gap above the lowest running id; below `top`, as the ids are not one run.
            let Some(hole) = (ids[0]..top).find(|id| ids.binary_search(id).is_err()) else {
                return;
            };
            if self.free.remove(&hole) {
                // A free id: nothing to move out of the way.
            } else if let Some(idle) = self.idle.remove(&hole) {
                match self.free.pop_last() {
                    Some(to) => {
                        self.runner.fork(hole, to, idle.tokens.len() as u32);
                        self.trie.remove(&idle.tokens, hole);
                        self.trie.insert(&idle.tokens, to);
                        self.idle.insert(to, idle);
                    }
                    None => {
                        self.trie.remove(&idle.tokens, hole);
                        add(&self.counters.evictions, 1);
                    }
                }
                self.runner.truncate(hole, 0);
            } else {
                return;
            }
            let Some(a) = self.active.iter_mut().find(|a| a.seq == top) else {
                return;
            };
            // The cells hold every token but the pending one.
            self.runner.fork(top, hole, a.tokens.len() as u32);
            self.runner.truncate(top, 0);
            self.trie.remove(&a.tokens[..a.prompt_len], top);
            self.trie.insert(&a.tokens[..a.prompt_len], hole);
            a.seq = hole;
            self.free.insert(top);
            add(&self.counters.moves, 1);
        }
    }

    /// One decoding step: every running completion gets one token.
    fn step(&mut self) {
        self.compact();
        let items: Vec<BatchItem> = self
            .active
            .iter()
            .map(|a| BatchItem {
                token: a.pending,
                pos: a.tokens.len() as u32,
                seq: a.seq,
                logits: true,
            })
            .collect();
        let mut sampled: Vec<Option<Sampled>> = vec![None; items.len()];
        let Worker {
            runner,
            active,
            eog,
            ..
        } = self;
        // Sampling happens inside the callback, while the logits are llama.cpp's own buffer.
        let result = runner.decode(&items, |i, l| {
            sampled[i] = Some(draw(&mut active[i], l, eog))
        });
        self.count_decodes();
        match result {
            Ok(()) => {}
            Err(DecodeFailure::KvFull) => {
                if !self.evict_one() {
                    self.preempt_longest();
                }
                return;
            }
            Err(DecodeFailure::Other(e)) => {
                let err = self.engine_error(format!("decoding failed: {e}"));
                for a in std::mem::take(&mut self.active) {
                    let _ = a.request.borrow().events.send(Err(clone_err(&err)));
                    self.retire(a);
                }
                return;
            }
        }
        let mut active = std::mem::take(&mut self.active);
        let limit = self.runner.sequence_limit() as usize;
        for (a, s) in active.iter_mut().zip(&sampled) {
            a.tokens.push(a.pending);
            match s {
                Some(s) if a.tokens.len() < limit => self.advance(a, s),
                _ => self.finish(a, FinishReason::Length, None),
            }
        }
        for a in active {
            if a.done {
                self.retire(a);
            } else {
                self.active.push(a);
            }
        }
    }

    fn preempt_longest(&mut self) {
        let Some(i) = (0..self.active.len()).max_by_key(|&i| self.active[i].tokens.len()) else {
            return;
        };
        let mut a = self.active.swap_remove(i);
        add(&self.counters.preempted, 1);
        self.finish(&mut a, FinishReason::Length, None);
        self.runner.truncate(a.seq, 0);
        self.trie.remove(&a.tokens[..a.prompt_len], a.seq);
        self.free.insert(a.seq);
    }

    /// Scores steps with the loaded PRM. See [`prm_text`] for the input format.
    ///
    /// Reward texts keep their plain tokenisation, without text-aligned reuse: a PRM scores
    /// text as its tokeniser writes it, whatever a policy wrote; the step-tag positions and the
    /// reward memo's keys come from these tokens, so a text gets the same rewards whatever the
    /// cache holds; and the cached reward texts a new one extends share its steps' tokens
    /// anyway.
    fn rewards(&mut self, requests: &[RewardRequest]) -> Result<Vec<RewardResponse>, BackendError> {
        let Some(prm) = self.info.prm.clone() else {
            return Err(BackendError::Unsupported {
                backend: self.name.clone(),
                capability: ponder_core::Capability::ProcessRewards,
            });
        };
        let mut out = Vec::with_capacity(requests.len());
        for req in requests {
            let mut messages = vec![Message::user(req.question.clone())];
            messages.push(Message::assistant(prm_text(&req.steps, &prm.step_tag)));
            let text = self
                .template
                .render(&messages, true, &serde_json::Map::new())
                .map_err(|e| self.engine_error(e.to_string()))?;
            let tokens = self.runner.tokenize(&text, true);
            let tags: Vec<usize> = tokens
                .iter()
                .enumerate()
                .filter(|&(_, &t)| t == prm.tag)
                .map(|(i, _)| i)
                .collect();
            // Rewards are remembered by the hash of the tokens up to and including their tag.
            // Clearing the memo happens here, before it is relied on below.
            if self.reward_cache.len() > REWARD_CACHE_LIMIT {
                self.reward_cache.clear();
            }
            let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
            let keys: Vec<u64> = tags
                .iter()
                .map(|&p| stable_hash(&bytes[..4 * (p + 1)]))
                .collect();
            // Reuse cached cells only up to the first tag whose reward is not remembered.
            let first_unknown = tags
                .iter()
                .zip(&keys)
                .find(|(_, k)| !self.reward_cache.contains_key(k))
                .map_or(tokens.len(), |(&p, _)| p);
            let seq = self
                .take_seq()
                .ok_or_else(|| self.engine_error("no free sequence"))?;
            let mut scores: HashMap<usize, f64> = HashMap::new();
            let tag_set: std::collections::HashSet<usize> = tags.iter().copied().collect();
            let limit = first_unknown.min(tokens.len().saturating_sub(1));
            let (good, bad) = (prm.good as usize, prm.bad as usize);
            let result = self.prefill(
                seq,
                &tokens,
                limit,
                &mut |pos, l| {
                    let (g, b) = (f64::from(l[good]), f64::from(l[bad]));
                    // P(+) under a softmax restricted to the two label tokens.
                    scores.insert(pos, 1.0 / (1.0 + (b - g).exp()));
                },
                &|pos| tag_set.contains(&pos),
            );
            let reused = match result {
                Ok(r) => r,
                Err(e) => {
                    self.runner.truncate(seq, 0);
                    self.free.insert(seq);
                    return Err(self.engine_error(e));
                }
            };
            let mut step_rewards = Vec::with_capacity(tags.len());
            for (&p, &k) in tags.iter().zip(&keys) {
                let r = match scores.get(&p) {
                    Some(&r) => {
                        self.reward_cache.insert(k, r);
                        r
                    }
                    // Tags before `first_unknown` were reused because their rewards are in the
                    // memo (not cleared since); anything else was decoded above.
                    None => self.reward_cache.get(&k).copied().unwrap_or(0.5),
                };
                step_rewards.push(r);
            }
            add(&self.counters.reward_tokens, tokens.len() as u64);
            add(
                &self.counters.reward_tokens_decoded,
                (tokens.len() - reused) as u64,
            );
            let now = self.tick();
            self.trie.insert(&tokens, seq);
            self.idle.insert(
                seq,
                Idle {
                    tokens: tokens.clone(),
                    last_used: now,
                },
            );
            self.trim_idle();
            out.push(RewardResponse {
                step_rewards,
                prompt_tokens: tokens.len() as u64,
            });
        }
        Ok(out)
    }
}

/// The assistant text a PRM reads (the format `training/train_prm.py` trains on): each step
/// trimmed, a space and the step tag, steps joined by newlines, nothing after the last tag.
pub fn prm_text(steps: &[String], step_tag: &str) -> String {
    steps
        .iter()
        .map(|s| format!("{} {step_tag}", s.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn clone_err(e: &BackendError) -> BackendError {
    match e {
        BackendError::Engine { backend, message } => BackendError::Engine {
            backend: backend.clone(),
            message: message.clone(),
        },
        other => BackendError::Engine {
            backend: String::new(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prm_text_format() {
        assert_eq!(
            prm_text(&["Step 1: a.".into(), " Step 2: b. ".into()], "<|step|>"),
            "Step 1: a. <|step|>\nStep 2: b. <|step|>"
        );
    }
}
