//! The sentence templates of the questions, shared by the generator and the parser, and the
//! small whitespace-tolerant matcher that reads them back.
//!
//! A template is a fixed sentence with placeholders: `{S}` the person's name, `{P}` the
//! capitalised subject pronoun, `{O}` the object pronoun, `{Q}` the possessive, `{X}` the item
//! (plural) and `{N}` the one number. Once a person and an item are fixed, every template is
//! a literal prefix, one unsigned integer and a literal suffix, and no two step templates
//! share both, so a sentence reads back unambiguously.

use crate::problem::{Difficulty, Op};

/// A person of the story and their pronouns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Person {
    pub name: &'static str,
    pub subject: &'static str,
    pub object: &'static str,
    pub possessive: &'static str,
}

const fn she(name: &'static str) -> Person {
    Person {
        name,
        subject: "She",
        object: "her",
        possessive: "her",
    }
}

const fn he(name: &'static str) -> Person {
    Person {
        name,
        subject: "He",
        object: "him",
        possessive: "his",
    }
}

/// The people of the stories. No name is another's suffix, so a name is found by search.
pub(crate) const PEOPLE: [Person; 12] = [
    she("Mia"),
    he("Liam"),
    she("Ava"),
    he("Noah"),
    she("Zoe"),
    he("Omar"),
    she("Lena"),
    he("Ravi"),
    she("Sofia"),
    he("Ken"),
    she("Nora"),
    he("Hugo"),
];

/// The items of each difficulty. The lists are disjoint, so the item of a question tells
/// its difficulty.
pub(crate) fn items(difficulty: Difficulty) -> &'static [&'static str] {
    match difficulty {
        Difficulty::Easy => &["apples", "marbles", "stickers", "pencils", "crayons"],
        Difficulty::Medium => &["coins", "beads", "stamps", "cards", "shells"],
        Difficulty::Hard => &["bricks", "bottles", "seeds", "nails", "tickets"],
    }
}

/// The opening sentence: the starting quantity.
pub(crate) const START: &str = "{S} has {N} {X}.";

/// The closing sentence: the question.
pub(crate) const QUESTION: &str = "How many {X} does {S} have now?";

/// One step sentence and the operation it stands for (`{N}` is the right operand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Template {
    pub op: Op,
    pub text: &'static str,
}

const fn t(op: Op, text: &'static str) -> Template {
    Template { op, text }
}

/// Every step template, grouped by operation.
pub(crate) const STEP_TEMPLATES: [Template; 12] = [
    t(Op::Add, "{P} buys {N} more {X}."),
    t(Op::Add, "{P} finds {N} more {X}."),
    t(Op::Add, "A friend gives {O} {N} more {X}."),
    t(Op::Sub, "{P} gives away {N} {X}."),
    t(Op::Sub, "{P} sells {N} {X}."),
    t(Op::Sub, "{P} loses {N} {X}."),
    t(Op::Mul, "{P} multiplies {Q} {X} by {N}."),
    t(Op::Mul, "{P} ends up with {N} times as many {X} as before."),
    t(
        Op::Mul,
        "{P} buys enough {X} to have {N} times as many as before.",
    ),
    t(
        Op::Div,
        "{P} splits {Q} {X} into {N} equal groups and keeps one group.",
    ),
    t(Op::Div, "{P} keeps only one of every {N} {X}."),
    t(
        Op::Div,
        "{P} packs {Q} {X} into {N} equal boxes and keeps one box.",
    ),
];

/// The templates of `op`.
pub(crate) fn templates_for(op: Op) -> impl Iterator<Item = &'static Template> {
    STEP_TEMPLATES.iter().filter(move |t| t.op == op)
}

/// `template` with everything but `{N}` filled in.
pub(crate) fn fill(template: &str, person: &Person, item: &str) -> String {
    template
        .replace("{S}", person.name)
        .replace("{P}", person.subject)
        .replace("{O}", person.object)
        .replace("{Q}", person.possessive)
        .replace("{X}", item)
}

/// `template` fully rendered with the number `n`.
pub(crate) fn render(template: &str, person: &Person, item: &str, n: i64) -> String {
    fill(template, person, item).replace("{N}", &n.to_string())
}

