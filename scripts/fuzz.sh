#!/usr/bin/env bash
# Fuzz campaign driver for nr-ranges (see fuzz/README.md).
#
#   scripts/fuzz.sh                 # every target, 600 s each
#   scripts/fuzz.sh --smoke         # every target, 30 s each (CI)
#   scripts/fuzz.sh --time 3600 bytes structured
#   scripts/fuzz.sh --jobs 8 --time 86400 structured   # libFuzzer -fork=8
#   scripts/fuzz.sh --cmin          # minimize the committed corpora in place
#   scripts/fuzz.sh --cpu 3600 lifecycle   # a campaign of one CPU-hour: runs of at
#                                   # most 600 s wall (and no longer than the CPU
#                                   # time still owed), one after another on the
#                                   # same scratch corpus, until the target's own
#                                   # CPU time (user + sys) reaches 3600 s
#
# Installs cargo-fuzz (cargo install cargo-fuzz --locked) if missing. Needs
# the nightly toolchain (rustup toolchain install nightly). Crashes land in
# fuzz/artifacts/<target>/; new corpus entries in fuzz/corpus/<target>/ are
# NOT committed (only the seeds are); run with FUZZ_SCRATCH_CORPUS=0 to let
# libFuzzer grow the committed corpus instead.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

time_per_target=600
jobs=1
cmin=0
cpu_budget=0
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) time_per_target=30; shift ;;
        --time) time_per_target="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        --cmin) cmin=1; shift ;;
        --cpu) cpu_budget="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(bytes structured lifecycle)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# fuzz/target is cargo-fuzz's own default and ignored by fuzz/.gitignore.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-$root/fuzz/target}"
# fuzz/build-flags: safe Rust only, so no sanitizer (ASan would cost 3x
# exec/s for nothing); comparison tracing only where fuzz/Cargo.toml turns it
# on (the decoder and the validator).
mapfile -t fuzz_flags <"$root/fuzz/build-flags"
# What every fuzzing run gives libFuzzer (the kernel oracle's input bound in
# proptests/src/fuzz.rs is this -max_len).
run_flags=(-dict="$root/fuzz/dict/nr-ranges.dict" -max_len=4096 -print_final_stats=1)
for t in "${targets[@]}"; do cargo +nightly fuzz build "${fuzz_flags[@]}" "$t"; done

# One line per target from libFuzzer's final stats and its last status line
# (the full output stays in the log): runs, exec/s, corpus entries, coverage.
summary() {
    local t="$1" log="$2" verdict="$3" runs rate cov corp
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
    corp=$(grep -oE 'corp: [0-9]+' "$log" | tail -n 1)
    printf 'fuzz: %-10s %s runs, %s exec/s, %s entries, %s (%s s): %s; log %s\n' \
        "$t" "${runs:-?}" "${rate:-?}" "${corp#corp: }" "${cov:-cov: ?}" "$time_per_target" "$verdict" "$log"
}

