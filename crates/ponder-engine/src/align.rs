//! Text-aligned prefix reuse: the cached token path whose rendered text begins a prompt.
//!
//! A generated sequence is cached with the tokens the model wrote, but a client sends the next
//! step as text, and that text need not tokenise back to those tokens: invalid UTF-8 comes back
//! as U+FFFD (bytes `EF BF BD`, where the cache holds, say, the single byte `C3`), and a model
//! may write a number as `" 1"`, `"2"` where the tokeniser writes `" 12"`. Matching tokens, the
//! cached prefix ends there. Matching text, it does not: a cached path is rendered the way the
//! engine renders generated output (token pieces concatenated, decoded by [`take_utf8`]) and
//! compared with the prompt text.

use crate::runner::Runner;
use crate::trie::PrefixTrie;

/// Takes the longest valid UTF-8 prefix of `buf` as text; invalid bytes become U+FFFD, a
/// trailing incomplete character waits for the next token.
pub(crate) fn take_utf8(buf: &mut Vec<u8>) -> String {
    match std::str::from_utf8(buf) {
        Ok(s) => {
            let s = s.to_string();
            buf.clear();
            s
        }
        Err(e) => {
            let valid = e.valid_up_to();
            match e.error_len() {
                None => {
                    let s = String::from_utf8_lossy(&buf[..valid]).into_owned();
                    buf.drain(..valid);
                    s
                }
                Some(bad) => {
                    let mut s = String::from_utf8_lossy(&buf[..valid + bad]).into_owned();
                    buf.drain(..valid + bad);
                    s.push_str(&take_utf8(buf));
                    s
                }
            }
        }
    }
}

/// The bytes each token stands for when a cached path is matched against text.
///
/// An ordinary token stands for the bytes generated output shows for it. A control token
/// (`<|im_start|>`) shows nothing in generated output but stands for its text form in a prompt,
/// where the tokeniser parses special tokens: it matches that text exactly when the tokeniser
/// maps the text back to this one token. A token that stands for no bytes never matches, so a
/// match never runs across something the text cannot show.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenPieces {
    /// Indexed by token id; an empty piece never matches.
    pieces: Vec<Vec<u8>>,
}

impl TokenPieces {
    /// `text_forms[t]` is token `t`'s bytes with control tokens written out
    /// (`Runner::token_bytes(t, true)`).
    pub(crate) fn from_runner(runner: &Runner, text_forms: Vec<Vec<u8>>) -> TokenPieces {
        let pieces = text_forms
            .into_iter()
            .zip(0u32..)
            .map(|(text_form, t)| {
                let shown = runner.token_bytes(t, false);
                if shown == text_form {
                    return shown;
                }
                match std::str::from_utf8(&text_form) {
                    Ok(s) if runner.tokenize(s, true) == [t] => text_form,
                    _ => Vec::new(),
                }
            })
            .collect();
        TokenPieces { pieces }
    }

    fn get(&self, token: u32) -> Option<&[u8]> {
        self.pieces
            .get(token as usize)
            .map(Vec::as_slice)
            .filter(|p| !p.is_empty())
    }

    /// Whether `tokens` render to exactly `text`. Not so when the tokeniser changed the text
    /// (SentencePiece models prefix a space to a fragment) or wrote a token that never matches.
    pub(crate) fn render_exactly(&self, tokens: &[u32], text: &str) -> bool {
        let mut rest = text.as_bytes();
        for &t in tokens {
            match self.get(t) {
                Some(p) if rest.starts_with(p) => rest = &rest[p.len()..],
                _ => return false,
            }
        }
        rest.is_empty()
    }
}

/// Where a walk over a cached path stands in the prompt text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TextCursor {
    /// Bytes of the text matched so far (always at a char boundary).
    at: usize,
    /// An incomplete UTF-8 character the next tokens may complete (at most three bytes).
    pending: [u8; 3],
    n_pending: u8,
}

impl TextCursor {
    /// Renders `piece` after what came before; false when the text does not go on that way.
    fn feed(&mut self, text: &[u8], piece: &[u8]) -> bool {
        let rest = &text[self.at..];
        if self.n_pending == 0 && std::str::from_utf8(piece).is_ok() {
            // Nothing held and whole characters: the piece is its own text.
            if !rest.starts_with(piece) {
                return false;
            }
            self.at += piece.len();
            return true;
        }
        let mut buf = self.pending[..usize::from(self.n_pending)].to_vec();
        buf.extend_from_slice(piece);
        let shown = take_utf8(&mut buf);
        if !rest.starts_with(shown.as_bytes()) || buf.len() > self.pending.len() {
            return false;
        }
        self.at += shown.len();
        self.pending[..buf.len()].copy_from_slice(&buf);
        self.n_pending = buf.len() as u8;
        true
    }
}

/// A cached path whose rendering is a prefix of a prompt's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextMatch {
    /// The path's tokens, held in the KV cache by `seq`.
    pub tokens: Vec<u32>,
    pub seq: crate::trie::SeqId,
    /// Bytes of the text the tokens render to: the prompt goes on at `text[text_len..]`.
    pub text_len: usize,
}

