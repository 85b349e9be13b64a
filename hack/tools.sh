#!/usr/bin/env bash
# Builds the local control plane and dev tools from their published Go modules (and just from
# crates.io) into $TOOLS_DIR/bin, outside the checkout. Idempotent: a tool whose stamp matches
# its pinned version is skipped, so a second run is instant.
#
#   hack/tools.sh            the control plane and dev tools (kubernetes etcd kwok helm actionlint just)
#   hack/tools.sh helm kwok  just those
#   hack/tools.sh node       the real node's (hack/node-up.sh): kubelet (+ kube-proxy), kube-router, coredns
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null || die "the Go toolchain is required (go 1.26+); install it and retry"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"
SRC_DIR="$TOOLS_DIR/src"
mkdir -p "$TOOLS_BIN" "$SRC_DIR"

stamp() { echo "$TOOLS_BIN/.$1.version"; }
is_current() { [[ -f "$(stamp "$1")" && "$(cat "$(stamp "$1")")" == "$2" ]]; }
mark() { echo "$2" >"$(stamp "$1")"; }

# A module of our own per tool, so that their dependencies never drag each other's versions.
new_module() { # name go-file-imports...
  local dir="$SRC_DIR/$1"; shift
  rm -rf "$dir"; mkdir -p "$dir"
  { echo "//go:build tools"; echo; echo "package tools"; echo; echo "import ("
    for p in "$@"; do echo "	_ \"$p\""; done; echo ")"; } >"$dir/tools.go"
  echo "$dir"
}

