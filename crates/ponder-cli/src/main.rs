//! `ponder`: test-time scaling from the command line.
//!
//! Data goes to stdout, progress and errors to stderr. Errors print `error:` with the cause
//! chain and, where it helps, a `hint:` line, and exit with code 2.

mod config;
mod eval;
mod grade;
mod report;
mod rescore;
mod run;
mod serve;
mod solve;
mod task;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ponder",
    version,
    about = "Test-time scaling for LLM reasoning: spend more inference compute, get better answers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Solve one question with a strategy against an OpenAI-compatible backend.
    Solve(solve::SolveArgs),
    /// List every strategy with its parameters, defaults and required capabilities.
    Strategies {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a strategy over a dataset: records.jsonl, summary.json (resumable, shardable).
    Eval(eval::EvalArgs),
    /// Compare runs (merging shards) as a table and an HTML page with an accuracy/tokens plot.
    Report(report::ReportArgs),
    /// The synthetic multi-step arithmetic task.
    Task {
        #[command(subcommand)]
        command: task::TaskCommand,
    },
    /// Accuracy of several selection rules (majority, best score, …) over saved samples.
    Rescore(rescore::RescoreArgs),
    /// Grade a prediction against a gold answer (math equivalence), or every pair of a JSONL file.
    Grade(grade::GradeArgs),
    /// Serve an OpenAI-compatible API that runs a strategy behind each request.
    Serve(serve::ServeArgs),
    /// Run an agent workflow (plans, tools, scoring, selection) from a YAML file.
    Run(run::RunArgs),
}

/// A reader that went away (`ponder … | head`) ends the output, not the program with a panic:
/// `println!` panics on a closed stdout, so the hook turns exactly that panic into a quiet exit.
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_closed_stdout();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Solve(args) => solve::run(args),
        Command::Strategies { json } => solve::list_strategies(json),
        Command::Task { command } => task::run(command),
        Command::Eval(args) => eval::run(args),
        Command::Report(args) => report::run(args),
        Command::Rescore(args) => rescore::run(args),
        Command::Grade(args) => grade::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away: stop quietly, as with `println!` above.
        Err(error)
            if error.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            report(&error);
            ExitCode::from(2)
        }
    }
}

/// Prints `error: …`, each cause on a `caused by:` line, then a hint when one applies.
fn report(error: &anyhow::Error) {
    eprintln!("error: {error}");
    // Some errors already include their source in their own message; print each text once.
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        previous = text;
    }
    if let Some(hint) = hint(error) {
        eprintln!("hint: {hint}");
    }
}

fn hint(error: &anyhow::Error) -> Option<String> {
    use ponder_core::{BackendError, BuildError, StrategyError};
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<BuildError>() {
            return match e {
                BuildError::UnknownStrategy { .. } => {
                    Some("`ponder strategies` lists every strategy with its parameters".into())
                }
                BuildError::UnknownParam { .. } | BuildError::InvalidParam { .. } => {
                    Some("`ponder strategies` lists each strategy's parameters and defaults".into())
                }
                BuildError::MissingCapability { .. } => Some(
                    "choose a backend that offers it, or a strategy that does not need it".into(),
                ),
            };
        }
        let backend = cause.downcast_ref::<BackendError>().or_else(|| {
            match cause.downcast_ref::<StrategyError>() {
                Some(StrategyError::Backend(b)) => Some(b),
                _ => None,
            }
        });
        if let Some(e) = backend {
            let root = match e {
                BackendError::RetriesExhausted { last, .. } => last.as_ref(),
                other => other,
            };
            return match root {
                BackendError::Connect { .. } | BackendError::Timeout { .. } => Some(
                    "is the server running? check --backend (or PONDER_BACKEND / backend.endpoints)"
                        .into(),
                ),
                BackendError::Status { status: 401 | 403, .. } => {
                    Some("set the API key in the environment variable named by backend.api_key_env (default PONDER_API_KEY)".into())
                }
                BackendError::Status { status: 404, .. } => Some(
                    "check that --backend ends in /v1 and that --model names a served model".into(),
                ),
                _ => None,
            };
        }
        if cause.downcast_ref::<config::ConfigError>().is_some() {
            return Some("see the README's configuration section for every key".into());
        }
    }
    None
}
