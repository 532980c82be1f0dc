//! Datasets: presets for the benchmark files and the synthetic task, and a JSONL loader with a
//! custom field mapping whose bad lines are reported as `file:line`.
//!
//! A dataset is chosen by name ([`choose`]): a benchmark preset (`gsm8k`, `math500`, `aime24`,
//! `aime25`, `amc23`), a synthetic preset (`synthetic-easy`, `synthetic-medium`,
//! `synthetic-hard`), or a path to any JSONL file. Presets name their file, question field, gold
//! field and answer-extraction preset; flags may override the fields.
//!
//! Problem ids come from the id field when the dataset has one (strings as written, integers in
//! decimal), else from the row: `<name>-<row>` with `row` counting non-blank lines from 0, bad
//! ones included, so skipping a bad line never renumbers the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ponder_answer::ExtractOptions;
use ponder_task::Difficulty;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Synthetic problems generated when neither `--limit` nor `--n` is given.
pub const DEFAULT_SYNTHETIC_PROBLEMS: usize = 100;

/// The environment variable naming the folder that holds the benchmark files.
pub const DATA_DIR_ENV: &str = "PONDER_DATA_DIR";

/// One problem as the runner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalProblem {
    /// Position in the dataset (after `--limit`, before sharding).
    pub index: usize,
    pub id: String,
    /// The user message sent to the strategy.
    pub question: String,
    pub gold: String,
}

/// How answers are extracted from candidate texts that the strategy left without one, and for
/// pass@k / maj@k.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerPreset {
    /// Competition maths: answer markers only (`\boxed{}`, `The answer is`, …); no
    /// last-number fall-back, since a stray number in a LaTeX derivation is not an answer.
    Math,
    /// GSM8K-style word problems: answer markers, then the last number.
    Gsm8k,
    /// The synthetic task: `\boxed{}`, then the last number.
    Synthetic,
}

impl AnswerPreset {
    pub fn options(self) -> ExtractOptions {
        ExtractOptions {
            last_number_fallback: !matches!(self, AnswerPreset::Math),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AnswerPreset::Math => "math",
            AnswerPreset::Gsm8k => "gsm8k",
            AnswerPreset::Synthetic => "synthetic",
        }
    }
}

/// How the gold field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoldFormat {
    /// The field is the answer: a string (trimmed) or a number (`27.0` → `27`).
    Plain,
    /// The field is a worked solution ending in `#### <answer>` (GSM8K); the gold is the text
    /// after the last `####`.
    AfterHashes,
}

/// A benchmark file preset.
#[derive(Debug, Clone, Copy)]
pub struct FilePreset {
    pub name: &'static str,
    pub file: &'static str,
    pub question_field: &'static str,
    pub answer_field: &'static str,
    /// `None`: ids are `<name>-<row>`.
    pub id_field: Option<&'static str>,
    pub gold: GoldFormat,
    pub answer: AnswerPreset,
}

/// Presets for the files of `data/benchmarks` (see its README for the fields).
pub const FILE_PRESETS: &[FilePreset] = &[
    FilePreset {
        name: "gsm8k",
        file: "gsm8k_test.jsonl",
        question_field: "question",
        answer_field: "answer",
        id_field: None,
        gold: GoldFormat::AfterHashes,
        answer: AnswerPreset::Gsm8k,
    },
    FilePreset {
        name: "math500",
        file: "math500_test.jsonl",
        question_field: "problem",
        answer_field: "answer",
        id_field: Some("unique_id"),
        gold: GoldFormat::Plain,
        answer: AnswerPreset::Math,
    },
    FilePreset {
        name: "aime24",
        file: "aime24.jsonl",
        question_field: "problem",
        answer_field: "answer",
        id_field: Some("id"),
        gold: GoldFormat::Plain,
        answer: AnswerPreset::Math,
    },
    FilePreset {
        name: "aime25",
        file: "aime25.jsonl",
        question_field: "prompt",
        answer_field: "answer",
        id_field: None,
        gold: GoldFormat::Plain,
        answer: AnswerPreset::Math,
    },
    FilePreset {
        name: "amc23",
        file: "amc23.jsonl",
        question_field: "problem",
        answer_field: "answer",
        id_field: Some("id"),
        gold: GoldFormat::Plain,
        answer: AnswerPreset::Math,
    },
];

