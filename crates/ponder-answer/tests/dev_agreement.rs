//! Agreement of the grader with the expected verdicts of the 196 development cases
//! (`tests/data/math_equivalence_dev.jsonl`, read out of Math-Verify's test suite).
//!
//! Each case's `settings` say how upstream graded it: which extraction targets (`latex`,
//! `expr`), the float rounding (`precision`), `strict` variable names and whether an inequality
//! may answer an interval. They are mapped onto [`GradeOptions`]; `expected` is only read to
//! count agreement. Run with `--nocapture` to see the figure and the disagreements
//! (`PONDER_DEV_VERBOSE=1` prints every case).

use ponder_answer::{grade, Extractor, GradeOptions, Verdict};
use serde_json::Value;

const TARGET: f64 = 0.98;

fn options(settings: &Value) -> GradeOptions {
    let targets: Vec<&str> = settings["match_types"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let latex = targets.contains(&"latex");
    let expr = targets.contains(&"expr");
    GradeOptions {
        precision: settings["precision"].as_u64().unwrap_or(6) as u32,
        strict: settings["strict"].as_bool().unwrap_or(true),
        allow_set_relation: settings["allow_set_relation_comp"]
            .as_bool()
            .unwrap_or(false),
        extract: Extractor {
            latex,
            // A whole short text is read as LaTeX; plain-number targets read numbers instead.
            whole: latex,
            last_number: expr,
            ..Extractor::default()
        },
        ..GradeOptions::default()
    }
}

#[test]
fn dev_agreement() {
    let data = include_str!("data/math_equivalence_dev.jsonl");
    let mut total = 0usize;
    let mut agree = 0usize;
    let mut undecided = 0usize;
    let mut misses = Vec::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).expect("valid JSON line");
        let gold = case["gold"].as_str().expect("gold");
        let prediction = case["prediction"].as_str().expect("prediction");
        let expected = case["expected"].as_bool().expect("expected");
        let g = grade(gold, prediction, &options(&case["settings"]));
        total += 1;
        if std::env::var_os("PONDER_DEV_VERBOSE").is_some() {
            println!(
                "{} expected {expected} got {:?}: {:?} | {:?}",
                case["id"].as_str().unwrap_or("?"),
                g.verdict,
                g.gold.normalized,
                g.prediction.normalized
            );
        }
        if g.verdict == Verdict::Undecided {
            undecided += 1;
        }
        if g.verdict.is_equivalent() == expected {
            agree += 1;
        } else {
            misses.push(format!(
                "  {}: expected {expected}, got {:?}\n    gold {:?} -> {:?}\n    pred {:?} -> {:?}",
                case["id"].as_str().unwrap_or("?"),
                g.verdict,
                g.gold.extracted,
                g.gold.normalized,
                g.prediction.extracted,
                g.prediction.normalized,
            ));
        }
    }
    let rate = agree as f64 / total as f64;
    println!(
        "agreement {agree}/{total} = {:.1}% (undecided: {undecided})",
        100.0 * rate
    );
    for m in &misses {
        println!("{m}");
    }
    assert_eq!(total, 196, "the dev file has 196 cases");
    assert!(
        rate >= TARGET,
        "agreement {agree}/{total} is below {:.0}%",
        100.0 * TARGET
    );
}
