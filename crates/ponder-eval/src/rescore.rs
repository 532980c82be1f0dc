//! Re-scoring saved samples: generate once, select many ways.
//!
//! Input is JSONL, one problem per line: `{"id", "gold", "samples": [{"text", "score"?}, …]}`
//! (extra fields allowed). Records written by `ponder eval` are read too: their `candidates`
//! stand for `samples`. Every sample's answer is extracted, answers are clustered by
//! mathematical equivalence, and each selection [`Rule`] picks one answer per problem.
//!
//! Besides the rules, the report has
//! * `pass_at_1`: the mean over problems of the fraction of correct samples (the expected
//!   accuracy of one random sample);
//! * `pass_at_k`: the unbiased estimator `1 − C(n−c, k) / C(n, k)` of Chen et al. (2021), with
//!   `k` the smallest number of samples of any problem unless set; a problem with fewer than `k`
//!   samples uses all of them;
//! * `oracle`: the fraction of problems where some sample is correct.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ponder_answer::{extract_answer, is_correct, vote, ExtractOptions, TieBreak, VoteOptions};
use ponder_core::SeededRng;
use serde::{Deserialize, Serialize};

/// One sample of a problem.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sample {
    pub text: String,
    /// A score (reward, confidence); higher is better.
    #[serde(default)]
    pub score: Option<f64>,
}

/// The samples of one problem.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSet {
    pub id: String,
    pub gold: String,
    pub samples: Vec<Sample>,
}

#[derive(Deserialize)]
struct SampleLine {
    id: serde_json::Value,
    gold: serde_json::Value,
    #[serde(alias = "candidates")]
    samples: Vec<Sample>,
}

/// A samples file that cannot be read; names the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum SamplesError {
    #[error("cannot read samples file {}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", file.display())]
    Line {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// What [`load_samples`] read.
#[derive(Debug, Clone, Default)]
pub struct LoadedSamples {
    pub sets: Vec<SampleSet>,
    /// `(line, reason)` of each line skipped with `skip_bad_lines`.
    pub skipped: Vec<(usize, String)>,
}

/// Reads a samples file. A bad line is an error naming the file and line, unless
/// `skip_bad_lines`, in which case it is recorded in [`LoadedSamples::skipped`].
pub fn load_samples(path: &Path, skip_bad_lines: bool) -> Result<LoadedSamples, SamplesError> {
    let io = |source| SamplesError::Io {
        file: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut loaded = LoadedSamples::default();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(set) => loaded.sets.push(set),
            Err(message) if skip_bad_lines => loaded.skipped.push((i + 1, message)),
            Err(message) => {
                return Err(SamplesError::Line {
                    file: path.to_path_buf(),
                    line: i + 1,
                    message,
                })
            }
        }
    }
    Ok(loaded)
}

fn parse_line(line: &str) -> Result<SampleSet, String> {
    let parsed: SampleLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let text = |v: serde_json::Value, field: &str| match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(format!(
            "`{field}` must be a string or a number, not {other}"
        )),
    };
    Ok(SampleSet {
        id: text(parsed.id, "id")?,
        gold: text(parsed.gold, "gold")?,
        samples: parsed.samples,
    })
}

/// A way to pick one answer from a problem's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The largest equivalence cluster (ties: higher total score, then earliest).
    Majority,
    /// The cluster with the largest sum of scores; unscored samples weigh 0.
    WeightedMajority,
    /// The answer of the highest-scoring sample (ties: earliest); unscored samples are skipped.
    BestScore,
    /// The first sample's answer.
    First,
    /// A uniformly random sample's answer, from a seed derived from the run seed and the id.
    Random,
}

impl Rule {
    pub const ALL: [Rule; 5] = [
        Rule::Majority,
        Rule::WeightedMajority,
        Rule::BestScore,
        Rule::First,
        Rule::Random,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Majority => "majority",
            Rule::WeightedMajority => "weighted-majority",
            Rule::BestScore => "best-score",
            Rule::First => "first",
            Rule::Random => "random",
        }
    }

    /// Whether the rule needs scores.
    pub fn needs_scores(self) -> bool {
        matches!(self, Rule::WeightedMajority | Rule::BestScore)
    }
}

