//! The kernel patch series (`kernel-patches/`) against the source it was
//! written for, Debian's `linux-source-7.2` 7.2.13-1: every patch applied in
//! order to that tree's files, and that tree's own `scripts/checkpatch.pl
//! --strict` run on each patch (`kernel-lab check-patches`, run by CI).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::debian::{debian_mirror, PrivateApt};
use crate::host::{ensure_host_tools, io_err, progress, run_bounded, tempdir, LabError};

/// The source package the series is written against.
pub const SOURCE_PKG: &str = "linux-source-7.2";
/// Its version (the kernel the lab runs, 7.2.13).
pub const SOURCE_VERSION: &str = "7.2.13-1";
/// The tarball inside the package, under `usr/src/`.
const TARBALL: &str = "linux-source-7.2.tar.xz";
/// The top directory inside the tarball.
const TOP: &str = "linux-source-7.2";

/// The checkpatch message types the series may raise, and why none of them
/// is a fault of a patch.
pub const CHECKPATCH_IGNORE: &[(&str, &str)] = &[
    (
        "UNKNOWN_COMMIT_ID",
        "Debian's source tarball carries no git history, so the Fixes: ids (checked against torvalds/linux) \
         cannot be looked up in it",
    ),
    (
        "FILE_PATH_CHANGES",
        "raised for every new file; the new selftest sits in tools/testing/selftests/vfio/, which the VFIO \
         entry of MAINTAINERS already covers",
    ),
];

/// The files checkpatch reads from the tree besides the patch, and the
/// top-level entries by which it recognises a kernel tree
/// (`top_of_kernel_tree()`).
const CHECKPATCH_FILES: &[&str] = &[
    "scripts/checkpatch.pl",
    "scripts/spelling.txt",
    "scripts/const_structs.checkpatch",
    "COPYING",
    "CREDITS",
    "Kbuild",
    "MAINTAINERS",
    "Makefile",
    "README",
];
const TREE_DIRS: &[&str] = &["Documentation", "arch", "include", "drivers", "fs", "init", "ipc", "kernel", "lib"];

/// Whether a patch applies on top of the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// `git apply` took it.
    Applies,
    /// `git apply` refused it.
    DoesNotApply,
    /// Not tried: an earlier patch did not apply, so its base is missing.
    NotTried,
}

impl std::fmt::Display for Apply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Apply::Applies => "applies",
            Apply::DoesNotApply => "DOES NOT APPLY",
            Apply::NotTried => "not tried (an earlier patch did not apply)",
        })
    }
}

/// What one patch gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchResult {
    /// The patch file's name.
    pub patch: String,
    /// Whether `git apply` took it on top of the earlier ones.
    pub apply: Apply,
    /// checkpatch's `total:` line (or why there is none).
    pub checkpatch: String,
    /// Whether checkpatch found nothing (0 errors, warnings and checks).
    pub clean: bool,
}

