#!/usr/bin/env bash
# Fuzz target speed, before and after (see fuzz/README.md, "Speed").
#
#   scripts/fuzz-speed.sh                      # baseline: merge-base with main
#   scripts/fuzz-speed.sh --baseline 7f9b692 bytes
#   scripts/fuzz-speed.sh --no-callgrind       # exec/s only
#   scripts/fuzz-speed.sh --scale 0.25         # a quarter of the default runs
#
# Builds the targets at the baseline rev (in a temporary git worktree; the
# binaries are cached per rev under fuzz/target/speed/) and in this working
# tree, the way scripts/fuzz.sh does (each with its own fuzz/build-flags),
# then for each target runs both binaries, one after the
# other, on one core, on the same inputs (a copy of this tree's committed
# corpus):
#   exec/s:  every corpus file run R times (libFuzzer -runs=R with files:
#            the same executions for both; R sized for ~20 s per target at
#            the baseline), wall clock less that of a run with R = 1 (one-
#            time setup), in three rounds alternating before and after, the
#            best round of each (other jobs on the machine only ever slow a
#            round down);
#   fuzzing: libFuzzer fuzzing from the corpus, -seed=1 -runs=N with the
#            dictionary and -max_len of fuzz.sh: what a campaign sees, but
#            the inputs differ once the coverage feedback differs;
#   Ir/exec: callgrind instructions inside rust_fuzzer_test_input over the
#            corpus (every file run once, then three times; the difference
#            / (2 x files) leaves out one-time setup such as the kernel
#            corpus lookup).
# Prints a markdown table. Needs nightly, cargo-fuzz and (for Ir) valgrind.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

baseline=""
scale=1
callgrind=1
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --baseline) baseline="$2"; shift 2 ;;
        --scale) scale="$2"; shift 2 ;;
        --no-callgrind) callgrind=0; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(bytes structured lifecycle)
if [[ -z "$baseline" ]]; then
    baseline="$(git merge-base HEAD main 2>/dev/null || echo 7f9b692)"
fi
base_sha="$(git rev-parse --verify "$baseline^{commit}")"
if [[ $callgrind == 1 ]] && ! command -v valgrind >/dev/null; then
    echo "fuzz-speed.sh: valgrind not found (apt-get install -y valgrind, or --no-callgrind)" >&2
    exit 1
fi

# Executions per target over the fixed inputs, and fuzzing runs: about
# 20 s each at the baseline's speed on this machine.
declare -A fixed=([bytes]=600000 [structured]=30000 [lifecycle]=150000)
declare -A runs=([bytes]=1000000 [structured]=100000 [lifecycle]=100000)
rounds=3

out="$root/fuzz/target/speed"
mkdir -p "$out"
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"

# build DIR TARGET_DIR DEST: every target built in DIR with DIR's own
# fuzz/build-flags (a rev from before that file: the flags fuzz.sh had
# then), binaries copied to DEST.
build() {
    local dir="$1" tdir="$2" dest="$3" t flags
    if [[ -f $dir/fuzz/build-flags ]]; then
        mapfile -t flags <"$dir/fuzz/build-flags"
    else
        flags=(--release --debug-assertions --sanitizer none)
    fi
    (cd "$dir" && CARGO_TARGET_DIR="$tdir" nice -n 10 cargo +nightly fuzz build "${flags[@]}" >&2)
    mkdir -p "$dest"
    for t in "${targets[@]}"; do cp "$tdir/$triple/release/$t" "$dest/$t"; done
}

before="$out/bin-$base_sha"
have_all() {
    local t
    for t in "${targets[@]}"; do [[ -x "$1/$t" ]] || return 1; done
}
if ! have_all "$before"; then
    wt="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-speed-base.XXXXXX")"
    git worktree add --detach "$wt" "$base_sha" >&2
    # A target dir of its own: the same package paths under another root
    # would otherwise overwrite this tree's binaries.
    build "$wt" "$out/target-base" "$before"
    git worktree remove --force "$wt"
fi
after="$out/bin-worktree"
build "$root" "${CARGO_TARGET_DIR_FUZZ:-$root/fuzz/target}" "$after"

# The bytes target reads the kernel's answers from the source tree it was
# built in; the baseline's temporary worktree is gone by now, so both read
# this tree's (without them a target fuzzes without that oracle, and is
# faster for it).
export NR_RANGES_KERNEL_CORPUS_DIR="$root/proptests/data"

