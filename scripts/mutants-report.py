#!/usr/bin/env python3
"""Writes one package's section of docs/mutants.md from cargo-mutants runs
(called by scripts/mutants.sh), or with --check only says whether a run left
a survivor that mutants-equivalent.txt does not list.

A run directory is cargo-mutants' `mutants.out` (caught.txt, missed.txt,
timeout.txt, unviable.txt: one mutant per line as `--list` names it).
mutants-equivalent.txt: `<mutant> # <reason>` per line, `#` comments; the
mutant may be written without its `:line:col`, so that an entry survives
edits elsewhere in the file.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

POS = re.compile(r"^([^:]+):\d+:\d+: ")


def key(name):
    """A mutant's name without its line and column."""
    return POS.sub(r"\1: ", name.strip())


def read(run, what):
    p = Path(run) / f"{what}.txt"
    return [l.strip() for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


OUTCOMES = ("caught", "missed", "timeout", "unviable")


def merged(runs):
    """caught, missed, timeout, unviable over `runs` in order: a later run's
    outcome for a mutant replaces an earlier one's (the suite it ran against
    is the newer)."""
    last = {}
    for run in runs:
        for what in OUTCOMES:
            for m in read(run, what):
                last.pop(m, None)
                last[m] = what
    return tuple([m for m, w in last.items() if w == what] for what in OUTCOMES)


def equivalents(path):
    out = {}
    if not Path(path).exists():
        return out
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, why = line.partition(" # ")
        if not sep or not why.strip():
            sys.exit(f"{path}:{n}: expected `<mutant> # <reason>`")
        out[name.strip()] = why.strip()
    return out


def why_equivalent(eq, mutant):
    """The reason `mutant` is equivalent: its entry with its position, else one without."""
    return eq.get(mutant) or eq.get(key(mutant))


def score(caught, missed, timeout):
    tested = caught + missed + timeout
    return "-" if tested == 0 else f"{100.0 * (caught + timeout) / tested:.1f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--props", required=True, action="append",
                    help="mutants.out of the property-suite run; given more than once (runs over parts of the "
                         "package, one after another), each mutant counts with its outcome in the last run that "
                         "tested it")
    ap.add_argument("--workspace", help="mutants.out of the survivors against the whole workspace")
    ap.add_argument("--props-rerun", help="mutants.out of the open survivors re-run after the properties changed")
    ap.add_argument("--list", help="`cargo mutants --list` of the code as it is now: outcomes of mutants not in it "
                                   "(code deleted or moved since their run) are dropped")
    ap.add_argument("--equivalent", required=True)
    ap.add_argument("--package", default="validator")
    ap.add_argument("--cases", default="2048")
    ap.add_argument("--out")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--note", help="one paragraph on how this run was made, if not by one scripts/mutants.sh")
    ap.add_argument("--open-regexes", action="store_true",
                    help="print one anchored regex per survivor not listed as equivalent, and stop")
    ap.add_argument("--partial", type=int, metavar="TOTAL",
                    help="the run was stopped early: TOTAL mutants exist, the ones tested are a sample")
    a = ap.parse_args()

    eq = equivalents(a.equivalent)
    caught, missed, timeout, unviable = merged(a.props)
    if a.list:
        now = {l.strip() for l in Path(a.list).read_text().splitlines() if l.strip()}
        caught, missed, timeout, unviable = ([m for m in x if m in now] for x in (caught, missed, timeout, unviable))
    rerun_caught = set(read(a.props_rerun, "caught")) | set(read(a.props_rerun, "timeout")) if a.props_rerun else set()
    open_ = [m for m in missed if not why_equivalent(eq, m) and m not in rerun_caught]
    if a.open_regexes:
        for m in open_:
            print("^" + re.escape(m) + "$")
        return
    if a.check:
        for m in missed:
            why = why_equivalent(eq, m)
            print(f"mutants: survived: {m}" + (f" (equivalent: {why})" if why else ""))
        print(f"mutants: {len(caught)} caught, {len(missed)} missed ({len(open_)} not listed as equivalent), "
              f"{len(timeout)} timeouts, {len(unviable)} unviable")
        sys.exit(1 if open_ else 0)

    # A timeout there may be the build's (the workspace is large): not counted as caught.
    ws_caught = set(read(a.workspace, "caught")) if a.workspace else set()
    ws_timeout = set(read(a.workspace, "timeout")) if a.workspace else set()
    ws_missed = [m for m in missed if m not in ws_caught]
    # Without a workspace run every survivor was equivalent: none can be caught.
    ws_ran = a.workspace is not None or not [m for m in missed if not why_equivalent(eq, m)]
    version = subprocess.run(["cargo", "mutants", "--version"], capture_output=True, text=True).stdout.strip()
    s = []
    w = s.append
    w(f"<!-- begin {a.package} -->")
    w(f"## {a.package}\n")
    w(f"{version}; the property suite at `NR_RANGES_PROPTEST_CASES={a.cases}`. Score = (caught + timeouts) /")
    w("(caught + missed + timeouts); unviable mutants (that do not build) are not counted.\n")
    if a.note:
        w(a.note + "\n")
    if a.partial:
        done = len(caught) + len(missed) + len(timeout) + len(unviable)
        w(f"**Partial run**: {done} of the package's {a.partial} mutants were tested; the score is theirs.\n")
    w("| tests | mutants | caught | missed | timeouts | unviable | score |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    total = len(caught) + len(missed) + len(timeout) + len(unviable)
    first = " (first run)" if a.props_rerun else ""
    w(f"| the property suite alone (`--test-package nr-ranges-proptests`){first} | {total} | {len(caught)} | "
      f"{len(missed)} | {len(timeout)} | {len(unviable)} | {score(len(caught), len(missed), len(timeout))} |")
    rerun = set(read(a.props_rerun, "caught")) | set(read(a.props_rerun, "timeout")) if a.props_rerun else set()
    if a.props_rerun:
        rc, rm = len(caught) + len(rerun & set(missed)), len([m for m in missed if m not in rerun])
        w(f"| the property suite alone, its open survivors re-run after the properties were strengthened | {total} | "
          f"{rc} | {rm} | {len(timeout)} | {len(unviable)} | {score(rc, rm, len(timeout))} |")
    if ws_ran:
        wc = len(caught) + len(timeout) + len(ws_caught)
        when = " (with the first run's tests)" if a.props_rerun else ""
        w(f"| the whole workspace{when} (the survivors not listed as equivalent re-run with `--test-workspace true`) | {total} | "
          f"{wc - len(timeout)} | {len(ws_missed)} | {len(timeout)} | {len(unviable)} | "
          f"{score(wc - len(timeout), len(ws_missed), len(timeout))} |")
    elif a.props_rerun or open_:
        w("| the whole workspace | | | | | | not measured: the survivors were not run against the whole workspace |")
    w("")
    n_eq = sum(1 for m in missed if why_equivalent(eq, m))
    w(f"Survivors of the property suite: {len(missed)}, of which {n_eq} are listed as equivalent in "
      f"`mutants-equivalent.txt`, {len(rerun_caught & set(missed))} were killed by strengthened properties and "
      f"{len(open_)} are open. Leaving the equivalent mutants out, the property suite's score is "
      f"{score(len(caught) + len(rerun_caught & set(missed)), len(open_), len(timeout))}.\n")
    if missed:
        w("| mutant | whole workspace | status |")
        w("| --- | --- | --- |")
        for m in missed:
            if why_equivalent(eq, m):
                ws = "survives (equivalent)"
            else:
                ws = "not run" if not a.workspace else (
                    "caught" if m in ws_caught else "timed out (not measured)" if m in ws_timeout else "survives")
            why = why_equivalent(eq, m)
            if why:
                status = f"equivalent: {why}"
            elif m in rerun:
                status = "killed: caught by the strengthened properties"
            else:
                status = "**open**"
            cell = m.replace("|", "\\|")
            w(f"| `{cell}` | {ws} | {status.replace('|', chr(92) + '|')} |")
        w("")
    if timeout:
        w("Timeouts (counted as caught: the mutant made a test loop or run past its budget):\n")
        for m in timeout:
            w(f"- `{m}`")
        w("")
    w(f"<!-- end {a.package} -->")
    section = "\n".join(s)

    out = Path(a.out)
    head = ("# Mutation score\n\nGenerated by `scripts/mutants.sh` (`--package kmod-shim` for kmod-shim): do not edit "
            "by hand. cargo-mutants mutates the package's code one mutant at a time and runs the property suite "
            "(the RFC's claims) against each; the survivors not listed as equivalent are then run against every test of "
            "the workspace. "
            "Survivors that no test can kill are listed, one line of reason each, in `mutants-equivalent.txt`. "
            "CI (`scripts/test.sh`) runs the mutants of the lines the last commit touched "
            "(`scripts/mutants.sh --in-diff HEAD~1`) and fails on a survivor not listed there.\n")
    text = out.read_text() if out.exists() else head
    pat = re.compile(rf"<!-- begin {re.escape(a.package)} -->.*?<!-- end {re.escape(a.package)} -->", re.S)
    text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
    out.write_text(text)
    print(f"mutants: wrote {out}: {len(missed)} survivors, {len(open_)} not listed as equivalent")


if __name__ == "__main__":
    main()
