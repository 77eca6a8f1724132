//! Text from untrusted sources (a policy's reasons and log lines, trap
//! messages, names from a Canary) made safe to put in an event, a log line or
//! a terminal: one line, no control characters, nothing that reorders or
//! hides what is displayed.
//!
//! Line breaks and tabs become spaces. Every other control character (C0,
//! DEL, C1; so ESC, and with it every ANSI CSI and OSC sequence) and every
//! Unicode format character (bidi embeddings, overrides, isolates and marks,
//! zero-width characters, tag characters, ...) is written as a visible escape
//! such as `\u{1b}`, so a reader sees that it was there without the terminal
//! acting on it. Pure: no allocation beyond the result.

/// `s` as one line free of control and format characters, at most
/// `max_bytes` long, cut at a character boundary (never inside an escape).
pub fn one_line(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    write_one_line(s, max_bytes, &mut out);
    out
}

/// As [`one_line`], with `marker` appended when the text had to be cut.
pub fn one_line_marked(s: &str, max_bytes: usize, marker: &str) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes) + marker.len());
    if !write_one_line(s, max_bytes, &mut out) {
        out.push_str(marker);
    }
    out
}

/// Appends the cleaned text to `out`; false when it was cut.
fn write_one_line(s: &str, max_bytes: usize, out: &mut String) -> bool {
    // Plain printable ASCII needs no work but the cut.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        if s.len() <= max_bytes {
            out.push_str(s);
            return true;
        }
        // All ASCII: every index is a character boundary.
        out.push_str(&s[..max_bytes]);
        return false;
    }
    let start = out.len();
    for c in s.chars() {
        let mut utf8 = [0u8; 4];
        let escaped;
        let piece: &str = if is_line_break(c) {
            " "
        } else if c.is_control() || is_format(c) {
            escaped = format!("\\u{{{:x}}}", u32::from(c));
            &escaped
        } else {
            c.encode_utf8(&mut utf8)
        };
        if out.len() - start + piece.len() > max_bytes {
            return false;
        }
        out.push_str(piece);
    }
    true
}

/// Characters that end or split a line, shown as a space.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\t' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Unicode format characters (general category Cf, Unicode 15.1): invisible,
/// and some of them reorder the text around them.
fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_kept() {
        assert_eq!(
            one_line("success rate 69.17% < 99%", 1024),
            "success rate 69.17% < 99%"
        );
        assert_eq!(one_line("héllo wörld ✓ 日本", 100), "héllo wörld ✓ 日本");
    }

    #[test]
    fn line_breaks_and_tabs_become_spaces() {
        assert_eq!(
            one_line("a\nb\r\nc\td\u{2028}e\u{85}f", 100),
            "a b  c d e f"
        );
    }

    #[test]
    fn terminal_sequences_are_neutralised() {
        // Clear screen (CSI), then an OSC 8 hyperlink whose text hides its target.
        let hostile = "\u{1b}[2J\u{1b}]8;;https://evil.example\u{7}click\u{1b}]8;;\u{1b}\\";
        let clean = one_line(hostile, 1024);
        assert_eq!(
            clean,
            "\\u{1b}[2J\\u{1b}]8;;https://evil.example\\u{7}click\\u{1b}]8;;\\u{1b}\\"
        );
        assert!(!clean.chars().any(char::is_control), "{clean:?}");
        // C1 CSI (U+009B) is a control too, as are NUL and DEL.
        assert_eq!(
            one_line("\u{9b}31m\0\u{7f}", 100),
            "\\u{9b}31m\\u{0}\\u{7f}"
        );
    }

    #[test]
    fn bidi_and_invisible_characters_are_made_visible() {
        // "Trojan source": an override that makes `exe.txt` read as `txt.exe`.
        assert_eq!(one_line("file\u{202e}txt.exe", 100), "file\\u{202e}txt.exe");
        for c in [
            '\u{202a}',
            '\u{202d}',
            '\u{2066}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{61c}',
            '\u{200b}',
            '\u{feff}',
            '\u{e0041}',
        ] {
            let clean = one_line(&format!("a{c}b"), 100);
            assert_eq!(clean, format!("a\\u{{{:x}}}b", u32::from(c)));
        }
    }

    #[test]
    fn cut_at_a_character_boundary_and_never_inside_an_escape() {
        assert_eq!(one_line("abcdef", 4), "abcd");
        // 'é' is two bytes: it does not fit in the fifth byte.
        assert_eq!(one_line("abcdé", 5), "abcd");
        // The escape is six bytes: all or nothing.
        assert_eq!(one_line("ab\u{1b}cd", 7), "ab");
        assert_eq!(one_line("ab\u{1b}cd", 8), "ab\\u{1b}");
        assert_eq!(
            one_line_marked("abcdef", 4, " [truncated]"),
            "abcd [truncated]"
        );
        assert_eq!(one_line_marked("abcd", 4, " [truncated]"), "abcd");
        assert_eq!(one_line("", 0), "");
    }

    proptest! {
        #[test]
        fn any_text_comes_out_one_line_clean_and_bounded(s in any::<String>(), max in 0usize..200) {
            let clean = one_line(&s, max);
            prop_assert!(clean.len() <= max);
            prop_assert!(!clean.chars().any(|c| c.is_control() || is_format(c) || is_line_break(c)));
            // Text that needed nothing is kept whole, when it fits.
            if s.len() <= max && !s.chars().any(|c| c.is_control() || is_format(c) || is_line_break(c)) {
                prop_assert_eq!(clean, s);
            }
        }
    }
}