/// The cached path with the most tokens that renders to a prefix of `text`, ending after a
/// token where no incomplete UTF-8 character is pending (so the text it covers ends at a char
/// boundary and no later token can change it). Branches that render alike (two invalid bytes
/// both show as U+FFFD) are all followed; each cached token is looked at at most once.
pub(crate) fn longest_text_match(
    trie: &PrefixTrie,
    pieces: &TokenPieces,
    text: &str,
) -> Option<TextMatch> {
    let bytes = text.as_bytes();
    let found = trie.longest_accepted(TextCursor::default(), |cursor, token| {
        let piece = pieces.get(token)?;
        cursor.feed(bytes, piece).then_some(cursor.n_pending == 0)
    })?;
    Some(TextMatch {
        tokens: found.tokens,
        seq: found.seq,
        text_len: found.state.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AB: u32 = 256;
    /// A control token written as `<s>`.
    const START: u32 = 257;
    /// A token that stands for no bytes.
    const SILENT: u32 = 258;

    /// Bytes 0..=255 are tokens 0..=255; then "ab", "<s>" and a silent token.
    fn pieces() -> TokenPieces {
        let mut p: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        p.push(b"ab".to_vec());
        p.push(b"<s>".to_vec());
        p.push(Vec::new());
        TokenPieces { pieces: p }
    }

    fn bytes(s: &str) -> Vec<u32> {
        s.bytes().map(u32::from).collect()
    }

    /// Inserts `paths` (as sequences 0, 1, …) and matches `text`; returns the matched tokens,
    /// their sequence and the text they cover.
    fn check(paths: &[&[u32]], text: &str, expected: Option<(Vec<u32>, i32, &str)>) {
        let mut trie = PrefixTrie::new();
        for (seq, path) in paths.iter().enumerate() {
            trie.insert(path, seq as i32);
        }
        let got = longest_text_match(&trie, &pieces(), text)
            .map(|m| (m.tokens, m.seq, &text[..m.text_len]));
        assert_eq!(got, expected, "{text:?} against {paths:?}");
    }

    #[test]
    fn utf8_is_held_until_complete() {
        let mut buf = vec![b'a', 0xE2, 0x86];
        assert_eq!(take_utf8(&mut buf), "a");
        buf.push(0x92);
        assert_eq!(take_utf8(&mut buf), "→");
        let mut bad = vec![0xFF, b'b'];
        assert_eq!(take_utf8(&mut bad), "\u{FFFD}b");
        assert!(bad.is_empty());
    }

    #[test]
    fn an_invalid_byte_matches_the_replacement_character() {
        // 0xC3 then 'a': 0xC3 starts a two-byte character that 'a' cannot continue.
        let path = vec![b'x'.into(), 0xC3, b'a'.into(), b'b'.into()];
        check(
            &[&path],
            "x\u{FFFD}abc",
            Some((path.clone(), 0, "x\u{FFFD}ab")),
        );
        // The text tokenised afresh is x EF BF BD a …: no shared tokens past `x`.
        check(
            &[&path],
            "x\u{FFFD}a",
            Some((path[..3].to_vec(), 0, "x\u{FFFD}a")),
        );
    }

    #[test]
    fn an_incomplete_character_is_not_a_boundary() {
        // E2 86 is the start of "→" (E2 86 92): held, so the match ends after "x".
        let path = vec![b'x'.into(), 0xE2, 0x86];
        check(&[&path], "x→", Some((bytes("x"), 0, "x")));
        check(&[&path], "x\u{FFFD}", Some((bytes("x"), 0, "x")));
        // Completed by the next token, the character matches.
        let arrow = vec![b'x'.into(), 0xE2, 0x86, 0x92, b'!'.into()];
        check(&[&arrow], "x→!?", Some((arrow.clone(), 0, "x→!")));
    }

    #[test]
    fn the_longest_of_consistent_branches_wins() {
        // C3 and C4 both show as U+FFFD before 'a'.
        let short = vec![0xC3, b'a'.into()];
        let long = vec![0xC4, b'a'.into(), b'b'.into()];
        let want = Some((long.clone(), 1, "\u{FFFD}ab"));
        check(&[&short, &long], "\u{FFFD}abc", want);
        let want = Some((long.clone(), 0, "\u{FFFD}ab"));
        check(&[&long, &short], "\u{FFFD}abc", want);
        // "ab" as one token or as two: more tokens reused wins.
        let split = bytes("xab");
        check(
            &[&[b'x'.into(), AB], &split],
            "xab!",
            Some((split.clone(), 1, "xab")),
        );
    }

    #[test]
    fn an_inconsistent_path_is_not_matched() {
        check(&[&[0xC3, b'x'.into()]], "\u{FFFD}a", None);
        check(&[&bytes("abc")], "abd", Some((bytes("ab"), 0, "ab")));
        check(&[&bytes("abc")], "xyz", None);
        // A control token matches its text form; a silent token matches nothing.
        let start = vec![START, b'h'.into(), b'i'.into()];
        check(&[&start], "<s>hi", Some((start.clone(), 0, "<s>hi")));
        let silent = vec![b'h'.into(), SILENT, b'i'.into()];
        check(&[&silent], "hi", Some((bytes("h"), 0, "h")));
    }

    #[test]
    fn rendering_exactly() {
        let p = pieces();
        assert!(p.render_exactly(&[START, AB, b'c'.into()], "<s>abc"));
        assert!(p.render_exactly(&[], ""));
        assert!(!p.render_exactly(&bytes(" ab"), "ab"));
        assert!(!p.render_exactly(&bytes("ab"), "abc"));
        assert!(!p.render_exactly(&[b'a'.into(), SILENT], "a"));
    }
}
