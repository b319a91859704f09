#!/usr/bin/env python3
"""Writes docs/coverage.md from llvm-cov exports (called by scripts/coverage.sh).

Inputs: the property suite's lcov and JSON exports (lines, branches and the
functions' line spans), optionally the fuzz corpora's lcov exports (a second
column), and docs/coverage-explained.toml: why each uncovered line is
uncovered, keyed by file and line span or by file and function, as data.

Every uncovered line of a file below the threshold is listed with its
explanation; a line that none explains is listed as UNEXPLAINED and makes
the script exit 1 with --check.
"""

import argparse
import json
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

CRATES = ["validator", "kmod-shim", "uapi"]


def rel(root, filename):
    """The path relative to the workspace, or None for files outside the crates."""
    try:
        p = Path(filename).resolve().relative_to(root)
    except ValueError:
        return None
    return str(p) if p.parts and p.parts[0] in CRATES and "src" in p.parts else None


def read_lcov(root, path):
    """{file: {line: count}} and {file: (branches, covered)} from an lcov file."""
    lines, branches = defaultdict(dict), defaultdict(lambda: [0, 0])
    cur = None
    for raw in Path(path).read_text().splitlines():
        if raw.startswith("SF:"):
            cur = rel(root, raw[3:])
        elif cur is None:
            continue
        elif raw.startswith("DA:"):
            ln, count = raw[3:].split(",")[:2]
            ln, count = int(ln), int(count)
            lines[cur][ln] = max(lines[cur].get(ln, 0), count)
        elif raw.startswith("BRDA:"):
            taken = raw.rsplit(",", 1)[1]
            branches[cur][0] += 1
            branches[cur][1] += taken not in ("-", "0")
    return lines, branches


def demangle(names):
    """Rust symbol names (v0 or legacy) as paths, by binutils' c++filt, with
    crate hashes, `<T as Trait>` and closure suffixes dropped, so that a
    closure's lines count as its function's: `validator::Device::with_bar`."""
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    clean = []
    for n in out.splitlines():
        n = re.sub(r"\[[0-9a-f]+\]", "", n)
        n = re.sub(r"::\{[a-z-]+#\d+\}", "", n)
        n = re.sub(r"<([^<>]*?) as [^<>]*>", r"\1", n)
        clean.append(n.replace("<", "").replace(">", "").replace("nr_ranges_", ""))
    return clean


def function_spans(root, json_path):
    """[(file, first line, last line, demangled name)] of every function."""
    data = json.loads(Path(json_path).read_text())["data"][0]
    spans = []
    funcs = data.get("functions", [])
    for f, name in zip(funcs, demangle([f["name"] for f in funcs])):
        files = f["filenames"]
        by_file = defaultdict(list)
        for r in f["regions"]:
            # [line start, col start, line end, col end, count, file id, expanded file id, kind]
            if r[5] < len(files):
                by_file[files[r[5]]].append((r[0], r[2]))
        for fname, rs in by_file.items():
            rp = rel(root, fname)
            if rp:
                spans.append((rp, min(a for a, _ in rs), max(b for _, b in rs), name))
    return spans


def runs(lines):
    """Consecutive line numbers as (first, last) spans."""
    out = []
    for ln in sorted(lines):
        if out and ln == out[-1][1] + 1:
            out[-1][1] = ln
        else:
            out.append([ln, ln])
    return [tuple(x) for x in out]


def parse_span(text):
    a, _, b = str(text).partition("-")
    return int(a), int(b or a)


class Explanations:
    def __init__(self, path, spans):
        doc = tomllib.loads(Path(path).read_text()) if path and Path(path).exists() else {}
        self.rows = doc.get("uncovered", [])
        self.used = set()
        for i, row in enumerate(self.rows):
            if "why" not in row or "file" not in row or ("lines" in row) == ("function" in row):
                sys.exit(f"{path}: row {i + 1} needs file, why, and exactly one of lines or function")
        self.spans = spans

    def why(self, file, line):
        for i, row in enumerate(self.rows):
            if row["file"] != file:
                continue
            if "lines" in row:
                a, b = parse_span(row["lines"])
                if a <= line <= b:
                    self.used.add(i)
                    return row["why"]
            else:
                for f, a, b, name in self.spans:
                    if f == file and a <= line <= b and (name == row["function"] or name.endswith("::" + row["function"])):
                        self.used.add(i)
                        return row["why"]
        return None

    def stale(self):
        return [r for i, r in enumerate(self.rows) if i not in self.used]


