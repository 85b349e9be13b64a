#!/usr/bin/env bash
# Builds the local images with no registry and no pulled base image: each one is FROM scratch
# with COPY only, built by a private, throwaway dockerd (own data-root, exec-root and socket in
# the tools cache; no iptables, no bridge; stopped at the end). Each image's `docker save` tar is
# kept in $IMAGES_DIR/<name>/image.tar and rebuilt only when a fingerprint of its inputs changes.
# When the real node of MCP_CLUSTER_NAME runs (hack/node-up.sh), the images are imported into its
# containerd (namespace k8s.io) unless already there; without a node the tars are the result.
#
#   hack/images.sh                 every image
#   hack/images.sh mcp-rs gateway  just those
#   hack/images.sh --node          the node's own images (pause coredns nodetool), then every
#                                  image already built into the node (hack/node-up.sh runs this)
#
# Images (names as pods use them; `latest` ones need imagePullPolicy IfNotPresent or Never):
#   pause     registry.k8s.io/pause:3.10: containerd's sandbox_image (hack/node/pause.c, gcc -static)
#   coredns   mcp-coredns:<COREDNS_VERSION>: the node's cluster DNS (hack/tools.sh coredns)
#   nodetool  mcp-nodetool:latest: hack/node/nodetool.go, the smoke tests' server and client
#   operator  ghcr.io/n-takatsu/mcp-operator:<version of Cargo.toml>, user 65532
#   gateway   ghcr.io/n-takatsu/mcp-gateway:<same version>, user 65532
#   operator-dev  (only when named; Tilt) ${MCP_DEV_IMAGE_REF:-ghcr.io/n-takatsu/mcp-operator:dev}:
#             the debug operator of hack/dev-binary.sh behind hack/dev/run.sh (restarts it when a
#             live update syncs a new one to /opt/dev), with busybox-static for sh, tar and killall
#   mcp-rs    mcp-rs:latest and mcp-everything:<MCP_EVERYTHING_VERSION>: /usr/bin/node with its
#             libraries, npm @modelcontextprotocol/server-everything and hack/node/launch.mjs
#             (MCP_TRANSPORT http|websocket|stdio, MCP_PORT; npm ws for the WebSocket one), user 65532
# operator and gateway are optimized builds (profile `image`: release without LTO, for build time on
# small machines; the published images are `--release`) linked statically with glibc (-C target-feature=+crt-static)
# in a target directory of their own outside the checkout ($MCP_IMAGE_TARGET_DIR, default
# $TOOLS_DIR/../image-target), so they never wait on the checkout's target/ lock.
# The Dockerfile at the repository root stays the way to build them where base images can be pulled.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

IMAGES_DIR="$TOOLS_DIR/images"
DOCKER_DIR="$TOOLS_DIR/docker"
IMAGE_TARGET_DIR="${MCP_IMAGE_TARGET_DIR:-$(dirname "$TOOLS_DIR")/image-target}"
RUST_TARGET="$(uname -m)-unknown-linux-gnu"
ALL_IMAGES=(pause coredns nodetool operator gateway mcp-rs)
DEV_IMAGES=(operator-dev)
NODE_IMAGES=(pause coredns nodetool)

VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")
[[ -n "$VERSION" ]] || die "no [package] version in $REPO_ROOT/Cargo.toml"
chart_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$REPO_ROOT/charts/mcp-operator/Chart.yaml")
[[ "$chart_version" == "$VERSION" ]] ||
  log "warning: the chart's appVersion ($chart_version) is not Cargo.toml's version ($VERSION): the chart will not find these images"

tags_of() { # image -> its tags
  case $1 in
    pause) echo "$PAUSE_IMAGE" ;;
    coredns) echo "$COREDNS_IMAGE" ;;
    nodetool) echo "mcp-nodetool:latest" ;;
    operator) echo "ghcr.io/n-takatsu/mcp-operator:$VERSION" ;;
    gateway) echo "ghcr.io/n-takatsu/mcp-gateway:$VERSION" ;;
    mcp-rs) echo "mcp-rs:latest mcp-everything:$MCP_EVERYTHING_VERSION" ;;
    operator-dev) echo "${MCP_DEV_IMAGE_REF:-ghcr.io/n-takatsu/mcp-operator:dev}" ;;
  esac
}

