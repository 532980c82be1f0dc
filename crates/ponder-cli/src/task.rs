//! `ponder task …`: the synthetic multi-step arithmetic task.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use ponder_task::Difficulty;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Write seeded synthetic problems as JSONL (one problem per line).
    Generate {
        /// Number of problems. Default: 500.
        #[arg(long, default_value_t = 500)]
        n: usize,
        /// Seed; the same seed gives the same problems. Default: 0.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// easy, medium or hard. Default: medium.
        #[arg(long, default_value = "medium")]
        difficulty: Difficulty,
        /// Output file. Default: stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Also write a `worked_solution` field: the reference solution with work lines along
        /// randomly chosen routes (training data for the bundled policy), drawn from
        /// the problem's own stream of this seed (`ponder_task::worked_solution`).
        #[arg(long)]
        worked: Option<u64>,
    },
}

pub fn run(command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::Generate {
            n,
            seed,
            difficulty,
            out,
            worked,
        } => {
            let problems = ponder_task::generate(seed, difficulty, n);
            let mut text = String::new();
            for p in &problems {
                let mut record = p.to_record();
                if let (Some(route_seed), Some(fields)) = (worked, record.as_object_mut()) {
                    fields.insert(
                        "worked_solution".into(),
                        ponder_task::worked_solution(p, route_seed).into(),
                    );
                }
                text.push_str(&serde_json::to_string(&record)?);
                text.push('\n');
            }
            match out {
                Some(path) => {
                    // Write to a temporary file and rename, so an existing file is never left
                    // half-written.
                    let tmp = path.with_extension("jsonl.partial");
                    std::fs::write(&tmp, &text)
                        .with_context(|| format!("cannot write {}", tmp.display()))?;
                    std::fs::rename(&tmp, &path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote {n} {difficulty} problems (seed {seed}) to {}",
                        path.display()
                    );
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    lock.write_all(text.as_bytes())?;
                    lock.flush()?;
                }
            }
            Ok(())
        }
    }
}
