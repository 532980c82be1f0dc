//! A run's directory: `run.json` (the settings), `records.jsonl` (one record per problem,
//! appended as each completes) and `summary.json`.
//!
//! Durability rules: each record is one line written with a single `write` call on a file
//! opened for appending, so a killed process leaves complete lines plus at most one torn last
//! line (no newline). [`RunDir::prepare`] with `resume` truncates the file to its last complete
//! line and returns the records already there; without `resume`, an existing non-empty
//! `records.jsonl` is an error, so results are never overwritten. Files other than
//! `records.jsonl` are replaced atomically (written aside, then renamed).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{AnswerPreset, GoldFormat};
use crate::record::Record;
use crate::shard::Shard;
use crate::summary::Summary;

/// Version of `run.json` and of the records it describes.
pub const RUN_VERSION: u32 = 1;

pub const RECORDS_FILE: &str = "records.jsonl";
pub const RUN_FILE: &str = "run.json";
pub const SUMMARY_FILE: &str = "summary.json";

/// The dataset part of a run's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSettings {
    /// Preset name, or the path as given.
    pub name: String,
    /// The file read (not compared on resume: the same preset may be found elsewhere).
    #[serde(default)]
    pub file: Option<String>,
    pub question_field: Option<String>,
    pub answer_field: Option<String>,
    pub id_field: Option<String>,
    pub gold_format: GoldFormat,
    pub answer_preset: AnswerPreset,
    pub limit: Option<usize>,
    /// Problems in the dataset after `limit`, before sharding.
    pub problems: usize,
    /// Malformed lines skipped (`--skip-bad-lines`).
    #[serde(default)]
    pub skipped_lines: usize,
}

/// Where the generations come from. Never holds an API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendSettings {
    /// Not compared on resume or merge: replicas may move, shards use their own.
    pub endpoints: Vec<String>,
    pub model: String,
}

/// `run.json`: what a run is. A resumed run must have the same settings (endpoints and the
/// dataset's file location aside); shards of one run differ only in `shard` and endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub version: u32,
    pub dataset: DatasetSettings,
    pub strategy: String,
    pub params: ponder_core::Params,
    /// Run seed: synthetic problems and each problem's strategy seed derive from it.
    pub seed: u64,
    pub shard: Option<Shard>,
    pub backend: BackendSettings,
}

impl RunSettings {
    /// The settings compared on resume: everything but the endpoints and the dataset file.
    pub fn identity(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(b) = v.get_mut("backend").and_then(|b| b.as_object_mut()) {
            b.remove("endpoints");
        }
        if let Some(d) = v.get_mut("dataset").and_then(|d| d.as_object_mut()) {
            d.remove("file");
        }
        v
    }

    /// The settings shared by every shard of a run: [`RunSettings::identity`] without `shard`.
    pub fn run_identity(&self) -> serde_json::Value {
        let mut v = self.identity();
        if let Some(o) = v.as_object_mut() {
            o.remove("shard");
        }
        v
    }

    /// Top-level keys (`dataset.limit`, `params`, …) whose values differ between two
    /// identities.
    pub fn differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        diff("", a, b, &mut out);
        out
    }
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) if prefix != "params" => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let null = serde_json::Value::Null;
                diff(
                    &path,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{prefix} ({a} then, {b} now)")),
        _ => {}
    }
}

/// A run-directory problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already holds {records} records; pass --resume to finish that run, or choose another --out")]
    Exists { path: String, records: usize },
    #[error("{path}: cannot resume: the records have no {run} beside them")]
    NoSettings { path: String, run: String },
    #[error("{path}: invalid settings: {reason}")]
    BadSettings { path: String, reason: String },
    #[error("cannot resume {path} with different settings: {differences}")]
    SettingsDiffer { path: String, differences: String },
    #[error("{path}:{line}: invalid record: {reason}")]
    BadRecord {
        path: String,
        line: usize,
        reason: String,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Records read from a file.
#[derive(Debug, Clone, Default)]
pub struct ReadRecords {
    pub records: Vec<Record>,
    /// Length of the torn last line (bytes after the last newline), if any.
    pub torn_bytes: usize,
    /// Length of the file's complete lines, in bytes.
    pub complete_len: u64,
    /// Records dropped because an earlier line had the same id.
    pub duplicates: usize,
}

/// Reads `records.jsonl`, ignoring a torn last line and keeping the first record of each id.
/// A complete line that is not a record is an error naming `file:line`. A missing file reads as
/// empty.
pub fn read_records(path: &Path) -> Result<ReadRecords, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadRecords::default()),
        Err(e) => return Err(io("read", path)(e)),
    };
    let complete_len = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let mut out = ReadRecords {
        torn_bytes: bytes.len() - complete_len,
        complete_len: complete_len as u64,
        ..Default::default()
    };
    let mut seen = HashSet::new();
    for (i, line) in bytes[..complete_len].split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: Record = serde_json::from_slice(line).map_err(|e| StoreError::BadRecord {
            path: path.display().to_string(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        if seen.insert(record.id.clone()) {
            out.records.push(record);
        } else {
            out.duplicates += 1;
        }
    }
    Ok(out)
}

/// Writes `contents` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("write", path))
}

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

