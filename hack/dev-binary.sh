#!/usr/bin/env bash
# The operator binary of the dev image and of Tilt's live updates: a debug build (no debug info,
# for size and link time), linked statically with glibc so it runs in the FROM-scratch dev image,
# at target/dev/mcp-operator (its own target directory: it never waits on the checkout's lock).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
target="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_DEV_DEBUG=false CARGO_TARGET_DIR="$REPO_ROOT/target/dev-build" \
  cargo build --quiet --locked --target "$target" -p mcp-operator --bin mcp-operator
mkdir -p target/dev
# Replaced by rename: a sync reading it never sees half a file.
cp "target/dev-build/$target/debug/mcp-operator" target/dev/mcp-operator.tmp
mv -f target/dev/mcp-operator.tmp target/dev/mcp-operator
log "dev binary: target/dev/mcp-operator ($(du -h target/dev/mcp-operator | cut -f1))"
