#!/usr/bin/env bash
# Proves the repository stands alone: copies the checkout as a clone would hold it (tracked files
# plus new ones that are not ignored; no build output) into a fresh temporary directory with no
# sibling (no `shared` directory beside it), checks that nothing in it points into such a
# sibling, and runs the workspace's tests there (unit, mock-API, examples, gateway; the chart tests; the e2e crate is
# compiled, as its cluster scenarios run in `just e2e`). Compiled dependencies are reused from
# the usual target directory; only the workspace's own crates are rebuilt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

# A fixed place (under target/, which git ignores), extracted with fresh mtimes (tar -m): test
# binaries bake in their crate's path, and cargo rebuilt nothing for a new copy whose files kept
# their mtimes, so a second run's tests pointed into the first run's deleted temporary copy.
base="$REPO_ROOT/target/standalone"
rm -rf "$base"
copy="$base/mcp-operator"
mkdir -p "$copy"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [[ -e "$f" ]] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xmf - -C "$copy"
log "standalone copy: $copy ($(find "$copy" -type f | wc -l) files; siblings: $(ls -A "$base" | tr '\n' ' '))"

if refs=$(grep -rnI --exclude-dir=.git -e '\.\./shared' "$copy"); then
  die "the repository points into the sibling shared directory, which a clone does not have:
$refs"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
cd "$copy"
cargo test --workspace --exclude mcp-operator-e2e
cargo test -p mcp-operator-e2e --test chart
cargo test -p mcp-operator-e2e --no-run --quiet
log "standalone: the workspace's tests pass in a copy that has no sibling directory"
