//! `ponder solve` and `ponder strategies`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use ponder_core::{
    parse_param_value, run_strategy, Backend, Message, Params, Strategy, StrategyInput,
    StrategyResult,
};
use ponder_engine::{Engine, EngineConfig, RunnerConfig};
use ponder_eval::replay::{Pool, ReplayBackend};
use ponder_openai::{OpenAiBackend, OpenAiConfig};
use ponder_strategies::Registry;

use crate::config;

/// Default strategy when neither flag, environment nor config names one.
const DEFAULT_STRATEGY: &str = "self-consistency";

#[derive(Debug, Args)]
pub struct SolveArgs {
    /// The question to solve.
    pub question: String,
    /// Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1; repeat for
    /// replicas. Default: `backend.endpoints` from the config file. `replay:FILE` serves saved traces
    /// instead (a samples file or eval records with questions; no server, no --model).
    #[arg(long, env = "PONDER_BACKEND", value_delimiter = ',')]
    pub backend: Vec<String>,
    /// Model name sent to the server, or a GGUF file (`path/model.gguf`) to run in-process on
    /// the embedded engine (then no --backend). Default: `backend.model` from the config file;
    /// with neither a backend nor a model, the bundled model in `models/`.
    #[arg(long, env = "PONDER_MODEL")]
    pub model: Option<String>,
    /// A process reward model (GGUF) for the embedded engine, for strategies that score steps.
    /// Default: the bundled PRM with the bundled model, none with a --model file.
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
    /// Strategy name (`ponder strategies` lists them). Default: self-consistency.
    #[arg(long, env = "PONDER_STRATEGY")]
    pub strategy: Option<String>,
    /// Strategy parameter as key=value (JSON values: 8, 0.7, true, ["a"]); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// YAML config file (keys: backend, strategy, params, seed).
    #[arg(long, env = "PONDER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Base seed; sample i uses seed + i. Default: 0.
    #[arg(long, env = "PONDER_SEED")]
    pub seed: Option<u64>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Write the search record (`details.search`: the tree of steps with scores, pruning and
    /// selection) to this JSON file; for strategies without a search, all of `details`.
    /// Default: not written.
    #[arg(long, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
}

/// Everything a run needs, after merging flags, environment, file and defaults.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) backend: OpenAiConfig,
    /// Set when generations run in-process on the embedded engine instead of over HTTP.
    pub(crate) engine: Option<EngineModels>,
    pub(crate) strategy: String,
    pub(crate) params: Params,
    pub(crate) seed: u64,
}

/// The backend and strategy flags that `solve` and `eval` share.
#[derive(Debug, Clone)]
pub(crate) struct RunFlags {
    pub(crate) backend: Vec<String>,
    pub(crate) model: Option<String>,
    pub(crate) prm: Option<PathBuf>,
    pub(crate) threads: Option<u32>,
    pub(crate) sequences: Option<u32>,
    pub(crate) strategy: Option<String>,
    pub(crate) set: Vec<String>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) seed: Option<u64>,
}

fn resolve(args: &SolveArgs) -> anyhow::Result<Resolved> {
    resolve_flags(&RunFlags {
        backend: args.backend.clone(),
        model: args.model.clone(),
        prm: args.prm.clone(),
        threads: args.threads,
        sequences: args.sequences,
        strategy: args.strategy.clone(),
        set: args.set.clone(),
        config: args.config.clone(),
        seed: args.seed,
    })
}

