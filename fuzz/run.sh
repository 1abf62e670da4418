#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600) on stable Rust without a sanitizer
# (libFuzzer's coverage instrumentation works on stable; ASan needs nightly). New inputs are
# added to fuzz/corpus/<target>; crashes land in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-600}"
for target in segment_decode segment_records manifest_parse config_parse; do
  echo "== $target for ${SECONDS_EACH}s"
  cargo fuzz run -s none -O "$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 2>&1 \
    | grep -E '^(#[0-9]+.*DONE|stat::|==|.*(panicked|Crash|crash-|ERROR))' || true
done
