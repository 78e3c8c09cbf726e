//! "Did you mean ...?" for names typed in the config: services and models.

/// The candidate closest to `name`, if it is close enough to be a typo of it.
pub fn did_you_mean<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .min()
        .filter(|(distance, _)| *distance <= name.chars().count().max(3) / 2)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("ї", "ї"), 0);
    }

    #[test]
    fn only_near_names_are_suggested() {
        let names = ["palindrome-v1", "palindrome-v2", "word-guess"];
        assert_eq!(did_you_mean("palindrom-v2", &names), Some("palindrome-v2"));
        assert_eq!(did_you_mean("zzzzzzzzzz", &names), None);
    }
}
