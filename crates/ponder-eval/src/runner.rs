//! The evaluation runner: solves problems concurrently with one strategy and backend, and
//! hands each finished record to a single writer as soon as it completes.
//!
//! A strategy error on one problem becomes a record with `error` set and `correct: false`; the
//! run goes on. Only a failure to write the records stops it.

use std::sync::Arc;
use std::time::Instant;

use ponder_answer::ExtractOptions;
use ponder_core::{run_strategy, Backend, Message, SeededRng, Strategy, StrategyInput};
use tokio::sync::{mpsc, Semaphore};

use crate::dataset::EvalProblem;
use crate::record::Record;
use crate::store::{RecordWriter, StoreError};

/// Concurrency when none is given.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// The strategy seed of problem `id` in a run with seed `run_seed`: the first draw of
/// `SeededRng::derive(run_seed, "problem:" + id)`, cut to 53 bits so that it is exact in any
/// JSON reader and `seed + i` (sample i) cannot overflow. It depends on the id only, so a
/// resumed or sharded run gives each problem the same seed.
pub fn problem_seed(run_seed: u64, id: &str) -> u64 {
    SeededRng::derive(run_seed, &format!("problem:{id}")).next_u64() >> 11
}

/// How the runner works.
#[derive(Debug, Clone, Copy)]
pub struct RunnerOptions {
    /// Problems solved at once. Default: [`DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    pub seed: u64,
    /// Extraction for candidates the strategy left without an answer.
    pub extract: ExtractOptions,
}

/// Solves one problem; never fails (a strategy error is kept in the record).
pub async fn solve_problem(
    problem: &EvalProblem,
    strategy: &dyn Strategy,
    backend: Arc<dyn Backend>,
    run_seed: u64,
    extract: &ExtractOptions,
) -> Record {
    let seed = problem_seed(run_seed, &problem.id);
    let input = StrategyInput {
        messages: vec![Message::user(problem.question.clone())],
        seed,
    };
    let started = Instant::now();
    let result = run_strategy(strategy, backend, &input).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(r) => Record::from_result(problem, seed, &r, extract, elapsed_ms),
        Err(e) => Record::failed(problem, seed, error_chain(&e), elapsed_ms),
    }
}

