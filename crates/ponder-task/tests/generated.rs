//! Properties of generated problems: round trips through text and records, determinism, and
//! a pinned example that changes only when the generator (and so the dataset) changes.

use ponder_task::{
    check_solution, generate, generate_one, parse_question, parse_step_line, Difficulty, Problem,
};

const N: usize = 3000;

#[test]
fn questions_round_trip_through_parse_question() {
    for d in Difficulty::ALL {
        for seed in [0, 1] {
            for problem in generate(seed, d, N) {
                for text in [
                    problem.question.clone(),
                    problem.prompt(),
                    format!(
                        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n{}",
                        problem.prompt(),
                        first_line(&problem.reference_solution())
                    ),
                ] {
                    let parsed = parse_question(&text);
                    let Some(parsed) = parsed else {
                        panic!("not recognised: {text:?}");
                    };
                    assert_eq!(parsed.difficulty, problem.difficulty, "{text:?}");
                    assert_eq!(parsed.question, problem.question);
                    assert_eq!(parsed.start, problem.start);
                    assert_eq!(parsed.steps, problem.steps);
                    assert_eq!(parsed.answer, problem.answer);
                    assert!(parsed.id.starts_with(&format!("synth-{d}-parsed-")));
                }
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[test]
fn reference_solutions_check_as_correct_and_valid() {
    for d in Difficulty::ALL {
        for problem in generate(3, d, N) {
            let solution = problem.reference_solution();
            let check = check_solution(&problem, &solution);
            assert!(check.correct && check.all_steps_valid, "{solution}");
            assert!(check.steps.iter().all(|s| s.matches_reference));
            assert_eq!(check.final_answer, Some(problem.answer));
            // Every step line reads back as written.
            for (k, (line, step)) in solution.lines().zip(&problem.steps).enumerate() {
                let parsed = parse_step_line(line).map(|p| (p.index, p.lhs, p.op, p.rhs, p.result));
                assert_eq!(
                    parsed,
                    Some((k + 1, step.lhs, step.op, step.rhs, step.result))
                );
            }
        }
    }
}

#[test]
fn records_round_trip() {
    for d in Difficulty::ALL {
        for (i, problem) in generate(9, d, 300).into_iter().enumerate() {
            let record = problem.to_record();
            assert_eq!(record["seed"], 9);
            assert_eq!(record["index"], i);
            assert_eq!(record["difficulty"], d.as_str());
            assert_eq!(record["answer"], problem.answer);
            let line = serde_json::to_string(&record).unwrap_or_default();
            let back: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            assert_eq!(Problem::from_record(&back), Ok(problem));
        }
    }
}

#[test]
fn same_seed_same_records_other_seed_other_records() {
    for d in Difficulty::ALL {
        let records = |seed| -> Vec<serde_json::Value> {
            generate(seed, d, 200)
                .iter()
                .map(Problem::to_record)
                .collect()
        };
        assert_eq!(records(5), records(5));
        let (a, b) = (generate(5, d, 200), generate(6, d, 200));
        let same = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.question == y.question)
            .count();
        assert!(same < 20, "{d}: {same} of 200 questions equal across seeds");
    }
}

#[test]
fn questions_are_varied() {
    for d in Difficulty::ALL {
        let problems = generate(1, d, 1000);
        let mut questions: Vec<&str> = problems.iter().map(|p| p.question.as_str()).collect();
        questions.sort_unstable();
        questions.dedup();
        assert!(
            questions.len() > 900,
            "{d}: only {} distinct",
            questions.len()
        );
    }
}

/// A snapshot of generated problems, pinned so that any change to the generator (which
/// changes the training and evaluation data) is deliberate: bump the stream label
/// `ponder-task/v1` and `RECORD_VERSION` with it. These texts were produced by the code, not
/// worked out by hand; their arithmetic is checked by hand in the comments.
#[test]
fn generator_output_is_pinned() {
    let pinned = [
        (Difficulty::Easy, PINNED_EASY),
        (Difficulty::Medium, PINNED_MEDIUM),
        (Difficulty::Hard, PINNED_HARD),
    ];
    for (d, (question, solution)) in pinned {
        let p = generate_one(7, d, 0);
        assert_eq!(p.question, question, "{d}");
        assert_eq!(p.reference_solution(), solution, "{d}");
    }
}

// 18 - 4 = 14, 14 - 10 = 4, 4 + 7 = 11.
const PINNED_EASY: (&str, &str) = (
    "Noah has 18 crayons. He loses 4 crayons. He gives away 10 crayons. A friend gives him 7 \
     more crayons. How many crayons does Noah have now?",
    "Step 1: subtract 18 - 4 = 14.\nStep 2: subtract 14 - 10 = 4.\nStep 3: add 4 + 7 = 11.\n\
     The answer is \\boxed{11}.",
);
// 76 * 2 = 152, 152 - 40 = 112, 112 - 28 = 84, 84 / 2 = 42.
const PINNED_MEDIUM: (&str, &str) = (
    "Noah has 76 beads. He buys enough beads to have 2 times as many as before. He sells 40 \
     beads. He loses 28 beads. He packs his beads into 2 equal boxes and keeps one box. How \
     many beads does Noah have now?",
    "Step 1: multiply 76 * 2 = 152.\nStep 2: subtract 152 - 40 = 112.\nStep 3: subtract \
     112 - 28 = 84.\nStep 4: divide 84 / 2 = 42.\nThe answer is \\boxed{42}.",
);
// 557 + 914 = 1471, 1471 * 11 = 14710 + 1471 = 16181, 16181 - 695 = 15486,
// 15486 / 3 = 5162 (3 * 5162 = 15486), 5162 + 719 = 5881.
const PINNED_HARD: (&str, &str) = (
    "Lena has 557 bricks. She buys 914 more bricks. She ends up with 11 times as many bricks \
     as before. She gives away 695 bricks. She keeps only one of every 3 bricks. She finds 719 \
     more bricks. How many bricks does Lena have now?",
    "Step 1: add 557 + 914 = 1471.\nStep 2: multiply 1471 * 11 = 16181.\nStep 3: subtract \
     16181 - 695 = 15486.\nStep 4: divide 15486 / 3 = 5162.\nStep 5: add 5162 + 719 = \
     5881.\nThe answer is \\boxed{5881}.",
);
