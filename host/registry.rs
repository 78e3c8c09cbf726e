//! Looking services up in the `inventory` registry that the `porthost-services` crate (and any
//! binary that links more services, like the example) fills.

use porthost_services::{Registration, registered};

use crate::suggest::did_you_mean;

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
}