/// Merges flags, environment (read by clap), the config file and defaults.
pub(crate) fn resolve_flags(args: &RunFlags) -> anyhow::Result<Resolved> {
    let file = match &args.config {
        Some(path) => config::load(path)?,
        None => config::FileConfig::default(),
    };
    let mut backend = file.backend.unwrap_or_default();
    if !args.backend.is_empty() {
        backend.endpoints = args.backend.clone();
    }
    if let Some(model) = &args.model {
        backend.model = model.clone();
    }
    let mut engine = None;
    if backend.endpoints.is_empty() {
        engine = Some(engine_models(
            &backend.model,
            args.prm.as_deref(),
            args.threads,
            args.sequences,
        )?);
    } else if let Some(prm) = &args.prm {
        bail!(
            "--prm {} needs the embedded engine: pass a GGUF file as --model and no --backend",
            prm.display()
        );
    }
    if engine.is_none() && backend.model.is_empty() && replay_pool(&backend.endpoints).is_none() {
        bail!("no model: pass --model NAME (or set PONDER_MODEL, or backend.model in the config file)");
    }
    let mut params = file.params;
    for item in &args.set {
        let Some((key, value)) = item.split_once('=') else {
            bail!("--set {item:?}: expected KEY=VALUE");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("--set {item:?}: the key is empty");
        }
        params.insert(key.to_string(), parse_param_value(value.trim()));
    }
    Ok(Resolved {
        backend,
        engine,
        // Aliases resolve here, so run records name the strategy one way (`cot` is stored as
        // `chain-of-thought`).
        strategy: ponder_strategies::canonical_name(
            args.strategy
                .as_deref()
                .or(file.strategy.as_deref())
                .unwrap_or(DEFAULT_STRATEGY),
        )
        .to_string(),
        params,
        seed: args.seed.or(file.seed).unwrap_or(0),
    })
}

/// The GGUF files the embedded engine runs.
#[derive(Debug, Clone)]
pub(crate) struct EngineModels {
    pub(crate) model: PathBuf,
    pub(crate) prm: Option<PathBuf>,
    /// CPU threads; `None`: every core.
    pub(crate) threads: Option<u32>,
    /// Live sequences; `None`: the engine's default.
    pub(crate) sequences: Option<u32>,
}

/// File names of the bundled models inside the models folder.
const BUNDLED_POLICY: &str = "ponder-policy.gguf";
const BUNDLED_PRM: &str = "ponder-prm.gguf";

/// The folder holding the bundled models: `$PONDER_MODELS_DIR`, else `models/` in the current
/// directory or an ancestor of the executable, else the repository this binary was built from.
fn bundled_models_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PONDER_MODELS_DIR") {
        return Some(PathBuf::from(dir));
    }
    let has = |dir: &Path| dir.join(BUNDLED_POLICY).is_file();
    let cwd = std::env::current_dir().ok().map(|d| d.join("models"));
    let exe = std::env::current_exe().ok();
    let from_exe = exe
        .iter()
        .flat_map(|e| e.ancestors().skip(1))
        .map(|d| d.join("models"));
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    cwd.into_iter()
        .chain(from_exe)
        .chain(std::iter::once(built))
        .find(|d| has(d))
}

/// Which models the engine runs, when no backend is configured: `--model` if it names a GGUF
/// file, else the bundled policy (and the bundled PRM).
fn engine_models(
    model: &str,
    prm: Option<&Path>,
    threads: Option<u32>,
    sequences: Option<u32>,
) -> anyhow::Result<EngineModels> {
    if !model.is_empty() {
        let path = PathBuf::from(model);
        if !(model.ends_with(".gguf") || path.is_file()) {
            bail!(
                "no backend for model `{model}`: pass --backend URL for a served model, or a \
                 GGUF file as --model to run it in-process"
            );
        }
        return Ok(EngineModels {
            model: path,
            prm: prm.map(Path::to_path_buf),
            threads,
            sequences,
        });
    }
    let Some(dir) = bundled_models_dir() else {
        bail!(
            "no backend and no model: pass --backend URL (or PONDER_BACKEND), or --model \
             FILE.gguf; the bundled model ({BUNDLED_POLICY}) was not found in models/ \
             (set PONDER_MODELS_DIR to the folder holding it)"
        );
    };
    let bundled_prm = dir.join(BUNDLED_PRM);
    Ok(EngineModels {
        model: dir.join(BUNDLED_POLICY),
        prm: prm
            .map(Path::to_path_buf)
            .or_else(|| bundled_prm.is_file().then_some(bundled_prm)),
        threads,
        sequences,
    })
}

