//! Looking services up in the `inventory` registry that the `porthost-services` crate (and any
//! binary that links more services, like the example) fills.

use porthost_services::{Needs, Options, Registration, registered};

use crate::config::Model;
use crate::config::suggest::did_you_mean;

/// Finds a service by name; the error lists what is registered and suggests the closest name.
pub fn find(name: &str) -> Result<&'static Registration, String> {
    if let Some(twice) = porthost_services::duplicate(name) {
        return Err(twice);
    }
    if let Some(found) = porthost_services::find(name) {
        return Ok(found);
    }
    let all = registered();
    let names: Vec<&str> = all.iter().map(|r| r.name).collect();
    let closest = did_you_mean(name, &names)
        .map(|candidate| format!("did you mean {candidate:?}? "))
        .unwrap_or_default();
    Err(format!(
        "unknown service {name:?}; {closest}registered services: {}",
        names.join(", ")
    ))
}

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
    fn suggests_the_closest_name() {
        let err = find("palindrom-v2").unwrap_err();
        assert!(err.contains("did you mean \"palindrome-v2\"?"), "{err}");
        assert!(
            err.contains("palindrome-v1, palindrome-v2, palindrome-v3"),
            "{err}"
        );
        let err = find("zzzzzzzzzz").unwrap_err();
        assert!(!err.contains("did you mean"), "{err}");
    }

    #[test]
    fn palindromes_run_under_every_model() {
        let listing = listing();
        let v1 = listing.iter().find(|l| l.name == "palindrome-v1").unwrap();
        assert_eq!(v1.models, Model::ALL);
    }
}
