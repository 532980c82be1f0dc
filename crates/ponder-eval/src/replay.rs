//! A backend that replays completions from a saved pool of traces.
//!
//! The DeepConf paper evaluated its online method by drawing traces from a large pre-generated
//! pool per problem instead of calling the model again. [`ReplayBackend`] does the same for any
//! strategy: every request is matched to a problem of the pool by its question, and each
//! completion it asks for is a saved trace of that problem.
//!
//! # Which trace a completion gets
//!
//! Each problem's traces are put in a seeded random order (the backend seed and the problem id
//! fix it). Completion `i` of a request with seed `s` gets trace number `(s + i) mod N` of that
//! order — so samples that use seeds `s, s+1, …` (as every strategy's `n` samples do) get
//! distinct traces while fewer than `N` are asked for, and the choice does not depend on the
//! order in which concurrent requests arrive. A request without a seed takes the next traces
//! of a per-problem cursor instead.
//!
//! # What is honoured
//!
//! Stop strings (matched on the saved text), `max_tokens` (when the trace has token records),
//! and `top_logprobs` (the saved alternatives cut to `k`). Traces with token records are
//! streamed token by token so that strategies can stop them early; traces without are one
//! delta. Prefix continuation and process rewards are not offered.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ponder_core::{
    Backend, BackendError, BoxFuture, Capabilities, CompletionStream, FinishReason,
    GenerationRequest, InvalidRequest, Prompt, Role, SeededRng, StopMatcher, StreamEvent,
    TokenLogprob, Usage,
};
use serde::Deserialize;

/// One saved trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub text: String,
    /// Token records, when the trace was saved with log-probabilities.
    pub tokens: Option<Vec<TokenLogprob>>,
    pub finish_reason: FinishReason,
    /// Tokens the trace took, when known.
    pub completion_tokens: Option<u64>,
}

/// The saved traces of one problem.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolEntry {
    pub id: String,
    pub question: String,
    pub traces: Vec<Trace>,
}

/// Saved traces of many problems.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    entries: Vec<PoolEntry>,
    by_question: HashMap<String, usize>,
}

/// A pool file that cannot be read; names the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot read pool file {}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", file.display())]
    Line {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("pool file {} holds no traces", file.display())]
    Empty { file: PathBuf },
}

/// A line of a pool file: an eval record (`candidates`) or a samples line (`samples`).
#[derive(Deserialize)]
struct PoolLine {
    id: serde_json::Value,
    #[serde(alias = "prompt")]
    question: String,
    #[serde(alias = "candidates")]
    samples: Vec<SavedTrace>,
}

