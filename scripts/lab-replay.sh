#!/usr/bin/env bash
# The fuzz corpora through the real kernel in one boot: fuzz/corpus/bytes as
# raw ioctl arguments and fuzz/corpus/structured as the scenarios' requests
# (converted by nr-ranges-proptests's example structured-requests), each input
# on every lab device (ivshmem-plain, pci-testdev, edu), every answer diffed
# with validator::validate(.., Policy::Linux) (kernel-lab/README.md, "Replay").
#
#   scripts/lab-replay.sh [--kernel K] [--report FILE] [bytes:DIR | structured:DIR | DIR]...
#
# Further directories are replayed in the same boot: `bytes:DIR` or a bare DIR
# as bytes inputs, `structured:DIR` converted first. lifecycle inputs are
# operation sequences against the model, not requests: `lifecycle:DIR` is an
# error. Defaults: --kernel 7.2, --report target/lab-replay.json. Exit status
# is kernel-lab's: 0 = no disagreement, 1 = disagreements, 2 = could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

kernel=7.2
report=target/lab-replay.json
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel=$2; shift 2 ;;
        --report) report=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) extra+=("$1"); shift ;;
    esac
done

target_dir=${CARGO_TARGET_DIR:-target}
work=$target_dir/lab-replay
mkdir -p "$work" "$(dirname "$report")"

paths=(fuzz/corpus/bytes)
formats=(--format bytes)
structured=(fuzz/corpus/structured)
for a in "${extra[@]}"; do
    case "$a" in
        structured:*) structured+=("${a#structured:}") ;;
        bytes:*) paths+=("${a#bytes:}"); formats+=(--format bytes) ;;
        lifecycle:*)
            echo "lab-replay: ${a#lifecycle:}: lifecycle inputs are operation sequences against the model, not requests; nothing to send to the kernel" >&2
            exit 2 ;;
        *:*) echo "lab-replay: unknown input kind in $a (bytes:, structured:)" >&2; exit 2 ;;
        *) paths+=("$a"); formats+=(--format bytes) ;;
    esac
done

echo "== structured inputs -> request files ($work/structured)"
cargo run --release --locked -q -p nr-ranges-proptests --features lab-seeds --example structured-requests -- \
    "$work/structured" "${structured[@]}"
paths+=("$work/structured")
formats+=(--format requests)

echo "== kernel-lab replay on $kernel"
exec cargo run --release --locked -p kernel-lab -- replay --kernel "$kernel" --report "$report" \
    "${formats[@]}" "${paths[@]}"