/// Synthetic-task presets.
pub const SYNTHETIC_PRESETS: &[(&str, Difficulty)] = &[
    ("synthetic-easy", Difficulty::Easy),
    ("synthetic-medium", Difficulty::Medium),
    ("synthetic-hard", Difficulty::Hard),
];

/// Every preset name, benchmark files first.
pub fn preset_names() -> Vec<&'static str> {
    FILE_PRESETS
        .iter()
        .map(|p| p.name)
        .chain(SYNTHETIC_PRESETS.iter().map(|(n, _)| *n))
        .collect()
}

/// A dataset problem.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("unknown dataset `{name}` (presets: {known}; or give a path to a JSONL file)")]
    Unknown { name: String, known: String },
    #[error("dataset `{name}`: {file} not found; looked in {looked} (pass --data-dir or set PONDER_DATA_DIR)")]
    NotFound {
        name: String,
        file: String,
        looked: String,
    },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    BadLine {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: no usable problem ({bad} bad lines skipped)")]
    Empty { path: String, bad: usize },
    #[error("dataset `{name}` is synthetic: --{flag} applies to JSONL files only")]
    FieldOnSynthetic { name: String, flag: &'static str },
}

/// Which field holds what in a JSONL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMap {
    pub question: String,
    pub answer: String,
    /// `None`: ids are `<name>-<row>`.
    pub id: Option<String>,
}

/// Field names given on the command line; each replaces the preset's (or the default's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldOverrides {
    pub question: Option<String>,
    pub answer: Option<String>,
    pub id: Option<String>,
}

/// Where a dataset's problems come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSource {
    /// A benchmark file found in the data folder.
    Preset(&'static str),
    /// A JSONL file named by path.
    Path(PathBuf),
    /// Generated problems of the synthetic task.
    Synthetic(Difficulty),
}

/// A chosen dataset, before its file is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The preset name, or the path as given.
    pub name: String,
    pub source: DatasetSource,
    /// Field mapping (unused by synthetic datasets).
    pub fields: FieldMap,
    pub gold: GoldFormat,
    pub answer: AnswerPreset,
}

/// Picks a dataset by preset name or path. A name that is neither a preset nor an existing
/// file, and does not look like a path, is an error listing the presets.
pub fn choose(name_or_path: &str, overrides: &FieldOverrides) -> Result<Dataset, DatasetError> {
    let with = |question: &str, answer: &str, id: Option<&str>| FieldMap {
        question: overrides
            .question
            .clone()
            .unwrap_or_else(|| question.to_string()),
        answer: overrides
            .answer
            .clone()
            .unwrap_or_else(|| answer.to_string()),
        id: overrides.id.clone().or(id.map(str::to_string)),
    };
    if let Some(p) = FILE_PRESETS.iter().find(|p| p.name == name_or_path) {
        return Ok(Dataset {
            name: p.name.to_string(),
            source: DatasetSource::Preset(p.file),
            fields: with(p.question_field, p.answer_field, p.id_field),
            gold: p.gold,
            answer: p.answer,
        });
    }
    if let Some((name, difficulty)) = SYNTHETIC_PRESETS.iter().find(|(n, _)| *n == name_or_path) {
        for (flag, set) in [
            ("question-field", &overrides.question),
            ("answer-field", &overrides.answer),
            ("id-field", &overrides.id),
        ] {
            if set.is_some() {
                return Err(DatasetError::FieldOnSynthetic {
                    name: name.to_string(),
                    flag,
                });
            }
        }
        return Ok(Dataset {
            name: name.to_string(),
            source: DatasetSource::Synthetic(*difficulty),
            fields: with("question", "answer", Some("id")),
            gold: GoldFormat::Plain,
            answer: AnswerPreset::Synthetic,
        });
    }
    let path = Path::new(name_or_path);
    let looks_like_path = name_or_path.contains('/')
        || name_or_path.contains('\\')
        || name_or_path.ends_with(".jsonl")
        || name_or_path.ends_with(".json")
        || path.is_file();
    if !looks_like_path {
        return Err(DatasetError::Unknown {
            name: name_or_path.to_string(),
            known: preset_names().join(", "),
        });
    }
    Ok(Dataset {
        name: name_or_path.to_string(),
        source: DatasetSource::Path(path.to_path_buf()),
        fields: with("question", "answer", None),
        gold: GoldFormat::Plain,
        answer: AnswerPreset::Math,
    })
}