def pct(covered, total):
    return 100.0 if total == 0 else 100.0 * covered / total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--lcov", required=True, help="the property suite's lcov export")
    ap.add_argument("--json", required=True, help="the property suite's JSON export")
    ap.add_argument("--fuzz-lcov", nargs="*", default=[], help="one lcov export per fuzz target")
    ap.add_argument("--explained", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", type=float, default=95.0)
    ap.add_argument("--branch", action="store_true", help="the exports carry branch counts")
    ap.add_argument("--command", default="scripts/coverage.sh")
    ap.add_argument("--check", action="store_true", help="exit 1 if an uncovered line is unexplained")
    a = ap.parse_args()
    root = Path(a.root).resolve()

    lines, branches = read_lcov(root, a.lcov)
    fuzz = defaultdict(dict)
    for p in a.fuzz_lcov:
        fl, _ = read_lcov(root, p)
        for f, m in fl.items():
            for ln, c in m.items():
                fuzz[f][ln] = max(fuzz[f].get(ln, 0), c)
    expl = Explanations(a.explained, function_spans(root, a.json))

    out = []
    w = out.append
    w("# Coverage\n")
    w(f"Generated by `{a.command}`: do not edit by hand. Line coverage of `validator`, `kmod-shim` and `uapi`")
    w("from the property suite alone (`cargo llvm-cov -p nr-ranges-proptests`: the properties under")
    w("`proptests/tests/`, nothing of the crates' own unit tests)" + (", with branch coverage (nightly `--branch`)" if a.branch else ""))
    if a.fuzz_lcov:
        w("and, as a second column, from replaying the committed fuzz corpora (`fuzz/corpus/*`, `cargo fuzz coverage`).")
    else:
        w("(the fuzz-corpus column was not measured in this run: `--fuzz` adds it).")
    w(f"The goal is {a.threshold:.0f}% of lines of validator and kmod-shim from the properties alone; files below it")
    w("are marked ⚠. Every uncovered line is listed below with the reason from `docs/coverage-explained.toml`.\n")

    unexplained = 0
    details = []
    for crate in CRATES:
        files = sorted(f for f in lines if f.startswith(crate + "/"))
        tl = tc = tb = tbc = tf = tfc = 0
        rows = []
        for f in files:
            m = lines[f]
            n, c = len(m), sum(1 for v in m.values() if v > 0)
            b, bc = branches[f]
            fm = fuzz.get(f, {})
            fn_, fc = len(fm), sum(1 for v in fm.values() if v > 0)
            tl, tc, tb, tbc, tf, tfc = tl + n, tc + c, tb + b, tbc + bc, tf + fn_, tfc + fc
            rows.append((f, n, c, b, bc, fn_, fc))
            miss = [ln for ln, v in m.items() if v == 0]
            if miss:
                details.append((f, n, c, miss))
        head = "| file | lines | covered | % |"
        sep = "| --- | ---: | ---: | ---: |"
        if a.branch:
            head += " branches | covered | % |"
            sep += " ---: | ---: | ---: |"
        if a.fuzz_lcov:
            head += " fuzz: lines | covered | % |"
            sep += " ---: | ---: | ---: |"
        w(f"## {crate}\n")
        w(head)
        w(sep)

        def row(name, n, c, b, bc, fn_, fc):
            s = f"| {name} | {n} | {c} | {pct(c, n):.1f} |"
            if a.branch:
                s += f" {b} | {bc} | {pct(bc, b):.1f} |" if b else " 0 | 0 | - |"
            if a.fuzz_lcov:
                s += f" {fn_} | {fc} | {pct(fc, fn_):.1f} |" if fn_ else " - | - | - |"
            return s

        for r in rows:
            mark = " ⚠" if pct(r[2], r[1]) < a.threshold else ""
            w(row(f"`{r[0].split('/', 1)[1]}`{mark}", *r[1:]))
        w(row(f"**{crate}**", tl, tc, tb, tbc, tf, tfc))
        w("")

    w("## Uncovered lines, explained\n")
    if not details:
        w("Every line is covered.\n")
    for f, n, c, miss in details:
        w(f"### `{f}` ({c} of {n} lines, {pct(c, n):.1f}%)\n")
        w("| lines | why |")
        w("| --- | --- |")
        # One row per reason, its lines as spans, in the order they first appear.
        by_reason = {}
        for ln in sorted(miss):
            y = expl.why(f, ln)
            if y is None:
                unexplained += 1
                y = "UNEXPLAINED"
            by_reason.setdefault(y, []).append(ln)
        for y, lns in by_reason.items():
            spans = ", ".join(str(x) if x == z else f"{x}-{z}" for x, z in runs(lns))
            w(f"| {spans} | {y} |")
        w("")
    stale = expl.stale()
    if stale:
        w("Explanations that no uncovered line uses any more (remove them from the file):\n")
        for r in stale:
            w(f"- `{r['file']}` {r.get('lines') or r.get('function')}: {r['why']}")
        w("")
    Path(a.out).write_text("\n".join(out))
    print(f"coverage: wrote {a.out}; {unexplained} uncovered lines unexplained, {len(stale)} stale explanations")
    if a.check and unexplained:
        sys.exit(1)


if __name__ == "__main__":
    main()
