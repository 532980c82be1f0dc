//! `ponder report`: compares runs (merging the shards of each) as a table on stdout and a
//! self-contained HTML page with an accuracy-versus-tokens plot.

use std::path::PathBuf;

use clap::Args;
use ponder_eval::report::{default_output, html, load_runs, table};
use ponder_eval::store::write_atomic;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories written by `ponder eval` (shards of one run are merged).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// HTML output file. Default: report.html in the first DIR.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the runs' summaries as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let runs = load_runs(&args.dirs)?;
    if args.json {
        let list: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "label": r.label,
                    "dirs": r.dirs,
                    "settings": r.settings,
                    "summary": r.summary,
                    "notes": r.notes,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", table(&runs));
    }
    let out = args.out.unwrap_or_else(|| default_output(&args.dirs));
    write_atomic(&out, html(&runs).as_bytes())?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
