#!/usr/bin/env bash
# The parser fuzz tests with more cases than the suite runs (default 20,000 per target instead of
# 150–2,000): GGUF, safetensors and config.json (rlhf-model), JSONL / Parquet records and
# tokenizer files (rlhf-data), TOML configs (rlhf-cli), and the request bodies of the labelling
# server and `rlhf serve`. Each case is a seeded mutation of a valid input, so a failure names
# the seed that reproduces it. Usage: scripts/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
export RLHF_FUZZ_CASES="${1:-20000}"
cargo test -p rlhf-model --test gguf --test bad_input fuzz
cargo test -p rlhf-data --test datasets --test parquet fuzz
cargo test -p rlhf-cli --bin rlhf fuzz
cargo test -p rlhf-server --test api fuzz
cargo test -p rlhf-cli --test serve fuzz