# Corpus minimization: what `cargo fuzz cmin` runs (libFuzzer -merge=1 into
# an empty directory), except that the hand-written seeds of bytes (every
# name that is not lab-NNN, kernel-NNN or a SHA-1, libFuzzer's name for
# what a campaign found) are kept whatever they add, and the kept files get
# their names back.
if [[ $cmin == 1 ]]; then
    bin_dir="$CARGO_TARGET_DIR/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
    for t in "${targets[@]}"; do
        dir="$root/fuzz/corpus/$t"
        tmp="$(mktemp -d)"
        mkdir "$tmp/keep" "$tmp/rest" "$tmp/out"
        for f in "$dir"/*; do
            n="$(basename "$f")"
            if [[ $t == bytes && ! $n =~ ^((lab|kernel)-[0-9]+|[0-9a-f]{40})$ ]]; then
                cp "$f" "$tmp/keep/$n"
            else
                cp "$f" "$tmp/rest/$n"
            fi
        done
        cp "$tmp/keep/"* "$tmp/out/" 2>/dev/null || true
        "$bin_dir/$t" -merge=1 "$tmp/out" "$tmp/rest" >"$tmp/merge.log" 2>&1
        before=$(find "$dir" -type f | wc -l)
        # Back to the original names: every kept file is a copy of one.
        declare -A name_of=()
        for f in "$tmp/keep"/* "$tmp/rest"/*; do
            [[ -e $f ]] && name_of[$(sha1sum <"$f" | cut -d' ' -f1)]="$(basename "$f")"
        done
        rm -rf "$dir"
        mkdir -p "$dir"
        for f in "$tmp/out"/*; do
            h=$(sha1sum <"$f" | cut -d' ' -f1)
            cp "$f" "$dir/${name_of[$h]:-$h}"
        done
        unset name_of
        echo "fuzz: cmin $t: $before -> $(find "$dir" -type f | wc -l) files ($(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$tmp/merge.log" | tail -n 1))"
        rm -rf "$tmp"
    done
    exit 0
fi

# A campaign measured in CPU time, not wall time: on a shared machine a
# -max_total_time of one hour can be a few CPU-minutes. The built binary runs
# directly (not through cargo) so that bash's `time` counts the target alone.
if ((cpu_budget > 0)); then
    bin_dir="$CARGO_TARGET_DIR/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
    status=0
    for t in "${targets[@]}"; do
        work="$CARGO_TARGET_DIR/corpus/$t"
        mkdir -p "$work" "$root/fuzz/artifacts/$t"
        log="$CARGO_TARGET_DIR/campaign-$t.log"
        : >"$log"
        cpu=0 runs=0 chunk=0 verdict=ok
        start=$(date +%s)
        while ((cpu < cpu_budget)); do
            chunk=$((chunk + 1))
            # A run's CPU time is at most its wall time: a run no longer than
            # the CPU time still owed cannot overshoot the budget.
            left=$((cpu_budget - cpu))
            ((left < 600)) || left=600
            TIMEFORMAT='%U %S'
            rc=0
            { time "$bin_dir/$t" "$work" "$root/fuzz/corpus/$t" -max_total_time="$left" "${run_flags[@]}" \
                -artifact_prefix="$root/fuzz/artifacts/$t/" >"$log.chunk" 2>&1 || rc=$?; } 2>"$log.time"
            cat "$log.chunk" >>"$log"
            read -r u s <"$log.time"
            cpu=$(python3 -c "print(round($cpu + $u + $s))")
            n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log.chunk" | tail -n 1)
            runs=$((runs + ${n:-0}))
            echo "campaign: $t chunk $chunk: ${n:-?} runs, CPU $u + $s s, total $cpu / $cpu_budget s" >>"$log"
            if ((rc != 0)); then verdict="FOUND A CRASH (fuzz/artifacts/$t/)"; status=1; break; fi
        done
        cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
        corp=$(find "$work" -type f | wc -l)
        printf 'campaign: %-10s %s runs in %s CPU-s (%s chunks, %s s wall), %s exec per CPU-second, scratch corpus %s entries, %s: %s; log %s\n' \
            "$t" "$runs" "$cpu" "$chunk" "$(($(date +%s) - start))" "$((runs / (cpu > 0 ? cpu : 1)))" \
            "$corp" "${cov:-cov: ?}" "$verdict" "$log" | tee -a "$log"
        rm -f "$log.chunk" "$log.time"
    done
    exit $status
fi

status=0
for t in "${targets[@]}"; do
    seeds="fuzz/corpus/$t"
    if [[ "${FUZZ_SCRATCH_CORPUS:-1}" == 1 ]]; then
        # Grow a scratch corpus; read the committed seeds as a second dir.
        work="$CARGO_TARGET_DIR/corpus/$t"
        mkdir -p "$work"
        dirs=("$work" "$root/$seeds")
    else
        dirs=("$root/$seeds")
    fi
    extra=()
    if [[ "$jobs" -gt 1 ]]; then
        extra+=("-fork=$jobs" "-ignore_crashes=0")
    fi
    log="$CARGO_TARGET_DIR/fuzz-$t.log"
    if cargo +nightly fuzz run "${fuzz_flags[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$time_per_target" "${run_flags[@]}" "${extra[@]}" >"$log" 2>&1; then
        summary "$t" "$log" ok
    else
        summary "$t" "$log" "FOUND A CRASH (fuzz/artifacts/$t/)"
        tail -n 40 "$log" >&2
        status=1
    fi
done
exit $status