# Commands of k8s.io/kubernetes, built from a module of our own: k8s.io/kubernetes replaces its
# ~33 staging modules with ./staging paths, which we point at the published v0.X.Y of the same
# release instead. The version ldflags are those of the release's own build.
build_kubernetes_cmds() { # module-name cmds...
  local name=$1 v=$KUBERNETES_VERSION; shift
  local pkgs=() c; for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  local dir; dir=$(new_module "$name" "${pkgs[@]}")
  local staging="0.${v#v1.}"
  ( cd "$dir"
    go mod download -json "k8s.io/kubernetes@$v" >/dev/null
    local kmod; kmod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$v.mod"
    { echo "module mcp-operator.local/tools/$name"; echo; echo "go 1.26.0"; echo
      echo "require k8s.io/kubernetes $v"; echo; echo "replace ("
      grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$kmod" | awk -v s="v$staging" '{print "\t" $1 " => " $1 " " s}'
      echo ")"; } >go.mod
    log "$name: resolving modules ($(grep -c ' => ' go.mod) staging replacements)"
    go mod tidy >/dev/null 2>&1 || go mod tidy
    local major=${v#v}; major=${major%%.*}; local minor=${v#v*.}; minor=${minor%%.*}
    local ld="-s -w" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    go build -trimpath -ldflags "$ld" -o "$TOOLS_BIN/" "${pkgs[@]}" )
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION name=kubernetes
  is_current $name "$v" && { log "kubernetes $v: up to date"; return; }
  log "kubernetes $v: building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (slow the first time)"
  build_kubernetes_cmds $name kube-apiserver kube-controller-manager kube-scheduler kubectl
  output_has "$v" "$TOOLS_BIN/kubectl" version --client || die "kubectl does not report $v (version ldflags missing?)"
  mark $name "$v"; log "kubernetes $v: done"
}

# The real node's kubelet and kube-proxy, from the same release as the control plane.
build_kubelet() {
  local v=$KUBERNETES_VERSION name=kubelet
  is_current $name "$v" && { log "kubelet $v: up to date"; return; }
  log "kubelet $v: building kubelet, kube-proxy"
  build_kubernetes_cmds $name kubelet kube-proxy
  output_has "$v" "$TOOLS_BIN/kubelet" --version || die "kubelet does not report $v"
  output_has "$v" "$TOOLS_BIN/kube-proxy" --version || die "kube-proxy does not report $v"
  mark $name "$v"; log "kubelet $v: done"
}

build_etcd() {
  local v=$ETCD_VERSION name=etcd
  is_current $name "$v" && { log "etcd $v: up to date"; return; }
  log "etcd $v: building"
  local dir; dir=$(new_module $name go.etcd.io/etcd/server/v3)
  # The root package of go.etcd.io/etcd/server/v3 is etcd's main; `go install` refuses it
  # because that module has replace directives, so it is built from our own module.
  ( cd "$dir"
    printf 'module mcp-operator.local/tools/%s\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' $name "$v" >go.mod
    go mod tidy >/dev/null 2>&1 || go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$TOOLS_BIN/etcd" go.etcd.io/etcd/server/v3 )
  output_has "${v#v}" "$TOOLS_BIN/etcd" --version || die "etcd does not report $v"
  mark $name "$v"; log "etcd $v: done"
}

build_kwok() {
  local v=$KWOK_VERSION name=kwok
  is_current $name "$v-$KUBERNETES_VERSION" && { log "kwok $v: up to date"; return; }
  log "kwok $v: building kwok, kwokctl"
  local dir; dir=$(new_module $name sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl)
  ( cd "$dir"
    printf 'module mcp-operator.local/tools/%s\n\ngo 1.26.0\n\nrequire sigs.k8s.io/kwok %s\n' $name "$v" >go.mod
    go mod tidy >/dev/null 2>&1 || go mod tidy
    local c=sigs.k8s.io/kwok/pkg/consts
    go build -trimpath -ldflags "-s -w -X $c.Version=$v -X $c.KubeVersion=$KUBERNETES_VERSION" \
      -o "$TOOLS_BIN/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl )
  mark $name "$v-$KUBERNETES_VERSION"; log "kwok $v: done"
}

build_helm() {
  local v=$HELM_VERSION name=helm
  is_current $name "$v" && { log "helm $v: up to date"; return; }
  log "helm $v: building"
  local dir; dir=$(new_module $name helm.sh/helm/v3/cmd/helm)
  ( cd "$dir"
    printf 'module mcp-operator.local/tools/%s\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 %s\n' $name "$v" >go.mod
    go mod tidy >/dev/null 2>&1 || go mod tidy
    # Helm derives the Kubernetes version it assumes from its client-go, as its Makefile does.
    local cg; cg=$(go list -m -f '{{.Version}}' k8s.io/client-go); cg=${cg#v}
    local kmaj=$(( ${cg%%.*} + 1 )) kmin; kmin=${cg#*.}; kmin=${kmin%%.*}
    local h=helm.sh/helm/v3
    go build -trimpath -ldflags "-s -w -X $h/internal/version.version=$v -X $h/internal/version.gitTreeState=clean \
      -X $h/pkg/lint/rules.k8sVersionMajor=$kmaj -X $h/pkg/lint/rules.k8sVersionMinor=$kmin \
      -X $h/pkg/chartutil.k8sVersionMajor=$kmaj -X $h/pkg/chartutil.k8sVersionMinor=$kmin" \
      -o "$TOOLS_BIN/helm" helm.sh/helm/v3/cmd/helm )
  output_has "$v" "$TOOLS_BIN/helm" version --short || die "helm does not report $v"
  mark $name "$v"; log "helm $v: done"
}

build_actionlint() {
  local v=$ACTIONLINT_VERSION name=actionlint
  is_current $name "$v" && { log "actionlint $v: up to date"; return; }
  log "actionlint $v: building"
  GOBIN="$TOOLS_BIN" go install -trimpath -ldflags "-s -w -X github.com/rhysd/actionlint.version=$v" \
    "github.com/rhysd/actionlint/cmd/actionlint@$v"
  mark $name "$v"; log "actionlint $v: done"
}

# NetworkPolicy on the real node: kube-router's firewall alone (iptables + ipset).
build_kube_router() {
  local v=$KUBE_ROUTER_VERSION name=kube-router
  is_current $name "$v" && { log "kube-router $v: up to date"; return; }
  log "kube-router $v: building"
  GOBIN="$TOOLS_BIN" go install -trimpath \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$v" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$v"
  output_has "$v" "$TOOLS_BIN/kube-router" --version || die "kube-router does not report $v"
  mark $name "$v"; log "kube-router $v: done"
}

# Cluster DNS of the real node (the image hack/images.sh makes for CoreDNS).
build_coredns() {
  local v=$COREDNS_VERSION name=coredns
  is_current $name "$v" && { log "coredns $v: up to date"; return; }
  log "coredns $v: building"
  GOBIN="$TOOLS_BIN" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$v"
  output_has "${v#v}" "$TOOLS_BIN/coredns" -version || die "coredns does not report $v"
  mark $name "$v"; log "coredns $v: done"
}

build_just() {
  local v=$JUST_VERSION name=just
  if command -v just >/dev/null && output_has "$v" just --version; then log "just $v: up to date"; return; fi
  command -v cargo >/dev/null || die "cargo is required to install just (https://rustup.rs)"
  log "just $v: cargo install"
  cargo install --locked --quiet --root "$TOOLS_DIR" just --version "$v"
  log "just $v: done"
}

all=(kubernetes etcd kwok helm actionlint just)
node=(kubelet kube-router coredns)
want=()
for t in "$@"; do
  if [[ $t == node ]]; then want+=("${node[@]}"); else want+=("$t"); fi
done
[[ ${#want[@]} -gt 0 ]] || want=("${all[@]}")
for t in "${want[@]}"; do
  [[ " ${all[*]} ${node[*]} " == *" $t "* ]] || die "unknown tool '$t' (one of: ${all[*]} ${node[*]}, or node)"
  "build_${t//-/_}"
done
log "tools ready in $TOOLS_BIN"
