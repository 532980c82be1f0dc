//! Hand-worked examples: a problem written out by hand, its exact reference solution and
//! record, and the exact checks of solutions with errors.

use ponder_task::{check_solution, parse_question, Difficulty, Op, Problem, SolutionCheck, Step};
use serde_json::json;

/// Omar has 12 coins; + 5 = 17; - 4 = 13; * 3 = 39; / 13 = 3.
fn omar() -> Problem {
    Problem {
        id: "synth-medium-7-000003".to_string(),
        difficulty: Difficulty::Medium,
        question: "Omar has 12 coins. He buys 5 more coins. He gives away 4 coins. He multiplies \
                   his coins by 3. He keeps only one of every 13 coins. How many coins does Omar \
                   have now?"
            .to_string(),
        start: 12,
        steps: vec![
            step(Op::Add, 12, 5, 17),
            step(Op::Sub, 17, 4, 13),
            step(Op::Mul, 13, 3, 39),
            step(Op::Div, 39, 13, 3),
        ],
        answer: 3,
    }
}

fn step(op: Op, lhs: i64, rhs: i64, result: i64) -> Step {
    Step {
        op,
        lhs,
        rhs,
        result,
    }
}

const REFERENCE: &str = "Step 1: add 12 + 5 = 17.\n\
                         Step 2: subtract 17 - 4 = 13.\n\
                         Step 3: multiply 13 * 3 = 39.\n\
                         Step 4: divide 39 / 13 = 3.\n\
                         The answer is \\boxed{3}.";

#[test]
fn reference_solution_text() {
    assert_eq!(omar().reference_solution(), REFERENCE);
}

#[test]
fn hand_written_question_parses_to_the_same_problem() {
    let parsed = parse_question(&omar().question);
    let expected = omar();
    assert_eq!(
        parsed.map(|p| (p.difficulty, p.question, p.start, p.steps, p.answer)),
        Some((
            expected.difficulty,
            expected.question,
            expected.start,
            expected.steps,
            expected.answer
        ))
    );
}

/// `(index, arithmetic_ok, consistent, matches_reference)` per step line, the final answer,
/// `correct`, `all_steps_valid`.
type Summary = (Vec<(usize, bool, bool, bool)>, Option<i64>, bool, bool);

fn summary(check: &SolutionCheck) -> Summary {
    (
        check
            .steps
            .iter()
            .map(|s| (s.index, s.arithmetic_ok, s.consistent, s.matches_reference))
            .collect(),
        check.final_answer,
        check.correct,
        check.all_steps_valid,
    )
}

fn check(solution: &str, expected: Summary) {
    assert_eq!(
        summary(&check_solution(&omar(), solution)),
        expected,
        "solution:\n{solution}"
    );
}

