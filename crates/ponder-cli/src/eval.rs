//! `ponder eval`: runs a strategy over a dataset, one record per problem in
//! `DIR/records.jsonl`, then writes `DIR/summary.json` (and `DIR/engine.json` with the embedded
//! engine's counters when it served the run).

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ponder_eval::dataset::{search_dirs, DATA_DIR_ENV};
use ponder_eval::runner::{RunnerOptions, DEFAULT_CONCURRENCY};
use ponder_eval::store::{
    read_records, BackendSettings, DatasetSettings, RunDir, RunSettings, RUN_VERSION,
};
use ponder_eval::{choose, summarize, FieldOverrides, LoadOptions, Record, Shard, Summary};

use crate::solve::{build, engine_report, resolve_flags, Built, RunFlags};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Dataset: a preset (gsm8k, math500, aime24, aime25, amc23, synthetic-easy,
    /// synthetic-medium, synthetic-hard) or a path to a JSONL file.
    #[arg(long)]
    pub dataset: String,
    /// Strategy name (`ponder strategies` lists them). Default: self-consistency.
    #[arg(long, env = "PONDER_STRATEGY")]
    pub strategy: Option<String>,
    /// Strategy parameter as key=value (JSON values: 8, 0.7, true, ["a"]); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Base URL of an OpenAI-compatible server; repeat (or comma-separate) for replicas.
    /// Default: `backend.endpoints` from the config file. `replay:FILE` serves saved traces
    /// instead (a samples file or eval records with questions; no server, no --model).
    #[arg(long, env = "PONDER_BACKEND", value_delimiter = ',')]
    pub backend: Vec<String>,
    /// Model name sent to the server, or a GGUF file to run in-process on the embedded engine
    /// (then no --backend). Default: `backend.model` from the config file; with neither a
    /// backend nor a model, the bundled model in `models/`.
    #[arg(long, env = "PONDER_MODEL")]
    pub model: Option<String>,
    /// A process reward model (GGUF) for the embedded engine. Default: the bundled PRM with the
    /// bundled model, none with a --model file.
    #[arg(long, env = "PONDER_PRM", value_name = "PRM.gguf")]
    pub prm: Option<PathBuf>,
    /// CPU threads of the embedded engine. Default: every core.
    #[arg(long, env = "PONDER_THREADS")]
    pub threads: Option<u32>,
    /// Live sequences of the embedded engine (1-256), each with its own KV cache of up to
    /// 2,048 tokens: more keeps more prefixes cached for search strategies, at that much more
    /// memory. Default: 64.
    #[arg(long, env = "PONDER_SEQUENCES", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub sequences: Option<u32>,
    /// YAML config file (keys: backend, strategy, params, seed).
    #[arg(long, env = "PONDER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run seed: synthetic problems and every problem's strategy seed derive from it.
    /// Default: 0.
    #[arg(long, env = "PONDER_SEED")]
    pub seed: Option<u64>,
    /// Output directory (records.jsonl, run.json, summary.json). Required.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep the first N problems of a file; synthetic presets generate N. Default: the whole
    /// file; 100 synthetic problems.
    #[arg(long, visible_alias = "n")]
    pub limit: Option<usize>,
    /// Problems solved at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Finish an interrupted run in --out: keep its complete records, drop a torn last line,
    /// run again the problems whose strategy failed, solve the rest. The settings must match
    /// run.json. Default: off (an existing non-empty records.jsonl is an error).
    #[arg(long)]
    pub resume: bool,
    /// Run shard I of N (0 ≤ I < N): the problems whose id hashes to I (SplitMix64 of the
    /// FNV-1a hash of the id, mod N; `--limit` applies first), so shards partition the problems
    /// and `ponder report` merges their directories. Default: all problems.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Folder holding the benchmark files. Default: the repository's data/benchmarks, else
    /// shared/data/benchmarks or ../shared/data/benchmarks, from the current directory or the
    /// executable's ancestors.
    #[arg(long, env = DATA_DIR_ENV)]
    pub data_dir: Option<PathBuf>,
    /// Field holding the question. Default: the preset's, else `question`.
    #[arg(long)]
    pub question_field: Option<String>,
    /// Field holding the gold answer. Default: the preset's, else `answer`.
    #[arg(long)]
    pub answer_field: Option<String>,
    /// Field holding the problem id. Default: the preset's, else ids from the row number.
    #[arg(long)]
    pub id_field: Option<String>,
    /// Skip malformed dataset lines (they are counted and listed) instead of stopping.
    /// Default: off.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Print summary.json to stdout instead of a text summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let resolved = resolve_flags(&RunFlags {
        backend: args.backend.clone(),
        model: args.model.clone(),
        prm: args.prm.clone(),
        threads: args.threads,
        sequences: args.sequences,
        strategy: args.strategy.clone(),
        set: args.set.clone(),
        config: args.config.clone(),
        seed: args.seed,
    })?;
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    if args.limit == Some(0) {
        anyhow::bail!("--limit must be at least 1");
    }
    let overrides = FieldOverrides {
        question: args.question_field.clone(),
        answer: args.answer_field.clone(),
        id: args.id_field.clone(),
    };
    let dataset = choose(&args.dataset, &overrides)?;
    let loaded = dataset.load(&LoadOptions {
        search: search_dirs(args.data_dir.as_deref()),
        limit: args.limit,
        seed: resolved.seed,
        skip_bad_lines: args.skip_bad_lines,
    })?;
    if !loaded.bad_lines.is_empty() {
        let file = loaded
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        eprintln!(
            "warning: skipped {} malformed line{} of {file}:",
            loaded.bad_lines.len(),
            if loaded.bad_lines.len() == 1 { "" } else { "s" }
        );
        for bad in loaded.bad_lines.iter().take(10) {
            eprintln!("  {file}:{}: {}", bad.line, bad.reason);
        }
        if loaded.bad_lines.len() > 10 {
            eprintln!("  … and {} more", loaded.bad_lines.len() - 10);
        }
    }
    let dataset_problems = loaded.problems.len();
    let problems: Vec<_> = loaded
        .problems
        .into_iter()
        .filter(|p| args.shard.is_none_or(|s| s.contains(&p.id)))
        .collect();

    let settings = RunSettings {
        version: RUN_VERSION,
        dataset: DatasetSettings {
            name: dataset.name.clone(),
            file: loaded.path.as_ref().map(|p| p.display().to_string()),
            question_field: args.question_field.clone(),
            answer_field: args.answer_field.clone(),
            id_field: args.id_field.clone(),
            gold_format: dataset.gold,
            answer_preset: dataset.answer,
            limit: args.limit,
            problems: dataset_problems,
            skipped_lines: loaded.bad_lines.len(),
        },
        strategy: resolved.strategy.clone(),
        params: resolved.params.clone(),
        seed: resolved.seed,
        shard: args.shard,
        backend: match &resolved.engine {
            // The embedded engine is recorded as an `engine:` endpoint with the model file.
            Some(m) => BackendSettings {
                endpoints: vec![format!("engine:{}", m.model.display())],
                model: m
                    .prm
                    .as_ref()
                    .map(|p| format!("prm:{}", p.display()))
                    .unwrap_or_default(),
            },
            None => BackendSettings {
                endpoints: resolved.backend.endpoints.clone(),
                model: resolved.backend.model.clone(),
            },
        },
    };
    // Build first: a bad strategy or parameter fails before anything is written.
    let Built {
        backend,
        strategy,
        engine,
    } = build(&resolved)?;

    let dir = RunDir::new(&args.out);
    let prepared = dir.prepare(&settings, args.resume)?;
    if prepared.truncated_bytes > 0 {
        eprintln!(
            "ponder eval: dropped a torn last line ({} bytes) from {}",
            prepared.truncated_bytes,
            dir.records_path().display()
        );
    }
    if prepared.retried > 0 {
        eprintln!(
            "ponder eval: {} problem{} that failed before will run again",
            prepared.retried,
            if prepared.retried == 1 { "" } else { "s" }
        );
    }
    if prepared.duplicates > 0 {
        eprintln!(
            "warning: {} duplicate records in {} are ignored",
            prepared.duplicates,
            dir.records_path().display()
        );
    }
    if let Some(before) = &prepared.endpoints_before {
        eprintln!(
            "ponder eval: resuming against {} (the run began against {})",
            settings.backend.endpoints.join(", "),
            before.join(", ")
        );
    }
    let done: HashSet<&str> = prepared.existing.iter().map(|r| r.id.as_str()).collect();
    let pending: Vec<_> = problems
        .iter()
        .filter(|p| !done.contains(p.id.as_str()))
        .cloned()
        .collect();
    let total = problems.len();
    eprintln!(
        "ponder eval: {} on {} ({} problem{}{}{}) against {} (seed {}) → {}",
        settings.strategy,
        settings.dataset.name,
        total,
        if total == 1 { "" } else { "s" },
        args.shard
            .map(|s| format!(", shard {s} of {dataset_problems}"))
            .unwrap_or_default(),
        if prepared.existing.is_empty() {
            String::new()
        } else {
            format!(", {} already done", total - pending.len())
        },
        settings.backend.endpoints.join(", "),
        settings.seed,
        args.out.display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut progress = Progress::new(total, std::io::stderr().is_terminal());
    for r in &prepared.existing {
        progress.add(r, false);
    }
    let started = Instant::now();
    let writer = dir.writer()?;
    let options = RunnerOptions {
        concurrency: args.concurrency,
        seed: settings.seed,
        extract: dataset.answer.options(),
    };
    let mut on_record = |r: &Record| progress.add(r, true);
    runtime.block_on(ponder_eval::runner::run(
        pending,
        strategy,
        backend,
        options,
        writer,
        &mut on_record,
    ))?;
    progress.finish();
    let wall_ms = started.elapsed().as_millis() as u64;
    drop(runtime);
    if let Some(e) = &engine {
        // What the embedded engine decoded (this session only): prefills, forks, PRM tokens.
        let report = engine_report(e);
        let path = args.out.join("engine.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    // The summary covers every record on disk, those of earlier sessions included.
    let read = read_records(&dir.records_path())?;
    let mut summary = summarize(&read.records);
    summary.wall_ms = Some(wall_ms);
    dir.write_summary(&summary)?;
    if summary.failed > 0 {
        let first = read
            .records
            .iter()
            .find_map(|r| r.error.as_deref().map(|e| (r.id.as_str(), e)));
        if let Some((id, error)) = first {
            eprintln!(
                "warning: the strategy failed on {} problem{} (counted as wrong), e.g. {id}: {error}",
                summary.failed,
                if summary.failed == 1 { "" } else { "s" }
            );
            eprintln!("hint: `ponder eval … --resume` with the same settings runs them again");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &dir);
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn print_summary(s: &Summary, dir: &RunDir) {
    println!(
        "accuracy: {} [{}, {}] ({} of {} correct, {} failed, {} without an answer; 95% Wilson interval)",
        pct(s.accuracy),
        pct(s.accuracy_ci95[0]),
        pct(s.accuracy_ci95[1]),
        s.correct,
        s.problems,
        s.failed,
        s.no_answer
    );
    let join = |m: &std::collections::BTreeMap<usize, f64>| {
        m.iter()
            .map(|(k, v)| format!("@{k} {}", pct(*v)))
            .collect::<Vec<_>>()
            .join("  ")
    };
    if !s.pass_at_k.is_empty() {
        println!("pass@k: {}", join(&s.pass_at_k));
        println!("maj@k:  {}", join(&s.maj_at_k));
    }
    println!(
        "tokens per problem: {:.1} prompt + {:.1} completion; {} requests ({} retried), {} stopped early",
        s.prompt_tokens_per_problem, s.completion_tokens_per_problem, s.requests, s.retries, s.aborted
    );
    println!(
        "latency per problem: p50 {:.0} ms, p95 {:.0} ms; wall {:.1} s",
        s.latency_ms.p50,
        s.latency_ms.p95,
        s.wall_ms.unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "wrote {} and {}",
        dir.records_path().display(),
        dir.summary_path().display()
    );
}

/// Progress on stderr: a bar redrawn in place on a terminal, a plain line every few seconds
/// otherwise.
struct Progress {
    total: usize,
    done: usize,
    correct: usize,
    failed: usize,
    completion_tokens: u64,
    /// Records of this session, for the rate and ETA.
    session: usize,
    started: Instant,
    last: Option<Instant>,
    tty: bool,
}

/// How often a plain progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// How often the bar is redrawn at most.
const BAR_EVERY: Duration = Duration::from_millis(100);

impl Progress {
    fn new(total: usize, tty: bool) -> Self {
        Progress {
            total,
            done: 0,
            correct: 0,
            failed: 0,
            completion_tokens: 0,
            session: 0,
            started: Instant::now(),
            last: None,
            tty,
        }
    }

    fn add(&mut self, r: &Record, this_session: bool) {
        self.done += 1;
        self.correct += usize::from(r.correct);
        self.failed += usize::from(r.error.is_some());
        self.completion_tokens += r.usage.completion_tokens;
        if this_session {
            self.session += 1;
            let every = if self.tty { BAR_EVERY } else { PLAIN_EVERY };
            let now = Instant::now();
            if self.last.is_none_or(|t| now.duration_since(t) >= every) {
                self.last = Some(now);
                self.draw();
            }
        }
    }

    fn eta(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = self.total.saturating_sub(self.done);
        if self.session == 0 || left == 0 {
            return "–".into();
        }
        let secs = elapsed / self.session as f64 * left as f64;
        if secs >= 3600.0 {
            format!(
                "{:.0}h{:02.0}m",
                (secs / 3600.0).floor(),
                (secs % 3600.0) / 60.0
            )
        } else if secs >= 60.0 {
            format!("{:.0}m{:02.0}s", (secs / 60.0).floor(), secs % 60.0)
        } else {
            format!("{secs:.0}s")
        }
    }

    fn stats(&self) -> String {
        let acc = if self.done == 0 {
            0.0
        } else {
            self.correct as f64 / self.done as f64 * 100.0
        };
        let tok = if self.done == 0 {
            0.0
        } else {
            self.completion_tokens as f64 / self.done as f64
        };
        let failed = if self.failed > 0 {
            format!("  {} failed", self.failed)
        } else {
            String::new()
        };
        format!(
            "{}/{}  acc {acc:.1}%  {tok:.0} tok/problem{failed}  ETA {}",
            self.done,
            self.total,
            self.eta()
        )
    }

    fn draw(&self) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            const WIDTH: usize = 30;
            let filled = (self.done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
            let bar: String = (0..WIDTH)
                .map(|i| if i < filled { '█' } else { '░' })
                .collect();
            let _ = write!(err, "\r{bar} {}\x1b[K", self.stats());
        } else {
            let _ = writeln!(err, "ponder eval: {}", self.stats());
        }
        let _ = err.flush();
    }

    fn finish(&mut self) {
        self.draw();
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}
