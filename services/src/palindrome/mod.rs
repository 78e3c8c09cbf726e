//! The lecture's palindrome servers, three ways. All speak one protocol: for each line the
//! server answers `1\n` when it is a palindrome and `\n` when not (the lecture's one-byte string
//! for True, empty string for False, plus newline); an empty line or EOF ends the session.
//!
//! - [`v1`]: byte level, its own framing over raw reads (the lecture's `recv` / `sendall`).
//! - [`v2`]: file-like objects: a buffered reader and writer (the lecture's `makefile`).
//! - [`v3`]: a handler for the host's line framing (the lecture's `StreamRequestHandler`).

pub mod v1;
pub mod v2;
pub mod v3;

use crate::OptionDoc;

/// `strict`, the option every version has.
pub const STRICT: OptionDoc = OptionDoc {
    name: "strict",
    default: "false",
    meaning: "compare every character exactly, instead of letters and digits ignoring case",
};

/// Reads `strict` (and whatever `more` reads too), reporting every mistake at once.
fn strict_and<T>(
    options: &crate::Options,
    more: impl FnOnce(&mut crate::OptionReader<'_>) -> T,
) -> Result<(bool, T), String> {
    let mut reader = options.reader();
    let strict = reader.bool(STRICT.name, false);
    let more = more(&mut reader);
    reader.finish()?;
    Ok((strict, more))
}

/// The palindrome test. By default it is Unicode-aware and compares letters and digits only,
/// ignoring case, so "А роза упала на лапу Азора" passes; `strict` compares every character.
/// Allocation-free: it walks the text from both ends.
pub fn is_palindrome(text: &str, strict: bool) -> bool {
    if strict {
        return text.chars().eq(text.chars().rev());
    }
    let forward = text
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase);
    let backward = text
        .chars()
        .rev()
        .filter(|c| c.is_alphanumeric())
        .flat_map(|c| c.to_lowercase().rev());
    forward.eq(backward)
}

/// The reply for one line.
pub fn verdict(text: &str, strict: bool) -> &'static [u8] {
    if is_palindrome(text, strict) {
        b"1\n"
    } else {
        b"\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lecture_table() {
        for yes in [
            "А роза упала на лапу Азора",
            "Was it a car or a cat I saw?",
            "abba",
            "12321",
            "Я",
            "",
        ] {
            assert!(is_palindrome(yes, false), "{yes:?} should be a palindrome");
        }
        for no in ["abc", "ab1", "паліндром"] {
            assert!(
                !is_palindrome(no, false),
                "{no:?} should not be a palindrome"
            );
        }
    }

    #[test]
    fn case_folding_is_unicode_aware() {
        assert!(is_palindrome("Їжаїї", false) == is_palindrome("їжаїї", false));
        assert!(is_palindrome("ЇаЇ", false));
        assert!(is_palindrome("Ǆxǆ", false));
    }

    #[test]
    fn strict_compares_every_character() {
        assert!(is_palindrome("abba", true));
        assert!(!is_palindrome("Abba", true));
        assert!(!is_palindrome("Was it a car or a cat I saw?", true));
        assert!(is_palindrome("a b a", true));
    }

    #[test]
    fn verdict_is_the_lecture_reply() {
        assert_eq!(verdict("abba", false), b"1\n");
        assert_eq!(verdict("abc", false), b"\n");
    }
}
