#!/bin/bash -eu
# OSS-Fuzz / ClusterFuzzLite build script for nr-ranges' fuzz targets.
# Runs inside gcr.io/oss-fuzz-base/base-builder-rust, whose `cargo` wrapper
# and $RUSTFLAGS add the sanitizer and coverage flags of the build variant;
# $SRC and $OUT come from the builder. Each target ships with its seed
# corpus (<target>_seed_corpus.zip) and the dictionary (<target>.dict).
cd "$SRC/nr-ranges"
targets=(bytes structured lifecycle)
# The builder picks the sanitizer; comparison tracing as in fuzz/build-flags:
# only where fuzz/Cargo.toml turns it on (the decoder and the validator).
cargo fuzz build -O --debug-assertions --no-trace-compares
for t in "${targets[@]}"; do
    cp "fuzz/target/x86_64-unknown-linux-gnu/release/$t" "$OUT/"
    (cd "fuzz/corpus/$t" && zip -q -r "$OUT/${t}_seed_corpus.zip" .)
    cp fuzz/dict/nr-ranges.dict "$OUT/$t.dict"
    printf '[libfuzzer]\nmax_len = 4096\n' > "$OUT/$t.options"
done
