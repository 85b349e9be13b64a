#!/usr/bin/env bash
# cargo-deny (deny.toml): licenses, banned and duplicate crates, sources, and RustSec advisories.
# The advisory database lives on GitHub: where it cannot be fetched (this project's build
# machines reach only the package registries), a copy fetched before is used and its date
# printed; with no copy at all, advisories are reported as not checked (GitHub Actions checks
# them on every push). Everything else is always checked.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

if [[ ! -x "$TOOLS_BIN/cargo-deny" ]] || ! output_has "$CARGO_DENY_VERSION" "$TOOLS_BIN/cargo-deny" --version; then
  # A debug build: it installs in a fraction of the time and still checks this graph in seconds.
  log "cargo-deny $CARGO_DENY_VERSION: cargo install (first run only)"
  cargo install --debug --locked --quiet --root "$TOOLS_DIR" cargo-deny --version "$CARGO_DENY_VERSION"
fi
deny() { "$TOOLS_BIN/cargo-deny" --log-level error "$@"; }

deny check licenses bans sources
log "cargo deny: licenses, bans, sources ok"

db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
fetched=no
if timeout 120 "$TOOLS_BIN/cargo-deny" --log-level off fetch db >/dev/null 2>&1; then fetched=yes; fi
if db=$(compgen -G "$db_root/advisory-db-*" | head -n 1) && [[ -d "$db/crates" ]]; then
  when=$(git -C "$db" log -1 --format=%cs 2>/dev/null || echo "date unknown")
  deny --offline check advisories
  if [[ $fetched == yes ]]; then
    log "cargo deny: advisories ok (database fetched now, last change $when)"
  else
    log "cargo deny: advisories ok against the copy in $db (last change $when): the database could not be fetched now"
  fi
else
  log "cargo deny: advisories NOT checked here: the RustSec database (GitHub) cannot be fetched and no copy exists; CI on GitHub Actions checks them"
fi
