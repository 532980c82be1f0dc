//! Recognising a synthetic problem inside arbitrary text and recomputing it from the text.

use ponder_core::stable_hash;

use crate::problem::{Difficulty, Op, Problem, Step};
use crate::templates::{
    fill, items, match_literal, match_sentence, render, skip_space, templates_for, Person, PEOPLE,
    QUESTION, START,
};

/// The last synthetic problem found anywhere in `text`, rebuilt from the text alone.
///
/// A problem is recognised as the opening sentence (`Mia has 12 apples.`), one or more step
/// sentences and the question sentence (`How many apples does Mia have now?`), in the exact
/// wording of the templates, except that any run of whitespace (spaces, tabs, newlines) may
/// stand for a space and between sentences, and numbers may have leading zeros. Text before
/// and after is ignored (a chat template, instructions, partial `Step k:` lines, an end of
/// turn token right after the `?`); the name must not follow a letter or digit. Where the text
/// holds several problems (few-shot examples), the one that starts last wins.
///
/// The result has the steps and answer recomputed from the numbers, the difficulty told by
/// the item word (each difficulty has its own items), the question re-rendered in canonical
/// form (single spaces, as the generator writes it) and the id
/// `synth-<difficulty>-parsed-<stable_hash(question):016x>`.
///
/// `None` for any other text, and for a problem that the generator could not have produced
/// arithmetically: a total below zero, an inexact division, or an overflow. Never panics.
pub fn parse_question(text: &str) -> Option<Problem> {
    let bytes = text.as_bytes();
    let mut best: Option<(usize, Problem)> = None;
    for person in &PEOPLE {
        for (at, _) in text.match_indices(person.name) {
            if at > 0 && bytes.get(at - 1).is_some_and(u8::is_ascii_alphanumeric) {
                continue;
            }
            if best.as_ref().is_some_and(|(b, _)| *b > at) {
                continue;
            }
            if let Some(problem) = parse_at(bytes, at, person) {
                best = Some((at, problem));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// A problem starting exactly at `at` with `person` as its subject.
fn parse_at(text: &[u8], at: usize, person: &Person) -> Option<Problem> {
    let (difficulty, item, start, mut pos) = Difficulty::ALL.iter().find_map(|d| {
        items(*d).iter().find_map(|item| {
            let (n, pos) = match_sentence(text, at, &fill(START, person, item))?;
            Some((*d, *item, n, pos))
        })
    })?;
    let step_sentences: Vec<(Op, &str, String)> = Op::ALL
        .iter()
        .flat_map(|op| templates_for(*op))
        .map(|t| (t.op, t.text, fill(t.text, person, item)))
        .collect();
    let question_sentence = fill(QUESTION, person, item);

    let mut sentences = vec![render(START, person, item, start)];
    let mut steps: Vec<Step> = Vec::new();
    let mut running = start;
    loop {
        pos = skip_space(text, pos);
        if match_literal(text, pos, &question_sentence).is_some() {
            break;
        }
        let (op, template, rhs, next) =
            step_sentences.iter().find_map(|(op, template, filled)| {
                let (n, next) = match_sentence(text, pos, filled)?;
                Some((*op, *template, n, next))
            })?;
        let result = op.apply(running, rhs).filter(|r| *r >= 0)?;
        steps.push(Step {
            op,
            lhs: running,
            rhs,
            result,
        });
        sentences.push(render(template, person, item, rhs));
        running = result;
        pos = next;
    }
    if steps.is_empty() {
        return None;
    }
    sentences.push(question_sentence);
    let question = sentences.join(" ");
    Some(Problem {
        id: format!(
            "synth-{difficulty}-parsed-{:016x}",
            stable_hash(question.as_bytes())
        ),
        difficulty,
        question,
        start,
        steps,
        answer: running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(start, [(op, rhs)], answer)` of the problem found in `text`, with its difficulty.
    type Shape = (Difficulty, i64, Vec<(Op, i64)>, i64);

    fn check(text: &str, expected: Option<Shape>) {
        let got = parse_question(text).map(|p| {
            (
                p.difficulty,
                p.start,
                p.steps.iter().map(|s| (s.op, s.rhs)).collect::<Vec<_>>(),
                p.answer,
            )
        });
        assert_eq!(got, expected, "text {text:?}");
    }

    const Q: &str = "Omar has 12 coins. He buys 5 more coins. He gives away 4 coins. \
                     He multiplies his coins by 3. How many coins does Omar have now?";

    #[test]
    fn recognises_problems() {
        // 12 + 5 = 17, 17 - 4 = 13, 13 * 3 = 39.
        let omar = Some((
            Difficulty::Medium,
            12,
            vec![(Op::Add, 5), (Op::Sub, 4), (Op::Mul, 3)],
            39,
        ));
        check(Q, omar.clone());
        // Inside a chat template, with an end-of-turn token right after the question mark.
        check(
            &format!("<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n"),
            omar.clone(),
        );
        // Followed by instructions and a partial solution.
        check(
            &format!("Question: {Q}\nAnswer step by step.\nStep 1: add 12 + 5 = 17.\nStep 2:"),
            omar.clone(),
        );
        // Whitespace runs, newlines between sentences, leading zeros.
        check(
            "Omar  has 012 coins.\nHe buys 5 more\tcoins.  He gives away 4 coins.He multiplies \
             his coins by 3.\n\nHow many coins does Omar have now?",
            omar,
        );
        // Easy items, she; 9 - 3 = 6, 6 + 7 = 13.
        check(
            "Mia has 9 apples. She sells 3 apples. A friend gives her 7 more apples. \
             How many apples does Mia have now?",
            Some((Difficulty::Easy, 9, vec![(Op::Sub, 3), (Op::Add, 7)], 13)),
        );
        // Hard items; 600 / 4 = 150, 150 * 12 = 1800.
        check(
            "Hugo has 600 nails. He keeps only one of every 4 nails. He ends up with 12 times \
             as many nails as before. How many nails does Hugo have now?",
            Some((
                Difficulty::Hard,
                600,
                vec![(Op::Div, 4), (Op::Mul, 12)],
                1800,
            )),
        );
    }

    #[test]
    fn the_last_of_several_problems_wins() {
        // 5 + 2 = 7 comes first, 9 - 3 = 6 last.
        check(
            "Example: Zoe has 5 pencils. She finds 2 more pencils. How many pencils does Zoe \
             have now?\nStep 1: add 5 + 2 = 7.\nThe answer is \\boxed{7}.\n\nProblem: Mia has 9 \
             apples. She sells 3 apples. How many apples does Mia have now?",
            Some((Difficulty::Easy, 9, vec![(Op::Sub, 3)], 6)),
        );
    }

    #[test]
    fn rejects_other_text() {
        check("", None);
        check("What is 2 + 2?", None);
        // No steps.
        check("Mia has 9 apples. How many apples does Mia have now?", None);
        // Missing question.
        check("Mia has 9 apples. She sells 3 apples.", None);
        // Wrong pronoun, wrong item, other person in the question.
        check(
            "Mia has 9 apples. He sells 3 apples. How many apples does Mia have now?",
            None,
        );
        check(
            "Mia has 9 apples. She sells 3 pears. How many apples does Mia have now?",
            None,
        );
        check(
            "Mia has 9 apples. She sells 3 apples. How many apples does Ava have now?",
            None,
        );
        // The name inside another word.
        check(
            "XMia has 9 apples. She sells 3 apples. How many apples does Mia have now?",
            None,
        );
        // Below zero, inexact division, overflow.
        check(
            "Mia has 9 apples. She sells 30 apples. How many apples does Mia have now?",
            None,
        );
        check(
            "Omar has 7 coins. He keeps only one of every 2 coins. How many coins does Omar \
             have now?",
            None,
        );
        check(
            "Omar has 9223372036854775807 coins. He buys 5 more coins. How many coins does \
             Omar have now?",
            None,
        );
        // A negative number is not a number of items.
        check(
            "Mia has -9 apples. She sells 3 apples. How many apples does Mia have now?",
            None,
        );
    }

    #[test]
    fn canonical_question_and_parsed_id() {
        let p = parse_question(&format!("  {}  ", Q.replace(' ', "  ")));
        assert_eq!(p.as_ref().map(|p| p.question.as_str()), Some(Q));
        let id = p.map(|p| p.id).unwrap_or_default();
        assert!(id.starts_with("synth-medium-parsed-"), "{id}");
        assert_eq!(id.len(), "synth-medium-parsed-".len() + 16);
    }
}
