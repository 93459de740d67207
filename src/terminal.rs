//! Text that is about to reach a terminal: file names, server answers and
//! journal rows shown to a person, with every character that could drive
//! the terminal or hide what is shown written as a visible escape.
//!
//! A file name is anybody's to choose. Printed raw, `ESC ]0;…BEL` sets the
//! window title, `ESC [2J` clears the screen, a newline forges a line of
//! output, and a right-to-left override (U+202E) makes `exe.txt` read as
//! `txt.exe`. So C0 and C1 controls, DEL and the bidirectional formatting
//! characters are shown as `\x1b` or `\u{202e}`; everything else, including
//! other non-ASCII text, is left as it is.
//!
//! This is only for human output. JSON carries the exact strings (its
//! encoder escapes controls itself), and nothing here changes what is
//! stored or synced.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for a character that must not reach a terminal as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Arabic letter mark, left-to-right and right-to-left marks.
            '\u{061c}' | '\u{200e}' | '\u{200f}'
            // Embeddings, pop and overrides.
            | '\u{202a}'..='\u{202e}'
            // Isolates and their pop.
            | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every unsafe character escaped: `\x1b` for C0 controls and
/// DEL, `\u{9b}` for C1 controls and the bidirectional formatting
/// characters. Borrowed when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_except(text, |_| false)
}

/// Like [`escape`], but leaves line breaks alone: for a whole rendered
/// block of output whose lines are ours. A line break inside a value must
/// have been escaped with [`escape`] when the value was put in.
pub fn escape_keeping_lines(text: &str) -> Cow<'_, str> {
    escape_except(text, |c| c == '\n')
}

fn escape_except(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_unsafe(c) && !keep(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_characters_become_visible_escapes() {
        assert_eq!(
            escape("evil\x1b]0;PWNED\x07\x1b[2Jname"),
            "evil\\x1b]0;PWNED\\x07\\x1b[2Jname"
        );
        assert_eq!(escape("a\nb\rc\td\x7f"), "a\\x0ab\\x0dc\\x09d\\x7f");
        assert_eq!(escape("csi\u{9b}2J"), "csi\\u{9b}2J");
        assert_eq!(escape("report\u{202e}fdp.exe"), "report\\u{202e}fdp.exe");
        assert_eq!(escape("x\u{2066}y\u{2069}z"), "x\\u{2066}y\\u{2069}z");
        assert_eq!(
            escape("l\u{200e}r\u{200f}a\u{61c}"),
            "l\\u{200e}r\\u{200f}a\\u{61c}"
        );
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for text in ["docs/page.md", "Ünïcödé 日本語 😀", "back\\slash", ""] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn a_rendered_block_keeps_its_own_line_breaks() {
        assert_eq!(
            escape_keeping_lines("one\x1b[2J\ntwo\r\n"),
            "one\\x1b[2J\ntwo\\x0d\n"
        );
    }
}
