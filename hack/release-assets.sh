#!/usr/bin/env bash
# The release's chart package and assets, as .github/workflows/release.yaml publishes them (it runs
# this script); run locally it is the release's dry run (`just release-dry-run` also builds the
# images). Usage: hack/release-assets.sh [VERSION]   (default: the chart's version), into $DIST
# (default dist/):
#   mcp-operator-VERSION.tgz  the chart (pushed as oci://ghcr.io/<owner>/charts/mcp-operator)
#   crds.yaml                 the CRDs (k8s/crds)
#   install.yaml              the CRDs and the plain manifests (k8s/manifests/0*.yaml)
#   examples.yaml             the guide's example SecurityPolicies
#   SHA256SUMS
# VERSION must equal the chart's version and appVersion (the chart's default image tag) and
# Cargo.toml's version (what the operator writes into the CRDs it upgrades).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

chart=charts/mcp-operator
chart_version=$(sed -n 's/^version: *//p' "$chart/Chart.yaml")
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart/Chart.yaml")
cargo_version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
version=${1:-$chart_version}
version=${version#v}
[[ "$version" == "$chart_version" && "$version" == "$app_version" && "$version" == "$cargo_version" ]] ||
  die "version $version, but Chart.yaml version $chart_version, appVersion $app_version, Cargo.toml $cargo_version"

dist=${DIST:-dist}
rm -rf "$dist"
mkdir -p "$dist"
helm lint --strict "$chart" >/dev/null || die "helm lint failed"
helm package "$chart" --destination "$dist" >/dev/null
for f in k8s/crds/*.yaml; do cat "$f"; echo '---'; done >"$dist/crds.yaml"
{
  cat "$dist/crds.yaml"
  for f in k8s/manifests/0*.yaml; do cat "$f"; echo '---'; done
} >"$dist/install.yaml"
cp k8s/manifests/examples.yaml "$dist/examples.yaml"

# What the chart in the package installs is what install.yaml holds (the same images and RBAC).
packaged=$(tar -xzf "$dist/mcp-operator-$version.tgz" -O mcp-operator/Chart.yaml)
[[ $'\n'"$packaged"$'\n' =~ $'\n'appVersion:\ \"?"$version"\"?$'\n' ]] || die "the packaged chart's appVersion is not $version"
for image in mcp-operator mcp-gateway; do
  grep -q "ghcr.io/n-takatsu/$image:$version" "$dist/install.yaml" || die "install.yaml does not use $image:$version"
done
(cd "$dist" && sha256sum -- * >SHA256SUMS)
log "release $version assets in $dist/: $(cd "$dist" && ls | tr '\n' ' ')"
