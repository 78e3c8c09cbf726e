//! The word list used when the options give none: Ukrainian and English words, letters only.

pub const BUILT_IN: &[&str] = &[
    // Ukrainian
    "паляниця",
    "вишиванка",
    "соняшник",
    "калина",
    "бандура",
    "кобзар",
    "їжак",
    "ґанок",
    "ґудзик",
    "євшан",
    "яблуко",
    "черешня",
    "веселка",
    "сопілка",
    "вареники",
    "писанка",
    "лелека",
    "барвінок",
    "верба",
    "соловей",
    "зірка",
    "річка",
    "книжка",
    "ліхтар",
    "джміль",
    "їжачок",
    "подорож",
    "шоколад",
    "хмаринка",
    "мрія",
    // English
    "apple",
    "bridge",
    "castle",
    "dragon",
    "engine",
    "forest",
    "garden",
    "harbor",
    "island",
    "jungle",
    "kitchen",
    "lantern",
    "mountain",
    "network",
    "orange",
    "pepper",
    "puzzle",
    "quartz",
    "rocket",
    "silver",
    "thunder",
    "umbrella",
    "violin",
    "whisper",
    "window",
    "yellow",
    "zebra",
    "socket",
    "thread",
    "protocol",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::word_guess::game::Word;
    use std::collections::HashSet;

    #[test]
    fn the_built_in_list_is_long_valid_and_distinct() {
        assert!(BUILT_IN.len() >= 50);
        for word in BUILT_IN {
            Word::new(word).unwrap();
        }
        let distinct: HashSet<_> = BUILT_IN.iter().collect();
        assert_eq!(distinct.len(), BUILT_IN.len());
        let english = BUILT_IN.iter().filter(|w| w.is_ascii()).count();
        assert!(english >= 25 && BUILT_IN.len() - english >= 25);
    }
}
