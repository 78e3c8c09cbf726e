//! `porthost services`: what the registry holds, with the models each service can run
//! under. Here rather than in the library's registry, which the config reads: the listing
//! needs the config's models, and the registry must not.

use porthost::config::Model;
use porthost_services::{Needs, Options, registered};

/// A registered service as `porthost services` shows it.
#[derive(Debug)]
pub struct Listing {
    pub name: &'static str,
    pub summary: &'static str,
    pub options: &'static [porthost_services::OptionDoc],
    /// The models it can run under with its default options.
    pub models: Vec<Model>,
}

/// Every registered service, sorted by name.
pub fn listing() -> Vec<Listing> {
    registered()
        .into_iter()
        .map(|r| {
            // A service that needs an option to be built at all (`exec`'s command) is listed
            // with what any service needs.
            let needs =
                (r.build)(&Options::default()).map_or_else(|_| Needs::default(), |s| s.needs());
            let models = Model::ALL
                .into_iter()
                .filter(|m| m.check(r.name, needs, Model::default_workers()).is_ok())
                .collect();
            Listing {
                name: r.name,
                summary: r.summary,
                options: r.options,
                models,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palindromes_run_under_every_model() {
        let listing = listing();
        let v1 = listing.iter().find(|l| l.name == "palindrome-v1").unwrap();
        assert_eq!(v1.models, Model::ALL);
    }
}
