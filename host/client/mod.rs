//! The bundled clients: the lecture's palindrome client and the word-guess game client.

pub mod palindrome;
pub mod word_guess;

/// How much of a line messages about it show: a refused or unexpected line may be megabytes.
const EXCERPT_CHARS: usize = 80;

/// A line for a message, quoted and cut to its first 80 characters: `"abc"`, or
/// `"abcd…" (1000 characters)` when it is longer.
pub(crate) fn excerpt(text: &str) -> String {
    let total = text.chars().count();
    if total <= EXCERPT_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(EXCERPT_CHARS).collect();
    format!("{:?} ({total} characters)", head + "…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_is_at_most_80_characters_of_the_line() {
        assert_eq!(excerpt("abba"), "\"abba\"");
        let exact = "я".repeat(80);
        assert_eq!(excerpt(&exact), format!("{exact:?}"));
        let long = format!("{}tail", "x".repeat(80));
        assert_eq!(
            excerpt(&long),
            format!("\"{}…\" (84 characters)", "x".repeat(80))
        );
        assert_eq!(
            excerpt("a\"\u{1b}"),
            "\"a\\\"\\u{1b}\"",
            "escaped for a terminal"
        );
    }
}
