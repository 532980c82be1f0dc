//! The `ponder-sim` binary: runs the simulated OpenAI-compatible server until Ctrl-C.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ponder_sim::{FaultConfig, LatencyConfig, SimConfig, StepAccuracy};

/// A SIMULATED OpenAI-compatible reasoning server, for tests and benchmarks only: it runs no
/// model. It writes seeded, step-structured solutions to the synthetic arithmetic task (with
/// mistakes at a configurable rate), judge and selector replies, logprobs and process rewards,
/// with a configurable latency model and injected faults. Listens on 127.0.0.1 only.
#[derive(Debug, Parser)]
#[command(name = "ponder-sim", version)]
struct Args {
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Time to first token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Time per output token after the first, in milliseconds.
    #[arg(long, default_value_t = 0)]
    tpot_ms: u64,
    /// Generations served at once (later requests queue); 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    slots: usize,
    /// Fraction of generation requests answered at once with an error status.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Status of injected errors [default: unset, drawing 429 (with Retry-After 0 or 1), 500
    /// or 503].
    #[arg(long)]
    error_status: Option<u16>,
    /// Fraction of requests stalled for --stall-ms before their first byte.
    #[arg(long, default_value_t = 0.0)]
    stall_rate: f64,
    /// Length of a stall, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    stall_ms: u64,
    /// Fraction of responses whose connection is cut half-way (no [DONE]).
    #[arg(long, default_value_t = 0.0)]
    cut_rate: f64,
    /// Fraction of responses with invalid JSON in one chunk or the body.
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Refuse n > 1 with 400 "only one completion choice is allowed" (like llama.cpp)
    /// [default: off].
    #[arg(long)]
    reject_n: bool,
    /// Refuse more than N stop strings with 400 (OpenAI allows 4) [default: unset, any number].
    #[arg(long, value_name = "N")]
    max_stop: Option<usize>,
    /// Largest top_logprobs / logprobs accepted.
    #[arg(long, default_value_t = 20)]
    max_logprobs: u8,
    /// Per-step accuracy on easy problems.
    #[arg(long, default_value_t = 0.97)]
    accuracy_easy: f64,
    /// Per-step accuracy on medium problems.
    #[arg(long, default_value_t = 0.9)]
    accuracy_medium: f64,
    /// Per-step accuracy on hard problems.
    #[arg(long, default_value_t = 0.8)]
    accuracy_hard: f64,
}

impl Args {
    fn config(&self) -> SimConfig {
        SimConfig {
            seed: self.seed,
            port: self.port,
            latency: LatencyConfig {
                ttft_ms: self.ttft_ms,
                tpot_ms: self.tpot_ms,
                slots: self.slots,
            },
            faults: FaultConfig {
                error_rate: self.error_rate,
                error_status: self.error_status,
                stall_rate: self.stall_rate,
                stall_ms: self.stall_ms,
                cut_rate: self.cut_rate,
                malformed_rate: self.malformed_rate,
            },
            step_accuracy: StepAccuracy {
                easy: self.accuracy_easy,
                medium: self.accuracy_medium,
                hard: self.accuracy_hard,
            },
            reject_n: self.reject_n,
            max_stop: self.max_stop,
            max_logprobs: self.max_logprobs,
            ..SimConfig::default()
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config();
    config
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid option: {m}"))?;
    let sim = ponder_sim::spawn(config)
        .await
        .map_err(|e| anyhow::anyhow!(e).context(format!("cannot listen on port {}", args.port)))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ponder-sim listening on {}", sim.base_url())?;
    stdout.flush()?;
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime\n  Caused by: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  Caused by: {cause}");
            }
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
            }) {
                eprintln!("hint: pick another --port, or --port 0 for a free one");
            }
            ExitCode::from(2)
        }
    }
}
