//! `ponder run`: builds an agent workflow from a YAML file (`ponder-agents`) and runs it on one
//! input. LLMs of the file's `llms` section become `OpenAiBackend`s; `--backend` supplies the
//! base URL of those that have no `base_url`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use ponder_agents::{Event, LlmConfig, Loader, Registry, RunCtx, StageRecord};
use ponder_core::Backend;
use ponder_openai::{OpenAiBackend, OpenAiConfig};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file (YAML: llms, functions, strategies, workflow).
    pub workflow: PathBuf,
    /// The input of the workflow's root function (text).
    #[arg(long)]
    pub input: String,
    /// Parse `--input` as JSON instead of taking it as text. Default: text.
    #[arg(long)]
    pub input_json: bool,
    /// Base URL (ending in /v1) for every LLM without a `base_url`. Default: none (each LLM
    /// must then set `base_url`).
    #[arg(long, env = "PONDER_BACKEND")]
    pub backend: Option<String>,
    /// Seed of the run. Default: `general.seed` from the file, else 0.
    #[arg(long, env = "PONDER_SEED")]
    pub seed: Option<u64>,
    /// Print one JSON object (output, trace of every stage, usage, seed) instead of the text.
    #[arg(long)]
    pub json: bool,
    /// Write the trace (every stage's items in and out, cost, time) to this JSON file.
    /// Default: not written.
    #[arg(long, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// Print each stage's start and end on stderr. Default: off.
    #[arg(long, short)]
    pub verbose: bool,
}

/// The OpenAI client settings for one `llms` entry.
fn openai_config(config: &LlmConfig, fallback_url: Option<&str>) -> Result<OpenAiConfig, String> {
    let url = config
        .base_url
        .clone()
        .or_else(|| fallback_url.map(str::to_string))
        .ok_or("no `base_url` and no --backend (or PONDER_BACKEND) to use instead")?;
    let mut c = OpenAiConfig {
        endpoints: vec![url],
        model: config.model.clone(),
        request_timeout_ms: config.timeout_ms,
        max_retries: config.max_retries,
        ..OpenAiConfig::default()
    };
    if config.api_key_env.is_some() {
        c.api_key_env = config.api_key_env.clone();
    }
    Ok(c)
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.workflow)
        .with_context(|| format!("cannot read workflow file {}", args.workflow.display()))?;
    let registry = Registry::builtin();
    let fallback = args.backend.clone();
    let factory = move |_name: &str, config: &LlmConfig| -> Result<Arc<dyn Backend>, String> {
        let c = openai_config(config, fallback.as_deref())?;
        Ok(Arc::new(OpenAiBackend::new(c).map_err(|e| e.to_string())?) as Arc<dyn Backend>)
    };
    let workflow = Loader::new(&registry, &factory)
        .load_str(&text)
        .with_context(|| format!("invalid workflow {}", args.workflow.display()))?;
    let input = if args.input_json {
        serde_json::from_str(&args.input)
            .context("--input is not valid JSON (drop --input-json to pass text)")?
    } else {
        serde_json::Value::String(args.input.clone())
    };
    let seed = args.seed.unwrap_or_else(|| workflow.default_seed());
    let verbose = args.verbose;
    let ctx = RunCtx::with_events(
        seed,
        move |e: &Event| {
            if verbose {
                match e {
                    Event::StageStart { function, slot, strategy, pipeline, n_in } => {
                        eprintln!("ponder: {function}.{slot} ({strategy}, {pipeline}): {n_in} in")
                    }
                    Event::StageEnd { function, slot, n_out, llm_calls, tokens, wall_ms, fallbacks, .. } => eprintln!(
                        "ponder: {function}.{slot}: {n_out} out, {llm_calls} calls, {tokens} tokens, {wall_ms} ms, {fallbacks} fallbacks"
                    ),
                }
            }
        },
        verbose,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let name = args.workflow.display().to_string();
    if args.json || !workflow.root().streams() {
        let out = runtime
            .block_on(workflow.run(input, &ctx))
            .with_context(|| format!("workflow {name} failed"))?;
        if let Some(path) = &args.trace {
            write_trace(path, &out.trace)?;
        }
        if args.json {
            let report = serde_json::json!({
                "output": out.output,
                "stages": stage_summary(&out.trace),
                "trace": out.trace,
                "usage": out.cost,
                "seed": out.seed,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{}", ponder_agents::item::render_value(&out.output));
            print_usage(&ctx);
        }
        return Ok(());
    }
    // Stream the answer as it is generated.
    runtime.block_on(async {
        let mut stream = workflow
            .stream(input, &ctx)
            .await
            .with_context(|| format!("workflow {name} failed"))?;
        let mut stdout = std::io::stdout();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("workflow {name} failed"))?;
            stdout.write_all(chunk.as_bytes())?;
            stdout.flush()?;
        }
        writeln!(stdout)?;
        anyhow::Ok(())
    })?;
    if let Some(path) = &args.trace {
        write_trace(path, &ctx.trace())?;
    }
    print_usage(&ctx);
    Ok(())
}

/// One line per stage: function, slot, strategy, stage, items in → out.
fn stage_summary(trace: &[StageRecord]) -> Vec<serde_json::Value> {
    trace
        .iter()
        .map(|r| {
            serde_json::json!({
                "function": r.function,
                "slot": r.slot,
                "strategy": r.strategy,
                "strategy_type": r.strategy_type,
                "stage": r.stage,
                "pipeline": r.pipeline,
                "n_in": r.items_in.len(),
                "n_out": r.items_out.len(),
                "llm_calls": r.cost.llm_calls,
                "fallbacks": r.fallbacks,
            })
        })
        .collect()
}

fn print_usage(ctx: &RunCtx) {
    let c = ctx.total_cost();
    eprintln!(
        "usage: {} LLM calls, {} prompt + {} completion tokens, {} stages; seed {}",
        c.llm_calls,
        c.prompt_tokens,
        c.completion_tokens,
        ctx.trace().len(),
        ctx.seed()
    );
}

fn write_trace(path: &Path, trace: &[StageRecord]) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(trace).context("cannot serialise the trace")?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the trace to {}", path.display()))
}
