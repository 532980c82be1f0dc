//! `ponder report`: merges the shard directories of one run, compares runs, and renders a text
//! table and a self-contained HTML page with an accuracy-versus-tokens plot (inline SVG).
//!
//! Directories whose `run.json` settings agree on everything but `shard` and the endpoints
//! ([`RunSettings::run_identity`]) are shards of one run: their records are merged (first record
//! of each id kept) and summarised together. Any other difference makes a separate run.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::record::Record;
use crate::store::{read_records, RunDir, RunSettings, StoreError};
use crate::summary::{summarize, Summary};

/// One run as the report shows it: one directory, or several shards merged.
#[derive(Debug, Clone)]
pub struct RunView {
    /// Short label: strategy, its parameters, dataset.
    pub label: String,
    pub dirs: Vec<PathBuf>,
    pub settings: RunSettings,
    pub summary: Summary,
    /// Things the reader should know (missing shards, torn lines, duplicates).
    pub notes: Vec<String>,
}

/// A report problem.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{dir}: not a run directory (no run.json)")]
    NotARun { dir: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The label of a run: `strategy k=v… · dataset`.
pub fn label(settings: &RunSettings) -> String {
    let mut s = settings.strategy.clone();
    for (k, v) in &settings.params {
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(s, " {k}={v}");
    }
    let _ = write!(s, " · {}", settings.dataset.name);
    s
}

/// Loads `dirs`, merging shards of the same run; runs keep the order of their first directory.
pub fn load_runs(dirs: &[PathBuf]) -> Result<Vec<RunView>, ReportError> {
    struct Group {
        identity: serde_json::Value,
        settings: RunSettings,
        dirs: Vec<PathBuf>,
        records: Vec<Record>,
        ids: BTreeSet<String>,
        shards: BTreeSet<u32>,
        walls: Vec<Option<u64>>,
        notes: Vec<String>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for dir in dirs {
        let run = RunDir::new(dir);
        let settings = run.settings()?.ok_or_else(|| ReportError::NotARun {
            dir: dir.display().to_string(),
        })?;
        let read = read_records(&run.records_path())?;
        // Shards merge with shards of the same split; a whole run stays apart from them.
        let identity =
            serde_json::json!([settings.run_identity(), settings.shard.map(|s| s.count)]);
        let idx = match groups.iter().position(|g| g.identity == identity) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    identity,
                    settings: settings.clone(),
                    dirs: Vec::new(),
                    records: Vec::new(),
                    ids: BTreeSet::new(),
                    shards: BTreeSet::new(),
                    walls: Vec::new(),
                    notes: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[idx];
        if g.dirs.contains(dir) {
            continue;
        }
        g.dirs.push(dir.clone());
        if let Some(shard) = settings.shard {
            if !g.shards.insert(shard.index) {
                g.notes
                    .push(format!("shard {shard} appears more than once"));
            }
        }
        if read.torn_bytes > 0 {
            g.notes.push(format!(
                "{}: torn last line ignored ({} bytes); `ponder eval --resume` repairs it",
                dir.display(),
                read.torn_bytes
            ));
        }
        let mut duplicates = read.duplicates;
        for r in read.records {
            if g.ids.insert(r.id.clone()) {
                g.records.push(r);
            } else {
                duplicates += 1;
            }
        }
        if duplicates > 0 {
            g.notes.push(format!(
                "{}: {duplicates} records with an id seen before were left out",
                dir.display()
            ));
        }
        g.walls.push(run.summary().and_then(|s| s.wall_ms));
    }
    let mut runs: Vec<RunView> = groups
        .into_iter()
        .map(|mut g| {
            if let Some(shard) = g.settings.shard {
                let missing: Vec<String> = (0..shard.count)
                    .filter(|i| !g.shards.contains(i))
                    .map(|i| format!("{i}/{}", shard.count))
                    .collect();
                if !missing.is_empty() {
                    g.notes
                        .push(format!("missing shards: {}", missing.join(", ")));
                }
            }
            if g.settings.dataset.skipped_lines > 0 {
                g.notes.push(format!(
                    "{} malformed dataset lines were skipped",
                    g.settings.dataset.skipped_lines
                ));
            }
            let expected = g.settings.dataset.problems;
            let complete = g.settings.shard.is_none()
                || g.shards.len() as u32 == g.settings.shard.map_or(1, |s| s.count);
            if complete && g.records.len() < expected {
                g.notes.push(format!(
                    "incomplete: {} of {expected} problems recorded",
                    g.records.len()
                ));
            }
            g.records.sort_by_key(|r| r.index);
            let mut summary = summarize(&g.records);
            summary.wall_ms = if g.walls.iter().all(Option::is_some) {
                g.walls.iter().flatten().copied().max()
            } else {
                None
            };
            let mut label = label(&g.settings);
            if let Some(shard) = g.settings.shard {
                let _ = write!(label, " · {} shards", shard.count);
            }
            RunView {
                label,
                dirs: g.dirs,
                settings: g.settings,
                summary,
                notes: g.notes,
            }
        })
        .collect();
    // Runs that would read alike are told apart by their first directory.
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for r in &mut runs {
        if labels.iter().filter(|l| **l == r.label).count() > 1 {
            if let Some(d) = r.dirs.first() {
                let _ = write!(r.label, " ({})", d.display());
            }
        }
    }
    Ok(runs)
}

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

/// The text table: run, problems, accuracy ± CI, tokens per problem, requests.
pub fn table(runs: &[RunView]) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "#".into(),
        "run".into(),
        "problems".into(),
        "accuracy % [95% CI]".into(),
        "completion tok/problem".into(),
        "prompt tok/problem".into(),
        "requests".into(),
    ]];
    for (i, r) in runs.iter().enumerate() {
        let s = &r.summary;
        rows.push([
            (i + 1).to_string(),
            r.label.clone(),
            s.problems.to_string(),
            format!(
                "{} [{}, {}]",
                pct(s.accuracy),
                pct(s.accuracy_ci95[0]),
                pct(s.accuracy_ci95[1])
            ),
            format!("{:.1}", s.completion_tokens_per_problem),
            format!("{:.1}", s.prompt_tokens_per_problem),
            s.requests.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c == 1 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for (i, r) in runs.iter().enumerate() {
        for note in &r.notes {
            let _ = writeln!(out, "note: run {}: {note}", i + 1);
        }
    }
    out
}

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Round tick values covering `[lo, hi]`: steps of 1, 2 or 5 × 10^k, about `target` of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// An axis from 0 to the first round tick at or above `max` (at least 1), and its ticks.
fn axis_from_zero(max: f64, target: usize) -> (f64, Vec<f64>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let ticks = nice_ticks(0.0, max, target);
    let step = match ticks.as_slice() {
        [a, b, ..] => b - a,
        _ => max,
    };
    let top = (max / step).ceil() * step;
    (
        top,
        nice_ticks(0.0, top, target)
            .into_iter()
            .filter(|t| *t <= top * (1.0 + 1e-9))
            .collect(),
    )
}

fn tick_label(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Plot colours, one per run (cycled).
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// Accuracy (y, with 95% CI bars) against mean completion tokens per problem (x), one point per
/// run, as an SVG element.
pub fn svg_plot(runs: &[RunView]) -> String {
    let (w, h) = (640.0, 400.0);
    let (left, right, top, bottom) = (70.0, 20.0, 20.0, 55.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let xs: Vec<f64> = runs
        .iter()
        .map(|r| r.summary.completion_tokens_per_problem)
        .collect();
    let x_max = xs.iter().copied().fold(0.0, f64::max);
    let (x_hi, x_ticks) = axis_from_zero(x_max * 1.05, 6);
    let y_lo_data = runs
        .iter()
        .map(|r| r.summary.accuracy_ci95[0])
        .fold(1.0, f64::min);
    let y_lo = if runs.is_empty() {
        0.0
    } else {
        ((y_lo_data - 0.05) * 10.0).floor().max(0.0) / 10.0
    };
    let y_hi = 1.0;
    let y_ticks = nice_ticks(y_lo, y_hi, 5);
    let sx = |v: f64| left + (v / x_hi).clamp(0.0, 1.0) * pw;
    let sy = |v: f64| top + (1.0 - ((v - y_lo) / (y_hi - y_lo)).clamp(0.0, 1.0)) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="accuracy versus completion tokens per problem">"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>"##
    );
    for t in &x_ticks {
        let x = sx(*t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"##,
            top + ph,
            top + ph,
            top + ph + 5.0,
            top + ph + 19.0,
            tick_label(*t)
        );
    }
    for t in &y_ticks {
        let y = sy(*t);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><line x1="{:.1}" y1="{y:.1}" x2="{left}" y2="{y:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}%</text>"##,
            left + pw,
            left - 5.0,
            left - 8.0,
            y + 4.0,
            tick_label(t * 100.0)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">completion tokens per problem (mean)</text>"#,
        left + pw / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 16 {:.1})">accuracy (95% Wilson CI)</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, r) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let x = sx(r.summary.completion_tokens_per_problem);
        let y = sy(r.summary.accuracy);
        let y0 = sy(r.summary.accuracy_ci95[0]);
        let y1 = sy(r.summary.accuracy_ci95[1]);
        let _ = writeln!(
            s,
            r#"<g><title>{}: {}% [{}, {}], {:.1} tokens/problem</title><line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="{colour}" stroke-width="1.5"/><line x1="{:.1}" y1="{y0:.1}" x2="{:.1}" y2="{y0:.1}" stroke="{colour}" stroke-width="1.5"/><line x1="{:.1}" y1="{y1:.1}" x2="{:.1}" y2="{y1:.1}" stroke="{colour}" stroke-width="1.5"/><circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="{colour}">{}</text></g>"#,
            escape(&r.label),
            pct(r.summary.accuracy),
            pct(r.summary.accuracy_ci95[0]),
            pct(r.summary.accuracy_ci95[1]),
            r.summary.completion_tokens_per_problem,
            x - 4.0,
            x + 4.0,
            x - 4.0,
            x + 4.0,
            x + 8.0,
            y - 6.0,
            i + 1
        );
    }
    s.push_str("</svg>\n");
    s
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222;max-width:1100px}\
table{border-collapse:collapse;margin:1em 0}th,td{border-bottom:1px solid #ddd;padding:.35em .7em;text-align:right}\
th{background:#f4f4f4}td.l,th.l{text-align:left}code{font-size:.9em}.note{color:#a50}\
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em}";

/// The self-contained HTML page: the plot, the table, and each run's settings and notes.
pub fn html(runs: &[RunView]) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Ponder evaluation report</title>\n");
    let _ = writeln!(s, "<style>{CSS}</style>\n</head>\n<body>");
    s.push_str("<h1>Ponder evaluation report</h1>\n");
    s.push_str("<h2>Accuracy versus compute</h2>\n");
    s.push_str(&svg_plot(runs));
    s.push_str("<p>Each point is one run: mean completion tokens per problem against accuracy; bars are 95% Wilson score intervals.</p>\n");
    s.push_str("<h2>Runs</h2>\n<table>\n<tr><th>#</th><th class=\"l\">run</th><th>problems</th><th>accuracy</th><th>95% CI</th><th>failed</th><th>completion tok/problem</th><th>prompt tok/problem</th><th>requests</th><th>p50 / p95 latency</th><th>wall</th></tr>\n");
    for (i, r) in runs.iter().enumerate() {
        let sm = &r.summary;
        let _ = writeln!(
            s,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}%</td><td>[{}, {}]</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{:.0} / {:.0} ms</td><td>{}</td></tr>",
            COLOURS[i % COLOURS.len()],
            i + 1,
            escape(&r.label),
            sm.problems,
            pct(sm.accuracy),
            pct(sm.accuracy_ci95[0]),
            pct(sm.accuracy_ci95[1]),
            sm.failed,
            sm.completion_tokens_per_problem,
            sm.prompt_tokens_per_problem,
            sm.requests,
            sm.latency_ms.p50,
            sm.latency_ms.p95,
            sm.wall_ms
                .map(|w| format!("{:.1} s", w as f64 / 1000.0))
                .unwrap_or_else(|| "–".into()),
        );
    }
    s.push_str("</table>\n");
    let any_k = runs.iter().any(|r| !r.summary.pass_at_k.is_empty());
    if any_k {
        s.push_str("<h2>pass@k and majority@k</h2>\n<table>\n<tr><th>#</th><th class=\"l\">k</th><th class=\"l\">pass@k</th><th class=\"l\">maj@k</th></tr>\n");
        for (i, r) in runs.iter().enumerate() {
            let join = |m: &std::collections::BTreeMap<usize, f64>| {
                m.iter()
                    .map(|(k, v)| format!("@{k} {}%", pct(*v)))
                    .collect::<Vec<_>>()
                    .join(" · ")
            };
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                i + 1,
                r.summary
                    .samples_per_problem
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "–".into()),
                escape(&join(&r.summary.pass_at_k)),
                escape(&join(&r.summary.maj_at_k)),
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("<h2>Settings</h2>\n");
    for (i, r) in runs.iter().enumerate() {
        let dirs: Vec<String> = r.dirs.iter().map(|d| d.display().to_string()).collect();
        let _ = writeln!(
            s,
            "<h3>{}. {}</h3>\n<p>directories: <code>{}</code></p>",
            i + 1,
            escape(&r.label),
            escape(&dirs.join(", "))
        );
        for note in &r.notes {
            let _ = writeln!(s, "<p class=\"note\">note: {}</p>", escape(note));
        }
        let settings = serde_json::to_string_pretty(&r.settings).unwrap_or_default();
        let _ = writeln!(s, "<pre><code>{}</code></pre>", escape(&settings));
    }
    s.push_str("</body>\n</html>\n");
    s
}

/// Where the HTML goes by default: `report.html` in the first directory.
pub fn default_output(dirs: &[PathBuf]) -> PathBuf {
    dirs.first()
        .map(|d| d.join("report.html"))
        .unwrap_or_else(|| Path::new("report.html").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t: Vec<i64> = nice_ticks(0.0, 1.0, 5)
            .iter()
            .map(|v| (v * 10.0).round() as i64)
            .collect();
        assert_eq!(t, [0, 2, 4, 6, 8, 10]);
        assert_eq!(
            nice_ticks(0.0, 550.0, 6),
            [0.0, 100.0, 200.0, 300.0, 400.0, 500.0]
        );
        assert_eq!(nice_ticks(3.0, 3.0, 5), [3.0]);
        assert_eq!(tick_label(0.5), "0.5");
        // 743.4 / 6 = 123.9 per tick → a step of 200; the top is the next multiple, 800.
        let (top, ticks) = axis_from_zero(743.4, 6);
        assert_eq!(top, 800.0);
        assert_eq!(ticks, [0.0, 200.0, 400.0, 600.0, 800.0]);
        assert_eq!(tick_label(20000.0), "20k");
    }

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
