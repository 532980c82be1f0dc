//! Prints generated problems as JSONL: `cargo run -p ponder-task --example sample -- [seed]
//! [difficulty] [n]` (defaults: 7, medium, 3).

use std::process::ExitCode;

use ponder_task::{generate, Difficulty};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed = match args.first().map(|s| s.parse::<u64>()) {
        None => 7,
        Some(Ok(seed)) => seed,
        Some(Err(e)) => {
            eprintln!("error: seed: {e}");
            return ExitCode::from(2);
        }
    };
    let difficulty = match args.get(1).map(|s| s.parse::<Difficulty>()) {
        None => Difficulty::Medium,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let n = match args.get(2).map(|s| s.parse::<usize>()) {
        None => 3,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("error: n: {e}");
            return ExitCode::from(2);
        }
    };
    for problem in generate(seed, difficulty, n) {
        println!("{}", problem.to_record());
    }
    ExitCode::SUCCESS
}