# ---- inputs: each prepare_<image> builds what the image holds (cheaply when nothing changed)
# and prints the lines its fingerprint is made of.

sha() { sha256sum "$@" | cut -d' ' -f1; }

prepare_pause() {
  local out="$IMAGES_DIR/pause/pause" src="$HACK_DIR/node/pause.c"
  command -v gcc >/dev/null || die "gcc is required for the pause image (hack/node-packages.sh)"
  if [[ ! -x "$out" || "$src" -nt "$out" ]]; then
    gcc -Os -static -s -Wall -Wextra -o "$out" "$src" || die "gcc -static failed (libc6-dev installed?)"
  fi
  echo "pause $(sha "$out")"
}

prepare_nodetool() {
  local out="$IMAGES_DIR/nodetool/nodetool"
  command -v go >/dev/null || die "the Go toolchain is required for the nodetool image"
  (cd "$HACK_DIR/node" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags "-s -w" -o "$out" nodetool.go)
  echo "nodetool $(sha "$out")"
}

prepare_coredns() {
  [[ -x "$TOOLS_BIN/coredns" ]] || die "missing $TOOLS_BIN/coredns; run hack/tools.sh node"
  echo "coredns $(sha "$TOOLS_BIN/coredns")"
}

# Both Rust binaries in one cargo run, once per hack/images.sh run.
RUST_BUILT=false
build_rust() {
  $RUST_BUILT && return
  command -v cargo >/dev/null || die "cargo is required for the operator and gateway images"
  log "images: cargo build --profile image (static glibc, $RUST_TARGET) in $IMAGE_TARGET_DIR"
  (cd "$REPO_ROOT" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$IMAGE_TARGET_DIR" \
    cargo build --quiet --profile image --locked --target "$RUST_TARGET" \
    -p mcp-operator -p mcp-gateway --bin mcp-operator --bin mcp-gateway)
  local b
  for b in mcp-operator mcp-gateway; do
    output_has "statically linked" file -L "$IMAGE_TARGET_DIR/$RUST_TARGET/image/$b" ||
      output_has "static-pie linked" file -L "$IMAGE_TARGET_DIR/$RUST_TARGET/image/$b" ||
      die "$b is not statically linked: $(file -L "$IMAGE_TARGET_DIR/$RUST_TARGET/image/$b")"
  done
  RUST_BUILT=true
}
prepare_operator() { build_rust; echo "mcp-operator $(sha "$IMAGE_TARGET_DIR/$RUST_TARGET/image/mcp-operator")"; }
prepare_gateway() { build_rust; echo "mcp-gateway $(sha "$IMAGE_TARGET_DIR/$RUST_TARGET/image/mcp-gateway")"; }

BUSYBOX=/bin/busybox
prepare_operator-dev() {
  "$HACK_DIR/dev-binary.sh"
  output_has "statically linked" file -L "$BUSYBOX" || die "$BUSYBOX is not static: install busybox-static (hack/node-packages.sh)"
  echo "mcp-operator $(sha "$REPO_ROOT/target/dev/mcp-operator")"
  echo "busybox $(sha "$BUSYBOX") run.sh $(sha "$HACK_DIR/dev/run.sh")"
}

# node and the shared libraries it loads (ldd), as the image's paths.
node_files() { # -> "path" lines: /usr/bin/node, then each library as ldd names it
  local node lib
  node=$(command -v node)
  echo "$node"
  for lib in $(ldd "$node" | grep -o '/[^ ]*'); do echo "$lib"; done
}
prepare_mcp-rs() {
  local app="$IMAGES_DIR/mcp-rs/app-$MCP_EVERYTHING_VERSION-ws$WS_VERSION" f
  command -v node >/dev/null || die "node is required for the mcp-rs image (hack/node-packages.sh)"
  if [[ ! -f "$app/.installed" ]]; then
    command -v npm >/dev/null || die "npm is required for the mcp-rs image (hack/node-packages.sh)"
    log "images: npm install @modelcontextprotocol/server-everything@$MCP_EVERYTHING_VERSION ws@$WS_VERSION"
    rm -rf "$app"; mkdir -p "$app"
    echo '{"name": "mcp-rs", "private": true}' >"$app/package.json"
    (cd "$app" && npm install --no-audit --no-fund --omit=dev --loglevel=error \
      "@modelcontextprotocol/server-everything@$MCP_EVERYTHING_VERSION" "ws@$WS_VERSION" >/dev/null)
    touch "$app/.installed"
  fi
  echo "server-everything $MCP_EVERYTHING_VERSION ws $WS_VERSION $(sha "$app/package-lock.json")"
  echo "launch.mjs $(sha "$HACK_DIR/node/launch.mjs")"
  while read -r f; do echo "$f $(sha "$(readlink -f "$f")")"; done < <(node_files)
}

# ---- contexts: layers/NN-*/ directories, one COPY each, and a Dockerfile.

# /etc/passwd, /etc/group (root, nonroot 65532, nobody), hosts lookups in /etc/hosts first, a
# world-writable /tmp and the CA bundle: what distroless/static:nonroot has.
base_files() { # dir
  mkdir -p "$1/etc/ssl/certs" "$1/tmp" "$1/home/nonroot"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\nnobody:x:65534:\n' >"$1/etc/group"
  echo 'hosts: files dns' >"$1/etc/nsswitch.conf"
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"
  return 0
}

dockerfile() { # user entrypoint-json [extra lines...]
  local user=$1 entry=$2 d
  shift 2
  echo "FROM scratch"
  for d in layers/*/; do echo "COPY ${d%/} /"; done
  echo "USER $user"
  printf '%s\n' "$@"
  echo "ENTRYPOINT $entry"
}

context_pause() {
  install -D -m755 "$IMAGES_DIR/pause/pause" layers/1-bin/pause
  dockerfile 65535:65535 '["/pause"]'
}
context_nodetool() {
  base_files layers/1-base
  install -D -m755 "$IMAGES_DIR/nodetool/nodetool" layers/2-bin/nodetool
  dockerfile 65532:65532 '["/nodetool"]' 'CMD ["serve"]'
}
context_coredns() {
  base_files layers/1-base
  install -D -m755 "$TOOLS_BIN/coredns" layers/2-bin/coredns
  dockerfile 65532:65532 '["/coredns"]'
}
context_operator() {
  base_files layers/1-base
  install -D -m755 "$IMAGE_TARGET_DIR/$RUST_TARGET/image/mcp-operator" layers/2-bin/mcp-operator
  dockerfile 65532:65532 '["/mcp-operator"]' 'EXPOSE 8080'
}
context_gateway() {
  base_files layers/1-base
  install -D -m755 "$IMAGE_TARGET_DIR/$RUST_TARGET/image/mcp-gateway" layers/2-bin/mcp-gateway
  dockerfile 65532:65532 '["/mcp-gateway"]' 'EXPOSE 8443 9090'
}
context_operator-dev() {
  local tool
  base_files layers/1-base
  install -D -m755 "$BUSYBOX" layers/2-busybox/bin/busybox
  for tool in sh tar killall cp mv mkdir chmod sleep ls cat ps; do ln -s busybox "layers/2-busybox/bin/$tool"; done
  install -D -m755 "$HACK_DIR/dev/run.sh" layers/3-app/app/run.sh
  install -D -m755 "$REPO_ROOT/target/dev/mcp-operator" layers/3-app/app/mcp-operator
  dockerfile 65532:65532 '["/app/run.sh"]' 'EXPOSE 8080'
}
context_mcp-rs() {
  local f
  base_files layers/1-base
  # node where the image's paths say (ldd's, e.g. /lib64/ld-linux-x86-64.so.2), real files only.
  while read -r f; do install -D -m755 "$(readlink -f "$f")" "layers/2-node$f"; done < <(node_files)
  mkdir -p layers/3-app/app
  cp -a "$IMAGES_DIR/mcp-rs/app-$MCP_EVERYTHING_VERSION-ws$WS_VERSION/." layers/3-app/app/
  rm -f layers/3-app/app/.installed
  install -D -m644 "$HACK_DIR/node/launch.mjs" layers/4-launch/app/launch.mjs
  dockerfile 65532:65532 '["/usr/bin/node", "/app/launch.mjs"]' 'WORKDIR /app' 'ENV HOME=/tmp NODE_ENV=production'
}

# ---- the private dockerd: started on the first build, stopped on exit.

DOCKERD_PID=
DOCKER=
# Written by dockerd 20.10 outside its directories (its libtrust key, its containerd's opt
# directories, the plugin socket directory): removed again when they were not there before.
DOCKERD_HOST_PATHS=(/etc/docker/key.json /opt/containerd /run/docker)
DOCKERD_NEW_PATHS=()
start_dockerd() {
  [[ -z "$DOCKERD_PID" ]] || return 0
  command -v dockerd >/dev/null || die "dockerd is required to build images (hack/node-packages.sh installs docker.io)"
  [[ $(id -u) == 0 ]] || die "the private dockerd needs root"
  DOCKER="$(dirname "$(command -v dockerd)")/docker"
  [[ -x "$DOCKER" ]] || DOCKER=$(command -v docker) || die "no docker client next to dockerd"
  mkdir -p "$DOCKER_DIR/data" "$DOCKER_DIR/exec" "$DOCKER_DIR/client"
  echo '{}' >"$DOCKER_DIR/daemon.json"
  export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock" DOCKER_CONFIG="$DOCKER_DIR/client" DOCKER_BUILDKIT=0
  ((${#DOCKER_HOST} < 100)) || die "$DOCKER_HOST is too long for a unix socket; set MCP_TOOLS_DIR to a shorter path"
  local p
  for p in "${DOCKERD_HOST_PATHS[@]}"; do [[ -e "$p" ]] || DOCKERD_NEW_PATHS+=("$p"); done
  printf '\n==== %s\n' "$(date -Is)" >>"$IMAGES_DIR/dockerd.log"
  setsid dockerd --config-file "$DOCKER_DIR/daemon.json" --data-root "$DOCKER_DIR/data" \
    --exec-root "$DOCKER_DIR/exec" --pidfile "$DOCKER_DIR/dockerd.pid" --host "$DOCKER_HOST" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none --userland-proxy=false \
    --log-level=warn >>"$IMAGES_DIR/dockerd.log" 2>&1 </dev/null &
  DOCKERD_PID=$!
  trap stop_dockerd EXIT
  local i
  for ((i = 0; i < 300; i++)); do
    "$DOCKER" version >/dev/null 2>&1 && return 0
    running "$DOCKERD_PID" || break
    sleep 0.1
  done
  tail -n 20 "$IMAGES_DIR/dockerd.log" >&2
  die "the private dockerd did not start (log: $IMAGES_DIR/dockerd.log)"
}
stop_dockerd() {
  [[ -n "$DOCKERD_PID" ]] || return 0
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 200; i++)); do running "$DOCKERD_PID" || break; sleep 0.1; done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  unmount_under "$DOCKER_DIR" # whatever it left mounted
  local p
  for p in "${DOCKERD_NEW_PATHS[@]}"; do
    if [[ -d "$p" ]]; then find "$p" -depth -type d -empty -delete; else rm -f "$p"; fi
  done
  DOCKERD_PID=
}

# ---- build (when the fingerprint changed) and import (when the node lacks it).

build_image() { # image
  local name=$1 dir="$IMAGES_DIR/$1" fp tags tag t0 args=()
  "prepare_$name" >"$dir/inputs"
  fp=$({ cat "$dir/inputs"; declare -f "context_$name" base_files dockerfile; tags_of "$name"; } | sha)
  if [[ -f "$dir/image.tar" && "$(cat "$dir/fingerprint" 2>/dev/null)" == "$fp" ]]; then
    log "images: $name up to date"
    return
  fi
  t0=$(now_ms)
  rm -rf "$dir/context"; mkdir -p "$dir/context"
  (cd "$dir/context" && "context_$name" >Dockerfile)
  start_dockerd
  read -ra tags <<<"$(tags_of "$name")"
  for tag in "${tags[@]}"; do args+=(-t "$tag"); done
  "$DOCKER" build -q "${args[@]}" "$dir/context" >"$dir/build.log" 2>&1 ||
    { cat "$dir/build.log" >&2; die "docker build of $name failed"; }
  "$DOCKER" save -o "$dir/image.tar.tmp" "${tags[@]}"
  mv -f "$dir/image.tar.tmp" "$dir/image.tar"
  echo "$fp" >"$dir/fingerprint"
  rm -rf "$dir/context"
  log "images: $name built in $(($(now_ms) - t0)) ms ($(du -h "$dir/image.tar" | cut -f1): ${tags[*]})"
}

# Whether the node's containerd holds every tag of the image as last built.
imported() { # image
  local mark="$NODE_DIR/containerd/imported/$1" have tag
  [[ "$(cat "$mark" 2>/dev/null)" == "$(cat "$IMAGES_DIR/$1/fingerprint")" ]] || return 1
  have=$'\n'$(ctr_ images ls -q)$'\n'
  for tag in $(tags_of "$1"); do
    [[ $tag == */* ]] || tag="docker.io/library/$tag" # how containerd names a short reference
    [[ "$have" == *$'\n'"$tag"$'\n'* ]] || return 1
  done
}

