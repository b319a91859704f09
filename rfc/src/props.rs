//! The property list: the claims table of the property-test suite
//! (`props::claims::CLAIMS`), one row per `fn prop_*`, read as data.

use proptests::claims::{Claim, CLAIMS};

/// The markdown list.
pub fn markdown(claims: &[Claim]) -> String {
    if claims.is_empty() {
        return "Pending: the property suite defines no `fn prop_*` yet.\n".into();
    }
    let mut s = format!(
        "{} properties, from `proptests/` (`props::claims::CLAIMS`):\n\n| property | claim | source |\n|---|---|---|\n",
        claims.len()
    );
    for c in claims {
        s.push_str(&format!("| `{}` | {} | `proptests/{}` |\n", c.name, c.claim.replace('|', "\\|"), c.file));
    }
    s
}

/// The suite's claims.
pub fn suite() -> &'static [Claim] {
    CLAIMS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_claim() {
        let md = markdown(suite());
        assert_eq!(md.lines().filter(|l| l.starts_with("| `prop_")).count(), CLAIMS.len());
        assert!(markdown(&[]).starts_with("Pending"));
    }
}