impl FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Rule, String> {
        Rule::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown rule `{s}` (known: {})", known.join(", "))
            })
    }
}

/// Re-scoring settings.
#[derive(Debug, Clone)]
pub struct RescoreOptions {
    pub rules: Vec<Rule>,
    /// `k` of pass@k; `None`: the smallest sample count of any problem.
    pub k: Option<usize>,
    pub extract: ExtractOptions,
    /// Seed of the `random` rule and of random tie breaks.
    pub seed: u64,
}

impl Default for RescoreOptions {
    fn default() -> Self {
        RescoreOptions {
            rules: Rule::ALL.to_vec(),
            k: None,
            extract: ExtractOptions::default(),
            seed: 0,
        }
    }
}

/// The result of one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleResult {
    /// Correct over problems; `null` when the rule applied to no problem (no scores anywhere).
    pub accuracy: Option<f64>,
    pub correct: usize,
    /// Problems where the rule could choose (for score rules: some sample has a score).
    pub applicable: usize,
}

/// The whole report, as `ponder rescore --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RescoreReport {
    pub problems: usize,
    pub samples: usize,
    pub rules: BTreeMap<String, RuleResult>,
    pub pass_at_1: f64,
    pub k: usize,
    pub pass_at_k: f64,
    pub oracle: f64,
    pub seed: u64,
}

/// Per-problem facts the rules and pass@k are computed from.
struct Judged {
    answers: Vec<Option<String>>,
    correct: Vec<bool>,
}

fn judge(set: &SampleSet, extract: &ExtractOptions) -> Judged {
    let gold = gold_answer(&set.gold);
    let answers: Vec<Option<String>> = set
        .samples
        .iter()
        .map(|s| extract_answer(&s.text, extract).map(|e| e.answer))
        .collect();
    let correct = answers
        .iter()
        .map(|a| a.as_deref().is_some_and(|a| is_correct(&gold, a)))
        .collect();
    Judged { answers, correct }
}

/// The gold answer: a boxed or `####` answer inside it when there is one (a full reference
/// solution), else the text itself.
fn gold_answer(gold: &str) -> String {
    let strict = without_last_number(ExtractOptions::default());
    match extract_answer(gold, &strict) {
        Some(e) if gold.contains("\\boxed") || gold.contains("####") => e.answer,
        _ => gold.trim().to_string(),
    }
}

/// `options` with the last-number fall-back turned off.
pub fn without_last_number(mut options: ExtractOptions) -> ExtractOptions {
    options.last_number_fallback = false;
    options
}

/// The sample index a rule picks, or `None` when it picks nothing (no answer, no score).
fn choose(rule: Rule, set: &SampleSet, judged: &Judged, seed: u64) -> Option<usize> {
    let scores: Vec<f64> = set
        .samples
        .iter()
        .map(|s| s.score.filter(|x| x.is_finite()).unwrap_or(0.0))
        .collect();
    let any_score = set
        .samples
        .iter()
        .any(|s| s.score.is_some_and(f64::is_finite));
    let mut rng = SeededRng::derive(seed, &format!("rescore:{}", set.id));
    match rule {
        Rule::First => (!set.samples.is_empty()).then_some(0),
        Rule::Random => {
            (!set.samples.is_empty()).then(|| rng.below(set.samples.len() as u64) as usize)
        }
        Rule::BestScore => {
            let mut best: Option<(usize, f64)> = None;
            for (i, s) in set.samples.iter().enumerate() {
                let Some(score) = s.score.filter(|x| x.is_finite()) else {
                    continue;
                };
                if best.is_none_or(|(_, b)| score > b) {
                    best = Some((i, score));
                }
            }
            best.map(|(i, _)| i)
        }
        Rule::Majority | Rule::WeightedMajority => {
            if rule == Rule::WeightedMajority && !any_score {
                return None;
            }
            let options = VoteOptions {
                weighted: rule == Rule::WeightedMajority,
                tie_break: TieBreak::ScoreThenFirst,
            };
            let score_slice = any_score.then_some(scores.as_slice());
            let v = vote(&judged.answers, score_slice, options, &mut rng);
            v.winning().map(|c| c.members[0])
        }
    }
}

