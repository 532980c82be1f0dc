//! Grader throughput on one core: numeric pairs per second, mixed symbolic pairs per second, and
//! the time of a vote over 1,024 answers.
//!
//! Run: `cargo bench -p ponder-answer --bench grade`. Not a timed test: it prints figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ponder_answer::{grade, vote, GradeOptions, VoteOptions};
use ponder_core::SeededRng;

/// Seeded numeric pairs in the forms graders meet: integers, thousands separators, decimals,
/// fractions, boxed model endings, GSM8K endings; about half equivalent.
fn numeric_pairs(n: usize, seed: u64) -> Vec<(String, String)> {
    let mut rng = SeededRng::derive(seed, "bench/numeric");
    (0..n)
        .map(|i| {
            let a = rng.range_inclusive(1, 99_999);
            let b = rng.range_inclusive(2, 97);
            let same = rng.chance(0.5);
            let a2 = if same { a } else { a + 1 };
            match i % 6 {
                0 => (a.to_string(), a2.to_string()),
                1 => (
                    a.to_string(),
                    format!("{},{:03}", a2 / 1000, a2 % 1000)
                        .trim_start_matches("0,")
                        .to_string(),
                ),
                2 => (format!("\\frac{{{a}}}{{{b}}}"), format!("{a2}/{b}")),
                3 => (format!("{a}"), format!("So the total is \\boxed{{{a2}}}.")),
                4 => (format!("{a}"), format!("She has {b} left.\n#### {a2}")),
                _ => (
                    format!("{}", a as f64 / 4.0),
                    format!("{:.2}", a2 as f64 / 4.0),
                ),
            }
        })
        .collect()
}

fn symbolic_pairs() -> Vec<(String, String)> {
    [
        ("(x+1)^2", "x^2+2x+1"),
        ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}"),
        ("\\tan^2(y)+1", "\\sec^2(y)"),
        ("2\\sin b \\cos a", "\\sin(a+b)-\\sin(a-b)"),
        ("\\sqrt{8}", "2\\sqrt{2}"),
        ("(1, \\frac{9}{2})", "(1, 4.5)"),
        ("[-1, -\\frac12) \\cup (1, \\infty)", "[-1,-0.5)\\cup(1,\\infty)"),
        ("\\{1\\pm\\sqrt{5}, -2\\}", "\\{-2, 1+\\sqrt5, 1-\\sqrt5\\}"),
        ("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}"),
        ("-2 \\le x \\le 7", "x \\in [-2,7]"),
        (
            "\\begin{pmatrix}6 & 8 \\\\ 10 & 12\\end{pmatrix}",
            "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}5 & 6 \\\\ 7 & 8\\end{pmatrix}",
        ),
        ("x^3 - 1", "(x-1)(x^2+x+1)"),
        ("\\frac{\\pi r}{h+r}", "\\frac{r\\pi}{r+h}"),
        ("e^{2\\ln x}", "x^2"),
        ("x > 5", "x \\ge 5"),
        ("\\text{Evelyn}", "Evelyn"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// Grades every pair repeatedly for at least `min` and returns pairs per second.
fn rate(pairs: &[(String, String)], options: &GradeOptions, min: Duration) -> (f64, usize) {
    let start = Instant::now();
    let mut n = 0usize;
    let mut equivalent = 0usize;
    while start.elapsed() < min {
        for (g, p) in pairs {
            let v = grade(black_box(g), black_box(p), options).verdict;
            equivalent += usize::from(v.is_equivalent());
            n += 1;
        }
    }
    (n as f64 / start.elapsed().as_secs_f64(), equivalent)
}

fn main() {
    let options = GradeOptions::default();
    let min = Duration::from_secs(2);

    let numeric = numeric_pairs(10_000, 7);
    let (numeric_rate, _) = rate(&numeric, &options, min);
    println!("numeric pairs:        {numeric_rate:>10.0} pairs/s (one core, 10,000 seeded pairs)");

    let symbolic = symbolic_pairs();
    let (symbolic_rate, _) = rate(&symbolic, &options, min);
    println!(
        "mixed symbolic pairs: {symbolic_rate:>10.0} pairs/s ({} kinds: expressions, tuples, \
         intervals, sets, equations, matrices)",
        symbolic.len()
    );

    // A vote over 1,024 answers: 40 distinct numeric answers in varied forms plus symbolic ones.
    let mut rng = SeededRng::derive(3, "bench/vote");
    let forms = ["{}", "{}.0", "\\frac{{{}}}{{1}}", "{} ", "\\text{{{}}}"];
    let answers: Vec<Option<String>> = (0..1024)
        .map(|i| {
            if i % 8 == 0 {
                let k = rng.range_inclusive(1, 30);
                return Some(format!("(x+{k})^2"));
            }
            let v = rng.range_inclusive(1, 40);
            let f = forms[rng.below(forms.len() as u64) as usize];
            Some(
                f.replace("{}", &v.to_string())
                    .replace("{{", "{")
                    .replace("}}", "}"),
            )
        })
        .collect();
    let start = Instant::now();
    let mut rounds = 0u32;
    let mut clusters = 0usize;
    while start.elapsed() < min {
        let v = vote(
            black_box(&answers),
            None,
            VoteOptions::default(),
            &mut SeededRng::new(0),
        );
        clusters = v.clusters.len();
        rounds += 1;
    }
    let per_vote = start.elapsed() / rounds;
    println!("vote over 1,024 answers: {per_vote:>8.2?} per vote ({clusters} clusters)");
}
