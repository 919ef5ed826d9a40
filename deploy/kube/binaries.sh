#!/usr/bin/env bash
# Builds the Kubernetes control plane the chart's tests run on (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kwok's fake nodes)
# from the Go module proxy, and caches them: prints the folder that holds them.
# About 15-20 minutes cold on 2 cores; nothing to do when cached.
#   deploy/kube/binaries.sh            # -> ~/.cache/scale-k8s/v1.37.2/bin
#   SCALE_K8S_BIN=/some/dir deploy/kube/binaries.sh
set -euo pipefail
K8S_VERSION=v1.37.2
STAGING_VERSION=v0.37.2   # k8s.io/api, client-go, ... of the same release
KWOK_VERSION=v0.8.0
# Debian's etcd (3.4.23) lacks the progress notifications the apiserver needs
# for streamed watch lists (etcd >= 3.4.31): with it, kwok's watches fail.
ETCD_VERSION=v3.7.3
out=${SCALE_K8S_BIN:-$HOME/.cache/scale-k8s/$K8S_VERSION/bin}
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3} GOWORK=off GOFLAGS=-mod=mod

missing=()
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kwok-stages.yaml; do
  [ -e "$out/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -eq 0 ]; then echo "$out"; exit 0; fi
mkdir -p "$out"
echo "kube binaries: building ${missing[*]} into $out (15-20 min cold)" >&2

# k8s.io/kubernetes is not meant to be required: its go.mod replaces its 33
# staging modules with folders of its own tree. A scratch module requires it and
# points each of those at the published module of the same release instead.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
{
  echo "module scale.local/kubebinaries"
  echo "go 1.26.0"
  echo "require k8s.io/kubernetes $K8S_VERSION"
  sed -n "s#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 $STAGING_VERSION#p" "$gomod"
} > "$src/go.mod"
(cd "$src" && go build -trimpath -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
GOBIN="$out" go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# etcd's own main module replaces its siblings with folders; its server
# module's etcdmain is the same program.
etcdsrc=$(mktemp -d)
printf 'module scale.local/etcd\ngo 1.26.0\n' > "$etcdsrc/go.mod"
printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > "$etcdsrc/main.go"
(cd "$etcdsrc" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go build -trimpath -o "$out/etcd" .)
rm -rf "$etcdsrc"
# kwok does nothing without stages: nodes become Ready and keep a lease, pods
# become Ready, finish (those of Jobs) and go when deleted; a node labelled
# node-not-ready.stage.kwok.x-k8s.io=true fails (the node attacks).
stages=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')/kustomize/stage
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         node/chaos/node-not-ready.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  cat "$stages/$f"; echo "---"
done > "$out/kwok-stages.yaml"
echo "$out"