/// What [`RunDir::prepare`] found.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Records already complete (resume).
    pub existing: Vec<Record>,
    /// Bytes of a torn last line that were cut off.
    pub truncated_bytes: usize,
    /// Records dropped because their id was already recorded.
    pub duplicates: usize,
    /// The earlier run's endpoints, when they differ from this one's.
    pub endpoints_before: Option<Vec<String>>,
    /// Failed records removed so that their problems run again (resume).
    pub retried: usize,
}

impl RunDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunDir { dir: dir.into() }
    }

    pub fn records_path(&self) -> PathBuf {
        self.dir.join(RECORDS_FILE)
    }

    pub fn run_path(&self) -> PathBuf {
        self.dir.join(RUN_FILE)
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir.join(SUMMARY_FILE)
    }

    /// Reads `run.json`; `None` when there is none.
    pub fn settings(&self) -> Result<Option<RunSettings>, StoreError> {
        let path = self.run_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| StoreError::BadSettings {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Reads `summary.json`; `None` when there is none or it does not parse.
    pub fn summary(&self) -> Option<Summary> {
        let text = std::fs::read(self.summary_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Gets the directory ready for a run with `settings`: creates it, checks an earlier run's
    /// settings, and on `resume` drops a torn last line and returns the complete records.
    ///
    /// On resume, records of problems whose strategy failed (`error` set) are removed, so that
    /// those problems run again: the file is rewritten without their lines (the other lines
    /// byte for byte) into a temporary file that then replaces it, so a crash at any point
    /// leaves either the old file or the new one.
    pub fn prepare(&self, settings: &RunSettings, resume: bool) -> Result<Prepared, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let records_path = self.records_path();
        let read = read_records(&records_path)?;
        let has_records = read.complete_len > 0 || read.torn_bytes > 0;
        let before = self.settings()?;
        if has_records && !resume {
            return Err(StoreError::Exists {
                path: records_path.display().to_string(),
                records: read.records.len(),
            });
        }
        let mut prepared = Prepared::default();
        match &before {
            Some(old) if resume => {
                let differences = RunSettings::differences(&old.identity(), &settings.identity());
                if !differences.is_empty() {
                    return Err(StoreError::SettingsDiffer {
                        path: self.dir.display().to_string(),
                        differences: differences.join("; "),
                    });
                }
                if old.backend.endpoints != settings.backend.endpoints {
                    prepared.endpoints_before = Some(old.backend.endpoints.clone());
                }
            }
            None if has_records => {
                return Err(StoreError::NoSettings {
                    path: records_path.display().to_string(),
                    run: RUN_FILE.to_string(),
                })
            }
            _ => {}
        }
        if read.torn_bytes > 0 {
            let file = OpenOptions::new()
                .write(true)
                .open(&records_path)
                .map_err(io("open", &records_path))?;
            file.set_len(read.complete_len)
                .map_err(io("truncate", &records_path))?;
            file.sync_all().map_err(io("sync", &records_path))?;
        }
        if before.is_none() || !has_records {
            let text =
                serde_json::to_vec_pretty(settings).map_err(|e| StoreError::BadSettings {
                    path: self.run_path().display().to_string(),
                    reason: e.to_string(),
                })?;
            write_atomic(&self.run_path(), &text)?;
        }
        let failed = read.records.iter().filter(|r| r.error.is_some()).count();
        if resume && failed > 0 {
            self.drop_failed(read.complete_len)?;
            prepared.retried = failed;
        }
        prepared.existing = read
            .records
            .into_iter()
            .filter(|r| !(resume && r.error.is_some()))
            .collect();
        prepared.truncated_bytes = read.torn_bytes;
        prepared.duplicates = read.duplicates;
        Ok(prepared)
    }

    /// Rewrites the first `len` bytes of `records.jsonl` without the lines of failed records
    /// (and without repeated ids).
    fn drop_failed(&self, len: u64) -> Result<(), StoreError> {
        let path = self.records_path();
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        let complete = &bytes[..(len as usize).min(bytes.len())];
        let mut kept = Vec::with_capacity(complete.len());
        let mut seen = HashSet::new();
        for line in complete.split_inclusive(|b| *b == b'\n') {
            let keep = match serde_json::from_slice::<Record>(line) {
                Ok(r) => r.error.is_none() && seen.insert(r.id),
                Err(_) => false,
            };
            if keep {
                kept.extend_from_slice(line);
            }
        }
        let tmp = path.with_extension("jsonl.tmp");
        let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(&kept).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io("replace", &path))
    }

    /// Opens `records.jsonl` for appending.
    pub fn writer(&self) -> Result<RecordWriter, StoreError> {
        let path = self.records_path();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        Ok(RecordWriter { file, path })
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary) -> Result<(), StoreError> {
        let path = self.summary_path();
        let mut text = serde_json::to_vec_pretty(summary).map_err(|e| StoreError::BadSettings {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        write_atomic(&path, &text)
    }
}

/// Appends records to `records.jsonl`, one line per record, each with one `write` call.
#[derive(Debug)]
pub struct RecordWriter {
    file: File,
    path: PathBuf,
}

impl RecordWriter {
    /// Appends one record. The file is unbuffered, so the line reaches the OS at once and
    /// survives a killed process.
    pub fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        let mut line = serde_json::to_vec(record).map_err(|e| StoreError::BadRecord {
            path: self.path.display().to_string(),
            line: 0,
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(io("append to", &self.path))
    }

    /// Flushes to disk (at the end of a run).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io("sync", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordUsage;

    fn settings(limit: Option<usize>) -> RunSettings {
        RunSettings {
            version: RUN_VERSION,
            dataset: DatasetSettings {
                name: "synthetic-easy".into(),
                file: None,
                question_field: None,
                answer_field: None,
                id_field: None,
                gold_format: GoldFormat::Plain,
                answer_preset: AnswerPreset::Synthetic,
                limit,
                problems: 10,
                skipped_lines: 0,
            },
            strategy: "self-consistency".into(),
            params: Default::default(),
            seed: 1,
            shard: None,
            backend: BackendSettings {
                endpoints: vec!["http://127.0.0.1:1/v1".into()],
                model: "m".into(),
            },
        }
    }

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            index: 0,
            gold: "1".into(),
            question: "q".into(),
            candidates: vec![],
            answer: None,
            selected: None,
            correct: false,
            usage: RecordUsage::default(),
            seed: 0,
            elapsed_ms: 0,
            error: None,
            details: serde_json::Value::Null,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ponder-eval-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn torn_last_line_is_dropped_on_resume() {
        let dir = RunDir::new(temp_dir("torn"));
        let s = settings(Some(10));
        assert!(dir.prepare(&s, false).expect("fresh").existing.is_empty());
        let mut w = dir.writer().expect("opens");
        w.append(&record("a")).expect("writes");
        w.append(&record("b")).expect("writes");
        drop(w);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.records_path())
            .expect("opens");
        f.write_all(b"{\"id\": \"c\", \"go").expect("writes");
        drop(f);
        // Without --resume: refused, nothing touched.
        let before = std::fs::read(dir.records_path()).expect("reads");
        assert!(matches!(
            dir.prepare(&s, false),
            Err(StoreError::Exists { records: 2, .. })
        ));
        assert_eq!(std::fs::read(dir.records_path()).expect("reads"), before);
        // With different settings: refused, naming the key.
        let e = dir
            .prepare(&settings(Some(20)), true)
            .expect_err("differs")
            .to_string();
        assert!(e.contains("dataset.limit (10 then, 20 now)"), "{e}");
        // With --resume: the torn line goes, the two records stay.
        let p = dir.prepare(&s, true).expect("resumes");
        assert_eq!(p.truncated_bytes, 15);
        let ids: Vec<&str> = p.existing.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let text = std::fs::read_to_string(dir.records_path()).expect("reads");
        assert!(text.ends_with("}\n") && text.lines().count() == 2);
        let _ = std::fs::remove_dir_all(&dir.dir);
    }

    #[test]
    fn failed_records_run_again_on_resume() {
        let dir = RunDir::new(temp_dir("failed"));
        let s = settings(None);
        dir.prepare(&s, false).expect("fresh");
        let mut failed = record("b");
        failed.error = Some("connection refused".into());
        let mut w = dir.writer().expect("opens");
        for r in [record("a"), failed, record("c")] {
            w.append(&r).expect("writes");
        }
        drop(w);
        let line = |r: &Record| serde_json::to_string(r).expect("json") + "\n";
        let p = dir.prepare(&s, true).expect("resumes");
        assert_eq!(p.retried, 1);
        let ids: Vec<&str> = p.existing.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        let text = std::fs::read_to_string(dir.records_path()).expect("reads");
        assert_eq!(text, line(&record("a")) + &line(&record("c")));
        let _ = std::fs::remove_dir_all(&dir.dir);
    }

    #[test]
    fn a_corrupt_complete_line_names_file_and_line() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(RECORDS_FILE);
        let good = serde_json::to_string(&record("a")).expect("json");
        std::fs::write(&path, format!("{good}\nnot a record\n")).expect("writes");
        let e = read_records(&path).expect_err("corrupt").to_string();
        assert!(
            e.starts_with(&format!("{}:2: invalid record", path.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endpoints_do_not_block_a_resume() {
        let a = settings(None);
        let mut b = settings(None);
        b.backend.endpoints = vec!["http://10.0.0.1/v1".into()];
        b.dataset.file = Some("/elsewhere/x.jsonl".into());
        assert_eq!(a.identity(), b.identity());
        b.shard = Some(Shard { index: 1, count: 2 });
        assert_ne!(a.identity(), b.identity());
        assert_eq!(a.run_identity(), b.run_identity());
    }
}
