//! Text a user reads and confirms (a listing's title, a merchant's name, what an instruction shows):
//! which characters show as themselves, so that no text can look like something it is not.

/// Whether `c` shows as itself: not a control character, nor a format character (invisible, or
/// reordering the text around it: "Room\u{202e}00.1" must not read as a price it is not), a line or
/// paragraph separator, a private-use character, a variation selector or a filler that renders as
/// blank. (Unassigned code points are not known here.)
pub fn shows_as_itself(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            // Format characters (Unicode category Cf).
            '\u{ad}'
                | '\u{600}'..='\u{605}'
                | '\u{61c}'
                | '\u{6dd}'
                | '\u{70f}'
                | '\u{890}'..='\u{891}'
                | '\u{8e2}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e007f}'
                // Line and paragraph separators (Zl, Zp).
                | '\u{2028}'..='\u{2029}'
                // Private use (Co).
                | '\u{e000}'..='\u{f8ff}'
                | '\u{f0000}'..='\u{10ffff}'
                // Invisible marks and blank fillers: the grapheme joiner, variation selectors,
                // Mongolian selectors, Hangul fillers, the braille blank.
                | '\u{34f}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{e0100}'..='\u{e01ef}'
                | '\u{115f}'..='\u{1160}'
                | '\u{3164}'
                | '\u{ffa0}'
                | '\u{2800}'
        )
}

/// Whether every character of `text` shows as itself.
pub fn is_plain(text: &str) -> bool {
    text.chars().all(shows_as_itself)
}

/// The first `chars` characters of `text`: enough of what a caller sent to recognise it, in a
/// refusal or an audit entry, never a whole oversized body.
pub fn head(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_show_as_themselves_and_hidden_or_reordering_characters_do_not() {
        for shown in ["Zimmer mit Meerblick", "海景房", "غرفة مطلة على البحر", "Café ☕ 🌊", "Pay 1.00 USD"]
        {
            assert!(is_plain(shown), "{shown}");
        }
        for hidden in [
            "a\u{202e}",
            "a\u{200b}",
            "a\u{2066}",
            "a\n",
            "a\u{61c}",
            "a\u{2028}",
            "a\u{ad}",
            "a\u{fe0f}",
            "a\u{e0041}",
            "a\u{3164}",
            "a\u{e000}",
            "a\u{17b4}",
        ] {
            assert!(!is_plain(hidden), "{hidden:?}");
        }
    }
}