/// Loads the engine (and its reward model) for `models`.
pub(crate) fn load_engine(models: &EngineModels, seed: u64) -> anyhow::Result<Arc<Engine>> {
    let config = || EngineConfig {
        seed,
        runner: RunnerConfig {
            threads: models.threads,
            sequences: models
                .sequences
                .unwrap_or(RunnerConfig::default().sequences),
            ..Default::default()
        },
    };
    let mut engine = Engine::load(&models.model, config())?;
    if let Some(prm) = &models.prm {
        // Loaded by the first reward request: strategies that never score steps skip it.
        engine = engine
            .with_reward_model_file(prm, config())
            .with_context(|| format!("cannot use the reward model {}", prm.display()))?;
    }
    Ok(Arc::new(engine))
}

/// The embedded engine's counters for `--json` and `engine.json`: model file, what it decoded
/// (prefills, forks, generated tokens) and the same for its reward model.
pub(crate) fn engine_report(engine: &Engine) -> serde_json::Value {
    serde_json::json!({
        "model": engine.info().path,
        "stats": engine.stats(),
        "reward_model": engine.reward_stats(),
    })
}

/// What a run is served by, for messages: the endpoints, or the engine's model files.
pub(crate) fn describe_backend(resolved: &Resolved) -> String {
    match &resolved.engine {
        Some(m) => match &m.prm {
            Some(prm) => format!(
                "the embedded engine ({}, PRM {})",
                m.model.display(),
                prm.display()
            ),
            None => format!("the embedded engine ({})", m.model.display()),
        },
        None => resolved.backend.endpoints.join(", "),
    }
}

/// `--backend replay:FILE`: the path of a saved pool of traces (see `ponder_eval::replay`).
fn replay_pool(endpoints: &[String]) -> Option<&str> {
    match endpoints {
        [one] => one.strip_prefix("replay:"),
        _ => None,
    }
}

/// The backend (HTTP, or a replay pool) and the strategy of `resolved`, checked against each
/// other.
pub(crate) fn build(resolved: &Resolved) -> anyhow::Result<Built> {
    let mut engine = None;
    let backend: Arc<dyn Backend> = match replay_pool(&resolved.backend.endpoints) {
        _ if resolved.engine.is_some() => {
            let models = resolved.engine.as_ref().expect("checked");
            let e = load_engine(models, resolved.seed)?;
            engine = Some(Arc::clone(&e));
            e
        }
        Some(path) => {
            let pool = Pool::load(Path::new(path))?;
            Arc::new(ReplayBackend::new(
                pool,
                resolved.seed,
                format!("replay:{path}"),
            ))
        }
        None => Arc::new(
            OpenAiBackend::new(resolved.backend.clone())
                .context("invalid backend configuration")?,
        ),
    };
    let strategy = Registry::builtin().get(&resolved.strategy)?.build(
        &resolved.params,
        backend.name(),
        &backend.capabilities(),
    )?;
    Ok(Built {
        backend,
        strategy,
        engine,
    })
}

/// A built backend and strategy; `engine` is the embedded engine when one serves the run.
pub(crate) struct Built {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) strategy: Arc<dyn Strategy>,
    pub(crate) engine: Option<Arc<Engine>>,
}

