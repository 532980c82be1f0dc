//! `ponder rescore`: accuracy of several selection rules over saved samples.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ponder_answer::ExtractOptions;
use ponder_eval::rescore::{
    load_samples, rescore, without_last_number, RescoreOptions, RescoreReport, Rule,
};

#[derive(Debug, Args)]
pub struct RescoreArgs {
    /// JSONL, one problem per line: {"id", "gold", "samples": [{"text", "score"?}]}; records
    /// written by `ponder eval` (with `candidates`) are read too.
    #[arg(long)]
    pub samples: PathBuf,
    /// Selection rules, comma-separated: majority, weighted-majority, best-score, first, random.
    /// Default: all.
    #[arg(long, value_delimiter = ',')]
    pub select: Vec<String>,
    /// k of pass@k. Default: the smallest number of samples of any problem.
    #[arg(long)]
    pub k: Option<usize>,
    /// Do not fall back to the last number when a sample has no answer marker.
    #[arg(long)]
    pub no_last_number: bool,
    /// Seed of the `random` rule and random tie breaks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip lines that cannot be read (counted on stderr) instead of stopping.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RescoreArgs) -> anyhow::Result<()> {
    let rules = if args.select.is_empty() {
        Rule::ALL.to_vec()
    } else {
        args.select
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<Rule>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<Rule>>>()
            .context("--select")?
    };
    if args.k == Some(0) {
        anyhow::bail!("--k must be at least 1");
    }
    let loaded = load_samples(&args.samples, args.skip_bad_lines)?;
    for (line, reason) in &loaded.skipped {
        eprintln!(
            "ponder: skipped {}:{line}: {reason}",
            args.samples.display()
        );
    }
    if !loaded.skipped.is_empty() {
        eprintln!("ponder: skipped {} bad lines", loaded.skipped.len());
    }
    if loaded.sets.is_empty() {
        anyhow::bail!("{} holds no problems", args.samples.display());
    }
    let options = RescoreOptions {
        rules,
        k: args.k,
        extract: if args.no_last_number {
            without_last_number(ExtractOptions::default())
        } else {
            ExtractOptions::default()
        },
        seed: args.seed,
    };
    let report = rescore(&loaded.sets, &options);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &RescoreReport) {
    println!(
        "{} problems, {} samples (seed {})",
        r.problems, r.samples, r.seed
    );
    println!(
        "{:<20} {:>9} {:>9} {:>11}",
        "rule", "accuracy", "correct", "applicable"
    );
    for (name, result) in &r.rules {
        let accuracy = result
            .accuracy
            .map_or_else(|| "n/a".to_string(), |a| format!("{:.1}%", a * 100.0));
        println!(
            "{name:<20} {accuracy:>9} {:>9} {:>11}",
            result.correct, result.applicable
        );
    }
    println!("{:<20} {:>8.1}%", "pass@1", r.pass_at_1 * 100.0);
    println!(
        "{:<20} {:>8.1}%",
        format!("pass@{}", r.k),
        r.pass_at_k * 100.0
    );
    println!("{:<20} {:>8.1}%", "oracle", r.oracle * 100.0);
}