/// Unbiased pass@k, shared with the run summaries.
pub use crate::summary::pass_at_k;

/// Applies every rule to every problem.
pub fn rescore(sets: &[SampleSet], options: &RescoreOptions) -> RescoreReport {
    let judged: Vec<Judged> = sets.iter().map(|s| judge(s, &options.extract)).collect();
    let k = options.k.unwrap_or_else(|| {
        sets.iter()
            .map(|s| s.samples.len())
            .filter(|&n| n > 0)
            .min()
            .unwrap_or(1)
    });
    let problems = sets.len();
    let mean = |total: f64| {
        if problems == 0 {
            0.0
        } else {
            total / problems as f64
        }
    };
    let mut rules = BTreeMap::new();
    for &rule in &options.rules {
        let (mut correct, mut applicable) = (0, 0);
        for (set, j) in sets.iter().zip(&judged) {
            let applies = !rule.needs_scores()
                || set
                    .samples
                    .iter()
                    .any(|s| s.score.is_some_and(f64::is_finite));
            if !applies {
                continue;
            }
            applicable += 1;
            if choose(rule, set, j, options.seed).is_some_and(|i| j.correct[i]) {
                correct += 1;
            }
        }
        let accuracy = (applicable > 0).then(|| correct as f64 / problems.max(1) as f64);
        rules.insert(
            rule.as_str().to_string(),
            RuleResult {
                accuracy,
                correct,
                applicable,
            },
        );
    }
    let counts = judged.iter().map(|j| {
        let n = j.correct.len();
        (n, j.correct.iter().filter(|&&c| c).count())
    });
    let (mut p1, mut pk, mut oracle) = (0.0, 0.0, 0.0);
    for (n, c) in counts {
        if n > 0 {
            p1 += c as f64 / n as f64;
            pk += pass_at_k(n, c, k);
            oracle += if c > 0 { 1.0 } else { 0.0 };
        }
    }
    RescoreReport {
        problems,
        samples: sets.iter().map(|s| s.samples.len()).sum(),
        rules,
        pass_at_1: mean(p1),
        k,
        pass_at_k: mean(pk),
        oracle: mean(oracle),
        seed: options.seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, gold: &str, samples: &[(&str, Option<f64>)]) -> SampleSet {
        SampleSet {
            id: id.into(),
            gold: gold.into(),
            samples: samples
                .iter()
                .map(|(t, s)| Sample {
                    text: t.to_string(),
                    score: *s,
                })
                .collect(),
        }
    }

    #[test]
    fn pass_at_k_matches_hand_worked_values() {
        // n = 4, c = 1: pass@1 = 1/4, pass@2 = 1 − C(3,2)/C(4,2) = 1 − 3/6 = 1/2.
        assert!((pass_at_k(4, 1, 1) - 0.25).abs() < 1e-12);
        assert!((pass_at_k(4, 1, 2) - 0.5).abs() < 1e-12);
        // n = 5, c = 2, k = 2: 1 − C(3,2)/C(5,2) = 1 − 3/10.
        assert!((pass_at_k(5, 2, 2) - 0.7).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 0, 2), 0.0);
        assert_eq!(pass_at_k(4, 3, 2), 1.0);
        // k above n is capped at n: any correct sample counts.
        assert_eq!(pass_at_k(3, 1, 10), 1.0);
        // Large n stays finite.
        let p = pass_at_k(4096, 17, 64);
        assert!(p > 0.0 && p < 1.0);
    }

    #[test]
    fn rules_on_a_hand_worked_pool() {
        // p1: majority says 5 (wrong, 3 votes vs 2), weighted says 4 (0.9 + 0.8 against
        //     0.1 + 0.2 + 0.05), best-score says 4 (0.9), first says 5.
        // p2: 1/2 has three votes and weight 1.0 (the unscored sample weighs 0) against 8's
        //     0.95: every rule is right except best-score, which picks 8.
        // p3: no answers at all.
        let sets = vec![
            set(
                "p1",
                "4",
                &[
                    ("so \\boxed{5}", Some(0.1)),
                    ("\\boxed{4}", Some(0.9)),
                    ("\\boxed{5.0}", Some(0.2)),
                    ("The answer is 4.", Some(0.8)),
                    ("\\boxed{5}", Some(0.05)),
                ],
            ),
            set(
                "p2",
                "\\frac{1}{2}",
                &[
                    ("\\boxed{0.5}", Some(0.5)),
                    ("\\boxed{1/2}", Some(0.5)),
                    ("\\boxed{8}", Some(0.95)),
                    ("\\boxed{\\dfrac12}", None),
                ],
            ),
            set("p3", "7", &[("no idea", None), ("none", None)]),
        ];
        let options = RescoreOptions {
            k: Some(2),
            extract: without_last_number(ExtractOptions::default()),
            ..RescoreOptions::default()
        };
        let r = rescore(&sets, &options);
        assert_eq!(r.problems, 3);
        assert_eq!(r.samples, 11);
        let acc = |rule: &str| r.rules[rule].accuracy.expect("applies");
        assert!((acc("majority") - 1.0 / 3.0).abs() < 1e-12, "{r:?}");
        assert!(
            (acc("weighted-majority") - 2.0 / 3.0).abs() < 1e-12,
            "{r:?}"
        );
        assert!((acc("best-score") - 1.0 / 3.0).abs() < 1e-12, "{r:?}");
        assert!((acc("first") - 1.0 / 3.0).abs() < 1e-12, "{r:?}");
        // p3 has no scores: score rules apply to two problems only.
        assert_eq!(r.rules["best-score"].applicable, 2);
        assert_eq!(r.rules["majority"].applicable, 3);
        // pass@1: (2/5 + 3/4 + 0) / 3; pass@2: (1 − C(3,2)/C(5,2) + 1 + 0) / 3 = (0.7 + 1) / 3.
        assert!((r.pass_at_1 - (0.4 + 0.75) / 3.0).abs() < 1e-12);
        assert!((r.pass_at_k - (0.7 + 1.0) / 3.0).abs() < 1e-12);
        assert!((r.oracle - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn score_rules_without_scores_report_null() {
        let sets = vec![set("a", "1", &[("\\boxed{1}", None)])];
        let r = rescore(&sets, &RescoreOptions::default());
        assert_eq!(r.rules["best-score"].accuracy, None);
        assert_eq!(r.rules["weighted-majority"].accuracy, None);
        assert_eq!(r.rules["majority"].accuracy, Some(1.0));
        assert_eq!(r.k, 1);
    }

    #[test]
    fn random_rule_is_seeded() {
        let sets: Vec<SampleSet> = (0..50)
            .map(|i| {
                set(
                    &format!("p{i}"),
                    "1",
                    &[("\\boxed{1}", None), ("\\boxed{2}", None)],
                )
            })
            .collect();
        let run = |seed| {
            rescore(
                &sets,
                &RescoreOptions {
                    rules: vec![Rule::Random],
                    seed,
                    ..RescoreOptions::default()
                },
            )
            .rules["random"]
                .correct
        };
        assert_eq!(run(1), run(1));
        let c = run(1);
        assert!(c > 10 && c < 40, "{c}");
    }

    #[test]
    fn rule_names_round_trip_and_unknown_is_listed() {
        for r in Rule::ALL {
            assert_eq!(r.as_str().parse::<Rule>(), Ok(r));
        }
        let err = "mode".parse::<Rule>().expect_err("unknown");
        assert!(
            err.contains("majority") && err.contains("best-score"),
            "{err}"
        );
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("ponder-rescore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("s.jsonl");
        std::fs::write(
            &path,
            "{\"id\": 1, \"gold\": 3, \"samples\": [{\"text\": \"\\\\boxed{3}\"}]}\n\nnot json\n{\"id\": \"x\", \"samples\": []}\n",
        )
        .expect("write");
        let err = load_samples(&path, false).expect_err("bad line 3");
        assert!(err.to_string().contains("s.jsonl:3:"), "{err}");
        let loaded = load_samples(&path, true).expect("skips");
        assert_eq!(loaded.sets.len(), 1);
        assert_eq!(loaded.sets[0].id, "1");
        assert_eq!(loaded.sets[0].gold, "3");
        assert_eq!(
            loaded.skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(loaded.skipped[1].1.contains("gold"), "{:?}", loaded.skipped);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