/// `error: cause: cause…` on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Solves `problems` with up to `options.concurrency` at once, appending each record through
/// `writer` (one writer thread) as it completes and then calling `on_record` with it. Returns
/// the number of records written.
pub async fn run(
    problems: Vec<EvalProblem>,
    strategy: Arc<dyn Strategy>,
    backend: Arc<dyn Backend>,
    options: RunnerOptions,
    writer: RecordWriter,
    on_record: &mut (dyn FnMut(&Record) + Send),
) -> Result<usize, StoreError> {
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Record>();
    for problem in problems {
        let permits = permits.clone();
        let strategy = strategy.clone();
        let backend = backend.clone();
        let done = done_tx.clone();
        let extract = options.extract;
        let seed = options.seed;
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            // The strategy runs in its own task so that a panic inside it becomes a failed
            // record instead of a lost problem.
            let inner = {
                let problem = problem.clone();
                tokio::spawn(async move {
                    solve_problem(&problem, strategy.as_ref(), backend, seed, &extract).await
                })
            };
            let record = match inner.await {
                Ok(r) => r,
                Err(e) => Record::failed(
                    &problem,
                    problem_seed(seed, &problem.id),
                    format!("the strategy task failed: {e}"),
                    0,
                ),
            };
            let _ = done.send(record);
        });
    }
    drop(done_tx);

    // The single writer: a blocking thread that owns the file.
    let (write_tx, mut write_rx) = mpsc::unbounded_channel::<Record>();
    let writer_task = tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
        let mut writer = writer;
        let mut written = 0;
        while let Some(record) = write_rx.blocking_recv() {
            writer.append(&record)?;
            written += 1;
        }
        writer.sync()?;
        Ok(written)
    });

    while let Some(record) = done_rx.recv().await {
        if write_tx.send(record.clone()).is_err() {
            // The writer stopped: its error is returned below.
            break;
        }
        on_record(&record);
    }
    drop(write_tx);
    drop(done_rx);
    match writer_task.await {
        Ok(result) => result,
        Err(e) => Err(StoreError::Io {
            action: "write records to",
            path: "records.jsonl".into(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{read_records, RunDir};
    use ponder_core::{
        BackendError, BoxFuture, Candidate, Capabilities, CompletionStream, FinishReason,
        GenerationRequest, StrategyError, StrategyOutcome,
    };

    /// A backend nothing calls.
    struct Idle;

    impl Backend for Idle {
        fn name(&self) -> &str {
            "idle"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_top_logprobs: None,
                multiple_samples: true,
                prefix_continuation: false,
                process_rewards: false,
                streaming: true,
                max_stop_strings: None,
            }
        }
        fn stream(
            &self,
            _request: GenerationRequest,
        ) -> BoxFuture<'_, Result<CompletionStream, BackendError>> {
            Box::pin(async { Err(BackendError::Cancelled) })
        }
    }

    /// Answers the question text itself; `fail` gives an error, `panic` panics.
    struct Echo;

    impl Strategy for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn run<'a>(
            &'a self,
            _backend: &'a Arc<dyn Backend>,
            input: &'a StrategyInput,
        ) -> BoxFuture<'a, Result<StrategyOutcome, StrategyError>> {
            Box::pin(async move {
                let q = input
                    .messages
                    .first()
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                match q.as_str() {
                    "fail" => Err(StrategyError::Budget("no budget left".into())),
                    "panic" => panic!("a strategy bug"),
                    _ => Ok(StrategyOutcome {
                        answer: Some(q.clone()),
                        selected: Some(0),
                        candidates: vec![
                            Candidate {
                                text: format!("so \\boxed{{{q}}}"),
                                answer: Some(q.clone()),
                                votes: Some(1),
                                score: None,
                                finish_reason: FinishReason::Stop,
                                completion_tokens: Some(3),
                            },
                            // No answer from the strategy: the runner extracts one.
                            Candidate {
                                text: "it is \\boxed{0}".into(),
                                answer: None,
                                votes: None,
                                score: Some(0.5),
                                finish_reason: FinishReason::Length,
                                completion_tokens: Some(3),
                            },
                        ],
                        details: serde_json::Value::Null,
                    }),
                }
            })
        }
    }

    #[tokio::test]
    async fn errors_and_panics_become_failed_records_and_the_run_goes_on() {
        let problems: Vec<EvalProblem> = ["4", "fail", "panic", "7"]
            .iter()
            .enumerate()
            .map(|(index, q)| EvalProblem {
                index,
                id: format!("p{index}"),
                question: q.to_string(),
                gold: "4".into(),
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("ponder-eval-runner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let run_dir = RunDir::new(&dir);
        let mut seen = 0;
        let written = run(
            problems,
            Arc::new(Echo),
            Arc::new(Idle),
            RunnerOptions {
                concurrency: 2,
                seed: 5,
                extract: ExtractOptions::default(),
            },
            run_dir.writer().expect("opens"),
            &mut |_| seen += 1,
        )
        .await
        .expect("runs");
        assert_eq!((written, seen), (4, 4));
        let mut records = read_records(&run_dir.records_path())
            .expect("reads")
            .records;
        records.sort_by_key(|r| r.index);
        let verdicts: Vec<(bool, bool)> = records
            .iter()
            .map(|r| (r.correct, r.error.is_some()))
            .collect();
        assert_eq!(
            verdicts,
            [(true, false), (false, true), (false, true), (false, false)]
        );
        assert_eq!(
            records[1].error.as_deref(),
            Some("budget exhausted: no budget left")
        );
        assert!(records[2]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("panic")));
        assert_eq!(records[0].seed, problem_seed(5, "p0"));
        assert_eq!(records[0].candidates[1].answer.as_deref(), Some("0"));
        assert_eq!(records[0].candidates[1].correct, Some(false));
        assert_eq!(records[0].candidates[1].finish_reason, "length");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn problem_seeds_depend_on_run_seed_and_id_only() {
        assert_eq!(problem_seed(1, "a"), problem_seed(1, "a"));
        assert_ne!(problem_seed(1, "a"), problem_seed(2, "a"));
        assert_ne!(problem_seed(1, "a"), problem_seed(1, "b"));
        assert!(problem_seed(u64::MAX, "x") < 1 << 53);
    }
}
