//! `ponder grade`: is a prediction the same answer as the gold one? For one pair, or for every
//! line of a JSONL file.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use ponder_answer::{grade, Extractor, Grade, GradeOptions, Verdict};
use serde_json::{Map, Value};

#[derive(Debug, Args)]
pub struct GradeArgs {
    /// The gold answer (or a worked solution; its answer is extracted).
    #[arg(
        required_unless_present = "input",
        conflicts_with = "input",
        allow_hyphen_values = true
    )]
    gold: Option<String>,
    /// The prediction: an answer or a whole model output.
    #[arg(
        required_unless_present = "input",
        conflicts_with = "input",
        allow_hyphen_values = true
    )]
    prediction: Option<String>,
    /// Grade every line of a JSONL file (`-` for stdin); each line needs `gold` and `prediction`.
    /// Output: one line per input line, the input object plus `equivalent`, `verdict` and the
    /// extracted and normalised forms.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Print one JSON object instead of text (single pair). Default: text.
    #[arg(long)]
    json: bool,
    /// With --input: skip lines that are not JSON objects with string `gold` and `prediction`,
    /// and report how many on stderr, instead of stopping. Default: stop with an error.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Decimal places to which numbers are rounded when either side was written as a decimal.
    /// Default: 6.
    #[arg(long, default_value_t = 6)]
    precision: u32,
    /// Let variable names differ (`f(x)` matches `f(y)`). Default: names must match.
    #[arg(long)]
    lenient_names: bool,
    /// Let an inequality in the prediction answer a gold interval. Default: off.
    #[arg(long)]
    allow_set_relation: bool,
    /// Extraction preset: default, gsm8k, math500, aime, amc, synthetic, multiple-choice.
    /// Default: default.
    #[arg(long, default_value = "default")]
    preset: String,
}

impl GradeArgs {
    fn options(&self) -> anyhow::Result<GradeOptions> {
        let extract = Extractor::preset(&self.preset).ok_or_else(|| {
            anyhow!(
                "unknown extraction preset `{}` (known: default, gsm8k, math500, aime, amc, \
                 synthetic, multiple-choice)",
                self.preset
            )
        })?;
        Ok(GradeOptions {
            precision: self.precision,
            strict: !self.lenient_names,
            allow_set_relation: self.allow_set_relation,
            extract,
            ..GradeOptions::default()
        })
    }
}

pub fn run(args: GradeArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    match &args.input {
        Some(path) => grade_file(path, args.skip_bad_lines, &options),
        None => {
            let (Some(gold), Some(prediction)) = (&args.gold, &args.prediction) else {
                bail!("give GOLD and PREDICTION, or --input FILE");
            };
            let g = grade(gold, prediction, &options);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if args.json {
                let mut obj = Map::new();
                obj.insert("gold".into(), Value::String(gold.clone()));
                obj.insert("prediction".into(), Value::String(prediction.clone()));
                add_grade(&mut obj, &g);
                writeln!(out, "{}", Value::Object(obj))?;
            } else {
                writeln!(out, "verdict: {}", verdict_name(g.verdict))?;
                for (name, form) in [("gold", &g.gold), ("prediction", &g.prediction)] {
                    writeln!(
                        out,
                        "{name}: extracted {} ({}), normalised {}",
                        quoted(form.extracted.as_deref()),
                        form.method
                            .map(|m| method_name(m).to_string())
                            .unwrap_or_else(|| "not found".into()),
                        quoted(form.normalized.as_deref()),
                    )?;
                }
            }
            Ok(())
        }
    }
}

fn quoted(s: Option<&str>) -> String {
    match s {
        Some(s) => format!("{s:?}"),
        None => "-".into(),
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Equivalent => "equivalent",
        Verdict::NotEquivalent => "not_equivalent",
        Verdict::Undecided => "undecided",
    }
}

fn method_name(m: ponder_answer::Method) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Adds the grade's fields to an output object.
fn add_grade(obj: &mut Map<String, Value>, g: &Grade) {
    let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    obj.insert("equivalent".into(), Value::Bool(g.verdict.is_equivalent()));
    obj.insert(
        "verdict".into(),
        Value::String(verdict_name(g.verdict).into()),
    );
    obj.insert("gold_extracted".into(), opt(&g.gold.extracted));
    obj.insert(
        "gold_method".into(),
        g.gold
            .method
            .map_or(Value::Null, |m| Value::String(method_name(m))),
    );
    obj.insert("gold_normalized".into(), opt(&g.gold.normalized));
    obj.insert("prediction_extracted".into(), opt(&g.prediction.extracted));
    obj.insert(
        "prediction_method".into(),
        g.prediction
            .method
            .map_or(Value::Null, |m| Value::String(method_name(m))),
    );
    obj.insert(
        "prediction_normalized".into(),
        opt(&g.prediction.normalized),
    );
}

/// Reads one input line into (object, gold, prediction), or says what is wrong with it.
fn read_pair(line: &str) -> Result<(Map<String, Value>, String, String), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let field = |name: &str| -> Result<String, String> {
        match obj.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            // Numeric golds (GSM8K-style) are read as their JSON text.
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(format!("field `{name}` is not a string")),
            None => Err(format!("missing field `{name}`")),
        }
    };
    let gold = field("gold")?;
    let prediction = field("prediction")?;
    Ok((obj, gold, prediction))
}

fn grade_file(path: &PathBuf, skip_bad_lines: bool, options: &GradeOptions) -> anyhow::Result<()> {
    let name = path.display().to_string();
    let mut reader: Box<dyn BufRead> = if name == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
        Box::new(BufReader::new(file))
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut graded, mut equivalent, mut undecided, mut skipped) = (0usize, 0usize, 0usize, 0usize);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {name} line {}", line_no + 1))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let parsed = match std::str::from_utf8(&buf) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => read_pair(line),
            Err(_) => Err("not UTF-8 text".to_string()),
        };
        let (mut obj, gold, prediction) = match parsed {
            Ok(p) => p,
            Err(why) => {
                if skip_bad_lines {
                    eprintln!("warning: {name}:{line_no}: {why}; skipped");
                    skipped += 1;
                    continue;
                }
                // Everything graded so far stays on stdout.
                out.flush()?;
                bail!("{name}:{line_no}: {why}");
            }
        };
        let g = grade(&gold, &prediction, options);
        graded += 1;
        match g.verdict {
            Verdict::Equivalent => equivalent += 1,
            Verdict::Undecided => undecided += 1,
            Verdict::NotEquivalent => {}
        }
        add_grade(&mut obj, &g);
        writeln!(out, "{}", Value::Object(obj))?;
    }
    out.flush()?;
    eprintln!("graded {graded} pairs: {equivalent} equivalent, {undecided} undecided");
    if skipped > 0 {
        eprintln!("skipped {skipped} bad lines");
    }
    Ok(())
}
