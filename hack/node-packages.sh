#!/usr/bin/env bash
# Installs the Debian packages the real node (hack/node-up.sh) and the image builds
# (hack/images.sh) need: containerd + runc + CNI plugins (the node), docker.io (only its dockerd,
# started privately by hack/images.sh as a builder), the netfilter tools kube-proxy, kube-router
# and the network guard call, and gcc/libc6-dev for the static pause binary. Idempotent and
# quiet: a package is installed only when the command (or file) it provides is missing, so a
# machine that has them from elsewhere (e.g. Docker's containerd.io) is left as it is.
#
#   sudo hack/node-packages.sh        # Debian 12 (or Ubuntu), as root
#
# Services are not started by the install (a temporary policy-rc.d): a system dockerd would set
# iptables' FORWARD policy to DROP and make hack/e2e.sh pick its k3s provider.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (it installs packages with apt-get)"
command -v apt-get >/dev/null || die "apt-get not found: install the packages listed in $0 by hand"

# package: what proves it is there (a command, or an absolute path)
wanted=(
  "containerd:containerd" "runc:runc" "containernetworking-plugins:/usr/lib/cni/bridge"
  "docker.io:dockerd" "iptables:iptables" "ipset:ipset" "nftables:nft" "conntrack:conntrack"
  "socat:socat" "iproute2:ip" "util-linux:nsenter" "mount:mount" "procps:pgrep" "kmod:modprobe"
  "openssl:openssl" "curl:curl" "file:file" "ca-certificates:/etc/ssl/certs/ca-certificates.crt"
  "gcc:gcc" "libc6-dev:/usr/include/stdio.h" "nodejs:node" "npm:npm"
  "busybox-static:/usr/share/doc/busybox-static"
)
missing=()
for w in "${wanted[@]}"; do
  pkg=${w%%:*} probe=${w#*:}
  if [[ $probe == /* ]]; then [[ -e $probe ]] && continue
  else command -v "$probe" >/dev/null && continue; fi
  # CNI plugins elsewhere (e.g. /opt/cni/bin from another install) count too.
  [[ $pkg == containernetworking-plugins && -x /opt/cni/bin/bridge ]] && continue
  missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "node packages: all present"
  exit 0
fi

log "node packages: installing ${missing[*]}"
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\n# hack/node-packages.sh: no service starts during the install\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt_log=$(mktemp /tmp/node-packages.XXXXXX.log)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
  tail -n 30 "$apt_log" >&2
  die "apt-get failed (log: $apt_log)"
fi
rm -f "$apt_log"
log "node packages: done"
