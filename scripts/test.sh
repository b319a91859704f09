#!/usr/bin/env bash
# Every test nr-ranges has, from a fresh clone on a bare machine: installs what
# it needs (C compiler for the header and benchmark baselines; the kernel lab
# installs QEMU and fetches its kernel itself), then runs formatting, lints,
# the workspace's tests, rustdoc, a smoke run of each benchmark and fuzz
# target, a quick RFC and a reduced kernel lab (Debian's 7.2.13, and the lab
# kernel built from its source with the fix series).
#
# NR_RANGES_SKIP_LAB=1 skips the kernel lab (it needs Debian's mirrors);
# NR_RANGES_SKIP_FUZZ=1 skips the fuzz smoke run (it needs the nightly toolchain);
# NR_RANGES_SKIP_MUTANTS=1 skips the mutants of the last commit's lines.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if ! command -v cc >/dev/null 2>&1; then
    step "installing a C compiler"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev
fi

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked

step "docs (rustdoc warnings are errors: broken links, missing docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "benchmark smoke run (one iteration each; real numbers: cargo bench -p nr-ranges-bench)"
cargo bench -p nr-ranges-bench --locked -- --test

step "kmod-shim benchmark smoke run"
cargo bench -p nr-ranges-kmod-shim --locked -- --test

if [ "${NR_RANGES_SKIP_FUZZ:-0}" != 1 ]; then
    step "fuzz crate check (nightly; it is outside the workspace)"
    (cd fuzz && cargo +nightly check --locked --bins)
    step "fuzz smoke run: each target for 30 s (campaigns: fuzz/README.md)"
    scripts/fuzz.sh --smoke
fi

step "RFC evidence, quick and offline (writes target/rfc-quick/, not rfc/evidence/)"
cargo run --release --locked -p rfc -- --quick --offline

if [ "${NR_RANGES_SKIP_LAB:-0}" != 1 ]; then
    step "kernel patches: kernel-patches/ applies to Debian's 7.2.13 source and is checkpatch --strict clean"
    cargo run --release --locked -p kernel-lab -- check-patches
    step "kernel lab, reduced: the real kernel against the validator"
    cargo run --release --locked -p kernel-lab -- --kernel 7.2 --cases 20000 --seed 1 --report target/kernel-lab.json
    step "kernel lab, replay: the committed bytes and structured fuzz corpora through the real kernel on every lab device, diffed with the validator"
    scripts/lab-replay.sh --kernel 7.2 --report target/lab-replay.json
    step "kernel lab, importer: the kernel's own sg table on the IOVA path against kmod-shim"
    cargo run --release --locked -p kernel-lab -- importer --kernel 7.2 --topology rc-epyc-iova --report target/importer.json
    step "kernel lab, framebuffer: the 4K framebuffer at 90 % (placed by gpu_buddy) as one dma-buf on Debian's 7.2.13, IOVA path: the map fails as kmod-shim predicts (defect 1); the workaround reads intact"
    cargo run --release --locked -p kernel-lab -- framebuffer --kernel 7.2 --only 8GiB-4k-900-0/4K --topology rc-epyc-iova-large --report target/framebuffer-7.2.json
    step "lab kernel with the fix series (Debian's 7.2.13 source + kernel-patches/, cached by key; a cold build is one kernel build), reduced matrix"
    cargo run --release --locked -p kernel-lab -- matrix --quick --kernels lab-patched --out target/lab-matrix
fi

# Last, so that nothing after it builds a tree a mutant was applied to (in CI
# cargo-mutants mutates the clone in place and restores it after each mutant).
if [ "${NR_RANGES_SKIP_MUTANTS:-0}" != 1 ]; then
    step "mutants of the lines the last commit changed in validator and kmod-shim, against the property suite (scripts/mutants.sh --in-diff; skipped above NR_RANGES_MUTANTS_MAX=8)"
    scripts/mutants.sh --in-diff HEAD~1
fi
