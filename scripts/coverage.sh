#!/usr/bin/env bash
# Line and branch coverage of validator, kmod-shim and uapi from the property
# suite alone (the RFC's claims), written to docs/coverage.md as a table per
# crate and file, with every uncovered line of a file below 95% explained from
# docs/coverage-explained.toml (data keyed by file and line span or function;
# scripts/coverage-table.py merges it in).
#
#   scripts/coverage.sh           # the property suite (about 10 min cold, 2 min warm)
#   scripts/coverage.sh --fuzz    # plus the fuzz corpora as a second column (nightly)
#   scripts/coverage.sh --check   # exit 1 if an uncovered line has no explanation
#
# Installs cargo-llvm-cov (crates.io) and the llvm-tools component if missing.
# Branch coverage needs the nightly toolchain (`--branch` is unstable); without
# nightly the table has lines only. NR_RANGES_PROPTEST_CASES=N sets the cases.
# Heavy: runs under nice -n 10.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

fuzz=0
check=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --fuzz) fuzz=1; shift ;;
        --check) check=(--check); shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "coverage.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if ! cargo llvm-cov --version >/dev/null 2>&1; then
    echo "coverage.sh: installing cargo-llvm-cov" >&2
    cargo install --locked cargo-llvm-cov
fi
toolchain=()
branch=()
if cargo +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
    branch=(--branch)
fi
for t in "${toolchain[@]:-}"; do
    tc="${t#+}"
    rustup component add llvm-tools-preview ${tc:+--toolchain "$tc"} >/dev/null 2>&1 ||
        echo "coverage.sh: could not add llvm-tools-preview${tc:+ to $tc}" >&2
done
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }

out="$root/target/coverage"
mkdir -p "$out"
# Only the three crates' sources are reported; everything else (tests,
# oracles, dependencies) is filtered out.
ignore='(^|/)(rng|cli|kernel-lab|rfc|bench|proptests|fuzz|examples)/|/tests/|/benches/|\.cargo/registry|/rustc/'

echo "== coverage: the property suite (cargo llvm-cov -p nr-ranges-proptests)" >&2
nice -n 10 cargo "${toolchain[@]}" llvm-cov clean --workspace >/dev/null 2>&1 || true
nice -n 10 cargo "${toolchain[@]}" llvm-cov "${branch[@]}" --no-report --locked -p nr-ranges-proptests
cargo "${toolchain[@]}" llvm-cov report "${branch[@]}" --ignore-filename-regex "$ignore" --lcov --output-path "$out/props.lcov"
cargo "${toolchain[@]}" llvm-cov report "${branch[@]}" --ignore-filename-regex "$ignore" --json --output-path "$out/props.json"

fuzz_lcov=()
if [[ $fuzz == 1 ]]; then
    fuzz_lcov=(--fuzz-lcov)
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "coverage.sh: installing cargo-fuzz" >&2
        cargo install cargo-fuzz --locked
    fi
    sysroot="$(rustc +nightly --print sysroot)"
    llvm_bin="$(ls -d "$sysroot"/lib/rustlib/*/bin | head -n 1)"
    triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
    for t in bytes structured lifecycle; do
        echo "== coverage: the fuzz corpus of $t (cargo fuzz coverage)" >&2
        (cd fuzz && nice -n 10 cargo +nightly fuzz coverage --sanitizer none "$t" "corpus/$t")
        "$llvm_bin/llvm-cov" export -format=lcov \
            -instr-profile="fuzz/coverage/$t/coverage.profdata" \
            "fuzz/target/$triple/coverage/$triple/release/$t" \
            -ignore-filename-regex="$ignore" >"$out/fuzz-$t.lcov"
        fuzz_lcov+=("$out/fuzz-$t.lcov")
    done
fi

python3 scripts/coverage-table.py --root "$root" --lcov "$out/props.lcov" --json "$out/props.json" \
    --explained docs/coverage-explained.toml --out docs/coverage.md ${branch:+--branch} \
    "${fuzz_lcov[@]}" "${check[@]}"
