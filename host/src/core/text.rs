//! Text that reaches Events, logs and terminals. Reasons and names can come
//! from a policy (untrusted code) or a user's spec; either may carry line
//! breaks, terminal escape sequences or bidi overrides that would forge log
//! lines or hide text. Everything shown is made one safe line first.

/// `s` as one line of at most `max_bytes` bytes: line breaks and tabs become
/// spaces; control characters (C0, DEL, C1, so ESC and with it every CSI/OSC
/// sequence), bidi embeddings, overrides and isolates, and other invisible
/// format characters are dropped; runs of spaces collapse. A cut text ends in `…`.
pub fn one_line(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    let mut space = false;
    for c in s.chars() {
        let c = match c {
            '\n' | '\r' | '\t' | '\u{0B}' | '\u{0C}' | '\u{2028}' | '\u{2029}' | '\u{85}' => ' ',
            c if is_hidden(c) => continue,
            c => c,
        };
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if out.len() + c.len_utf8() > max_bytes {
            while out.len() + '…'.len_utf8() > max_bytes {
                out.pop();
            }
            out.push('…');
            return out;
        }
        out.push(c);
    }
    if space {
        out.pop();
    }
    out
}

/// Characters that change how a terminal or a renderer shows the text around
/// them rather than showing themselves.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{061C}'              // Arabic letter mark
            | '\u{FEFF}'              // byte order mark
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
        )
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn breaks_escapes_and_bidi_controls_do_not_survive() {
        let hostile = "ok\nHalt podinfo.test advancement forged\r\n\u{1b}[2J\u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{7} \u{202E}evil\u{2066} \0nul\u{9b}31m";
        let line = one_line(hostile, 1024);
        assert_eq!(
            line,
            "ok Halt podinfo.test advancement forged [2J]8;;http://xlink]8;; evil nul31m"
        );
        assert!(!line.chars().any(|c| c.is_control()));
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let line = one_line(&"é".repeat(100), 11);
        assert!(line.len() <= 11, "{line}");
        assert!(line.ends_with('…'));
        assert_eq!(one_line("  plain text  ", 64), "plain text");
    }
}