/// The patches of `dir` in series order (the cover letter left out).
pub fn series(dir: &Path) -> Result<Vec<PathBuf>, LabError> {
    // Absolute, since git and checkpatch run inside the extracted tree.
    let dir = fs::canonicalize(dir).map_err(io_err(format!("find {}", dir.display())))?;
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(io_err(format!("read {}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("0000-")))
        .collect();
    out.sort();
    Ok(out)
}

/// The files the patches change that exist before them (new files are
/// created by `git apply`, so they are not in the tarball).
pub fn touched_existing(patches: &[String]) -> Vec<String> {
    let mut created = Vec::new();
    let mut touched = Vec::new();
    for text in patches {
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("diff --git a/") {
                current = rest.split_once(" b/").map(|(a, _)| a.to_string());
                if let Some(f) = &current {
                    if !touched.contains(f) {
                        touched.push(f.clone());
                    }
                }
            } else if line.starts_with("new file mode") {
                if let Some(f) = &current {
                    created.push(f.clone());
                }
            }
        }
    }
    touched.retain(|f| !created.contains(f));
    touched
}

/// checkpatch's summary, `total: E errors, W warnings, C checks, ...`, as
/// (errors, warnings, checks).
pub fn parse_total(out: &str) -> Option<(u32, u32, u32)> {
    let line = out.lines().find(|l| l.starts_with("total: "))?;
    let mut n = line.split([' ', ',']).filter_map(|w| w.parse::<u32>().ok());
    Some((n.next()?, n.next()?, n.next()?))
}

/// The source tarball, cached under `root/linux-source/<version>/`, else
/// downloaded with the lab's private apt (nothing is installed).
pub fn fetch_source(root: &Path) -> Result<PathBuf, LabError> {
    let dir = root.join("linux-source").join(SOURCE_VERSION);
    let tarball = dir.join(TARBALL);
    if tarball.is_file() {
        progress(format!("using {SOURCE_PKG} {SOURCE_VERSION} from {}", dir.display()));
        return Ok(tarball);
    }
    let mirror = debian_mirror()?;
    let work = tempdir(&root.join("tmp"), "apt")?;
    let apt = PrivateApt::new(&work.0, &mirror, &["sid".to_string()])?;
    progress(format!("fetching the sid package index from {mirror} (private apt, nothing is installed)"));
    apt.update()?;
    progress(format!("downloading {SOURCE_PKG} {SOURCE_VERSION}"));
    let debs = apt.download(&[format!("{SOURCE_PKG}={SOURCE_VERSION}")])?;
    let [deb] = &debs[..] else {
        return Err(LabError::BadPackage(format!("apt-get download left {} .deb files for {SOURCE_PKG}", debs.len())));
    };
    let stage = tempdir(&work.0, "extract")?;
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(deb).arg(&stage.0);
    run_bounded(c, &format!("dpkg-deb -x {}", deb.display()), 600, &work.0.join("extract.log"))?;
    let inner = stage.0.join("usr/src").join(TARBALL);
    if !inner.is_file() {
        return Err(LabError::BadPackage(format!("{SOURCE_PKG} {SOURCE_VERSION} has no usr/src/{TARBALL}")));
    }
    fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    fs::rename(&inner, &tarball).map_err(io_err(format!("publish {}", tarball.display())))?;
    Ok(tarball)
}

/// Applies the series of `dir` in order to the files of the 7.2.13 source
/// it touches and runs checkpatch on each patch.
pub fn check(root: &Path, dir: &Path) -> Result<Vec<PatchResult>, LabError> {
    let patches = series(dir)?;
    if patches.is_empty() {
        return Err(LabError::BadPackage(format!("no *.patch in {}", dir.display())));
    }
    let texts = patches
        .iter()
        .map(|p| fs::read_to_string(p).map_err(io_err(format!("read {}", p.display()))))
        .collect::<Result<Vec<_>, _>>()?;
    let tree = tempdir(&root.join("tmp"), "patches")?;
    // tar -J needs xz; the lab's host tools include it.
    ensure_host_tools(&tree.0)?;
    let tarball = fetch_source(root)?;
    let mut members: Vec<String> = CHECKPATCH_FILES.iter().map(|f| f.to_string()).collect();
    members.extend(touched_existing(&texts));
    progress(format!("extracting {} files of {TARBALL}", members.len()));
    let mut c = Command::new("tar");
    c.arg("-xJf").arg(&tarball).arg("-C").arg(&tree.0).arg("--strip-components=1");
    c.args(members.iter().map(|m| format!("{TOP}/{m}")));
    run_bounded(c, &format!("tar -xJf {TARBALL}"), 600, &tree.0.join("tar.log"))?;
    for d in TREE_DIRS {
        fs::create_dir_all(tree.0.join(d)).map_err(io_err(format!("create {d}")))?;
    }
    let ignore: Vec<&str> = CHECKPATCH_IGNORE.iter().map(|(t, _)| *t).collect();
    let mut results = Vec::new();
    let mut applied_so_far = true;
    for p in &patches {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let apply = if !applied_so_far {
            Apply::NotTried
        } else if Command::new("git")
            .arg("apply")
            .arg(p)
            .current_dir(&tree.0)
            .status()
            .map_err(|e| LabError::Command { what: "git apply".into(), detail: e.to_string() })?
            .success()
        {
            Apply::Applies
        } else {
            Apply::DoesNotApply
        };
        applied_so_far = apply == Apply::Applies;
        let out = Command::new("perl")
            .arg("scripts/checkpatch.pl")
            .args(["--strict", "--no-color", "--ignore", &ignore.join(",")])
            .arg(p)
            .current_dir(&tree.0)
            .output()
            .map_err(|e| LabError::Command { what: "perl scripts/checkpatch.pl".into(), detail: e.to_string() })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let total = parse_total(&text);
        let clean = out.status.success() && total == Some((0, 0, 0));
        let summary = text.lines().find(|l| l.starts_with("total: ")).unwrap_or("(no total line)").to_string();
        if !clean {
            eprintln!("{name}:\n{text}{}", String::from_utf8_lossy(&out.stderr));
        }
        results.push(PatchResult { patch: name, apply, checkpatch: summary, clean });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_not_extracted() {
        let a = "diff --git a/drivers/x.c b/drivers/x.c\nindex 1..2\n".to_string();
        let b = "diff --git a/tools/t.c b/tools/t.c\nnew file mode 100644\ndiff --git a/drivers/x.c b/drivers/x.c\n"
            .to_string();
        assert_eq!(touched_existing(&[a, b]), vec!["drivers/x.c".to_string()]);
    }

    #[test]
    fn checkpatch_total_is_read() {
        let out = "foo\ntotal: 0 errors, 1 warnings, 2 checks, 33 lines checked\n";
        assert_eq!(parse_total(out), Some((0, 1, 2)));
        assert_eq!(parse_total("no summary"), None);
    }

    #[test]
    fn the_committed_series_is_found_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-patches");
        let s = series(&dir).unwrap();
        assert!(s.len() >= 4);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(s.iter().all(|p| !p.to_string_lossy().contains("0000-")));
    }
}
