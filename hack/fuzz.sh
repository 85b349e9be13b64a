#!/usr/bin/env bash
# Runs every cargo-fuzz target of the gateway (gateway/fuzz) for FUZZ_SECONDS each (default 60),
# starting from the corpus in the repository; new inputs go to a work corpus in the cache, a crash
# fails the run (its input is printed and kept under the cache's artifacts/).
#   hack/fuzz.sh                 all targets (admission jsonrpc sse)
#   FUZZ_SECONDS=600 hack/fuzz.sh admission
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT/gateway/fuzz"

SECONDS_EACH="${FUZZ_SECONDS:-60}"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(admission jsonrpc sse)

if [[ ! -x "$TOOLS_BIN/cargo-fuzz" ]] || ! output_has "$CARGO_FUZZ_VERSION" "$TOOLS_BIN/cargo-fuzz" --version; then
  # A debug build of the tool (the fuzz targets themselves are optimized): it installs faster.
  log "cargo-fuzz $CARGO_FUZZ_VERSION: cargo install"
  cargo install --debug --locked --quiet --root "$TOOLS_DIR" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# libFuzzer needs nightly's -Z flags: the nightly toolchain when there is one, else stable told
# to accept them (same compiler features, no download).
toolchain=()
if output_has nightly rustup toolchain list; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
export CARGO_TARGET_DIR="$TOOLS_DIR/../fuzz-target"
WORK="$TOOLS_DIR/../fuzz-work"
for t in "${targets[@]}"; do
  mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
  log "fuzz $t for ${SECONDS_EACH}s"
  if ! cargo "${toolchain[@]}" fuzz run "$t" "$WORK/corpus/$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -artifact_prefix="$WORK/artifacts/$t/" \
    -print_final_stats=1 >"$WORK/$t.log" 2>&1; then
    tail -n 60 "$WORK/$t.log" >&2
    die "fuzz target $t failed (log: $WORK/$t.log, artifacts: $WORK/artifacts/$t)"
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' "$WORK/$t.log" || true
done
log "fuzzing done: ${targets[*]}, ${SECONDS_EACH}s each"
