#!/usr/bin/env bash
# Installs the Debian packages the test suite needs: etcd 3.4 (server and etcdctl) for the
# 3.4 integration tests, the stock `age` and `zstd` tools that prove a backup can be
# opened without lifeboat, and Go 1.19 with bbolt's sources, from which the tests build
# Go's own bbolt checker for every db file lifeboat writes. Does nothing when they are
# already there.
set -euo pipefail
need=()
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need+=(etcd-client)
command -v age >/dev/null || need+=(age)
command -v zstd >/dev/null || need+=(zstd)
[ -x /usr/lib/go-1.19/bin/go ] || need+=(golang-1.19-go)
[ -d /usr/share/gocode/src/go.etcd.io/bbolt ] || need+=(golang-github-coreos-bbolt-dev)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's package may start a system etcd on the default ports; the tests never use it.
