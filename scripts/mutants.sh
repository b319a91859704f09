#!/usr/bin/env bash
# Mutation score of validator (and kmod-shim) with cargo-mutants: first
# against the property suite alone (the RFC's claims: the tests of
# nr-ranges-proptests), then the survivors against the whole workspace.
# Writes docs/mutants.md (scores, every survivor and what it is); survivors
# that no test can kill are listed with one line of reason each in
# mutants-equivalent.txt (`<mutant as cargo mutants --list names it> # reason`).
#
#   scripts/mutants.sh                      # validator (149 mutants, about 1-2 h on 2 cores)
#   scripts/mutants.sh --package kmod-shim  # kmod-shim (about 600 mutants: hours)
#   scripts/mutants.sh --package kmod-shim --shuffle   # in random order, so that a run
#                                           # stopped early is a sample (report it with
#                                           # scripts/mutants-report.py --partial)
#   scripts/mutants.sh --in-diff [BASE]     # CI: the mutants of lines changed since BASE
#                                           # (default HEAD~1), property suite alone; fails
#                                           # on a survivor not in mutants-equivalent.txt
#
# Installs cargo-mutants (crates.io) if missing; exits 0 with a message when it
# cannot. One mutant at a time under nice -n 10. The property suite runs with
# NR_RANGES_PROPTEST_CASES (default 2048 here, an eighth of scripts/test.sh's
# 16,384, to keep each mutant's test run to seconds; docs/mutants.md says which).
# NR_RANGES_MUTANTS_MAX (default 8) caps --in-diff: a larger diff is skipped
# with a message, to keep CI within its budget.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

package=validator
mode=full
base=HEAD~1
order=--no-shuffle
while [[ $# -gt 0 ]]; do
    case "$1" in
        --package) package="$2"; shift 2 ;;
        --shuffle) order=--shuffle; shift ;;
        --in-diff) mode=diff; if [[ $# -gt 1 && $2 != --* ]]; then base="$2"; shift; fi; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "mutants.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

install_mutants() {
    cargo mutants --version >/dev/null 2>&1 && return 0
    echo "mutants.sh: installing cargo-mutants" >&2
    cargo install --locked cargo-mutants && return 0
    echo "mutants.sh: cargo-mutants could not be installed; mutation testing skipped" >&2
    return 1
}
export NR_RANGES_PROPTEST_CASES="${NR_RANGES_PROPTEST_CASES:-2048}"
out="$root/target/mutants"
mkdir -p "$out"
common=(-j1 --timeout 300 --build-timeout 900 "$order")
props=(--test-package nr-ranges-proptests)

if [[ $mode == diff ]]; then
    if ! git rev-parse --verify -q "$base" >/dev/null; then
        echo "mutants.sh: no $base to diff against; skipped" >&2
        exit 0
    fi
    git diff "$base" HEAD -- validator/src kmod-shim/src >"$out/diff.patch"
    if [[ ! -s $out/diff.patch ]]; then
        echo "mutants.sh: $base..HEAD changes no line of validator or kmod-shim; nothing to mutate"
        exit 0
    fi
    install_mutants || exit 0
    pkgs=(-p nr-ranges-validator -p nr-ranges-kmod-shim)
    n=$(cargo mutants --list "${pkgs[@]}" --in-diff "$out/diff.patch" 2>/dev/null | grep -c . || true)
    max="${NR_RANGES_MUTANTS_MAX:-8}"
    if ((n == 0)); then
        echo "mutants.sh: the change creates no mutant"
        exit 0
    fi
    if ((n > max)); then
        echo "mutants.sh: $n mutants in the change, more than NR_RANGES_MUTANTS_MAX=$max; skipped (run scripts/mutants.sh --in-diff $base by hand)" >&2
        exit 0
    fi
    # CI works in a throwaway clone whose target/ the test step just built:
    # mutate in place so that each mutant is an incremental build.
    inplace=()
    [[ -n ${CI:-} ]] && inplace=(--in-place --baseline skip)
    rc=0
    nice -n 10 cargo mutants "${pkgs[@]}" "${props[@]}" "${common[@]}" "${inplace[@]}" \
        --in-diff "$out/diff.patch" -o "$out/diff" || rc=$?
    python3 scripts/mutants-report.py --check --equivalent mutants-equivalent.txt \
        --props "$out/diff/mutants.out" || exit 1
    # cargo-mutants exits 2 when a mutant survives, 3 on a timeout: the report
    # above decided whether that survivor is known to be equivalent.
    ((rc == 0 || rc == 2 || rc == 3)) || exit "$rc"
    exit 0
fi

case "$package" in
    validator | kmod-shim) ;;
    *) echo "mutants.sh: --package is validator or kmod-shim" >&2; exit 2 ;;
esac
install_mutants || exit 0
run="$out/$package"
# The test profile's opt-level 3 makes each mutant's rebuild slow; level 1
# builds three times faster and still runs the properties in seconds.
export CARGO_PROFILE_TEST_OPT_LEVEL="${CARGO_PROFILE_TEST_OPT_LEVEL:-1}" CARGO_PROFILE_TEST_DEBUG=0

echo "== mutants: $package against the property suite alone" >&2
nice -n 10 cargo mutants -p "nr-ranges-$package" "${props[@]}" "${common[@]}" -o "$run-props" || true

# The survivors not known to be equivalent again, against every test of the
# workspace (an equivalent mutant computes the same function: no test can
# catch it, so it survives there too and is counted so).
missed="$run-props/mutants.out/missed.txt"
ws=()
mapfile -t res < <(python3 scripts/mutants-report.py --open-regexes --equivalent mutants-equivalent.txt \
    --props "$run-props/mutants.out")
if ((${#res[@]} > 0)); then
    echo "== mutants: the ${#res[@]} open survivors against the whole workspace" >&2
    re_args=()
    for r in "${res[@]}"; do re_args+=(--re "$r"); done
    nice -n 10 cargo mutants -p "nr-ranges-$package" --test-workspace true "${common[@]}" "${re_args[@]}" \
        -o "$run-workspace" || true
    ws=(--workspace "$run-workspace/mutants.out")
fi
python3 scripts/mutants-report.py --package "$package" --equivalent mutants-equivalent.txt \
    --props "$run-props/mutants.out" "${ws[@]}" --cases "$NR_RANGES_PROPTEST_CASES" --out "docs/mutants.md"
