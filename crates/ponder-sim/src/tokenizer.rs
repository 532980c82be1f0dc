//! The simulator's tokenizer: a simple, deterministic split of text into token-like pieces.
//!
//! Rules, applied left to right:
//! * a newline is a token of its own (`"\n\n"` is two tokens);
//! * a word is a run of alphabetic characters (any script), an optional `'` suffix included
//!   (`don't` stays one word);
//! * digits come in runs of at most three (`12345` is `123` + `45`);
//! * any other character (punctuation, symbols) is a token of its own;
//! * one space directly before a word, digit run or symbol belongs to that token (`" Step"`);
//!   any further spaces or tabs are tokens of their own.
//!
//! The tokenizer counts prompt and completion tokens and cuts streams into one token per chunk.
//! It never allocates: [`tokens`] borrows the text.

/// The tokens of `text`, in order; their concatenation is `text`.
pub fn tokens(text: &str) -> Tokens<'_> {
    Tokens { text, pos: 0 }
}

/// The number of tokens of `text`.
pub fn count_tokens(text: &str) -> usize {
    tokens(text).count()
}

/// Iterator over the tokens of a text (see [`tokens`]).
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    text: &'a str,
    pos: usize,
}

/// Most digits one token holds.
const MAX_DIGIT_RUN: usize = 3;

impl<'a> Tokens<'a> {
    /// Byte offset of the next token.
    pub fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = &self.text[self.pos..];
        let mut chars = rest.char_indices();
        let (_, first) = chars.next()?;
        let mut start_of_body = 0;
        let mut body_first = first;
        if first == ' ' {
            match chars.next() {
                Some((i, c)) if c != ' ' && c != '\t' && c != '\n' && c != '\r' => {
                    start_of_body = i;
                    body_first = c;
                }
                _ => {
                    self.pos += 1;
                    return Some(&rest[..1]);
                }
            }
        }
        let body = &rest[start_of_body..];
        let body_len = if body_first.is_alphabetic() {
            word_len(body)
        } else if body_first.is_ascii_digit() {
            body.bytes()
                .take(MAX_DIGIT_RUN)
                .take_while(u8::is_ascii_digit)
                .count()
        } else {
            body_first.len_utf8()
        };
        let len = start_of_body + body_len;
        self.pos += len;
        Some(&rest[..len])
    }
}

/// Length in bytes of the word at the start of `text` (which starts with a letter): letters,
/// and an apostrophe when a letter follows it.
fn word_len(text: &str) -> usize {
    let mut end = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_alphabetic() {
            end = i + c.len_utf8();
        } else if c == '\'' && matches!(chars.peek(), Some(&(_, n)) if n.is_alphabetic()) {
            end = i + 1;
        } else {
            break;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[&str]) {
        let got: Vec<&str> = tokens(text).collect();
        assert_eq!(got, expected, "tokens of {text:?}");
        assert_eq!(got.concat(), text);
        assert_eq!(count_tokens(text), expected.len());
    }

    #[test]
    fn splits_words_digits_and_punctuation() {
        check("", &[]);
        check("Hello world", &["Hello", " world"]);
        check(
            "Step 1: 12 + 7 = 19.",
            &["Step", " 1", ":", " 12", " +", " 7", " =", " 19", "."],
        );
        check("12345", &["123", "45"]);
        check(" 1234", &[" 123", "4"]);
        check("a\n\nb", &["a", "\n", "\n", "b"]);
        check("two  spaces", &["two", " ", " spaces"]);
        check("\\boxed{42}", &["\\", "boxed", "{", "42", "}"]);
        check("don't stop'", &["don't", " stop", "'"]);
        check("step ки", &["step", " ки"]);
        check("-5", &["-", "5"]);
        check(" \t", &[" ", "\t"]);
        check("x \n", &["x", " ", "\n"]);
    }
}
