//! The property list, generated from the property-test suite: every
//! `fn prop_*` under `proptests/` with the doc comment that states its claim.

use std::path::{Path, PathBuf};

/// One property.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Property {
    /// `prop_...`.
    pub name: String,
    /// Its doc comment, one line ("" if it has none).
    pub claim: String,
    /// The file, relative to the scanned directory.
    pub file: String,
    /// 1-based line of the `fn`.
    pub line: usize,
}

/// What the scan found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Suite {
    /// `proptests/` does not exist (yet).
    Pending,
    /// The properties, sorted by file and line.
    Found(Vec<Property>),
}

/// The `prop_*` functions of one source text.
pub fn scan_source(src: &str, file: &str) -> Vec<Property> {
    let mut out = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim().to_string());
            continue;
        }
        if t.starts_with("#[") {
            // Attributes between the doc comment and the fn keep the doc.
            continue;
        }
        let after_fn = t.split_once("fn prop_").filter(|(pre, _)| {
            pre.split_whitespace().all(|w| matches!(w, "pub" | "pub(crate)" | "async" | "const" | "unsafe"))
        });
        if let Some((_, rest)) = after_fn {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(Property { name: format!("prop_{name}"), claim: doc.join(" "), file: file.into(), line: i + 1 });
        }
        doc.clear();
    }
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rs_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// Scans `dir` (the workspace's `proptests/`).
pub fn scan(dir: &Path) -> std::io::Result<Suite> {
    if !dir.is_dir() {
        return Ok(Suite::Pending);
    }
    let mut files = Vec::new();
    rs_files(dir, &mut files)?;
    files.sort();
    let mut props = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f)?;
        let rel = f.strip_prefix(dir).unwrap_or(&f).display().to_string();
        props.extend(scan_source(&src, &rel));
    }
    Ok(Suite::Found(props))
}

/// The markdown list.
pub fn markdown(suite: &Suite) -> String {
    match suite {
        Suite::Pending => "Pending: the property suite (`proptests/`) is not in the tree yet; this list is \
                           regenerated from it by `cargo run --release -p rfc` once it lands.\n"
            .to_string(),
        Suite::Found(p) if p.is_empty() => "Pending: `proptests/` exists but defines no `fn prop_*` yet.\n".into(),
        Suite::Found(p) => {
            let mut s =
                format!("{} properties, from `proptests/`:\n\n| property | claim | source |\n|---|---|---|\n", p.len());
            for x in p {
                let claim =
                    if x.claim.is_empty() { "*(no doc comment)*".to_string() } else { x.claim.replace('|', "\\|") };
                s.push_str(&format!("| `{}` | {} | `proptests/{}:{}` |\n", x.name, claim, x.file, x.line));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_props_with_their_docs() {
        let src = "/// Strict never accepts\n/// what Linux rejects.\n#[test]\nfn prop_strict_subset() {}\n\nfn helper() {}\n    fn prop_no_doc(x: u32) {}\n/// stale\nlet y = 1;\nfn prop_after_code() {}\n";
        let p = scan_source(src, "a.rs");
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].name.as_str(), p[0].claim.as_str(), p[0].line),
            ("prop_strict_subset", "Strict never accepts what Linux rejects.", 4)
        );
        assert_eq!(p[1].claim, "");
        assert_eq!(p[2].claim, "");
    }

    #[test]
    fn missing_dir_is_pending() {
        let s = scan(Path::new("/nonexistent/proptests")).unwrap();
        assert_eq!(s, Suite::Pending);
        assert!(markdown(&s).starts_with("Pending"));
    }
}