/// Whether `b` is whitespace between words (ASCII only, so byte positions stay on char
/// boundaries).
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Position after any whitespace at `pos`.
pub(crate) fn skip_space(text: &[u8], mut pos: usize) -> usize {
    while text.get(pos).copied().is_some_and(is_space) {
        pos += 1;
    }
    pos
}

/// Matches the ASCII literal `lit` at `pos`, where each space of `lit` matches one or more
/// whitespace bytes; returns the position after it.
pub(crate) fn match_literal(text: &[u8], mut pos: usize, lit: &str) -> Option<usize> {
    for &b in lit.as_bytes() {
        if b == b' ' {
            if !text.get(pos).copied().is_some_and(is_space) {
                return None;
            }
            pos = skip_space(text, pos);
        } else {
            if text.get(pos) != Some(&b) {
                return None;
            }
            pos += 1;
        }
    }
    Some(pos)
}

/// An unsigned decimal integer at `pos` that fits in `i64`, and the position after it.
pub(crate) fn match_number(text: &[u8], pos: usize) -> Option<(i64, usize)> {
    let digits = text
        .get(pos..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return None;
    }
    let s = std::str::from_utf8(text.get(pos..pos + digits)?).ok()?;
    Some((s.parse().ok()?, pos + digits))
}

/// Matches a filled template (`{N}` still in it) at `pos`: its number and the position after
/// the sentence.
pub(crate) fn match_sentence(text: &[u8], pos: usize, filled: &str) -> Option<(i64, usize)> {
    let (prefix, suffix) = filled.split_once("{N}")?;
    let pos = match_literal(text, pos, prefix)?;
    let (n, pos) = match_number(text, pos)?;
    Some((n, match_literal(text, pos, suffix)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_templates_and_every_template_one_number() {
        for op in Op::ALL {
            assert!(templates_for(op).count() >= 2, "{op}");
        }
        for t in STEP_TEMPLATES
            .iter()
            .map(|t| t.text)
            .chain([START, QUESTION])
        {
            let n = t.matches("{N}").count();
            let expected = usize::from(t != QUESTION);
            assert_eq!(n, expected, "{t}");
        }
    }

    #[test]
    fn filled_step_templates_are_distinct() {
        // For every person and item, no two step templates share a prefix and a suffix, and
        // no template's prefix starts like the question or the opening sentence.
        for person in &PEOPLE {
            for d in Difficulty::ALL {
                for item in items(d) {
                    let filled: Vec<String> = STEP_TEMPLATES
                        .iter()
                        .map(|t| fill(t.text, person, item))
                        .collect();
                    for (i, a) in filled.iter().enumerate() {
                        for b in &filled[i + 1..] {
                            assert_ne!(a, b);
                        }
                        assert!(
                            match_sentence(render(QUESTION, person, item, 0).as_bytes(), 0, a)
                                .is_none()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn names_and_items_do_not_overlap() {
        for a in &PEOPLE {
            for b in &PEOPLE {
                assert!(a == b || !a.name.ends_with(b.name), "{} {}", a.name, b.name);
            }
        }
        let all: Vec<&str> = Difficulty::ALL
            .iter()
            .flat_map(|d| items(*d))
            .copied()
            .collect();
        for (i, a) in all.iter().enumerate() {
            assert!(!all[i + 1..].contains(a), "{a}");
        }
    }

    fn check_literal(text: &str, lit: &str, expected: Option<usize>) {
        assert_eq!(
            match_literal(text.as_bytes(), 0, lit),
            expected,
            "{text:?} {lit:?}"
        );
    }

    #[test]
    fn literal_matching_tolerates_whitespace() {
        check_literal("Mia has", "Mia has", Some(7));
        check_literal("Mia   has", "Mia has", Some(9));
        check_literal("Mia\n\thas", "Mia has", Some(8));
        check_literal("Miahas", "Mia has", None);
        check_literal("Mia ha", "Mia has", None);
        check_literal("", "", Some(0));
    }

    fn check_number(text: &str, expected: Option<(i64, usize)>) {
        assert_eq!(match_number(text.as_bytes(), 0), expected, "{text:?}");
    }

    #[test]
    fn numbers() {
        check_number("42 apples", Some((42, 2)));
        check_number("007", Some((7, 3)));
        check_number("-4", None);
        check_number("x", None);
        check_number("", None);
        check_number("9223372036854775807", Some((i64::MAX, 19)));
        check_number("9223372036854775808", None);
    }
}