pub fn run(args: SolveArgs) -> anyhow::Result<()> {
    let resolved = resolve(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let endpoints = describe_backend(&resolved);
    let Built {
        backend,
        strategy,
        engine,
    } = build(&resolved)?;
    let input = StrategyInput {
        messages: vec![Message::user(args.question.clone())],
        seed: resolved.seed,
    };
    eprintln!(
        "ponder: {} against {endpoints} (seed {})",
        resolved.strategy, resolved.seed
    );
    let result = runtime
        .block_on(run_strategy(strategy.as_ref(), backend, &input))
        .with_context(|| format!("strategy `{}` failed", resolved.strategy))?;
    if let Some(path) = &args.trace {
        write_trace(path, &result)?;
    }
    if args.json {
        let mut report = json_report(&result);
        if let Some(e) = &engine {
            report["engine"] = engine_report(e);
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&result);
    }
    Ok(())
}

/// Writes `details.search` (or all of `details`) of `result` to `path` as pretty JSON.
fn write_trace(path: &Path, result: &StrategyResult) -> anyhow::Result<()> {
    let details = &result.outcome.details;
    let record = details.get("search").unwrap_or(details);
    let text = serde_json::to_string_pretty(record).context("cannot serialise the trace")?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the trace to {}", path.display()))
}

/// The `--json` object: answer, candidates, usage, seed, elapsed_ms (and details).
fn json_report(result: &StrategyResult) -> serde_json::Value {
    let cost = &result.cost;
    serde_json::json!({
        "answer": result.outcome.answer,
        "strategy": result.strategy,
        "selected": result.outcome.selected,
        "candidates": result.outcome.candidates.iter().map(|c| serde_json::json!({
            "text": c.text,
            "answer": c.answer,
            "votes": c.votes,
            "score": c.score,
            "finish_reason": c.finish_reason,
            "completion_tokens": c.completion_tokens,
        })).collect::<Vec<_>>(),
        "usage": {
            "requests": cost.requests,
            "retries": cost.retries,
            "prompt_tokens": cost.prompt_tokens,
            "completion_tokens": cost.completion_tokens,
            "cached_tokens": cost.cached_tokens,
            "aborted": cost.aborted,
            "tokens_saved": cost.tokens_saved,
        },
        "seed": cost.seed,
        "elapsed_ms": cost.elapsed_ms,
        "details": result.outcome.details,
    })
}

fn print_summary(result: &StrategyResult) {
    let outcome = &result.outcome;
    let cost = &result.cost;
    match &outcome.answer {
        Some(a) => println!("answer: {a}"),
        None => println!("answer: (none: no candidate produced an answer)"),
    }
    if let Some(c) = outcome.details.get("consensus").and_then(|v| v.as_f64()) {
        println!("consensus: {:.0}%", c * 100.0);
    }
    println!("candidates:");
    for (i, c) in outcome.candidates.iter().enumerate() {
        let mark = if outcome.selected == Some(i) {
            "*"
        } else {
            " "
        };
        let votes = match c.votes {
            Some(1) => "1 vote".to_string(),
            Some(v) => format!("{v} votes"),
            None => "no vote".to_string(),
        };
        let tokens = c
            .completion_tokens
            .map(|t| format!("{t} tokens"))
            .unwrap_or_default();
        println!(
            " {mark}#{i:<3} {:<16} {votes:<9} {:<7} {tokens}",
            c.answer.as_deref().unwrap_or("-"),
            c.finish_reason.as_str(),
        );
    }
    println!(
        "usage: {} request{} ({} retried), {} prompt + {} completion tokens, {} stopped early; {:.2} s; seed {}",
        cost.requests,
        if cost.requests == 1 { "" } else { "s" },
        cost.retries,
        cost.prompt_tokens,
        cost.completion_tokens,
        cost.aborted,
        cost.elapsed_ms as f64 / 1000.0,
        cost.seed
    );
}

/// `ponder strategies`.
pub fn list_strategies(json: bool) -> anyhow::Result<()> {
    let infos = Registry::builtin().infos();
    if json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    for info in infos {
        println!("{}: {}", info.name, info.summary);
        let requires: Vec<String> = info.requires.iter().map(|c| c.to_string()).collect();
        println!(
            "  requires: {}",
            if requires.is_empty() {
                "nothing beyond text generation".to_string()
            } else {
                requires.join(", ")
            }
        );
        for p in &info.params {
            println!(
                "  {:<22} default {:<20} {}",
                p.name, p.default, p.description
            );
        }
    }
    Ok(())
}
