#!/usr/bin/env bash
# Long run of the loader fuzzer (tests/fuzz_loaders.rs): mutated copies of the tiny test
# model's .pth checkpoints, CLIP safetensors and mmaudio.json, each of which must load or
# fail with an error naming the file — no panic, no hang. CI runs 300 mutations per file
# (1 800 files) and 8 whole-model loads per file with seed 13.
#
# Usage: scripts/fuzz-loaders.sh [CASES_PER_FILE [MODEL_CASES_PER_FILE [SEED]]]
#        (defaults 5000, 200, the current time: ~30 000 files and 1 200 model loads,
#        about 20 min on 2 cores). A finding prints the case and its seed: rerun with that
#        seed to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${1:-5000}
MODEL_CASES=${2:-200}
SEED=${3:-$(date +%s)}
echo "fuzzing loaders: $CASES mutations per file, $MODEL_CASES model loads per file, seed $SEED"
MMAUDIO_FUZZ_CASES=$CASES MMAUDIO_FUZZ_MODEL_CASES=$MODEL_CASES MMAUDIO_FUZZ_SEED=$SEED \
    nice -n 10 cargo test --release --test fuzz_loaders -- --nocapture --test-threads=1