/// Folders searched for benchmark files, in order: `data_dir` alone when given (the
/// `--data-dir` flag or `PONDER_DATA_DIR`); otherwise `data/benchmarks` (the copy in the
/// repository), `shared/data/benchmarks` and `../shared/data/benchmarks` relative to the current
/// directory, then `data/benchmarks` and `shared/data/benchmarks` relative to each ancestor of the
/// running executable.
pub fn search_dirs(data_dir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(d) = data_dir {
        return vec![d.to_path_buf()];
    }
    let bundled = Path::new("data").join("benchmarks");
    let shared = Path::new("shared").join("data").join("benchmarks");
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    if let Ok(cwd) = std::env::current_dir() {
        push(cwd.join(&bundled));
        push(cwd.join(&shared));
        push(cwd.join("..").join(&shared));
    }
    if let Ok(exe) = std::env::current_exe() {
        for ancestor in exe.ancestors().skip(1) {
            push(ancestor.join(&bundled));
            push(ancestor.join(&shared));
        }
    }
    out
}

/// How a dataset is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Folders searched for preset files ([`search_dirs`]).
    pub search: Vec<PathBuf>,
    /// Keep the first `limit` problems (synthetic: generate this many). Default: all (synthetic:
    /// [`DEFAULT_SYNTHETIC_PROBLEMS`]).
    pub limit: Option<usize>,
    /// Seed of the synthetic generator.
    pub seed: u64,
    /// Skip malformed lines (counted in [`Loaded::bad_lines`]) instead of failing. Default: false.
    pub skip_bad_lines: bool,
}

/// A malformed line that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// Loaded problems.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub problems: Vec<EvalProblem>,
    /// The file read, for file datasets.
    pub path: Option<PathBuf>,
    pub bad_lines: Vec<BadLine>,
}

impl Dataset {
    /// The file of a file dataset: a preset's file in the first search folder that has it.
    pub fn locate(&self, search: &[PathBuf]) -> Result<Option<PathBuf>, DatasetError> {
        match &self.source {
            DatasetSource::Synthetic(_) => Ok(None),
            DatasetSource::Path(p) => Ok(Some(p.clone())),
            DatasetSource::Preset(file) => search
                .iter()
                .map(|d| d.join(file))
                .find(|p| p.is_file())
                .map(Some)
                .ok_or_else(|| DatasetError::NotFound {
                    name: self.name.clone(),
                    file: file.to_string(),
                    looked: if search.is_empty() {
                        "no folder".to_string()
                    } else {
                        search
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                }),
        }
    }

    /// Loads the problems.
    pub fn load(&self, options: &LoadOptions) -> Result<Loaded, DatasetError> {
        if let DatasetSource::Synthetic(difficulty) = self.source {
            let n = options.limit.unwrap_or(DEFAULT_SYNTHETIC_PROBLEMS);
            let problems = ponder_task::generate(options.seed, difficulty, n)
                .into_iter()
                .enumerate()
                .map(|(index, p)| EvalProblem {
                    index,
                    question: p.prompt(),
                    gold: p.answer.to_string(),
                    id: p.id,
                })
                .collect();
            return Ok(Loaded {
                problems,
                path: None,
                bad_lines: Vec::new(),
            });
        }
        let path = self.locate(&options.search)?.unwrap_or_default();
        let shown = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|source| DatasetError::Read {
            path: shown.clone(),
            source,
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.name.clone());
        let id_prefix = match self.source {
            DatasetSource::Preset(_) => self.name.clone(),
            _ => stem,
        };
        let (problems, bad_lines) = parse_jsonl(
            &shown,
            &bytes,
            &self.fields,
            self.gold,
            &id_prefix,
            options.limit,
            options.skip_bad_lines,
        )?;
        Ok(Loaded {
            problems,
            path: Some(path),
            bad_lines,
        })
    }
}

/// Parses JSONL `bytes` (named `path` in errors) into problems. A malformed line is an error
/// naming `path:line`, or, with `skip_bad_lines`, is counted in the returned list. Blank lines
/// are ignored. Stops after `limit` good problems.
pub fn parse_jsonl(
    path: &str,
    bytes: &[u8],
    fields: &FieldMap,
    gold: GoldFormat,
    id_prefix: &str,
    limit: Option<usize>,
    skip_bad_lines: bool,
) -> Result<(Vec<EvalProblem>, Vec<BadLine>), DatasetError> {
    let mut problems = Vec::new();
    let mut bad = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut row = 0usize;
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        if limit.is_some_and(|l| problems.len() >= l) {
            break;
        }
        let line = i + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let this_row = row;
        row += 1;
        let parsed = parse_line(raw, fields, gold, id_prefix, this_row).and_then(|(id, q, g)| {
            match seen.get(&id) {
                Some(first) => Err(format!("duplicate id `{id}` (first at line {first})")),
                None => Ok((id, q, g)),
            }
        });
        match parsed {
            Ok((id, question, gold)) => {
                seen.insert(id.clone(), line);
                problems.push(EvalProblem {
                    index: problems.len(),
                    id,
                    question,
                    gold,
                });
            }
            Err(reason) if skip_bad_lines => bad.push(BadLine { line, reason }),
            Err(reason) => {
                return Err(DatasetError::BadLine {
                    path: path.to_string(),
                    line,
                    reason,
                })
            }
        }
    }
    if problems.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_string(),
            bad: bad.len(),
        });
    }
    Ok((problems, bad))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `(id, question, gold)` of one line, or why it is malformed.