# The same inputs for both: a copy of this tree's corpus and dictionary.
inputs="$out/inputs"
rm -rf "$inputs"
mkdir -p "$inputs"
cp "$root/fuzz/dict/nr-ranges.dict" "$inputs/dict"
for t in "${targets[@]}"; do cp -r "$root/fuzz/corpus/$t" "$inputs/$t"; done

now() { date +%s%N; }

# exec_rate BIN TARGET R: executions per second, every corpus file R times;
# a run with R = 1 is subtracted, so that one-time setup (the kernel corpus
# load of bytes, about a second) does not count.
exec_rate() {
    local bin="$1" t="$2" r="$3" t0 t1 t2 files log
    files=("$inputs/$t"/*)
    log="$out/fixed-$t-$(basename "$(dirname "$bin")").log"
    t0=$(now)
    nice -n 10 "$bin" -runs=1 "${files[@]}" >"$log" 2>&1
    t1=$(now)
    nice -n 10 "$bin" -runs="$r" "${files[@]}" >"$log" 2>&1
    t2=$(now)
    awk -v n=$(((r - 1) * ${#files[@]})) -v ns=$(((t2 - t1) - (t1 - t0))) 'BEGIN { printf "%d", n / (ns / 1e9) }'
}

# fuzz_rate BIN TARGET N: executions per second, fuzzing N runs from the corpus.
fuzz_rate() {
    local bin="$1" t="$2" n="$3" scratch t0 t1
    scratch="$(mktemp -d "$out/scratch.XXXXXX")"
    t0=$(now)
    nice -n 10 "$bin" "$scratch" "$inputs/$t" -seed=1 -runs="$n" -max_len=4096 \
        -dict="$inputs/dict" -print_final_stats=1 >"$out/fuzz-$t-$(basename "$(dirname "$bin")").log" 2>&1
    t1=$(now)
    rm -rf "$scratch"
    awk -v n="$n" -v ns=$((t1 - t0)) 'BEGIN { printf "%d", n / (ns / 1e9) }'
}

# ir_per_exec BIN TARGET: callgrind Ir per execution of the fixed input set.
ir_per_exec() {
    local bin="$1" t="$2" k ir files
    files=("$inputs/$t"/*)
    for k in 1 3; do
        ir[$k]=$(nice -n 10 valgrind --tool=callgrind --callgrind-out-file=/dev/null --collect-atstart=no \
            --toggle-collect=rust_fuzzer_test_input "$bin" -runs=$k "${files[@]}" 2>&1 |
            sed -n 's/^==[0-9]*== Collected : //p')
    done
    awk -v a="${ir[1]}" -v b="${ir[3]}" -v n="${#files[@]}" 'BEGIN { printf "%d", (b - a) / (2 * n) }'
}

echo
echo "Baseline ${base_sha:0:7} against this working tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ', modified')); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| target | fixed inputs | before exec/s | after exec/s | speed-up | before Ir/exec | after Ir/exec | fuzzing before exec/s | fuzzing after exec/s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for t in "${targets[@]}"; do
    nfiles=$(find "$inputs/$t" -type f | wc -l)
    r=$(awk -v n="${fixed[$t]}" -v s="$scale" -v k="$rounds" -v f="$nfiles" 'BEGIN { r = int(n * s / k / f); print (r < 1 ? 1 : r) }')
    eb=0 ea=0
    for ((i = 0; i < rounds; i++)); do
        x=$(exec_rate "$before/$t" "$t" "$r")
        ((x > eb)) && eb=$x
        x=$(exec_rate "$after/$t" "$t" "$r")
        ((x > ea)) && ea=$x
    done
    ib="-" ia="-"
    if [[ $callgrind == 1 ]]; then
        ib=$(ir_per_exec "$before/$t" "$t")
        ia=$(ir_per_exec "$after/$t" "$t")
    fi
    n=$(awk -v n="${runs[$t]}" -v s="$scale" 'BEGIN { printf "%d", n * s }')
    fb=$(fuzz_rate "$before/$t" "$t" "$n")
    fa=$(fuzz_rate "$after/$t" "$t" "$n")
    su=$(awk -v a="$ea" -v b="$eb" 'BEGIN { printf "%.2fx", a / b }')
    echo "| $t | $nfiles files x $r x $rounds | $eb | $ea | $su | $ib | $ia | $fb | $fa |"
done