#[derive(Deserialize)]
struct SavedTrace {
    text: String,
    #[serde(default)]
    tokens: Option<Vec<TokenLogprob>>,
    /// `stop`, `length`, `aborted` or `error` (anything else reads as `stop`).
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl Pool {
    /// A pool from entries; a later entry with the same question as an earlier one adds its
    /// traces to it.
    pub fn new(entries: Vec<PoolEntry>) -> Pool {
        let mut pool = Pool::default();
        for entry in entries {
            let key = question_key(&entry.question);
            match pool.by_question.get(&key) {
                Some(&i) => pool.entries[i].traces.extend(entry.traces),
                None => {
                    pool.by_question.insert(key, pool.entries.len());
                    pool.entries.push(entry);
                }
            }
        }
        pool
    }

    /// Reads a JSONL pool: each line has `id`, `question` (or `prompt`) and `samples` (or an
    /// eval record's `candidates`), each trace with `text` and optionally `tokens`,
    /// `finish_reason` and `completion_tokens`. Other fields are ignored.
    pub fn load(path: &Path) -> Result<Pool, PoolError> {
        let file = std::fs::File::open(path).map_err(|source| PoolError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        let mut entries = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| PoolError::Io {
                file: path.to_path_buf(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: PoolLine = serde_json::from_str(&line).map_err(|e| PoolError::Line {
                file: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?;
            let id = match parsed.id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            entries.push(PoolEntry {
                id,
                question: parsed.question,
                traces: parsed
                    .samples
                    .into_iter()
                    .map(|t| Trace {
                        text: t.text,
                        tokens: t.tokens,
                        finish_reason: t
                            .finish_reason
                            .as_deref()
                            .map_or(FinishReason::Stop, FinishReason::from_openai),
                        completion_tokens: t.completion_tokens,
                    })
                    .collect(),
            });
        }
        let pool = Pool::new(entries);
        if pool.entries.iter().all(|e| e.traces.is_empty()) {
            return Err(PoolError::Empty {
                file: path.to_path_buf(),
            });
        }
        Ok(pool)
    }

    pub fn entries(&self) -> &[PoolEntry] {
        &self.entries
    }

    /// The entry a prompt asks about: the last user message (or the raw text) equal to a saved
    /// question, or else containing one (the longest such question wins).
    fn find(&self, prompt: &Prompt) -> Option<usize> {
        let text = match prompt {
            Prompt::Chat { messages, .. } => messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.as_str())?,
            Prompt::Text(text) => text.as_str(),
        };
        let key = question_key(text);
        if let Some(&i) = self.by_question.get(&key) {
            return Some(i);
        }
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                !e.question.trim().is_empty() && key.contains(&question_key(&e.question))
            })
            .max_by_key(|(_, e)| e.question.len())
            .map(|(i, _)| i)
    }

    /// The largest `top_logprobs` every trace with token records can serve; `None` when some
    /// trace has none.
    fn top_k(&self) -> Option<u8> {
        let mut k: Option<usize> = None;
        for trace in self.entries.iter().flat_map(|e| &e.traces) {
            let tokens = trace.tokens.as_ref()?;
            let least = tokens.iter().map(|t| t.top.len()).min().unwrap_or(0);
            k = Some(k.map_or(least, |k| k.min(least)));
        }
        k.map(|k| k.min(usize::from(ponder_core::MAX_TOP_LOGPROBS)) as u8)
    }
}

/// Whitespace-insensitive form of a question, for matching.
fn question_key(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Serves completions from a [`Pool`]; see the module docs.
#[derive(Debug)]
pub struct ReplayBackend {
    pool: Pool,
    seed: u64,
    name: String,
    top_k: Option<u8>,
    /// Per entry: the next position for requests without a seed.
    cursors: Mutex<HashMap<usize, u64>>,
}

impl ReplayBackend {
    /// `seed` fixes the order of each problem's traces.
    pub fn new(pool: Pool, seed: u64, name: impl Into<String>) -> ReplayBackend {
        let top_k = pool.top_k();
        ReplayBackend {
            pool,
            seed,
            name: name.into(),
            top_k,
            cursors: Mutex::new(HashMap::new()),
        }
    }

    /// Trace indices in the seeded order of `entry`.
    fn order(&self, entry: usize) -> Vec<usize> {
        let e = &self.pool.entries[entry];
        let mut order: Vec<usize> = (0..e.traces.len()).collect();
        let mut rng = SeededRng::derive(self.seed, &format!("replay:{}", e.id));
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }

    /// Positions in the seeded order for the `n` completions of a request.
    fn positions(&self, entry: usize, seed: Option<u64>, n: u32) -> Vec<u64> {
        match seed {
            Some(s) => (0..u64::from(n)).map(|i| s.wrapping_add(i)).collect(),
            None => {
                let mut cursors = match self.cursors.lock() {
                    Ok(c) => c,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let cursor = cursors.entry(entry).or_insert(0);
                let start = *cursor;
                *cursor += u64::from(n);
                (start..start + u64::from(n)).collect()
            }
        }
    }

    fn events(&self, request: &GenerationRequest) -> Result<Vec<StreamEvent>, BackendError> {
        request.validate()?;
        let entry = self.pool.find(&request.prompt).ok_or_else(|| {
            BackendError::InvalidRequest(InvalidRequest {
                field: "prompt",
                reason: format!(
                    "no problem of the replay pool `{}` matches this prompt",
                    self.name
                ),
            })
        })?;
        let traces = &self.pool.entries[entry].traces;
        if traces.is_empty() {
            return Err(BackendError::InvalidRequest(InvalidRequest {
                field: "prompt",
                reason: format!(
                    "problem `{}` has no saved traces",
                    self.pool.entries[entry].id
                ),
            }));
        }
        let order = self.order(entry);
        let params = &request.params;
        let mut events = Vec::new();
        let mut completion_tokens = 0u64;
        for (index, position) in self
            .positions(entry, params.seed, params.n)
            .into_iter()
            .enumerate()
        {
            let trace = &traces[order[(position % order.len() as u64) as usize]];
            completion_tokens += replay_trace(trace, index as u32, request, &mut events);
        }
        events.push(StreamEvent::Usage(Usage {
            prompt_tokens: 0,
            completion_tokens,
            cached_tokens: None,
        }));
        Ok(events)
    }
}

/// Appends the events of one trace as completion `index`; returns the tokens it stands for.
fn replay_trace(
    trace: &Trace,
    index: u32,
    request: &GenerationRequest,
    events: &mut Vec<StreamEvent>,
) -> u64 {
    let params = &request.params;
    let mut stops = StopMatcher::new(params.stop.clone());
    let mut used = 0u64;
    let finish = |events: &mut Vec<StreamEvent>, reason, stop| {
        events.push(StreamEvent::Finished {
            index,
            reason,
            stop,
        })
    };
    match &trace.tokens {
        Some(tokens) => {
            let limit = params.max_tokens.map_or(u64::MAX, u64::from);
            for token in tokens {
                if used == limit {
                    finish(events, FinishReason::Length, None);
                    return used;
                }
                used += 1;
                let scan = stops.push(&token.token);
                let records = match params.top_logprobs {
                    Some(k) => {
                        let mut t = token.clone();
                        t.top.truncate(usize::from(k));
                        vec![t]
                    }
                    None => Vec::new(),
                };
                events.push(StreamEvent::Delta {
                    index,
                    text: scan.emit,
                    token_count: 1,
                    tokens: records,
                });
                if let Some(stop) = scan.matched {
                    finish(events, FinishReason::Stop, Some(stop));
                    return used;
                }
            }
        }
        None => {
            used = trace
                .completion_tokens
                .unwrap_or_else(|| estimate_tokens(&trace.text));
            let scan = stops.push(&trace.text);
            events.push(StreamEvent::Delta {
                index,
                text: scan.emit,
                token_count: used.min(u64::from(u32::MAX)) as u32,
                tokens: Vec::new(),
            });
            if let Some(stop) = scan.matched {
                finish(events, FinishReason::Stop, Some(stop));
                return used;
            }
        }
    }
    let rest = stops.flush();
    if !rest.is_empty() {
        events.push(StreamEvent::Delta {
            index,
            text: rest,
            token_count: 0,
            tokens: Vec::new(),
        });
    }
    finish(events, trace.finish_reason, None);
    used
}

/// About four characters per token, for traces saved without a token count.
fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

impl Backend for ReplayBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_top_logprobs: self.top_k,
            multiple_samples: true,
            prefix_continuation: false,
            process_rewards: false,
            streaming: true,
            max_stop_strings: None,
        }
    }

    fn stream(
        &self,
        request: GenerationRequest,
    ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
        let result = self.events(&request);
        let n = request.params.n;
        Box::pin(async move {
            let events = result?;
            Ok(CompletionStream::new(
                n,
                futures_util::stream::iter(events.into_iter().map(Ok)),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ponder_core::{run_strategy, Message, Params, SamplingParams, StrategyInput, TopLogprob};

    use super::*;

    fn trace(text: &str) -> Trace {
        Trace {
            text: text.into(),
            tokens: None,
            finish_reason: FinishReason::Stop,
            completion_tokens: None,
        }
    }

    fn tokenized(pieces: &[&str], top: usize) -> Trace {
        Trace {
            text: pieces.concat(),
            tokens: Some(
                pieces
                    .iter()
                    .map(|p| TokenLogprob {
                        token: p.to_string(),
                        logprob: Some(-0.5),
                        top: (0..top)
                            .map(|k| TopLogprob {
                                token: format!("alt{k}"),
                                logprob: -(k as f64) - 0.5,
                            })
                            .collect(),
                    })
                    .collect(),
            ),
            finish_reason: FinishReason::Stop,
            completion_tokens: Some(pieces.len() as u64),
        }
    }

    fn pool() -> Pool {
        Pool::new(vec![
            PoolEntry {
                id: "a".into(),
                question: "What is 2 + 2?".into(),
                traces: (0..6)
                    .map(|i| {
                        trace(&format!(
                            "trace {i}: \\boxed{{{}}}",
                            if i < 4 { 4 } else { 5 }
                        ))
                    })
                    .collect(),
            },
            PoolEntry {
                id: "b".into(),
                question: "Name a colour.".into(),
                traces: vec![tokenized(&["The", " answer", " is", " red", "."], 5)],
            },
        ])
    }

    fn request(question: &str, params: SamplingParams) -> GenerationRequest {
        GenerationRequest::new(Prompt::user(question), params)
    }

    async fn texts(b: &ReplayBackend, r: GenerationRequest) -> Vec<String> {
        let resp = b.generate(r).await.expect("replays");
        resp.completions.into_iter().map(|c| c.text).collect()
    }

    #[tokio::test]
    async fn seeded_samples_are_distinct_and_reproducible() {
        let b = ReplayBackend::new(pool(), 1, "pool");
        let params = SamplingParams {
            n: 6,
            seed: Some(10),
            ..SamplingParams::default()
        };
        let first = texts(&b, request("What is 2 + 2?", params.clone())).await;
        let mut distinct = first.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "{first:?}");
        assert_eq!(texts(&b, request("What is 2 + 2?", params)).await, first);
        // Single requests with seeds 10..16 give the same six traces in the same order.
        let mut singles = Vec::new();
        for s in 10..16 {
            let one = SamplingParams {
                seed: Some(s),
                ..SamplingParams::default()
            };
            singles.extend(texts(&b, request("  What is 2 +  2? ", one)).await);
        }
        assert_eq!(singles, first);
        // Another backend seed gives another order of the same traces.
        let other = ReplayBackend::new(pool(), 2, "pool");
        let params = SamplingParams {
            n: 6,
            seed: Some(10),
            ..SamplingParams::default()
        };
        let mut reordered = texts(&other, request("What is 2 + 2?", params)).await;
        assert_ne!(reordered, first);
        reordered.sort();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(reordered, sorted);
    }

    #[tokio::test]
    async fn unseeded_requests_walk_a_cursor() {
        let b = ReplayBackend::new(pool(), 1, "pool");
        let one = SamplingParams::default();
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.extend(texts(&b, request("What is 2 + 2?", one.clone())).await);
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 6);
    }

    #[tokio::test]
    async fn stops_max_tokens_and_logprobs_are_honoured() {
        let b = ReplayBackend::new(pool(), 0, "pool");
        let r = b
            .generate(request(
                "Please answer. Name a colour.",
                SamplingParams {
                    stop: vec![" is".into()],
                    top_logprobs: Some(2),
                    ..SamplingParams::default()
                },
            ))
            .await
            .expect("replays");
        let c = &r.completions[0];
        assert_eq!(c.text, "The answer");
        assert_eq!(c.finish_reason, FinishReason::Stop);
        assert_eq!(c.stop.as_deref(), Some(" is"));
        let tokens = c.tokens.as_ref().expect("logprobs asked for");
        assert!(tokens.iter().all(|t| t.top.len() == 2));
        assert_eq!(r.usage.completion_tokens, 3);

        let r = b
            .generate(request(
                "Name a colour.",
                SamplingParams {
                    max_tokens: Some(2),
                    ..SamplingParams::default()
                },
            ))
            .await
            .expect("replays");
        assert_eq!(r.completions[0].text, "The answer");
        assert_eq!(r.completions[0].finish_reason, FinishReason::Length);
        assert_eq!(
            b.capabilities().max_top_logprobs,
            None,
            "pool a has no logprobs"
        );
    }

    #[tokio::test]
    async fn an_unknown_question_is_a_clear_error() {
        let b = ReplayBackend::new(pool(), 0, "pool.jsonl");
        let err = b
            .generate(request("What is 3 + 3?", SamplingParams::default()))
            .await
            .expect_err("no such problem");
        assert!(err.to_string().contains("pool.jsonl"), "{err}");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn self_consistency_runs_offline_on_a_pool() {
        let backend: Arc<dyn Backend> = Arc::new(ReplayBackend::new(pool(), 3, "pool"));
        let mut params = Params::new();
        params.insert("n".into(), serde_json::json!(6));
        let strategy = ponder_strategies::Registry::builtin()
            .get("self-consistency")
            .expect("registered")
            .build(&params, backend.name(), &backend.capabilities())
            .expect("builds");
        let input = StrategyInput {
            messages: vec![Message::user("What is 2 + 2?")],
            seed: 0,
        };
        let result = run_strategy(strategy.as_ref(), backend, &input)
            .await
            .expect("runs");
        assert_eq!(result.outcome.answer.as_deref(), Some("4"));
        assert_eq!(result.outcome.candidates.len(), 6);
        assert_eq!(result.cost.requests, 1);
    }
}