fn parse_line(
    raw: &[u8],
    fields: &FieldMap,
    gold: GoldFormat,
    id_prefix: &str,
    row: usize,
) -> Result<(String, String, String), String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_string())?;
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(obj) = &value else {
        return Err(format!(
            "expected a JSON object, found {}",
            type_name(&value)
        ));
    };
    let field = |name: &str| {
        obj.get(name).ok_or_else(|| {
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            format!(
                "missing field `{name}` (the line has: {})",
                if keys.is_empty() {
                    "no fields".to_string()
                } else {
                    keys.join(", ")
                }
            )
        })
    };
    let question = match field(&fields.question)? {
        Value::String(s) => s.clone(),
        other => {
            return Err(format!(
                "field `{}` must be a string, found {}",
                fields.question,
                type_name(other)
            ))
        }
    };
    let gold = match (field(&fields.answer)?, gold) {
        (Value::String(s), GoldFormat::AfterHashes) => match s.rfind("####") {
            Some(pos) => s[pos + 4..].trim().to_string(),
            None => {
                return Err(format!(
                    "field `{}` has no `#### <answer>` line",
                    fields.answer
                ))
            }
        },
        (Value::String(s), GoldFormat::Plain) => s.trim().to_string(),
        (Value::Number(n), _) => number_text(n),
        (other, _) => {
            return Err(format!(
                "field `{}` must be a string or a number, found {}",
                fields.answer,
                type_name(other)
            ))
        }
    };
    if gold.is_empty() {
        return Err(format!("field `{}` is empty", fields.answer));
    }
    let id = match &fields.id {
        None => format!("{id_prefix}-{row:04}"),
        Some(name) => match field(name)? {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            other => {
                return Err(format!(
                    "field `{name}` must be a string or an integer, found {}",
                    type_name(other)
                ))
            }
        },
    };
    Ok((id, question, gold))
}

