#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, starts
# a docker daemon if none answers, then checks formatting and lints and runs
# every test. Run from anywhere; needs root for apt-get and dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
command -v oci-image-tool >/dev/null 2>&1 || missing+=(oci-image-tool)
command -v mkfifo >/dev/null 2>&1 || missing+=(coreutils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A docker daemon for `docker load`/`docker save`/`docker build` in tests.
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  log=${TMPDIR:-/tmp}/imgsync-dockerd.log
  echo "test.sh: starting dockerd (log: $log)"
  nohup dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none >"$log" 2>&1 &
  for _ in $(seq 1 120); do
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "test.sh: dockerd did not start; its log:" >&2
    tail -n 50 "$log" >&2
    exit 1
  fi
fi

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --quiet 2>&1
