#!/usr/bin/env bash
# Builds the test cluster's binaries from their Go modules into a cache keyed by
# version: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
# (Kubernetes v1.37.2), the node's kubelet-streams helper and the KubeRay operator with its CRDs. The operator is
# v1.6.2: the module proxy refuses ray-operator/v1.7.0 ("not available", 403).
# Skips whatever is already built. Prints the cache's bin directory on stdout.
set -euo pipefail

K8S_VERSION=v1.37.2
KUBERAY_VERSION=v1.6.2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "testcluster/build: $*" >&2; }

command -v go >/dev/null || { log "go is not installed (Go >= 1.26 is needed)"; exit 1; }
# The key covers what decides the binaries: versions, our module's pins and BUILD_REV
# (bump it when a flag below changes).
BUILD_REV=1
key="$( (echo "$BUILD_REV"; cat "$here/gobuild/go.mod" "$here/gobuild/go.sum") | sha256sum | cut -c1-12)"
cache="${RAYSPAWNER_TESTCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rayspawner/testcluster}"
bin="$cache/k8s-$K8S_VERSION-kuberay-$KUBERAY_VERSION-$key/bin"
mkdir -p "$bin"
# one build at a time per cache (parallel installs wait instead of building twice)
exec 9>"$cache/.lock"
flock 9

export CGO_ENABLED=0 GOFLAGS=-mod=mod
build_date="2026-01-01T00:00:00Z"
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X '$pkg.gitVersion=$K8S_VERSION' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=37'"
  ldflags+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=$build_date'"
done

build() {  # build DIR OUTPUT-NAME PACKAGE
  local dir=$1 name=$2 pkg=$3
  if [ -x "$bin/$name" ]; then return 0; fi
  log "building $name ($pkg); a cold build takes minutes"
  local t0=$SECONDS
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$bin/$name.partial" "$pkg")
  mv "$bin/$name.partial" "$bin/$name"
  log "built $name in $((SECONDS - t0)) s"
}

build "$here/gobuild" etcd ./cmd/etcd
build "$here/gobuild" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build "$here/gobuild" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build "$here/gobuild" kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build "$here/gobuild" kubectl k8s.io/kubernetes/cmd/kubectl
# the node's kubelet streaming port (its own module, keyed by its own sources: seconds to build)
streams_key="$(cat "$here"/gostreams/go.* "$here"/gostreams/cmd/kubelet-streams/*.go | sha256sum | cut -c1-12)"
build "$here/gostreams" "kubelet-streams-$streams_key" ./cmd/kubelet-streams
ln -sfn "kubelet-streams-$streams_key" "$bin/kubelet-streams"
if [ ! -x "$bin/kuberay-operator" ]; then
  log "building kuberay-operator (github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION)"
  t0=$SECONDS
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION"
  mv "$tmp/ray-operator" "$bin/kuberay-operator"
  log "built kuberay-operator in $((SECONDS - t0)) s"
fi
# the operator's CRDs and ClusterRole, from the same module version
assets="$bin/.."
if [ ! -f "$assets/kuberay-rbac/role.yaml" ]; then
  src="$(go env GOMODCACHE)/github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION/config"
  [ -d "$src" ] || (cd "$(mktemp -d)" && GOFLAGS= go mod download "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION")
  mkdir -p "$assets/kuberay-crds" "$assets/kuberay-rbac"
  cp "$src"/crd/bases/*.yaml "$assets/kuberay-crds/"
  cp "$src/rbac/role.yaml" "$assets/kuberay-rbac/role.yaml"
  chmod -R u+w "$assets/kuberay-crds" "$assets/kuberay-rbac"
fi
echo "$bin"