/// A JSON number as an answer: integers in decimal, whole floats without `.0` (`27.0` → `27`).
fn number_text(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(q: &str, a: &str, id: Option<&str>) -> FieldMap {
        FieldMap {
            question: q.into(),
            answer: a.into(),
            id: id.map(str::to_string),
        }
    }

    fn parse(
        text: &str,
        f: &FieldMap,
        gold: GoldFormat,
        skip: bool,
    ) -> Result<(Vec<EvalProblem>, Vec<BadLine>), DatasetError> {
        parse_jsonl("d.jsonl", text.as_bytes(), f, gold, "d", None, skip)
    }

    #[test]
    fn gsm8k_gold_is_taken_after_the_hashes() {
        let f = fields("question", "answer", None);
        let text = "{\"question\": \"q1\", \"answer\": \"2 + 2 = <<2+2=4>>4\\n#### 4\"}\n\n{\"question\": \"q2\", \"answer\": \"#### 1,000 \"}\n";
        let (p, bad) = parse(text, &f, GoldFormat::AfterHashes, false).expect("parses");
        assert!(bad.is_empty());
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].id.as_str(), p[0].gold.as_str()), ("d-0000", "4"));
        assert_eq!((p[1].id.as_str(), p[1].gold.as_str()), ("d-0001", "1,000"));
        assert_eq!(p[1].index, 1);
    }

    #[test]
    fn numeric_golds_and_ids_are_written_plainly() {
        let f = fields("problem", "answer", Some("id"));
        let text = "{\"id\": 0, \"problem\": \"p\", \"answer\": 27.0}\n{\"id\": \"x\", \"problem\": \"p\", \"answer\": 70}\n{\"id\": 2, \"problem\": \"p\", \"answer\": 2.5}\n{\"id\": 3, \"problem\": \"p\", \"answer\": \" 025 \"}\n";
        let (p, _) = parse(text, &f, GoldFormat::Plain, false).expect("parses");
        let got: Vec<(&str, &str)> = p.iter().map(|p| (p.id.as_str(), p.gold.as_str())).collect();
        assert_eq!(got, [("0", "27"), ("x", "70"), ("2", "2.5"), ("3", "025")]);
    }

    fn bad_line(text: &str, f: &FieldMap) -> String {
        match parse(text, f, GoldFormat::Plain, false) {
            Err(e @ DatasetError::BadLine { .. }) => e.to_string(),
            other => panic!("expected a bad line, got {other:?}"),
        }
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let f = fields("question", "answer", Some("id"));
        let good = "{\"id\": 1, \"question\": \"q\", \"answer\": \"1\"}\n";
        let e = bad_line(&format!("{good}\nnot json\n"), &f);
        assert!(e.starts_with("d.jsonl:3: not valid JSON"), "{e}");
        let e = bad_line(&format!("{good}{{\"id\": 2, \"answer\": \"1\"}}\n"), &f);
        assert!(e.starts_with("d.jsonl:2: missing field `question`"), "{e}");
        let e = bad_line(
            &format!("{good}{{\"id\": 2, \"question\": 5, \"answer\": \"1\"}}\n"),
            &f,
        );
        assert_eq!(
            e,
            "d.jsonl:2: field `question` must be a string, found a number"
        );
        let e = bad_line(
            &format!("{good}{{\"id\": 2, \"question\": \"q\", \"answer\": [1]}}\n"),
            &f,
        );
        assert!(
            e.contains("d.jsonl:2: field `answer` must be a string or a number"),
            "{e}"
        );
        let e = bad_line(&format!("{good}[1, 2]\n"), &f);
        assert!(e.starts_with("d.jsonl:2: expected a JSON object"), "{e}");
        let e = bad_line(&format!("{good}{good}"), &f);
        assert_eq!(e, "d.jsonl:2: duplicate id `1` (first at line 1)");
        let e = bad_line(
            "{\"id\": 1.5, \"question\": \"q\", \"answer\": \"1\"}\n",
            &f,
        );
        assert!(
            e.starts_with("d.jsonl:1: field `id` must be a string or an integer"),
            "{e}"
        );
        // Invalid UTF-8 is a bad line, not a panic.
        let mut bytes = good.as_bytes().to_vec();
        bytes.extend_from_slice(b"\xff\xfe\n");
        let e = parse_jsonl("d.jsonl", &bytes, &f, GoldFormat::Plain, "d", None, false)
            .expect_err("fails")
            .to_string();
        assert_eq!(e, "d.jsonl:2: not valid UTF-8");
    }

    #[test]
    fn skipping_bad_lines_counts_them_and_keeps_row_ids() {
        let f = fields("question", "answer", None);
        let text = "{\"question\": \"a\", \"answer\": \"1\"}\n{oops\n{\"question\": \"c\", \"answer\": \"3\"}\n";
        let (p, bad) = parse(text, &f, GoldFormat::Plain, true).expect("goes on");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
        let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["d-0000", "d-0002"]);
        // Only bad lines: an error, even when skipping.
        assert!(matches!(
            parse("x\ny\n", &f, GoldFormat::Plain, true),
            Err(DatasetError::Empty { bad: 2, .. })
        ));
    }

    #[test]
    fn limit_keeps_the_first_problems() {
        let f = fields("question", "answer", None);
        let text = "{\"question\": \"a\", \"answer\": \"1\"}\n{\"question\": \"b\", \"answer\": \"2\"}\nbad\n";
        let (p, _) = parse_jsonl(
            "d",
            text.as_bytes(),
            &f,
            GoldFormat::Plain,
            "d",
            Some(2),
            false,
        )
        .expect("the bad line lies past the limit");
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn custom_field_mapping_overrides_presets() {
        let o = FieldOverrides {
            question: Some("prompt".into()),
            answer: None,
            id: Some("key".into()),
        };
        let d = choose("math500", &o).expect("preset");
        assert_eq!(d.fields, fields("prompt", "answer", Some("key")));
        let d = choose("data/my.jsonl", &FieldOverrides::default()).expect("path");
        assert_eq!(
            d.source,
            DatasetSource::Path(PathBuf::from("data/my.jsonl"))
        );
        assert_eq!(d.fields, fields("question", "answer", None));
        assert!(matches!(
            choose("synthetic-easy", &o),
            Err(DatasetError::FieldOnSynthetic { .. })
        ));
    }

    #[test]
    fn unknown_dataset_lists_the_presets() {
        let e = choose("gsm9k", &FieldOverrides::default())
            .expect_err("unknown")
            .to_string();
        for name in [
            "gsm8k",
            "math500",
            "aime24",
            "aime25",
            "amc23",
            "synthetic-hard",
        ] {
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn missing_preset_file_says_where_it_looked() {
        let d = choose("aime24", &FieldOverrides::default()).expect("preset");
        let dirs = vec![
            PathBuf::from("/nonexistent/a"),
            PathBuf::from("/nonexistent/b"),
        ];
        let e = d.locate(&dirs).expect_err("missing").to_string();
        assert_eq!(
            e,
            "dataset `aime24`: aime24.jsonl not found; looked in /nonexistent/a, /nonexistent/b \
             (pass --data-dir or set PONDER_DATA_DIR)"
        );
        assert_eq!(
            search_dirs(Some(Path::new("/x"))),
            vec![PathBuf::from("/x")]
        );
    }

    /// The repository's copy of the benchmark files (`<repo>/data/benchmarks`), found the way
    /// the CLI finds it: by searching the ancestors.
    fn benchmark_dirs() -> Vec<PathBuf> {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|a| a.join("data").join("benchmarks"))
            .collect()
    }

    #[test]
    fn every_benchmark_preset_loads_its_file() {
        let dirs = benchmark_dirs();
        // (preset, rows, first id, first gold), from the data README and the files' first lines.
        let expected = [
            ("gsm8k", 1319, "gsm8k-0000", "18"),
            (
                "math500",
                500,
                "test/precalculus/807.json",
                r"\left( 3, \frac{\pi}{2} \right)",
            ),
            ("aime24", 30, "60", "204"),
            ("aime25", 30, "aime25-0000", "70"),
            ("amc23", 40, "0", "27"),
        ];
        for (name, rows, id, gold) in expected {
            let d = choose(name, &FieldOverrides::default()).expect("preset");
            let loaded = d
                .load(&LoadOptions {
                    search: dirs.clone(),
                    ..Default::default()
                })
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(loaded.problems.len(), rows, "{name}");
            assert!(loaded.bad_lines.is_empty(), "{name}");
            assert_eq!(loaded.problems[0].id, id, "{name}");
            assert_eq!(loaded.problems[0].gold, gold, "{name}");
            assert!(!loaded.problems[0].question.is_empty(), "{name}");
        }
    }

    #[test]
    fn synthetic_presets_generate_from_the_seed() {
        let d = choose("synthetic-medium", &FieldOverrides::default()).expect("preset");
        let load = |seed| {
            d.load(&LoadOptions {
                limit: Some(5),
                seed,
                ..Default::default()
            })
            .expect("generates")
            .problems
        };
        let a = load(3);
        assert_eq!(a.len(), 5);
        assert_eq!(a, load(3));
        assert_ne!(a, load(4));
        assert_eq!(a[2].id, "synth-medium-3-000002");
        assert!(a[0].question.contains("\\boxed{N}"));
    }
}
