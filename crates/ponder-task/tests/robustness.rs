//! Fuzz-like robustness: random bytes, truncations and mutations of real questions and
//! solutions go into every parser; nothing may panic, and truncated text must not be taken
//! for more than it says.

use ponder_core::SeededRng;
use ponder_task::{
    check_solution, final_answer, generate, parse_question, parse_step_line, Difficulty,
};

/// Random text biased towards the characters the parsers look for.
fn random_text(rng: &mut SeededRng, len: usize) -> String {
    const PIECES: &[&str] = &[
        "Step ",
        "step",
        "1",
        "23",
        ":",
        " ",
        "\n",
        "=",
        "+",
        "-",
        "*",
        "/",
        "×",
        "÷",
        "−",
        ".",
        ",",
        "\\boxed{",
        "{",
        "}",
        "$",
        "Mia has ",
        "Omar",
        " apples.",
        " coins.",
        "She ",
        "sells ",
        "How many apples does Mia have now?",
        "é",
        "🙂",
        "\u{0}",
        "99999999999999999999",
    ];
    let mut s = String::new();
    for _ in 0..len {
        if rng.chance(0.3) {
            // Any char, including multi-byte ones.
            s.push(char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('?'));
        } else {
            s.push_str(PIECES[rng.below(PIECES.len() as u64) as usize]);
        }
    }
    s
}

#[test]
fn random_text_never_panics() {
    let mut rng = SeededRng::derive(1, "robustness/random");
    let problem = &generate(1, Difficulty::Medium, 1)[0];
    for _ in 0..3000 {
        let len = rng.below(60) as usize;
        let text = random_text(&mut rng, len);
        let _ = parse_question(&text);
        let _ = check_solution(problem, &text);
        let _ = final_answer(&text);
        for line in text.lines() {
            let _ = parse_step_line(line);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = SeededRng::derive(2, "robustness/bytes");
    let problem = &generate(2, Difficulty::Hard, 1)[0];
    for _ in 0..3000 {
        let len = rng.below(200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_question(&text);
        let _ = check_solution(problem, &text);
        let _ = parse_step_line(&text);
    }
}

/// Every prefix of every char boundary of real questions and solutions.
#[test]
fn truncations_never_panic_and_are_not_overread() {
    for d in Difficulty::ALL {
        for problem in generate(4, d, 30) {
            let prompt = problem.prompt();
            let solution = problem.reference_solution();
            let question_end = problem.question.len();
            for (cut, _) in prompt.char_indices() {
                let parsed = parse_question(&prompt[..cut]);
                // Only a complete question is recognised.
                assert_eq!(
                    parsed.is_some(),
                    cut >= question_end,
                    "{:?}",
                    &prompt[..cut]
                );
            }
            for (cut, _) in solution.char_indices() {
                let check = check_solution(&problem, &solution[..cut]);
                assert!(check.steps.len() <= problem.steps.len());
                // A truncated solution never claims more than it shows: only complete step
                // lines are read (a cut in the result digits reads as a shorter, wrong result).
                assert!(check
                    .steps
                    .iter()
                    .all(|s| s.parsed.index <= problem.steps.len()));
                assert!(!check.all_steps_valid || check.steps.len() == problem.steps.len());
                if check.correct {
                    assert!(solution[..cut].contains(&format!("\\boxed{{{}}}", problem.answer)));
                }
            }
        }
    }
}

#[test]
fn long_hostile_inputs_are_fast_enough() {
    // Linear-time scans: these would take minutes if any parser were quadratic.
    let many_boxes = "\\boxed{".repeat(100_000);
    assert_eq!(final_answer(&many_boxes), None);
    let many_headers = "Step 1: ".repeat(100_000);
    assert_eq!(parse_step_line(&many_headers), None);
    let many_names = "Mia has 3 apples. ".repeat(20_000);
    assert_eq!(parse_question(&many_names), None);
    let digits = "1".repeat(200_000);
    assert_eq!(parse_step_line(&format!("Step 1: {digits} + 1 = 2")), None);
}
