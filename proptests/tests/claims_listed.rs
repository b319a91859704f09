//! Every property under `tests/` has its claim in `props::claims::CLAIMS`,
//! and every row names a property that exists, in the file it says.

use std::collections::BTreeSet;

/// The `fn prop_*` names of the test sources, with their files.
fn properties() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("tests/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let file = format!("tests/{}", path.file_name().expect("file name").to_string_lossy());
        let src = std::fs::read_to_string(&path).expect("readable test source");
        for line in src.lines() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix("fn prop_").or_else(|| t.strip_prefix("pub fn prop_")) {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                found.insert((format!("prop_{name}"), file.clone()));
            }
        }
    }
    found
}

#[test]
fn every_property_has_exactly_one_claim() {
    let props = properties();
    let rows: BTreeSet<(String, String)> =
        props::claims::CLAIMS.iter().map(|c| (c.name.to_string(), c.file.to_string())).collect();
    assert_eq!(rows.len(), props::claims::CLAIMS.len(), "a property is listed twice");
    let missing: Vec<_> = props.difference(&rows).collect();
    let stale: Vec<_> = rows.difference(&props).collect();
    assert!(missing.is_empty() && stale.is_empty(), "no claim for {missing:?}; no property for {stale:?}");
    assert!(props::claims::CLAIMS.iter().all(|c| !c.claim.trim().is_empty()));
}