import_image() { # image
  local name=$1 t0
  [[ -f "$IMAGES_DIR/$name/image.tar" ]] && ! imported "$name" || return 0
  t0=$(now_ms)
  ctr_ images import "$IMAGES_DIR/$name/image.tar" >/dev/null || die "ctr images import of $name failed"
  mkdir -p "$NODE_DIR/containerd/imported"
  cp "$IMAGES_DIR/$name/fingerprint" "$NODE_DIR/containerd/imported/$name"
  log "images: $name imported into the real node in $(($(now_ms) - t0)) ms"
}

want=()
node_mode=false
for a in "$@"; do
  case $a in
    --node) node_mode=true; want+=("${NODE_IMAGES[@]}") ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)
      [[ " ${ALL_IMAGES[*]} ${DEV_IMAGES[*]} " == *" $a "* ]] ||
        die "unknown image '$a' (one of: ${ALL_IMAGES[*]} ${DEV_IMAGES[*]})"
      want+=("$a") ;;
  esac
done
[[ ${#want[@]} -gt 0 ]] || want=("${ALL_IMAGES[@]}")
mkdir -p "$IMAGES_DIR"
# One hack/images.sh at a time: they share the dockerd directories and the tars.
exec {lock_fd}>"$IMAGES_DIR/.lock"
if ! flock -n "$lock_fd"; then
  log "images: waiting for another hack/images.sh to finish"
  flock -w 1800 "$lock_fd" || die "images: $IMAGES_DIR/.lock is still held by another hack/images.sh"
fi
for name in "${want[@]}"; do mkdir -p "$IMAGES_DIR/$name"; build_image "$name"; done
if [[ -n "$DOCKERD_PID" ]]; then
  "$DOCKER" image prune -f >/dev/null # the layers of earlier builds (the current ones stay cached)
  stop_dockerd
fi

if containerd_up; then
  $node_mode && want=("${ALL_IMAGES[@]}")
  for name in "${want[@]}"; do import_image "$name"; done
elif $node_mode; then
  die "the real node's containerd ($CONTAINERD_SOCK) does not answer"
else
  log "images: no real node running for cluster '$CLUSTER_NAME': the images are the tars in $IMAGES_DIR/*/image.tar"
fi