#[test]
fn checks() {
    const T: bool = true;
    const F: bool = false;

    // The reference: everything holds.
    check(
        REFERENCE,
        (
            vec![(1, T, T, T), (2, T, T, T), (3, T, T, T), (4, T, T, T)],
            Some(3),
            T,
            T,
        ),
    );

    // Step 2 writes 14 instead of 13 (17 - 4 = 13); later steps carry 14 on.
    // Step 2: arithmetic wrong, consistent (17 is step 1's result, "- 4" is the problem's).
    // Step 3: arithmetic right (14 * 3 = 42), consistent (14 is step 2's written result).
    // Step 4: arithmetic wrong (42 / 13 is not 3: 13 * 3 = 39), consistent (42 is step 3's result,
    // "/ 13" the problem's step 4). Only step 1 matches the reference. The answer 3 is right
    // by luck: correct, but the steps are not valid.
    check(
        "Step 1: add 12 + 5 = 17.\n\
         Step 2: subtract 17 - 4 = 14.\n\
         Step 3: multiply 14 * 3 = 42.\n\
         Step 4: divide 42 / 13 = 3.\n\
         The answer is \\boxed{3}.",
        (
            vec![(1, T, T, T), (2, F, T, F), (3, T, T, F), (4, F, T, F)],
            Some(3),
            T,
            F,
        ),
    );

    // The same error carried to the answer, stopping after three steps with 42.
    // Step 2 alone is flagged (arithmetic); step 3 is arithmetic_ok and consistent but does
    // not match the reference (which writes 13 * 3 = 39). Three steps of four: not all valid;
    // 42 != 3: not correct.
    check(
        "Step 1: add 12 + 5 = 17.\n\
         Step 2: subtract 17 - 4 = 14.\n\
         Step 3: multiply 14 * 3 = 42.\n\
         The answer is \\boxed{42}.",
        (
            vec![(1, T, T, T), (2, F, T, F), (3, T, T, F)],
            Some(42),
            F,
            F,
        ),
    );

    // Step 2 uses the wrong operand (- 5 instead of - 4) with right arithmetic: 17 - 5 = 12.
    // Step 2: arithmetic_ok, not consistent (rhs differs from the problem's step 2).
    // Step 3: 12 * 3 = 36: arithmetic_ok and consistent (12 is step 2's result).
    // Step 4: 36 / 13 is not whole; written 36 / 13 = 2: arithmetic wrong, consistent.
    check(
        "Step 1: add 12 + 5 = 17.\n\
         Step 2: subtract 17 - 5 = 12.\n\
         Step 3: multiply 12 * 3 = 36.\n\
         Step 4: divide 36 / 13 = 2.\n\
         The answer is \\boxed{2}.",
        (
            vec![(1, T, T, T), (2, T, F, F), (3, T, T, F), (4, F, T, F)],
            Some(2),
            F,
            F,
        ),
    );

    // Step 3 starts from a number that is not step 2's result (15 instead of 13), with right
    // arithmetic 15 * 3 = 45: arithmetic_ok, not consistent. Step 4 then starts from 39, not
    // 45: not consistent either, though 39 / 13 = 3 holds and matches the reference.
    check(
        "Step 1: add 12 + 5 = 17.\n\
         Step 2: subtract 17 - 4 = 13.\n\
         Step 3: multiply 15 * 3 = 45.\n\
         Step 4: divide 39 / 13 = 3.\n\
         The answer is \\boxed{3}.",
        (
            vec![(1, T, T, T), (2, T, T, T), (3, T, F, F), (4, T, F, T)],
            Some(3),
            T,
            F,
        ),
    );

    // Steps numbered out of order: each compares with the problem's step k as written.
    // The first line (k = 2) starts from 12, the start value, but the problem's step 2 is
    // "- 4", not "+ 5": not consistent. All four lines read, but k runs 2, 1, 3, 4: not valid.
    check(
        "Step 2: add 12 + 5 = 17.\n\
         Step 1: subtract 17 - 4 = 13.\n\
         Step 3: multiply 13 * 3 = 39.\n\
         Step 4: divide 39 / 13 = 3.\n\
         The answer is \\boxed{3}.",
        (
            vec![(2, T, F, F), (1, T, F, F), (3, T, T, T), (4, T, T, T)],
            Some(3),
            T,
            F,
        ),
    );

    // A step the problem does not have (k = 5): not consistent.
    check("Step 5: add 3 + 1 = 4.", (vec![(5, T, F, F)], None, F, F));

    // Decorated lines, chatter between them, an unfinished last box.
    check(
        "Let's go step by step.\n\
         - **Step 1:** 12 + 5 = 17\n\
         so far so good\n\
         Step 2 : 17-4=13.\n\
         Step 3: 13 × 3 = 39\n\
         Step 4: 39 ÷ 13 = 3\n\
         **Final:** \\boxed{3}. Or was it \\boxed{4",
        (
            vec![(1, T, T, T), (2, T, T, T), (3, T, T, T), (4, T, T, T)],
            Some(3),
            T,
            T,
        ),
    );

    // Steps right, answer missing: not correct, steps valid.
    check(
        "Step 1: add 12 + 5 = 17.\nStep 2: subtract 17 - 4 = 13.\n\
         Step 3: multiply 13 * 3 = 39.\nStep 4: divide 39 / 13 = 3.\nSo 3.",
        (
            vec![(1, T, T, T), (2, T, T, T), (3, T, T, T), (4, T, T, T)],
            None,
            F,
            T,
        ),
    );

    // Nothing at all.
    check("", (vec![], None, F, F));
}

#[test]
fn first_error_and_lines() {
    let check = check_solution(
        &omar(),
        "  Step 1: add 12 + 5 = 17.  \r\nStep 2: subtract 17 - 4 = 14.\nStep 3: multiply 14 * 3 = 42.",
    );
    assert_eq!(check.first_error(), Some(1));
    assert_eq!(check.steps[0].line, "Step 1: add 12 + 5 = 17.");
    assert_eq!(check.steps[1].parsed.result, 14);
    assert_eq!(check_solution(&omar(), REFERENCE).first_error(), None);
}

#[test]
fn record_shape() {
    let record = omar().to_record();
    assert_eq!(
        record,
        json!({
            "version": 1,
            "id": "synth-medium-7-000003",
            "difficulty": "medium",
            "question": omar().question,
            "start": 12,
            "steps": [
                {"op": "+", "lhs": 12, "rhs": 5, "result": 17},
                {"op": "-", "lhs": 17, "rhs": 4, "result": 13},
                {"op": "*", "lhs": 13, "rhs": 3, "result": 39},
                {"op": "/", "lhs": 39, "rhs": 13, "result": 3},
            ],
            "answer": 3,
            "solution": REFERENCE,
            "seed": 7,
            "index": 3,
        })
    );
    assert_eq!(Problem::from_record(&record), Ok(omar()));
}

#[test]
fn records_that_do_not_read_back() {
    let good = omar().to_record();
    let with = |key: &str, value: serde_json::Value| {
        let mut r = good.clone();
        r[key] = value;
        Problem::from_record(&r).err().map(|e| e.to_string())
    };
    assert_eq!(
        with("answer", json!(4)),
        Some("invalid task record: field `answer` is 4, the steps give 3".to_string())
    );
    assert_eq!(
        with("difficulty", json!("extreme")),
        Some(
            "invalid task record: field `difficulty` unknown difficulty `extreme`: expected \
             one of easy, medium, hard"
                .to_string()
        )
    );
    assert_eq!(
        with("version", json!(2)),
        Some("invalid task record: field `version` is 2, expected 1".to_string())
    );
    assert_eq!(
        with("start", json!(11)),
        Some("invalid task record: field `steps` step 1 starts from 12, expected 11".to_string())
    );
    assert_eq!(
        with("question", json!(5)),
        Some("invalid task record: field `question` is not a string".to_string())
    );
    assert!(with(
        "steps",
        json!([{"op": "%", "lhs": 12, "rhs": 5, "result": 17}])
    )
    .is_some());
    assert_eq!(
        Problem::from_record(&json!({}))
            .err()
            .map(|e| e.to_string()),
        Some("invalid task record: field `difficulty` is missing".to_string())
    );
}
