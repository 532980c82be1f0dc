//! `ponder solve` and `ponder strategies`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use ponder_core::{
    parse_param_value, run_strategy, Backend, Message, Params, Strategy, StrategyInput,
    StrategyResult,
};
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
    /// Model name sent to the server. Default: `backend.model` from the config file.
    #[arg(long, env = "PONDER_MODEL")]
    pub model: Option<String>,
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
    pub(crate) strategy: String,
    pub(crate) params: Params,
    pub(crate) seed: u64,
}

/// The backend and strategy flags that `solve` and `eval` share.
#[derive(Debug, Clone)]
pub(crate) struct RunFlags {
    pub(crate) backend: Vec<String>,
    pub(crate) model: Option<String>,
    pub(crate) strategy: Option<String>,
    pub(crate) set: Vec<String>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) seed: Option<u64>,
}

fn resolve(args: &SolveArgs) -> anyhow::Result<Resolved> {
    resolve_flags(&RunFlags {
        backend: args.backend.clone(),
        model: args.model.clone(),
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
    if backend.endpoints.is_empty() {
        bail!("no backend: pass --backend URL (or set PONDER_BACKEND, or backend.endpoints in the config file)");
    }
    if backend.model.is_empty() && replay_pool(&backend.endpoints).is_none() {
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
        strategy: args
            .strategy
            .clone()
            .or(file.strategy)
            .unwrap_or_else(|| DEFAULT_STRATEGY.to_string()),
        params,
        seed: args.seed.or(file.seed).unwrap_or(0),
    })
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
pub(crate) fn build(resolved: &Resolved) -> anyhow::Result<(Arc<dyn Backend>, Arc<dyn Strategy>)> {
    let backend: Arc<dyn Backend> = match replay_pool(&resolved.backend.endpoints) {
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
    Ok((backend, strategy))
}

pub fn run(args: SolveArgs) -> anyhow::Result<()> {
    let resolved = resolve(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let endpoints = resolved.backend.endpoints.join(", ");
    let (backend, strategy) = build(&resolved)?;
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
        println!("{}", serde_json::to_string_pretty(&json_report(&result))?);
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
