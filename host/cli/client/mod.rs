//! The bundled clients: the lecture's palindrome client, the word-guess game client, and a
//! generic line client for any line service.

pub mod line;
pub mod palindrome;
pub mod typing;
pub mod word_guess;

/// `7004` alone means `127.0.0.1:7004`, so a client of this host's own ports needs no address.
pub fn address(addr: &str) -> String {
    match addr.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => addr.to_owned(),
    }
}

/// How much of a line messages about it show: a refused or unexpected line may be megabytes.
const EXCERPT_CHARS: usize = 80;

/// A line for a message, quoted and cut to its first 80 characters: `"abc"`, or
/// `"abcd…" (1000 characters)` when it is longer.
pub(crate) fn excerpt(text: &str) -> String {
    let total = text.chars().count();
    if total <= EXCERPT_CHARS {
        return quote(text.chars());
    }
    let head = text.chars().take(EXCERPT_CHARS).chain(['…']);
    format!("{} ({total} characters)", quote(head))
}

/// Quotes text for a terminal without Rust's escape syntax, which users do not read: a
/// control character, which would move the cursor or be invisible, is shown as its Unicode
/// picture (`␁`, `␛`, `␡`); everything else as it is.
fn quote(text: impl Iterator<Item = char>) -> String {
    let shown = text.map(|c| match c {
        '\0'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('?'),
        '\u{7f}' => '␡',
        c => c,
    });
    std::iter::once('"').chain(shown).chain(['"']).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_is_on_this_machine() {
        assert_eq!(address("7004"), "127.0.0.1:7004");
        assert_eq!(address("[::1]:7004"), "[::1]:7004");
        assert_eq!(address("example.org:7"), "example.org:7");
    }

    #[test]
    fn an_excerpt_is_at_most_80_characters_of_the_line() {
        assert_eq!(excerpt("abba"), "\"abba\"");
        let exact = "я".repeat(80);
        assert_eq!(excerpt(&exact), format!("\"{exact}\""));
        let long = format!("{}tail", "x".repeat(80));
        assert_eq!(
            excerpt(&long),
            format!("\"{}…\" (84 characters)", "x".repeat(80))
        );
        assert_eq!(
            excerpt("a\"\u{1}\u{2}\u{1b}\u{7f}я"),
            "\"a\"␁␂␛␡я\"",
            "control characters shown, not obeyed, and no Rust escapes"
        );
    }
}
