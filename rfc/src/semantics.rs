//! The semantics table, generated from the validator: every check of
//! [`Reject::ALL`], in precedence order, with its errno, its kernel function
//! and the policy that makes it. The descriptions are the variants' own doc
//! comments, as the validator's check table gives them ([`Reject::doc`]), so
//! nothing in the table is copied by hand.

use std::collections::BTreeMap;

use validator::Reject;

/// One row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// Precedence: 1 is checked first.
    pub precedence: usize,
    /// The `Reject` variant.
    pub check: &'static str,
    /// errno name.
    pub errno: &'static str,
    /// errno number.
    pub errno_code: i32,
    /// Kernel function (or "nr-ranges Strict policy").
    pub function: &'static str,
    /// `Linux + Strict` or `Strict only`.
    pub policy: &'static str,
    /// Whether the check is per range (reports the first failing range).
    pub per_range: bool,
    /// The variant's doc comment, one line.
    pub description: String,
}

/// The table's rows, from `Reject::ALL`.
pub fn rows() -> Vec<Row> {
    Reject::ALL
        .iter()
        .enumerate()
        .map(|(i, r)| Row {
            precedence: i + 1,
            check: r.name(),
            errno: r.errno().name(),
            errno_code: r.errno().code(),
            function: r.kernel_function(),
            policy: if r.is_strict_only() { "Strict only" } else { "Linux + Strict" },
            per_range: r.range_index().is_some(),
            description: r.doc().to_owned(),
        })
        .collect()
}

/// `Policy::Strict`'s rules: (title, rationale), from the validator's
/// [`validator::STRICT_RULES`] (which also generates the enum's docs).
pub fn strict() -> Vec<(String, String)> {
    validator::STRICT_RULES.iter().map(|r| (r.title.to_string(), r.why.to_string())).collect()
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The markdown table. `lab` optionally maps a check name to how many of
/// the kernel lab's cases it decided.
pub fn markdown(lab: Option<&BTreeMap<String, u64>>) -> String {
    let mut s = String::new();
    s.push_str("| # | check (`validator::Reject`) | errno | kernel function | policy | per range |");
    s.push_str(if lab.is_some() { " lab cases |" } else { "" });
    s.push_str(" what it refuses |\n|---|---|---|---|---|---|");
    s.push_str(if lab.is_some() { "---:|" } else { "" });
    s.push_str("---|\n");
    for r in rows() {
        s.push_str(&format!(
            "| {} | `{}` | {} ({}) | `{}` | {} | {} |",
            r.precedence,
            r.check,
            r.errno,
            r.errno_code,
            cell(r.function),
            r.policy,
            if r.per_range { "yes" } else { "" }
        ));
        if let Some(l) = lab {
            let n = if r.policy == "Strict only" {
                "n/a".to_string()
            } else {
                l.get(r.check).copied().unwrap_or(0).to_string()
            };
            s.push_str(&format!(" {n} |"));
        }
        s.push_str(&format!(" {} |\n", cell(&r.description)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_check_in_order_with_docs() {
        let rows = rows();
        assert_eq!(rows.len(), Reject::ALL.len());
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.precedence, i + 1);
            assert_eq!(r.check, Reject::ALL[i].name());
            assert!(!r.description.is_empty(), "{} has no doc comment", r.check);
        }
        let strict: Vec<&str> = rows.iter().filter(|r| r.policy == "Strict only").map(|r| r.check).collect();
        assert_eq!(strict, ["StrictOpenFlags", "StrictTooManyRanges", "StrictArgszShort", "StrictRangeOutsideBar"]);
        let e2big = rows.iter().find(|r| r.check == "StrictTooManyRanges").unwrap();
        assert_eq!((e2big.errno, e2big.errno_code), ("E2BIG", 7));
    }

    #[test]
    fn markdown_has_one_line_per_check() {
        assert!(markdown(None).lines().count() == Reject::ALL.len() + 2);
    }

    #[test]
    fn strict_rules_name_their_checks() {
        let r = strict();
        assert_eq!(r.len(), 4);
        assert!(r[0].0.contains("argsz"), "{:?}", r[0]);
        for rule in validator::STRICT_RULES {
            assert!(rule.check.is_strict_only(), "{rule:?}");
            assert!(rule.why.contains(&format!("Reject::{}", rule.check.name())), "{rule:?}");
        }
    }
}
